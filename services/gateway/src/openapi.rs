//! `/openapi.json`: an OpenAPI 3.1 document generated from one source of truth, the protos
//! (message and enum schemas with their comments, from the descriptors compiled into
//! `easel-proto`) plus the route table in [`crate::routes`] (paths, parameters, bodies,
//! answers and examples), the same records the router and the door read.

pub mod schema;

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::routes::{In, ROUTES, Route, Schema};

use crate::door::access::Access;
use schema::Catalog;

/// The error statuses and what they mean.
const ERROR_STATUSES: &[(u16, &str)] = &[
    (
        400,
        "Invalid request (INVALID_ARGUMENT or FAILED_PRECONDITION); `details` names the fields.",
    ),
    (401, "No valid credential (UNAUTHENTICATED)."),
    (
        403,
        "The credential may not do this (PERMISSION_DENIED); a missing scope has the reason `MISSING_SCOPE` and names it in the metadata `required_scope`.",
    ),
    (
        404,
        "No such resource, or it belongs to someone else (NOT_FOUND).",
    ),
    (405, "The route does not take this method."),
    (
        409,
        "A conflict: the resource exists, or a request with this idempotency key is in flight.",
    ),
    (413, "The body is larger than the limit."),
    (415, "The body is not JSON."),
    (
        422,
        "The idempotency key was used with a different request.",
    ),
    (
        429,
        "Over the rate limit (RESOURCE_EXHAUSTED); see `Retry-After` and `RateLimit-*`.",
    ),
    (
        503,
        "A dependency is down or the server sheds load (UNAVAILABLE); see `Retry-After`.",
    ),
];

/// The whole document.
pub fn document() -> Result<Value, String> {
    let catalog = Catalog::from_descriptor_set(easel_proto::FILE_DESCRIPTOR_SET)?;
    let mut roots: Vec<&str> = vec![
        "easel.jobs.v1.SubmitJobRequest",
        "easel.jobs.v1.SubmitJobResponse",
        "easel.jobs.v1.TextToImage",
        "easel.jobs.v1.InputOverride",
        "easel.jobs.v1.JobEvent",
    ];
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for route in ROUTES {
        collect_proto(route, &mut roots);
        paths
            .entry(route.path.to_string())
            .or_default()
            .insert(route.method.as_str().to_string(), operation(route)?);
    }
    let mut schemas: Map<String, Value> = catalog.schemas(&roots)?.into_iter().collect();
    schemas.extend(own_schemas());
    Ok(json!({
        "openapi": "3.1.0",
        "info": {
            "title": "easel",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Image generation on ComfyUI. The same API is served over gRPC (`easel.jobs.v1.JobService`, `easel.models.v1.ModelService`, `easel.account.v1.AccountService`), gRPC-web and this REST/JSON mapping, on one port. Bodies are the proto3 JSON mapping of the protos: camelCase names, enums as strings, 64-bit integers as strings, timestamps in RFC 3339. Every error answers the envelope `{\"error\": {\"code\", \"message\", \"details\", \"requestId\"}}`; every answer to an authenticated request carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`."
        },
        "tags": [
            {"name": "jobs", "description": "Submit, follow and cancel image-generation jobs."},
            {"name": "models", "description": "The checkpoints the platform can run."},
            {"name": "account", "description": "API keys, tokens and usage."},
            {"name": "admin", "description": "User administration (admin role)."},
            {"name": "artifacts", "description": "Downloads of job outputs."},
            {"name": "meta", "description": "Probes, metrics, keys and this document."}
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "An API key, `easel_<prefix>_<secret>`."},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "An access token from login or token exchange."}
            },
            "headers": {
                "RateLimit-Limit": {"description": "Requests allowed at once.", "schema": {"type": "integer"}},
                "RateLimit-Remaining": {"description": "Requests left at once.", "schema": {"type": "integer"}},
                "RateLimit-Reset": {"description": "Seconds until the full allowance is back.", "schema": {"type": "integer"}},
                "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}},
                "X-Request-ID": {"description": "The request's id (yours if you sent one), also in every error envelope.", "schema": {"type": "string"}}
            }
        }
    }))
}

/// The proto messages a route refers to.
fn collect_proto(route: &Route, roots: &mut Vec<&'static str>) {
    let schemas = route
        .body
        .iter()
        .map(|body| body.schema)
        .chain(route.replies.iter().map(|reply| reply.schema));
    for schema in schemas {
        if let Schema::Proto(name) = schema {
            roots.push(name);
        }
    }
}

fn schema_of(schema: Schema) -> Value {
    match schema {
        Schema::Proto(name) | Schema::Named(name) => {
            json!({ "$ref": format!("#/components/schemas/{name}") })
        }
        Schema::Binary => {
            json!({ "type": "string", "contentMediaType": "application/octet-stream" })
        }
        Schema::EventStream | Schema::Text => json!({ "type": "string" }),
    }
}

fn media_type(schema: Schema) -> &'static str {
    match schema {
        Schema::Proto(_) | Schema::Named(_) => "application/json",
        Schema::Binary => "image/png",
        Schema::EventStream => "text/event-stream",
        Schema::Text => "text/plain",
    }
}

fn parse_example(route: &Route, example: &str) -> Result<Value, String> {
    serde_json::from_str(example)
        .map_err(|error| format!("example of {} {}: {error}", route.method, route.path))
}

fn operation(route: &Route) -> Result<Value, String> {
    let parameters: Vec<Value> = route
        .params
        .iter()
        .map(|param| {
            json!({
                "name": param.name,
                "in": match param.location { In::Path => "path", In::Query => "query", In::Header => "header" },
                "required": param.required,
                "description": param.description,
                "schema": { "type": param.kind },
            })
        })
        .collect();
    let mut responses = Map::new();
    for reply in route.replies {
        let mut content = json!({ "schema": schema_of(reply.schema) });
        if !reply.example.is_empty() {
            content["example"] = parse_example(route, reply.example)?;
        }
        let mut response = json!({
            "description": reply.description,
            "content": { media_type(reply.schema): content },
        });
        if route.access != Access::Public {
            response["headers"] = rate_limit_headers();
        }
        if route.operation_id == "submitJob" {
            response["headers"]["Location"] =
                json!({"description": "The job's URL.", "schema": {"type": "string"}});
            response["headers"]["Idempotency-Replayed"] =
                json!({"description": "`true` on a replay.", "schema": {"type": "string"}});
        }
        responses.insert(reply.status.to_string(), response);
    }
    // Every route that needs a scope may refuse a credential without it.
    let mut errors = route.errors.to_vec();
    if route.access.scope().is_some() && !errors.contains(&403) {
        errors.push(403);
        errors.sort_unstable();
    }
    for status in &errors {
        let description = ERROR_STATUSES
            .iter()
            .find(|(code, _)| code == status)
            .map(|(_, description)| *description)
            .ok_or_else(|| {
                format!(
                    "{} {}: undocumented status {status}",
                    route.method, route.path
                )
            })?;
        let mut response = json!({
            "description": description,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorEnvelope" } } },
        });
        if *status == 429 || *status == 503 {
            response["headers"] = rate_limit_headers();
            response["headers"]["Retry-After"] =
                json!({"$ref": "#/components/headers/Retry-After"});
        }
        if *status == 400 {
            response["content"]["application/json"]["example"] = json!({
                "error": {
                    "code": "INVALID_ARGUMENT",
                    "message": "sampler: unknown sampler \"turbo\"; expected one of euler, …",
                    "details": [{
                        "@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": [{"field": "sampler", "description": "unknown sampler \"turbo\"; expected one of euler, …"}]
                    }],
                    "requestId": "5b0c5f0e-8e0e-4f5b-9f43-1d5f0e0c2a11"
                }
            });
        }
        responses.insert(status.to_string(), response);
    }
    let description = match route.access {
        Access::Scope(scope) => format!(
            "{}\n\nNeeds the `{scope}` scope (403 `MISSING_SCOPE` without it).",
            route.description
        ),
        Access::Credential => format!(
            "{}\n\nNeeds a credential, whatever its scopes.",
            route.description
        ),
        Access::Public | Access::PerAddress => route.description.to_string(),
    };
    let mut operation = json!({
        "operationId": route.operation_id,
        "tags": [route.tag],
        "summary": route.summary,
        "description": description,
        "parameters": parameters,
        "responses": responses,
    });
    // OpenAPI 3.1 lets non-OAuth schemes list the roles a call needs: here, the scope.
    operation["security"] = match route.access {
        Access::Public | Access::PerAddress => json!([]),
        Access::Credential => json!([{ "apiKey": [] }, { "bearer": [] }]),
        Access::Scope(scope) => {
            json!([{ "apiKey": [scope.as_str()] }, { "bearer": [scope.as_str()] }])
        }
    };
    if let Some(scope) = route.access.scope() {
        operation["x-required-scope"] = json!(scope.as_str());
    }
    if let Some(body) = &route.body {
        let mut examples = Map::new();
        for (name, example) in body.examples {
            examples.insert(
                (*name).to_string(),
                json!({ "value": parse_example(route, example)? }),
            );
        }
        operation["requestBody"] = json!({
            "required": body.required,
            "content": { "application/json": { "schema": schema_of(body.schema), "examples": examples } },
        });
    }
    Ok(operation)
}

fn rate_limit_headers() -> Value {
    json!({
        "RateLimit-Limit": {"$ref": "#/components/headers/RateLimit-Limit"},
        "RateLimit-Remaining": {"$ref": "#/components/headers/RateLimit-Remaining"},
        "RateLimit-Reset": {"$ref": "#/components/headers/RateLimit-Reset"},
        "X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}
    })
}

/// The document's own schemas: the error envelope and the REST shapes around the messages.
fn own_schemas() -> Map<String, Value> {
    let schemas = json!({
        "ErrorEnvelope": {
            "type": "object",
            "required": ["error"],
            "description": "Every error answer.",
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "details"],
                    "properties": {
                        "code": {"type": "string", "description": "The gRPC code's name.", "enum": ["INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "FAILED_PRECONDITION", "ABORTED", "UNAUTHENTICATED", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "CANCELLED", "UNAVAILABLE", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL"]},
                        "message": {"type": "string", "description": "For people."},
                        "details": {"type": "array", "items": {"$ref": "#/components/schemas/ErrorDetail"}},
                        "requestId": {"type": "string", "description": "Quote it when reporting a problem."}
                    }
                }
            },
            "example": {"error": {"code": "UNAUTHENTICATED", "message": "a credential is required: send X-API-Key or Authorization: Bearer", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "CREDENTIAL_MISSING", "domain": "easel.dev", "metadata": {}}], "requestId": "5b0c5f0e-8e0e-4f5b-9f43-1d5f0e0c2a11"}}
        },
        "ErrorDetail": {
            "description": "A `google.rpc` detail in the proto3 JSON form of `Any`.",
            "oneOf": [
                {"type": "object", "title": "BadRequest", "required": ["@type", "fieldViolations"], "properties": {
                    "@type": {"const": "type.googleapis.com/google.rpc.BadRequest"},
                    "fieldViolations": {"type": "array", "items": {"type": "object", "properties": {"field": {"type": "string"}, "description": {"type": "string"}}}}
                }},
                {"type": "object", "title": "ErrorInfo", "required": ["@type", "reason", "domain"], "properties": {
                    "@type": {"const": "type.googleapis.com/google.rpc.ErrorInfo"},
                    "reason": {"type": "string", "description": "E.g. RATE_LIMITED, IDEMPOTENCY_KEY_REUSED, CREDENTIAL_REVOKED."},
                    "domain": {"type": "string"},
                    "metadata": {"type": "object", "additionalProperties": {"type": "string"}}
                }},
                {"type": "object", "title": "RetryInfo", "required": ["@type", "retryDelay"], "properties": {
                    "@type": {"const": "type.googleapis.com/google.rpc.RetryInfo"},
                    "retryDelay": {"type": "string", "examples": ["1.5s"]}
                }}
            ]
        },
        "SubmitJobBody": {
            "description": "One of three shapes: flat text-to-image fields, a raw ComfyUI workflow, or the `SubmitJobRequest` message. `sampler` and `scheduler` take the enum's names or ComfyUI's (`dpmpp_2m`, `karras`).",
            "oneOf": [
                {"title": "Text to image", "allOf": [
                    {"$ref": "#/components/schemas/easel.jobs.v1.TextToImage"},
                    {"$ref": "#/components/schemas/SubmitOptions"}
                ], "required": ["prompt"]},
                {"title": "Raw workflow", "allOf": [
                    {"type": "object", "required": ["workflow"], "properties": {
                        "workflow": {"type": "object", "additionalProperties": true, "description": "A ComfyUI API-format graph: `{node_id: {\"class_type\", \"inputs\"}}`."},
                        "overrides": {"type": "array", "items": {"$ref": "#/components/schemas/easel.jobs.v1.InputOverride"}}
                    }},
                    {"$ref": "#/components/schemas/SubmitOptions"}
                ]},
                {"title": "Message", "$ref": "#/components/schemas/easel.jobs.v1.SubmitJobRequest"}
            ]
        },
        "SubmitOptions": {
            "type": "object",
            "properties": {
                "idempotencyKey": {"type": "string", "maxLength": 255, "description": "Same as the Idempotency-Key header."},
                "startTimeout": {"type": "string", "examples": ["600s"], "description": "Give up if the job has not started within this long."},
                "keepWorkflowMetadata": {"type": "boolean", "default": false, "description": "Keep the prompt graph ComfyUI embeds in PNG text chunks (stripped by default). Also `keep_workflow_metadata`."}
            }
        },
        "SubmitJobAccepted": {
            "allOf": [
                {"$ref": "#/components/schemas/easel.jobs.v1.SubmitJobResponse"},
                {"type": "object", "properties": {"links": {"$ref": "#/components/schemas/JobLinks"}}}
            ]
        },
        "JobLinks": {
            "type": "object",
            "properties": {
                "self": {"type": "string", "description": "GET the job."},
                "events": {"type": "string", "description": "GET its Server-Sent Events."},
                "websocket": {"type": "string", "description": "Its WebSocket."},
                "cancel": {"type": "string", "description": "POST to cancel it."}
            }
        },
        "Jwks": {"type": "object", "properties": {"keys": {"type": "array", "items": {"type": "object"}}}},
        "Status": {"type": "object", "properties": {"status": {"type": "string"}}},
        "OpenApiDocument": {"type": "object"}
    });
    match schemas {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_document_builds_and_every_reference_resolves() {
        let document = document().unwrap();
        let schemas = document["components"]["schemas"].as_object().unwrap();
        let mut references = Vec::new();
        find_references(&document, &mut references);
        assert!(!references.is_empty());
        for reference in references {
            let name = reference
                .strip_prefix("#/components/schemas/")
                .or_else(|| reference.strip_prefix("#/components/headers/"))
                .unwrap_or_else(|| panic!("odd reference {reference}"));
            assert!(
                schemas.contains_key(name) || document["components"]["headers"].get(name).is_some(),
                "{reference} does not resolve"
            );
        }
    }

    #[test]
    fn operation_ids_are_unique() {
        let ids: BTreeSet<&str> = ROUTES.iter().map(|route| route.operation_id).collect();
        assert_eq!(ids.len(), ROUTES.len(), "operation ids are unique");
    }

    #[test]
    fn errors_use_the_envelope_and_the_submit_route_has_examples() {
        let document = document().unwrap();
        let submit = &document["paths"]["/api/v1/jobs"]["post"];
        assert_eq!(
            submit["responses"]["413"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorEnvelope"
        );
        let examples = submit["requestBody"]["content"]["application/json"]["examples"]
            .as_object()
            .unwrap();
        assert!(examples.contains_key("textToImage") && examples.contains_key("workflow"));
        assert!(document["paths"]["/api/v1/jobs/{id}:cancel"]["post"].is_object());
    }

    #[test]
    fn operations_document_the_scope_they_need() {
        let document = document().unwrap();
        let submit = &document["paths"]["/api/v1/jobs"]["post"];
        assert_eq!(submit["x-required-scope"], "jobs:write");
        assert_eq!(submit["security"][0]["apiKey"][0], "jobs:write");
        assert!(submit["responses"]["403"].is_object());
        let usage = &document["paths"]["/api/v1/usage"]["get"];
        assert_eq!(usage["x-required-scope"], "usage:read");
        let token = &document["paths"]["/api/v1/auth/token"]["post"];
        assert!(token.get("x-required-scope").is_none());
        assert_eq!(token["security"][0]["apiKey"], json!([]));
        assert_eq!(document["paths"]["/healthz"]["get"]["security"], json!([]));
    }

    fn find_references(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    if key == "$ref" {
                        if let Value::String(reference) = value {
                            found.push(reference.clone());
                        }
                    } else {
                        find_references(value, found);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| find_references(item, found)),
            _ => {}
        }
    }
}
