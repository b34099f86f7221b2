//! The TTL sweeper: expired artifacts leave the store and the database, live ones stay, two
//! sweepers share the work, and a crashed sweeper's claim lapses for another.

use std::time::Duration;

use chrono::Utc;
use easel_proto::storage::v1::StatArtifactRequest;
use easel_storage::Storage;
use easel_storage::sweeper::Sweeper;

use crate::support::{Harness, Kind, header, owner, put};

async fn put_with_ttl(h: &mut Harness, user: &str, ttl_seconds: i64) -> String {
    let mut head = header(user, "", "image/png");
    head.ttl = Some(pbjson_types::Duration {
        seconds: ttl_seconds,
        nanos: 0,
    });
    put(
        &mut h.client,
        head,
        &easel_storage::sniff::samples::png(4, 4, 100),
    )
    .await
    .expect("upload")
    .id
}

async fn exists(h: &mut Harness, user: &str, id: &str) -> bool {
    match h
        .client
        .stat_artifact(StatArtifactRequest {
            owner: user.to_string(),
            artifact_id: id.to_string(),
        })
        .await
    {
        Ok(_) => true,
        Err(status) if status.code() == tonic::Code::NotFound => false,
        Err(status) => panic!("stat failed: {status:?}"),
    }
}

async fn sweeper_keeps_live_and_deletes_expired(kind: Kind) {
    let mut h = Harness::start(kind).await;
    let user = owner();
    let mut short = Vec::new();
    for _ in 0..3 {
        short.push(put_with_ttl(&mut h, &user, 3600).await);
    }
    let long = vec![
        put_with_ttl(&mut h, &user, 30 * 86400).await,
        put_with_ttl(&mut h, &user, 30 * 86400).await,
    ];
    assert_eq!(h.stored_objects().len(), 5);

    let storage = Storage::open(&h.config, None).await.expect("storage");
    let sweeper = Sweeper::new(storage, 2, Duration::from_secs(60));
    // Nothing has expired yet.
    assert_eq!(sweeper.sweep(Utc::now()).await.expect("sweep").deleted, 0);
    let later = Utc::now() + chrono::Duration::hours(2);
    let report = sweeper.sweep(later).await.expect("sweep");
    assert_eq!((report.deleted, report.failed), (3, 0));
    assert_eq!(h.stored_objects().len(), 2, "{:?}", h.stored_objects());
    for id in &long {
        assert!(exists(&mut h, &user, id).await);
    }
    for id in &short {
        assert!(!exists(&mut h, &user, id).await);
    }
    // The rows are gone too, not just hidden: a sweep far in the future finds only the two.
    let far = Utc::now() + chrono::Duration::days(60);
    assert_eq!(sweeper.sweep(far).await.expect("sweep").deleted, 2);
    assert!(h.stored_objects().is_empty());
}

#[tokio::test]
async fn sweeper_deletes_expired_and_keeps_live_on_local() {
    sweeper_keeps_live_and_deletes_expired(Kind::Local).await;
}

#[tokio::test]
async fn sweeper_deletes_expired_and_keeps_live_on_s3() {
    sweeper_keeps_live_and_deletes_expired(Kind::S3).await;
}

#[tokio::test]
async fn two_sweepers_at_once_share_the_work_without_errors() {
    let mut h = Harness::start(Kind::Local).await;
    let user = owner();
    for _ in 0..12 {
        put_with_ttl(&mut h, &user, 60).await;
    }
    let a = Sweeper::new(
        Storage::open(&h.config, None).await.expect("a"),
        3,
        Duration::from_secs(60),
    );
    let b = Sweeper::new(
        Storage::open(&h.config, None).await.expect("b"),
        3,
        Duration::from_secs(60),
    );
    let later = Utc::now() + chrono::Duration::hours(1);
    let (ra, rb) = tokio::join!(a.sweep(later), b.sweep(later));
    let (ra, rb) = (ra.expect("sweeper a"), rb.expect("sweeper b"));
    assert_eq!(ra.failed + rb.failed, 0);
    assert_eq!(ra.deleted + rb.deleted, 12, "{ra:?} {rb:?}");
    assert!(h.stored_objects().is_empty());
}

#[tokio::test]
async fn a_crashed_sweepers_claim_lapses_and_another_finishes() {
    let mut h = Harness::start(Kind::Local).await;
    let user = owner();
    put_with_ttl(&mut h, &user, 60).await;
    let storage = Storage::open(&h.config, None).await.expect("storage");
    let later = Utc::now() + chrono::Duration::hours(1);
    // A sweeper claims the row and dies before deleting.
    let claimed = easel_storage::db::claim_expired(
        storage.db(),
        "crashed",
        later,
        Duration::from_secs(60),
        10,
    )
    .await
    .expect("claim");
    assert_eq!(claimed.len(), 1);
    let sweeper = Sweeper::new(storage, 10, Duration::from_secs(60));
    let during = sweeper
        .sweep(later + chrono::Duration::seconds(30))
        .await
        .expect("sweep");
    assert_eq!(during.deleted, 0, "the claim still holds");
    let after = sweeper
        .sweep(later + chrono::Duration::seconds(61))
        .await
        .expect("sweep");
    assert_eq!(after.deleted, 1);
    assert!(h.stored_objects().is_empty());
}
