//! Group commit: many concurrent submits written together still get one answer each, the
//! right one; and the same statements run on SQLite (the embedded mode).

use std::collections::HashMap;
use std::sync::Arc;

use easel_jobs::db;
use easel_jobs::error::JobsError;
use easel_jobs::model::{Caller, Clock, OffsetClock};
use easel_proto::account::v1::TierLimits;
use easel_proto::jobs::v1::JobStatus;
use easel_runtime::Shutdown;
use easel_runtime::error::{Error, reason};

use crate::support::{Harness, caller, submit, t2i};

fn limited(
    user: &str,
    concurrent_jobs: u32,
    jobs_per_day: u32,
) -> easel_proto::auth::v1::Principal {
    let mut principal = caller(user);
    if let Some(limits) = principal.limits.as_mut() {
        limits.concurrent_jobs = concurrent_jobs;
        limits.jobs_per_day = jobs_per_day;
    }
    principal
}

/// What one request of the mix expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// A new job.
    Created,
    /// The job the first request with its key made.
    SameJob,
    /// Invalid: INVALID_ARGUMENT naming a field.
    Invalid,
    /// The key was used with another body: INVALID_ARGUMENT, reason IDEMPOTENCY_KEY_REUSED.
    Reused,
}

#[tokio::test]
async fn concurrent_mixed_submits_each_get_their_own_answer() {
    let harness = Harness::start().await;
    // A job made before, whose key is then replayed and reused concurrently with the rest.
    let mut first = t2i("the original");
    first.idempotency_key = "old-key".into();
    let mut client = harness.client.clone();
    let original = client
        .submit_job(submit("usr_mix", first.clone()))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();

    let mut calls = Vec::new();
    for index in 0..300 {
        let (request, expect) = match index % 5 {
            0 => (t2i(&format!("fresh {index}")), Expect::Created),
            1 => {
                let mut request = t2i(&format!("keyed {index}"));
                request.idempotency_key = format!("key-{index}");
                (request, Expect::Created)
            }
            2 => {
                let mut request = t2i("bad");
                if let Some(easel_proto::jobs::v1::JobSpec {
                    kind: Some(easel_proto::jobs::v1::job_spec::Kind::TextToImage(t)),
                    ..
                }) = request.spec.as_mut()
                {
                    t.width = 100;
                }
                (request, Expect::Invalid)
            }
            3 => (first.clone(), Expect::SameJob),
            _ => {
                let mut request = t2i(&format!("other body {index}"));
                request.idempotency_key = "old-key".into();
                (request, Expect::Reused)
            }
        };
        let mut client = harness.client.clone();
        calls.push(async move { (expect, client.submit_job(submit("usr_mix", request)).await) });
    }
    let answers = futures::future::join_all(calls).await;
    let mut created = Vec::new();
    for (expect, answer) in answers {
        match (expect, answer) {
            (Expect::Created, Ok(response)) => {
                let response = response.into_inner();
                assert!(!response.replayed);
                let job = response.job.unwrap();
                assert_eq!(job.status, JobStatus::Pending as i32);
                assert!(job.queue_position >= 1);
                created.push(job.id);
            }
            (Expect::SameJob, Ok(response)) => {
                let response = response.into_inner();
                assert!(response.replayed);
                assert_eq!(response.job.unwrap().id, original.id);
            }
            (Expect::Invalid, Err(status)) => {
                assert_eq!(status.code(), tonic::Code::InvalidArgument);
                assert_eq!(
                    Error::from_status(&status).field_violations()[0].field,
                    "spec.text_to_image.width"
                );
            }
            (Expect::Reused, Err(status)) => {
                assert_eq!(status.code(), tonic::Code::InvalidArgument);
                assert_eq!(
                    Error::from_status(&status).reason(),
                    Some(reason::IDEMPOTENCY_KEY_REUSED)
                );
            }
            (expect, answer) => panic!("expected {expect:?}, got {answer:?}"),
        }
    }
    assert_eq!(created.len(), 120);
    let stored = db::list_for_owner(harness.jobs.db(), "usr_mix", &[], None, 1000)
        .await
        .unwrap();
    assert_eq!(stored.len(), 121, "the 120 new jobs and the original");
    // Every new job is on the queue.
    let queued = harness.jobs.queue().contains(&created).await.unwrap();
    assert!(queued.iter().all(|known| *known));
}

#[tokio::test]
async fn quotas_hold_across_a_batch_of_concurrent_submits() {
    let harness = Harness::start().await;
    let calls = (0..40).map(|index| {
        let mut client = harness.client.clone();
        let request = easel_proto::jobs::internal::v1::SubmitJobRequest {
            caller: Some(limited("usr_quota", 7, 1000)),
            request: Some(t2i(&format!("quota {index}"))),
        };
        async move { client.submit_job(request).await }
    });
    let answers = futures::future::join_all(calls).await;
    let accepted = answers.iter().filter(|answer| answer.is_ok()).count();
    assert_eq!(accepted, 7, "the concurrent-jobs limit");
    for answer in answers.into_iter().filter_map(Result::err) {
        assert_eq!(answer.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            Error::from_status(&answer)
                .metadata()
                .get("limit")
                .map(String::as_str),
            Some("concurrent_jobs")
        );
    }
    // The daily quota counts jobs that ended too: cancel them all, then 3 more fit in 10.
    let rows = db::list_for_owner(harness.jobs.db(), "usr_quota", &[], None, 100)
        .await
        .unwrap();
    let owner = Caller::from_principal(Some(limited("usr_quota", 7, 10))).unwrap();
    for row in rows {
        harness.jobs.cancel(&owner, &row.id).await.unwrap();
    }
    let calls = (0..6).map(|index| {
        let jobs = harness.jobs.clone();
        let owner = owner.clone();
        async move { jobs.submit(&owner, &t2i(&format!("day {index}"))).await }
    });
    let answers = futures::future::join_all(calls).await;
    assert_eq!(answers.iter().filter(|answer| answer.is_ok()).count(), 3);
    assert!(answers.iter().any(|answer| matches!(
        answer,
        Err(JobsError::QuotaExhausted {
            limit: "jobs_per_day",
            ..
        })
    )));
}

#[tokio::test]
async fn submits_work_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = easel_test_support::TestDatabase::sqlite(dir.path());
    let config = crate::support::config(&url, None, &[]);
    let shutdown = Shutdown::new(std::time::Duration::from_secs(2));
    let clock = OffsetClock::new();
    let parts = easel_jobs::build(&config, Arc::new(clock) as Arc<dyn Clock>, &shutdown)
        .await
        .unwrap();
    let jobs = parts.jobs;
    // A second process on the same database finds every migration applied, in order.
    easel_jobs::db::connect(&url).await.unwrap();
    let owner = Caller {
        user_id: "usr_lite".into(),
        limits: TierLimits {
            concurrent_jobs: 4,
            jobs_per_day: 100,
            max_pixels: 1024 * 1024,
            max_steps: 50,
            max_batch_size: 1,
            queue_priority: 1,
            ..TierLimits::default()
        },
    };
    let mut keyed = t2i("lite");
    keyed.idempotency_key = "k".into();
    let calls = (0..5).map(|index| {
        let jobs = jobs.clone();
        let owner = owner.clone();
        let request = if index < 2 {
            keyed.clone()
        } else {
            t2i(&format!("lite {index}"))
        };
        async move { jobs.submit(&owner, &request).await }
    });
    let answers = futures::future::join_all(calls).await;
    let mut ids: HashMap<String, usize> = HashMap::new();
    for (job, _) in answers.iter().flatten() {
        *ids.entry(job.id.clone()).or_default() += 1;
    }
    // The two keyed submits make one job, replayed to the second; with the three others that
    // fills the concurrent limit of 4.
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    assert_eq!(ids.len(), 4, "{answers:?}");
    let (replay, replayed) = jobs.submit(&owner, &keyed).await.unwrap();
    assert!(replayed);
    assert!(ids.contains_key(&replay.id));
    assert!(matches!(
        jobs.submit(&owner, &t2i("one too many")).await,
        Err(JobsError::QuotaExhausted { .. })
    ));
    shutdown.trigger();
}
