//! The HTTP server: a hand-rolled accept loop (so the simulator can drop every socket at once and
//! stop listening, like a dying process), the router (every route also under `/api`) and
//! ComfyUI's middleware behaviour (Origin check, OPTIONS, `Server` header).

mod files;
mod misc;
mod prompt;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::SimError;
use crate::pyjson;
use crate::state::Shared;

/// The per-request HTTP delay header.
pub const DELAY_HEADER: &str = "x-easel-sim-delay-ms";

/// A JSON response serialised the Python way.
pub fn json_response(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        pyjson::to_string(value),
    )
        .into_response()
}

/// An empty response (`Content-Length: 0`, no Content-Type).
pub fn empty(status: StatusCode) -> Response {
    (status, Body::empty()).into_response()
}

/// aiohttp's plain-text 500 page (malformed JSON bodies and the like).
pub fn server_error() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CONNECTION, "close"),
        ],
        "500 Internal Server Error\n\nServer got itself in trouble",
    )
        .into_response()
}

fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/prompt", get(prompt::get_prompt).post(prompt::post_prompt))
        .route("/queue", get(prompt::get_queue).post(prompt::post_queue))
        .route("/interrupt", post(prompt::post_interrupt))
        .route(
            "/history",
            get(prompt::get_history).post(prompt::post_history),
        )
        .route("/history/{prompt_id}", get(prompt::get_history_item))
        .route("/view", get(files::view))
        .route("/upload/image", post(files::upload_image))
        .route("/object_info", get(misc::object_info))
        .route("/object_info/{class_type}", get(misc::object_info_class))
        .route("/system_stats", get(misc::system_stats))
        .route("/models", get(misc::models))
        .route("/models/{folder}", get(misc::models_folder))
        .route("/features", get(misc::features))
        .route("/embeddings", get(misc::empty_list))
        .route("/extensions", get(misc::empty_list))
        .route("/free", post(misc::free))
        .route("/ws", get(misc::websocket))
}

/// The application: routes at `/` and `/api`, the 404 fallback and ComfyUI's middleware.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .merge(routes())
        .nest("/api", routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(110 * 1024 * 1024))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            comfy_middleware,
        ))
        .with_state(shared)
}

/// aiohttp's static handler miss: 404, octet-stream, empty chunked body.
async fn not_found() -> Response {
    let body = Body::from_stream(futures::stream::empty::<Result<Bytes, Infallible>>());
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        body,
    )
        .into_response()
}

async fn comfy_middleware(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let extra_delay = request
        .headers()
        .get(DELAY_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_millis);
    let delay = shared.config.http_delay + extra_delay;
    if !delay.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shared.kill.cancelled() => {}
        }
    }
    let mut response = if origin_forbidden(&request) {
        tracing::warn!("request with non matching host and origin, returning 403");
        empty(StatusCode::FORBIDDEN)
    } else if request.method() == Method::OPTIONS {
        empty(StatusCode::OK)
    } else {
        next.run(request).await
    };
    response.headers_mut().insert(
        header::SERVER,
        HeaderValue::from_static("Python/3.11 aiohttp/3.14.5"),
    );
    response
}

/// Splits a netloc into (hostname, port), handling `[v6]:port`.
fn split_host(netloc: &str) -> (String, Option<u16>) {
    let netloc = netloc.rsplit('@').next().unwrap_or(netloc);
    if let Some(rest) = netloc.strip_prefix('[') {
        let (host, after) = rest.split_once(']').unwrap_or((rest, ""));
        let port = after.strip_prefix(':').and_then(|port| port.parse().ok());
        return (host.to_ascii_lowercase(), port);
    }
    match netloc.rsplit_once(':') {
        Some((host, port)) => (host.to_ascii_lowercase(), port.parse().ok()),
        None => (netloc.to_ascii_lowercase(), None),
    }
}

/// ComfyUI's `origin_only_middleware`: with a loopback Host, Origin must name the same host.
fn origin_forbidden(request: &Request) -> bool {
    let headers = request.headers();
    let (Some(host), Some(origin)) = (
        headers
            .get(header::HOST)
            .and_then(|value| value.to_str().ok()),
        headers
            .get(header::ORIGIN)
            .and_then(|value| value.to_str().ok()),
    ) else {
        return false;
    };
    let host_full = host.to_ascii_lowercase();
    let origin_netloc = origin
        .split_once("://")
        .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""))
        .to_ascii_lowercase();
    let (host_name, host_port) = split_host(&host_full);
    let (origin_name, origin_port) = split_host(&origin_netloc);
    let loopback = host_name == "localhost"
        || host_name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback());
    let host_domain = if origin_port.is_none() {
        host_name
    } else {
        host_full
    };
    let origin_domain = if host_port.is_none() {
        origin_name
    } else {
        origin_netloc
    };
    loopback && !host_domain.is_empty() && !origin_domain.is_empty() && host_domain != origin_domain
}

/// Accepts connections until shutdown or death. Death drops every connection at once (no
/// close frames, no responses) and closes the listener so new connections are refused.
pub async fn serve(
    shared: Arc<Shared>,
    listener: Option<TcpListener>,
    address: std::net::SocketAddr,
    mut refuse: mpsc::UnboundedReceiver<Duration>,
) -> Result<(), SimError> {
    let app = router(shared.clone());
    let tracker = TaskTracker::new();
    let mut listener = listener;
    loop {
        let accept = async {
            match &listener {
                Some(listener) => listener.accept().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shared.kill.cancelled() => break,
            () = shared.shutdown.cancelled() => break,
            Some(duration) = refuse.recv() => {
                tracing::info!(duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX), "refusing connections");
                listener = None;
                tokio::select! {
                    () = tokio::time::sleep(duration) => {}
                    () = shared.kill.cancelled() => break,
                    () = shared.shutdown.cancelled() => break,
                }
                listener = Some(TcpListener::bind(address).await.map_err(SimError::Io)?);
                tracing::info!(%address, "listening again");
            }
            accepted = accept => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (app, shared) = (app.clone(), shared.clone());
                tracker.spawn(async move {
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let connection = builder.serve_connection_with_upgrades(
                        TokioIo::new(stream),
                        TowerToHyperService::new(app),
                    );
                    tokio::select! {
                        result = connection => {
                            if let Err(error) = result {
                                tracing::debug!(%peer, %error, "connection ended with an error");
                            }
                        }
                        () = shared.kill.cancelled() => {}
                        () = shared.shutdown.cancelled() => {}
                    }
                });
            }
        }
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
    Ok(())
}
