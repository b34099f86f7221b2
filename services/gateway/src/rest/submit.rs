//! The request shapes `POST /api/v1/jobs` accepts, all mapped onto `SubmitJobRequest`:
//!
//! - flat text-to-image fields: `{"prompt": "A sunset", "width": 1024, "height": 1024}`
//!   (`TextToImage`'s fields, every one but `prompt` optional);
//! - a raw ComfyUI API-format graph: `{"workflow": {"3": {"class_type": …, "inputs": …}}}`,
//!   with optional `"overrides": [{"nodeId", "input", "value"}]`;
//! - the message itself: `{"spec": {"textToImage": {…}} | {"workflow": {"graph", "overrides"}}}`.
//!
//! Each may carry `idempotencyKey` and `startTimeout`; the `Idempotency-Key` header sets the
//! key too. Samplers and schedulers are accepted by their enum names (`SAMPLER_DPMPP_2M`) or
//! by ComfyUI's (`dpmpp_2m`).

use easel_proto::jobs::v1::{
    InputOverride, JobSpec, Sampler, Scheduler, SubmitJobRequest, TextToImage, Workflow, job_spec,
};
use easel_proto::names::ShortName;
use easel_runtime::error::Error;
use serde_json::{Map, Value};

use super::json::{from_value, parse_json};

/// Parses a submit body in any of the accepted shapes.
pub fn parse_submit(
    body: &[u8],
    idempotency_header: Option<&str>,
) -> Result<SubmitJobRequest, Error> {
    let value: Value = parse_json(body)?;
    let Value::Object(mut object) = value else {
        return Err(Error::invalid_argument(
            "the request body must be a JSON object",
        ));
    };
    let mut request = if object.contains_key("spec") {
        if let Some(Value::Object(spec)) = object.get_mut("spec") {
            for key in ["textToImage", "text_to_image"] {
                if let Some(Value::Object(fields)) = spec.get_mut(key) {
                    normalize_enums(fields, &format!("spec.{key}."))?;
                }
            }
        }
        from_value::<SubmitJobRequest>(Value::Object(object), "")?
    } else if let Some(workflow) = object.remove("workflow") {
        let overrides = object.remove("overrides");
        let mut request = envelope(&mut object)?;
        let keep_workflow_metadata = keep_metadata(&mut object)?;
        reject_unknown(&object, "a workflow request")?;
        request.spec = Some(JobSpec {
            kind: Some(job_spec::Kind::Workflow(workflow_of(workflow, overrides)?)),
            keep_workflow_metadata,
        });
        request
    } else {
        let mut request = envelope(&mut object)?;
        let keep_workflow_metadata = keep_metadata(&mut object)?;
        normalize_enums(&mut object, "")?;
        let text: TextToImage = from_value(Value::Object(object), "")?;
        request.spec = Some(JobSpec {
            kind: Some(job_spec::Kind::TextToImage(text)),
            keep_workflow_metadata,
        });
        request
    };
    if let Some(header) = idempotency_header {
        if !request.idempotency_key.is_empty() && request.idempotency_key != header {
            return Err(Error::invalid_field(
                "idempotencyKey",
                "differs from the Idempotency-Key header",
            ));
        }
        request.idempotency_key = header.to_string();
    }
    Ok(request)
}

/// Takes the request-level fields (`idempotencyKey`, `startTimeout`) out of a flat body.
fn envelope(object: &mut Map<String, Value>) -> Result<SubmitJobRequest, Error> {
    let mut request = SubmitJobRequest::default();
    for (name, value) in take(object, &["idempotencyKey", "idempotency_key"]) {
        request.idempotency_key = from_value(value, &name)?;
    }
    for (name, value) in take(object, &["startTimeout", "start_timeout"]) {
        request.start_timeout = Some(from_value(value, &name)?);
    }
    Ok(request)
}

/// Takes the spec-level option `keepWorkflowMetadata` out of a flat body (default false).
fn keep_metadata(object: &mut Map<String, Value>) -> Result<bool, Error> {
    let mut keep = false;
    for (name, value) in take(object, &["keepWorkflowMetadata", "keep_workflow_metadata"]) {
        keep = from_value(value, &name)?;
    }
    Ok(keep)
}

fn take(object: &mut Map<String, Value>, names: &[&str]) -> Vec<(String, Value)> {
    names
        .iter()
        .filter_map(|name| {
            object
                .remove(*name)
                .map(|value| ((*name).to_string(), value))
        })
        .collect()
}

fn reject_unknown(object: &Map<String, Value>, what: &str) -> Result<(), Error> {
    match object.keys().next() {
        Some(name) => {
            let shown: String = name.chars().take(64).collect();
            Err(Error::invalid_field(
                shown,
                format!(
                    "is not a field of {what} (workflow, overrides, idempotencyKey, startTimeout, keepWorkflowMetadata)"
                ),
            ))
        }
        None => Ok(()),
    }
}

/// The workflow of `{"workflow": graph, "overrides": […]}`; the graph may also be given as
/// the `Workflow` message, `{"graph": {…}, "overrides": […]}`.
fn workflow_of(workflow: Value, overrides: Option<Value>) -> Result<Workflow, Error> {
    let Value::Object(mut graph) = workflow else {
        return Err(Error::invalid_field(
            "workflow",
            "must be a ComfyUI API-format graph: an object of nodes",
        ));
    };
    let is_message = graph.contains_key("graph")
        && graph.keys().all(|key| key == "graph" || key == "overrides")
        && graph
            .values()
            .all(|value| value.get("class_type").is_none());
    let (graph, inner_overrides, prefix) = if is_message {
        let inner = graph.remove("overrides");
        (
            graph.remove("graph").unwrap_or(Value::Null),
            inner,
            "workflow.graph",
        )
    } else {
        (Value::Object(graph), None, "workflow")
    };
    if !graph.is_object() {
        return Err(Error::invalid_field(
            prefix,
            "must be a ComfyUI API-format graph: an object of nodes",
        ));
    }
    let overrides = match (overrides, inner_overrides) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid_field(
                "overrides",
                "is given twice (beside and inside workflow)",
            ));
        }
        (Some(list), None) => from_value::<Vec<InputOverride>>(list, "overrides")?,
        (None, Some(list)) => from_value::<Vec<InputOverride>>(list, "workflow.overrides")?,
        (None, None) => Vec::new(),
    };
    Ok(Workflow {
        graph: Some(from_value(graph, prefix)?),
        overrides,
    })
}

/// Rewrites ComfyUI's sampler and scheduler names (`dpmpp_2m`) to the enum's (`SAMPLER_DPMPP_2M`);
/// an unknown one is an error naming the field and the accepted names.
fn normalize_enums(fields: &mut Map<String, Value>, prefix: &str) -> Result<(), Error> {
    for named in [NamedEnum::SAMPLER, NamedEnum::SCHEDULER] {
        let Some(Value::String(value)) = fields.get_mut(named.field) else {
            continue;
        };
        let Some(proto_name) = (named.proto_name)(value) else {
            let shown: String = value.chars().take(64).collect();
            return Err(Error::invalid_field(
                format!("{prefix}{}", named.field),
                format!(
                    "unknown {} \"{shown}\"; expected one of {}",
                    named.field,
                    (named.names)().join(", ")
                ),
            ));
        };
        *value = proto_name.to_string();
    }
    Ok(())
}

/// A proto enum a request names by string.
struct NamedEnum {
    field: &'static str,
    proto_name: fn(&str) -> Option<&'static str>,
    names: fn() -> Vec<String>,
}

impl NamedEnum {
    const SAMPLER: NamedEnum = NamedEnum {
        field: "sampler",
        proto_name: |value| Sampler::parse(value).map(Sampler::proto_name),
        names: Sampler::short_names,
    };
    const SCHEDULER: NamedEnum = NamedEnum {
        field: "scheduler",
        proto_name: |value| Scheduler::parse(value).map(Scheduler::proto_name),
        names: Scheduler::short_names,
    };
}

/// ComfyUI's sampler names: the enum's names without the prefix, lowercased.
pub fn sampler_names() -> Vec<String> {
    comfy_names(
        (1..)
            .map_while(|value| Sampler::try_from(value).ok())
            .map(|sampler| sampler.as_str_name()),
        "SAMPLER_",
    )
}

/// ComfyUI's scheduler names.
pub fn scheduler_names() -> Vec<String> {
    comfy_names(
        (1..)
            .map_while(|value| Scheduler::try_from(value).ok())
            .map(|scheduler| scheduler.as_str_name()),
        "SCHEDULER_",
    )
}

fn comfy_names(names: impl Iterator<Item = &'static str>, prefix: &str) -> Vec<String> {
    names
        .filter_map(|name| name.strip_prefix(prefix))
        .map(str::to_ascii_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(request: &SubmitJobRequest) -> &TextToImage {
        match request.spec.as_ref().and_then(|spec| spec.kind.as_ref()) {
            Some(job_spec::Kind::TextToImage(text)) => text,
            other => panic!("not text-to-image: {other:?}"),
        }
    }

    #[test]
    fn the_seed_text_shape_maps_onto_text_to_image() {
        let request =
            parse_submit(br#"{"prompt":"A sunset","width":1024,"height":1024}"#, None).unwrap();
        let text = text_of(&request);
        assert_eq!(text.prompt, "A sunset");
        assert_eq!((text.width, text.height), (1024, 1024));
        assert!(request.idempotency_key.is_empty());
    }

    #[test]
    fn comfy_sampler_names_and_request_fields_are_accepted() {
        let body = br#"{"prompt":"p","sampler":"dpmpp_2m","scheduler":"karras","seed":"7",
            "cfgScale":6.5,"idempotencyKey":"k-1","startTimeout":"30s"}"#;
        let request = parse_submit(body, None).unwrap();
        let text = text_of(&request);
        assert_eq!(text.sampler(), Sampler::Dpmpp2m);
        assert_eq!(text.scheduler(), Scheduler::Karras);
        assert_eq!(text.seed, Some(7));
        assert_eq!(request.idempotency_key, "k-1");
        assert_eq!(request.start_timeout.unwrap().seconds, 30);
    }

    #[test]
    fn an_unknown_sampler_names_the_field() {
        let error = parse_submit(br#"{"prompt":"p","sampler":"turbo_magic"}"#, None).unwrap_err();
        assert_eq!(error.field_violations()[0].field, "sampler");
        assert!(error.message().contains("dpmpp_2m"), "{error}");
        let error = parse_submit(
            br#"{"spec":{"textToImage":{"prompt":"p","scheduler":"nope"}}}"#,
            None,
        )
        .unwrap_err();
        assert_eq!(
            error.field_violations()[0].field,
            "spec.textToImage.scheduler"
        );
    }

    #[test]
    fn a_raw_workflow_maps_onto_workflow_with_overrides() {
        let body = br#"{"workflow":{"3":{"class_type":"KSampler","inputs":{"seed":1}}},
            "overrides":[{"nodeId":"3","input":"seed","value":42}]}"#;
        let request = parse_submit(body, Some("idem-9")).unwrap();
        let Some(job_spec::Kind::Workflow(workflow)) = request.spec.unwrap().kind else {
            panic!("not a workflow");
        };
        assert!(workflow.graph.unwrap().fields.contains_key("3"));
        assert_eq!(workflow.overrides[0].node_id, "3");
        assert_eq!(request.idempotency_key, "idem-9");
    }

    #[test]
    fn the_workflow_message_shape_is_recognized() {
        let body = br#"{"workflow":{"graph":{"1":{"class_type":"EmptyImage","inputs":{}}}}}"#;
        let request = parse_submit(body, None).unwrap();
        let Some(job_spec::Kind::Workflow(workflow)) = request.spec.unwrap().kind else {
            panic!("not a workflow");
        };
        assert!(workflow.graph.unwrap().fields.contains_key("1"));
    }

    #[test]
    fn the_message_shape_works_as_is() {
        let body = br#"{"spec":{"textToImage":{"prompt":"p","sampler":"SAMPLER_EULER"}},"idempotencyKey":"a"}"#;
        let request = parse_submit(body, Some("a")).unwrap();
        assert_eq!(text_of(&request).sampler(), Sampler::Euler);
    }

    #[test]
    fn bad_shapes_are_refused_with_the_field() {
        let error = parse_submit(br#"[1,2]"#, None).unwrap_err();
        assert!(error.message().contains("object"));
        let error = parse_submit(br#"{"workflow":[1]}"#, None).unwrap_err();
        assert_eq!(error.field_violations()[0].field, "workflow");
        let error = parse_submit(br#"{"workflow":{},"prompt":"x"}"#, None).unwrap_err();
        assert_eq!(error.field_violations()[0].field, "prompt");
        let error = parse_submit(br#"{"prompt":"x","width":-5}"#, None).unwrap_err();
        assert_eq!(error.field_violations()[0].field, "width");
        let error = parse_submit(br#"{"prompt":"x","idempotencyKey":"a"}"#, Some("b")).unwrap_err();
        assert_eq!(error.field_violations()[0].field, "idempotencyKey");
    }

    #[test]
    fn every_enum_value_has_a_comfy_name() {
        assert_eq!(Sampler::short_names().len(), 42);
        assert!(
            Sampler::short_names()
                .iter()
                .all(|name| name.chars().all(|c| !c.is_ascii_uppercase()))
        );
        assert_eq!(Scheduler::short_names().len(), 9);
        assert!(
            Scheduler::short_names()
                .iter()
                .all(|name| name.chars().all(|c| !c.is_ascii_uppercase()))
        );
    }
}
