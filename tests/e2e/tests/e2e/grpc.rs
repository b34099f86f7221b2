//! The job path over gRPC and over gRPC-web (HTTP/1.1, from the wire format), returning the
//! same data as REST.

use easel_e2e::grpc_web;
use easel_e2e::image::png_size;
use easel_e2e::{DEADLINE, Platform, sha256_hex, with_key};
use easel_proto::jobs::v1::{
    GetJobRequest, GetJobResponse, JobSpec, JobStatus, SubmitJobRequest, SubmitJobResponse,
    TextToImage, WatchJobRequest, WatchJobResponse, job_event, job_spec,
};
use futures::StreamExt;

fn text_to_image(prompt: &str, width: u32, height: u32, seed: u64) -> SubmitJobRequest {
    SubmitJobRequest {
        spec: Some(JobSpec {
            kind: Some(job_spec::Kind::TextToImage(TextToImage {
                prompt: prompt.into(),
                width,
                height,
                seed: Some(seed),
                ..Default::default()
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn terminal(status: JobStatus) -> bool {
    matches!(
        status,
        JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled | JobStatus::Expired
    )
}

#[tokio::test]
async fn grpc_submit_watch_and_download() {
    let platform = Platform::start().await;
    let key = platform.admin.api_key.clone();
    let mut jobs = platform.jobs_client().await;

    let submitted = jobs
        .submit_job(with_key(text_to_image("A lighthouse", 320, 192, 11), &key))
        .await
        .unwrap_or_else(|status| panic!("SubmitJob: {status:?}"))
        .into_inner();
    let job = submitted.job.unwrap_or_default();
    assert_eq!(job.status(), JobStatus::Pending);

    let mut stream = jobs
        .watch_job(with_key(
            WatchJobRequest {
                job_id: job.id.clone(),
                after_seq: 0,
            },
            &key,
        ))
        .await
        .unwrap_or_else(|status| panic!("WatchJob: {status:?}"))
        .into_inner();
    let mut seqs = Vec::new();
    let mut last_status = JobStatus::Unspecified;
    let mut first = true;
    tokio::time::timeout(DEADLINE, async {
        while let Some(message) = stream.next().await {
            let event = message
                .unwrap_or_else(|status| panic!("stream error: {status:?}"))
                .event
                .unwrap_or_default();
            if first {
                assert!(
                    matches!(event.kind, Some(job_event::Kind::Snapshot(_))),
                    "snapshot first"
                );
                first = false;
            }
            seqs.push(event.seq);
            match event.kind {
                Some(job_event::Kind::Snapshot(job)) => last_status = job.status(),
                Some(job_event::Kind::StatusChange(change)) => last_status = change.status(),
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the stream did not end"));
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");
    assert_eq!(last_status, JobStatus::Succeeded);
    assert!(terminal(last_status));

    let done = jobs
        .get_job(with_key(
            GetJobRequest {
                job_id: job.id.clone(),
            },
            &key,
        ))
        .await
        .unwrap_or_else(|status| panic!("GetJob: {status:?}"))
        .into_inner()
        .job
        .unwrap_or_default();
    let output = done.outputs.first().cloned().unwrap_or_default();
    let (status, bytes) = platform.download(&output.url).await;
    assert_eq!(status, 200);
    assert_eq!(sha256_hex(&bytes), output.sha256);
    assert_eq!(png_size(&bytes), Ok((320, 192)));
    assert_eq!((output.width, output.height), (320, 192));

    // REST returns the same job.
    let (status, rest) = platform
        .get_json(&key, &format!("/api/v1/jobs/{}", job.id))
        .await;
    assert_eq!(status, 200);
    let rest_job = if rest["job"].is_object() {
        &rest["job"]
    } else {
        &rest
    };
    assert_eq!(rest_job["results"][0]["sha256"], output.sha256.as_str());
    assert_eq!(rest_job["id"], job.id.as_str());
}

#[tokio::test]
async fn grpc_web_over_http1_submits_watches_and_matches_grpc() {
    let platform = Platform::start().await;
    let key = platform.admin.api_key.clone();
    let headers = [("x-api-key", key.as_str())];

    let answer = grpc_web::call(
        &platform.url(),
        "/easel.jobs.v1.JobService/SubmitJob",
        &text_to_image("A harbour at dawn", 256, 128, 5),
        &headers,
    )
    .await;
    assert_eq!(answer.http_status, 200);
    assert_eq!(answer.grpc_status(), Some(0), "{answer:?}");
    let job = answer.single::<SubmitJobResponse>().job.unwrap_or_default();

    // The server stream arrives as frames on one HTTP/1.1 response, ending with the trailers.
    let watched = tokio::time::timeout(
        DEADLINE,
        grpc_web::call(
            &platform.url(),
            "/easel.jobs.v1.JobService/WatchJob",
            &WatchJobRequest {
                job_id: job.id.clone(),
                after_seq: 0,
            },
            &headers,
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("the gRPC-web stream did not end"));
    assert_eq!(watched.grpc_status(), Some(0), "{watched:?}");
    let events: Vec<WatchJobResponse> = watched
        .messages
        .iter()
        .map(|bytes| prost::Message::decode(bytes.clone()).unwrap_or_default())
        .collect();
    let statuses: Vec<JobStatus> = events
        .iter()
        .filter_map(|response| match response.event.as_ref()?.kind.as_ref()? {
            job_event::Kind::Snapshot(job) => Some(job.status()),
            job_event::Kind::StatusChange(change) => Some(change.status()),
            _ => None,
        })
        .collect();
    assert_eq!(statuses.last(), Some(&JobStatus::Succeeded), "{statuses:?}");

    // GetJob over gRPC-web equals GetJob over gRPC.
    let web = grpc_web::call(
        &platform.url(),
        "/easel.jobs.v1.JobService/GetJob",
        &GetJobRequest {
            job_id: job.id.clone(),
        },
        &headers,
    )
    .await
    .single::<GetJobResponse>()
    .job
    .unwrap_or_default();
    let mut jobs = platform.jobs_client().await;
    let native = jobs
        .get_job(with_key(
            GetJobRequest {
                job_id: job.id.clone(),
            },
            &key,
        ))
        .await
        .unwrap_or_else(|status| panic!("GetJob: {status:?}"))
        .into_inner()
        .job
        .unwrap_or_default();
    assert_eq!(web.id, native.id);
    assert_eq!(web.status, native.status);
    assert_eq!(web.outputs.len(), native.outputs.len());
    assert_eq!(web.outputs[0].sha256, native.outputs[0].sha256);
    let (status, bytes) = platform.download(&web.outputs[0].url).await;
    assert_eq!(status, 200);
    assert_eq!(png_size(&bytes), Ok((256, 128)));

    // No credential over gRPC-web: UNAUTHENTICATED (16) in the trailers.
    let refused = grpc_web::call(
        &platform.url(),
        "/easel.jobs.v1.JobService/GetJob",
        &GetJobRequest {
            job_id: job.id.clone(),
        },
        &[],
    )
    .await;
    assert_eq!(refused.grpc_status(), Some(16), "{refused:?}");
}
