//! The embedded ComfyUI simulator under supervision: if it stops while the platform runs (it
//! returned or failed), it is restarted on the same address and directories after a backoff,
//! so the platform keeps serving (the bridge's breaker and the jobs' retries cover the gap)
//! instead of exiting with it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The first wait before a restart.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A simulator that ran this long before stopping starts over from the first backoff.
const STABLE_RUN: Duration = Duration::from_secs(30);

/// Runs the simulator on `listener` until `shutdown`, restarting it whenever it stops.
pub async fn supervise(
    config: easel_comfy_sim::SimConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    let mut listener = Some(listener);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let bound = match listener.take() {
            Some(bound) => bound,
            None => match rebind(address, &shutdown, &mut backoff).await {
                Some(bound) => bound,
                None => return Ok(()),
            },
        };
        let started = tokio::time::Instant::now();
        let result = easel_comfy_sim::run(config.clone(), bound, shutdown.clone()).await;
        if shutdown.is_cancelled() {
            return Ok(());
        }
        match result {
            Ok(()) => tracing::error!(%address, "comfyui simulator stopped; restarting"),
            Err(error) => {
                tracing::error!(%address, error = %error, "comfyui simulator failed; restarting");
            }
        }
        if started.elapsed() >= STABLE_RUN {
            backoff = FIRST_BACKOFF;
        }
        if !pause(&shutdown, &mut backoff).await {
            return Ok(());
        }
    }
}

/// Binds `address` again (the old socket may linger a moment), backing off between tries.
async fn rebind(
    address: SocketAddr,
    shutdown: &CancellationToken,
    backoff: &mut Duration,
) -> Option<TcpListener> {
    loop {
        match TcpListener::bind(address).await {
            Ok(listener) => return Some(listener),
            Err(error) => {
                tracing::warn!(%address, error = %error, "cannot bind the simulator's address yet");
                if !pause(shutdown, backoff).await {
                    return None;
                }
            }
        }
    }
}

/// Waits `backoff` (then doubles it, up to the limit); false if shutdown came first.
async fn pause(shutdown: &CancellationToken, backoff: &mut Duration) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    tokio::select! {
        () = tokio::time::sleep(wait) => true,
        () = shutdown.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn system_stats(address: SocketAddr) -> Option<u16> {
        reqwest::get(format!("http://{address}/system_stats"))
            .await
            .ok()
            .map(|response| response.status().as_u16())
    }

    /// A simulator that dies (here: by configuration, after its first prompt) is back on the
    /// same address, and the supervisor ends only with the shutdown.
    #[tokio::test]
    async fn a_stopped_simulator_is_restarted_on_its_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let config = easel_comfy_sim::SimConfig {
            die_after_prompts: Some(0),
            ..easel_comfy_sim::SimConfig::default()
        };
        let shutdown = CancellationToken::new();
        let supervisor = tokio::spawn(supervise(config, listener, shutdown.clone()));
        let graph = serde_json::json!({"prompt": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
        }});
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let client = reqwest::Client::new();
        for round in 0..3 {
            while system_stats(address).await != Some(200) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "round {round}: not up"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // The prompt kills the simulator mid-run: it never finishes on the instance that
            // took it, so an empty queue on the address means a new instance answers.
            let _ = client
                .post(format!("http://{address}/prompt"))
                .json(&graph)
                .send()
                .await;
            loop {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "round {round}: not restarted"
                );
                let queue = match client.get(format!("http://{address}/queue")).send().await {
                    Ok(response) => response.json::<serde_json::Value>().await.ok(),
                    Err(_) => None,
                };
                if queue.is_some_and(|queue| {
                    queue == serde_json::json!({"queue_running": [], "queue_pending": []})
                }) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        assert!(!supervisor.is_finished());
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(60), supervisor)
            .await
            .expect("the supervisor stops with the shutdown")
            .expect("joined")
            .expect("ok");
    }
}
