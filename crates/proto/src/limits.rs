//! Limits on messages that every side of the contract checks the same way.

use pbjson_types::value::Kind;
use pbjson_types::{Struct, Value};

use crate::jobs::v1::{SubmitJobRequest, Workflow, job_spec};

/// The deepest a raw workflow document may nest, counting objects and arrays: the graph is
/// level 1, a node 2, its `inputs` 3, a link such as `["4", 0]` 4. Real ComfyUI graphs stay
/// under 10.
///
/// One limit for every door: the gateway refuses deeper documents (REST, gRPC, gRPC-web) and
/// the jobs service does again. It sits well below what the decoders allow, so a document is
/// either accepted everywhere or refused with this limit's name: prost refuses a message nested
/// past 100 levels, and each JSON level is two protobuf levels (`Struct` → `Value`), so about 45
/// JSON levels reach it; serde_json stops at 128.
pub const MAX_WORKFLOW_DEPTH: usize = 32;

/// How deep `value` nests (0 for a scalar, 1 for a flat object or list), counted without
/// recursion so no input can exhaust the stack.
pub fn value_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((value, depth)) = stack.pop() {
        match &value.kind {
            Some(Kind::StructValue(object)) => {
                deepest = deepest.max(depth + 1);
                stack.extend(object.fields.values().map(|child| (child, depth + 1)));
            }
            Some(Kind::ListValue(list)) => {
                deepest = deepest.max(depth + 1);
                stack.extend(list.values.iter().map(|child| (child, depth + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// How deep an object nests (1 when flat).
pub fn struct_depth(object: &Struct) -> usize {
    1 + object
        .fields
        .values()
        .map(value_depth)
        .max()
        .unwrap_or_default()
}

/// The field of a submit whose workflow document nests deeper than [`MAX_WORKFLOW_DEPTH`]
/// (`spec.workflow.graph`, or an override's value), if one does.
pub fn too_deep_workflow_field(request: &SubmitJobRequest) -> Option<String> {
    match request.spec.as_ref().and_then(|spec| spec.kind.as_ref()) {
        Some(job_spec::Kind::Workflow(workflow)) => too_deep_field(workflow),
        _ => None,
    }
}

/// [`too_deep_workflow_field`] of the workflow itself.
pub fn too_deep_field(workflow: &Workflow) -> Option<String> {
    if workflow
        .graph
        .as_ref()
        .is_some_and(|graph| struct_depth(graph) > MAX_WORKFLOW_DEPTH)
    {
        return Some("spec.workflow.graph".to_string());
    }
    workflow
        .overrides
        .iter()
        .position(|item| {
            item.value
                .as_ref()
                .is_some_and(|value| value_depth(value) > MAX_WORKFLOW_DEPTH)
        })
        .map(|index| format!("spec.workflow.overrides[{index}].value"))
}

/// The description of a too-deep field, naming the limit.
pub fn too_deep_description() -> String {
    format!("nests deeper than {MAX_WORKFLOW_DEPTH} levels, the limit of a workflow document")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::v1::{InputOverride, JobSpec};

    /// `{"a": {"a": … 1}}` nested `depth` objects deep.
    fn nested(depth: usize) -> Struct {
        let mut value = Value {
            kind: Some(Kind::NumberValue(1.0)),
        };
        for _ in 1..depth {
            let mut object = Struct::default();
            object.fields.insert("a".to_string(), value);
            value = Value {
                kind: Some(Kind::StructValue(object)),
            };
        }
        let mut root = Struct::default();
        root.fields.insert("a".to_string(), value);
        root
    }

    fn submit(graph: Struct, overrides: Vec<InputOverride>) -> SubmitJobRequest {
        SubmitJobRequest {
            spec: Some(JobSpec {
                kind: Some(job_spec::Kind::Workflow(Workflow {
                    graph: Some(graph),
                    overrides,
                })),
                ..JobSpec::default()
            }),
            ..SubmitJobRequest::default()
        }
    }

    #[test]
    fn depth_counts_objects_and_lists() {
        assert_eq!(struct_depth(&Struct::default()), 1);
        assert_eq!(struct_depth(&nested(1)), 1);
        assert_eq!(struct_depth(&nested(5)), 5);
        let list = Value {
            kind: Some(Kind::ListValue(pbjson_types::ListValue {
                values: vec![Value {
                    kind: Some(Kind::StructValue(nested(2))),
                }],
            })),
        };
        assert_eq!(value_depth(&list), 3);
    }

    #[test]
    fn the_limit_is_inclusive_and_names_the_field() {
        assert_eq!(
            too_deep_workflow_field(&submit(nested(MAX_WORKFLOW_DEPTH), vec![])),
            None
        );
        assert_eq!(
            too_deep_workflow_field(&submit(nested(MAX_WORKFLOW_DEPTH + 1), vec![])).as_deref(),
            Some("spec.workflow.graph")
        );
        let deep_override = InputOverride {
            node_id: "a".to_string(),
            input: "x".to_string(),
            value: Some(Value {
                kind: Some(Kind::StructValue(nested(MAX_WORKFLOW_DEPTH + 1))),
            }),
        };
        assert_eq!(
            too_deep_workflow_field(&submit(nested(2), vec![deep_override])).as_deref(),
            Some("spec.workflow.overrides[0].value")
        );
        assert!(too_deep_description().contains("32"));
    }
}
