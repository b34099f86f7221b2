//! Signed download links, fetched with a plain HTTP client: local HMAC links and S3 presigned
//! links.

use easel_proto::storage::v1::SignUrlRequest;
use easel_storage::model::ArtifactId;
use easel_storage::sniff::samples;

use crate::support::{Harness, Kind, header, owner, put, sha256_hex};

async fn signed(h: &mut Harness, user: &str, id: &str, ttl_seconds: i64) -> (url::Url, i64) {
    let response = h
        .client
        .sign_url(SignUrlRequest {
            owner: user.to_string(),
            artifact_id: id.to_string(),
            ttl: Some(pbjson_types::Duration {
                seconds: ttl_seconds,
                nanos: 0,
            }),
        })
        .await
        .expect("sign")
        .into_inner();
    let url = url::Url::parse(&response.url).expect("a URL");
    (url, response.expire_time.expect("expiry").seconds)
}

async fn download_checks(kind: Kind) {
    let mut h = Harness::start(kind).await;
    let user = owner();
    let bytes = samples::jpeg(640, 480, 200_000);
    let stored = put(&mut h.client, header(&user, "", "image/jpeg"), &bytes)
        .await
        .expect("upload");
    let now = chrono::Utc::now().timestamp();
    let (url, expires) = signed(&mut h, &user, &stored.id, 600).await;
    assert!(
        (expires - now - 600).abs() <= 2,
        "expiry {expires} vs now {now}"
    );

    let http = reqwest::Client::new();
    let response = http.get(url.clone()).send().await.expect("GET");
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "image/jpeg");
    assert_eq!(headers["content-length"], bytes.len().to_string().as_str());
    assert!(headers.contains_key("etag"));
    let body = response.bytes().await.expect("body");
    assert_eq!(sha256_hex(&body), stored.sha256);

    let partial = http
        .get(url.clone())
        .header("range", "bytes=100-1099")
        .send()
        .await
        .expect("GET range");
    assert_eq!(partial.status(), 206);
    assert_eq!(
        partial.headers()["content-range"],
        format!("bytes 100-1099/{}", bytes.len()).as_str()
    );
    assert_eq!(partial.bytes().await.expect("body"), bytes[100..1100]);

    // The signature is one query parameter: flip one of its characters.
    let mut tampered = url.clone();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = v.to_string();
            if k.eq_ignore_ascii_case("sig") || k.eq_ignore_ascii_case("X-Amz-Signature") {
                let mut chars: Vec<char> = v.chars().collect();
                chars[0] = if chars[0] == 'a' { 'b' } else { 'a' };
                (k.to_string(), chars.into_iter().collect())
            } else {
                (k.to_string(), v)
            }
        })
        .collect();
    tampered.query_pairs_mut().clear().extend_pairs(pairs);
    assert_ne!(tampered, url);
    let response = http.get(tampered).send().await.expect("GET tampered");
    assert_eq!(response.status(), 403);
    if kind == Kind::Local {
        assert!(response.bytes().await.expect("body").is_empty());
    }
}

#[tokio::test]
async fn local_links_download_with_headers_and_ranges_and_refuse_tampering() {
    download_checks(Kind::Local).await;
}

#[tokio::test]
async fn s3_presigned_links_download_with_ranges_and_refuse_tampering() {
    download_checks(Kind::S3).await;
}

#[tokio::test]
async fn local_links_refuse_expired_swapped_and_malformed_requests() {
    let mut h = Harness::start(Kind::Local).await;
    let user = owner();
    let bytes = samples::png(10, 10, 5000);
    let first = put(&mut h.client, header(&user, "", "image/png"), &bytes)
        .await
        .expect("upload");
    let second = put(&mut h.client, header(&user, "", "image/png"), &bytes)
        .await
        .expect("upload");
    let key = h.config.signing_key.clone().expect("a key");
    let base = url::Url::parse(&format!("http://{}", h.admin)).expect("base");
    let http = reqwest::Client::new();
    let id = ArtifactId::parse(&first.id).expect("id");

    // Correctly signed, but the expiry has passed.
    let past = chrono::Utc::now() - chrono::Duration::seconds(1);
    let expired = easel_storage::signed::link(&base, &key, &id, past);
    assert_eq!(http.get(expired).send().await.expect("GET").status(), 403);

    // A fresh link; its signature on another id or a later expiry is refused.
    let (url, expires) = signed(&mut h, &user, &first.id, 60).await;
    assert_eq!(
        http.get(url.clone()).send().await.expect("GET").status(),
        200
    );
    let sig: String = url
        .query_pairs()
        .find(|(k, _)| k == "sig")
        .map(|(_, v)| v.to_string())
        .expect("sig");
    let forged = [
        format!(
            "{base}v1/artifacts/{}?expires={expires}&sig={sig}",
            second.id
        ),
        format!(
            "{base}v1/artifacts/{}?expires={}&sig={sig}",
            first.id,
            expires + 3600
        ),
        format!("{base}v1/artifacts/{}?expires={expires}", first.id),
        format!("{base}v1/artifacts/{}?sig={sig}", first.id),
        format!("{base}v1/artifacts/..%2F..%2Fetc%2Fpasswd?expires={expires}&sig={sig}"),
        format!("{base}v1/artifacts/{}?expires=soon&sig={sig}", first.id),
    ];
    for link in forged {
        let response = http.get(&link).send().await.expect("GET");
        assert_eq!(response.status(), 403, "{link}");
        assert!(response.bytes().await.expect("body").is_empty());
    }

    // A range past the end is unsatisfiable.
    let response = http
        .get(url)
        .header("range", "bytes=999999-")
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 416);
}

#[tokio::test]
async fn link_lifetimes_are_capped() {
    let mut h = Harness::start_with(Kind::Local, |config| {
        config.signed_url_max_ttl = std::time::Duration::from_secs(120);
    })
    .await;
    let user = owner();
    let stored = put(
        &mut h.client,
        header(&user, "", "image/png"),
        &samples::png(1, 1, 10),
    )
    .await
    .expect("upload");
    let now = chrono::Utc::now().timestamp();
    let (_, expires) = signed(&mut h, &user, &stored.id, 365 * 24 * 3600).await;
    assert!(expires - now <= 121, "{expires} - {now}");
    let error = h
        .client
        .sign_url(SignUrlRequest {
            owner: user,
            artifact_id: stored.id,
            ttl: Some(pbjson_types::Duration {
                seconds: -5,
                nanos: 0,
            }),
        })
        .await
        .expect_err("negative ttl");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
}
