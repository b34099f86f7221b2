//! The checkpoints the backends have, cached for a short time.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::error::BridgeError;
use crate::pool::Pool;

/// One checkpoint and the backends that have it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The file name.
    pub name: String,
    /// Backend names.
    pub backends: Vec<String>,
}

/// A short-lived cache of the checkpoint lists.
#[derive(Debug)]
pub struct Models {
    ttl: Duration,
    cache: Mutex<Option<(Instant, Vec<Checkpoint>)>>,
}

impl Models {
    /// A cache that keeps lists for `ttl`.
    pub fn new(ttl: Duration) -> Models {
        Models {
            ttl,
            cache: Mutex::new(None),
        }
    }

    /// The checkpoints, in the order the backends list them (first backend first). Asks the
    /// healthy backends when the cache is stale; keeps the stale list when none answers.
    pub async fn list(&self, pool: &Pool) -> Result<Vec<Checkpoint>, BridgeError> {
        // Held across the refresh, so concurrent callers share one round of requests.
        let mut cache = self.cache.lock().await;
        if let Some((at, list)) = cache.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(list.clone());
        }
        let candidates: Vec<_> = pool
            .backends()
            .iter()
            .filter(|backend| backend.status().healthy)
            .cloned()
            .collect();
        let answers = futures::future::join_all(candidates.iter().map(|backend| async move {
            (backend.name.clone(), backend.client.checkpoints().await)
        }))
        .await;
        let mut list: Vec<Checkpoint> = Vec::new();
        let mut answered = false;
        for (backend, answer) in answers {
            let Ok(names) = answer else { continue };
            answered = true;
            for name in names {
                match list.iter_mut().find(|checkpoint| checkpoint.name == name) {
                    Some(checkpoint) => checkpoint.backends.push(backend.clone()),
                    None => list.push(Checkpoint {
                        name,
                        backends: vec![backend.clone()],
                    }),
                }
            }
        }
        if !answered {
            return match cache.as_ref() {
                Some((_, stale)) => Ok(stale.clone()),
                None => Err(BridgeError::NoBackend),
            };
        }
        *cache = Some((Instant::now(), list.clone()));
        Ok(list)
    }
}
