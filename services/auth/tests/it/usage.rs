//! Daily usage: RecordUsage adds up, GetUsage shows it with the tier's limits.

use std::time::Duration;

use easel_proto::account::v1::{GetUsageRequest, Tier};
use easel_proto::auth::v1::RecordUsageRequest;
use tonic::Code;

use crate::support::{Harness, assert_refused, with_key};

#[tokio::test]
async fn usage_adds_up_per_day_and_comes_with_the_limits() {
    let mut h = Harness::start().await;
    let user = h.user(Tier::Pro).await;
    let other = h.user(Tier::Free).await;
    for (jobs, gpu, bytes) in [(1, 2.5, 100), (2, 0.5, 50), (0, 1.0, -30)] {
        h.internal
            .record_usage(RecordUsageRequest {
                user_id: user.id.clone(),
                jobs_submitted: jobs,
                gpu_seconds: gpu,
                bytes_stored: bytes,
            })
            .await
            .unwrap();
    }
    h.clock.advance(Duration::from_secs(24 * 3600));
    h.internal
        .record_usage(RecordUsageRequest {
            user_id: user.id.clone(),
            jobs_submitted: 7,
            ..Default::default()
        })
        .await
        .unwrap();
    h.internal
        .record_usage(RecordUsageRequest {
            user_id: other.id.clone(),
            jobs_submitted: 99,
            ..Default::default()
        })
        .await
        .unwrap();

    let usage = h
        .account
        .get_usage(with_key(GetUsageRequest { days: 7 }, &user.key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(usage.limits.unwrap(), h.config.tiers.pro);
    assert_eq!(usage.days.len(), 2);
    assert_eq!(usage.days[0].jobs_submitted, 7, "newest first");
    assert_eq!(usage.days[1].jobs_submitted, 3);
    assert!((usage.days[1].gpu_seconds - 4.0).abs() < 1e-9);
    assert_eq!(usage.days[1].bytes_stored, 120);
    assert!(usage.days[0].date > usage.days[1].date);

    // One day back only shows today.
    let today = h
        .account
        .get_usage(with_key(GetUsageRequest { days: 1 }, &user.key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(today.days.len(), 1);

    for days in [91, 1000] {
        let status = h
            .account
            .get_usage(with_key(GetUsageRequest { days }, &user.key))
            .await
            .unwrap_err();
        assert_refused(&status, Code::InvalidArgument, None);
    }
}
