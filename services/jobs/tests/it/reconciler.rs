//! The reconciler repairs the queue from the database.

use std::collections::HashSet;
use std::time::Duration;

use easel_jobs::db::{self, Guard, JobColumn};
use easel_jobs::model::{Clock, millis, status_to_db};
use easel_jobs::reconciler::reconcile;
use easel_proto::jobs::v1::JobStatus;
use sea_orm::sea_query::Expr;

use crate::support::{Harness, submit, t2i};

#[tokio::test]
async fn jobs_lost_by_an_emptied_redis_are_all_requeued() {
    let harness = Harness::start().await;
    let mut client = harness.client.clone();
    let mut ids = HashSet::new();
    for index in 0..20 {
        let job = client
            .submit_job(submit("usr_a", t2i(&format!("j{index}"))))
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap();
        ids.insert(job.id);
    }
    // Nothing is lost while the queue knows the jobs.
    harness.clock.advance(Duration::from_secs(60));
    assert_eq!(
        reconcile(&harness.jobs, Duration::from_secs(30))
            .await
            .unwrap()
            .requeued_pending,
        0
    );

    // Redis restarts empty: every easel key is gone.
    let redis = harness.redis.as_ref().unwrap();
    let client_redis = redis::Client::open(redis.url.as_str()).unwrap();
    let mut connection = client_redis
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}queue:*", redis.prefix))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut connection)
        .await
        .unwrap();

    let pass = reconcile(&harness.jobs, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(pass.requeued_pending, 20);
    // A second pass finds nothing more to do.
    assert_eq!(
        reconcile(&harness.jobs, Duration::from_secs(30))
            .await
            .unwrap()
            .requeued_pending,
        0
    );

    let mut claimed = HashSet::new();
    while let Some(delivery) = harness
        .jobs
        .queue()
        .claim("test", Duration::from_millis(300))
        .await
        .unwrap()
    {
        claimed.insert(delivery.message.job_id.clone());
        harness.jobs.queue().ack(&delivery).await.unwrap();
    }
    assert_eq!(claimed, ids, "none lost, none extra");
}

#[tokio::test]
async fn running_jobs_with_a_lapsed_lease_go_back_and_late_jobs_expire() {
    let harness = Harness::start_with(false, &[]).await;
    let mut client = harness.client.clone();
    let running = client
        .submit_job(submit("usr_a", t2i("r")))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let delivery = harness
        .jobs
        .queue()
        .claim("dead-worker", Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    harness.jobs.queue().ack(&delivery).await.unwrap();
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
            (JobColumn::LeaseOwner, Expr::value("dead-worker")),
            (JobColumn::LeaseExpiresMs, Expr::value(now + 1000)),
        ],
        None,
        now,
    )
    .await
    .unwrap()
    .unwrap();
    let mut late = t2i("late");
    late.start_timeout = Some(pbjson_types::Duration {
        seconds: 5,
        nanos: 0,
    });
    let late = client
        .submit_job(submit("usr_a", late))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();

    harness.clock.advance(Duration::from_secs(120));
    let pass = reconcile(&harness.jobs, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(pass.requeued_running, 1);
    assert_eq!(pass.expired, 1);
    let row = db::find(harness.jobs.db(), &late.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, status_to_db(JobStatus::Expired));
    let mut redelivered = Vec::new();
    while let Some(delivery) = harness
        .jobs
        .queue()
        .claim("live-worker", Duration::from_millis(200))
        .await
        .unwrap()
    {
        redelivered.push(delivery.message.job_id.clone());
        harness.jobs.queue().ack(&delivery).await.unwrap();
    }
    assert!(redelivered.contains(&running.id), "{redelivered:?}");
}
