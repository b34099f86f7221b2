//! No client input yields a server error: workflows nested past the one nesting limit and
//! garbage protobuf frames answer 400 / INVALID_ARGUMENT over REST, gRPC and gRPC-web, never
//! 500 / INTERNAL.

use bytes::{BufMut, Bytes, BytesMut};
use easel_proto::account::v1::Tier;
use easel_proto::jobs::v1::{JobSpec, SubmitJobRequest, Workflow, job_spec};
use easel_proto::limits::MAX_WORKFLOW_DEPTH;
use pbjson_types::value::Kind;
use pbjson_types::{ListValue, Struct, Value};
use serde_json::Value as Json;

use crate::grpc_web;
use crate::support::{Platform, with_key};

/// The depths of the issue's matrix: both sides of prost's recursion limit (about 45 JSON
/// levels) and of serde_json's (128), and far past them.
const DEPTHS: [usize; 6] = [44, 45, 100, 127, 128, 1000];

const SUBMIT: &str = "/easel.jobs.v1.JobService/SubmitJob";

/// A workflow document nested `depth` levels: graph → node → inputs → lists down to `depth`.
fn graph_json(depth: usize) -> String {
    assert!(depth >= 3);
    let lists = depth - 3;
    format!(
        r#"{{"1": {{"class_type": "EmptyLatentImage", "inputs": {{"width": {}1{}}}}}}}"#,
        "[".repeat(lists),
        "]".repeat(lists)
    )
}

/// The same document as a `Struct`, built without recursion.
fn graph_struct(depth: usize) -> Struct {
    let mut value = Value {
        kind: Some(Kind::NumberValue(1.0)),
    };
    for _ in 0..depth - 3 {
        value = Value {
            kind: Some(Kind::ListValue(ListValue {
                values: vec![value],
            })),
        };
    }
    let mut inputs = Struct::default();
    inputs.fields.insert("width".into(), value);
    let mut node = Struct::default();
    node.fields.insert(
        "class_type".into(),
        Value {
            kind: Some(Kind::StringValue("EmptyLatentImage".into())),
        },
    );
    node.fields.insert(
        "inputs".into(),
        Value {
            kind: Some(Kind::StructValue(inputs)),
        },
    );
    let mut graph = Struct::default();
    graph.fields.insert(
        "1".into(),
        Value {
            kind: Some(Kind::StructValue(node)),
        },
    );
    graph
}

fn submit_request(depth: usize) -> SubmitJobRequest {
    SubmitJobRequest {
        spec: Some(JobSpec {
            kind: Some(job_spec::Kind::Workflow(Workflow {
                graph: Some(graph_struct(depth)),
                overrides: vec![],
            })),
            ..JobSpec::default()
        }),
        ..SubmitJobRequest::default()
    }
}

/// One gRPC frame around `payload` with `flag` as its compression flag and `length` as its
/// announced length.
fn frame(flag: u8, length: u32, payload: &[u8]) -> Bytes {
    let mut framed = BytesMut::new();
    framed.put_u8(flag);
    framed.put_u32(length);
    framed.put_slice(payload);
    framed.freeze()
}

/// Bodies no protobuf decoder accepts: bad bytes, a truncated frame, a bad compression flag,
/// a compressed frame without an encoding.
fn garbage_frames() -> Vec<(&'static str, Bytes)> {
    let junk = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    vec![
        ("invalid protobuf", frame(0, 6, &junk)),
        ("truncated frame", frame(0, 100, &[0x0a, 0x02])),
        ("bad compression flag", frame(7, 1, &[0])),
        ("compressed without an encoding", frame(1, 1, &[0])),
    ]
}

/// `grpc-status` of a raw HTTP/2 gRPC call (trailers-only answers carry it in the headers).
async fn raw_grpc(platform: &Platform, api_key: &str, body: Bytes) -> (u16, Option<i32>) {
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = client
        .post(format!("{}{SUBMIT}", platform.url))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-api-key", api_key)
        .body(body)
        .send()
        .await
        .expect("gRPC request");
    let status = response.status().as_u16();
    let code = response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok());
    (status, code)
}

/// `grpc-status` of a raw gRPC-web call over HTTP/1.1.
async fn raw_grpc_web(platform: &Platform, api_key: &str, body: Bytes) -> (u16, Option<i32>) {
    let client = reqwest::Client::builder().http1_only().build().unwrap();
    let response = client
        .post(format!("{}{SUBMIT}", platform.url))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("x-api-key", api_key)
        .body(body)
        .send()
        .await
        .expect("gRPC-web request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap();
    let answer = grpc_web::Answer {
        status,
        headers,
        messages: Vec::new(),
        trailers: grpc_web::decode(body).1,
    };
    (status, answer.grpc_status())
}

fn assert_invalid_argument(what: &str, code: Option<i32>) {
    assert_eq!(
        code,
        Some(tonic::Code::InvalidArgument as i32),
        "{what}: INVALID_ARGUMENT, never INTERNAL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_input_answers_invalid_argument_never_internal() {
    let platform = Platform::start().await;
    let user = platform.user(Tier::Pro).await;
    let mut jobs = platform.jobs().await;

    // At the limit, a workflow passes the door (ComfyUI's simulator then judges the graph).
    let at_limit = jobs
        .submit_job(with_key(submit_request(MAX_WORKFLOW_DEPTH), &user.api_key))
        .await;
    assert!(at_limit.is_ok(), "{at_limit:?}");
    let response = platform
        .submit(
            &user.api_key,
            &serde_json::from_str::<Json>(&format!(
                r#"{{"workflow": {}}}"#,
                graph_json(MAX_WORKFLOW_DEPTH)
            ))
            .unwrap(),
        )
        .await;
    assert_eq!(response.status(), 202);

    for depth in DEPTHS {
        // REST: 400 in the envelope, naming the limit.
        let body = format!(r#"{{"workflow": {}}}"#, graph_json(depth));
        let response = platform
            .http
            .post(format!("{}/api/v1/jobs", platform.url))
            .header("x-api-key", &user.api_key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "REST depth {depth}");
        let envelope: Json = response.json().await.unwrap();
        let text = envelope.to_string();
        assert_eq!(envelope["error"]["code"], "INVALID_ARGUMENT", "{text}");
        assert!(
            text.contains(&format!("at most {MAX_WORKFLOW_DEPTH}"))
                || text.contains(&format!("deeper than {MAX_WORKFLOW_DEPTH}")),
            "REST depth {depth} names the limit: {text}"
        );

        // gRPC: the door's check below prost's limit, the decoder's failure above it.
        let status = jobs
            .submit_job(with_key(submit_request(depth), &user.api_key))
            .await
            .expect_err("too deep");
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "gRPC depth {depth}: {status:?}"
        );

        // gRPC-web.
        let answer = grpc_web::call(
            &platform.url,
            SUBMIT,
            &submit_request(depth),
            &[("x-api-key", &user.api_key)],
        )
        .await;
        assert_eq!(answer.status, 200);
        assert_invalid_argument(&format!("gRPC-web depth {depth}"), answer.grpc_status());
    }

    // A document just past the limit is refused with a field violation naming the field.
    let status = jobs
        .submit_job(with_key(
            submit_request(MAX_WORKFLOW_DEPTH + 1),
            &user.api_key,
        ))
        .await
        .expect_err("too deep");
    let details = tonic_types::StatusExt::get_error_details(&status);
    let violations = details.bad_request().expect("field violations");
    assert_eq!(violations.field_violations[0].field, "spec.workflow.graph");
    assert!(
        violations.field_violations[0]
            .description
            .contains(&MAX_WORKFLOW_DEPTH.to_string())
    );

    for (what, body) in garbage_frames() {
        let (http, code) = raw_grpc(&platform, &user.api_key, body.clone()).await;
        assert_eq!(http, 200, "gRPC {what}");
        assert_invalid_argument(&format!("gRPC {what}"), code);
        let (http, code) = raw_grpc_web(&platform, &user.api_key, body).await;
        assert_eq!(http, 200, "gRPC-web {what}");
        assert_invalid_argument(&format!("gRPC-web {what}"), code);
    }

    // REST garbage: not JSON at all, and JSON past serde_json's own limit.
    for body in [
        Bytes::from_static(b"\x00\xff\xfe garbage"),
        Bytes::from("[".repeat(10_000)),
    ] {
        let response = platform
            .http
            .post(format!("{}/api/v1/jobs", platform.url))
            .header("x-api-key", &user.api_key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
    }
}
