//! The API: tenant scoping, tier limits, bad input on every RPC, listing, cancellation.

use easel_jobs::db::{self, Guard, JobColumn};
use easel_jobs::model::{Clock, millis, status_to_db};
use easel_proto::account::v1::TierLimits;
use easel_proto::auth::v1::Principal;
use easel_proto::jobs::internal::v1 as internal;
use easel_proto::jobs::v1::{self, JobStatus, TextToImage};
use easel_runtime::error::Error;
use sea_orm::sea_query::Expr;

use crate::support::{Harness, caller, submit, t2i};

fn get(user: &str, job_id: &str) -> internal::GetJobRequest {
    internal::GetJobRequest {
        caller: Some(caller(user)),
        request: Some(v1::GetJobRequest {
            job_id: job_id.into(),
        }),
    }
}

fn cancel(user: &str, job_id: &str) -> internal::CancelJobRequest {
    internal::CancelJobRequest {
        caller: Some(caller(user)),
        request: Some(v1::CancelJobRequest {
            job_id: job_id.into(),
        }),
    }
}

#[tokio::test]
async fn a_submitted_job_is_pending_with_a_position_and_resolved_parameters() {
    let harness = Harness::start().await;
    let mut client = harness.client.clone();
    let first = client
        .submit_job(submit("usr_a", t2i("one")))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let second = client
        .submit_job(submit("usr_a", t2i("two")))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(first.status, JobStatus::Pending as i32);
    assert_eq!((first.queue_position, second.queue_position), (1, 2));
    assert_eq!(first.seq, 1);
    let metadata = second.metadata.unwrap();
    assert_ne!(metadata.seed, 0, "a seed was picked and recorded");
    let resolved = metadata.resolved.unwrap();
    assert_eq!(
        (resolved.width, resolved.steps, resolved.batch_size),
        (512, 4, 1)
    );
    assert_eq!(resolved.seed, Some(metadata.seed));
    let fetched = client
        .get_job(get("usr_a", &first.id))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(fetched.id, first.id);
}

#[tokio::test]
async fn another_owners_job_is_not_found_everywhere() {
    let harness = Harness::start().await;
    let mut client = harness.client.clone();
    let job = client
        .submit_job(submit("usr_a", t2i("mine")))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let status = client.get_job(get("usr_b", &job.id)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let status = client
        .cancel_job(cancel("usr_b", &job.id))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let status = client
        .watch_job(internal::WatchJobRequest {
            caller: Some(caller("usr_b")),
            request: Some(v1::WatchJobRequest {
                job_id: job.id.clone(),
                after_seq: 0,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let listed = client
        .list_jobs(internal::ListJobsRequest {
            caller: Some(caller("usr_b")),
            request: Some(v1::ListJobsRequest::default()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.jobs.is_empty());
    // Still there for its owner.
    assert_eq!(
        client
            .get_job(get("usr_a", &job.id))
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap()
            .status,
        JobStatus::Pending as i32
    );
}

#[tokio::test]
async fn bad_input_is_refused_on_every_rpc() {
    let harness = Harness::start().await;
    let mut client = harness.client.clone();
    // No caller: unauthenticated, everywhere.
    let status = client
        .submit_job(internal::SubmitJobRequest {
            caller: None,
            request: Some(t2i("x")),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let status = client
        .get_job(internal::GetJobRequest {
            caller: Some(Principal::default()),
            request: Some(v1::GetJobRequest::default()),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let status = client
        .list_jobs(internal::ListJobsRequest {
            caller: None,
            request: Some(Default::default()),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let status = client
        .cancel_job(internal::CancelJobRequest {
            caller: None,
            request: Some(Default::default()),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let status = client
        .watch_job(internal::WatchJobRequest {
            caller: None,
            request: Some(Default::default()),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    // Malformed ids.
    for id in [
        "",
        "job_../../etc",
        "art_0190c0de0000700080000000000000aa",
        "job_XYZ",
    ] {
        let status = client.get_job(get("usr_a", id)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{id}");
        assert_eq!(
            Error::from_status(&status).field_violations()[0].field,
            "job_id"
        );
        let status = client.cancel_job(cancel("usr_a", id)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
    // Well-formed but unknown.
    let status = client
        .get_job(get("usr_a", "job_0190c0de0000700080000000000000aa"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    // Submit: field violations name the field.
    let mut bad = t2i("x");
    if let Some(v1::JobSpec {
        kind: Some(v1::job_spec::Kind::TextToImage(t)),
        ..
    }) = bad.spec.as_mut()
    {
        t.width = 513;
    }
    let status = client.submit_job(submit("usr_a", bad)).await.unwrap_err();
    assert_eq!(
        Error::from_status(&status).field_violations()[0].field,
        "spec.text_to_image.width"
    );
    let status = client
        .submit_job(submit("usr_a", v1::SubmitJobRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(
        Error::from_status(&status).field_violations()[0].field,
        "spec"
    );
    let status = client
        .submit_job(internal::SubmitJobRequest {
            caller: Some(caller("usr_a")),
            request: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let mut negative = t2i("x");
    negative.start_timeout = Some(pbjson_types_duration(-1));
    let status = client
        .submit_job(submit("usr_a", negative))
        .await
        .unwrap_err();
    assert_eq!(
        Error::from_status(&status).field_violations()[0].field,
        "start_timeout"
    );

    // List: page size, statuses, tokens.
    for request in [
        v1::ListJobsRequest {
            page_size: 101,
            ..Default::default()
        },
        v1::ListJobsRequest {
            statuses: vec![99],
            ..Default::default()
        },
        v1::ListJobsRequest {
            statuses: vec![0],
            ..Default::default()
        },
        v1::ListJobsRequest {
            page_token: "not a token!".into(),
            ..Default::default()
        },
    ] {
        let status = client
            .list_jobs(internal::ListJobsRequest {
                caller: Some(caller("usr_a")),
                request: Some(request),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }

    // Watch: beyond the last event.
    let job = client
        .submit_job(submit("usr_a", t2i("w")))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let status = client
        .watch_job(internal::WatchJobRequest {
            caller: Some(caller("usr_a")),
            request: Some(v1::WatchJobRequest {
                job_id: job.id,
                after_seq: 99,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

fn pbjson_types_duration(seconds: i64) -> pbjson_types::Duration {
    pbjson_types::Duration { seconds, nanos: 0 }
}

#[tokio::test]
async fn tier_limits_and_quotas_name_the_limit() {
    let harness = Harness::start().await;
    let mut client = harness.client.clone();
    let tight = Principal {
        user_id: "usr_small".into(),
        limits: Some(TierLimits {
            max_pixels: 512 * 512,
            max_steps: 10,
            max_batch_size: 1,
            concurrent_jobs: 2,
            jobs_per_day: 3,
            ..Default::default()
        }),
        ..Default::default()
    };
    let with = |t: TextToImage| internal::SubmitJobRequest {
        caller: Some(tight.clone()),
        request: Some(v1::SubmitJobRequest {
            spec: Some(v1::JobSpec {
                kind: Some(v1::job_spec::Kind::TextToImage(t)),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let base = TextToImage {
        prompt: "p".into(),
        width: 512,
        height: 512,
        steps: 4,
        ..Default::default()
    };
    for (t, limit) in [
        (
            TextToImage {
                width: 1024,
                ..base.clone()
            },
            "max_pixels",
        ),
        (
            TextToImage {
                steps: 11,
                ..base.clone()
            },
            "max_steps",
        ),
        (
            TextToImage {
                batch_size: 2,
                ..base.clone()
            },
            "max_batch_size",
        ),
    ] {
        let status = client.submit_job(with(t)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            Error::from_status(&status)
                .metadata()
                .get("limit")
                .map(String::as_str),
            Some(limit)
        );
    }
    client.submit_job(with(base.clone())).await.unwrap();
    let second = client
        .submit_job(with(base.clone()))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let status = client.submit_job(with(base.clone())).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        Error::from_status(&status)
            .metadata()
            .get("limit")
            .map(String::as_str),
        Some("concurrent_jobs")
    );
    // Cancelling frees a concurrent slot; the day's quota (3) then runs out.
    client
        .cancel_job(internal::CancelJobRequest {
            caller: Some(tight.clone()),
            request: Some(v1::CancelJobRequest { job_id: second.id }),
        })
        .await
        .unwrap();
    client.submit_job(with(base.clone())).await.unwrap();
    let status = client.submit_job(with(base)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
}

#[tokio::test]
async fn list_pages_newest_first_and_filters_by_status() {
    let harness = Harness::start().await;
    let mut client = harness.client.clone();
    let mut ids = Vec::new();
    for index in 0..5 {
        ids.push(
            client
                .submit_job(submit("usr_a", t2i(&format!("n{index}"))))
                .await
                .unwrap()
                .into_inner()
                .job
                .unwrap()
                .id,
        );
    }
    client.cancel_job(cancel("usr_a", &ids[0])).await.unwrap();
    let list = |token: String, statuses: Vec<i32>| internal::ListJobsRequest {
        caller: Some(caller("usr_a")),
        request: Some(v1::ListJobsRequest {
            page_size: 2,
            page_token: token,
            statuses,
        }),
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_jobs(list(token, vec![]))
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.jobs.into_iter().map(|job| job.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    ids.reverse();
    assert_eq!(seen, ids);
    let cancelled = client
        .list_jobs(list(String::new(), vec![JobStatus::Cancelled as i32]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.jobs.len(), 1);
}

#[tokio::test]
async fn cancelling_pending_running_and_finished_jobs() {
    let harness = Harness::start().await;
    let mut client = harness.client.clone();
    // Pending: cancelled, and never started even though its entry is still queued.
    let pending = client
        .submit_job(submit("usr_a", t2i("p")))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let cancelled = client
        .cancel_job(cancel("usr_a", &pending.id))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled as i32);
    assert!(cancelled.start_time.is_none());
    // Finished: FAILED_PRECONDITION.
    let status = client
        .cancel_job(cancel("usr_a", &pending.id))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);

    // Running (as a worker holds it): cancelled; the worker's guard then fails.
    let running = client
        .submit_job(submit("usr_a", t2i("r")))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let now = millis(harness.clock.now());
    db::transition(
        harness.jobs.db(),
        &running.id,
        &Guard::from(&[JobStatus::Pending]),
        vec![
            (
                JobColumn::Status,
                Expr::value(status_to_db(JobStatus::Running)),
            ),
            (JobColumn::Attempts, Expr::value(1)),
            (JobColumn::LeaseOwner, Expr::value("worker-test")),
            (JobColumn::LeaseExpiresMs, Expr::value(now + 60_000)),
        ],
        None,
        now,
    )
    .await
    .unwrap()
    .unwrap();
    let cancelled = client
        .cancel_job(cancel("usr_a", &running.id))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled as i32);
    let held = db::transition(
        harness.jobs.db(),
        &running.id,
        &Guard::held("worker-test", 1),
        vec![],
        None,
        now,
    )
    .await
    .unwrap();
    assert!(held.is_none(), "the worker lost the job");
}

/// A raw workflow whose graph nests `depth` levels (graph → node → inputs → lists).
fn nested_workflow(depth: usize) -> v1::SubmitJobRequest {
    use pbjson_types::value::Kind;
    use pbjson_types::{ListValue, Struct, Value};
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
    let object = |pairs: Vec<(&str, Value)>| Value {
        kind: Some(Kind::StructValue(Struct {
            fields: pairs
                .into_iter()
                .map(|(name, value)| (name.to_string(), value))
                .collect(),
        })),
    };
    let node = object(vec![
        (
            "class_type",
            Value {
                kind: Some(Kind::StringValue("EmptyLatentImage".into())),
            },
        ),
        ("inputs", object(vec![("width", value)])),
    ]);
    let Some(Kind::StructValue(graph)) = object(vec![("1", node)]).kind else {
        unreachable!()
    };
    v1::SubmitJobRequest {
        spec: Some(v1::JobSpec {
            kind: Some(v1::job_spec::Kind::Workflow(v1::Workflow {
                graph: Some(graph),
                overrides: vec![],
            })),
            ..v1::JobSpec::default()
        }),
        ..v1::SubmitJobRequest::default()
    }
}

#[tokio::test]
async fn workflows_past_the_nesting_limit_are_invalid_arguments_never_internal() {
    let harness = Harness::start().await;
    let mut client = harness.client.clone();
    let limit = easel_proto::limits::MAX_WORKFLOW_DEPTH;
    let accepted = client
        .submit_job(submit("usr_deep", nested_workflow(limit)))
        .await;
    assert!(accepted.is_ok(), "{accepted:?}");
    // Past the limit: the validator names the field; past prost's recursion limit (about 45
    // levels) the decoder refuses the message, which the server answers as the caller's error.
    for depth in [limit + 1, 44, 45, 100, 127, 128] {
        let status = client
            .submit_job(submit("usr_deep", nested_workflow(depth)))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "depth {depth}: {status:?}"
        );
        if depth == limit + 1 {
            let error = Error::from_status(&status);
            let violation = &error.field_violations()[0];
            assert_eq!(violation.field, "spec.workflow.graph", "depth {depth}");
            assert!(violation.description.contains(&limit.to_string()));
        }
    }
}

#[tokio::test]
async fn a_terminal_job_shows_final_progress_whatever_its_row_kept() {
    let harness = Harness::start().await;
    let mut client = harness.client.clone();
    let stale = serde_json::to_string(&v1::Progress {
        node_id: "3".into(),
        node_class: "KSampler".into(),
        step: 6,
        max_steps: 7,
        percent: 85.7,
    })
    .unwrap();
    for (status, expected) in [
        (JobStatus::Succeeded, Some(100.0)),
        (JobStatus::Failed, None),
        (JobStatus::Cancelled, None),
        (JobStatus::Expired, None),
    ] {
        let job = client
            .submit_job(submit("usr_progress", t2i("done")))
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap();
        // A row finished before the rule, with its last step's progress kept.
        let now = millis(harness.clock.now());
        db::transition(
            harness.jobs.db(),
            &job.id,
            &Guard::from(&[JobStatus::Pending]),
            vec![
                (JobColumn::Status, Expr::value(status_to_db(status))),
                (JobColumn::Progress, Expr::value(stale.clone())),
            ],
            None,
            now,
        )
        .await
        .unwrap()
        .unwrap();
        let shown = client
            .get_job(get("usr_progress", &job.id))
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap();
        assert_eq!(
            shown.progress.map(|progress| progress.percent),
            expected,
            "{status:?}"
        );
    }
}

/// A stored spec that does not decode is never read as "no spec": the API answers INTERNAL
/// (the log names the job and the column), and a worker that claims the job fails it, naming
/// the column, instead of running something else or leaving it to wait forever.
#[tokio::test]
async fn a_corrupt_stored_spec_is_an_error_naming_the_job_and_column() {
    let harness = Harness::start().await;
    let mut client = harness.client.clone();
    let job = client
        .submit_job(submit("usr_a", t2i("corrupt")))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let now = millis(harness.clock.now());
    db::transition(
        harness.jobs.db(),
        &job.id,
        &Guard::from(&[JobStatus::Pending]),
        vec![(JobColumn::Spec, Expr::value("{not json"))],
        None,
        now,
    )
    .await
    .unwrap()
    .expect("the job is pending");
    let read = client.get_job(get("usr_a", &job.id)).await.unwrap_err();
    assert_eq!(read.code(), tonic::Code::Internal, "{read:?}");

    let settings = easel_jobs::worker::WorkerSettings {
        visibility_timeout: std::time::Duration::from_secs(2),
        retry_backoff: std::time::Duration::from_millis(100),
        retry_backoff_max: std::time::Duration::from_secs(1),
        run_timeout: std::time::Duration::from_secs(5),
        claim_block: std::time::Duration::from_millis(200),
        concurrency: 1,
    };
    let worker = std::sync::Arc::new(easel_jobs::worker::Worker::new(
        harness.jobs.clone(),
        settings,
    ));
    tokio::spawn(worker.run(harness.shutdown.clone()));
    let failed = crate::support::eventually(std::time::Duration::from_secs(20), || async {
        let row = db::find(harness.jobs.db(), &job.id).await.unwrap().unwrap();
        row.status == status_to_db(JobStatus::Failed)
    })
    .await;
    assert!(failed, "the worker failed the corrupt job");
    let row = db::find(harness.jobs.db(), &job.id).await.unwrap().unwrap();
    let error = row.error.expect("the failure is recorded");
    assert!(
        error.contains("INTERNAL") && error.contains(&job.id) && error.contains("spec"),
        "{error}"
    );
}
