//! The one WebSocket of a backend, shared by every run on it and demultiplexed by prompt id.
//!
//! ComfyUI sends a prompt's messages only to the socket whose `clientId` is the prompt's
//! `client_id`, so the bridge keeps one socket per backend under its own client id. When the
//! socket drops, every run is told (its messages may be lost) and, once reconnected, told to
//! reconcile from `/history`.

use std::sync::Arc;
use std::time::Duration;

use easel_runtime::Shutdown;
use futures::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use super::{Backend, RunSignal};
use crate::comfy::protocol::WsMessage;

const FIRST_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The socket's URL: `ws://host:port/<path>/ws?clientId=…`.
fn ws_url(backend: &Backend) -> String {
    let mut url = backend.url.clone();
    let _ = url.set_scheme("ws");
    let path = format!("{}/ws", backend.url.path().trim_end_matches('/'));
    url.set_path(&path);
    url.query_pairs_mut()
        .clear()
        .append_pair("clientId", &backend.client_id);
    url.to_string()
}

/// Keeps the socket connected until shutdown.
pub async fn run(backend: Arc<Backend>, shutdown: Shutdown) {
    let url = ws_url(&backend);
    let mut retry = FIRST_RETRY;
    loop {
        let connect = tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(&url));
        let connected = tokio::select! {
            result = connect => result,
            () = shutdown.triggered() => return,
        };
        match connected {
            Ok(Ok((stream, _))) => {
                retry = FIRST_RETRY;
                backend.lock().ws_connected = true;
                tracing::debug!(backend = %backend.name, "websocket connected");
                backend.broadcast(RunSignal::Reconnected);
                let (_sink, mut messages) = stream.split();
                loop {
                    let next = tokio::select! {
                        next = messages.next() => next,
                        () = shutdown.triggered() => return,
                    };
                    match next {
                        Some(Ok(Message::Text(text))) => {
                            if let Some(message) = WsMessage::parse(text.as_str()) {
                                backend.dispatch(message);
                            }
                        }
                        // PNG frames are `SaveImageWebsocket` outputs; JPEG latent previews
                        // and pings are of no use to the bridge.
                        Some(Ok(Message::Binary(frame))) => {
                            if let Some(message) = WsMessage::parse_binary(&frame) {
                                backend.dispatch(message);
                            }
                        }
                        Some(Ok(Message::Close(_))) | None => break,
                        Some(Ok(_)) => {}
                        Some(Err(error)) => {
                            tracing::debug!(backend = %backend.name, error = %error, "websocket error");
                            break;
                        }
                    }
                }
                // `running_prompt` stays: the replay after the reconnect (`executing` without a
                // prompt id) is about it.
                {
                    let mut state = backend.lock();
                    state.ws_connected = false;
                    // The server may come back as another version, with other nodes.
                    state.save_websocket = None;
                }
                tracing::warn!(backend = %backend.name, "websocket disconnected");
                backend.broadcast(RunSignal::Disconnected);
            }
            Ok(Err(error)) => {
                tracing::debug!(backend = %backend.name, error = %error, "websocket connect failed");
            }
            Err(_) => {
                tracing::debug!(backend = %backend.name, "websocket connect timed out");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            () = shutdown.triggered() => return,
        }
        retry = (retry * 2).min(MAX_RETRY);
    }
}
