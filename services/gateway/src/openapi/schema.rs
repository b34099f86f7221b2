//! JSON Schemas of proto messages under the proto3 JSON mapping, read from the descriptors
//! compiled into `easel-proto` (with the protos' comments as descriptions).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use serde_json::{Map, Value, json};

/// Every message and enum of the protos, by full name without the leading dot.
#[derive(Debug, Default)]
pub struct Catalog {
    messages: HashMap<String, (DescriptorProto, Comments)>,
    enums: HashMap<String, (EnumDescriptorProto, Comments)>,
}

/// Comments of one message or enum: its own and its fields' (or values').
#[derive(Clone, Debug, Default)]
struct Comments {
    own: String,
    members: HashMap<i32, String>,
}

impl Catalog {
    /// Reads the encoded `FileDescriptorSet`.
    pub fn from_descriptor_set(bytes: &[u8]) -> Result<Catalog, String> {
        let set = FileDescriptorSet::decode(bytes).map_err(|error| error.to_string())?;
        let mut catalog = Catalog::default();
        for file in &set.file {
            let comments: HashMap<Vec<i32>, String> = file
                .source_code_info
                .iter()
                .flat_map(|info| info.location.iter())
                .filter_map(|location| {
                    location
                        .leading_comments
                        .as_ref()
                        .map(|comment| (location.path.clone(), clean(comment)))
                })
                .collect();
            let package = file.package.clone().unwrap_or_default();
            for (index, message) in file.message_type.iter().enumerate() {
                catalog.add_message(&package, message, vec![4, index as i32], &comments);
            }
            for (index, enumeration) in file.enum_type.iter().enumerate() {
                catalog.add_enum(&package, enumeration, vec![5, index as i32], &comments);
            }
        }
        Ok(catalog)
    }

    fn add_message(
        &mut self,
        scope: &str,
        message: &DescriptorProto,
        path: Vec<i32>,
        comments: &HashMap<Vec<i32>, String>,
    ) {
        let name = format!("{scope}.{}", message.name());
        let mut own = Comments {
            own: comments.get(&path).cloned().unwrap_or_default(),
            members: HashMap::new(),
        };
        for (index, field) in message.field.iter().enumerate() {
            let mut field_path = path.clone();
            field_path.extend([2, index as i32]);
            if let Some(comment) = comments.get(&field_path) {
                own.members.insert(field.number(), comment.clone());
            }
        }
        for (index, nested) in message.nested_type.iter().enumerate() {
            let mut nested_path = path.clone();
            nested_path.extend([3, index as i32]);
            self.add_message(&name, nested, nested_path, comments);
        }
        for (index, nested) in message.enum_type.iter().enumerate() {
            let mut nested_path = path.clone();
            nested_path.extend([4, index as i32]);
            self.add_enum(&name, nested, nested_path, comments);
        }
        self.messages.insert(name, (message.clone(), own));
    }

    fn add_enum(
        &mut self,
        scope: &str,
        enumeration: &EnumDescriptorProto,
        path: Vec<i32>,
        comments: &HashMap<Vec<i32>, String>,
    ) {
        let mut own = Comments {
            own: comments.get(&path).cloned().unwrap_or_default(),
            members: HashMap::new(),
        };
        for (index, value) in enumeration.value.iter().enumerate() {
            let mut value_path = path.clone();
            value_path.extend([2, index as i32]);
            if let Some(comment) = comments.get(&value_path) {
                own.members.insert(value.number(), comment.clone());
            }
        }
        self.enums.insert(
            format!("{scope}.{}", enumeration.name()),
            (enumeration.clone(), own),
        );
    }

    /// Whether `name` is a message or enum of the protos.
    pub fn contains(&self, name: &str) -> bool {
        self.messages.contains_key(name) || self.enums.contains_key(name)
    }

    /// The schemas of `roots` and of every message and enum they reach, by name.
    pub fn schemas(&self, roots: &[&str]) -> Result<BTreeMap<String, Value>, String> {
        let mut done = BTreeSet::new();
        let mut pending: Vec<String> = roots.iter().map(|root| (*root).to_string()).collect();
        let mut schemas = BTreeMap::new();
        while let Some(name) = pending.pop() {
            if !done.insert(name.clone()) {
                continue;
            }
            if let Some((enumeration, comments)) = self.enums.get(&name) {
                schemas.insert(name, enum_schema(enumeration, comments));
                continue;
            }
            let Some((message, comments)) = self.messages.get(&name) else {
                return Err(format!("{name} is not a message or enum of the protos"));
            };
            let (schema, references) = self.message_schema(message, comments)?;
            pending.extend(references);
            schemas.insert(name, schema);
        }
        Ok(schemas)
    }

    fn message_schema(
        &self,
        message: &DescriptorProto,
        comments: &Comments,
    ) -> Result<(Value, Vec<String>), String> {
        let mut properties = Map::new();
        let mut references = Vec::new();
        for field in &message.field {
            let mut schema = self.field_schema(field, &mut references)?;
            if let Some(comment) = comments.members.get(&field.number())
                && let Value::Object(object) = &mut schema
            {
                object.insert("description".into(), Value::String(comment.clone()));
            }
            // REST speaks the protos' own (snake_case) names; requests accept camelCase too.
            properties.insert(field.name().to_string(), schema);
        }
        let mut description = comments.own.clone();
        // Real oneofs (not the synthetic ones of proto3 `optional`): at most one member is set.
        for (index, oneof) in message.oneof_decl.iter().enumerate() {
            let members: Vec<&str> = message
                .field
                .iter()
                .filter(|field| field.oneof_index == Some(index as i32) && !field.proto3_optional())
                .map(FieldDescriptorProto::name)
                .collect();
            if !members.is_empty() {
                if !description.is_empty() {
                    description.push_str("\n\n");
                }
                description.push_str(&format!(
                    "`{}`: at most one of `{}`.",
                    oneof.name(),
                    members.join("`, `")
                ));
            }
        }
        let mut schema = json!({ "type": "object", "properties": properties });
        if !description.is_empty() {
            schema["description"] = Value::String(description);
        }
        Ok((schema, references))
    }

    fn field_schema(
        &self,
        field: &FieldDescriptorProto,
        references: &mut Vec<String>,
    ) -> Result<Value, String> {
        let type_name = field.type_name().trim_start_matches('.');
        // Maps are repeated entries of a nested `*Entry` message.
        if field.label() == Label::Repeated
            && field.r#type() == Type::Message
            && let Some((entry, _)) = self.messages.get(type_name)
            && entry
                .options
                .as_ref()
                .is_some_and(|options| options.map_entry())
        {
            let value = entry
                .field
                .iter()
                .find(|field| field.number() == 2)
                .ok_or_else(|| format!("map entry {type_name} has no value"))?;
            let value = self.single_schema(value, references)?;
            return Ok(json!({ "type": "object", "additionalProperties": value }));
        }
        let single = self.single_schema(field, references)?;
        if field.label() == Label::Repeated {
            Ok(json!({ "type": "array", "items": single }))
        } else {
            Ok(single)
        }
    }

    fn single_schema(
        &self,
        field: &FieldDescriptorProto,
        references: &mut Vec<String>,
    ) -> Result<Value, String> {
        let type_name = field.type_name().trim_start_matches('.');
        Ok(match field.r#type() {
            Type::Double | Type::Float => json!({ "type": "number" }),
            Type::Int32 | Type::Sint32 | Type::Sfixed32 => {
                json!({ "type": "integer", "format": "int32" })
            }
            Type::Uint32 | Type::Fixed32 => {
                json!({ "type": "integer", "format": "int32", "minimum": 0 })
            }
            // proto3 JSON writes 64-bit integers as strings (numbers are accepted too).
            Type::Int64 | Type::Sint64 | Type::Sfixed64 => {
                json!({ "type": "string", "format": "int64", "pattern": "^-?[0-9]+$" })
            }
            Type::Uint64 | Type::Fixed64 => {
                json!({ "type": "string", "format": "uint64", "pattern": "^[0-9]+$" })
            }
            Type::Bool => json!({ "type": "boolean" }),
            Type::String => json!({ "type": "string" }),
            Type::Bytes => json!({ "type": "string", "contentEncoding": "base64" }),
            Type::Enum | Type::Message | Type::Group => match well_known(type_name) {
                Some(schema) => schema,
                None => {
                    if !self.contains(type_name) {
                        return Err(format!("unknown type {type_name}"));
                    }
                    references.push(type_name.to_string());
                    json!({ "$ref": format!("#/components/schemas/{type_name}") })
                }
            },
        })
    }
}

/// The proto3 JSON forms of the well-known types.
fn well_known(type_name: &str) -> Option<Value> {
    Some(match type_name {
        "google.protobuf.Timestamp" => json!({ "type": "string", "format": "date-time" }),
        "google.protobuf.Duration" => json!({
            "type": "string",
            "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$",
            "examples": ["30s", "1.5s"]
        }),
        "google.protobuf.Struct" => json!({ "type": "object", "additionalProperties": true }),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({ "type": "array", "items": {} }),
        "google.protobuf.Empty" => json!({ "type": "object" }),
        _ => return None,
    })
}

fn enum_schema(enumeration: &EnumDescriptorProto, comments: &Comments) -> Value {
    let names: Vec<&str> = enumeration.value.iter().map(|value| value.name()).collect();
    let mut description = comments.own.clone();
    let documented: Vec<String> = enumeration
        .value
        .iter()
        .filter_map(|value| {
            comments
                .members
                .get(&value.number())
                .map(|comment| format!("- `{}`: {comment}", value.name()))
        })
        .collect();
    if !documented.is_empty() {
        description.push_str("\n\n");
        description.push_str(&documented.join("\n"));
    }
    json!({ "type": "string", "enum": names, "description": description })
}

/// A proto comment as one paragraph of Markdown.
fn clean(comment: &str) -> String {
    comment
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::from_descriptor_set(easel_proto::FILE_DESCRIPTOR_SET).unwrap()
    }

    #[test]
    fn messages_follow_the_proto3_json_mapping() {
        let schemas = catalog().schemas(&["easel.jobs.v1.Job"]).unwrap();
        let job = &schemas["easel.jobs.v1.Job"];
        let properties = &job["properties"];
        assert_eq!(properties["queue_position"]["type"], "integer");
        assert_eq!(properties["create_time"]["format"], "date-time");
        assert_eq!(properties["seq"]["type"], "string");
        assert_eq!(properties["outputs"]["type"], "array");
        assert_eq!(
            properties["status"]["$ref"],
            "#/components/schemas/easel.jobs.v1.JobStatus"
        );
        assert!(
            properties["queue_position"]["description"]
                .as_str()
                .unwrap()
                .contains("queue"),
            "comments become descriptions"
        );
        let status = &schemas["easel.jobs.v1.JobStatus"];
        assert!(
            status["enum"]
                .as_array()
                .unwrap()
                .contains(&json!("JOB_STATUS_SUCCEEDED"))
        );
        // Everything reachable is there.
        for name in [
            "easel.jobs.v1.JobOutput",
            "easel.jobs.v1.Sampler",
            "easel.jobs.v1.Workflow",
        ] {
            assert!(schemas.contains_key(name), "{name}");
        }
        assert_eq!(
            schemas["easel.jobs.v1.Workflow"]["properties"]["graph"]["type"],
            "object"
        );
    }

    #[test]
    fn oneofs_are_described() {
        let schemas = catalog().schemas(&["easel.jobs.v1.JobSpec"]).unwrap();
        let description = schemas["easel.jobs.v1.JobSpec"]["description"]
            .as_str()
            .unwrap();
        assert!(
            description.contains("`text_to_image`, `workflow`"),
            "{description}"
        );
    }

    #[test]
    fn an_unknown_root_is_an_error() {
        assert!(catalog().schemas(&["easel.nope.v1.Nothing"]).is_err());
    }
}
