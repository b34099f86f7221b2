//! A gRPC-web client written from the wire format, over HTTP/1.1: length-prefixed data
//! frames, then one trailer frame (flag 0x80) holding `grpc-status` as header lines.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// One decoded gRPC-web answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub messages: Vec<Bytes>,
    pub trailers: Vec<(String, String)>,
}

impl Answer {
    /// `grpc-status` from the trailers, or the headers of a trailers-only answer.
    pub fn grpc_status(&self) -> Option<i32> {
        self.trailers
            .iter()
            .find(|(name, _)| name == "grpc-status")
            .map(|(_, value)| value.clone())
            .or_else(|| {
                self.headers
                    .get("grpc-status")
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_string)
            })
            .and_then(|value| value.trim().parse().ok())
    }
}

impl Answer {
    /// The gRPC status of the answer (from the trailers, or the headers of a trailers-only
    /// answer), with its details.
    pub fn grpc(&self) -> tonic::Status {
        let mut map = self.headers.clone();
        for (name, value) in &self.trailers {
            if let (Ok(name), Ok(value)) = (
                reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                reqwest::header::HeaderValue::from_str(value),
            ) {
                map.insert(name, value);
            }
        }
        tonic::Status::from_header_map(&map)
            .unwrap_or_else(|| tonic::Status::unknown("no grpc-status"))
    }
}

/// `message` as one data frame.
pub fn frame(message: &impl prost::Message) -> Bytes {
    let payload = message.encode_to_vec();
    let mut framed = BytesMut::with_capacity(5 + payload.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(payload.len()).unwrap());
    framed.put_slice(&payload);
    framed.freeze()
}

/// Splits a body into messages and trailers.
pub fn decode(mut body: Bytes) -> (Vec<Bytes>, Vec<(String, String)>) {
    let mut messages = Vec::new();
    let mut trailers = Vec::new();
    while body.remaining() >= 5 {
        let flag = body.get_u8();
        let length = body.get_u32() as usize;
        assert!(body.remaining() >= length, "truncated frame");
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
    assert!(!body.has_remaining(), "bytes after the last frame");
    (messages, trailers)
}

/// A server-streaming gRPC-web call on HTTP/1.1, read frame by frame as the frames arrive.
pub struct Streaming {
    response: reqwest::Response,
    buffer: BytesMut,
    messages: Vec<Bytes>,
}

impl Streaming {
    /// Opens the call; returns once the answer's headers are in.
    pub async fn open(
        base: &str,
        path: &str,
        message: &impl prost::Message,
        headers: &[(&str, &str)],
    ) -> Streaming {
        Streaming {
            response: send(base, path, message, headers).await,
            buffer: BytesMut::new(),
            messages: Vec::new(),
        }
    }

    /// Waits for the next data frame and returns its message (also kept for [`finish`]);
    /// panics when the body ends first.
    ///
    /// [`finish`]: Streaming::finish
    pub async fn next_message(&mut self) -> Bytes {
        loop {
            if self.buffer.len() >= 5 {
                let length = u32::from_be_bytes(self.buffer[1..5].try_into().unwrap()) as usize;
                if self.buffer.len() >= 5 + length {
                    assert_eq!(self.buffer[0] & 0x80, 0, "a data frame, not the trailers");
                    let mut frame = self.buffer.split_to(5 + length).freeze();
                    frame.advance(5);
                    self.messages.push(frame.clone());
                    return frame;
                }
            }
            let chunk = self
                .response
                .chunk()
                .await
                .expect("gRPC-web body")
                .expect("another frame before the end of the body");
            self.buffer.extend_from_slice(&chunk);
        }
    }

    /// Reads the rest of the body: every message (those already read first) and the trailers.
    pub async fn finish(mut self) -> Answer {
        let status = self.response.status().as_u16();
        let headers = self.response.headers().clone();
        while let Some(chunk) = self.response.chunk().await.expect("gRPC-web body") {
            self.buffer.extend_from_slice(&chunk);
        }
        let (rest, trailers) = decode(self.buffer.freeze());
        self.messages.extend(rest);
        Answer {
            status,
            headers,
            messages: self.messages,
            trailers,
        }
    }
}

async fn send(
    base: &str,
    path: &str,
    message: &impl prost::Message,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let client = reqwest::Client::builder().http1_only().build().unwrap();
    let mut request = client
        .post(format!("{base}{path}"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(frame(message));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("gRPC-web request");
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    response
}

/// Calls `path` with `message` over gRPC-web on HTTP/1.1.
pub async fn call(
    base: &str,
    path: &str,
    message: &impl prost::Message,
    headers: &[(&str, &str)],
) -> Answer {
    let response = send(base, path, message, headers).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("gRPC-web body");
    let (messages, trailers) = decode(body);
    Answer {
        status,
        headers,
        messages,
        trailers,
    }
}
