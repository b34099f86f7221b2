//! WatchJob: snapshot, every event in order, resume without gap or duplicate, end at terminal.

use std::time::Duration;

use easel_jobs::db::{self, Guard, JobColumn};
use easel_jobs::lifecycle::status_event;
use easel_jobs::model::{Clock, millis, status_to_db};
use easel_proto::jobs::internal::v1 as internal;
use easel_proto::jobs::v1::{self, JobStatus, Progress, job_event};
use futures::StreamExt;
use sea_orm::sea_query::{Expr, SimpleExpr};

use crate::support::{Harness, caller, submit, t2i};

async fn emit(
    harness: &Harness,
    job_id: &str,
    changes: Vec<(JobColumn, SimpleExpr)>,
    kind: job_event::Kind,
) -> u64 {
    let now = millis(harness.clock.now());
    let (_, event) = db::transition(
        harness.jobs.db(),
        job_id,
        &Guard::from(&[JobStatus::Pending, JobStatus::Running]),
        changes,
        Some(kind),
        now,
    )
    .await
    .unwrap()
    .expect("transition applies");
    let event = event.unwrap();
    harness.jobs.publish(&event).await;
    event.seq
}

fn progress(step: u32) -> job_event::Kind {
    job_event::Kind::Progress(Progress {
        node_id: "3".into(),
        node_class: "KSampler".into(),
        step,
        max_steps: 10,
        percent: step as f32 * 10.0,
    })
}

async fn open(
    harness: &Harness,
    job_id: &str,
    after_seq: u64,
) -> tonic::Streaming<v1::WatchJobResponse> {
    let mut client = harness.client.clone();
    client
        .watch_job(internal::WatchJobRequest {
            caller: Some(caller("usr_a")),
            request: Some(v1::WatchJobRequest {
                job_id: job_id.into(),
                after_seq,
            }),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn next(stream: &mut tonic::Streaming<v1::WatchJobResponse>) -> v1::JobEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event in time")
        .expect("the stream is open")
        .expect("not an error")
        .event
        .unwrap()
}

async fn resume_sees_every_event_exactly_once(harness: Harness) {
    let mut client = harness.client.clone();
    let job = client
        .submit_job(submit("usr_a", t2i("watch me")))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let mut stream = open(&harness, &job.id, 0).await;
    let snapshot = next(&mut stream).await;
    assert_eq!(snapshot.seq, 1);
    assert!(
        matches!(snapshot.kind, Some(job_event::Kind::Snapshot(ref s)) if s.status == JobStatus::Pending as i32)
    );

    emit(
        &harness,
        &job.id,
        vec![(
            JobColumn::Status,
            Expr::value(status_to_db(JobStatus::Running)),
        )],
        status_event(JobStatus::Running, None, 1, "b1"),
    )
    .await;
    for step in 1..=3 {
        emit(&harness, &job.id, vec![], progress(step)).await;
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(next(&mut stream).await.seq);
    }
    assert_eq!(seen, [2, 3, 4, 5]);
    drop(stream);

    // Events while nobody watches are in the table.
    emit(&harness, &job.id, vec![], progress(4)).await;
    emit(&harness, &job.id, vec![], progress(5)).await;
    let mut resumed = open(&harness, &job.id, 5).await;
    let mut later = vec![next(&mut resumed).await.seq, next(&mut resumed).await.seq];
    // A second watcher from scratch sees a snapshot as of now.
    let mut fresh = open(&harness, &job.id, 0).await;
    let fresh_snapshot = next(&mut fresh).await;
    assert_eq!(fresh_snapshot.seq, 7);

    let last = emit(
        &harness,
        &job.id,
        vec![(
            JobColumn::Status,
            Expr::value(status_to_db(JobStatus::Succeeded)),
        )],
        status_event(JobStatus::Succeeded, None, 1, "b1"),
    )
    .await;
    let terminal = next(&mut resumed).await;
    later.push(terminal.seq);
    assert_eq!(later, [6, 7, last]);
    assert!(
        matches!(terminal.kind, Some(job_event::Kind::StatusChange(ref c)) if c.status == JobStatus::Succeeded as i32)
    );
    // The stream ends after the terminal status.
    assert!(
        tokio::time::timeout(Duration::from_secs(5), resumed.next())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(next(&mut fresh).await.seq, last);
    assert!(
        tokio::time::timeout(Duration::from_secs(5), fresh.next())
            .await
            .unwrap()
            .is_none()
    );

    // A watch of a finished job: the snapshot, then the end.
    let mut done = open(&harness, &job.id, 0).await;
    assert_eq!(next(&mut done).await.seq, last);
    assert!(
        tokio::time::timeout(Duration::from_secs(5), done.next())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_resumed_watch_sees_every_event_exactly_once_over_redis() {
    resume_sees_every_event_exactly_once(Harness::start().await).await;
}

#[tokio::test]
async fn a_resumed_watch_sees_every_event_exactly_once_in_process() {
    resume_sees_every_event_exactly_once(Harness::start_with(false, &[]).await).await;
}

#[tokio::test]
async fn many_watchers_share_one_subscription() {
    let harness = Harness::start().await;
    let mut client = harness.client.clone();
    let job = client
        .submit_job(submit("usr_a", t2i("crowd")))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let mut streams = Vec::new();
    for _ in 0..200 {
        let mut stream = open(&harness, &job.id, 0).await;
        assert_eq!(next(&mut stream).await.seq, 1);
        streams.push(stream);
    }
    assert_eq!(
        harness.jobs.hub().watched_jobs(),
        1,
        "one channel for the job"
    );
    let last = emit(
        &harness,
        &job.id,
        vec![(
            JobColumn::Status,
            Expr::value(status_to_db(JobStatus::Failed)),
        )],
        status_event(JobStatus::Failed, None, 1, ""),
    )
    .await;
    for stream in &mut streams {
        assert_eq!(next(stream).await.seq, last);
    }
    drop(streams);
    assert!(
        crate::support::eventually(Duration::from_secs(5), || async {
            harness.jobs.hub().watched_jobs() == 0
        })
        .await
    );
}

#[tokio::test]
async fn watchers_of_a_pending_job_see_its_queue_position_move() {
    let harness = Harness::start().await;
    let mut client = harness.client.clone();
    let mut ids = Vec::new();
    for index in 0..3 {
        ids.push(
            client
                .submit_job(submit("usr_a", t2i(&format!("queued {index}"))))
                .await
                .unwrap()
                .into_inner()
                .job
                .unwrap()
                .id,
        );
    }
    let mut stream = open(&harness, &ids[2], 0).await;
    let snapshot = next(&mut stream).await;
    assert!(
        matches!(snapshot.kind, Some(job_event::Kind::Snapshot(ref job)) if job.queue_position == 3)
    );
    // The jobs ahead start one after the other (as a worker would start them).
    let mut positions = Vec::new();
    let mut last_seq = snapshot.seq;
    for ahead in &ids[..2] {
        emit(
            &harness,
            ahead,
            vec![(
                JobColumn::Status,
                Expr::value(status_to_db(JobStatus::Running)),
            )],
            status_event(JobStatus::Running, None, 1, "b1"),
        )
        .await;
        let event = next(&mut stream).await;
        assert_eq!(event.seq, last_seq + 1, "positions are numbered events");
        last_seq = event.seq;
        match event.kind {
            Some(job_event::Kind::QueuePosition(position)) => positions.push(position.position),
            other => panic!("expected a queue position, got {other:?}"),
        }
    }
    assert_eq!(positions, [2, 1]);
    // Once the job runs, positions stop and the status change follows in sequence; a resume
    // replays the positions like any event.
    let seq = emit(
        &harness,
        &ids[2],
        vec![(
            JobColumn::Status,
            Expr::value(status_to_db(JobStatus::Running)),
        )],
        status_event(JobStatus::Running, None, 1, "b1"),
    )
    .await;
    let event = next(&mut stream).await;
    assert_eq!((event.seq, seq), (last_seq + 1, last_seq + 1));
    assert!(matches!(event.kind, Some(job_event::Kind::StatusChange(_))));
    let mut resumed = open(&harness, &ids[2], 1).await;
    let replayed = next(&mut resumed).await;
    assert!(matches!(
        replayed.kind,
        Some(job_event::Kind::QueuePosition(ref position)) if position.position == 2
    ));
}
