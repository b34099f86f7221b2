use easel_proto::jobs::v1::InputOverride;

use super::*;

fn request() -> TextToImage {
    TextToImage {
        prompt: "a lighthouse at dusk".to_string(),
        ..TextToImage::default()
    }
}

#[test]
fn the_template_uses_the_documented_defaults() {
    let built =
        text_to_image(&request(), Some("sd_xl_base_1.0.safetensors"), || 42).expect("valid");
    let graph = &built.graph;
    assert_eq!(built.seed, 42);
    assert_eq!(
        built.checkpoint.as_deref(),
        Some("sd_xl_base_1.0.safetensors")
    );
    assert_eq!(built.node_count(), 7);
    assert_eq!(graph["5"]["inputs"]["width"], 1024);
    assert_eq!(graph["5"]["inputs"]["height"], 1024);
    assert_eq!(graph["5"]["inputs"]["batch_size"], 1);
    let sampler = &graph["3"]["inputs"];
    assert_eq!(sampler["steps"], 20);
    assert_eq!(sampler["cfg"], 7.0);
    assert_eq!(sampler["sampler_name"], "euler");
    assert_eq!(sampler["scheduler"], "normal");
    assert_eq!(sampler["denoise"], 1.0);
    assert_eq!(sampler["seed"], 42);
    assert_eq!(graph["9"]["inputs"]["filename_prefix"], "easel");
    assert_eq!(built.class_of("3"), "KSampler");
}

#[test]
fn a_given_seed_and_enums_are_kept() {
    let mut request = request();
    request.seed = Some(u64::MAX);
    request.sampler = Sampler::Dpmpp2m as i32;
    request.scheduler = Scheduler::Karras as i32;
    request.checkpoint = "mine.safetensors".to_string();
    let built = text_to_image(&request, None, || unreachable!("seed given")).expect("valid");
    assert_eq!(built.seed, u64::MAX);
    assert_eq!(built.graph["3"]["inputs"]["seed"], u64::MAX);
    assert_eq!(built.graph["3"]["inputs"]["sampler_name"], "dpmpp_2m");
    assert_eq!(built.graph["3"]["inputs"]["scheduler"], "karras");
    assert_eq!(built.graph["4"]["inputs"]["ckpt_name"], "mine.safetensors");
}

#[test]
fn enum_names_follow_comfyui() {
    assert_eq!(
        sampler_name(Sampler::EulerAncestralCfgPp as i32).expect("known"),
        "euler_ancestral_cfg_pp"
    );
    assert_eq!(
        sampler_name(Sampler::Dpmpp2mSdeGpu as i32).expect("known"),
        "dpmpp_2m_sde_gpu"
    );
    assert_eq!(
        scheduler_name(Scheduler::SgmUniform as i32).expect("known"),
        "sgm_uniform"
    );
    assert!(sampler_name(9999).is_err());
    assert!(scheduler_name(-1).is_err());
}

#[test]
fn bad_parameters_name_their_field() {
    let field_of = |request: TextToImage| match text_to_image(&request, Some("x"), || 1) {
        Err(BridgeError::InvalidField { field, .. }) => field,
        other => panic!("expected an invalid field, got {other:?}"),
    };
    assert_eq!(field_of(TextToImage::default()), "text_to_image.prompt");
    let mut r = request();
    r.width = 1000 + 1;
    assert_eq!(field_of(r), "text_to_image.width");
    let mut r = request();
    r.height = 32768;
    assert_eq!(field_of(r), "text_to_image.height");
    let mut r = request();
    r.cfg_scale = Some(f64::NAN);
    assert_eq!(field_of(r), "text_to_image.cfg_scale");
    let mut r = request();
    r.batch_size = 65;
    assert_eq!(field_of(r), "text_to_image.batch_size");
    let mut r = request();
    r.sampler = 777;
    assert_eq!(field_of(r), "text_to_image.sampler");
    assert!(matches!(
        text_to_image(&request(), None, || 1),
        Err(BridgeError::InvalidField { field, .. }) if field == "text_to_image.checkpoint"
    ));
}

fn workflow(overrides: Vec<InputOverride>) -> Workflow {
    let graph: pbjson_types::Struct = serde_json::from_value(json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "raw"}},
    }))
    .expect("struct");
    Workflow {
        graph: Some(graph),
        overrides,
    }
}

fn set(node_id: &str, input: &str, value: Value) -> InputOverride {
    InputOverride {
        node_id: node_id.to_string(),
        input: input.to_string(),
        value: Some(serde_json::from_value(value).expect("value")),
    }
}

#[test]
fn overrides_are_applied_and_whole_numbers_stay_integers() {
    let built = raw_workflow(&workflow(vec![
        set("1", "width", json!(128)),
        set("9", "filename_prefix", json!("custom")),
    ]))
    .expect("valid");
    assert_eq!(built.graph["1"]["inputs"]["width"], json!(128));
    assert!(built.graph["1"]["inputs"]["width"].is_i64());
    assert_eq!(built.graph["9"]["inputs"]["filename_prefix"], "custom");
    assert_eq!(built.checkpoint, None);
    assert_eq!(built.node_count(), 2);
}

#[test]
fn an_override_of_a_missing_node_is_rejected() {
    let error = raw_workflow(&workflow(vec![set("42", "width", json!(1))])).expect_err("no node");
    match error {
        BridgeError::InvalidField { field, reason } => {
            assert_eq!(field, "raw.overrides[0].node_id");
            assert!(reason.contains("42"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let empty = Workflow {
        graph: Some(pbjson_types::Struct::default()),
        overrides: vec![],
    };
    assert!(raw_workflow(&empty).is_err());
    assert!(raw_workflow(&Workflow::default()).is_err());
}

#[test]
fn raw_seeds_and_checkpoints_are_read_not_changed() {
    let built = text_to_image(&request(), Some("a.safetensors"), || 7).expect("valid");
    let graph: pbjson_types::Struct = serde_json::from_value(built.graph.clone()).expect("struct");
    let raw = raw_workflow(&Workflow {
        graph: Some(graph),
        overrides: vec![],
    })
    .expect("valid");
    assert_eq!(raw.seed, 7);
    assert_eq!(raw.checkpoint.as_deref(), Some("a.safetensors"));
}
