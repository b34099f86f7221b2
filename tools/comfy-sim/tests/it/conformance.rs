//! The recorded scenarios, replayed against the simulator.

use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn success_run_matches_recording() {
    let recording = fixture("02_success_run.json");
    let sim = sim().await;
    let client = client_id();
    let mut ws = Ws::connect(&sim, &client).await;
    assert_same_shape(
        &ws.initial,
        &recording["ws_initial_messages"][0]["json"],
        "initial",
    );
    assert_eq!(ws.initial["data"]["sid"], client.as_str());

    let mut body = recording["post_prompt"]["request"]["body"].clone();
    body["client_id"] = json!(client);
    let reply = post_json(&sim, "/prompt", &body).await;
    assert_eq!(reply.status, 200);
    assert_json_content(&reply);
    assert_same_shape(&reply.json(), &recording["post_prompt"]["json"], "post");
    assert_eq!(reply.json()["number"], 0);
    let prompt_id = reply.json()["prompt_id"].as_str().expect("id").to_owned();

    let messages = ws.until_done(&prompt_id).await;
    let expected = recorded(&recording["ws_messages"]);
    assert_eq!(kinds(&messages), kinds(&expected));
    for (actual, expected) in messages.iter().zip(&expected) {
        assert_same_shape(actual, expected, actual["type"].as_str().unwrap_or("?"));
    }
    // progress_state is cumulative.
    let last_state = messages
        .iter()
        .rfind(|message| message["type"] == "progress_state")
        .expect("state");
    assert_eq!(
        last_state["data"]["nodes"]
            .as_object()
            .map(|nodes| nodes.len()),
        Some(3)
    );

    let history = get(&sim, &format!("/history/{prompt_id}")).await;
    assert_json_content(&history);
    let expected_history =
        &recording["history_prompt"]["json"]["c5211e91-b01b-4b97-8b99-fe0dc269d683"];
    assert_same_shape(&history.json()[&prompt_id], expected_history, "history");
    assert_eq!(
        history.json()[&prompt_id]["outputs"],
        expected_history["outputs"]
    );
    assert_eq!(history.json()[&prompt_id]["prompt"][4], json!(["9"]));

    let view = view_output(&sim, "proto_success_00001_.png").await;
    assert_eq!(view.status, 200);
    assert_eq!(view.header("content-type").as_deref(), Some("image/png"));
    assert_eq!(
        view.header("content-disposition").as_deref(),
        Some("filename=\"proto_success_00001_.png\"")
    );
    assert_eq!(
        view.header("content-length"),
        Some(view.body.len().to_string())
    );
    assert_eq!(&view.body[..8], b"\x89PNG\r\n\x1a\n");
    let chunks = easel_comfy_sim::png::text_chunks(&view.body).expect("chunks");
    assert_eq!(chunks[0].0, "prompt");
    let decoded = easel_comfy_sim::png::decode(&view.body).expect("decode");
    assert_eq!((decoded.image.width, decoded.image.height), (512, 512));

    let queue = get(&sim, "/queue").await;
    assert_eq!(queue.json(), recording["queue_after"]["json"]);
    let all = get(&sim, "/history").await;
    assert_eq!(all.json().as_object().map(|map| map.len()), Some(1));
    sim.shutdown().await.expect("shutdown");
}

/// Every recorded rejected or odd request in 04_errors.json, byte-compared where no ids appear.
#[tokio::test]
async fn error_cases_match_recording() {
    let recording = fixture("04_errors.json");
    let sim = sim().await;
    let cases = recording.as_object().expect("cases");
    let mut checked = 0;
    for (name, case) in cases {
        let Some(request) = case.get("request").filter(|request| request.is_object()) else {
            continue;
        };
        if name.starts_with("runtime_error") {
            continue;
        }
        let method = request["method"].as_str().expect("method");
        let path = request["path"].as_str().expect("path");
        let reply = match (method, &request["body"]) {
            ("GET", _) => get(&sim, path).await,
            (_, Value::String(raw)) => post_raw(&sim, path, raw).await,
            (_, Value::Null) => post_raw(&sim, path, "").await,
            (_, body) => post_json(&sim, path, body).await,
        };
        assert_eq!(
            reply.status,
            case["status"].as_u64().expect("status") as u16,
            "{name}: {}",
            reply.text()
        );
        let headers = &case["headers"];
        for header in ["Content-Type", "Content-Length", "Connection"] {
            let Some(expected) = headers.get(header).and_then(Value::as_str) else {
                continue;
            };
            // A random prompt id; the recorded tracebacks were shortened after recording.
            if header == "Content-Length"
                && ((reply.status == 200 && path == "/prompt")
                    || reply.text().contains("traceback"))
            {
                continue;
            }
            assert_eq!(
                reply.header(header).as_deref(),
                Some(expected),
                "{name}: {header}"
            );
        }
        match &case["json"] {
            Value::Null => {
                if let Some(text) = case.get("text").and_then(Value::as_str) {
                    assert_eq!(reply.text(), text, "{name}");
                }
            }
            expected if reply.status == 200 && path == "/prompt" => {
                assert_same_shape(&reply.json(), expected, name);
            }
            expected => assert_eq!(&reply.json(), expected, "{name}"),
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} cases");
    sim.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn runtime_error_matches_recording() {
    let recording = fixture("04_errors.json");
    let sim = sim().await;
    let client = client_id();
    let mut ws = Ws::connect(&sim, &client).await;
    let form = reqwest::multipart::Form::new()
        .text("overwrite", "true")
        .part(
            "image",
            reqwest::multipart::Part::bytes(b"not a real png!!!".to_vec()).file_name("corrupt.png"),
        );
    let upload = send(
        http()
            .post(format!("{}/upload/image", sim.base_url()))
            .multipart(form),
    )
    .await;
    assert_eq!(upload.json(), recording["runtime_error_upload"]["json"]);

    let mut body = recording["runtime_error_post"]["request"]["body"].clone();
    body["client_id"] = json!(client);
    let prompt_id = queue_prompt(&sim, &body).await;
    let messages = ws.until_done(&prompt_id).await;
    let expected = recorded(&recording["runtime_error_ws"]);
    assert_eq!(kinds(&messages), kinds(&expected));
    let error = messages
        .iter()
        .find(|message| message["type"] == "execution_error")
        .expect("error");
    let expected_error = expected
        .iter()
        .find(|message| message["type"] == "execution_error")
        .expect("error");
    assert_same_shape(error, expected_error, "execution_error");
    assert_eq!(
        error["data"]["exception_type"],
        "PIL.UnidentifiedImageError"
    );
    assert!(
        error["data"]["exception_message"]
            .as_str()
            .is_some_and(|text| text.starts_with("cannot identify image file '")
                && text.ends_with("corrupt.png'\n"))
    );

    let history = get(&sim, &format!("/history/{prompt_id}")).await.json();
    let entry = &history[&prompt_id];
    let expected_entry =
        &recording["runtime_error_history"]["336da818-9072-48c3-ad4d-af694047b097"];
    assert_same_shape(entry, expected_entry, "history");
    assert_eq!(entry["status"]["status_str"], "error");
    assert_eq!(entry["status"]["completed"], false);
    sim.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn cached_rerun_matches_recording() {
    let recording = fixture("04_errors.json");
    let runs = recording["j_same_prompt_three_times"]
        .as_array()
        .expect("runs");
    let sim = sim().await;
    let client = client_id();
    let mut ws = Ws::connect(&sim, &client).await;
    let mut body = runs[0]["post"]["request"]["body"].clone();
    body["client_id"] = json!(client);
    for run in runs {
        let prompt_id = queue_prompt(&sim, &body).await;
        let messages = ws.until_done(&prompt_id).await;
        assert_eq!(kinds(&messages), kinds(&recorded(&run["ws_messages"])));
        let cached = messages
            .iter()
            .find(|message| message["type"] == "execution_cached")
            .expect("cached");
        let expected_cached = recorded(&run["ws_messages"])
            .into_iter()
            .find(|message| message["type"] == "execution_cached")
            .expect("cached");
        assert_eq!(cached["data"]["nodes"], expected_cached["data"]["nodes"]);
        let history = get(&sim, &format!("/history/{prompt_id}")).await.json();
        assert_eq!(history[&prompt_id]["outputs"], run["history_outputs"]);
    }
    let files = std::fs::read_dir(sim.output_dir())
        .expect("output dir")
        .count();
    assert_eq!(files, 1, "a cached re-run writes no file");

    // Only the prefix changes: nodes 1 and 2 cached, 9 runs.
    let expected = &recording["j2_partially_cached"];
    body["prompt"]["9"]["inputs"]["filename_prefix"] = json!("proto_cached_changed");
    let prompt_id = queue_prompt(&sim, &body).await;
    let messages = ws.until_done(&prompt_id).await;
    assert_eq!(kinds(&messages), kinds(&recorded(&expected["ws_messages"])));
    let cached = messages
        .iter()
        .find(|message| message["type"] == "execution_cached")
        .expect("cached");
    assert_eq!(cached["data"]["nodes"], json!(["1", "2"]));
    sim.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn partial_valid_prompt_runs_the_valid_output() {
    let recording = fixture("12_partial_valid.json");
    let sim = sim().await;
    let client = client_id();
    let mut ws = Ws::connect(&sim, &client).await;
    let mut body = recording["post"]["request"]["body"].clone();
    body["client_id"] = json!(client);
    let reply = post_json(&sim, "/prompt", &body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json()["node_errors"],
        recording["post"]["json"]["node_errors"]
    );
    let prompt_id = reply.json()["prompt_id"].as_str().expect("id").to_owned();
    let messages = ws.until_done(&prompt_id).await;
    let sequence: Vec<String> = recording["ws_sequence"]
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
    assert_eq!(actual, sequence);
    let history = get(&sim, &format!("/history/{prompt_id}")).await.json();
    assert_eq!(
        history[&prompt_id]["prompt"][4],
        recording["history_outputs_to_execute"]
    );
    assert_eq!(history[&prompt_id]["outputs"], recording["history_outputs"]);
    // A rejected prompt also uses up a number.
    let before = post_json(&sim, "/prompt", &json!({"prompt": simple_graph(1, "n")}))
        .await
        .json()["number"]
        .clone();
    let rejected = post_json(&sim, "/prompt", &json!({"prompt": {"1": {"class_type": "EmptyImage", "inputs": {}}, "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}})).await;
    assert_eq!(rejected.status, 400);
    let after = post_json(&sim, "/prompt", &json!({"prompt": simple_graph(2, "n")}))
        .await
        .json()["number"]
        .clone();
    assert_eq!(after.as_i64(), before.as_i64().map(|number| number + 2));
    sim.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn interrupt_takes_effect_at_the_next_node() {
    let recording = fixture("05_queue_interrupt.json");
    let sim = sim().await;
    let client = client_id();
    let mut ws = Ws::connect(&sim, &client).await;
    let graph = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 3145729}},
        "10": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 3, "sigma": 1.0}},
        "11": {"class_type": "ImageBlur", "inputs": {"image": ["10", 0], "blur_radius": 3, "sigma": 1.0}},
        "12": {"class_type": "ImageBlur", "inputs": {"image": ["11", 0], "blur_radius": 3, "sigma": 1.0}},
        "99": {"class_type": "SaveImage", "inputs": {"images": ["12", 0], "filename_prefix": "proto_int"}},
    });
    let body = json!({"prompt": graph, "client_id": client, "extra_data": {"easel_sim": {"node_delay_ms": 300}}});
    let prompt_id = queue_prompt(&sim, &body).await;
    let mut messages = ws
        .until(|message| message["type"] == "executing" && message["data"]["node"] == "10")
        .await;
    // A targeted interrupt for another prompt does nothing; the running one's id works.
    assert_empty(
        &post_json(
            &sim,
            "/interrupt",
            &json!({"prompt_id": "00000000-0000-0000-0000-000000000000"}),
        )
        .await,
        200,
    );
    assert_empty(
        &post_json(&sim, "/interrupt", &json!({"prompt_id": prompt_id})).await,
        200,
    );
    messages.extend(ws.until_done(&prompt_id).await);
    let expected: Vec<String> = recording["h2_targeted_interrupt"]["ws_sequence"]
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
    assert_eq!(actual, expected);
    let interrupted = messages
        .iter()
        .find(|message| message["type"] == "execution_interrupted")
        .expect("interrupted");
    assert_eq!(interrupted["data"]["node_id"], "11");
    assert_eq!(interrupted["data"]["executed"], json!(["10", "1"]));
    let history = get(&sim, &format!("/history/{prompt_id}")).await.json();
    assert_eq!(history[&prompt_id]["status"]["status_str"], "error");
    assert_eq!(history[&prompt_id]["outputs"], json!({}));

    // Interrupting while idle does not affect the next prompt.
    assert_empty(&post_raw(&sim, "/interrupt", "").await, 200);
    let prompt_id = queue_prompt(
        &sim,
        &json!({"prompt": simple_graph(5, "after_idle"), "client_id": client}),
    )
    .await;
    let messages = ws.until_done(&prompt_id).await;
    assert!(
        messages
            .iter()
            .any(|message| message["type"] == "execution_success")
    );
    sim.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn queue_delete_clear_and_front() {
    let sim = sim().await;
    let client = client_id();
    let mut ws = Ws::connect(&sim, &client).await;
    let slow = json!({"prompt": simple_graph(1, "q_a"), "client_id": client, "extra_data": {"easel_sim": {"node_delay_ms": 400}}});
    let a = queue_prompt(&sim, &slow).await;
    ws.until(|message| message["type"] == "executing" && message["data"]["node"] == "1")
        .await;
    let b = queue_prompt(
        &sim,
        &json!({"prompt": simple_graph(2, "q_b"), "client_id": client}),
    )
    .await;
    let c = queue_prompt(
        &sim,
        &json!({"prompt": simple_graph(3, "q_c"), "client_id": client}),
    )
    .await;
    let front = post_json(
        &sim,
        "/prompt",
        &json!({"prompt": simple_graph(4, "q_front"), "client_id": client, "front": true}),
    )
    .await
    .json();
    assert_eq!(front["number"], -3);
    let queue = get(&sim, "/queue").await.json();
    assert_eq!(queue["queue_running"][0][1], a.as_str());
    let numbers: Vec<i64> = queue["queue_pending"]
        .as_array()
        .expect("pending")
        .iter()
        .filter_map(|item| item[0].as_i64())
        .collect();
    assert_eq!(numbers, vec![-3, 2, 1], "heap order, not sorted");
    assert_eq!(queue["queue_pending"][0].as_array().map(Vec::len), Some(5));

    assert_empty(
        &post_json(&sim, "/queue", &json!({"delete": [b]})).await,
        200,
    );
    assert_empty(
        &post_json(&sim, "/queue", &json!({"delete": ["unknown"]})).await,
        200,
    );
    assert_empty(
        &post_json(&sim, "/queue", &json!({"delete": [a]})).await,
        200,
    );
    assert_empty(
        &post_json(&sim, "/queue", &json!({"clear": true})).await,
        200,
    );
    assert_empty(&post_json(&sim, "/queue", &json!({})).await, 200);
    let messages = ws.until_done(&a).await;
    let statuses: Vec<String> = kinds(&messages)
        .into_iter()
        .filter(|kind| kind.starts_with("status"))
        .collect();
    assert_eq!(
        statuses,
        [
            "status 2", "status 3", "status 4", "status 3", "status 1", "status 0"
        ]
    );
    let history = get(&sim, "/history").await.json();
    assert!(history.get(&a).is_some());
    for deleted in [&b, &c] {
        assert!(history.get(deleted).is_none());
    }
    assert_eq!(
        get(&sim, "/queue").await.json(),
        json!({"queue_running": [], "queue_pending": []})
    );
    sim.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn upload_cases_match_recording() {
    let recording = fixture("06_upload.json");
    let sim = sim().await;
    let png = fixture_bytes("06_upload_input.png");
    let upload = |name: &str, bytes: Vec<u8>, fields: Vec<(&'static str, &'static str)>| {
        let mut form = reqwest::multipart::Form::new();
        for (key, value) in fields {
            form = form.text(key, value);
        }
        form = form.part(
            "image",
            reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned()),
        );
        http()
            .post(format!("{}/upload/image", sim.base_url()))
            .multipart(form)
    };
    let first = send(upload(
        "proto_upload.png",
        png.clone(),
        vec![("overwrite", "true")],
    ))
    .await;
    assert_json_content(&first);
    assert_eq!(first.json(), recording["first_upload"]["json"]);
    let same = send(upload("proto_upload.png", png.clone(), vec![])).await;
    assert_eq!(
        same.json(),
        recording["same_name_same_bytes_no_overwrite"]["json"]
    );
    let mut other = png.clone();
    other.extend_from_slice(b"tail");
    let renamed = send(upload("proto_upload.png", other, vec![])).await;
    assert_eq!(
        renamed.json(),
        recording["same_name_other_bytes_no_overwrite"]["json"]
    );
    let sub = send(upload(
        "proto_upload.png",
        png.clone(),
        vec![("subfolder", "protosub"), ("overwrite", "true")],
    ))
    .await;
    assert_eq!(sub.json(), recording["subfolder"]["json"]);
    let temp = send(upload(
        "proto_upload_temp.png",
        png.clone(),
        vec![("type", "temp"), ("overwrite", "true")],
    ))
    .await;
    assert_eq!(temp.json(), recording["type_temp"]["json"]);
    let output = send(upload(
        "proto_upload_out.png",
        png.clone(),
        vec![("type", "output"), ("overwrite", "true")],
    ))
    .await;
    assert_eq!(output.json(), recording["type_output"]["json"]);
    assert_empty(
        &send(upload(
            "evil.png",
            png.clone(),
            vec![("subfolder", "../..")],
        ))
        .await,
        400,
    );
    assert_empty(&send(upload("../evil.png", png.clone(), vec![])).await, 400);
    let notes = send(upload(
        "notes.txt",
        b"hello".to_vec(),
        vec![("overwrite", "true")],
    ))
    .await;
    assert_eq!(notes.json(), recording["non_image_bytes_accepted?"]["json"]);
    let no_image = reqwest::multipart::Form::new()
        .text("overwrite", "true")
        .part(
            "other",
            reqwest::multipart::Part::bytes(png.clone()).file_name("a.png"),
        );
    assert_empty(
        &send(
            http()
                .post(format!("{}/upload/image", sim.base_url()))
                .multipart(no_image),
        )
        .await,
        400,
    );
    assert_empty(
        &post_json(&sim, "/upload/image", &json!({"image": "x"})).await,
        400,
    );

    let choices =
        get(&sim, "/object_info/LoadImage").await.json()["LoadImage"]["input"]["required"]["image"]
            [0]
        .clone();
    assert_eq!(choices, json!(["proto_upload (1).png", "proto_upload.png"]));
    let view = get(&sim, "/view?filename=proto_upload.png&type=input").await;
    assert_eq!(view.body, png);

    // LoadImage → ImageInvert → SaveImage, from the root, a subfolder and an annotated name.
    let client = client_id();
    let mut ws = Ws::connect(&sim, &client).await;
    for (image, prefix) in [
        ("proto_upload.png", "inv_root"),
        ("protosub/proto_upload.png", "inv_sub"),
        ("proto_upload_out.png [output]", "inv_out"),
    ] {
        let body = json!({"client_id": client, "prompt": {
            "1": {"class_type": "LoadImage", "inputs": {"image": image}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "9": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
        }});
        let prompt_id = queue_prompt(&sim, &body).await;
        let messages = ws.until_done(&prompt_id).await;
        assert_eq!(
            kinds(&messages),
            kinds(&recorded(&recording["workflow_root"]["ws_messages"])),
            "{image}"
        );
        let file = view_output(&sim, &format!("{prefix}_00001_.png")).await;
        let decoded = easel_comfy_sim::png::decode(&file.body).expect("png");
        assert_eq!((decoded.image.width, decoded.image.height), (64, 48));
        let pixels = decoded.image.to_rgb8();
        assert_eq!(&pixels[..3], &[54, 225, 245], "float rounding as recorded");
    }
    sim.shutdown().await.expect("shutdown");
}
