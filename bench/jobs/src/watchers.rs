//! The memory of concurrent WatchJob streams in the jobs process, and idle memory.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use easel_proto::jobs::internal::v1::internal_job_service_client::InternalJobServiceClient;
use easel_proto::jobs::internal::v1::{CancelJobRequest, SubmitJobRequest, WatchJobRequest};
use easel_proto::jobs::v1::{self, JobSpec, JobStatus, TextToImage, job_event, job_spec};
use futures::StreamExt;
use tonic::transport::Channel;

use crate::process::{JobsProcess, ms, principal};

/// Watched jobs; the watchers spread over them evenly.
const JOBS: usize = 100;
/// Connections the watchers share (the server allows 200 streams per connection).
const CONNECTIONS: usize = 64;

type Client = InternalJobServiceClient<Channel>;

async fn submit(client: &mut Client, index: usize) -> anyhow::Result<String> {
    let response = client
        .submit_job(SubmitJobRequest {
            caller: Some(principal("usr_watch".to_string())),
            request: Some(v1::SubmitJobRequest {
                spec: Some(JobSpec {
                    kind: Some(job_spec::Kind::TextToImage(TextToImage {
                        prompt: format!("watched {index}"),
                        width: 512,
                        height: 512,
                        ..TextToImage::default()
                    })),
                    ..Default::default()
                }),
                ..v1::SubmitJobRequest::default()
            }),
        })
        .await?;
    response
        .into_inner()
        .job
        .map(|job| job.id)
        .context("no job")
}

async fn open(
    mut client: Client,
    job_id: String,
) -> anyhow::Result<tonic::Streaming<v1::WatchJobResponse>> {
    let mut stream = client
        .watch_job(WatchJobRequest {
            caller: Some(principal("usr_watch".to_string())),
            request: Some(v1::WatchJobRequest {
                job_id,
                after_seq: 0,
            }),
        })
        .await?
        .into_inner();
    match stream.message().await? {
        Some(v1::WatchJobResponse {
            event:
                Some(v1::JobEvent {
                    kind: Some(job_event::Kind::Snapshot(_)),
                    ..
                }),
        }) => Ok(stream),
        other => bail!("expected a snapshot, got {other:?}"),
    }
}

/// Opens `watchers` streams on pending jobs, reads the process's memory, then cancels the jobs
/// and times until every watcher has seen the end.
pub async fn run(watchers: usize) -> anyhow::Result<()> {
    let jobs = JobsProcess::start("api", &[]).await?;
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(InternalJobServiceClient::new(jobs.channel().await?));
    }
    let mut ids = Vec::new();
    for index in 0..JOBS {
        ids.push(submit(&mut clients[0], index).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = jobs.rss_kib();
    let started = Instant::now();
    let streams: Vec<_> = futures::stream::iter(0..watchers)
        .map(|index| {
            open(
                clients[index % CONNECTIONS].clone(),
                ids[index % JOBS].clone(),
            )
        })
        .buffer_unordered(256)
        .collect()
        .await;
    let mut streams = streams.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = jobs.rss_kib();
    let delta = after.saturating_sub(before);
    println!(
        "== {watchers} concurrent WatchJob streams over gRPC ({JOBS} pending jobs, {CONNECTIONS} connections)"
    );
    println!(
        "opened (snapshot read) in {:.2} s; jobs RSS {:.1} MiB -> {:.1} MiB: {:.1} MiB for {watchers} watchers = {:.0} bytes per watcher",
        opened.as_secs_f64(),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        delta as f64 / 1024.0,
        delta as f64 * 1024.0 / watchers as f64
    );

    // Fan-out: cancel every job; each watcher gets CANCELLED and its stream ends.
    let started = Instant::now();
    for id in &ids {
        clients[0]
            .cancel_job(CancelJobRequest {
                caller: Some(principal("usr_watch".to_string())),
                request: Some(v1::CancelJobRequest { job_id: id.clone() }),
            })
            .await?;
    }
    let ended = futures::stream::iter(streams.iter_mut())
        .map(|stream| async move {
            let mut cancelled = false;
            while let Ok(Some(message)) = stream.message().await {
                if let Some(job_event::Kind::StatusChange(change)) =
                    message.event.and_then(|event| event.kind)
                {
                    cancelled |= change.status == JobStatus::Cancelled as i32;
                }
            }
            cancelled
        })
        .buffer_unordered(watchers)
        .filter(|cancelled| futures::future::ready(*cancelled))
        .count()
        .await;
    println!(
        "fan-out: {JOBS} jobs cancelled, {ended}/{watchers} watchers saw CANCELLED and the end in {:.1} ms",
        ms(started.elapsed())
    );
    drop(streams);
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "after every stream ended: jobs RSS {:.1} MiB",
        jobs.rss_kib() as f64 / 1024.0
    );
    Ok(())
}

/// The resident memory of an idle process per role, once ready.
pub async fn idle() -> anyhow::Result<()> {
    println!("== idle memory (ready, no traffic)");
    for role in ["api", "all"] {
        let jobs = JobsProcess::start(role, &[]).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!(
            "role {role:<3}: VmRSS {:.1} MiB",
            jobs.rss_kib() as f64 / 1024.0
        );
    }
    Ok(())
}
