//! The HTTP half of ComfyUI's protocol: one client per backend, every call timed, counted and
//! carrying the W3C trace context.

pub mod protocol;

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use url::Url;

use crate::metrics;
use protocol::{HistoryEntry, PromptRejection, QueueSnapshot};

/// A failed call to ComfyUI.
#[derive(Debug, thiserror::Error)]
pub enum ComfyError {
    /// Connecting, sending or reading failed (refused, reset, timed out).
    #[error("{endpoint}: backend unreachable: {source}")]
    Unreachable {
        /// The route, e.g. `/prompt`.
        endpoint: &'static str,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// ComfyUI rejected the graph (400 with `error` / `node_errors`).
    #[error("prompt rejected: {}", .0.message)]
    Rejected(PromptRejection),
    /// An unexpected status.
    #[error("{endpoint}: unexpected status {status}")]
    Status {
        /// The route.
        endpoint: &'static str,
        /// The status.
        status: u16,
    },
    /// The body was not what ComfyUI sends.
    #[error("{endpoint}: unexpected body: {reason}")]
    Body {
        /// The route.
        endpoint: &'static str,
        /// What was wrong.
        reason: String,
    },
}

impl ComfyError {
    /// A short label for the failures metric.
    pub fn reason(&self) -> &'static str {
        match self {
            ComfyError::Unreachable { source, .. } if source.is_timeout() => "timeout",
            ComfyError::Unreachable { .. } => "unreachable",
            ComfyError::Rejected(_) => "rejected",
            ComfyError::Status { .. } => "status",
            ComfyError::Body { .. } => "body",
        }
    }

    /// Whether the backend itself is at fault (counts against its breaker).
    pub fn is_backend_failure(&self) -> bool {
        !matches!(self, ComfyError::Rejected(_))
    }
}

/// ComfyUI's answer to an accepted prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct Accepted {
    /// The queue number.
    pub number: i64,
}

/// VRAM figures from `/system_stats` (the first device).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SystemStats {
    /// Total bytes.
    pub vram_total: u64,
    /// Free bytes.
    pub vram_free: u64,
}

/// An image fetched from `/view`.
#[derive(Clone, Debug)]
pub struct ViewedFile {
    /// The bytes.
    pub data: Bytes,
    /// The `Content-Type`.
    pub content_type: String,
}

/// A client of one backend.
#[derive(Clone, Debug)]
pub struct ComfyClient {
    http: reqwest::Client,
    base: Url,
    backend: String,
}

impl ComfyClient {
    /// A client of `base` (the backend's root URL), labelled `backend` in metrics.
    pub fn new(http: reqwest::Client, base: Url, backend: &str) -> ComfyClient {
        ComfyClient {
            http,
            base,
            backend: backend.to_string(),
        }
    }

    /// The base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let joined = format!("{}{}", self.base.path().trim_end_matches('/'), path);
        url.set_path(&joined);
        url
    }

    async fn send(
        &self,
        endpoint: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ComfyError> {
        let mut headers = http::HeaderMap::new();
        easel_runtime::telemetry::propagation::inject_current_into_headers(&mut headers);
        let started = Instant::now();
        let result = request.headers(headers).send().await;
        let outcome = match &result {
            Ok(response) => response.status().as_str().to_string(),
            Err(_) => "error".to_string(),
        };
        metrics::comfy_request(&self.backend, endpoint, &outcome, started.elapsed());
        result.map_err(|source| {
            let error = ComfyError::Unreachable { endpoint, source };
            metrics::comfy_failure(&self.backend, error.reason());
            error
        })
    }

    async fn json(
        &self,
        endpoint: &'static str,
        response: reqwest::Response,
    ) -> Result<Value, ComfyError> {
        let status = response.status();
        if !status.is_success() {
            metrics::comfy_failure(&self.backend, "status");
            return Err(ComfyError::Status {
                endpoint,
                status: status.as_u16(),
            });
        }
        let body = response
            .bytes()
            .await
            .map_err(|source| ComfyError::Unreachable { endpoint, source })?;
        serde_json::from_slice(&body).map_err(|error| {
            metrics::comfy_failure(&self.backend, "body");
            ComfyError::Body {
                endpoint,
                reason: error.to_string(),
            }
        })
    }

    async fn expect_ok(
        &self,
        endpoint: &'static str,
        response: reqwest::Response,
    ) -> Result<(), ComfyError> {
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            metrics::comfy_failure(&self.backend, "status");
            Err(ComfyError::Status {
                endpoint,
                status: status.as_u16(),
            })
        }
    }

    /// `POST /prompt` with our own `prompt_id` and `client_id`.
    pub async fn post_prompt(
        &self,
        prompt_id: &str,
        client_id: &str,
        graph: &Value,
        extra_data: Option<&Value>,
    ) -> Result<Accepted, ComfyError> {
        const ENDPOINT: &str = "/prompt";
        let mut body = json!({"prompt": graph, "client_id": client_id, "prompt_id": prompt_id});
        if let (Some(extra), Some(object)) = (extra_data, body.as_object_mut()) {
            object.insert("extra_data".to_string(), extra.clone());
        }
        let response = self
            .send(ENDPOINT, self.http.post(self.url(ENDPOINT)).json(&body))
            .await?;
        if response.status() == reqwest::StatusCode::BAD_REQUEST {
            let text = response
                .text()
                .await
                .map_err(|source| ComfyError::Unreachable {
                    endpoint: ENDPOINT,
                    source,
                })?;
            return Err(ComfyError::Rejected(PromptRejection::from_body(&text)));
        }
        let body = self.json(ENDPOINT, response).await?;
        let number = body
            .get("number")
            .and_then(|n| n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)))
            .unwrap_or(0);
        // A partly valid graph is accepted with node errors and runs only its valid outputs;
        // easel asked for all of them, so that is a rejection too.
        if let Some(errors) = body.get("node_errors").and_then(Value::as_object)
            && !errors.is_empty()
        {
            let _ = self.delete_from_queue(prompt_id).await;
            return Err(ComfyError::Rejected(PromptRejection {
                kind: "prompt_outputs_failed_validation".to_string(),
                message: "Prompt outputs failed validation".to_string(),
                details: String::new(),
                node_errors: protocol::node_errors(errors),
            }));
        }
        Ok(Accepted { number })
    }

    /// `GET /history/{id}`: `None` when ComfyUI does not know the prompt (yet).
    pub async fn history(&self, prompt_id: &str) -> Result<Option<HistoryEntry>, ComfyError> {
        const ENDPOINT: &str = "/history/{id}";
        let mut url = self.url("/history/");
        url.path_segments_mut()
            .map_err(|()| ComfyError::Body {
                endpoint: ENDPOINT,
                reason: "base URL cannot have paths".to_string(),
            })?
            .pop_if_empty()
            .push(prompt_id);
        let response = self.send(ENDPOINT, self.http.get(url)).await?;
        let body = self.json(ENDPOINT, response).await?;
        Ok(HistoryEntry::from_body(&body, prompt_id))
    }

    /// `GET /queue`.
    pub async fn queue(&self) -> Result<QueueSnapshot, ComfyError> {
        const ENDPOINT: &str = "/queue";
        let response = self
            .send(ENDPOINT, self.http.get(self.url(ENDPOINT)))
            .await?;
        Ok(QueueSnapshot::from_body(
            &self.json(ENDPOINT, response).await?,
        ))
    }

    /// `POST /queue {"delete": [id]}`: removes a pending prompt (a no-op otherwise).
    pub async fn delete_from_queue(&self, prompt_id: &str) -> Result<(), ComfyError> {
        const ENDPOINT: &str = "/queue";
        let body = json!({"delete": [prompt_id]});
        let response = self
            .send(ENDPOINT, self.http.post(self.url(ENDPOINT)).json(&body))
            .await?;
        self.expect_ok(ENDPOINT, response).await
    }

    /// `POST /interrupt {"prompt_id": id}`: stops the prompt if it is the running one.
    pub async fn interrupt(&self, prompt_id: &str) -> Result<(), ComfyError> {
        const ENDPOINT: &str = "/interrupt";
        let body = json!({"prompt_id": prompt_id});
        let response = self
            .send(ENDPOINT, self.http.post(self.url(ENDPOINT)).json(&body))
            .await?;
        self.expect_ok(ENDPOINT, response).await
    }

    /// `POST /free`: unloads models and frees memory (after an out-of-memory error).
    pub async fn free(&self) -> Result<(), ComfyError> {
        const ENDPOINT: &str = "/free";
        let body = json!({"unload_models": true, "free_memory": true});
        let response = self
            .send(ENDPOINT, self.http.post(self.url(ENDPOINT)).json(&body))
            .await?;
        self.expect_ok(ENDPOINT, response).await
    }

    /// `GET /view?filename=…&subfolder=…&type=…`.
    pub async fn view(
        &self,
        image: &protocol::ImageRef,
        max_bytes: u64,
    ) -> Result<ViewedFile, ComfyError> {
        const ENDPOINT: &str = "/view";
        let mut url = self.url(ENDPOINT);
        url.query_pairs_mut()
            .append_pair("filename", &image.filename)
            .append_pair("subfolder", &image.subfolder)
            .append_pair("type", &image.kind);
        let mut response = self.send(ENDPOINT, self.http.get(url)).await?;
        if !response.status().is_success() {
            metrics::comfy_failure(&self.backend, "status");
            return Err(ComfyError::Status {
                endpoint: ENDPOINT,
                status: response.status().as_u16(),
            });
        }
        let too_large = || ComfyError::Body {
            endpoint: ENDPOINT,
            reason: format!("{} is larger than {max_bytes} bytes", image.filename),
        };
        if response
            .content_length()
            .is_some_and(|length| length > max_bytes)
        {
            return Err(too_large());
        }
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_string();
        let mut data = bytes::BytesMut::new();
        while let Some(chunk) =
            response
                .chunk()
                .await
                .map_err(|source| ComfyError::Unreachable {
                    endpoint: ENDPOINT,
                    source,
                })?
        {
            if (data.len() + chunk.len()) as u64 > max_bytes {
                return Err(too_large());
            }
            data.extend_from_slice(&chunk);
        }
        Ok(ViewedFile {
            data: data.freeze(),
            content_type,
        })
    }

    /// `GET /system_stats`: the first device's VRAM.
    pub async fn system_stats(&self) -> Result<SystemStats, ComfyError> {
        const ENDPOINT: &str = "/system_stats";
        let response = self
            .send(ENDPOINT, self.http.get(self.url(ENDPOINT)))
            .await?;
        let body = self.json(ENDPOINT, response).await?;
        let device = body.pointer("/devices/0");
        let bytes = |key: &str| {
            device
                .and_then(|device| device.get(key))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        if body.get("system").is_none() {
            return Err(ComfyError::Body {
                endpoint: ENDPOINT,
                reason: "no \"system\" object".to_string(),
            });
        }
        Ok(SystemStats {
            vram_total: bytes("vram_total"),
            vram_free: bytes("vram_free"),
        })
    }

    /// Whether `/object_info/{class}` knows the node class (an unknown class is `{}`).
    pub async fn has_node(&self, class: &str) -> Result<bool, ComfyError> {
        const ENDPOINT: &str = "/object_info/{class}";
        let mut url = self.url("/object_info/");
        url.path_segments_mut()
            .map_err(|()| ComfyError::Body {
                endpoint: ENDPOINT,
                reason: "base URL cannot have paths".to_string(),
            })?
            .pop_if_empty()
            .push(class);
        let response = self.send(ENDPOINT, self.http.get(url)).await?;
        let body = self.json(ENDPOINT, response).await?;
        Ok(body.get(class).is_some_and(Value::is_object))
    }

    /// The checkpoint names: `GET /models/checkpoints`, or `CheckpointLoaderSimple`'s
    /// `ckpt_name` list from `/object_info` on servers without that route.
    pub async fn checkpoints(&self) -> Result<Vec<String>, ComfyError> {
        const ENDPOINT: &str = "/models/checkpoints";
        let response = self
            .send(ENDPOINT, self.http.get(self.url(ENDPOINT)))
            .await?;
        if response.status() != reqwest::StatusCode::NOT_FOUND {
            let body = self.json(ENDPOINT, response).await?;
            return Ok(string_list(&body));
        }
        const OBJECT_INFO: &str = "/object_info/{class}";
        let response = self
            .send(
                OBJECT_INFO,
                self.http
                    .get(self.url("/object_info/CheckpointLoaderSimple")),
            )
            .await?;
        let body = self.json(OBJECT_INFO, response).await?;
        Ok(body
            .pointer("/CheckpointLoaderSimple/input/required/ckpt_name/0")
            .map(string_list)
            .unwrap_or_default())
    }
}

fn string_list(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The shared HTTP client: pooled keep-alive connections, a connect and a request timeout.
pub fn http_client(request_timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2).min(request_timeout))
        .timeout(request_timeout)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
}
