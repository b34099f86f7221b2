//! Posting graphs straight to the simulator, as a client of ComfyUI would: the baseline.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use easel_proto::jobs::v1::TextToImage;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::stack::CHECKPOINT;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A client of one simulator: HTTP plus its WebSocket.
pub struct Direct {
    http: reqwest::Client,
    socket: Socket,
    base: String,
    client_id: String,
}

fn seed() -> u64 {
    u64::from(uuid::Uuid::new_v4().as_u128() as u32)
}

impl Direct {
    /// Connects to the simulator at `base` (with `ws_url` its WebSocket URL for a client id).
    pub async fn connect(base: String, ws_url: impl Fn(&str) -> String) -> anyhow::Result<Direct> {
        let client_id = uuid::Uuid::new_v4().to_string();
        let (socket, _) = tokio_tungstenite::connect_async(ws_url(&client_id)).await?;
        Ok(Direct {
            http: reqwest::Client::new(),
            socket,
            base,
            client_id,
        })
    }

    /// Posts the graph the bridge's template builds for `request`; returns the prompt id.
    pub async fn post(&self, request: &TextToImage) -> anyhow::Result<String> {
        let graph = easel_comfy_bridge::template::text_to_image(request, Some(CHECKPOINT), seed)
            .map_err(|error| anyhow::anyhow!("{error}"))?
            .graph;
        let prompt_id = uuid::Uuid::new_v4().to_string();
        let body = json!({"prompt": graph, "client_id": self.client_id, "prompt_id": prompt_id});
        let response = self
            .http
            .post(format!("{}/prompt", self.base))
            .json(&body)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("POST /prompt: {}", response.status());
        }
        Ok(prompt_id)
    }

    /// Reads the WebSocket until one of `waiting` finishes; returns it with its first image.
    async fn next_finished(
        &mut self,
        waiting: &HashSet<String>,
        images: &mut std::collections::HashMap<String, String>,
    ) -> anyhow::Result<(String, Option<String>)> {
        while let Some(message) = self.socket.next().await {
            let Message::Text(text) = message? else {
                continue;
            };
            let value: Value = serde_json::from_str(text.as_str())?;
            let data = &value["data"];
            let Some(prompt_id) = data["prompt_id"].as_str() else {
                continue;
            };
            if !waiting.contains(prompt_id) {
                continue;
            }
            match value["type"].as_str() {
                Some("executed") => {
                    if let Some(filename) = data["output"]["images"][0]["filename"].as_str() {
                        images.insert(prompt_id.to_string(), filename.to_string());
                    }
                }
                Some("executing") if data["node"].is_null() => {
                    return Ok((prompt_id.to_string(), images.remove(prompt_id)));
                }
                Some("execution_error") => bail!("prompt {prompt_id} failed: {data}"),
                _ => {}
            }
        }
        bail!("the WebSocket closed")
    }

    /// One prompt end to end: post, wait on the WebSocket, download the image (returned).
    pub async fn run_one(&mut self, request: &TextToImage) -> anyhow::Result<Vec<u8>> {
        let prompt_id = self.post(request).await?;
        let waiting = HashSet::from([prompt_id]);
        let (_, filename) = self
            .next_finished(&waiting, &mut Default::default())
            .await?;
        let filename = filename.context("no output image")?;
        let bytes = self
            .http
            .get(format!(
                "{}/view?filename={filename}&subfolder=&type=output",
                self.base
            ))
            .send()
            .await?
            .bytes()
            .await?;
        if bytes.is_empty() {
            bail!("empty image");
        }
        Ok(bytes.to_vec())
    }

    /// Posts all the prompts at once (ComfyUI queues them) and waits until every one finished;
    /// returns the time from the first post to the last completion.
    pub async fn drain(&mut self, requests: &[TextToImage]) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut waiting = HashSet::new();
        for request in requests {
            waiting.insert(self.post(request).await?);
        }
        let mut images = std::collections::HashMap::new();
        while !waiting.is_empty() {
            let (done, _) = self.next_finished(&waiting, &mut images).await?;
            waiting.remove(&done);
        }
        Ok(started.elapsed())
    }
}
