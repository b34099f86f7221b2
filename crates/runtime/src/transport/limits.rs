//! Caps on open connections, overall and per client address.
//!
//! A connection is admitted with a [`ConnectionPermit`] that lives as long as its socket (also
//! after an HTTP upgrade hands the socket to a WebSocket), so the caps count every open socket.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::metrics::names;

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The server holds its maximum of open connections.
    Total,
    /// The client's address holds its maximum of open connections.
    PerAddress,
}

impl Refusal {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Total => "max_connections",
            Refusal::PerAddress => "max_connections_per_address",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// The open connections of one server, against its caps.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_address: usize,
    counts: Mutex<Counts>,
    labels: [(&'static str, String); 2],
}

impl ConnectionLimits {
    /// Caps for the server `server` (e.g. `grpc`) of service `service`.
    pub fn new(max_total: usize, max_per_address: usize, service: &str, server: &str) -> Self {
        ConnectionLimits {
            max_total,
            max_per_address,
            counts: Mutex::new(Counts::default()),
            labels: [
                ("service", service.to_string()),
                ("server", server.to_string()),
            ],
        }
    }

    /// Admits a connection from `address` (`None` for a Unix socket, which only counts
    /// towards the overall cap), or says why not; a refusal is counted in the metrics.
    pub fn admit(self: &Arc<Self>, address: Option<IpAddr>) -> Result<ConnectionPermit, Refusal> {
        let outcome = {
            let mut counts = self
                .counts
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            if counts.total >= self.max_total {
                Err(Refusal::Total)
            } else if let Some(ip) = address
                && counts.by_address.get(&ip).copied().unwrap_or(0) >= self.max_per_address
            {
                Err(Refusal::PerAddress)
            } else {
                counts.total += 1;
                if let Some(ip) = address {
                    *counts.by_address.entry(ip).or_insert(0) += 1;
                }
                Ok(counts.total)
            }
        };
        match outcome {
            Ok(open) => {
                metrics::gauge!(names::SERVER_CONNECTIONS_OPEN, &self.labels).set(open as f64);
                Ok(ConnectionPermit {
                    limits: self.clone(),
                    address,
                })
            }
            Err(refusal) => {
                let mut labels = self.labels.to_vec();
                labels.push(("reason", refusal.as_str().to_string()));
                metrics::counter!(names::SERVER_CONNECTIONS_REFUSED, &labels).increment(1);
                Err(refusal)
            }
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .total
    }

    fn release(&self, address: Option<IpAddr>) {
        let open = {
            let mut counts = self
                .counts
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            counts.total = counts.total.saturating_sub(1);
            if let Some(ip) = address
                && let Some(count) = counts.by_address.get_mut(&ip)
            {
                *count -= 1;
                if *count == 0 {
                    counts.by_address.remove(&ip);
                }
            }
            counts.total
        };
        metrics::gauge!(names::SERVER_CONNECTIONS_OPEN, &self.labels).set(open as f64);
    }
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnectionPermit {
    limits: Arc<ConnectionLimits>,
    address: Option<IpAddr>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.limits.release(self.address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_apply_overall_and_per_address_and_free_on_drop() {
        let limits = Arc::new(ConnectionLimits::new(3, 2, "test", "grpc"));
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let two: IpAddr = "10.0.0.2".parse().unwrap();
        let a = limits.admit(Some(one)).unwrap();
        let _b = limits.admit(Some(one)).unwrap();
        assert_eq!(limits.admit(Some(one)).unwrap_err(), Refusal::PerAddress);
        let _c = limits.admit(Some(two)).unwrap();
        assert_eq!(limits.admit(Some(two)).unwrap_err(), Refusal::Total);
        assert_eq!(limits.admit(None).unwrap_err(), Refusal::Total);
        drop(a);
        assert_eq!(limits.open(), 2);
        let _d = limits.admit(Some(one)).unwrap();
        assert_eq!(limits.open(), 3);
    }
}
