//! The job path over REST, WebSocket and Server-Sent Events.

use easel_e2e::image::png_size;
use easel_e2e::{Platform, event_status, is_terminal, json_u64, sha256_hex, solid_image_graph};
use serde_json::json;

/// The job inside a submit answer.
fn job_of(body: &serde_json::Value) -> &serde_json::Value {
    if body["job"].is_object() {
        &body["job"]
    } else {
        body
    }
}

#[tokio::test]
async fn rest_submit_watch_over_websocket_and_download_the_signed_png() {
    let platform = Platform::start().await;
    let key = platform.admin.api_key.clone();

    let response = platform
        .submit_rest(
            &key,
            &json!({"prompt": "A lighthouse at dusk", "width": 512, "height": 384, "seed": 7}),
            None,
        )
        .await;
    assert_eq!(response.status(), 202);
    let location = response
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no Location header"));
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let job = job_of(&body);
    let job_id = job["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job id in {body}"));
    assert!(
        location.ends_with(&format!("/api/v1/jobs/{job_id}")),
        "{location}"
    );
    assert_eq!(job["status"], "pending", "{body}");

    // The WebSocket: a snapshot first, then every event in sequence, closed at the end.
    let events = platform.watch_ws(&key, job_id).await;
    assert!(!events.is_empty(), "no events");
    assert!(
        events[0]["type"] == "snapshot" && events[0]["job"].is_object(),
        "first event: {}",
        events[0]
    );
    let sequence: Vec<u64> = events.iter().filter_map(|e| json_u64(&e["seq"])).collect();
    assert_eq!(sequence.len(), events.len(), "every event has a seq");
    assert!(
        sequence.windows(2).all(|pair| pair[0] < pair[1]),
        "events out of order or repeated: {sequence:?}"
    );
    let last_status = events
        .iter()
        .rev()
        .find_map(event_status)
        .unwrap_or_default();
    assert_eq!(last_status, "completed", "events: {events:?}");
    assert!(
        events.iter().any(|event| event["progress"].is_object()),
        "no progress event"
    );

    let (status, fetched) = platform
        .get_json(&key, &format!("/api/v1/jobs/{job_id}"))
        .await;
    assert_eq!(status, 200);
    let job = job_of(&fetched);
    assert_eq!(job["status"], "completed");
    assert_eq!(json_u64(&job["metadata"]["seed"]), Some(7));
    let output = &job["results"][0];
    let url = output["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no url: {job}"));
    let (status, bytes) = platform.download(url).await;
    assert_eq!(status, 200, "download of the signed URL");
    assert_eq!(Some(sha256_hex(&bytes).as_str()), output["sha256"].as_str());
    assert_eq!(png_size(&bytes), Ok((512, 384)));

    // A changed signature is refused.
    let forged = format!("{url}x");
    let (status, _) = platform.download(&forged).await;
    // S3 answers a malformed signature with 400, a wrong one with 403.
    assert!(
        matches!(status, 400 | 401 | 403),
        "forged link answered {status}"
    );
}

#[tokio::test]
async fn server_sent_events_arrive_in_order_and_resume_after_last_event_id() {
    let platform = Platform::start().await;
    let key = platform.admin.api_key.clone();
    let response = platform
        .submit_rest(
            &key,
            &json!({"prompt": "A sunset", "width": 256, "height": 256}),
            None,
        )
        .await;
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let job_id = job_of(&body)["id"].as_str().unwrap_or_default().to_string();

    let events = platform.watch_sse(&key, &job_id, None).await;
    assert!(events.len() >= 3, "too few events: {events:?}");
    let ids: Vec<u64> = events
        .iter()
        .map(|(id, _)| id.parse().unwrap_or(0))
        .collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "ids {ids:?}");
    for (id, data) in &events {
        assert_eq!(
            json_u64(&data["seq"]).map(|seq| seq.to_string()).as_deref(),
            Some(id.as_str())
        );
    }
    let last = events
        .iter()
        .rev()
        .find_map(|(_, data)| event_status(data))
        .unwrap_or_default();
    assert!(is_terminal(last), "stream ended at {last}");

    // Resume from the middle: only the later events, the same ones.
    let middle = &events[events.len() / 2].0;
    let resumed = platform.watch_sse(&key, &job_id, Some(middle)).await;
    let middle_seq: u64 = middle.parse().unwrap_or(0);
    let expected: Vec<&String> = events
        .iter()
        .filter(|(id, _)| id.parse::<u64>().unwrap_or(0) > middle_seq)
        .map(|(id, _)| id)
        .collect();
    let got: Vec<&String> = resumed
        .iter()
        .filter(|(_, data)| data["type"] != "snapshot")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(got, expected, "resumed stream");
}

#[tokio::test]
async fn idempotent_replay_cancel_and_a_graph_comfyui_rejects() {
    let platform = Platform::start_with(easel_e2e::PlatformOptions {
        // Slow enough that a job is still running when it is cancelled.
        sim_args: vec!["--step-delay-ms".into(), "200".into()],
        ..Default::default()
    })
    .await;
    let key = platform.admin.api_key.clone();
    let request = json!({"prompt": "A quiet harbour", "width": 256, "height": 256, "steps": 20});

    let first = platform
        .submit_rest(&key, &request, Some("e2e-replay-1"))
        .await;
    assert_eq!(first.status(), 202);
    let first: serde_json::Value = first.json().await.unwrap_or_default();
    let second = platform
        .submit_rest(&key, &request, Some("e2e-replay-1"))
        .await;
    assert_eq!(second.status(), 200, "a replay answers 200");
    assert_eq!(
        second
            .headers()
            .get("idempotency-replayed")
            .and_then(|value| value.to_str().ok()),
        Some("true")
    );
    let second: serde_json::Value = second.json().await.unwrap_or_default();
    assert_eq!(job_of(&first)["id"], job_of(&second)["id"]);
    let other = platform
        .submit_rest(
            &key,
            &json!({"prompt": "Something else"}),
            Some("e2e-replay-1"),
        )
        .await;
    assert_eq!(other.status(), 422, "same key, other body");

    // Cancel: the job ends CANCELLED and its watchers see it.
    let job_id = job_of(&first)["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let cancelled = platform
        .http
        .post(format!("{}/api/v1/jobs/{job_id}:cancel", platform.url()))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap_or_else(|error| panic!("cancel failed: {error}"));
    assert_eq!(cancelled.status(), 200);
    let events = platform.watch_ws(&key, &job_id).await;
    let last = events
        .iter()
        .rev()
        .find_map(event_status)
        .unwrap_or_default();
    assert_eq!(last, "cancelled");

    // A graph ComfyUI refuses: the job fails with the node's error, not retried.
    let rejected = platform
        .submit_rest(&key, &json!({"workflow": solid_image_graph(-8, 64)}), None)
        .await;
    assert_eq!(rejected.status(), 202);
    let rejected: serde_json::Value = rejected.json().await.unwrap_or_default();
    let rejected_id = job_of(&rejected)["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let events = platform.watch_ws(&key, &rejected_id).await;
    assert_eq!(events.iter().rev().find_map(event_status), Some("failed"));
    let (_, job) = platform
        .get_json(&key, &format!("/api/v1/jobs/{rejected_id}"))
        .await;
    let job = job_of(&job);
    let node_errors = job["error"]["node_errors"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        node_errors.iter().any(|error| error["node_id"] == "1"),
        "no error for node 1: {job}"
    );
    assert_eq!(
        json_u64(&job["attempts"]),
        Some(1),
        "a client error is not retried"
    );

    // A raw graph that ComfyUI accepts runs to the end.
    let accepted = platform
        .submit_rest(&key, &json!({"workflow": solid_image_graph(64, 48)}), None)
        .await;
    assert_eq!(accepted.status(), 202);
    let accepted: serde_json::Value = accepted.json().await.unwrap_or_default();
    let accepted_id = job_of(&accepted)["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let events = platform.watch_ws(&key, &accepted_id).await;
    assert_eq!(
        events.iter().rev().find_map(event_status),
        Some("completed")
    );
}
