//! Idempotency keys: one job per (owner, key) and request for 24 hours.

use std::collections::HashSet;
use std::time::Duration;

use easel_jobs::db;
use easel_runtime::error::{Error, reason};

use crate::support::{Harness, submit, t2i};

#[tokio::test]
async fn a_hundred_concurrent_submits_with_one_key_make_one_job() {
    let harness = Harness::start().await;
    let mut request = t2i("a lighthouse");
    request.idempotency_key = "key-100".into();
    let calls = (0..100).map(|_| {
        let mut client = harness.client.clone();
        let request = submit("usr_a", request.clone());
        async move { client.submit_job(request).await }
    });
    let answers = futures::future::join_all(calls).await;
    let mut ids = HashSet::new();
    for answer in answers {
        match answer {
            Ok(response) => {
                ids.insert(response.into_inner().job.unwrap().id);
            }
            Err(status) => {
                let error = Error::from_status(&status);
                assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
                assert_eq!(error.reason(), Some(reason::IDEMPOTENCY_KEY_IN_FLIGHT));
                assert!(error.retry_after().is_some());
            }
        }
    }
    assert_eq!(ids.len(), 1, "one job id across all answers");
    let rows = db::list_for_owner(harness.jobs.db(), "usr_a", &[], None, 100)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "exactly one job stored");
    // A later identical request is a replay of that job.
    let mut client = harness.client.clone();
    let replay = client
        .submit_job(submit("usr_a", request))
        .await
        .unwrap()
        .into_inner();
    assert!(replay.replayed);
    assert_eq!(Some(&replay.job.unwrap().id), ids.iter().next());
}

#[tokio::test]
async fn reusing_a_key_with_another_request_is_refused_until_it_expires() {
    let harness = Harness::start().await;
    let mut client = harness.client.clone();
    let mut first = t2i("a fox");
    first.idempotency_key = "k".into();
    let original = client
        .submit_job(submit("usr_a", first))
        .await
        .unwrap()
        .into_inner();
    assert!(!original.replayed);

    let mut other = t2i("a wolf");
    other.idempotency_key = "k".into();
    let status = client
        .submit_job(submit("usr_a", other.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        Error::from_status(&status).reason(),
        Some(reason::IDEMPOTENCY_KEY_REUSED)
    );

    // Keys are per owner: another user may use the same key for anything.
    let theirs = client
        .submit_job(submit("usr_b", other.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(!theirs.replayed);

    // After 24 hours the key is free again: a new job.
    harness.clock.advance(Duration::from_secs(24 * 3600 + 1));
    let later = client
        .submit_job(submit("usr_a", other))
        .await
        .unwrap()
        .into_inner();
    assert!(!later.replayed);
    assert_ne!(later.job.unwrap().id, original.job.unwrap().id);
}

#[tokio::test]
async fn keys_must_be_printable_ascii_of_at_most_255() {
    let harness = Harness::start().await;
    let mut client = harness.client.clone();
    for key in ["x".repeat(256), "naïve".to_string(), "tab\tkey".to_string()] {
        let mut request = t2i("a cat");
        request.idempotency_key = key;
        let status = client
            .submit_job(submit("usr_a", request))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let error = Error::from_status(&status);
        assert_eq!(error.field_violations()[0].field, "idempotency_key");
    }
}
