//! One contract suite, run against every backend: the local directory and S3 (s3s-fs).

use easel_proto::storage::v1::{DeleteArtifactRequest, ListArtifactsRequest, StatArtifactRequest};
use easel_storage::sniff::samples;

use crate::support::{Harness, Kind, get, header, owner, put, put_png, sha256_hex};

pub async fn round_trip_keeps_bytes_hash_type_size_and_metadata(kind: Kind) {
    let mut h = Harness::start(kind).await;
    let user = owner();
    // Larger than one part, so S3 goes multipart and downloads come in several chunks.
    let bytes = samples::png(1920, 1080, 6 * 1024 * 1024 + 123);
    let mut head = header(&user, "job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b", "image/png");
    head.metadata.insert("seed".into(), "42".into());
    head.metadata.insert("node_id".into(), "9".into());
    head.metadata.insert("filename".into(), "café.png".into());
    let stored = put(&mut h.client, head, &bytes).await.expect("upload");
    assert!(stored.id.starts_with("art_"));
    assert_eq!(stored.size_bytes, bytes.len() as u64);
    assert_eq!(stored.sha256, sha256_hex(&bytes));
    assert_eq!(stored.content_type, "image/png");
    assert_eq!((stored.width, stored.height), (1920, 1080));
    assert_eq!(
        stored.metadata.get("filename").map(String::as_str),
        Some("café.png")
    );
    let created = stored.create_time.expect("create time");
    let expires = stored.expire_time.expect("expire time");
    let default_ttl = h.config.default_ttl.as_secs() as i64;
    assert!((expires.seconds - created.seconds - default_ttl).abs() <= 1);

    if kind == Kind::S3 {
        // The same metadata travels on the object as S3 user metadata.
        let on_object: String = h
            .stored_files()
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(".metadata.json"))
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect();
        for expected in ["easel-owner", &user, "seed", "caf%C3%A9.png", "image/png"] {
            assert!(
                on_object.contains(expected),
                "{expected} not in {on_object}"
            );
        }
    }

    let (artifact, downloaded) = get(&mut h.client, &user, &stored.id)
        .await
        .expect("download");
    assert_eq!(artifact, stored);
    assert_eq!(sha256_hex(&downloaded), stored.sha256);
    assert_eq!(downloaded, bytes);

    // Small images of every accepted type, in one message each.
    for (bytes, mime, size) in [
        (samples::jpeg(800, 600, 100), "image/jpeg", (800, 600)),
        (samples::gif(16, 8, 100), "image/gif", (16, 8)),
        (samples::webp(300, 200, 100), "image/webp", (300, 200)),
    ] {
        let stored = put(&mut h.client, header(&user, "", mime), &bytes)
            .await
            .expect("upload");
        assert_eq!(
            (stored.content_type.as_str(), stored.width, stored.height),
            (mime, size.0, size.1)
        );
        let (_, downloaded) = get(&mut h.client, &user, &stored.id)
            .await
            .expect("download");
        assert_eq!(downloaded, bytes);
    }
}

pub async fn stat_describes_and_delete_removes(kind: Kind) {
    let mut h = Harness::start(kind).await;
    let user = owner();
    let stored = put_png(&mut h, &user, "", 1000).await;
    let stat = h
        .client
        .stat_artifact(StatArtifactRequest {
            owner: user.clone(),
            artifact_id: stored.id.clone(),
        })
        .await
        .expect("stat")
        .into_inner()
        .artifact;
    assert_eq!(stat.as_ref(), Some(&stored));
    assert_eq!(h.stored_objects().len(), 1, "{:?}", h.stored_objects());

    h.client
        .delete_artifact(DeleteArtifactRequest {
            owner: user.clone(),
            artifact_id: stored.id.clone(),
        })
        .await
        .expect("delete");
    assert!(h.stored_objects().is_empty(), "{:?}", h.stored_objects());
    let gone = h
        .client
        .stat_artifact(StatArtifactRequest {
            owner: user.clone(),
            artifact_id: stored.id.clone(),
        })
        .await
        .expect_err("deleted");
    assert_eq!(gone.code(), tonic::Code::NotFound);
    let again = h
        .client
        .delete_artifact(DeleteArtifactRequest {
            owner: user,
            artifact_id: stored.id,
        })
        .await
        .expect_err("deleted twice");
    assert_eq!(again.code(), tonic::Code::NotFound);
}

pub async fn list_pages_through_an_owners_artifacts_oldest_first(kind: Kind) {
    let mut h = Harness::start(kind).await;
    let user = owner();
    let job = "job_0190a5b2c3d47e8f9a0b1c2d3e4f0001";
    let mut expected = Vec::new();
    for i in 0..5 {
        let job_id = if i % 2 == 0 { job } else { "" };
        expected.push(put_png(&mut h, &user, job_id, 10 + i).await.id);
    }
    // Someone else's artifact never shows.
    put_png(&mut h, &owner(), job, 10).await;

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = h
            .client
            .list_artifacts(ListArtifactsRequest {
                owner: user.clone(),
                job_id: String::new(),
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .expect("list")
            .into_inner();
        pages += 1;
        assert!(page.artifacts.len() <= 2);
        seen.extend(page.artifacts.into_iter().map(|a| a.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, expected);
    assert_eq!(pages, 3);

    let of_job = h
        .client
        .list_artifacts(ListArtifactsRequest {
            owner: user.clone(),
            job_id: job.to_string(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .expect("list by job")
        .into_inner();
    let ids: Vec<_> = of_job.artifacts.iter().map(|a| a.id.clone()).collect();
    assert_eq!(
        ids,
        vec![
            expected[0].clone(),
            expected[2].clone(),
            expected[4].clone()
        ]
    );
    assert!(of_job.next_page_token.is_empty());

    for (page_size, page_token) in [(1001, String::new()), (2, "garbage".to_string())] {
        let error = h
            .client
            .list_artifacts(ListArtifactsRequest {
                owner: user.clone(),
                job_id: String::new(),
                page_size,
                page_token,
            })
            .await
            .expect_err("bad page request");
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
    }
}

pub async fn another_owners_artifact_is_not_found(kind: Kind) {
    let mut h = Harness::start(kind).await;
    let alice = owner();
    let mallory = owner();
    let stored = put_png(&mut h, &alice, "", 100).await;

    let error = get(&mut h.client, &mallory, &stored.id)
        .await
        .expect_err("other owner");
    assert_eq!(error.code(), tonic::Code::NotFound);
    let error = h
        .client
        .stat_artifact(StatArtifactRequest {
            owner: mallory.clone(),
            artifact_id: stored.id.clone(),
        })
        .await
        .expect_err("other owner");
    assert_eq!(error.code(), tonic::Code::NotFound);
    let error = h
        .client
        .sign_url(easel_proto::storage::v1::SignUrlRequest {
            owner: mallory.clone(),
            artifact_id: stored.id.clone(),
            ttl: None,
        })
        .await
        .expect_err("other owner");
    assert_eq!(error.code(), tonic::Code::NotFound);
    let error = h
        .client
        .delete_artifact(DeleteArtifactRequest {
            owner: mallory.clone(),
            artifact_id: stored.id.clone(),
        })
        .await
        .expect_err("other owner");
    assert_eq!(error.code(), tonic::Code::NotFound);
    let listed = h
        .client
        .list_artifacts(ListArtifactsRequest {
            owner: mallory,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(listed.artifacts.is_empty());
    // Still there for its owner.
    let (_, bytes) = get(&mut h.client, &alice, &stored.id)
        .await
        .expect("owner reads");
    assert_eq!(sha256_hex(&bytes), stored.sha256);
}

macro_rules! contract_suite {
    ($backend:ident, $kind:expr) => {
        mod $backend {
            #[tokio::test]
            async fn round_trip_keeps_bytes_hash_type_size_and_metadata() {
                super::round_trip_keeps_bytes_hash_type_size_and_metadata($kind).await;
            }

            #[tokio::test]
            async fn stat_describes_and_delete_removes() {
                super::stat_describes_and_delete_removes($kind).await;
            }

            #[tokio::test]
            async fn list_pages_through_an_owners_artifacts_oldest_first() {
                super::list_pages_through_an_owners_artifacts_oldest_first($kind).await;
            }

            #[tokio::test]
            async fn another_owners_artifact_is_not_found() {
                super::another_owners_artifact_is_not_found($kind).await;
            }
        }
    };
}

contract_suite!(local, crate::support::Kind::Local);
contract_suite!(s3, crate::support::Kind::S3);

/// The embedded database kind runs the same migrations and queries.
#[tokio::test]
async fn sqlite_metadata_works_the_same() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = easel_test_support::TestDatabase::sqlite(dir.path());
    let mut h = Harness::start_on(Kind::Local, url, |_| {}).await;
    let user = owner();
    let first = put_png(&mut h, &user, "", 10).await;
    let second = put_png(&mut h, &user, "", 20).await;
    let (_, bytes) = get(&mut h.client, &user, &second.id)
        .await
        .expect("download");
    assert_eq!(sha256_hex(&bytes), second.sha256);
    let page = h
        .client
        .list_artifacts(ListArtifactsRequest {
            owner: user,
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.artifacts[0].id, first.id);
    assert!(!page.next_page_token.is_empty());
}
