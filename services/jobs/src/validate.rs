//! Checks a submit request against the contract and the caller's tier, fills in defaults, and
//! hashes the request for idempotency.

use std::time::Duration;

use easel_proto::account::v1::TierLimits;
use easel_proto::jobs::v1::{
    JobMetadata, JobSpec, Sampler, Scheduler, SubmitJobRequest, TextToImage, Workflow, job_spec,
};
use easel_workflow_policy::{Caller, NoInputs, WorkflowPolicy};
use pbjson_types::value::Kind as ValueKind;
use sha2::{Digest, Sha256};

use crate::error::{JobsError, Result};
use easel_runtime::error::InternalContext;

/// Longest prompt (and negative prompt), in characters.
pub const MAX_PROMPT_CHARS: usize = 4000;
/// Smallest and largest image side in pixels.
pub const SIDE_RANGE: (u32, u32) = (64, 8192);
/// Largest step count whatever the tier.
pub const MAX_STEPS: u32 = 200;
/// Largest batch whatever the tier.
pub const MAX_BATCH: u32 = 64;
/// Largest raw workflow, in nodes and in encoded bytes.
pub const MAX_WORKFLOW_NODES: usize = 500;
/// Largest raw workflow, encoded.
pub const MAX_WORKFLOW_BYTES: usize = 1 << 20;
/// Longest start timeout.
pub const MAX_START_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// A request that passed validation, with defaults filled in.
#[derive(Clone, Debug)]
pub struct Validated {
    /// The spec to run (text-to-image fully resolved, seed included).
    pub spec: JobSpec,
    /// What was resolved.
    pub metadata: JobMetadata,
    /// SHA-256 of the canonical request as the client sent it (without the key).
    pub request_hash: String,
    /// Give up if not started within this long.
    pub start_timeout: Option<Duration>,
    /// The idempotency key, if any.
    pub idempotency_key: Option<String>,
}

/// Validates `request` for a caller with `limits`; `seed` picks a seed when none is given.
pub fn validate_submit(
    request: &SubmitJobRequest,
    limits: &TierLimits,
    seed: impl FnOnce() -> u64,
) -> Result<Validated> {
    let idempotency_key = match request.idempotency_key.as_str() {
        "" => None,
        key if key.len() > 255 => {
            return Err(JobsError::field(
                "idempotency_key",
                "at most 255 characters",
            ));
        }
        key if !key.bytes().all(|b| (0x20..0x7f).contains(&b)) => {
            return Err(JobsError::field(
                "idempotency_key",
                "only printable ASCII characters are allowed",
            ));
        }
        key => Some(key.to_string()),
    };
    let start_timeout = match &request.start_timeout {
        None => None,
        Some(timeout) => {
            if timeout.seconds < 0 || timeout.nanos < 0 || timeout.nanos >= 1_000_000_000 {
                return Err(JobsError::field(
                    "start_timeout",
                    "must be a positive duration",
                ));
            }
            let timeout = Duration::new(
                u64::try_from(timeout.seconds).unwrap_or_default(),
                u32::try_from(timeout.nanos).unwrap_or_default(),
            );
            if timeout.is_zero() || timeout > MAX_START_TIMEOUT {
                return Err(JobsError::field(
                    "start_timeout",
                    "must be more than 0 and at most 7 days",
                ));
            }
            Some(timeout)
        }
    };
    let kind = request
        .spec
        .as_ref()
        .and_then(|spec| spec.kind.as_ref())
        .ok_or_else(|| JobsError::field("spec", "one of text_to_image or workflow is required"))?;
    let (spec, metadata) = match kind {
        job_spec::Kind::TextToImage(t2i) => {
            let resolved = text_to_image(t2i, limits, seed)?;
            let metadata = JobMetadata {
                seed: resolved.seed.unwrap_or_default(),
                checkpoint: resolved.checkpoint.clone(),
                resolved: Some(resolved.clone()),
            };
            (job_spec::Kind::TextToImage(resolved), metadata)
        }
        job_spec::Kind::Workflow(workflow) => {
            check_workflow(workflow, limits)?;
            (
                job_spec::Kind::Workflow(workflow.clone()),
                JobMetadata::default(),
            )
        }
    };
    Ok(Validated {
        spec: JobSpec {
            kind: Some(spec),
            keep_workflow_metadata: request
                .spec
                .as_ref()
                .is_some_and(|spec| spec.keep_workflow_metadata),
        },
        metadata,
        request_hash: request_hash(request)?,
        start_timeout,
        idempotency_key,
    })
}

/// Applies the backend policy (node classes, file and model inputs) to a raw workflow, with the
/// overrides applied as the bridge will apply them. Text-to-image graphs are built by the
/// bridge from easel's own template, which the bridge checks against the same policy.
pub fn check_policy(policy: &WorkflowPolicy, owner: &str, validated: &Validated) -> Result<()> {
    let Some(job_spec::Kind::Workflow(workflow)) = validated.spec.kind.as_ref() else {
        return Ok(());
    };
    let Some(graph) = workflow.graph.as_ref() else {
        return Ok(());
    };
    let mut graph = serde_json::to_value(graph).map_err(|error| {
        JobsError::field(
            "spec.workflow.graph",
            format!("is not a JSON object: {error}"),
        )
    })?;
    for item in &workflow.overrides {
        if let (Some(inputs), Some(value)) = (
            graph
                .get_mut(&item.node_id)
                .and_then(|node| node.get_mut("inputs"))
                .and_then(serde_json::Value::as_object_mut),
            item.value.as_ref(),
        ) {
            let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
            inputs.insert(item.input.clone(), value);
        }
    }
    // No uploaded inputs exist yet: every `easel-input://` reference is unknown.
    let caller = Caller {
        owner: Some(owner),
        inputs: &NoInputs,
    };
    policy
        .check(&graph, caller)
        .map_err(JobsError::WorkflowRefused)
}

fn over(field: &str, description: String, limit: &'static str) -> JobsError {
    JobsError::OverLimit {
        field: field.to_string(),
        description,
        limit,
    }
}

/// Resolves a text-to-image request: every parameter gets its value here, once (defaults, the
/// product's caps, the tier's limits). The bridge trusts the resolved values and checks only
/// ComfyUI's own input ranges, which these caps stay inside (e.g. steps: 200 here, 10,000 in
/// ComfyUI).
fn text_to_image(
    request: &TextToImage,
    limits: &TierLimits,
    seed: impl FnOnce() -> u64,
) -> Result<TextToImage> {
    const F: &str = "spec.text_to_image";
    if request.prompt.trim().is_empty() {
        return Err(JobsError::field(format!("{F}.prompt"), "is required"));
    }
    for (name, text) in [
        ("prompt", &request.prompt),
        ("negative_prompt", &request.negative_prompt),
    ] {
        if text.chars().count() > MAX_PROMPT_CHARS {
            return Err(JobsError::field(
                format!("{F}.{name}"),
                format!("at most {MAX_PROMPT_CHARS} characters"),
            ));
        }
    }
    let mut sides = [0u32; 2];
    for (index, (name, value)) in [("width", request.width), ("height", request.height)]
        .into_iter()
        .enumerate()
    {
        let value = if value == 0 { 1024 } else { value };
        if value % 8 != 0 || value < SIDE_RANGE.0 || value > SIDE_RANGE.1 {
            return Err(JobsError::field(
                format!("{F}.{name}"),
                format!(
                    "must be a multiple of 8 from {} to {}",
                    SIDE_RANGE.0, SIDE_RANGE.1
                ),
            ));
        }
        sides[index] = value;
    }
    let pixels = u64::from(sides[0]) * u64::from(sides[1]);
    if limits.max_pixels > 0 && pixels > limits.max_pixels {
        return Err(over(
            &format!("{F}.width"),
            format!(
                "width × height is {pixels} pixels; your tier allows {}",
                limits.max_pixels
            ),
            "max_pixels",
        ));
    }
    let steps = if request.steps == 0 {
        20
    } else {
        request.steps
    };
    if steps > MAX_STEPS {
        return Err(JobsError::field(
            format!("{F}.steps"),
            format!("must be from 1 to {MAX_STEPS}"),
        ));
    }
    if limits.max_steps > 0 && steps > limits.max_steps {
        return Err(over(
            &format!("{F}.steps"),
            format!("{steps} steps; your tier allows {}", limits.max_steps),
            "max_steps",
        ));
    }
    let cfg = request.cfg_scale.unwrap_or(7.0);
    if !cfg.is_finite() || !(0.0..=100.0).contains(&cfg) {
        return Err(JobsError::field(
            format!("{F}.cfg_scale"),
            "must be from 0 to 100",
        ));
    }
    let sampler = match Sampler::try_from(request.sampler) {
        Ok(Sampler::Unspecified) => Sampler::Euler,
        Ok(sampler) => sampler,
        Err(_) => {
            return Err(JobsError::field(
                format!("{F}.sampler"),
                format!("unknown sampler {}", request.sampler),
            ));
        }
    };
    let scheduler = match Scheduler::try_from(request.scheduler) {
        Ok(Scheduler::Unspecified) => Scheduler::Normal,
        Ok(scheduler) => scheduler,
        Err(_) => {
            return Err(JobsError::field(
                format!("{F}.scheduler"),
                format!("unknown scheduler {}", request.scheduler),
            ));
        }
    };
    let checkpoint = request.checkpoint.trim();
    if checkpoint.len() > 255
        || checkpoint.contains("..")
        || checkpoint.starts_with('/')
        || checkpoint.chars().any(char::is_control)
    {
        return Err(JobsError::field(
            format!("{F}.checkpoint"),
            "must be a checkpoint file name as ListModels returns it",
        ));
    }
    let batch_size = if request.batch_size == 0 {
        1
    } else {
        request.batch_size
    };
    if batch_size > MAX_BATCH {
        return Err(JobsError::field(
            format!("{F}.batch_size"),
            format!("must be from 1 to {MAX_BATCH}"),
        ));
    }
    if limits.max_batch_size > 0 && batch_size > limits.max_batch_size {
        return Err(over(
            &format!("{F}.batch_size"),
            format!(
                "batch of {batch_size}; your tier allows {}",
                limits.max_batch_size
            ),
            "max_batch_size",
        ));
    }
    Ok(TextToImage {
        prompt: request.prompt.clone(),
        negative_prompt: request.negative_prompt.clone(),
        width: sides[0],
        height: sides[1],
        steps,
        cfg_scale: Some(cfg),
        sampler: sampler as i32,
        scheduler: scheduler as i32,
        // Seeds stay below 2^53 so they survive JSON numbers everywhere.
        seed: Some(request.seed.unwrap_or_else(|| seed() & ((1 << 53) - 1))),
        checkpoint: checkpoint.to_string(),
        batch_size,
    })
}

fn number(value: Option<&pbjson_types::Value>) -> Option<f64> {
    match value?.kind.as_ref()? {
        ValueKind::NumberValue(number) => Some(*number),
        _ => None,
    }
}

fn check_workflow(workflow: &Workflow, limits: &TierLimits) -> Result<()> {
    const F: &str = "spec.workflow";
    let graph = workflow
        .graph
        .as_ref()
        .filter(|graph| !graph.fields.is_empty())
        .ok_or_else(|| JobsError::field(format!("{F}.graph"), "is required and must have nodes"))?;
    if let Some(field) = easel_proto::limits::too_deep_field(workflow) {
        return Err(JobsError::field(
            field,
            easel_proto::limits::too_deep_description(),
        ));
    }
    if graph.fields.len() > MAX_WORKFLOW_NODES {
        return Err(JobsError::field(
            format!("{F}.graph"),
            format!("at most {MAX_WORKFLOW_NODES} nodes"),
        ));
    }
    if prost::Message::encoded_len(workflow) > MAX_WORKFLOW_BYTES {
        return Err(JobsError::field(
            format!("{F}.graph"),
            format!("at most {MAX_WORKFLOW_BYTES} bytes"),
        ));
    }
    let mut ids: Vec<&String> = graph.fields.keys().collect();
    ids.sort();
    for id in ids {
        let field = format!("{F}.graph.{id}");
        if id.is_empty() || id.len() > 64 {
            return Err(JobsError::field(field, "node ids are 1 to 64 characters"));
        }
        let Some(ValueKind::StructValue(node)) = graph.fields[id].kind.as_ref() else {
            return Err(JobsError::field(
                field,
                "must be an object with class_type and inputs",
            ));
        };
        let class_type = match node.fields.get("class_type").and_then(|v| v.kind.as_ref()) {
            Some(ValueKind::StringValue(class)) if !class.trim().is_empty() => class.as_str(),
            _ => {
                return Err(JobsError::field(
                    format!("{field}.class_type"),
                    "is required and must be a string",
                ));
            }
        };
        let Some(ValueKind::StructValue(inputs)) =
            node.fields.get("inputs").and_then(|v| v.kind.as_ref())
        else {
            return Err(JobsError::field(
                format!("{field}.inputs"),
                "is required and must be an object",
            ));
        };
        // The tier's limits apply to the nodes whose meaning we know.
        let input = |name: &str| number(inputs.fields.get(name));
        if class_type == "EmptyLatentImage"
            && let (Some(width), Some(height)) = (input("width"), input("height"))
            && limits.max_pixels > 0
            && width * height > limits.max_pixels as f64
        {
            return Err(over(
                &format!("{field}.inputs.width"),
                format!("your tier allows {} pixels", limits.max_pixels),
                "max_pixels",
            ));
        }
        if class_type == "EmptyLatentImage"
            && let Some(batch) = input("batch_size")
            && limits.max_batch_size > 0
            && batch > f64::from(limits.max_batch_size)
        {
            return Err(over(
                &format!("{field}.inputs.batch_size"),
                format!("your tier allows a batch of {}", limits.max_batch_size),
                "max_batch_size",
            ));
        }
        if class_type.starts_with("KSampler")
            && let Some(steps) = input("steps")
            && limits.max_steps > 0
            && steps > f64::from(limits.max_steps)
        {
            return Err(over(
                &format!("{field}.inputs.steps"),
                format!("your tier allows {} steps", limits.max_steps),
                "max_steps",
            ));
        }
    }
    if workflow.overrides.len() > 100 {
        return Err(JobsError::field(format!("{F}.overrides"), "at most 100"));
    }
    for (index, item) in workflow.overrides.iter().enumerate() {
        let field = format!("{F}.overrides[{index}]");
        if !graph.fields.contains_key(&item.node_id) {
            return Err(JobsError::field(
                format!("{field}.node_id"),
                "names no node of the graph",
            ));
        }
        if item.input.trim().is_empty() {
            return Err(JobsError::field(format!("{field}.input"), "is required"));
        }
        if item.value.as_ref().and_then(|v| v.kind.as_ref()).is_none() {
            return Err(JobsError::field(format!("{field}.value"), "is required"));
        }
    }
    Ok(())
}

/// SHA-256 (hex) of the request's canonical JSON without the idempotency key: object keys
/// sorted, so map order never changes the hash.
pub fn request_hash(request: &SubmitJobRequest) -> Result<String> {
    let mut request = request.clone();
    request.idempotency_key.clear();
    let value = serde_json::to_value(&request).internal("encoding a request")?;
    let mut canonical = String::new();
    write_canonical(&value, &mut canonical);
    Ok(hex::encode(Sha256::digest(canonical.as_bytes())))
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t2i(prompt: &str) -> SubmitJobRequest {
        SubmitJobRequest {
            spec: Some(JobSpec {
                kind: Some(job_spec::Kind::TextToImage(TextToImage {
                    prompt: prompt.into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn field_of(error: JobsError) -> String {
        match error {
            JobsError::InvalidField { field, .. } | JobsError::OverLimit { field, .. } => field,
            other => panic!("not a field error: {other:?}"),
        }
    }

    #[test]
    fn defaults_and_a_seed_are_filled_in() {
        let validated = validate_submit(&t2i("a cat"), &TierLimits::default(), || 42).unwrap();
        let Some(job_spec::Kind::TextToImage(resolved)) = validated.spec.kind else {
            panic!()
        };
        assert_eq!(
            (resolved.width, resolved.height, resolved.steps),
            (1024, 1024, 20)
        );
        assert_eq!(resolved.seed, Some(42));
        assert_eq!(resolved.sampler, Sampler::Euler as i32);
        // Nothing is left for the bridge to fill in.
        assert_eq!(resolved.scheduler, Scheduler::Normal as i32);
        assert_eq!((resolved.cfg_scale, resolved.batch_size), (Some(7.0), 1));
        assert_eq!(validated.metadata.seed, 42);
    }

    #[test]
    fn bad_fields_are_named() {
        let limits = TierLimits::default();
        let mut request = t2i("");
        assert_eq!(
            field_of(validate_submit(&request, &limits, || 1).unwrap_err()),
            "spec.text_to_image.prompt"
        );
        request = t2i(&"x".repeat(4001));
        assert!(validate_submit(&request, &limits, || 1).is_err());
        for (mutate, field) in [
            (
                Box::new(|t: &mut TextToImage| t.width = 1001) as Box<dyn Fn(&mut TextToImage)>,
                "spec.text_to_image.width",
            ),
            (Box::new(|t| t.height = 8), "spec.text_to_image.height"),
            (Box::new(|t| t.steps = 500), "spec.text_to_image.steps"),
            (
                Box::new(|t| t.cfg_scale = Some(101.0)),
                "spec.text_to_image.cfg_scale",
            ),
            (
                Box::new(|t| t.cfg_scale = Some(f64::NAN)),
                "spec.text_to_image.cfg_scale",
            ),
            (Box::new(|t| t.sampler = 999), "spec.text_to_image.sampler"),
            (
                Box::new(|t| t.scheduler = -1),
                "spec.text_to_image.scheduler",
            ),
            (
                Box::new(|t| t.checkpoint = "../etc/passwd".into()),
                "spec.text_to_image.checkpoint",
            ),
            (
                Box::new(|t| t.batch_size = 65),
                "spec.text_to_image.batch_size",
            ),
        ] {
            let mut request = t2i("a cat");
            if let Some(JobSpec {
                kind: Some(job_spec::Kind::TextToImage(t)),
                ..
            }) = request.spec.as_mut()
            {
                mutate(t);
            }
            assert_eq!(
                field_of(validate_submit(&request, &limits, || 1).unwrap_err()),
                field
            );
        }
        assert_eq!(
            field_of(validate_submit(&SubmitJobRequest::default(), &limits, || 1).unwrap_err()),
            "spec"
        );
    }

    #[test]
    fn tier_limits_name_the_limit() {
        let limits = TierLimits {
            max_pixels: 512 * 512,
            max_steps: 30,
            max_batch_size: 2,
            ..Default::default()
        };
        let error = validate_submit(&t2i("a cat"), &limits, || 1).unwrap_err();
        assert!(matches!(
            error,
            JobsError::OverLimit {
                limit: "max_pixels",
                ..
            }
        ));
    }

    #[test]
    fn workflows_need_nodes_with_class_and_inputs() {
        let graph: pbjson_types::Struct =
            serde_json::from_str(r#"{"3": {"class_type": "KSampler"}}"#).unwrap();
        let request = SubmitJobRequest {
            spec: Some(JobSpec {
                kind: Some(job_spec::Kind::Workflow(Workflow {
                    graph: Some(graph),
                    overrides: vec![],
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            field_of(validate_submit(&request, &TierLimits::default(), || 1).unwrap_err()),
            "spec.workflow.graph.3.inputs"
        );
    }

    #[test]
    fn the_backend_policy_names_the_node_and_input() {
        let graph: pbjson_types::Struct = serde_json::from_str(
            r#"{"1": {"class_type": "LoadImage", "inputs": {"image": "easel_00294_.png [output]"}},
                "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}"#,
        )
        .unwrap();
        let request = |overrides: Vec<easel_proto::jobs::v1::InputOverride>| SubmitJobRequest {
            spec: Some(JobSpec {
                kind: Some(job_spec::Kind::Workflow(Workflow {
                    graph: Some(graph.clone()),
                    overrides,
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let policy = WorkflowPolicy::default();
        let validated = validate_submit(&request(vec![]), &TierLimits::default(), || 1).unwrap();
        let error =
            easel_runtime::Error::from(check_policy(&policy, "usr_b", &validated).unwrap_err());
        assert_eq!(error.code(), easel_runtime::ErrorCode::InvalidArgument);
        assert_eq!(
            error.field_violations()[0].field,
            "spec.workflow.graph.1.inputs.image"
        );
        // An override cannot sneak a path past the check.
        let sneaky = easel_proto::jobs::v1::InputOverride {
            node_id: "1".into(),
            input: "image".into(),
            value: Some(serde_json::from_str("\"/etc/passwd\"").unwrap()),
        };
        let validated =
            validate_submit(&request(vec![sneaky]), &TierLimits::default(), || 1).unwrap();
        let JobsError::WorkflowRefused(violations) =
            check_policy(&policy, "usr_b", &validated).unwrap_err()
        else {
            panic!("refused by the policy");
        };
        assert!(
            violations[0].description.contains("absolute path"),
            "{violations:?}"
        );
        // Text-to-image specs are the bridge's template: nothing to check here.
        let validated =
            validate_submit(&t2i("a cat [output]"), &TierLimits::default(), || 1).unwrap();
        assert!(check_policy(&policy, "usr_b", &validated).is_ok());
    }

    #[test]
    fn the_hash_ignores_the_key_and_map_order() {
        let mut a = t2i("a cat");
        a.idempotency_key = "k1".into();
        let mut b = t2i("a cat");
        b.idempotency_key = "k2".into();
        assert_eq!(request_hash(&a).unwrap(), request_hash(&b).unwrap());
        assert_ne!(
            request_hash(&a).unwrap(),
            request_hash(&t2i("a dog")).unwrap()
        );
        let g1: pbjson_types::Struct =
            serde_json::from_str(r#"{"a": {"x": 1, "y": 2}, "b": 3}"#).unwrap();
        let g2: pbjson_types::Struct =
            serde_json::from_str(r#"{"b": 3, "a": {"y": 2, "x": 1}}"#).unwrap();
        let wrap = |graph| SubmitJobRequest {
            spec: Some(JobSpec {
                kind: Some(job_spec::Kind::Workflow(Workflow {
                    graph: Some(graph),
                    overrides: vec![],
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            request_hash(&wrap(g1)).unwrap(),
            request_hash(&wrap(g2)).unwrap()
        );
    }
}
