//! A gRPC-web client written from the wire format (HTTP/1.1, `application/grpc-web+proto`),
//! the way a browser library speaks it: length-prefixed data frames, then one trailer frame
//! (flag `0x80`) holding `grpc-status` and `grpc-message` as HTTP/1 header lines.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// One gRPC-web answer, decoded.
#[derive(Debug)]
pub struct GrpcWebResponse {
    /// The HTTP status (200 whenever the gateway answered in gRPC-web).
    pub http_status: u16,
    /// The response headers.
    pub headers: reqwest::header::HeaderMap,
    /// Every data frame's message, in order.
    pub messages: Vec<Bytes>,
    /// The trailers (`grpc-status`, `grpc-message`, …), lowercased names.
    pub trailers: Vec<(String, String)>,
}

impl GrpcWebResponse {
    /// `grpc-status` from the trailers, or else from the headers (trailers-only answers).
    pub fn grpc_status(&self) -> Option<i32> {
        self.trailer("grpc-status")
            .or_else(|| {
                self.headers
                    .get("grpc-status")
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_string)
            })
            .and_then(|value| value.trim().parse().ok())
    }

    /// A trailer's value.
    pub fn trailer(&self, name: &str) -> Option<String> {
        self.trailers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    }

    /// The only message, decoded as `M`.
    pub fn single<M: prost::Message + Default>(&self) -> M {
        assert_eq!(self.messages.len(), 1, "expected one message: {self:?}");
        M::decode(self.messages[0].clone())
            .unwrap_or_else(|error| panic!("cannot decode the answer: {error}"))
    }
}

/// `message` framed as one gRPC-web data frame.
pub fn frame(message: &impl prost::Message) -> Bytes {
    let payload = message.encode_to_vec();
    let mut framed = BytesMut::with_capacity(5 + payload.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    framed.put_slice(&payload);
    framed.freeze()
}

/// Splits a gRPC-web body into data messages and trailers.
pub fn decode_body(mut body: Bytes) -> (Vec<Bytes>, Vec<(String, String)>) {
    let mut messages = Vec::new();
    let mut trailers = Vec::new();
    while body.remaining() >= 5 {
        let flag = body.get_u8();
        let length = body.get_u32() as usize;
        assert!(body.remaining() >= length, "truncated gRPC-web frame");
        let payload = body.split_to(length);
        if flag & 0x80 != 0 {
            for line in String::from_utf8_lossy(&payload).split("\r\n") {
                if let Some((name, value)) = line.split_once(':') {
                    trailers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
                }
            }
        } else {
            messages.push(payload);
        }
    }
    assert!(!body.has_remaining(), "trailing bytes after the last frame");
    (messages, trailers)
}

/// Calls `path` (`/package.Service/Method`) at `base_url` over HTTP/1.1 in gRPC-web.
pub async fn call(
    base_url: &str,
    path: &str,
    message: &impl prost::Message,
    headers: &[(&str, &str)],
) -> GrpcWebResponse {
    let client = reqwest::Client::builder()
        .http1_only()
        .build()
        .unwrap_or_else(|error| panic!("cannot build an HTTP/1.1 client: {error}"));
    let mut request = client
        .post(format!("{base_url}{path}"))
        .header("content-type", "application/grpc-web+proto")
        .header("accept", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(frame(message));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|error| panic!("gRPC-web call {path} failed: {error}"));
    assert_eq!(
        response.version(),
        reqwest::Version::HTTP_11,
        "the call must travel over HTTP/1.1"
    );
    let http_status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .unwrap_or_else(|error| panic!("cannot read the gRPC-web body: {error}"));
    let (messages, trailers) = decode_body(body);
    GrpcWebResponse {
        http_status,
        headers,
        messages,
        trailers,
    }
}
