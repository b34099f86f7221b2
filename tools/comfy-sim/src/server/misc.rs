//! The read-only endpoints (`/object_info`, `/system_stats`, `/models`, …), `/free` and the
//! WebSocket upgrade.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::{empty, json_response, server_error};
use crate::state::Shared;
use crate::ws;

/// The model folders ComfyUI 0.3.64 lists.
const MODEL_FOLDERS: [&str; 20] = [
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "custom_nodes",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
];

const RAM_TOTAL: u64 = 25_325_268_992;
const RAM_FREE: u64 = 24_243_978_240;

/// GET /object_info.
pub async fn object_info(State(shared): State<Arc<Shared>>) -> Response {
    let info = shared.catalog.object_info(&shared.dynamic_lists());
    json_response(StatusCode::OK, &Value::Object(info))
}

/// GET /object_info/{class}: `{}` for an unknown class.
pub async fn object_info_class(
    State(shared): State<Arc<Shared>>,
    Path(class_type): Path<String>,
) -> Response {
    let body = shared
        .catalog
        .class_info(&class_type, &shared.dynamic_lists())
        .map_or_else(|| json!({}), |info| json!({ class_type: info }));
    json_response(StatusCode::OK, &body)
}

/// GET /system_stats: the recorded shape; a configured VRAM makes it a CUDA device.
pub async fn system_stats(State(shared): State<Arc<Shared>>) -> Response {
    let device = match shared.config.vram {
        Some((total, free)) => json!({
            "name": "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync", "type": "cuda", "index": 0,
            "vram_total": total, "vram_free": free, "torch_vram_total": total, "torch_vram_free": free,
        }),
        None => json!({
            "name": "cpu", "type": "cpu", "index": null,
            "vram_total": RAM_TOTAL, "vram_free": RAM_FREE, "torch_vram_total": RAM_TOTAL, "torch_vram_free": RAM_FREE,
        }),
    };
    let body = json!({
        "system": {
            "os": "posix",
            "ram_total": RAM_TOTAL,
            "ram_free": RAM_FREE,
            "comfyui_version": "0.3.64",
            "required_frontend_version": "1.27.10",
            "installed_templates_version": "0.1.95",
            "required_templates_version": "0.1.95",
            "python_version": "3.11.7 (main, May  9 2026, 07:35:25) [GCC 12.2.0]",
            "pytorch_version": "2.15.0+cu132",
            "embedded_python": false,
            "argv": ["main.py", "--listen", "127.0.0.1", "--disable-auto-launch", "--output-directory",
                     shared.dirs.output.display().to_string(), "--input-directory", shared.dirs.input.display().to_string()],
        },
        "devices": [device],
    });
    json_response(StatusCode::OK, &body)
}

/// GET /models.
pub async fn models() -> Response {
    json_response(StatusCode::OK, &json!(MODEL_FOLDERS))
}

/// GET /models/{folder}: the configured checkpoints, `[]` for other known folders, else 404.
pub async fn models_folder(
    State(shared): State<Arc<Shared>>,
    Path(folder): Path<String>,
) -> Response {
    if folder == "checkpoints" {
        return json_response(StatusCode::OK, &json!(shared.config.checkpoints));
    }
    if MODEL_FOLDERS.contains(&folder.as_str()) {
        return json_response(StatusCode::OK, &json!([]));
    }
    empty(StatusCode::NOT_FOUND)
}

/// GET /features.
pub async fn features() -> Response {
    json_response(StatusCode::OK, &ws::server_features())
}

/// GET /embeddings and /extensions: `[]`.
pub async fn empty_list() -> Response {
    json_response(StatusCode::OK, &json!([]))
}

/// POST /free: accepted and ignored (there is nothing to unload).
pub async fn free(body: Bytes) -> Response {
    if serde_json::from_slice::<Value>(&body).is_err() {
        return server_error();
    }
    empty(StatusCode::OK)
}

/// GET /ws?clientId=…
pub async fn websocket(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let client_id = query.get("clientId").cloned();
    upgrade.on_upgrade(move |socket| ws::serve_socket(shared, socket, client_id))
}
