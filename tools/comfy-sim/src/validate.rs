//! Graph validation, mirroring ComfyUI's `validate_prompt` / `validate_inputs`: the same error
//! types, messages, `node_errors` layout and value coercions (which rewrite the prompt in place,
//! as ComfyUI does, so history shows the coerced values).

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};

use crate::files;
use crate::nodes::{DynamicLists, InputCategory, NodeCatalog};
use crate::pyjson::{py_repr, py_str, py_type_name};

/// What validation needs besides the prompt.
pub struct Context<'a> {
    /// The node classes.
    pub catalog: &'a NodeCatalog,
    /// Dynamic combo lists.
    pub dynamic: &'a DynamicLists,
    /// Directories for LoadImage's file check.
    pub dirs: &'a files::Dirs,
}

/// A successful validation: the outputs to execute, and the errors of ignored outputs.
#[derive(Debug)]
pub struct Validated {
    /// Output node ids that are valid, in prompt order.
    pub outputs: Vec<String>,
    /// `node_errors` for the outputs that were dropped (partial validity).
    pub node_errors: Map<String, Value>,
}

/// A rejected prompt: the `error` object and `node_errors`.
#[derive(Debug)]
pub struct Rejected {
    /// The top-level `error` object.
    pub error: Value,
    /// The per-node errors.
    pub node_errors: Map<String, Value>,
}

/// A Python exception raised during validation.
struct PyException {
    exception_type: &'static str,
    message: String,
    traceback: Vec<String>,
}

const TB_VALIDATE_PROMPT: &str = "  File \"/opt/ComfyUI/execution.py\", line 1010, in validate_prompt\n    m = await validate_inputs(prompt_id, prompt, o, validated)\n        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n";
const TB_KEY_ERROR: &str = "  File \"/opt/ComfyUI/execution.py\", line 788, in validate_inputs\n    o_class_type = prompt[o_id]['class_type']\n                   ~~~~~~^^^^^^\n";
const TB_INDEX_ERROR: &str = "  File \"/opt/ComfyUI/execution.py\", line 790, in validate_inputs\n    received_type = r[val[1]]\n                    ~^^^^^^^^\n";

fn simple_error(error_type: &str, message: &str, details: &str) -> Value {
    json!({"type": error_type, "message": message, "details": details, "extra_info": {}})
}

/// Validates (and coerces) `prompt`, honouring `partial_execution_targets`.
pub fn validate_prompt(
    prompt: &mut Map<String, Value>,
    partial_targets: Option<&[String]>,
    context: &Context<'_>,
) -> Result<Validated, Box<Rejected>> {
    let mut outputs = Vec::new();
    for (node_id, node) in prompt.iter() {
        let Some(class_type) = node.get("class_type") else {
            return Err(Box::new(Rejected {
                error: simple_error(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    &format!("Node ID '#{node_id}'"),
                ),
                node_errors: Map::new(),
            }));
        };
        let class_type = py_str(class_type);
        if !context.catalog.contains(&class_type) {
            return Err(Box::new(Rejected {
                error: simple_error(
                    "invalid_prompt",
                    &format!("Cannot execute because node {class_type} does not exist."),
                    &format!("Node ID '#{node_id}'"),
                ),
                node_errors: Map::new(),
            }));
        }
        if context.catalog.is_output(&class_type)
            && partial_targets.is_none_or(|targets| targets.contains(node_id))
        {
            outputs.push(node_id.clone());
        }
    }
    if outputs.is_empty() {
        return Err(Box::new(Rejected {
            error: simple_error("prompt_no_outputs", "Prompt has no outputs", ""),
            node_errors: Map::new(),
        }));
    }

    let mut validator = Validator {
        context,
        validated: HashMap::new(),
        order: Vec::new(),
        visiting: HashSet::new(),
    };
    let mut good_outputs = Vec::new();
    let mut output_errors: Vec<Vec<Value>> = Vec::new();
    let mut node_errors = Map::new();
    for output in &outputs {
        let (valid, reasons) = match validator.validate_inputs(prompt, output) {
            Ok(valid) => (valid, validator.reasons(output)),
            Err(exception) => {
                let mut traceback = vec![TB_VALIDATE_PROMPT.to_owned()];
                traceback.extend(exception.traceback);
                let reasons = vec![json!({
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": exception.message,
                    "extra_info": {"exception_type": exception.exception_type, "traceback": traceback},
                })];
                validator.record(output, false, reasons.clone());
                (false, reasons)
            }
        };
        if valid {
            good_outputs.push(output.clone());
            continue;
        }
        if !reasons.is_empty() {
            output_errors.push(reasons);
        }
        for node_id in &validator.order {
            let Some((node_valid, node_reasons)) = validator.validated.get(node_id) else {
                continue;
            };
            if *node_valid || node_reasons.is_empty() {
                continue;
            }
            let entry = node_errors.entry(node_id.clone()).or_insert_with(|| {
                let class_type = prompt
                    .get(node_id)
                    .and_then(|node| node.get("class_type"))
                    .cloned()
                    .unwrap_or(Value::Null);
                json!({"errors": node_reasons, "dependent_outputs": [], "class_type": class_type})
            });
            if let Some(dependents) = entry
                .get_mut("dependent_outputs")
                .and_then(Value::as_array_mut)
            {
                dependents.push(Value::String(output.clone()));
            }
        }
    }

    if good_outputs.is_empty() {
        let details: Vec<String> = output_errors
            .iter()
            .flatten()
            .map(|error| {
                format!(
                    "{}: {}",
                    py_str(&error["message"]),
                    py_str(&error["details"])
                )
            })
            .collect();
        return Err(Box::new(Rejected {
            error: simple_error(
                "prompt_outputs_failed_validation",
                "Prompt outputs failed validation",
                &details.join("\n"),
            ),
            node_errors,
        }));
    }
    Ok(Validated {
        outputs: good_outputs,
        node_errors,
    })
}

struct Validator<'a, 'b> {
    context: &'a Context<'b>,
    validated: HashMap<String, (bool, Vec<Value>)>,
    order: Vec<String>,
    visiting: HashSet<String>,
}

impl Validator<'_, '_> {
    fn record(&mut self, node_id: &str, valid: bool, reasons: Vec<Value>) {
        if !self.validated.contains_key(node_id) {
            self.order.push(node_id.to_owned());
        }
        self.validated.insert(node_id.to_owned(), (valid, reasons));
    }

    fn reasons(&self, node_id: &str) -> Vec<Value> {
        self.validated
            .get(node_id)
            .map(|(_, reasons)| reasons.clone())
            .unwrap_or_default()
    }

    fn validate_inputs(
        &mut self,
        prompt: &mut Map<String, Value>,
        node_id: &str,
    ) -> Result<bool, PyException> {
        if let Some((valid, _)) = self.validated.get(node_id) {
            return Ok(*valid);
        }
        if !self.visiting.insert(node_id.to_owned()) {
            return Err(PyException {
                exception_type: "RecursionError",
                message: "maximum recursion depth exceeded".to_owned(),
                traceback: Vec::new(),
            });
        }
        let result = self.validate_node(prompt, node_id);
        self.visiting.remove(node_id);
        let (valid, errors) = result?;
        self.record(node_id, valid, errors);
        Ok(valid)
    }

    fn validate_node(
        &mut self,
        prompt: &mut Map<String, Value>,
        node_id: &str,
    ) -> Result<(bool, Vec<Value>), PyException> {
        let key_error = |key: &str| PyException {
            exception_type: "KeyError",
            message: format!("'{key}'"),
            traceback: vec![TB_KEY_ERROR.to_owned()],
        };
        let node = prompt.get(node_id).ok_or_else(|| key_error(node_id))?;
        let class_type = py_str(
            node.get("class_type")
                .ok_or_else(|| key_error("class_type"))?,
        );
        let inputs = node
            .get("inputs")
            .and_then(Value::as_object)
            .cloned()
            .ok_or_else(|| key_error("inputs"))?;
        let specs = self
            .context
            .catalog
            .inputs(&class_type, self.context.dynamic);
        // LoadImage validates `image` itself (VALIDATE_INPUTS), so no combo check for it.
        let custom_validated = |name: &str| class_type == "LoadImage" && name == "image";

        let mut errors = Vec::new();
        let mut valid = true;
        let mut coerced: Vec<(String, Value)> = Vec::new();
        for spec in &specs {
            let Some(value) = inputs.get(&spec.name) else {
                if spec.category == InputCategory::Required {
                    errors.push(json!({
                        "type": "required_input_missing",
                        "message": "Required input is missing",
                        "details": spec.name,
                        "extra_info": {"input_name": spec.name},
                    }));
                }
                continue;
            };
            let input_config = spec.input_config();
            if let Value::Array(link) = value {
                if link.len() != 2 {
                    errors.push(json!({
                        "type": "bad_linked_input",
                        "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                        "details": spec.name,
                        "extra_info": {"input_name": spec.name, "input_config": input_config, "received_value": value},
                    }));
                    continue;
                }
                let source_id = py_str(&link[0]);
                let source_class = match (&link[0], prompt.get(&source_id)) {
                    (Value::String(_), Some(source)) => source
                        .get("class_type")
                        .map(py_str)
                        .ok_or_else(|| key_error("class_type"))?,
                    _ => {
                        return Err(PyException {
                            exception_type: "KeyError",
                            message: py_repr(&link[0]),
                            traceback: vec![TB_KEY_ERROR.to_owned()],
                        });
                    }
                };
                let return_types = self.context.catalog.return_types(&source_class);
                let received_type = output_type(&return_types, &link[1])?;
                if !types_match(&received_type, &spec.input_type) {
                    let input_type = match &spec.input_type {
                        Value::String(text) => text.clone(),
                        other => py_repr(other),
                    };
                    errors.push(json!({
                        "type": "return_type_mismatch",
                        "message": "Return type mismatch between linked nodes",
                        "details": format!("{}, received_type({received_type}) mismatch input_type({input_type})", spec.name),
                        "extra_info": {"input_name": spec.name, "input_config": input_config, "received_type": received_type, "linked_node": value},
                    }));
                    continue;
                }
                match self.validate_inputs(prompt, &source_id) {
                    Ok(true) => {}
                    Ok(false) => valid = false,
                    Err(exception) => {
                        valid = false;
                        let reasons = vec![json!({
                            "type": "exception_during_inner_validation",
                            "message": "Exception when validating inner node",
                            "details": exception.message,
                            "extra_info": {
                                "input_name": spec.name,
                                "input_config": input_config,
                                "exception_message": exception.message,
                                "exception_type": exception.exception_type,
                                "traceback": exception.traceback,
                                "linked_node": value,
                            },
                        })];
                        self.record(&source_id, false, reasons);
                    }
                }
                continue;
            }

            let mut value = value.clone();
            if let Some(inner) = value.get("__value__").cloned() {
                value = inner;
                coerced.push((spec.name.clone(), value.clone()));
            }
            if let Some(type_name) = spec.type_name() {
                match coerce(type_name, &value) {
                    Ok(Some(converted)) => {
                        value = converted;
                        coerced.push((spec.name.clone(), value.clone()));
                    }
                    Ok(None) => {}
                    Err(message) => {
                        errors.push(json!({
                            "type": "invalid_input_type",
                            "message": format!("Failed to convert an input value to a {type_name} value"),
                            "details": format!("{}, {}, {message}", spec.name, py_str(&value)),
                            "extra_info": {"input_name": spec.name, "input_config": input_config, "received_value": value, "exception_message": message},
                        }));
                        continue;
                    }
                }
            }
            if custom_validated(&spec.name) {
                continue;
            }
            if let Some(error) = range_error(&spec.name, &value, &spec.extra, &input_config) {
                errors.push(error);
                continue;
            }
            if let Value::Array(options) = &spec.input_type
                && !options.contains(&value)
            {
                let (list_info, config) = if options.len() > 20 {
                    (format!("(list of length {})", options.len()), Value::Null)
                } else {
                    (py_repr(&spec.input_type), input_config)
                };
                errors.push(json!({
                    "type": "value_not_in_list",
                    "message": "Value not in list",
                    "details": format!("{}: '{}' not in {list_info}", spec.name, py_str(&value)),
                    "extra_info": {"input_name": spec.name, "input_config": config, "received_value": value},
                }));
            }
        }

        if let Some(node_inputs) = prompt
            .get_mut(node_id)
            .and_then(|node| node.get_mut("inputs"))
            .and_then(Value::as_object_mut)
        {
            for (name, value) in coerced {
                node_inputs.insert(name, value);
            }
        }

        if class_type == "LoadImage"
            && let Some(image) = inputs.get("image")
            && !image.is_array()
        {
            let name = py_str(image);
            if self
                .context
                .dirs
                .resolve_annotated(&name)
                .is_none_or(|path| !path.is_file())
            {
                errors.push(json!({
                    "type": "custom_validation_failed",
                    "message": "Custom validation failed for node",
                    "details": format!("image - Invalid image file: {name}"),
                    "extra_info": {"input_name": "image"},
                }));
            }
        }

        Ok((valid && errors.is_empty(), errors))
    }
}

fn output_type(return_types: &[String], index: &Value) -> Result<String, PyException> {
    let index_error = || PyException {
        exception_type: "IndexError",
        message: "tuple index out of range".to_owned(),
        traceback: vec![TB_INDEX_ERROR.to_owned()],
    };
    let Some(index) = index.as_i64().filter(|_| !index.is_f64()) else {
        return Err(PyException {
            exception_type: "TypeError",
            message: format!(
                "tuple indices must be integers or slices, not {}",
                py_type_name(index)
            ),
            traceback: vec![TB_INDEX_ERROR.to_owned()],
        });
    };
    let length = i64::try_from(return_types.len()).unwrap_or(i64::MAX);
    let resolved = if index < 0 { index + length } else { index };
    usize::try_from(resolved)
        .ok()
        .and_then(|resolved| return_types.get(resolved))
        .cloned()
        .ok_or_else(index_error)
}

fn types_match(received: &str, input_type: &Value) -> bool {
    match input_type {
        Value::String(expected) => {
            if received == "*" || expected == "*" || received == expected {
                return true;
            }
            let received: HashSet<&str> = received.split(',').map(str::trim).collect();
            let expected: HashSet<&str> = expected.split(',').map(str::trim).collect();
            received.is_subset(&expected)
        }
        _ => received == "COMBO" || received == "*",
    }
}

fn range_error(
    name: &str,
    value: &Value,
    extra: &Map<String, Value>,
    config: &Value,
) -> Option<Value> {
    let number = value.as_f64()?;
    if let Some(min) = extra
        .get("min")
        .filter(|min| min.as_f64().is_some_and(|min| number < min))
    {
        return Some(json!({
            "type": "value_smaller_than_min",
            "message": format!("Value {} smaller than min of {}", py_str(value), py_str(min)),
            "details": name,
            "extra_info": {"input_name": name, "input_config": config, "received_value": value},
        }));
    }
    if let Some(max) = extra
        .get("max")
        .filter(|max| max.as_f64().is_some_and(|max| number > max))
    {
        return Some(json!({
            "type": "value_bigger_than_max",
            "message": format!("Value {} bigger than max of {}", py_str(value), py_str(max)),
            "details": name,
            "extra_info": {"input_name": name, "input_config": config, "received_value": value},
        }));
    }
    None
}

/// Python's `int()` / `float()` / `str()` / `bool()` of a literal, as `validate_inputs` applies
/// them. `Ok(None)` means "unchanged".
pub fn coerce(type_name: &str, value: &Value) -> Result<Option<Value>, String> {
    match type_name {
        "INT" => py_int(value).map(Some),
        "FLOAT" => py_float(value).map(|number| {
            Some(serde_json::Number::from_f64(number).map_or(Value::Null, Value::Number))
        }),
        "STRING" => Ok(Some(Value::String(py_str(value)))),
        "BOOLEAN" => Ok(Some(Value::Bool(truthy(value)))),
        _ => Ok(None),
    }
}

fn py_int(value: &Value) -> Result<Value, String> {
    match value {
        Value::Number(number) if !number.is_f64() => Ok(value.clone()),
        Value::Number(number) => {
            let float = number.as_f64().unwrap_or(0.0);
            if float.is_nan() {
                return Err("cannot convert float NaN to integer".to_owned());
            }
            if float.is_infinite() {
                return Err("cannot convert float infinity to integer".to_owned());
            }
            // Truncation toward zero, like Python's int(); saturates far outside i64.
            #[allow(clippy::cast_possible_truncation)]
            Ok(json!(float.trunc() as i64))
        }
        Value::Bool(flag) => Ok(json!(i64::from(*flag))),
        Value::String(text) => {
            let cleaned: String = text.trim().replace('_', "");
            cleaned
                .parse::<i64>()
                .map(|number| json!(number))
                .or_else(|_| cleaned.parse::<u64>().map(|number| json!(number)))
                .map_err(|_| format!("invalid literal for int() with base 10: {}", py_repr(value)))
        }
        other => Err(format!(
            "int() argument must be a string, a bytes-like object or a real number, not '{}'",
            py_type_name(other)
        )),
    }
}

fn py_float(value: &Value) -> Result<f64, String> {
    match value {
        Value::Number(number) => Ok(number.as_f64().unwrap_or(0.0)),
        Value::Bool(flag) => Ok(if *flag { 1.0 } else { 0.0 }),
        Value::String(text) => {
            let cleaned = text.trim().to_ascii_lowercase().replace('_', "");
            match cleaned.as_str() {
                "inf" | "+inf" | "infinity" => Ok(f64::INFINITY),
                "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
                "nan" => Ok(f64::NAN),
                _ => cleaned
                    .parse::<f64>()
                    .map_err(|_| format!("could not convert string to float: {}", py_repr(value))),
            }
        }
        other => Err(format!(
            "float() argument must be a string or a real number, not '{}'",
            py_type_name(other)
        )),
    }
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(flag) => *flag,
        Value::Number(number) => number.as_f64().is_some_and(|number| number != 0.0),
        Value::String(text) => !text.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_coercion_like_python() {
        assert_eq!(coerce("INT", &json!(64.7)).ok().flatten(), Some(json!(64)));
        assert_eq!(coerce("INT", &json!("64")).ok().flatten(), Some(json!(64)));
        assert_eq!(coerce("INT", &json!(true)).ok().flatten(), Some(json!(1)));
        assert_eq!(
            coerce("INT", &json!("abc")).err(),
            Some("invalid literal for int() with base 10: 'abc'".to_owned())
        );
        assert_eq!(coerce("FLOAT", &json!(1)).ok().flatten(), Some(json!(1.0)));
    }
}
