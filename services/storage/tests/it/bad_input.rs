//! Bad input to every RPC: a clear error, and nothing left behind in the store or database.

use std::time::Duration;

use easel_proto::storage::v1::storage_service_client::StorageServiceClient;
use easel_proto::storage::v1::{
    DeleteArtifactRequest, ListArtifactsRequest, PutArtifactRequest, SignUrlRequest,
    StatArtifactRequest, put_artifact_request,
};
use easel_storage::sniff::samples;

use crate::support::{Harness, Kind, get, header, messages, owner, put};

async fn assert_nothing_stored(h: &mut Harness, user: &str) {
    // An aborted multipart upload's part files go once the S3 server finishes the abort.
    let cleaned = eventually(Duration::from_secs(20), || h.stored_files().is_empty()).await;
    assert!(cleaned, "left behind: {:?}", h.stored_files());
    let listed = h
        .client
        .list_artifacts(ListArtifactsRequest {
            owner: user.to_string(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(
        listed.artifacts.is_empty(),
        "rows left: {:?}",
        listed.artifacts
    );
}

async fn refused_uploads(kind: Kind) {
    let mut h = Harness::start_with(kind, |config| {
        config.max_upload_bytes = 6 * 1024 * 1024;
    })
    .await;
    let user = owner();
    let mut random = vec![0_u8; 4096];
    rand::fill(&mut random[..]);
    let jpeg = samples::jpeg(8, 8, 100);
    let png = samples::png(8, 8, 100);
    let cases: Vec<(&str, easel_proto::storage::v1::ArtifactHeader, Vec<u8>)> = vec![
        (
            "png declared, jpeg sent",
            header(&user, "", "image/png"),
            jpeg.clone(),
        ),
        ("random bytes", header(&user, "", "image/png"), random),
        (
            "a few bytes",
            header(&user, "", "image/gif"),
            b"GIF".to_vec(),
        ),
        ("empty", header(&user, "", "image/png"), Vec::new()),
        // Past the cap, after multipart has started (parts are 5 MiB).
        (
            "over the cap",
            header(&user, "", "image/png"),
            samples::png(8, 8, 7 * 1024 * 1024),
        ),
        (
            "svg",
            header(&user, "", "image/svg+xml"),
            b"<svg></svg>".to_vec(),
        ),
        ("bad owner", header("../etc", "", "image/png"), png.clone()),
        ("no owner", header("", "", "image/png"), png.clone()),
        (
            "bad job",
            header(&user, "job_1/../../x", "image/png"),
            png.clone(),
        ),
        (
            "bad metadata key",
            {
                let mut head = header(&user, "", "image/png");
                head.metadata.insert("../Key".into(), "x".into());
                head
            },
            png.clone(),
        ),
        (
            "oversized metadata",
            {
                let mut head = header(&user, "", "image/png");
                head.metadata.insert("k".into(), "x".repeat(4096));
                head
            },
            png.clone(),
        ),
        (
            "negative ttl",
            {
                let mut head = header(&user, "", "image/png");
                head.ttl = Some(pbjson_types::Duration {
                    seconds: -1,
                    nanos: 0,
                });
                head
            },
            png.clone(),
        ),
    ];
    for (name, head, bytes) in cases {
        let error = put(&mut h.client, head, &bytes).await.expect_err(name);
        assert_eq!(
            error.code(),
            tonic::Code::InvalidArgument,
            "{name}: {error:?}"
        );
    }
    // No header first, or a second header.
    let chunk_first = vec![PutArtifactRequest {
        part: Some(put_artifact_request::Part::Chunk(png.clone())),
    }];
    let mut two_headers = messages(header(&user, "", "image/png"), &png, 64);
    two_headers.push(PutArtifactRequest {
        part: Some(put_artifact_request::Part::Header(header(
            &user,
            "",
            "image/png",
        ))),
    });
    for (name, stream) in [
        ("chunk first", chunk_first),
        ("two headers", two_headers),
        ("nothing", Vec::new()),
    ] {
        let error = h
            .client
            .put_artifact(tokio_stream::iter(stream))
            .await
            .expect_err(name);
        assert_eq!(
            error.code(),
            tonic::Code::InvalidArgument,
            "{name}: {error:?}"
        );
    }
    assert_nothing_stored(&mut h, &user).await;
}

#[tokio::test]
async fn refused_uploads_leave_nothing_on_local() {
    refused_uploads(Kind::Local).await;
}

#[tokio::test]
async fn refused_uploads_leave_nothing_on_s3() {
    refused_uploads(Kind::S3).await;
}

/// Waits until `done` holds, up to `deadline`.
async fn eventually(deadline: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + deadline;
    while tokio::time::Instant::now() < until {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

async fn cut_upload(kind: Kind) {
    let mut h = Harness::start(kind).await;
    let user = owner();
    // The client talks through a TCP proxy the test can cut.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let proxy_addr = proxy.local_addr().expect("addr");
    let target = h.grpc;
    let relay = tokio::spawn(async move {
        let (mut inbound, _) = proxy.accept().await.expect("accept");
        let mut outbound = tokio::net::TcpStream::connect(target)
            .await
            .expect("connect");
        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{proxy_addr}"))
        .expect("endpoint")
        .connect_lazy();
    let mut client = StorageServiceClient::new(channel);
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    let call = tokio::spawn(async move {
        client
            .put_artifact(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await
    });
    // Six MiB: past one part, so a multipart upload is under way when the cut comes.
    for message in messages(
        header(&user, "", "image/png"),
        &samples::png(8, 8, 6 * 1024 * 1024),
        256 * 1024,
    ) {
        sender.send(message).await.expect("send");
    }
    assert!(
        eventually(Duration::from_secs(20), || !h.stored_files().is_empty()).await,
        "the upload never reached the store"
    );
    relay.abort();
    let outcome = call.await.expect("call task");
    assert!(outcome.is_err(), "a cut upload must not succeed");
    let cleaned = eventually(Duration::from_secs(20), || h.stored_files().is_empty()).await;
    assert!(cleaned, "left behind: {:?}", h.stored_files());
    drop(sender);
    assert_nothing_stored(&mut h, &user).await;
}

#[tokio::test]
async fn a_cut_upload_leaves_no_object_and_no_row_on_local() {
    cut_upload(Kind::Local).await;
}

#[tokio::test]
async fn a_cut_upload_leaves_no_object_and_no_row_on_s3() {
    cut_upload(Kind::S3).await;
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_refused_without_touching_the_store() {
    let mut h = Harness::start(Kind::Local).await;
    let user = owner();
    let unknown = easel_runtime::ids::new_id("art");
    for (id, code) in [
        (unknown.as_str(), tonic::Code::NotFound),
        ("art_../../etc/passwd", tonic::Code::NotFound),
        ("../../etc/passwd", tonic::Code::NotFound),
        ("usr_1/uploads/x.png", tonic::Code::NotFound),
        (
            "ART_0190A5B2C3D47E8F9A0B1C2D3E4F5A6B",
            tonic::Code::NotFound,
        ),
        ("", tonic::Code::InvalidArgument),
    ] {
        let stat = h
            .client
            .stat_artifact(StatArtifactRequest {
                owner: user.clone(),
                artifact_id: id.to_string(),
            })
            .await
            .expect_err(id);
        assert_eq!(stat.code(), code, "stat {id:?}");
        let download = get(&mut h.client, &user, id).await.expect_err(id);
        assert_eq!(download.code(), code, "get {id:?}");
        let sign = h
            .client
            .sign_url(SignUrlRequest {
                owner: user.clone(),
                artifact_id: id.to_string(),
                ttl: None,
            })
            .await
            .expect_err(id);
        assert_eq!(sign.code(), code, "sign {id:?}");
        let delete = h
            .client
            .delete_artifact(DeleteArtifactRequest {
                owner: user.clone(),
                artifact_id: id.to_string(),
            })
            .await
            .expect_err(id);
        assert_eq!(delete.code(), code, "delete {id:?}");
    }
    let error = h
        .client
        .stat_artifact(StatArtifactRequest {
            owner: "../root".into(),
            artifact_id: unknown.clone(),
        })
        .await
        .expect_err("bad owner");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    let error = h
        .client
        .list_artifacts(ListArtifactsRequest {
            owner: user,
            job_id: "../x".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad job");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
}
