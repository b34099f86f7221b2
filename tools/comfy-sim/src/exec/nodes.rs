//! What each node class does: the weight-free image nodes for real, the text-to-image chain
//! as a deterministic simulation driven by KSampler's seed and the prompt text.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{Data, Failure, NodeOutput, Run};
use crate::files;
use crate::image::{self, Image};
use crate::png::{self, Level};
use crate::pyjson;

/// A node's inputs: literals from the graph and values from linked nodes.
pub struct Inputs<'a> {
    literals: Option<&'a serde_json::Map<String, Value>>,
    linked: HashMap<String, Data>,
}

impl<'a> Inputs<'a> {
    /// Wraps a graph node and its resolved links.
    pub fn new(node: &'a Value, linked: HashMap<String, Data>) -> Self {
        Self {
            literals: node.get("inputs").and_then(Value::as_object),
            linked,
        }
    }

    fn literal(&self, name: &str) -> Result<&Value, Failure> {
        self.literals
            .and_then(|inputs| inputs.get(name))
            .ok_or_else(|| Failure::runtime(format!("missing input '{name}'")))
    }

    fn int(&self, name: &str) -> Result<i64, Failure> {
        let value = self.literal(name)?;
        value
            .as_i64()
            .or_else(|| {
                value
                    .as_u64()
                    .map(|big| i64::try_from(big).unwrap_or(i64::MAX))
            })
            .ok_or_else(|| Failure::runtime(format!("input '{name}' is not an integer")))
    }

    fn dimension(&self, name: &str) -> Result<u32, Failure> {
        u32::try_from(self.int(name)?.max(0))
            .map_err(|_| Failure::runtime(format!("input '{name}' is out of range")))
    }

    fn float(&self, name: &str) -> Result<f64, Failure> {
        self.literal(name)?
            .as_f64()
            .ok_or_else(|| Failure::runtime(format!("input '{name}' is not a number")))
    }

    fn text(&self, name: &str) -> Result<String, Failure> {
        Ok(pyjson::py_str(self.literal(name)?))
    }

    fn data(&self, name: &str) -> Result<&Data, Failure> {
        self.linked
            .get(name)
            .ok_or_else(|| Failure::runtime(format!("input '{name}' is not linked")))
    }

    fn images(&self, name: &str) -> Result<Arc<Vec<Image>>, Failure> {
        match self.data(name)? {
            Data::Images(images) => Ok(images.clone()),
            _ => Err(Failure::runtime(format!("input '{name}' is not an IMAGE"))),
        }
    }

    fn model(&self, name: &str) -> Result<String, Failure> {
        match self.data(name)? {
            Data::Model(checkpoint) => Ok(checkpoint.clone()),
            _ => Err(Failure::runtime(format!("input '{name}' is not a model"))),
        }
    }

    fn conditioning(&self, name: &str) -> Result<String, Failure> {
        match self.data(name)? {
            Data::Conditioning(text) => Ok(text.clone()),
            _ => Err(Failure::runtime(format!(
                "input '{name}' is not CONDITIONING"
            ))),
        }
    }
}

fn outputs(values: Vec<Data>) -> NodeOutput {
    NodeOutput { values, ui: None }
}

fn images(images: Vec<Image>) -> Data {
    Data::Images(Arc::new(images))
}

/// Runs CPU-heavy work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| Failure::runtime(error.to_string()))
}

/// Executes one node.
pub async fn run(
    run: &mut Run<'_>,
    node_id: &str,
    class_type: &str,
    inputs: &Inputs<'_>,
) -> Result<NodeOutput, Failure> {
    if class_type != "KSampler" {
        run.pause(run.node_delay()).await?;
    }
    match class_type {
        "CheckpointLoaderSimple" => {
            let checkpoint = inputs.text("ckpt_name")?;
            Ok(outputs(vec![
                Data::Model(checkpoint.clone()),
                Data::Model(checkpoint.clone()),
                Data::Model(checkpoint),
            ]))
        }
        "CLIPTextEncode" => Ok(outputs(vec![Data::Conditioning(inputs.text("text")?)])),
        "EmptyLatentImage" => Ok(outputs(vec![Data::Latent {
            width: inputs.dimension("width")?,
            height: inputs.dimension("height")?,
            batch: inputs.dimension("batch_size")?,
            generation: None,
        }])),
        "KSampler" => sample(run, node_id, inputs).await,
        "VAEDecode" => {
            let Data::Latent {
                width,
                height,
                batch,
                generation,
            } = inputs.data("samples")?.clone()
            else {
                return Err(Failure::runtime("samples is not a LATENT"));
            };
            let key = generation.unwrap_or_else(|| "unsampled".to_owned());
            // The VAE turns a width/8 × height/8 latent back into pixels.
            let (width, height) = (width / 8 * 8, height / 8 * 8);
            let decoded = blocking(move || {
                (0..batch)
                    .map(|index| {
                        image::synthesize(
                            width,
                            height,
                            image::generation_seed(&[&key, &index.to_string()]),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .await?;
            Ok(outputs(vec![images(decoded)]))
        }
        "EmptyImage" => {
            let (width, height) = (inputs.dimension("width")?, inputs.dimension("height")?);
            let color = u32::try_from(inputs.int("color")?.clamp(0, 0xFF_FFFF)).unwrap_or(0);
            let batch = inputs.dimension("batch_size")?;
            let made = blocking(move || {
                let one = Image::solid(width, height, color);
                vec![one; batch as usize]
            })
            .await?;
            Ok(outputs(vec![images(made)]))
        }
        "ImageBlur" => {
            let source = inputs.images("image")?;
            let radius = u32::try_from(inputs.int("blur_radius")?.max(0)).unwrap_or(0);
            #[allow(clippy::cast_possible_truncation)]
            let sigma = inputs.float("sigma")? as f32;
            let blurred = blocking(move || {
                source
                    .iter()
                    .map(|image| image.blur(radius, sigma))
                    .collect()
            })
            .await?;
            Ok(outputs(vec![images(blurred)]))
        }
        "ImageInvert" => {
            let source = inputs.images("image")?;
            Ok(outputs(vec![images(
                source.iter().map(Image::invert).collect(),
            )]))
        }
        "ImageScale" => {
            let source = inputs.images("image")?;
            let method = inputs.text("upscale_method")?;
            let (width, height) = (inputs.dimension("width")?, inputs.dimension("height")?);
            let center = inputs.text("crop")? == "center";
            let scaled = blocking(move || {
                source
                    .iter()
                    .map(|image| image.scale(&method, width, height, center))
                    .collect()
            })
            .await?;
            Ok(outputs(vec![images(scaled)]))
        }
        "LoadImage" => load_image(run, &inputs.text("image")?).await,
        "SolidMask" => {
            let (width, height) = (inputs.dimension("width")?, inputs.dimension("height")?);
            #[allow(clippy::cast_possible_truncation)]
            let value = inputs.float("value")? as f32;
            let mask = vec![(width, height, vec![value; width as usize * height as usize])];
            Ok(outputs(vec![Data::Mask(Arc::new(mask))]))
        }
        "SaveImage" => {
            let prefix = inputs.text("filename_prefix")?;
            save(run, &inputs.images("images")?, &prefix, false).await
        }
        "PreviewImage" => {
            let prefix = run.shared().preview_prefix.clone();
            save(run, &inputs.images("images")?, &prefix, true).await
        }
        "SaveImageWebsocket" => {
            let batch = inputs.images("images")?;
            let total = batch.len() as u64;
            for (step, image) in batch.iter().enumerate() {
                let image = image.clone();
                let encoded = blocking(move || png::encode(&image, &[], Level::Preview)).await?;
                let encoded = encoded.map_err(Failure::runtime)?;
                run.report_progress(node_id, step as u64, total, Some(&encoded));
            }
            Ok(outputs(Vec::new()))
        }
        other => Err(Failure::runtime(format!(
            "node {other} cannot be simulated"
        ))),
    }
}

async fn sample(
    run: &mut Run<'_>,
    node_id: &str,
    inputs: &Inputs<'_>,
) -> Result<NodeOutput, Failure> {
    let checkpoint = inputs.model("model")?;
    let seed = inputs.literal("seed")?.to_string();
    let steps = u32::try_from(inputs.int("steps")?.max(1)).unwrap_or(1);
    let positive = inputs.conditioning("positive")?;
    let negative = inputs.conditioning("negative")?;
    let Data::Latent {
        width,
        height,
        batch,
        ..
    } = inputs.data("latent_image")?.clone()
    else {
        return Err(Failure::runtime("latent_image is not a LATENT"));
    };
    let settings = [
        inputs.literal("cfg")?.to_string(),
        inputs.text("sampler_name")?,
        inputs.text("scheduler")?,
        inputs.literal("denoise")?.to_string(),
    ];
    for step in 1..=steps {
        run.pause(run.step_delay()).await?;
        run.report_progress(node_id, u64::from(step), u64::from(steps), None);
        run.check_step(node_id, "KSampler", step)?;
        if step % 64 == 0 {
            // Long zero-delay samplers still let the server breathe.
            tokio::task::yield_now().await;
        }
    }
    let generation = hex_key(&[
        &checkpoint,
        &seed,
        &positive,
        &negative,
        &steps.to_string(),
        &settings[0],
        &settings[1],
        &settings[2],
        &settings[3],
    ]);
    Ok(outputs(vec![Data::Latent {
        width,
        height,
        batch,
        generation: Some(generation),
    }]))
}

fn hex_key(parts: &[&str]) -> String {
    format!("{:016x}", image::generation_seed(parts))
}

async fn load_image(run: &Run<'_>, name: &str) -> Result<NodeOutput, Failure> {
    let path = run
        .shared()
        .dirs
        .resolve_annotated(name)
        .ok_or_else(|| Failure::runtime(format!("Invalid image file: {name}")))?;
    let unidentified = || Failure::Error {
        exception_type: "PIL.UnidentifiedImageError".to_owned(),
        message: format!("cannot identify image file '{}'", path.display()),
    };
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|error| Failure::Error {
            exception_type: "FileNotFoundError".to_owned(),
            message: format!(
                "[Errno 2] No such file or directory: '{}' ({error})",
                path.display()
            ),
        })?;
    let decoded = blocking(move || png::decode(&bytes))
        .await?
        .map_err(|_| unidentified())?;
    let (width, height) = (decoded.image.width, decoded.image.height);
    let mask = decoded.mask.map_or_else(
        // ComfyUI's mask for an image without alpha is 64×64 zeros.
        || (64, 64, vec![0.0; 64 * 64]),
        |mask| (width, height, mask),
    );
    Ok(outputs(vec![
        images(vec![decoded.image]),
        Data::Mask(Arc::new(vec![mask])),
    ]))
}

async fn save(
    run: &Run<'_>,
    batch: &[Image],
    prefix: &str,
    preview: bool,
) -> Result<NodeOutput, Failure> {
    let Some(first) = batch.first() else {
        return Ok(NodeOutput {
            values: Vec::new(),
            ui: Some(json!({"images": []})),
        });
    };
    let prefix = prefix
        .replace("%width%", &first.width.to_string())
        .replace("%height%", &first.height.to_string());
    let shared = run.shared();
    let (kind, base) = if preview {
        ("temp", shared.dirs.temp.clone())
    } else {
        ("output", shared.dirs.output.clone())
    };
    let (folder, stem, mut counter, subfolder) =
        files::save_image_path(&base, &prefix).map_err(|message| Failure::Error {
            exception_type: "Exception".to_owned(),
            message,
        })?;
    let mut texts = vec![(
        "prompt".to_owned(),
        pyjson::to_string(&Value::Object(run.item().graph.clone())),
    )];
    if let Some(extra) = run
        .item()
        .extra_data
        .get("extra_pnginfo")
        .and_then(Value::as_object)
    {
        texts.extend(
            extra
                .iter()
                .map(|(key, value)| (key.clone(), pyjson::to_string(value))),
        );
    }
    let level = if preview { Level::Preview } else { Level::Save };
    let mut results = Vec::new();
    for (index, image) in batch.iter().enumerate() {
        let name = format!(
            "{}_{counter:05}_.png",
            stem.replace("%batch_num%", &index.to_string())
        );
        let (image, texts_for_file) = (image.clone(), texts.clone());
        let encoded = blocking(move || png::encode(&image, &texts_for_file, level))
            .await?
            .map_err(Failure::runtime)?;
        tokio::fs::write(folder.join(&name), encoded)
            .await
            .map_err(|error| Failure::Error {
                exception_type: "OSError".to_owned(),
                message: error.to_string(),
            })?;
        results.push(json!({"filename": name, "subfolder": subfolder, "type": kind}));
        counter += 1;
    }
    Ok(NodeOutput {
        values: Vec::new(),
        ui: Some(json!({"images": results})),
    })
}
