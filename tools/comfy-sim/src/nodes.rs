//! The node catalog: the real `/object_info` entries of the nodes the simulator can execute,
//! extracted from a recording of ComfyUI 0.3.64 into `data/object_info.json`.

use serde_json::{Map, Value};

use crate::SimError;

const OBJECT_INFO: &str = include_str!("../data/object_info.json");

/// Image file extensions LoadImage lists (ComfyUI filters the input dir by content type).
const IMAGE_EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff"];

/// The category of an input in a node's spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputCategory {
    /// Listed under `required`.
    Required,
    /// Listed under `optional`.
    Optional,
}

/// One declared input of a node class.
#[derive(Debug, Clone)]
pub struct InputSpec {
    /// The input's name.
    pub name: String,
    /// `"INT"`, `"IMAGE"`, … or, for a combo, the list of allowed values.
    pub input_type: Value,
    /// The options object (`min`, `max`, `default`, …), `{}` when absent.
    pub extra: Map<String, Value>,
    /// Required or optional.
    pub category: InputCategory,
}

impl InputSpec {
    /// The type as a string for non-combo inputs.
    pub fn type_name(&self) -> Option<&str> {
        self.input_type.as_str()
    }

    /// `[type, extra]` as ComfyUI reports it in `input_config`.
    pub fn input_config(&self) -> Value {
        Value::Array(vec![
            self.input_type.clone(),
            Value::Object(self.extra.clone()),
        ])
    }
}

/// The node classes the simulator knows.
#[derive(Debug, Clone)]
pub struct NodeCatalog {
    info: Map<String, Value>,
}

impl NodeCatalog {
    /// Loads the embedded catalog.
    pub fn load() -> Result<Self, SimError> {
        let value: Value = serde_json::from_str(OBJECT_INFO)
            .map_err(|error| SimError::Catalog(error.to_string()))?;
        match value {
            Value::Object(info) => Ok(Self { info }),
            _ => Err(SimError::Catalog("object_info is not an object".to_owned())),
        }
    }

    /// Forgets a class, as a ComfyUI without that node (e.g. without the
    /// `websocket_image_save.py` custom node that provides `SaveImageWebsocket`).
    pub fn remove(&mut self, class_type: &str) {
        self.info.remove(class_type);
    }

    /// Whether the class exists.
    pub fn contains(&self, class_type: &str) -> bool {
        self.info.contains_key(class_type)
    }

    /// Whether the class is an output node.
    pub fn is_output(&self, class_type: &str) -> bool {
        self.info
            .get(class_type)
            .and_then(|info| info.get("output_node"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// The class's return types.
    pub fn return_types(&self, class_type: &str) -> Vec<String> {
        self.info
            .get(class_type)
            .and_then(|info| info.get("output"))
            .and_then(Value::as_array)
            .map(|types| {
                types
                    .iter()
                    .map(|item| item.as_str().unwrap_or("*").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The declared (required, then optional) inputs of the class, in declaration order, with
    /// the dynamic combo lists filled in.
    pub fn inputs(&self, class_type: &str, dynamic: &DynamicLists) -> Vec<InputSpec> {
        let mut specs = Vec::new();
        let Some(info) = self.info.get(class_type) else {
            return specs;
        };
        for (section, category) in [
            ("required", InputCategory::Required),
            ("optional", InputCategory::Optional),
        ] {
            let Some(inputs) = info
                .get("input")
                .and_then(|input| input.get(section))
                .and_then(Value::as_object)
            else {
                continue;
            };
            for (name, spec) in inputs {
                let mut input_type = spec.get(0).cloned().unwrap_or(Value::Null);
                if let Some(list) = dynamic.list_for(class_type, name) {
                    input_type = Value::Array(list.into_iter().map(Value::String).collect());
                }
                let extra = spec
                    .get(1)
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                specs.push(InputSpec {
                    name: name.clone(),
                    input_type,
                    extra,
                    category,
                });
            }
        }
        specs
    }

    /// The whole `/object_info` document, dynamic lists filled in.
    pub fn object_info(&self, dynamic: &DynamicLists) -> Map<String, Value> {
        self.info
            .keys()
            .filter_map(|class_type| {
                self.class_info(class_type, dynamic)
                    .map(|info| (class_type.clone(), info))
            })
            .collect()
    }

    /// One class's `/object_info` entry, dynamic lists filled in.
    pub fn class_info(&self, class_type: &str, dynamic: &DynamicLists) -> Option<Value> {
        let mut info = self.info.get(class_type)?.clone();
        if let Some(required) = info
            .get_mut("input")
            .and_then(|input| input.get_mut("required"))
            .and_then(Value::as_object_mut)
        {
            for (name, spec) in required.iter_mut() {
                if let (Some(list), Some(slot)) = (
                    dynamic.list_for(class_type, name),
                    spec.as_array_mut().and_then(|spec| spec.get_mut(0)),
                ) {
                    *slot = Value::Array(list.into_iter().map(Value::String).collect());
                }
            }
        }
        Some(info)
    }
}

/// Combo lists that depend on the simulator's state: checkpoint names and input images.
#[derive(Debug, Clone, Default)]
pub struct DynamicLists {
    /// `CheckpointLoaderSimple.ckpt_name`.
    pub checkpoints: Vec<String>,
    /// `LoadImage.image`: the top-level image files of the input directory, sorted.
    pub input_images: Vec<String>,
}

impl DynamicLists {
    fn list_for(&self, class_type: &str, input: &str) -> Option<Vec<String>> {
        match (class_type, input) {
            ("CheckpointLoaderSimple", "ckpt_name") => Some(self.checkpoints.clone()),
            ("LoadImage", "image") => Some(self.input_images.clone()),
            _ => None,
        }
    }

    /// Lists the image files directly inside `dir`, sorted by name.
    pub fn scan_input_images(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|entry| {
                        entry
                            .file_type()
                            .map(|kind| kind.is_file())
                            .unwrap_or(false)
                    })
                    .filter_map(|entry| entry.file_name().into_string().ok())
                    .filter(|name| {
                        name.rsplit_once('.').is_some_and(|(_, extension)| {
                            IMAGE_EXTENSIONS.contains(&extension.to_ascii_lowercase().as_str())
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_has_the_text_to_image_nodes() {
        let catalog = NodeCatalog::load().expect("catalog");
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
            assert!(catalog.contains(class), "{class}");
        }
        assert!(catalog.is_output("SaveImage"));
        assert!(!catalog.is_output("KSampler"));
        assert_eq!(
            catalog.return_types("CheckpointLoaderSimple"),
            ["MODEL", "CLIP", "VAE"]
        );
        let dynamic = DynamicLists {
            checkpoints: vec!["a.safetensors".to_owned()],
            input_images: vec![],
        };
        let info = catalog
            .class_info("CheckpointLoaderSimple", &dynamic)
            .expect("info");
        assert_eq!(
            info["input"]["required"]["ckpt_name"][0],
            serde_json::json!(["a.safetensors"])
        );
    }
}
