//! Job streams: WebSocket and Server-Sent Events deliver the snapshot, then every event in
//! order, and end at the terminal status; SSE resumes after `Last-Event-ID`; a shutdown
//! closes WebSockets with 1001 and drains.

use std::time::Duration;

use easel_proto::account::v1::Tier;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use easel_comfy_sim::QueueHold;
use easel_proto::jobs::v1::WatchJobRequest;

use crate::support::{Platform, WAIT, small_job, with_key};

async fn submit(platform: &Platform, api_key: &str, body: &Value) -> String {
    let response = platform.submit(api_key, body).await;
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Reads a WebSocket to its end: the JSON events and the close frame's code. `hold` (the
/// backend's held queue) is released once the first event is in, so the job runs while the
/// socket is certainly attached.
async fn read_socket(
    url: &str,
    api_key: Option<&str>,
    mut hold: Option<QueueHold>,
) -> (Vec<Value>, Option<CloseCode>) {
    let mut request = url.into_client_request().unwrap();
    if let Some(key) = api_key {
        request
            .headers_mut()
            .insert("x-api-key", key.parse().unwrap());
    }
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket connects");
    let mut events = Vec::new();
    let mut close = None;
    tokio::time::timeout(WAIT, async {
        while let Some(message) = socket.next().await {
            match message.expect("no socket error") {
                Message::Text(text) => {
                    events.push(serde_json::from_str(text.as_str()).unwrap());
                    hold.take();
                }
                Message::Close(frame) => {
                    close = frame.map(|frame| frame.code);
                    break;
                }
                _ => {}
            }
        }
    })
    .await
    .expect("the socket closes");
    (events, close)
}

fn assert_in_order(events: &[Value]) {
    assert!(
        events[0]["type"] == "snapshot" && events[0]["job"].is_object(),
        "first comes the snapshot: {}",
        events[0]
    );
    let seqs: Vec<u64> = events
        .iter()
        .map(|event| event["seq"].as_u64().unwrap())
        .collect();
    for pair in seqs.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "no gap, no duplicate: {seqs:?}");
    }
    let last = events.last().unwrap();
    assert_eq!(
        (&last["type"], &last["status"]),
        (&json!("status"), &json!("completed")),
        "ends at the terminal status: {last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_deliver_every_event_in_order_and_close_normally() {
    let platform = Platform::start().await;
    let user = platform.user(Tier::Pro).await;
    let hold = platform.hold_backend();
    let id = submit(
        &platform,
        &user.api_key,
        &json!({"prompt": "watched", "width": 64, "height": 64, "steps": 8}),
    )
    .await;
    let ws = platform.url.replacen("http", "ws", 1);

    let (events, close) = read_socket(
        &format!("{ws}/ws/jobs/{id}"),
        Some(&user.api_key),
        Some(hold),
    )
    .await;
    assert_in_order(&events);
    assert!(
        events
            .iter()
            .any(|event| event["type"] == "progress" && event["progress"].is_object()),
        "progress events come through"
    );
    assert_eq!(close, Some(CloseCode::Normal));

    // Browsers: the credential in the query; a finished job is its snapshot, then a close.
    let (events, close) = read_socket(
        &format!("{ws}/ws/jobs/{id}?access_token={}", user.api_key),
        None,
        None,
    )
    .await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["job"]["status"], "completed");
    assert_eq!(events[0]["job"]["progress"]["percent"], 100.0);
    assert_eq!(close, Some(CloseCode::Normal));

    // No credential: refused before the upgrade.
    let refused = tokio_tungstenite::connect_async(format!("{ws}/ws/jobs/{id}")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
        }
        other => panic!("expected a 401, got {other:?}"),
    }
}

/// Reads an SSE stream to its end: `(id, event, data)` of every event. `hold` is released
/// once the first event is in (see [`read_socket`]).
async fn read_sse(
    platform: &Platform,
    api_key: &str,
    id: &str,
    last_event_id: Option<&str>,
    mut hold: Option<QueueHold>,
) -> Vec<(String, String, Value)> {
    let mut request = platform
        .http
        .get(format!("{}/api/v1/jobs/{id}/events", platform.url))
        .header("x-api-key", api_key)
        .header("accept", "text/event-stream");
    if let Some(last) = last_event_id {
        request = request.header("last-event-id", last);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(chunk) = body.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let (mut event_id, mut name, mut data) =
                    (String::new(), String::new(), String::new());
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id:") {
                        event_id = value.trim().to_string();
                    } else if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim().to_string();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if !data.is_empty() {
                    events.push((event_id, name, serde_json::from_str(&data).unwrap()));
                    hold.take();
                }
            }
        }
    })
    .await
    .expect("the event stream ends");
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_are_ordered_and_resume_after_last_event_id() {
    let platform = Platform::start().await;
    let user = platform.user(Tier::Pro).await;
    let hold = platform.hold_backend();
    let id = submit(&platform, &user.api_key, &small_job("streamed")).await;

    let events = read_sse(&platform, &user.api_key, &id, None, Some(hold)).await;
    let data: Vec<Value> = events.iter().map(|(_, _, data)| data.clone()).collect();
    assert_in_order(&data);
    for (event_id, name, data) in &events {
        assert_eq!(
            event_id,
            &data["seq"].as_u64().unwrap().to_string(),
            "id: is the sequence number"
        );
        assert_eq!(name, data["type"].as_str().unwrap(), "event: is the type");
    }
    assert_eq!(events[0].1, "snapshot");

    // Resume in the middle: exactly the events after it.
    let middle = &events[events.len() / 2].0;
    let resumed = read_sse(&platform, &user.api_key, &id, Some(middle), None).await;
    let expected: Vec<&String> = events
        .iter()
        .map(|(event_id, _, _)| event_id)
        .filter(|event_id| event_id.parse::<u64>().unwrap() > middle.parse::<u64>().unwrap())
        .collect();
    let got: Vec<&String> = resumed.iter().map(|(event_id, _, _)| event_id).collect();
    assert_eq!(got, expected);
    assert!(!got.is_empty());

    // A Last-Event-ID that is not a number is refused.
    let response = platform
        .http
        .get(format!("{}/api/v1/jobs/{id}/events", platform.url))
        .header("x-api-key", &user.api_key)
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_websockets_with_going_away_and_drains() {
    let mut platform = Platform::start().await;
    let user = platform.user(Tier::Pro).await;
    // Held for the whole test: the job stays live while the platform shuts down.
    let _hold = platform.hold_backend();
    let id = submit(
        &platform,
        &user.api_key,
        &json!({"prompt": "long", "width": 64, "height": 64, "steps": 100}),
    )
    .await;
    let ws = platform.url.replacen("http", "ws", 1);
    let mut request = format!("{ws}/ws/jobs/{id}").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-api-key", user.api_key.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    // The snapshot arrives: the stream is open.
    let first = tokio::time::timeout(WAIT, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(first, Message::Text(_)));
    // A gRPC watch and an SSE stream of the same job, open too.
    let mut grpc = platform
        .jobs()
        .await
        .watch_job(with_key(
            WatchJobRequest {
                job_id: id.clone(),
                after_seq: 0,
            },
            &user.api_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(grpc.next().await.unwrap().is_ok());
    let sse = platform
        .http
        .get(format!("{}/api/v1/jobs/{id}/events", platform.url))
        .header("x-api-key", &user.api_key)
        .send()
        .await
        .unwrap();
    let mut sse = sse.bytes_stream();
    assert!(sse.next().await.unwrap().is_ok());

    platform.shut_down_gateway();
    let close = tokio::time::timeout(WAIT, async {
        while let Some(message) = socket.next().await {
            if let Ok(Message::Close(frame)) = message {
                return frame.map(|frame| frame.code);
            }
        }
        None
    })
    .await
    .expect("the socket is closed");
    assert_eq!(close, Some(CloseCode::Away));
    drop(socket);
    // The gRPC stream ends with UNAVAILABLE (resume with after_seq), the SSE stream ends.
    let status = tokio::time::timeout(WAIT, async {
        loop {
            match grpc.next().await {
                Some(Ok(_)) => continue,
                Some(Err(status)) => return Some(status),
                None => return None,
            }
        }
    })
    .await
    .unwrap()
    .expect("the stream ends with a status");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = sse.next().await {} })
        .await
        .expect("the SSE stream ends");
    platform.gateway_stopped().await.expect("a clean drain");
    // Nothing listens any more.
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        platform
            .http
            .get(format!("{}/healthz", platform.url))
            .send(),
    )
    .await
    .expect("answers or fails at once");
    assert!(refused.is_err());
}
