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
        "easel.jobs.v1.InputOverride",
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
            "description": "Image generation on ComfyUI. The same API is served over gRPC (`easel.jobs.v1.JobService`, `easel.models.v1.ModelService`, `easel.account.v1.AccountService`), gRPC-web and this REST/JSON mapping, on one port. Names are snake_case (the protos' field names; requests accept camelCase too), jobs are the body of their answers with status words (`pending`, `processing`, `completed`, `failed`, `cancelled`, `expired`) and their links, samplers and schedulers are ComfyUI's names, seeds and sizes are numbers, timestamps RFC 3339. Every error answers the envelope `{\"error\": {\"code\", \"message\", \"details\", \"requestId\"}}`; every answer to an authenticated request carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`."
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
        "Jwks": {"type": "object", "properties": {"keys": {"type": "array", "items": {"type": "object"}}}},
        "Status": {"type": "object", "properties": {"status": {"type": "string"}}},
        "OpenApiDocument": {"type": "object"}
    });
    let mut all = Map::new();
    for part in [schemas, submit_schemas(), job_schemas()] {
        if let Value::Object(map) = part {
            all.extend(map);
        }
    }
    all
}

/// The shapes `POST /api/v1/jobs` takes.
fn submit_schemas() -> Value {
    json!({
        "SubmitJobBody": {
            "description": "One of three shapes: flat text-to-image fields, a raw ComfyUI workflow, or the `SubmitJobRequest` message. Names are snake_case; camelCase is accepted too. `sampler` and `scheduler` are ComfyUI's names (the enum's names are accepted too).",
            "oneOf": [
                {"$ref": "#/components/schemas/TextToImageBody"},
                {"$ref": "#/components/schemas/WorkflowBody"},
                {"title": "Message", "$ref": "#/components/schemas/easel.jobs.v1.SubmitJobRequest"}
            ]
        },
        "TextToImageBody": {
            "title": "Text to image",
            "type": "object",
            "required": ["prompt"],
            "additionalProperties": false,
            "properties": {
                "prompt": {"type": "string", "minLength": 1, "maxLength": 4000, "description": "What to draw."},
                "negative_prompt": {"type": "string", "maxLength": 4000, "description": "What to keep out of the image."},
                "width": {"type": "integer", "minimum": 0, "maximum": 8192, "multipleOf": 8, "description": "Pixels, 64 to 8192, a multiple of 8 (0 or absent: 1024). The tier caps width × height."},
                "height": {"type": "integer", "minimum": 0, "maximum": 8192, "multipleOf": 8, "description": "Pixels, like width."},
                "steps": {"type": "integer", "minimum": 0, "maximum": 200, "description": "Sampling steps (0 or absent: 20); the tier may allow fewer."},
                "cfg_scale": {"type": "number", "minimum": 0, "maximum": 100, "description": "Classifier-free guidance (default 7)."},
                "sampler": {"$ref": "#/components/schemas/SamplerName"},
                "scheduler": {"$ref": "#/components/schemas/SchedulerName"},
                "seed": {"type": "integer", "minimum": 0, "maximum": 18446744073709551615u64, "description": "Noise seed; without one easel picks one and records it in `metadata.seed`."},
                "checkpoint": {"type": "string", "description": "A checkpoint of `GET /api/v1/models` (default: the platform's)."},
                "batch_size": {"type": "integer", "minimum": 0, "maximum": 64, "description": "Images in one run (0 or absent: 1); the tier may allow fewer."},
                "idempotency_key": {"$ref": "#/components/schemas/IdempotencyKey"},
                "start_timeout": {"$ref": "#/components/schemas/StartTimeout"},
                "keep_workflow_metadata": {"type": "boolean", "default": false, "description": "Keep the prompt graph ComfyUI embeds in PNG text chunks (stripped by default)."}
            }
        },
        "WorkflowBody": {
            "title": "Raw workflow",
            "type": "object",
            "required": ["workflow"],
            "additionalProperties": false,
            "properties": {
                "workflow": {"type": "object", "additionalProperties": true, "description": "A ComfyUI API-format graph: `{node_id: {\"class_type\", \"inputs\"}}`."},
                "overrides": {"type": "array", "items": {"$ref": "#/components/schemas/easel.jobs.v1.InputOverride"}},
                "idempotency_key": {"$ref": "#/components/schemas/IdempotencyKey"},
                "start_timeout": {"$ref": "#/components/schemas/StartTimeout"},
                "keep_workflow_metadata": {"type": "boolean", "default": false}
            }
        },
        "IdempotencyKey": {"type": "string", "maxLength": 255, "pattern": "^[ -~]*$", "description": "Same as the Idempotency-Key header."},
        "StartTimeout": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]{1,9})?s$", "examples": ["600s"], "description": "Give up if the job has not started within this long (at most 7 days)."},
        "SamplerName": {"type": "string", "enum": crate::rest::submit::sampler_names(), "description": "ComfyUI's KSampler `sampler_name`."},
        "SchedulerName": {"type": "string", "enum": crate::rest::submit::scheduler_names(), "description": "ComfyUI's KSampler `scheduler`."},
        "JobStatus": {"type": "string", "enum": crate::rest::view::STATUS_WORDS, "description": "`pending` (queued), `processing` (running on a backend), `completed` (results stored), `failed` (see `error`), `cancelled` (by its owner), `expired` (not started before its deadline)."}
    })
}

/// A job and its events as REST shows them ([`crate::rest::view`]).
fn job_schemas() -> Value {
    json!({
        "SubmitJobAccepted": {
            "allOf": [
                {"$ref": "#/components/schemas/Job"},
                {"type": "object", "required": ["replayed"], "properties": {"replayed": {"type": "boolean", "description": "True when an earlier request with this idempotency key made the job."}}}
            ]
        },
        "Job": {
            "type": "object",
            "description": "An image-generation job.",
            "required": ["job_id", "id", "status", "owner", "status_url", "websocket_url", "events_url", "cancel_url", "results", "attempts", "max_attempts", "seq"],
            "properties": {
                "job_id": {"type": "string", "description": "The job's id, `job_…`."},
                "id": {"type": "string", "description": "The same id."},
                "status": {"$ref": "#/components/schemas/JobStatus"},
                "owner": {"type": "string", "description": "The owning user's id."},
                "status_url": {"type": "string", "description": "GET the job."},
                "websocket_url": {"type": "string", "description": "Its WebSocket of events."},
                "events_url": {"type": "string", "description": "Its Server-Sent Events."},
                "cancel_url": {"type": "string", "description": "POST to cancel it."},
                "result_url": {"type": "string", "description": "The first result's signed URL, once there is one."},
                "results": {"type": "array", "items": {"$ref": "#/components/schemas/JobResult"}, "description": "Every stored image (when completed)."},
                "metadata": {"$ref": "#/components/schemas/JobMetadata"},
                "progress": {"$ref": "#/components/schemas/JobProgress"},
                "queue_position": {"type": "integer", "minimum": 1, "description": "Place in the queue while pending (1 = next)."},
                "pending_reason": {"type": "string", "description": "`waiting_for_backend` while no backend can take the pending job."},
                "eta_seconds": {"type": "number", "minimum": 0, "description": "Estimated seconds until the job finishes."},
                "attempts": {"type": "integer", "minimum": 0, "description": "Runs started so far."},
                "max_attempts": {"type": "integer", "minimum": 0, "description": "Runs allowed."},
                "backend": {"type": "string", "description": "The ComfyUI backend of the latest attempt."},
                "error": {"$ref": "#/components/schemas/JobError"},
                "created_at": {"type": "string", "format": "date-time"},
                "started_at": {"type": "string", "format": "date-time"},
                "completed_at": {"type": "string", "format": "date-time"},
                "start_deadline": {"type": "string", "format": "date-time", "description": "A job not started by then expires."},
                "trace_id": {"type": "string", "description": "The W3C trace id of the submit."},
                "seq": {"type": "integer", "minimum": 0, "description": "The last event's sequence number; resume a stream after it."}
            }
        },
        "JobPage": {
            "type": "object",
            "required": ["jobs"],
            "properties": {
                "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}, "description": "Newest first."},
                "next_page_token": {"type": "string", "description": "The next page's `page_token`; absent on the last page."}
            }
        },
        "JobResult": {
            "type": "object",
            "required": ["artifact_id", "url", "content_type", "size_bytes", "sha256", "width", "height", "node_id", "filename"],
            "properties": {
                "artifact_id": {"type": "string"},
                "url": {"type": "string", "description": "A signed, time-limited download link."},
                "url_expires_at": {"type": "string", "format": "date-time"},
                "content_type": {"type": "string"},
                "size_bytes": {"type": "integer", "minimum": 0},
                "sha256": {"type": "string"},
                "width": {"type": "integer", "minimum": 0},
                "height": {"type": "integer", "minimum": 0},
                "node_id": {"type": "string"},
                "filename": {"type": "string"}
            }
        },
        "JobMetadata": {
            "type": "object",
            "required": ["seed", "checkpoint"],
            "properties": {
                "seed": {"type": "integer", "minimum": 0, "description": "The seed used."},
                "checkpoint": {"type": "string"},
                "resolved": {"type": "object", "description": "The text-to-image parameters with every default filled in.", "properties": {
                    "prompt": {"type": "string"}, "negative_prompt": {"type": "string"},
                    "width": {"type": "integer"}, "height": {"type": "integer"}, "steps": {"type": "integer"},
                    "cfg_scale": {"type": "number"},
                    "sampler": {"$ref": "#/components/schemas/SamplerName"},
                    "scheduler": {"$ref": "#/components/schemas/SchedulerName"},
                    "seed": {"type": "integer", "minimum": 0}, "checkpoint": {"type": "string"},
                    "batch_size": {"type": "integer"}
                }}
            }
        },
        "JobProgress": {
            "type": "object",
            "description": "While processing; 100 percent once completed; absent otherwise.",
            "required": ["node_id", "node_class", "step", "max_steps", "percent"],
            "properties": {
                "node_id": {"type": "string"}, "node_class": {"type": "string"},
                "step": {"type": "integer", "minimum": 0}, "max_steps": {"type": "integer", "minimum": 0},
                "percent": {"type": "number", "minimum": 0, "maximum": 100}
            }
        },
        "JobError": {
            "type": "object",
            "required": ["code", "message", "retryable", "node_errors"],
            "properties": {
                "code": {"type": "string", "description": "E.g. `INVALID_ARGUMENT`, `UNAVAILABLE`."},
                "message": {"type": "string"},
                "retryable": {"type": "boolean"},
                "node_errors": {"type": "array", "items": {"type": "object", "properties": {
                    "node_id": {"type": "string"}, "class_type": {"type": "string"}, "type": {"type": "string"},
                    "message": {"type": "string"}, "details": {"type": "string"}, "input_name": {"type": "string"}
                }}},
                "exception_type": {"type": "string"}
            }
        },
        "JobEvent": {
            "type": "object",
            "description": "One event of a job's WebSocket or Server-Sent Events stream; `type` says which members are set.",
            "required": ["job_id", "seq", "type"],
            "properties": {
                "job_id": {"type": "string"},
                "seq": {"type": "integer", "minimum": 1},
                "time": {"type": "string", "format": "date-time"},
                "type": {"type": "string", "enum": ["snapshot", "status", "progress", "queue_position", "output"]},
                "job": {"$ref": "#/components/schemas/Job", "description": "`snapshot`: the whole job."},
                "status": {"$ref": "#/components/schemas/JobStatus"},
                "error": {"$ref": "#/components/schemas/JobError"},
                "attempt": {"type": "integer", "minimum": 1},
                "backend": {"type": "string"},
                "pending_reason": {"type": "string"},
                "progress": {"$ref": "#/components/schemas/JobProgress"},
                "queue_position": {"type": "integer", "minimum": 1},
                "eta_seconds": {"type": "number", "minimum": 0},
                "result": {"$ref": "#/components/schemas/JobResult"}
            },
            "example": {"job_id": "job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b", "seq": 5, "time": "2025-12-31T23:59:03+00:00", "type": "progress", "progress": {"node_id": "3", "node_class": "KSampler", "step": 10, "max_steps": 20, "percent": 50.0}}
        }
    })
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
