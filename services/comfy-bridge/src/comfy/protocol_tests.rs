//! Parsing tests on messages recorded from a real ComfyUI 0.3.64 (`tests/fixtures/`).

use serde_json::Value;

use super::*;

fn fixture(text: &str) -> Value {
    serde_json::from_str(text).expect("fixture is JSON")
}

fn ws(text: &str) -> Vec<WsMessage> {
    fixture(text)
        .as_array()
        .expect("a list of messages")
        .iter()
        .map(|message| WsMessage::parse(&message.to_string()).expect("type + data"))
        .collect()
}

const SUCCESS_ID: &str = "c5211e91-b01b-4b97-8b99-fe0dc269d683";

#[test]
fn the_recorded_success_run_ends_with_executing_null() {
    let messages = ws(include_str!("../../tests/fixtures/success_ws.json"));
    assert_eq!(
        messages.first(),
        Some(&WsMessage::Status {
            queue_remaining: Some(1)
        })
    );
    assert_eq!(
        messages.last(),
        Some(&WsMessage::Executing {
            prompt_id: Some(SUCCESS_ID.to_string()),
            node: None
        })
    );
    let executed: Vec<_> = messages
        .iter()
        .filter_map(|message| match message {
            WsMessage::Executed { node, images, .. } => Some((node.clone(), images.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        executed,
        [(
            "9".to_string(),
            vec![ImageRef {
                filename: "proto_success_00001_.png".to_string(),
                subfolder: String::new(),
                kind: "output".to_string(),
            }]
        )]
    );
    assert!(
        messages
            .iter()
            .any(|m| matches!(m, WsMessage::Success { prompt_id } if prompt_id == SUCCESS_ID))
    );
    assert!(
        messages
            .iter()
            .any(|m| matches!(m, WsMessage::ProgressState { finished, .. } if finished.len() == 3))
    );
}

#[test]
fn the_recorded_history_lists_outputs_and_success() {
    let body = fixture(include_str!("../../tests/fixtures/success_history.json"));
    let entry = HistoryEntry::from_body(&body, SUCCESS_ID).expect("entry");
    assert_eq!(entry.outcome, HistoryOutcome::Success);
    assert_eq!(entry.outputs.len(), 1);
    assert_eq!(entry.outputs[0].0, "9");
    assert_eq!(entry.outputs[0].1[0].filename, "proto_success_00001_.png");
    assert!(entry.cached_nodes.is_empty());
    assert_eq!(
        HistoryEntry::from_body(&serde_json::json!({}), SUCCESS_ID),
        None
    );
}

#[test]
fn the_recorded_runtime_error_carries_the_exception() {
    let messages = ws(include_str!("../../tests/fixtures/runtime_error_ws.json"));
    let error = messages
        .iter()
        .find_map(|m| match m {
            WsMessage::Error { error, .. } => Some(error.clone()),
            _ => None,
        })
        .expect("execution_error");
    assert_eq!(error.node_id, "1");
    assert_eq!(error.node_type, "LoadImage");
    assert_eq!(error.exception_type, "PIL.UnidentifiedImageError");
    assert!(
        error
            .exception_message
            .starts_with("cannot identify image file")
    );
    assert!(!error.is_out_of_memory());
    let body = fixture(include_str!(
        "../../tests/fixtures/runtime_error_history.json"
    ));
    let entry =
        HistoryEntry::from_body(&body, "336da818-9072-48c3-ad4d-af694047b097").expect("entry");
    assert_eq!(entry.outcome, HistoryOutcome::Error(error));
    assert!(entry.outputs.is_empty());
}

#[test]
fn the_recorded_interrupt_is_an_interrupted_history() {
    let messages = ws(include_str!("../../tests/fixtures/interrupt_ws.json"));
    assert!(
        messages
            .iter()
            .any(|m| matches!(m, WsMessage::Interrupted { .. }))
    );
    let body = fixture(include_str!("../../tests/fixtures/interrupt_history.json"));
    let entry =
        HistoryEntry::from_body(&body, "11a27f8e-2ab7-4164-945f-77965610901d").expect("entry");
    assert_eq!(entry.outcome, HistoryOutcome::Interrupted);
}

#[test]
fn the_recorded_cached_rerun_has_executed_but_no_executing_node() {
    let messages = ws(include_str!("../../tests/fixtures/cached_ws.json"));
    let cached = messages
        .iter()
        .find_map(|m| match m {
            WsMessage::ExecutionCached { nodes, .. } => Some(nodes.clone()),
            _ => None,
        })
        .expect("execution_cached");
    assert_eq!(cached, ["1", "2", "9"]);
    assert!(
        messages
            .iter()
            .any(|m| matches!(m, WsMessage::Executed { .. }))
    );
    let executing_nodes = messages
        .iter()
        .filter(|m| matches!(m, WsMessage::Executing { node: Some(_), .. }))
        .count();
    assert_eq!(executing_nodes, 0);
}

#[test]
fn the_reconnect_replay_has_no_prompt_id() {
    let messages = ws(include_str!("../../tests/fixtures/reconnect_ws.json"));
    assert_eq!(
        messages[1],
        WsMessage::Executing {
            prompt_id: None,
            node: Some("10".to_string())
        }
    );
    assert_eq!(messages[1].prompt_id(), None);
}

#[test]
fn the_recorded_queue_lists_running_and_pending_ids() {
    let queue = QueueSnapshot::from_body(&fixture(include_str!(
        "../../tests/fixtures/queue_busy.json"
    )));
    assert_eq!(queue.running, ["d4460704-15a0-4e0a-8393-957c29dcda96"]);
    assert_eq!(queue.pending.len(), 3);
    assert!(queue.contains("1642af51-54ff-4c00-b67c-80ad9593e839"));
    assert!(!queue.is_running("1642af51-54ff-4c00-b67c-80ad9593e839"));
    assert!(!queue.contains("nope"));
}

#[test]
fn recorded_rejections_keep_every_node_error() {
    let two = PromptRejection::from_body(include_str!(
        "../../tests/fixtures/rejected_c10_two_errors_in_two_nodes.json"
    ));
    assert_eq!(two.kind, "prompt_outputs_failed_validation");
    assert_eq!(two.node_errors.len(), 2);
    assert_eq!(two.node_errors[0].node_id, "1");
    assert_eq!(two.node_errors[0].class_type, "EmptyImage");
    assert_eq!(two.node_errors[0].input_name, "width");
    assert_eq!(two.node_errors[0].message, "Value -5 smaller than min of 1");
    assert_eq!(two.node_errors[1].input_name, "blur_radius");
    let unknown = PromptRejection::from_body(include_str!(
        "../../tests/fixtures/rejected_a_unknown_node_class.json"
    ));
    assert_eq!(unknown.kind, "invalid_prompt");
    assert!(unknown.message.contains("NoSuchNode"));
    assert!(unknown.node_errors.is_empty());
    let garbage = PromptRejection::from_body("500 Internal Server Error");
    assert_eq!(garbage.kind, "unknown");
}

#[test]
fn out_of_memory_is_recognised_by_type_or_message() {
    let by_type = ExecutionError {
        exception_type: "torch.OutOfMemoryError".to_string(),
        ..ExecutionError::default()
    };
    let by_message = ExecutionError {
        exception_type: "RuntimeError".to_string(),
        exception_message: "CUDA out of memory. Tried to allocate 2 GiB".to_string(),
        ..ExecutionError::default()
    };
    let allocation = ExecutionError {
        exception_message: "Allocation on device ".to_string(),
        ..ExecutionError::default()
    };
    assert!(by_type.is_out_of_memory());
    assert!(by_message.is_out_of_memory());
    assert!(allocation.is_out_of_memory());
}
