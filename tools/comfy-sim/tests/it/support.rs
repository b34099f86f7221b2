//! Helpers: fixtures, an HTTP client, a WebSocket client that waits with deadlines.

use std::time::Duration;

use easel_comfy_sim::{SimConfig, SimHandle};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    serde_json::from_str(&text).expect("fixture json")
}

pub fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

pub async fn sim() -> SimHandle {
    sim_with(SimConfig::with_request_faults()).await
}

pub async fn sim_with(config: SimConfig) -> SimHandle {
    easel_comfy_sim::spawn(config)
        .await
        .expect("spawn simulator")
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .expect("client")
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not json: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body").to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn get(sim: &SimHandle, path: &str) -> Reply {
    send(http().get(format!("{}{path}", sim.base_url()))).await
}

pub async fn post_json(sim: &SimHandle, path: &str, body: &Value) -> Reply {
    send(http().post(format!("{}{path}", sim.base_url())).json(body)).await
}

pub async fn post_raw(sim: &SimHandle, path: &str, body: &str) -> Reply {
    send(
        http()
            .post(format!("{}{path}", sim.base_url()))
            .body(body.to_owned()),
    )
    .await
}

/// POSTs a prompt and returns its id (asserting 200).
pub async fn queue_prompt(sim: &SimHandle, body: &Value) -> String {
    let reply = post_json(sim, "/prompt", body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["prompt_id"]
        .as_str()
        .expect("prompt_id")
        .to_owned()
}

pub fn assert_json_content(reply: &Reply) {
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/json; charset=utf-8")
    );
}

pub fn assert_empty(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.header("content-length").as_deref(), Some("0"));
    assert!(reply.header("content-type").is_none());
    assert!(reply.body.is_empty());
}

/// Same keys recursively for objects; same JSON kinds elsewhere (ids and timestamps differ).
pub fn assert_same_shape(actual: &Value, expected: &Value, path: &str) {
    match (actual, expected) {
        (Value::Object(actual), Value::Object(expected)) => {
            let actual_keys: Vec<&String> = actual.keys().collect();
            let expected_keys: Vec<&String> = expected.keys().collect();
            assert_eq!(actual_keys, expected_keys, "keys at {path}");
            for (key, value) in expected {
                assert_same_shape(&actual[key], value, &format!("{path}.{key}"));
            }
        }
        (Value::Array(actual), Value::Array(expected)) => {
            if let (Some(first), Some(expected_first)) = (actual.first(), expected.first()) {
                assert_same_shape(first, expected_first, &format!("{path}[0]"));
            }
        }
        (Value::Number(_), Value::Number(_))
        | (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_))
        | (Value::Null, Value::Null) => {}
        (actual, expected) => panic!("kind differs at {path}: {actual} vs {expected}"),
    }
}

/// `type` (plus `queue_remaining` for status) of each text message.
pub fn kinds(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|message| {
            let kind = message["type"].as_str().unwrap_or("?").to_owned();
            match kind.as_str() {
                "status" => format!(
                    "status {}",
                    message["data"]["status"]["exec_info"]["queue_remaining"]
                ),
                "executing" if message["data"]["node"].is_null() => "executing null".to_owned(),
                _ => kind,
            }
        })
        .collect()
}

/// The text messages of a recorded WebSocket log.
pub fn recorded(messages: &Value) -> Vec<Value> {
    messages
        .as_array()
        .expect("recorded messages")
        .iter()
        .filter_map(|message| message.get("json").cloned())
        .collect()
}

pub enum Incoming {
    Text(Value),
    Binary(Vec<u8>),
    /// The TCP connection ended without a close frame.
    Abrupt,
    /// A close frame arrived.
    Closed,
}

pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub initial: Value,
}

impl Ws {
    pub async fn connect(sim: &SimHandle, client_id: &str) -> Self {
        let url = sim.ws_url(client_id);
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        let mut ws = Self {
            stream,
            initial: Value::Null,
        };
        ws.initial = ws.next_text().await;
        assert_eq!(ws.initial["type"], "status");
        ws
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::Text(text.into()))
            .await
            .expect("ws send");
    }

    pub async fn next(&mut self) -> Incoming {
        loop {
            let frame = tokio::time::timeout(DEADLINE, self.stream.next())
                .await
                .expect("ws message before the deadline");
            return match frame {
                Some(Ok(Message::Text(text))) => {
                    Incoming::Text(serde_json::from_str(text.as_str()).expect("ws json"))
                }
                Some(Ok(Message::Binary(bytes))) => Incoming::Binary(bytes.to_vec()),
                Some(Ok(Message::Close(_))) => Incoming::Closed,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => Incoming::Abrupt,
            };
        }
    }

    pub async fn next_text(&mut self) -> Value {
        loop {
            match self.next().await {
                Incoming::Text(value) => return value,
                Incoming::Binary(_) => continue,
                Incoming::Abrupt | Incoming::Closed => {
                    panic!("socket closed while waiting for a message")
                }
            }
        }
    }

    /// Collects text messages up to and including `executing` with `node: null` for `prompt_id`.
    pub async fn until_done(&mut self, prompt_id: &str) -> Vec<Value> {
        let mut messages = Vec::new();
        loop {
            let message = self.next_text().await;
            let done = message["type"] == "executing"
                && message["data"]["node"].is_null()
                && message["data"]["prompt_id"] == prompt_id;
            messages.push(message);
            if done {
                return messages;
            }
        }
    }

    /// Collects text messages until one satisfies `stop` (included).
    pub async fn until(&mut self, stop: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut messages = Vec::new();
        loop {
            let message = self.next_text().await;
            let done = stop(&message);
            messages.push(message);
            if done {
                return messages;
            }
        }
    }
}

pub fn client_id() -> String {
    uuid_like()
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "00000000-0000-4000-8000-{:012x}",
        NEXT.fetch_add(1, Ordering::SeqCst) + u64::from(std::process::id()) * 1000
    )
}

/// EmptyImage → SaveImage.
pub fn simple_graph(color: u64, prefix: &str) -> Value {
    json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": color}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    })
}

/// The text-to-image graph.
pub fn txt2img(seed: u64, text: &str, width: u64, height: u64, steps: u64) -> Value {
    json!({
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "t2i"}},
    })
}

/// Fetches an output file through /view.
pub async fn view_output(sim: &SimHandle, filename: &str) -> Reply {
    get(
        sim,
        &format!("/view?filename={filename}&subfolder=&type=output"),
    )
    .await
}

/// Waits (with a deadline) until connecting to the address is refused.
pub async fn assert_refused(address: std::net::SocketAddr) {
    let error = TcpStream::connect(address)
        .await
        .expect_err("connection must be refused");
    assert_eq!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{error}"
    );
}
