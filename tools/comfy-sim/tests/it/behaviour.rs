//! Routing, HTTP edge cases, the text-to-image simulation and PNG determinism.

use easel_comfy_sim::SimConfig;
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn http_edges_match_recording() {
    let gets = fixture("01_gets.json");
    let misc = fixture("09_misc.json");
    let sim = sim_with(SimConfig {
        vram: Some((24_000_000_000, 20_000_000_000)),
        ..SimConfig::with_request_faults()
    })
    .await;
    for path in [
        "/queue",
        "/history",
        "/prompt",
        "/embeddings",
        "/features",
        "/models",
        "/object_info/EmptyImage",
        "/object_info/NoSuchNode",
        "/api/queue",
        "/api/object_info/SaveImage",
    ] {
        let reply = get(&sim, path).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_json_content(&reply);
        assert_eq!(reply.json(), gets[path]["json"], "{path}");
    }
    let mut stats = get(&sim, "/system_stats").await.json();
    let mut expected_stats = fixture("01_system_stats.json");
    expected_stats["devices"][0]["index"] = json!(0);
    assert_same_shape(&stats, &expected_stats, "system_stats");
    stats["devices"][0]["index"] = json!(0);
    assert_eq!(stats["devices"][0]["vram_total"], 24_000_000_000u64);
    assert_eq!(stats["devices"][0]["type"], "cuda");
    assert_eq!(
        get(&sim, "/models/checkpoints").await.json(),
        json!([
            "sd_xl_base_1.0.safetensors",
            "v1-5-pruned-emaonly.safetensors"
        ])
    );
    assert_empty(&get(&sim, "/models/nonexistent_folder").await, 404);
    let missing = get(&sim, "/no/such/route").await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(
        missing.header("transfer-encoding").as_deref(),
        Some("chunked")
    );
    let info = get(&sim, "/object_info").await.json();
    for class in [
        "CheckpointLoaderSimple",
        "CLIPTextEncode",
        "EmptyLatentImage",
        "KSampler",
        "VAEDecode",
        "SaveImage",
        "PreviewImage",
        "EmptyImage",
        "ImageBlur",
        "ImageInvert",
        "ImageScale",
        "LoadImage",
        "SaveImageWebsocket",
    ] {
        assert!(info.get(class).is_some(), "{class}");
    }
    assert_eq!(
        info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0],
        json!([
            "sd_xl_base_1.0.safetensors",
            "v1-5-pruned-emaonly.safetensors"
        ])
    );

    // Origin check and OPTIONS.
    let url = format!("{}/queue", sim.base_url());
    let port = sim.addr.port();
    let forbidden = send(http().get(&url).header("Origin", "http://evil.example")).await;
    assert_empty(&forbidden, 403);
    assert_empty(
        &send(http().get(&url).header("Origin", "http://localhost")).await,
        403,
    );
    let allowed = send(
        http()
            .get(&url)
            .header("Origin", format!("http://127.0.0.1:{port}")),
    )
    .await;
    assert_eq!(allowed.json(), misc["origin_match"]["body"]);
    assert_empty(
        &send(http().request(
            reqwest::Method::OPTIONS,
            format!("{}/prompt", sim.base_url()),
        ))
        .await,
        200,
    );
    sim.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn prompt_options_and_history_paging() {
    let misc = fixture("09_misc.json");
    let sim = sim().await;
    let client = client_id();
    let mut ws = Ws::connect(&sim, &client).await;
    let mut ids = Vec::new();
    for case in [
        "client_prompt_id_first",
        "client_prompt_id_second_same_id",
        "explicit_number",
        "coerce_float_width",
        "coerce_string_width",
        "coerce_bool_width",
        "partial_execution_targets",
        "extra_data_passthrough",
    ] {
        let mut body = misc[case]["post"]["request"]["body"].clone();
        body["client_id"] = json!(client);
        let reply = post_json(&sim, "/prompt", &body).await;
        assert_eq!(reply.status, 200, "{case}");
        let expected = &misc[case]["post"]["json"];
        if body.get("prompt_id").is_some() {
            assert_eq!(reply.json()["prompt_id"], expected["prompt_id"], "{case}");
        }
        if body.get("number").is_some() {
            assert_eq!(reply.json()["number"], expected["number"], "{case}");
        }
        let prompt_id = reply.json()["prompt_id"].as_str().expect("id").to_owned();
        let messages = ws.until_done(&prompt_id).await;
        let sequence: Vec<String> = misc[case]["ws_sequence"]
            .as_array()
            .expect("seq")
            .iter()
            .map(|item| {
                item.as_str()
                    .unwrap_or("")
                    .split(' ')
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        let actual: Vec<String> = messages
            .iter()
            .map(|message| message["type"].as_str().unwrap_or("").to_owned())
            .collect();
        assert_eq!(actual, sequence, "{case}");
        let history = get(&sim, &format!("/history/{prompt_id}")).await.json();
        let expected_history = misc[case]["history"]
            .as_object()
            .and_then(|map| map.values().next())
            .expect("history");
        assert_eq!(
            history[&prompt_id]["prompt"][2], expected_history["prompt"][2],
            "{case}: coerced graph"
        );
        assert_eq!(
            history[&prompt_id]["prompt"][3],
            expected_history["prompt"][3]
                .as_object()
                .map(|extra| {
                    let mut extra = extra.clone();
                    extra.insert("client_id".to_owned(), json!(client));
                    Value::Object(extra)
                })
                .expect("extra"),
            "{case}: extra_data"
        );
        assert_eq!(
            history[&prompt_id]["outputs"], expected_history["outputs"],
            "{case}"
        );
        if !ids.contains(&prompt_id) {
            ids.push(prompt_id);
        }
    }
    let rejected = post_json(
        &sim,
        "/prompt",
        &misc["partial_execution_targets_non_output"]["post"]["request"]["body"],
    )
    .await;
    assert_eq!(
        rejected.json(),
        misc["partial_execution_targets_non_output"]["post"]["json"]
    );
    let keys = |value: Value| {
        value
            .as_object()
            .map(|map| map.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(
        keys(get(&sim, "/history").await.json()),
        ids,
        "insertion order, re-used id keeps its place"
    );
    assert_eq!(
        keys(get(&sim, "/history?max_items=2").await.json()),
        ids[ids.len() - 2..].to_vec()
    );
    assert_eq!(
        keys(get(&sim, "/history?max_items=2&offset=0").await.json()),
        ids[..2].to_vec()
    );
    assert_empty(
        &post_json(&sim, "/history", &json!({"delete": [ids[0]]})).await,
        200,
    );
    assert_eq!(
        get(&sim, &format!("/history/{}", ids[0])).await.json(),
        json!({})
    );
    assert_empty(
        &post_json(&sim, "/history", &json!({"clear": true})).await,
        200,
    );
    assert_eq!(get(&sim, "/history").await.json(), json!({}));
    sim.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn raw_frames_are_python_style() {
    let sim = sim().await;
    let mut ws = Ws::connect(&sim, "rawcheck").await;
    let body = json!({"prompt": simple_graph(1, "proto_raw é"), "client_id": "rawcheck"});
    let reply = post_json(&sim, "/prompt", &body).await;
    let text = reply.text();
    assert!(text.starts_with("{\"prompt_id\": \""), "{text}");
    assert!(
        text.contains("\", \"number\": 0, \"node_errors\": {}}"),
        "{text}"
    );
    let prompt_id = reply.json()["prompt_id"].as_str().expect("id").to_owned();
    let messages = ws.until_done(&prompt_id).await;
    let executed = messages
        .iter()
        .find(|message| message["type"] == "executed")
        .expect("executed");
    assert_eq!(
        executed["data"]["output"]["images"][0]["filename"],
        "proto_raw é_00001_.png"
    );
    // Byte-level: fetch the history raw and look for the escaped name.
    let raw = get(&sim, &format!("/history/{prompt_id}")).await.text();
    assert!(raw.contains("proto_raw \\u00e9_00001_.png"), "{raw}");
    sim.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn websocket_routing_rules() {
    let extras = fixture("03_extras.json");
    let sim = sim().await;
    let owner = client_id();
    let mut first = Ws::connect(&sim, &owner).await;
    let mut other = Ws::connect(&sim, &client_id()).await;
    // Without clientId the server assigns a 32-hex sid.
    let (mut anonymous, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", sim.addr))
        .await
        .expect("ws");
    let initial = futures::StreamExt::next(&mut anonymous)
        .await
        .expect("frame")
        .expect("ok");
    let initial: Value = serde_json::from_str(initial.to_text().expect("text")).expect("json");
    assert_eq!(initial["data"]["sid"].as_str().map(str::len), Some(32));
    // Same client id twice: the newest socket wins.
    let mut second = Ws::connect(&sim, &owner).await;
    second.send_text("not json").await;
    second
        .send_text(r#"{"type": "feature_flags", "data": {"supports_preview_metadata": true}}"#)
        .await;
    assert_eq!(
        second.next_text().await,
        json!({"type": "feature_flags", "data": {"supports_preview_metadata": true, "max_upload_size": 104857600}})
    );

    let graph = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 2, "color": 65307}},
        "6": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "route"}},
    });
    let body = json!({"prompt": graph, "client_id": owner, "extra_data": {"extra_pnginfo": {"workflow": {"nodes": []}}}});
    let prompt_id = queue_prompt(&sim, &body).await;
    let mut binaries = Vec::new();
    let mut messages = Vec::new();
    loop {
        match second.next().await {
            Incoming::Text(message) => {
                let done = message["type"] == "executing" && message["data"]["node"].is_null();
                messages.push(message);
                if done {
                    break;
                }
            }
            Incoming::Binary(bytes) => binaries.push(bytes),
            _ => panic!("closed"),
        }
    }
    assert_eq!(binaries.len(), 2);
    assert_eq!(&binaries[0][..4], &[0, 0, 0, 4]);
    let progress = messages
        .iter()
        .filter(|message| message["type"] == "progress")
        .count();
    assert_eq!(progress, 2);
    assert_eq!(
        kinds(
            &other
                .until(|message| message["data"]["status"]["exec_info"]["queue_remaining"] == 0)
                .await
        ),
        kinds(&recorded(&extras["other_client_sees"]["other_messages"]))
    );
    // The replaced socket got nothing at all.
    let nothing = tokio::time::timeout(std::time::Duration::from_millis(200), first.next()).await;
    assert!(nothing.is_err(), "the old socket must get nothing");
    let file = view_output(&sim, "route_00001_.png").await;
    let chunks = easel_comfy_sim::png::text_chunks(&file.body).expect("chunks");
    assert_eq!(
        chunks
            .iter()
            .map(|(key, _)| key.as_str())
            .collect::<Vec<_>>(),
        ["prompt", "workflow"]
    );
    assert_eq!(chunks[1].1, "{\"nodes\": []}");

    // No client id: only progress_state (and status) reach other sockets.
    let prompt_id_2 = queue_prompt(&sim, &json!({"prompt": simple_graph(9, "noclient")})).await;
    let seen = other
        .until(|message| {
            message["type"] == "status"
                && message["data"]["status"]["exec_info"]["queue_remaining"] == 0
        })
        .await;
    let types: Vec<String> = seen
        .iter()
        .map(|message| message["type"].as_str().unwrap_or("").to_owned())
        .collect();
    let expected: Vec<String> =
        recorded(&extras["prompt_without_client_id"]["other_socket_messages"])
            .iter()
            .map(|message| message["type"].as_str().unwrap_or("").to_owned())
            .collect();
    assert_eq!(types, expected);
    assert_ne!(prompt_id, prompt_id_2);
    sim.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn reconnect_during_a_run_replays_the_running_node() {
    let sim = sim().await;
    let client = client_id();
    let mut ws = Ws::connect(&sim, &client).await;
    let body = json!({"prompt": simple_graph(3, "reconnect"), "client_id": client, "extra_data": {"easel_sim": {"node_delay_ms": 400}}});
    let prompt_id = queue_prompt(&sim, &body).await;
    ws.until(|message| message["type"] == "executing" && message["data"]["node"] == "1")
        .await;
    drop(ws);
    let mut again = Ws::connect(&sim, &client).await;
    assert_eq!(
        again.initial["data"]["status"]["exec_info"]["queue_remaining"],
        1
    );
    assert_eq!(
        again.next_text().await,
        json!({"type": "executing", "data": {"node": "1"}})
    );
    let rest = again.until_done(&prompt_id).await;
    assert!(
        rest.iter()
            .any(|message| message["type"] == "execution_success")
    );
    sim.shutdown().await.expect("shutdown");
}

async fn run_txt2img(
    sim: &easel_comfy_sim::SimHandle,
    ws: &mut Ws,
    client: &str,
    graph: Value,
) -> (Vec<Value>, Vec<u8>) {
    let body = json!({"prompt": graph, "client_id": client});
    let prompt_id = queue_prompt(sim, &body).await;
    let messages = ws.until_done(&prompt_id).await;
    let executed = messages
        .iter()
        .find(|message| message["type"] == "executed")
        .expect("executed");
    let filename = executed["data"]["output"]["images"][0]["filename"]
        .as_str()
        .expect("filename")
        .to_owned();
    (messages, view_output(sim, &filename).await.body)
}

#[tokio::test]
async fn txt2img_pngs_are_deterministic() {
    let sim = sim().await;
    let client = client_id();
    let mut ws = Ws::connect(&sim, &client).await;
    let (messages, first) =
        run_txt2img(&sim, &mut ws, &client, txt2img(42, "a red fox", 96, 64, 4)).await;
    let progress: Vec<(u64, u64)> = messages
        .iter()
        .filter(|message| message["type"] == "progress")
        .map(|message| {
            (
                message["data"]["value"].as_u64().unwrap_or(0),
                message["data"]["max"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(progress, [(1, 4), (2, 4), (3, 4), (4, 4)]);
    let decoded = easel_comfy_sim::png::decode(&first).expect("png");
    assert_eq!((decoded.image.width, decoded.image.height), (96, 64));
    let chunks = easel_comfy_sim::png::text_chunks(&first).expect("chunks");
    assert_eq!(chunks[0].0, "prompt");
    assert!(chunks[0].1.contains("a red fox"));

    let (_, other_seed) =
        run_txt2img(&sim, &mut ws, &client, txt2img(43, "a red fox", 96, 64, 4)).await;
    let (_, other_text) =
        run_txt2img(&sim, &mut ws, &client, txt2img(42, "a blue fox", 96, 64, 4)).await;
    let (messages, again) =
        run_txt2img(&sim, &mut ws, &client, txt2img(42, "a red fox", 96, 64, 4)).await;
    let executed = messages
        .iter()
        .find(|message| message["type"] == "executed")
        .expect("executed");
    assert_eq!(
        executed["data"]["output"]["images"][0]["filename"],
        "t2i_00004_.png"
    );
    assert_eq!(first, again, "same inputs, same bytes");
    let pixels = |bytes: &[u8]| {
        easel_comfy_sim::png::decode(bytes)
            .expect("png")
            .image
            .to_rgb8()
    };
    assert_ne!(pixels(&first), pixels(&other_seed));
    assert_ne!(pixels(&first), pixels(&other_text));
    sim.shutdown().await.expect("shutdown");
}
