//! Tenant isolation on the backend: graphs that read the backend's files are refused before
//! ComfyUI sees them, outputs never persist on the backend (or get an unguessable per-run
//! prefix where it cannot stream them), images are stored without the prompt text.

use std::path::{Path, PathBuf};

use easel_comfy_sim::SimConfig;
use easel_proto::bridge::v1::run_workflow_request::Workflow;
use easel_proto::bridge::v1::run_workflow_response::Event;
use easel_proto::bridge::v1::{OutputImage, RunWorkflowRequest};
use easel_proto::jobs::v1::Workflow as RawWorkflow;
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::{fast_config, last, run, start, text};

fn raw(run_id: &str, graph: serde_json::Value) -> RunWorkflowRequest {
    RunWorkflowRequest {
        run_id: run_id.to_string(),
        workflow: Some(Workflow::Raw(RawWorkflow {
            graph: Some(serde_json::from_value(graph).expect("struct")),
            overrides: vec![],
        })),
        ..Default::default()
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

fn outputs(events: &[Event]) -> Vec<OutputImage> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Output(output) => Some(output.clone()),
            _ => None,
        })
        .collect()
}

fn has_text_chunk(png: &[u8]) -> bool {
    png.windows(4)
        .any(|window| matches!(window, b"tEXt" | b"iTXt" | b"zTXt"))
}

#[tokio::test]
async fn graphs_reading_backend_files_are_refused_before_comfyui() {
    let sim = easel_comfy_sim::spawn(SimConfig::default())
        .await
        .expect("sim");
    let mut bridge = start(fast_config(&[sim.base_url()])).await;
    for (index, value) in [
        "easel_00294_.png [output]",
        "x.png [temp]",
        "../x.png",
        "/etc/passwd",
        "example.png",
        "easel-input://inp_someone_else",
    ]
    .into_iter()
    .enumerate()
    {
        let graph = serde_json::json!({
            "1": {"class_type": "LoadImage", "inputs": {"image": value}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
        });
        let status = run(&mut bridge.client, raw(&format!("load-{index}"), graph))
            .await
            .expect_err(value);
        assert_eq!(status.code(), Code::InvalidArgument, "{value}: {status:?}");
        let fields: Vec<String> = status
            .check_error_details()
            .expect("details")
            .bad_request()
            .expect("bad request")
            .field_violations
            .iter()
            .map(|violation| violation.field.clone())
            .collect();
        assert_eq!(fields, ["raw.graph.1.inputs.image"], "{value}");
    }
    let graph = serde_json::json!({
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "x"}},
    });
    let status = run(&mut bridge.client, raw("save-latent", graph))
        .await
        .expect_err("denied class");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("raw.graph.2.class_type"),
        "{status:?}"
    );
    // Nothing reached ComfyUI.
    let history: serde_json::Value = reqwest::get(format!("{}/history", sim.base_url()))
        .await
        .expect("history")
        .json()
        .await
        .expect("json");
    assert_eq!(history, serde_json::json!({}));
}

#[tokio::test]
async fn outputs_stream_over_the_websocket_and_leave_nothing_on_the_backend() {
    let sim = easel_comfy_sim::spawn(SimConfig::default())
        .await
        .expect("sim");
    let mut bridge = start(fast_config(&[sim.base_url()])).await;
    let events = run(
        &mut bridge.client,
        text("streamed-1", "a secret lighthouse", 2),
    )
    .await
    .expect("queued");
    assert!(matches!(last(&events), Event::Completed(_)), "{events:?}");
    let images = outputs(&events);
    assert_eq!(images.len(), 1);
    let image = &images[0];
    assert_eq!((image.width, image.height), (64, 48));
    assert_eq!(image.node_id, "9");
    assert!(image.data.starts_with(b"\x89PNG"));
    assert!(!has_text_chunk(&image.data));
    assert!(
        files_under(sim.output_dir()).is_empty(),
        "{:?}",
        files_under(sim.output_dir())
    );

    // Keeping the metadata: the graph (prompt text included) in a `prompt` chunk.
    let mut keep = text("streamed-2", "a secret lighthouse", 2);
    keep.keep_workflow_metadata = true;
    let events = run(&mut bridge.client, keep).await.expect("queued");
    let images = outputs(&events);
    assert_eq!(images.len(), 1);
    let data = &images[0].data;
    assert!(has_text_chunk(data));
    assert!(String::from_utf8_lossy(data).contains("a secret lighthouse"));
    assert!(files_under(sim.output_dir()).is_empty());
}

#[tokio::test]
async fn without_websocket_images_outputs_get_an_unguessable_prefix_and_lose_their_text() {
    let sim = easel_comfy_sim::spawn(SimConfig {
        without_nodes: vec!["SaveImageWebsocket".to_string()],
        ..SimConfig::default()
    })
    .await
    .expect("sim");
    let mut bridge = start(fast_config(&[sim.base_url()])).await;
    let graph = serde_json::json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 16, "batch_size": 1, "color": 255}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "easel"}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    });
    let events = run(&mut bridge.client, raw("prefixed-1", graph.clone()))
        .await
        .expect("queued");
    assert!(matches!(last(&events), Event::Completed(_)), "{events:?}");
    let images = outputs(&events);
    assert_eq!(images.len(), 2);
    for image in &images {
        assert!(!has_text_chunk(&image.data), "{}", image.filename);
    }
    let files = files_under(sim.output_dir());
    assert_eq!(files.len(), 2, "{files:?}");
    let relative: Vec<String> = files
        .iter()
        .map(|file| {
            file.strip_prefix(sim.output_dir())
                .expect("under")
                .display()
                .to_string()
        })
        .collect();
    for path in &relative {
        let parts: Vec<&str> = path.split('/').collect();
        assert_eq!(parts.len(), 3, "{path}");
        assert_eq!(parts[0], "easel");
        assert_eq!(parts[1].len(), 32, "{path}");
        assert!(parts[1].chars().all(|c| c.is_ascii_hexdigit()), "{path}");
    }
    // Another run of the same graph writes under another prefix.
    let mut keep = raw("prefixed-2", graph);
    keep.keep_workflow_metadata = true;
    let events = run(&mut bridge.client, keep).await.expect("queued");
    // Kept: ComfyUI's own `prompt` chunk.
    assert!(
        outputs(&events)
            .iter()
            .all(|image| has_text_chunk(&image.data))
    );
    let second: Vec<PathBuf> = files_under(sim.output_dir())
        .into_iter()
        .filter(|file| !files.contains(file))
        .collect();
    assert_eq!(second.len(), 2);
    assert!(second.iter().all(|file| {
        !relative
            .iter()
            .any(|first| file.display().to_string().contains(&first[..38]))
    }));
}
