//! gRPC, gRPC-web and REST answer the same data on the one port; CORS lets listed browser
//! origins in and keeps others out.

use easel_proto::account::v1::Tier;
use easel_proto::jobs::v1::{
    GetJobRequest, GetJobResponse, JobEvent, JobStatus, WatchJobRequest, job_event,
};
use easel_proto::models::v1::{ListModelsRequest, ListModelsResponse};
use futures::StreamExt;
use prost::Message;
use serde_json::{Value, json};

use crate::grpc_web;
use crate::support::{Options, Platform, small_job, with_key};

const ORIGIN: &str = "https://app.example.com";

/// The answer without its signed links, which are signed anew on every read.
fn unsigned(mut answer: GetJobResponse) -> GetJobResponse {
    if let Some(job) = answer.job.as_mut() {
        for output in &mut job.outputs {
            assert!(!output.url.is_empty());
            output.url.clear();
            output.url_expire_time = None;
        }
    }
    answer
}

/// The REST job carries the values of the gRPC one (links are signed anew on every read).
fn assert_same_job(rest: &Value, job: &easel_proto::jobs::v1::Job) {
    assert_eq!(rest["job_id"], job.id);
    assert_eq!(rest["id"], job.id);
    assert_eq!(rest["owner"], job.owner);
    assert_eq!(rest["status"], "completed");
    assert_eq!(rest["attempts"], job.attempts);
    assert_eq!(rest["max_attempts"], job.max_attempts);
    // Empty text is left out over REST.
    let text = |name: &str| rest[name].as_str().unwrap_or_default().to_string();
    assert_eq!(text("backend"), job.backend);
    assert_eq!(rest["seq"], job.seq);
    assert_eq!(text("trace_id"), job.trace_id);
    let metadata = job.metadata.as_ref().unwrap();
    assert_eq!(rest["metadata"]["seed"], metadata.seed);
    assert_eq!(rest["metadata"]["checkpoint"], metadata.checkpoint);
    let resolved = metadata.resolved.as_ref().unwrap();
    assert_eq!(rest["metadata"]["resolved"]["steps"], resolved.steps);
    assert_eq!(
        rest["metadata"]["resolved"]["sampler"],
        resolved.sampler().as_str_name()["SAMPLER_".len()..].to_ascii_lowercase()
    );
    let timestamp = |time: &Option<pbjson_types::Timestamp>| serde_json::to_value(time).unwrap();
    assert_eq!(rest["created_at"], timestamp(&job.create_time));
    assert_eq!(rest["started_at"], timestamp(&job.start_time));
    assert_eq!(rest["completed_at"], timestamp(&job.end_time));
    let results = rest["results"].as_array().unwrap();
    assert_eq!(results.len(), job.outputs.len());
    for (rest, output) in results.iter().zip(&job.outputs) {
        assert_eq!(rest["artifact_id"], output.artifact_id);
        assert_eq!(rest["sha256"], output.sha256);
        assert_eq!(rest["size_bytes"], output.size_bytes);
        assert_eq!(rest["content_type"], output.content_type);
        assert_eq!(
            (&rest["width"], &rest["height"]),
            (&json!(output.width), &json!(output.height))
        );
        assert!(rest["url"].as_str().unwrap().contains(&output.artifact_id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_grpc_web_and_rest_return_the_same_job_and_models() {
    let platform = Platform::start().await;
    let user = platform.user(Tier::Pro).await;
    let response = platform
        .submit(&user.api_key, &small_job("same data"))
        .await;
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    platform.wait_terminal(&user.api_key, &id).await;

    // gRPC (h2).
    let grpc = platform
        .jobs()
        .await
        .get_job(with_key(
            GetJobRequest { job_id: id.clone() },
            &user.api_key,
        ))
        .await
        .expect("GetJob over gRPC");
    assert!(
        grpc.metadata().get("ratelimit-limit").is_some(),
        "rate-limit metadata"
    );
    let grpc = unsigned(grpc.into_inner());
    assert_eq!(grpc.job.as_ref().unwrap().status(), JobStatus::Succeeded);

    // gRPC-web (HTTP/1.1), framed by hand.
    let answer = grpc_web::call(
        &platform.url,
        "/easel.jobs.v1.JobService/GetJob",
        &GetJobRequest { job_id: id.clone() },
        &[("x-api-key", &user.api_key)],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.grpc_status(), Some(0), "{answer:?}");
    assert_eq!(answer.messages.len(), 1);
    let web = unsigned(GetJobResponse::decode(answer.messages[0].clone()).unwrap());
    assert_eq!(web, grpc);

    // REST: the same values in its own spelling.
    let (status, rest) = platform
        .get_json(&user.api_key, &format!("/api/v1/jobs/{id}"))
        .await;
    assert_eq!(status, 200);
    assert_same_job(&rest, grpc.job.as_ref().unwrap());

    // Models, both ways.
    let models = platform.channel().await;
    let grpc_models =
        easel_proto::models::v1::model_service_client::ModelServiceClient::new(models)
            .list_models(with_key(ListModelsRequest::default(), &user.api_key))
            .await
            .unwrap()
            .into_inner();
    let (_, rest_models) = platform.get_json(&user.api_key, "/api/v1/models").await;
    assert_eq!(
        rest_models,
        easel_gateway::rest::json::snake_keys(serde_json::to_value(&grpc_models).unwrap())
    );
    let web_models = grpc_web::call(
        &platform.url,
        "/easel.models.v1.ModelService/ListModels",
        &ListModelsRequest::default(),
        &[("x-api-key", &user.api_key)],
    )
    .await;
    assert_eq!(
        ListModelsResponse::decode(web_models.messages[0].clone()).unwrap(),
        grpc_models
    );

    // A gRPC-web error is a gRPC status, not an HTTP error.
    let missing = grpc_web::call(
        &platform.url,
        "/easel.jobs.v1.JobService/GetJob",
        &GetJobRequest {
            job_id: "job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b".into(),
        },
        &[("x-api-key", &user.api_key)],
    )
    .await;
    assert_eq!(missing.status, 200);
    assert_eq!(missing.grpc_status(), Some(tonic::Code::NotFound as i32));
}

/// A status-change event's status, if it is one.
fn status_change(event: &JobEvent) -> Option<JobStatus> {
    match &event.kind {
        Some(job_event::Kind::StatusChange(change)) => Some(change.status()),
        _ => None,
    }
}

/// The snapshot's job status, if the event is a snapshot.
fn snapshot_status(event: &JobEvent) -> Option<JobStatus> {
    match &event.kind {
        Some(job_event::Kind::Snapshot(job)) => Some(job.status()),
        _ => None,
    }
}

/// Every watch: a live snapshot first, then consecutive events, the last one SUCCEEDED.
fn assert_live_watch(events: &[JobEvent]) {
    let first = snapshot_status(&events[0]).expect("the first event is a snapshot");
    assert!(
        matches!(first, JobStatus::Pending | JobStatus::Running),
        "the job was held live, so the snapshot is not terminal: {first:?}"
    );
    for pair in events.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "no gap, no duplicate");
    }
    assert_eq!(
        status_change(events.last().unwrap()),
        Some(JobStatus::Succeeded),
        "the last event is the status change to SUCCEEDED: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_job_streams_over_grpc_and_grpc_web_until_terminal() {
    let platform = Platform::start().await;
    let user = platform.user(Tier::Pro).await;
    // The backend holds its queue until the watch is attached, so the stream is live on any
    // machine, fast or slow; a job finished before its watch is covered below.
    let hold = platform.hold_backend();
    let response = platform.submit(&user.api_key, &small_job("watched")).await;
    let id = response.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();

    let mut stream = platform
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
        .expect("WatchJob")
        .into_inner();
    let mut events = vec![stream.next().await.unwrap().unwrap().event.unwrap()];
    drop(hold);
    while let Some(item) = stream.next().await {
        events.push(item.expect("no stream error").event.unwrap());
    }
    assert_live_watch(&events);

    // A finished job's watch is its snapshot, at the last event, and the stream ends.
    let mut again = platform
        .jobs()
        .await
        .watch_job(with_key(
            WatchJobRequest {
                job_id: id,
                after_seq: 0,
            },
            &user.api_key,
        ))
        .await
        .unwrap()
        .into_inner();
    let snapshot = again.next().await.unwrap().unwrap().event.unwrap();
    assert_eq!(snapshot.seq, events.last().unwrap().seq);
    assert_eq!(snapshot_status(&snapshot), Some(JobStatus::Succeeded));
    assert!(again.next().await.is_none());

    // A new job over gRPC-web (HTTP/1.1): every message in order, then the OK trailer.
    let hold = platform.hold_backend();
    let response = platform
        .submit(&user.api_key, &small_job("watched over grpc-web"))
        .await;
    let id = response.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut web = grpc_web::Streaming::open(
        &platform.url,
        "/easel.jobs.v1.JobService/WatchJob",
        &WatchJobRequest {
            job_id: id,
            after_seq: 0,
        },
        &[("x-api-key", &user.api_key)],
    )
    .await;
    // The snapshot is out, so the watch is attached: let the job run.
    web.next_message().await;
    drop(hold);
    let answer = web.finish().await;
    assert_eq!(answer.grpc_status(), Some(0), "{answer:?}");
    let web_events: Vec<_> = answer
        .messages
        .iter()
        .map(|message| {
            easel_proto::jobs::v1::WatchJobResponse::decode(message.clone())
                .unwrap()
                .event
                .unwrap()
        })
        .collect();
    assert_live_watch(&web_events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_lets_listed_origins_in_and_keeps_others_out() {
    let platform = Platform::start_with(Options {
        gateway_env: vec![(
            "EASEL_CORS_ORIGINS",
            format!("{ORIGIN},https://other.example.com"),
        )],
        ..Options::default()
    })
    .await;
    let user = platform.user(Tier::Pro).await;
    let preflight = |origin: &'static str| {
        platform
            .http
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/easel.jobs.v1.JobService/GetJob", platform.url),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,x-grpc-web,x-api-key",
            )
            .send()
    };

    let allowed = preflight(ORIGIN).await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(allowed.headers()["access-control-allow-origin"], ORIGIN);
    let allowed_headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for header in ["content-type", "x-grpc-web", "x-api-key"] {
        assert!(allowed_headers.contains(header), "{allowed_headers}");
    }

    let refused = preflight("https://evil.example.com").await.unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    // The call itself: the browser may read the status and the rate-limit headers.
    let client = reqwest::Client::builder().http1_only().build().unwrap();
    let response = client
        .post(format!("{}/easel.jobs.v1.JobService/GetJob", platform.url))
        .header("origin", ORIGIN)
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("x-api-key", &user.api_key)
        .body(grpc_web::frame(&GetJobRequest {
            job_id: "job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b".into(),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], ORIGIN);
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for header in ["grpc-status", "grpc-message", "ratelimit-remaining"] {
        assert!(exposed.contains(header), "{exposed}");
    }
    // REST from another origin gets no CORS grant either.
    let response = platform
        .http
        .get(format!("{}/api/v1/jobs", platform.url))
        .header("origin", "https://evil.example.com")
        .header("x-api-key", &user.api_key)
        .send()
        .await
        .unwrap();
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}
