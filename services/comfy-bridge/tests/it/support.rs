//! Starting the bridge in-process on port 0 against in-process ComfyUI simulators, and
//! reading its streams with deadlines.

use std::net::SocketAddr;
use std::time::Duration;

use easel_comfy_bridge::{BridgeConfig, Config};
use easel_proto::bridge::v1::bridge_service_client::BridgeServiceClient;
use easel_proto::bridge::v1::run_workflow_request::Workflow;
use easel_proto::bridge::v1::run_workflow_response::Event;
use easel_proto::bridge::v1::{ListBackendsRequest, RunWorkflowRequest};
use easel_proto::jobs::v1::TextToImage;
use easel_runtime::Shutdown;
use easel_runtime::config::{ServerConfig, TelemetryConfig};
use easel_runtime::service::Listeners;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// Generous bound for anything a test waits on.
pub const WAIT: Duration = Duration::from_secs(30);

pub type Client = BridgeServiceClient<Channel>;

/// A bridge running in-process.
pub struct Bridge {
    pub client: Client,
    pub admin: SocketAddr,
    shutdown: Shutdown,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// Test settings: fast health checks, short silences and cool-downs.
pub fn fast_config(urls: &[String]) -> BridgeConfig {
    let mut config = BridgeConfig::for_urls(urls).expect("valid urls");
    config.health_interval = Duration::from_millis(50);
    config.silence_timeout = Duration::from_millis(300);
    config.breaker_cooldown = Duration::from_millis(300);
    config.queue_timeout = Duration::from_secs(10);
    config.request_timeout = Duration::from_secs(5);
    config
}

/// Starts the bridge and waits until every backend passed a health check.
pub async fn start(bridge: BridgeConfig) -> Bridge {
    let expected = bridge.backends.len();
    let listeners = Listeners::ephemeral().await.expect("bind");
    let grpc = listeners.grpc_addr().expect("grpc addr");
    let admin = listeners.admin_addr().expect("admin addr");
    let shutdown = Shutdown::new(Duration::from_secs(2));
    let config = Config {
        server: ServerConfig::ephemeral(),
        telemetry: TelemetryConfig::quiet(easel_comfy_bridge::SERVICE_NAME),
        bridge,
    };
    tokio::spawn(easel_comfy_bridge::run(config, listeners, shutdown.clone()));
    let channel = Channel::from_shared(format!("http://{grpc}"))
        .expect("url")
        .connect_lazy();
    let client = BridgeServiceClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let bridge = Bridge {
        client,
        admin,
        shutdown,
    };
    let mut client = bridge.client.clone();
    wait_for("every backend healthy", || {
        let mut client = client.clone();
        async move {
            let backends = client
                .list_backends(ListBackendsRequest {})
                .await
                .ok()?
                .into_inner()
                .backends;
            // Connected too: images stream over the WebSocket.
            (backends
                .iter()
                .filter(|b| b.healthy && b.websocket_connected)
                .count()
                == expected)
                .then_some(())
        }
    })
    .await;
    let _ = &mut client;
    bridge
}

/// Polls `check` until it returns `Some`, failing the test after [`WAIT`].
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A text-to-image request with few steps.
pub fn text(run_id: &str, prompt: &str, steps: u32) -> RunWorkflowRequest {
    RunWorkflowRequest {
        run_id: run_id.to_string(),
        workflow: Some(Workflow::TextToImage(TextToImage {
            prompt: prompt.to_string(),
            width: 64,
            height: 48,
            steps,
            ..TextToImage::default()
        })),
        timeout: None,
        exclude_backends: vec![],
        ..Default::default()
    }
}

/// A started run's stream.
pub type Events = tonic::Streaming<easel_proto::bridge::v1::RunWorkflowResponse>;

/// The next event other than `waiting` (which tests that care read with [`next_any`]),
/// failing the test after [`WAIT`].
pub async fn next(stream: &mut Events) -> Option<Event> {
    loop {
        match next_any(stream).await {
            Some(Event::Waiting(_)) => continue,
            other => return other,
        }
    }
}

/// The next event, `waiting` included, failing the test after [`WAIT`].
pub async fn next_any(stream: &mut Events) -> Option<Event> {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("an event in time")
        .expect("no stream error")
        .map(|response| response.event.expect("an event"))
}

/// Every remaining event.
pub async fn rest(stream: &mut Events) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(event) = next(stream).await {
        events.push(event);
    }
    events
}

/// Starts a run and reads it to its end, without its `waiting` events; a status before
/// `queued` (at the call, or after `waiting` events) is the error.
pub async fn run(
    client: &mut Client,
    request: RunWorkflowRequest,
) -> Result<Vec<Event>, tonic::Status> {
    let mut stream = client.run_workflow(request).await?.into_inner();
    let mut events = Vec::new();
    loop {
        let message = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("an event in time")?;
        match message.map(|response| response.event.expect("an event")) {
            Some(Event::Waiting(_)) => {}
            Some(event) => events.push(event),
            None => return Ok(events),
        }
    }
}

/// The last event, which must be `completed` or `failed`.
pub fn last(events: &[Event]) -> &Event {
    let last = events.last().expect("events");
    assert!(
        matches!(last, Event::Completed(_) | Event::Failed(_)),
        "{last:?}"
    );
    last
}

/// The `failed` event at the end.
pub fn failed(events: &[Event]) -> easel_proto::bridge::v1::Failed {
    match last(events) {
        Event::Failed(failed) => failed.clone(),
        other => panic!("expected failed, got {other:?}"),
    }
}

/// The bridge's `/metrics` page.
pub async fn metrics(bridge: &Bridge) -> String {
    reqwest::get(format!("http://{}/metrics", bridge.admin))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// A TCP proxy whose connections can be cut at once (a network fault between the bridge and
/// ComfyUI; ComfyUI itself keeps running).
pub struct Proxy {
    pub addr: SocketAddr,
    connections: std::sync::Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let tracked = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    let _ = inbound.shutdown().await;
                });
                tracked.lock().expect("lock").push(task);
            }
        });
        Proxy {
            addr,
            connections,
            accept,
        }
    }

    /// Cuts every open connection (sockets dropped, no WebSocket close frame).
    pub fn sever(&self) {
        for task in self.connections.lock().expect("lock").drain(..) {
            task.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.sever();
    }
}
