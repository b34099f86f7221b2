//! The `/ws` endpoint and message routing: `status` to everyone, prompt messages to the prompt's
//! client only, the newest socket of a client id wins, and a reconnect during a run replays the
//! running node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::{Message, WebSocket};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::pyjson;
use crate::state::Shared;

/// How long a dying socket may take to deliver what was queued before death.
const FLUSH_ON_DEATH: std::time::Duration = std::time::Duration::from_millis(200);

/// The features a client is told about (and `/features` returns).
pub fn server_features() -> Value {
    json!({"supports_preview_metadata": true, "max_upload_size": 104_857_600})
}

/// A frame queued for one socket.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A JSON text message.
    Text(String),
    /// A binary preview frame.
    Binary(Vec<u8>),
}

/// `{"type": kind, "data": data}` serialised the Python way.
pub fn message(kind: &str, data: Value) -> String {
    pyjson::to_string(&json!({"type": kind, "data": data}))
}

struct Client {
    connection: u64,
    sender: mpsc::UnboundedSender<Frame>,
    preview_metadata: Arc<AtomicBool>,
}

#[derive(Default)]
struct HubInner {
    clients: HashMap<String, Client>,
    next_connection: u64,
    /// The running prompt's client and its current node (for the reconnect replay).
    running: Option<(Option<String>, Option<String>)>,
}

/// The registry of connected sockets.
#[derive(Default)]
pub struct Hub {
    inner: Mutex<HubInner>,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HubInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends `status` to every socket.
    pub fn broadcast_status(&self, remaining: usize) {
        let text = message(
            "status",
            json!({"status": {"exec_info": {"queue_remaining": remaining}}}),
        );
        self.broadcast(&text);
    }

    /// Sends a text frame to every socket.
    pub fn broadcast(&self, text: &str) {
        for client in self.lock().clients.values() {
            let _ = client.sender.send(Frame::Text(text.to_owned()));
        }
    }

    /// Sends a text frame to one client id (nothing if it is absent or `None`).
    pub fn send_to(&self, client_id: Option<&str>, text: String) {
        let Some(client_id) = client_id else { return };
        if let Some(client) = self.lock().clients.get(client_id) {
            let _ = client.sender.send(Frame::Text(text));
        }
    }

    /// Sends a binary frame built for the client's negotiated preview format.
    pub fn send_binary_to(&self, client_id: Option<&str>, build: impl FnOnce(bool) -> Vec<u8>) {
        let Some(client_id) = client_id else { return };
        let inner = self.lock();
        if let Some(client) = inner.clients.get(client_id) {
            let with_metadata = client.preview_metadata.load(Ordering::SeqCst);
            let _ = client.sender.send(Frame::Binary(build(with_metadata)));
        }
    }

    /// Whether the client negotiated `supports_preview_metadata`.
    pub fn wants_metadata(&self, client_id: Option<&str>) -> bool {
        client_id
            .and_then(|client_id| {
                self.lock()
                    .clients
                    .get(client_id)
                    .map(|client| client.preview_metadata.load(Ordering::SeqCst))
            })
            .unwrap_or(false)
    }

    /// Records the running prompt's client and node (`None` node: between prompts).
    pub fn set_running(&self, running: Option<(Option<String>, Option<String>)>) {
        self.lock().running = running;
    }

    /// Drops every socket (used when dying).
    pub fn disconnect_all(&self) {
        self.lock().clients.clear();
    }

    fn register(
        &self,
        sid: &str,
        remaining: usize,
    ) -> (u64, mpsc::UnboundedReceiver<Frame>, Arc<AtomicBool>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let preview_metadata = Arc::new(AtomicBool::new(false));
        let mut inner = self.lock();
        inner.next_connection += 1;
        let connection = inner.next_connection;
        let _ = sender.send(Frame::Text(message(
            "status",
            json!({"status": {"exec_info": {"queue_remaining": remaining}}, "sid": sid}),
        )));
        if let Some((Some(client_id), Some(node))) = &inner.running
            && client_id == sid
        {
            let _ = sender.send(Frame::Text(message("executing", json!({"node": node}))));
        }
        inner.clients.insert(
            sid.to_owned(),
            Client {
                connection,
                sender,
                preview_metadata: preview_metadata.clone(),
            },
        );
        (connection, receiver, preview_metadata)
    }

    fn unregister(&self, sid: &str, connection: u64) {
        let mut inner = self.lock();
        if inner
            .clients
            .get(sid)
            .is_some_and(|client| client.connection == connection)
        {
            inner.clients.remove(sid);
        }
    }
}

/// Serves one upgraded socket until the client leaves, the server dies (dropped without a
/// close frame) or shuts down (closed with a close frame).
pub async fn serve_socket(shared: Arc<Shared>, socket: WebSocket, client_id: Option<String>) {
    let sid = client_id
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let remaining = shared.remaining.load(Ordering::SeqCst);
    let (connection, mut frames, preview_metadata) = shared.hub.register(&sid, remaining);
    tracing::debug!(sid = %sid, connection, "websocket connected");
    let (mut sink, mut stream) = socket.split();
    let mut first_message = true;
    let mut replaced = false;
    loop {
        tokio::select! {
            () = shared.kill.cancelled() => {
                // Dying: what was sent before death already reached the kernel, so deliver it,
                // then drop the TCP connection without a close frame.
                while let Ok(frame) = frames.try_recv() {
                    let message = match frame {
                        Frame::Text(text) => Message::Text(text.into()),
                        Frame::Binary(bytes) => Message::Binary(bytes.into()),
                    };
                    if tokio::time::timeout(FLUSH_ON_DEATH, sink.send(message)).await.is_err() {
                        break;
                    }
                }
                return;
            }
            () = shared.shutdown.cancelled() => {
                let _ = sink.send(Message::Close(None)).await;
                break;
            }
            frame = frames.recv(), if !replaced => {
                let sent = match frame {
                    Some(Frame::Text(text)) => sink.send(Message::Text(text.into())).await,
                    Some(Frame::Binary(bytes)) => sink.send(Message::Binary(bytes.into())).await,
                    // Replaced by a newer socket with the same id: stay open, get nothing.
                    None => {
                        replaced = true;
                        continue;
                    }
                };
                if sent.is_err() {
                    break;
                }
            }
            incoming = stream.next() => {
                match incoming {
                    Some(Ok(Message::Text(text))) => {
                        let Ok(parsed) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                        if first_message && parsed.get("type").and_then(Value::as_str) == Some("feature_flags") {
                            let wants = parsed
                                .get("data")
                                .and_then(|data| data.get("supports_preview_metadata"))
                                .and_then(Value::as_bool)
                                .unwrap_or(false);
                            preview_metadata.store(wants, Ordering::SeqCst);
                            shared.hub.send_to(Some(&sid), message("feature_flags", server_features()));
                        }
                        first_message = false;
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
        }
    }
    shared.hub.unregister(&sid, connection);
    tracing::debug!(sid = %sid, connection, "websocket disconnected");
}
