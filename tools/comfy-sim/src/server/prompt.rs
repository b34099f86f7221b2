//! `/prompt`, `/queue`, `/interrupt` and `/history`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::{empty, json_response, server_error};
use crate::config::RequestControl;
use crate::pyjson::py_str;
use crate::state::{PromptNumber, QueueItem, Shared};
use crate::validate::{self, Context};

/// `extra_data` keys ComfyUI strips before storing a prompt.
const SENSITIVE_KEYS: [&str; 2] = ["api_key_comfy_org", "auth_token_comfy_org"];

fn truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null | Value::Bool(false)) => false,
        Some(Value::Number(number)) => number.as_f64().is_some_and(|number| number != 0.0),
        Some(Value::String(text)) => !text.is_empty(),
        Some(Value::Array(items)) => !items.is_empty(),
        Some(Value::Object(map)) => !map.is_empty(),
        Some(Value::Bool(true)) => true,
    }
}

fn string_list(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| items.iter().map(py_str).collect())
        .unwrap_or_default()
}

/// GET /prompt.
pub async fn get_prompt(State(shared): State<Arc<Shared>>) -> Response {
    let remaining = shared.lock_queue().remaining();
    json_response(
        StatusCode::OK,
        &json!({"exec_info": {"queue_remaining": remaining}}),
    )
}

/// POST /prompt: number the request, validate, queue.
pub async fn post_prompt(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return server_error();
    };
    let object = request.as_object();
    let number = match object.and_then(|object| object.get("number")) {
        Some(explicit) => match explicit
            .as_f64()
            .or_else(|| py_str(explicit).trim().parse().ok())
        {
            Some(number) => PromptNumber::Explicit(number),
            None => return server_error(),
        },
        None => {
            let mut queue = shared.lock_queue();
            let counter = queue.counter;
            queue.counter += 1;
            if truthy(object.and_then(|object| object.get("front"))) {
                PromptNumber::Counter(-counter)
            } else {
                PromptNumber::Counter(counter)
            }
        }
    };
    let Some((object, prompt)) =
        object.and_then(|object| object.get("prompt").map(|prompt| (object, prompt)))
    else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided", "extra_info": {}}, "node_errors": {}}),
        );
    };
    let Value::Object(mut graph) = prompt.clone() else {
        // ComfyUI crashes on a non-dict prompt: aiohttp's 500 page.
        return server_error();
    };
    let prompt_id = object
        .get("prompt_id")
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), py_str);
    let partial = object
        .get("partial_execution_targets")
        .filter(|targets| targets.is_array())
        .map(|targets| string_list(Some(targets)));
    let dynamic = shared.dynamic_lists();
    let context = Context {
        catalog: &shared.catalog,
        dynamic: &dynamic,
        dirs: &shared.dirs,
    };
    let validated = match validate::validate_prompt(&mut graph, partial.as_deref(), &context) {
        Ok(validated) => validated,
        Err(rejected) => {
            tracing::info!(prompt_id = %prompt_id, error_type = %rejected.error["type"], "prompt rejected");
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": rejected.error, "node_errors": rejected.node_errors}),
            );
        }
    };
    let mut extra_data: Map<String, Value> = object
        .get("extra_data")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(client_id) = object.get("client_id") {
        extra_data.insert("client_id".to_owned(), client_id.clone());
    }
    for key in SENSITIVE_KEYS {
        extra_data.remove(key);
    }
    // Request controls are test hooks in user-controlled text: ignored unless a test opted in.
    let control = if shared.config.honour_request_faults {
        RequestControl::from_request(&extra_data, &graph)
    } else {
        RequestControl::default()
    };
    let refuse = control.refuse_connections;
    let item = Arc::new(QueueItem {
        number,
        prompt_id: prompt_id.clone(),
        graph,
        extra_data,
        outputs: validated.outputs,
        control,
    });
    {
        let mut queue = shared.lock_queue();
        queue.push(item);
        shared.publish_status(&queue);
    }
    shared.queue_changed.notify_one();
    tracing::info!(prompt_id = %prompt_id, "prompt queued");
    if let Some(duration) = refuse {
        let _ = shared.refuse.send(duration);
    }
    json_response(
        StatusCode::OK,
        &json!({"prompt_id": prompt_id, "number": number.to_json(), "node_errors": validated.node_errors}),
    )
}

/// GET /queue: running and pending items, pending in heap order.
pub async fn get_queue(State(shared): State<Arc<Shared>>) -> Response {
    let queue = shared.lock_queue();
    let running: Vec<Value> = queue.running.iter().map(|item| item.to_json()).collect();
    let pending: Vec<Value> = queue.pending().iter().map(|item| item.to_json()).collect();
    drop(queue);
    json_response(
        StatusCode::OK,
        &json!({"queue_running": running, "queue_pending": pending}),
    )
}

/// POST /queue: `{"clear": true}` and/or `{"delete": [ids]}`; always an empty 200.
pub async fn post_queue(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return server_error();
    };
    let mut queue = shared.lock_queue();
    if truthy(request.get("clear")) {
        queue.clear();
        shared.publish_status(&queue);
    }
    if let Some(delete) = request.get("delete") {
        let ids = string_list(Some(delete));
        if queue.delete(&ids) {
            shared.publish_status(&queue);
        }
    }
    drop(queue);
    empty(StatusCode::OK)
}

/// POST /interrupt: global, or only the running prompt when `prompt_id` names it.
pub async fn post_interrupt(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let target = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|request| request.get("prompt_id").map(py_str));
    let queue = shared.lock_queue();
    if let Some(running) = &queue.running
        && target
            .as_ref()
            .is_none_or(|target| *target == running.prompt_id)
    {
        tracing::info!(prompt_id = %running.prompt_id, "interrupt requested");
        shared.interrupt.store(true, Ordering::SeqCst);
    }
    drop(queue);
    empty(StatusCode::OK)
}

/// GET /history with `max_items` / `offset`.
pub async fn get_history(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let mut max_items = None;
    let mut offset = -1i64;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "max_items" => match value.trim().parse::<i64>() {
                Ok(number) => max_items = Some(usize::try_from(number.max(0)).unwrap_or(0)),
                Err(_) => return server_error(),
            },
            "offset" => match value.trim().parse::<i64>() {
                Ok(number) => offset = number,
                Err(_) => return server_error(),
            },
            _ => {}
        }
    }
    let page = shared.lock_history().page(max_items, offset);
    json_response(StatusCode::OK, &Value::Object(page))
}

/// GET /history/{id}: the entry, or `{}` for an unknown id.
pub async fn get_history_item(
    State(shared): State<Arc<Shared>>,
    Path(prompt_id): Path<String>,
) -> Response {
    let entry = shared.lock_history().get(&prompt_id).cloned();
    let body = match entry {
        Some(entry) => json!({ prompt_id: entry }),
        None => json!({}),
    };
    json_response(StatusCode::OK, &body)
}

/// POST /history: `{"clear": true}` / `{"delete": [ids]}`.
pub async fn post_history(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return server_error();
    };
    let mut history = shared.lock_history();
    if truthy(request.get("clear")) {
        history.clear();
    }
    if let Some(delete) = request.get("delete") {
        history.delete(&string_list(Some(delete)));
    }
    drop(history);
    empty(StatusCode::OK)
}
