//! A job's events over WebSocket (`GET /ws/jobs/{id}`) and Server-Sent Events
//! (`GET /api/v1/jobs/{id}/events`): the snapshot, then every event in order, ending at a
//! terminal status.
//!
//! WebSocket: one text message per event (the `JobEvent` in JSON), then a normal close (1000);
//! when the gateway shuts down, close 1001 (going away). SSE: `id:` is the event's sequence
//! number, so a reconnecting `EventSource` resumes with `Last-Event-ID` after it.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use easel_proto::jobs::v1::{JobEvent, WatchJobRequest};
use easel_runtime::error::{Error, ErrorCode};
use futures::{SinkExt, Stream, StreamExt};
use http::{HeaderMap, HeaderValue, header};

use super::json::{ApiError, PathParam};
use super::query::Query;
use super::view::RestEvent;
use super::{BaseUrl, RestState};
use crate::api::JobEvents;
use crate::context::CallContext;
use crate::metrics::names;

/// How long the gateway waits for the client's answer to its close frame.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(2);

/// The longest close reason a frame may carry (125 bytes of payload minus the code).
const MAX_CLOSE_REASON: usize = 123;

/// `GET /api/v1/jobs/{id}/events`, resumable with `Last-Event-ID`.
pub async fn server_sent_events(
    State(state): State<RestState>,
    context: CallContext,
    BaseUrl(base): BaseUrl,
    PathParam(job_id): PathParam,
    headers: HeaderMap,
    query: Query,
) -> Result<Response, ApiError> {
    query.finish()?;
    let after_seq = match headers.get("last-event-id") {
        None => 0,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|value| value.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                Error::invalid_field("Last-Event-ID", "must be an event id this stream sent")
            })?,
    };
    let events = state
        .gateway
        .watch_job(&context, WatchJobRequest { job_id, after_seq })
        .await?;
    let keepalive = state.gateway.config().stream_keepalive;
    let stream = sse_events(events, base);
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(keepalive))
        .into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies such as nginx must not buffer the stream.
    response_headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The events as SSE: `id:` the sequence number, `data:` the event; an error other than the
/// gateway's shutdown is sent as an `error` event with the envelope before the stream ends.
fn sse_events(
    events: JobEvents,
    base: String,
) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    let guard = OpenStream::new("sse");
    events
        .scan(false, move |failed, item| {
            let out = if *failed {
                None
            } else {
                match item {
                    Ok(event) => Some(event_to_sse(&event, &base)),
                    Err(error) if error.code() == ErrorCode::Unavailable => None,
                    Err(error) => {
                        *failed = true;
                        error.log();
                        Some(
                            Event::default()
                                .event("error")
                                .json_data(error.to_envelope(None))
                                .unwrap_or_default(),
                        )
                    }
                }
            };
            futures::future::ready(out)
        })
        .map(move |event| {
            let _keep = &guard;
            Ok(event)
        })
}

fn event_to_sse(event: &JobEvent, base: &str) -> Event {
    let rest = RestEvent::new(event, base);
    let sse = Event::default()
        .id(event.seq.to_string())
        .event(rest.kind());
    match serde_json::to_string(&rest) {
        Ok(json) => sse.data(json),
        Err(error) => {
            tracing::error!(%error, "a job event could not be serialized");
            sse.comment("unserializable event")
        }
    }
}

/// `GET /ws/jobs/{id}` (`?after=N` resumes after event N).
pub async fn websocket(
    State(state): State<RestState>,
    context: CallContext,
    BaseUrl(base): BaseUrl,
    PathParam(job_id): PathParam,
    mut query: Query,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|rejection| {
        ApiError(Error::invalid_argument(format!(
            "this route is a WebSocket: {}",
            rejection.body_text()
        )))
    })?;
    let after_seq = query.take_string(&["after", "after_seq", "afterSeq"])?;
    query.finish()?;
    let after_seq = match after_seq {
        None => 0,
        Some(value) => value
            .parse::<u64>()
            .map_err(|_| Error::invalid_field("after", "must be an event sequence number"))?,
    };
    // Open the upstream stream first: an unknown job is a 404 before the upgrade.
    let events = state
        .gateway
        .watch_job(&context, WatchJobRequest { job_id, after_seq })
        .await?;
    let keepalive = state.gateway.config().stream_keepalive;
    let shutdown = state.gateway.shutdown().clone();
    Ok(upgrade
        .on_failed_upgrade(|error| tracing::debug!(%error, "websocket upgrade failed"))
        .on_upgrade(move |socket| pump(socket, events, base, shutdown, keepalive)))
}

/// Sends every event, answers the client's frames, pings while idle, and closes: 1000 after
/// the terminal event, 1001 on shutdown, 1011 when the stream failed.
async fn pump(
    socket: WebSocket,
    mut events: JobEvents,
    base: String,
    shutdown: easel_runtime::Shutdown,
    keepalive: Duration,
) {
    let _guard = OpenStream::new("websocket");
    let (mut sink, mut incoming) = socket.split();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    let stopped = shutdown.triggered();
    tokio::pin!(stopped);
    let close = loop {
        tokio::select! {
            biased;
            () = &mut stopped => break going_away(),
            item = events.next() => match item {
                Some(Ok(event)) => {
                    let text = match serde_json::to_string(&RestEvent::new(&event, &base)) {
                        Ok(text) => text,
                        Err(error) => {
                            tracing::error!(%error, "a job event could not be serialized");
                            break frame(close_code::ERROR, "internal error");
                        }
                    };
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                Some(Err(_)) if shutdown.is_triggered() => break going_away(),
                Some(Err(error)) => {
                    error.log();
                    break frame(close_code::ERROR, error.message());
                }
                None => break frame(close_code::NORMAL, "job finished"),
            },
            message = incoming.next() => match message {
                // The client left or closed: nothing more to say.
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                // Pings are answered by the protocol layer; text from the client is ignored.
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if sink.send(Message::Ping(bytes::Bytes::new())).await.is_err() {
                    return;
                }
            }
        }
    };
    if sink.send(Message::Close(Some(close))).await.is_err() {
        return;
    }
    // Wait for the client's close frame, so the connection ends cleanly on both sides.
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE, async {
        while let Some(Ok(message)) = incoming.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

fn going_away() -> CloseFrame {
    frame(close_code::AWAY, "server shutting down")
}

fn frame(code: u16, reason: &str) -> CloseFrame {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code,
        reason: reason[..end].into(),
    }
}

/// Counts an open stream while it lives.
struct OpenStream {
    kind: &'static str,
}

impl OpenStream {
    fn new(kind: &'static str) -> OpenStream {
        metrics::gauge!(names::OPEN_STREAMS, "kind" => kind).increment(1.0);
        OpenStream { kind }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!(names::OPEN_STREAMS, "kind" => self.kind).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_frame() {
        let long = "é".repeat(100);
        let closed = frame(close_code::ERROR, &long);
        assert!(closed.reason.len() <= MAX_CLOSE_REASON);
        assert_eq!(
            frame(close_code::NORMAL, "job finished").reason,
            "job finished"
        );
    }

    #[test]
    fn sse_events_carry_the_sequence_number_and_kind() {
        let event = JobEvent {
            job_id: "job_1".into(),
            seq: 7,
            kind: Some(easel_proto::jobs::v1::job_event::Kind::Progress(
                Default::default(),
            )),
            ..Default::default()
        };
        let rendered = format!("{:?}", event_to_sse(&event, ""));
        assert!(rendered.contains("progress"), "{rendered}");
        assert!(rendered.contains('7'), "{rendered}");
    }
}
