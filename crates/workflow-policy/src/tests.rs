use serde_json::json;

use super::*;

#[derive(Debug)]
struct OneInput;

impl InputStore for OneInput {
    fn owns(&self, owner: &str, input_id: &str) -> bool {
        owner == "usr_a" && input_id == "inp_a1"
    }
}

fn load_image(value: &str) -> Value {
    json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": value}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    })
}

#[test]
fn file_inputs_take_only_the_callers_own_references() {
    let policy = WorkflowPolicy::default();
    for value in [
        "easel_00294_.png [output]",
        "x.png [temp]",
        "x.png [input]",
        "../x.png",
        "sub/../../x.png",
        "/etc/passwd",
        "C:\\Windows\\win.ini",
        "example.png",
        "easel-input://inp_someone_else",
        "easel-input://../x",
        "easel-input://",
        "http://example.com/x.png",
    ] {
        let violations = policy
            .check(&load_image(value), Caller::without_inputs())
            .expect_err(value);
        assert_eq!(violations.len(), 1, "{value}");
        assert_eq!(violations[0].path("workflow"), "workflow.1.inputs.image");
    }
    let unknown = policy
        .check(
            &load_image("easel-input://inp_b1"),
            Caller::without_inputs(),
        )
        .expect_err("unknown");
    assert!(
        unknown[0].description.starts_with("unknown input"),
        "{unknown:?}"
    );
    // Another owner's input reads exactly like one that does not exist.
    let other = policy
        .check(
            &load_image("easel-input://inp_a1"),
            Caller {
                owner: Some("usr_b"),
                inputs: &OneInput,
            },
        )
        .expect_err("not theirs");
    assert_eq!(
        other[0].description,
        "unknown input \"inp_a1\": it is not one of your uploaded inputs"
    );
    assert!(
        policy
            .check(
                &load_image("easel-input://inp_a1"),
                Caller {
                    owner: Some("usr_a"),
                    inputs: &OneInput,
                },
            )
            .is_ok()
    );
}

#[test]
fn denied_classes_are_named_and_lists_are_configurable() {
    let graph = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "x"}},
        "3": {"class_type": "LoadImageOutput", "inputs": {"image": "a.png [output]"}},
    });
    let violations = WorkflowPolicy::default()
        .check(&graph, Caller::without_inputs())
        .expect_err("denied");
    let fields: Vec<String> = violations.iter().map(|v| v.path("g")).collect();
    assert_eq!(
        fields,
        ["g.2.class_type", "g.3.class_type", "g.3.inputs.image"]
    );
    assert!(summary(&violations, "g").contains("(and 2 more problems)"));

    let allow = WorkflowPolicy::parse(Some("EmptyImage, SaveImage"), Some("none")).expect("parse");
    assert!(allow.class_verdict("SaveImage").is_ok());
    assert!(allow.class_verdict("SaveLatent").is_err());
    let extra = WorkflowPolicy::parse(None, Some("default,ImageBlur")).expect("parse");
    assert!(extra.class_verdict("ImageBlur").is_err());
    assert!(extra.class_verdict("CheckpointSave").is_err());
    assert!(extra.class_verdict("ImageInvert").is_ok());
    let nothing = WorkflowPolicy::parse(None, Some("none")).expect("parse");
    assert!(nothing.class_verdict("CheckpointSave").is_ok());
    assert!(WorkflowPolicy::parse(Some("Bad\"Name"), None).is_err());
    assert!(WorkflowPolicy::parse(None, Some("a/b")).is_err());
}

#[test]
fn the_text_to_image_graph_passes_and_model_paths_do_not() {
    let graph = json!({
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl/base.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat [output] ../x /etc/passwd", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "positive": ["6", 0], "negative": ["6", 0], "latent_image": ["5", 0], "seed": 1, "steps": 2, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "easel"}},
    });
    assert!(
        WorkflowPolicy::default()
            .check(&graph, Caller::without_inputs())
            .is_ok()
    );
    for bad in ["../../etc/passwd", "/models/x.safetensors", "..\\x"] {
        let mut graph = graph.clone();
        graph["4"]["inputs"]["ckpt_name"] = json!(bad);
        let violations = WorkflowPolicy::default()
            .check(&graph, Caller::without_inputs())
            .expect_err(bad);
        assert_eq!(violations[0].path(""), "4.inputs.ckpt_name");
    }
}

#[test]
fn errors_carry_one_field_violation_per_problem() {
    let graph = json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": "/etc/passwd"}},
        "2": {"class_type": "LoadImageMask", "inputs": {"image": "x.png [temp]", "channel": "alpha"}},
    });
    let violations = WorkflowPolicy::default()
        .check(&graph, Caller::without_inputs())
        .expect_err("refused");
    let error = to_error(&violations, "spec.workflow.graph");
    assert_eq!(error.code(), easel_runtime::ErrorCode::InvalidArgument);
    let fields: Vec<&str> = error
        .field_violations()
        .iter()
        .map(|violation| violation.field.as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "spec.workflow.graph.1.inputs.image",
            "spec.workflow.graph.2.inputs.image"
        ]
    );
}
