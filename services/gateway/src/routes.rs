//! The REST route table: one record per endpoint, carrying its handler, what the door
//! requires of it and its OpenAPI documentation. The router, the door's access check and
//! `/openapi.json` are derived from it; nothing else lists REST routes.

use axum::routing::{self, MethodFilter, MethodRouter};
use easel_auth_client::Scope;
use http::Method;

use crate::door::access::Access;
use crate::rest::{RestState, account, artifacts, jobs, models, public, streams};

/// Where a parameter goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum In {
    /// In the path.
    Path,
    /// In the query string.
    Query,
    /// In a header.
    Header,
}

/// A parameter of a route.
#[derive(Clone, Copy, Debug)]
pub struct Param {
    /// Its name.
    pub name: &'static str,
    /// Where it goes.
    pub location: In,
    /// Whether it must be given.
    pub required: bool,
    /// `string` or `integer`.
    pub kind: &'static str,
    /// What it means.
    pub description: &'static str,
}

/// A schema: a proto message or enum by full name (`easel.jobs.v1.Job`), or one of the
/// document's own schemas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// A proto message, under the proto3 JSON mapping.
    Proto(&'static str),
    /// A schema of the document's own (the envelope, the submit shapes).
    Named(&'static str),
    /// Raw bytes (downloads).
    Binary,
    /// `text/event-stream`.
    EventStream,
    /// Plain text (metrics).
    Text,
}

/// A request body.
#[derive(Clone, Copy, Debug)]
pub struct RequestBody {
    /// Its schema.
    pub schema: Schema,
    /// Whether it may be left out.
    pub required: bool,
    /// Named JSON examples.
    pub examples: &'static [(&'static str, &'static str)],
}

/// A successful answer.
#[derive(Clone, Copy, Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// What it means.
    pub description: &'static str,
    /// Its body.
    pub schema: Schema,
    /// A JSON example (empty: none).
    pub example: &'static str,
}

/// `get` or `post`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    /// GET (HEAD is answered by the same handler).
    Get,
    /// POST.
    Post,
}

impl Verb {
    /// The HTTP method.
    pub fn method(self) -> Method {
        match self {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
        }
    }

    /// The name OpenAPI uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
        }
    }

    /// The axum method filter.
    pub fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
        }
    }
}

impl std::fmt::Display for Verb {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Makes the axum handler of a route for its method.
pub type Handler = fn(MethodFilter) -> MethodRouter<RestState>;

/// One REST endpoint: its method and path, the handler serving it, what the door requires of
/// it, and its documentation. The router ([`crate::rest::router`]), the door's access check
/// ([`crate::door::access`]) and `/openapi.json` ([`crate::openapi`]) are all read from
/// [`ROUTES`], so adding an endpoint is adding one record.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    /// Its method.
    pub method: Verb,
    /// The path as documented, e.g. `/api/v1/jobs/{id}:cancel`: a last segment
    /// `{id}:action` is a custom method (AIP-136) on the resource `{id}`.
    pub path: &'static str,
    /// The handler.
    pub handler: Handler,
    /// The operation's id.
    pub operation_id: &'static str,
    /// Its group.
    pub tag: &'static str,
    /// One line.
    pub summary: &'static str,
    /// More.
    pub description: &'static str,
    /// What the door requires of it.
    pub access: Access,
    /// Its parameters.
    pub params: &'static [Param],
    /// Its body.
    pub body: Option<RequestBody>,
    /// Its successful answers.
    pub replies: &'static [Reply],
    /// The error statuses it may answer (each with the envelope).
    pub errors: &'static [u16],
}

impl Route {
    /// The path the router matches: the documented path without its `:action` (matchit
    /// routes whole segments, so actions of one resource share a router path and are told
    /// apart by [`Route::action`]).
    pub fn router_path(&self) -> &'static str {
        match self.action() {
            Some(action) => &self.path[..self.path.len() - action.len() - 1],
            None => self.path,
        }
    }

    /// The custom method of an `{id}:action` path.
    pub fn action(&self) -> Option<&'static str> {
        let last = self.path.rsplit('/').next().unwrap_or_default();
        last.split_once("}:").map(|(_, action)| action)
    }

    /// The axum method router serving this route.
    pub fn method_router(&self) -> MethodRouter<RestState> {
        (self.handler)(self.method.filter())
    }

    /// Whether the credential may come as `?access_token=` (the route documents the
    /// parameter): the job streams, which browsers open with `WebSocket` and `EventSource`,
    /// neither of which can set headers.
    pub fn takes_query_token(&self) -> bool {
        self.params
            .iter()
            .any(|param| param.location == In::Query && param.name == ACCESS_TOKEN.name)
    }
}

const JOB_ID: Param = Param {
    name: "id",
    location: In::Path,
    required: true,
    kind: "string",
    description: "The job's id, `job_…`.",
};

const PAGE_SIZE: Param = Param {
    name: "page_size",
    location: In::Query,
    required: false,
    kind: "integer",
    description: "At most this many items, 1 to 100 (`pageSize` is accepted too).",
};

const PAGE_TOKEN: Param = Param {
    name: "page_token",
    location: In::Query,
    required: false,
    kind: "string",
    description: "`next_page_token` of the previous page (`pageToken` is accepted too).",
};

const ACCESS_TOKEN: Param = Param {
    name: "access_token",
    location: In::Query,
    required: false,
    kind: "string",
    description: "The credential (an API key or an access token), for browsers that cannot set headers on `WebSocket` and `EventSource`. Prefer the headers elsewhere.",
};

const JOB_EXAMPLE: &str = r#"{"job_id":"job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b","id":"job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b","status":"completed","owner":"usr_0190a5b2c3d47e8f9a0b1c2d3e4f5a6c","status_url":"https://easel.example.com/api/v1/jobs/job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b","websocket_url":"wss://easel.example.com/ws/jobs/job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b","events_url":"https://easel.example.com/api/v1/jobs/job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b/events","cancel_url":"https://easel.example.com/api/v1/jobs/job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b:cancel","result_url":"https://easel.example.com/v1/artifacts/art_0190a5b2c3d47e8f9a0b1c2d3e4f5a6d?expires=1767225600&sig=3q2-7w","results":[{"artifact_id":"art_0190a5b2c3d47e8f9a0b1c2d3e4f5a6d","url":"https://easel.example.com/v1/artifacts/art_0190a5b2c3d47e8f9a0b1c2d3e4f5a6d?expires=1767225600&sig=3q2-7w","url_expires_at":"2026-01-01T00:00:00+00:00","content_type":"image/png","size_bytes":482113,"sha256":"9f2c5e0e6a1b4d3c8f7e6d5c4b3a29180f1e2d3c4b5a69788796a5b4c3d2e1f0","width":1024,"height":1024,"node_id":"9","filename":"easel_00001_.png"}],"metadata":{"seed":1234,"checkpoint":"sd_xl_base_1.0.safetensors","resolved":{"prompt":"A sunset","negative_prompt":"","width":1024,"height":1024,"steps":20,"cfg_scale":7.0,"sampler":"euler","scheduler":"normal","seed":1234,"checkpoint":"sd_xl_base_1.0.safetensors","batch_size":1}},"progress":{"node_id":"9","node_class":"SaveImage","step":20,"max_steps":20,"percent":100.0},"attempts":1,"max_attempts":3,"backend":"127.0.0.1:8188","created_at":"2025-12-31T23:59:00+00:00","started_at":"2025-12-31T23:59:01+00:00","completed_at":"2025-12-31T23:59:12+00:00","seq":14}"#;

const ACCEPTED_EXAMPLE: &str = r#"{"job_id":"job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b","id":"job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b","status":"pending","owner":"usr_0190a5b2c3d47e8f9a0b1c2d3e4f5a6c","status_url":"https://easel.example.com/api/v1/jobs/job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b","websocket_url":"wss://easel.example.com/ws/jobs/job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b","events_url":"https://easel.example.com/api/v1/jobs/job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b/events","cancel_url":"https://easel.example.com/api/v1/jobs/job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b:cancel","results":[],"metadata":{"seed":1234,"checkpoint":"sd_xl_base_1.0.safetensors"},"queue_position":1,"attempts":0,"max_attempts":3,"created_at":"2025-12-31T23:59:00+00:00","start_deadline":"2026-01-01T00:09:00+00:00","seq":1,"replayed":false}"#;

const TOKEN_EXAMPLE: &str = r#"{"access_token":{"token":"eyJhbGciOiJFZERTQSIsImtpZCI6IjEifQ.eyJzdWIiOiJ1c3JfMSJ9.c2ln","token_type":"Bearer","expire_time":"2026-01-01T00:15:00+00:00"}}"#;

/// Every REST route.
pub const ROUTES: &[Route] = &[
    Route {
        method: Verb::Post,
        path: "/api/v1/jobs",
        handler: |on| routing::on(on, jobs::submit),
        operation_id: "submitJob",
        tag: "jobs",
        summary: "Submit a job",
        description: "Accepts flat text-to-image fields, a raw ComfyUI API-format graph under `workflow`, or the `SubmitJobRequest` message. Fields are snake_case (camelCase is accepted too); `sampler` and `scheduler` are ComfyUI's names; `seed` is a number. With an `Idempotency-Key` (header or `idempotency_key`), a repeat of the same request answers the same job (the same `job_id`) with 200, `replayed: true` and `Idempotency-Replayed: true`; the same key with another request is 422, and while the first is still in flight 409. The answer is the job, with `Location`, `status_url`, `websocket_url`, `events_url` and `cancel_url`.",
        access: Access::Scope(Scope::JobsWrite),
        params: &[Param {
            name: "Idempotency-Key",
            location: In::Header,
            required: false,
            kind: "string",
            description: "Makes retries of this request safe for 24 hours (at most 255 printable ASCII characters).",
        }],
        body: Some(RequestBody {
            schema: Schema::Named("SubmitJobBody"),
            required: true,
            examples: &[
                (
                    "textToImage",
                    r#"{"prompt":"A sunset","width":1024,"height":1024}"#,
                ),
                (
                    "textToImageFull",
                    r#"{"prompt":"a lighthouse at dusk","negative_prompt":"blurry","width":768,"height":512,"steps":30,"cfg_scale":6.5,"sampler":"dpmpp_2m","scheduler":"karras","seed":7,"checkpoint":"sd_xl_base_1.0.safetensors","batch_size":1,"idempotency_key":"order-42"}"#,
                ),
                (
                    "workflow",
                    r#"{"workflow":{"1":{"class_type":"EmptyImage","inputs":{"width":64,"height":64,"batch_size":1,"color":0}},"2":{"class_type":"SaveImage","inputs":{"images":["1",0],"filename_prefix":"easel"}}},"overrides":[{"node_id":"1","input":"color","value":16711680}]}"#,
                ),
                (
                    "message",
                    r#"{"spec":{"text_to_image":{"prompt":"A sunset","sampler":"SAMPLER_EULER"}},"start_timeout":"600s"}"#,
                ),
            ],
        }),
        replies: &[
            Reply {
                status: 202,
                description: "The job was accepted.",
                schema: Schema::Named("SubmitJobAccepted"),
                example: ACCEPTED_EXAMPLE,
            },
            Reply {
                status: 200,
                description: "A replay: an earlier request with this idempotency key made the job (`Idempotency-Replayed: true`).",
                schema: Schema::Named("SubmitJobAccepted"),
                example: "",
            },
        ],
        errors: &[400, 401, 409, 413, 415, 422, 429, 503],
    },
    Route {
        method: Verb::Get,
        path: "/api/v1/jobs",
        handler: |on| routing::on(on, jobs::list),
        operation_id: "listJobs",
        tag: "jobs",
        summary: "List the caller's jobs",
        description: "Newest first, optionally filtered by status (repeat `status` or separate with commas).",
        access: Access::Scope(Scope::JobsRead),
        params: &[
            PAGE_SIZE,
            PAGE_TOKEN,
            Param {
                name: "status",
                location: In::Query,
                required: false,
                kind: "string",
                description: "Only jobs in these statuses: `pending`, `processing`, `completed`, `failed`, `cancelled`, `expired`.",
            },
        ],
        body: None,
        replies: &[Reply {
            status: 200,
            description: "A page of jobs.",
            schema: Schema::Named("JobPage"),
            example: "",
        }],
        errors: &[400, 401, 429],
    },
    Route {
        method: Verb::Get,
        path: "/api/v1/jobs/{id}",
        handler: |on| routing::on(on, jobs::get),
        operation_id: "getJob",
        tag: "jobs",
        summary: "Get a job",
        description: "A job of another user is 404, like a job that does not exist.",
        access: Access::Scope(Scope::JobsRead),
        params: &[JOB_ID],
        body: None,
        replies: &[Reply {
            status: 200,
            description: "The job.",
            schema: Schema::Named("Job"),
            example: JOB_EXAMPLE,
        }],
        errors: &[401, 404, 429],
    },
    Route {
        method: Verb::Post,
        path: "/api/v1/jobs/{id}:cancel",
        handler: |on| routing::on(on, jobs::cancel),
        operation_id: "cancelJob",
        tag: "jobs",
        summary: "Cancel a job",
        description: "A pending job is removed from the queue; a running one is interrupted on its backend. A finished job is 400 (FAILED_PRECONDITION).",
        access: Access::Scope(Scope::JobsWrite),
        params: &[JOB_ID],
        body: None,
        replies: &[Reply {
            status: 200,
            description: "The cancelled job.",
            schema: Schema::Named("Job"),
            example: "",
        }],
        errors: &[400, 401, 404, 429],
    },
    Route {
        method: Verb::Get,
        path: "/api/v1/jobs/{id}/events",
        handler: |on| routing::on(on, streams::server_sent_events),
        operation_id: "streamJobEvents",
        tag: "jobs",
        summary: "Follow a job (Server-Sent Events)",
        description: "The job's snapshot, then every event in order; the stream ends after the event that makes the job terminal. Each event's `id:` is its sequence number and `event:` its `type` (`snapshot`, `status`, `progress`, `queue_position`, `output`); `data:` is the `JobEvent` schema in JSON. Reconnect with `Last-Event-ID` to get only the events after it.",
        access: Access::Scope(Scope::JobsRead),
        params: &[
            JOB_ID,
            Param {
                name: "Last-Event-ID",
                location: In::Header,
                required: false,
                kind: "integer",
                description: "Resume after this event.",
            },
            ACCESS_TOKEN,
        ],
        body: None,
        replies: &[Reply {
            status: 200,
            description: "The event stream; each `data:` is a `JobEvent`.",
            schema: Schema::EventStream,
            example: "",
        }],
        errors: &[400, 401, 404, 429],
    },
    Route {
        method: Verb::Get,
        path: "/ws/jobs/{id}",
        handler: |on| routing::on(on, streams::websocket),
        operation_id: "watchJobWebSocket",
        tag: "jobs",
        summary: "Follow a job (WebSocket)",
        description: "Upgrade to a WebSocket: one text message per event (the `JobEvent` schema in JSON), the snapshot first, then every event in order; closed with 1000 after the terminal event, 1001 when the server shuts down, 1011 on an error.",
        access: Access::Scope(Scope::JobsRead),
        params: &[
            JOB_ID,
            Param {
                name: "after",
                location: In::Query,
                required: false,
                kind: "integer",
                description: "Resume after this event's sequence number.",
            },
            ACCESS_TOKEN,
        ],
        body: None,
        replies: &[Reply {
            status: 101,
            description: "Switching to the WebSocket protocol.",
            schema: Schema::Named("JobEvent"),
            example: "",
        }],
        errors: &[400, 401, 404, 429],
    },
    Route {
        method: Verb::Get,
        path: "/api/v1/models",
        handler: |on| routing::on(on, models::list),
        operation_id: "listModels",
        tag: "models",
        summary: "List models",
        description: "The checkpoints available on at least one backend, by name.",
        access: Access::Scope(Scope::JobsRead),
        params: &[PAGE_SIZE, PAGE_TOKEN],
        body: None,
        replies: &[Reply {
            status: 200,
            description: "A page of models.",
            schema: Schema::Proto("easel.models.v1.ListModelsResponse"),
            example: r#"{"models":[{"name":"sd_xl_base_1.0.safetensors","kind":"checkpoints","backend_count":2,"is_default":true}]}"#,
        }],
        errors: &[400, 401, 429, 503],
    },
    Route {
        method: Verb::Post,
        path: "/api/v1/keys",
        handler: |on| routing::on(on, account::create_key),
        operation_id: "createApiKey",
        tag: "account",
        summary: "Create an API key",
        description: "The secret is in this answer only.",
        access: Access::Scope(Scope::KeysWrite),
        params: &[],
        body: Some(RequestBody {
            schema: Schema::Proto("easel.account.v1.CreateApiKeyRequest"),
            required: true,
            examples: &[("ci", r#"{"name":"ci","ttl":"2592000s"}"#)],
        }),
        replies: &[Reply {
            status: 201,
            description: "The key and its secret.",
            schema: Schema::Proto("easel.account.v1.CreateApiKeyResponse"),
            example: "",
        }],
        errors: &[400, 401, 403, 415, 429],
    },
    Route {
        method: Verb::Get,
        path: "/api/v1/keys",
        handler: |on| routing::on(on, account::list_keys),
        operation_id: "listApiKeys",
        tag: "account",
        summary: "List the caller's API keys",
        description: "Never their secrets.",
        access: Access::Scope(Scope::KeysRead),
        params: &[PAGE_SIZE, PAGE_TOKEN],
        body: None,
        replies: &[Reply {
            status: 200,
            description: "A page of keys.",
            schema: Schema::Proto("easel.account.v1.ListApiKeysResponse"),
            example: "",
        }],
        errors: &[400, 401, 429],
    },
    Route {
        method: Verb::Post,
        path: "/api/v1/keys/{id}:revoke",
        handler: |on| routing::on(on, account::revoke_key),
        operation_id: "revokeApiKey",
        tag: "account",
        summary: "Revoke an API key",
        description: "At once, on every replica.",
        access: Access::Scope(Scope::KeysWrite),
        params: &[Param {
            name: "id",
            location: In::Path,
            required: true,
            kind: "string",
            description: "The key's id, `key_…`.",
        }],
        body: None,
        replies: &[Reply {
            status: 200,
            description: "The revoked key.",
            schema: Schema::Proto("easel.account.v1.RevokeApiKeyResponse"),
            example: "",
        }],
        errors: &[401, 404, 429],
    },
    Route {
        method: Verb::Post,
        path: "/api/v1/auth/login",
        handler: |on| routing::on(on, account::login),
        operation_id: "login",
        tag: "account",
        summary: "Log in with an email and password",
        description: "Answers a short-lived access token for `Authorization: Bearer`. Limited per client address.",
        access: Access::PerAddress,
        params: &[],
        body: Some(RequestBody {
            schema: Schema::Proto("easel.account.v1.LoginRequest"),
            required: true,
            examples: &[(
                "login",
                r#"{"email":"dev@easel.local","password":"correct horse battery staple"}"#,
            )],
        }),
        replies: &[Reply {
            status: 200,
            description: "The access token.",
            schema: Schema::Proto("easel.account.v1.LoginResponse"),
            example: TOKEN_EXAMPLE,
        }],
        errors: &[400, 401, 415, 429],
    },
    Route {
        method: Verb::Post,
        path: "/api/v1/auth/token",
        handler: |on| routing::on(on, account::exchange_token),
        operation_id: "exchangeToken",
        tag: "account",
        summary: "Exchange the calling API key for an access token",
        description: "For browsers that should not hold the key. The body is optional. The token carries the key's scopes, or the subset listed in `scopes`; asking for a scope the key lacks is 403 `MISSING_SCOPE`.",
        access: Access::Credential,
        params: &[],
        body: Some(RequestBody {
            schema: Schema::Proto("easel.account.v1.ExchangeTokenRequest"),
            required: false,
            examples: &[
                ("short", r#"{"ttl":"300s"}"#),
                ("readOnly", r#"{"ttl":"300s","scopes":["jobs:read"]}"#),
            ],
        }),
        replies: &[Reply {
            status: 200,
            description: "The access token.",
            schema: Schema::Proto("easel.account.v1.ExchangeTokenResponse"),
            example: TOKEN_EXAMPLE,
        }],
        errors: &[400, 401, 403, 415, 429],
    },
    Route {
        method: Verb::Get,
        path: "/api/v1/usage",
        handler: |on| routing::on(on, account::usage),
        operation_id: "getUsage",
        tag: "account",
        summary: "The caller's usage and limits",
        description: "Daily usage, newest first, and the tier's limits.",
        access: Access::Scope(Scope::UsageRead),
        params: &[Param {
            name: "days",
            location: In::Query,
            required: false,
            kind: "integer",
            description: "Days back from today, 1 to 90 (default 30).",
        }],
        body: None,
        replies: &[Reply {
            status: 200,
            description: "Usage and limits.",
            schema: Schema::Proto("easel.account.v1.GetUsageResponse"),
            example: "",
        }],
        errors: &[400, 401, 429],
    },
    Route {
        method: Verb::Post,
        path: "/api/v1/admin/users",
        handler: |on| routing::on(on, account::create_user),
        operation_id: "createUser",
        tag: "admin",
        summary: "Create a user (admin)",
        description: "Needs the admin role.",
        access: Access::Scope(Scope::Admin),
        params: &[],
        body: Some(RequestBody {
            schema: Schema::Proto("easel.account.v1.CreateUserRequest"),
            required: true,
            examples: &[(
                "pro",
                r#"{"email":"ada@example.com","password":"a long enough password","tier":"TIER_PRO","role":"ROLE_USER"}"#,
            )],
        }),
        replies: &[Reply {
            status: 201,
            description: "The user.",
            schema: Schema::Proto("easel.account.v1.CreateUserResponse"),
            example: "",
        }],
        errors: &[400, 401, 403, 409, 415, 429],
    },
    Route {
        method: Verb::Post,
        path: "/api/v1/admin/users/{id}:setTier",
        handler: |on| routing::on(on, account::set_user_tier),
        operation_id: "setUserTier",
        tag: "admin",
        summary: "Change a user's tier (admin)",
        description: "Needs the admin role.",
        access: Access::Scope(Scope::Admin),
        params: &[Param {
            name: "id",
            location: In::Path,
            required: true,
            kind: "string",
            description: "The user's id, `usr_…`.",
        }],
        body: Some(RequestBody {
            schema: Schema::Proto("easel.account.v1.SetUserTierRequest"),
            required: true,
            examples: &[("pro", r#"{"tier":"TIER_PRO"}"#)],
        }),
        replies: &[Reply {
            status: 200,
            description: "The user.",
            schema: Schema::Proto("easel.account.v1.SetUserTierResponse"),
            example: "",
        }],
        errors: &[400, 401, 403, 404, 415, 429],
    },
    Route {
        method: Verb::Post,
        path: "/api/v1/admin/users/{id}:disable",
        handler: |on| routing::on(on, account::disable_user),
        operation_id: "disableUser",
        tag: "admin",
        summary: "Disable a user (admin)",
        description: "Their keys and tokens stop working. Needs the admin role.",
        access: Access::Scope(Scope::Admin),
        params: &[Param {
            name: "id",
            location: In::Path,
            required: true,
            kind: "string",
            description: "The user's id, `usr_…`.",
        }],
        body: None,
        replies: &[Reply {
            status: 200,
            description: "The user.",
            schema: Schema::Proto("easel.account.v1.DisableUserResponse"),
            example: "",
        }],
        errors: &[401, 403, 404, 429],
    },
    Route {
        method: Verb::Get,
        path: "/v1/artifacts/{id}",
        handler: |on| routing::on(on, artifacts::download),
        operation_id: "downloadArtifact",
        tag: "artifacts",
        summary: "Download an output (signed link)",
        description: "The `url` of a job output: the link's signature and expiry are its credential. Supports `Range`.",
        access: Access::Public,
        params: &[
            Param {
                name: "id",
                location: In::Path,
                required: true,
                kind: "string",
                description: "The artifact's id, `art_…`.",
            },
            Param {
                name: "expires",
                location: In::Query,
                required: true,
                kind: "integer",
                description: "The link's expiry (Unix seconds).",
            },
            Param {
                name: "sig",
                location: In::Query,
                required: true,
                kind: "string",
                description: "The link's signature.",
            },
        ],
        body: None,
        replies: &[
            Reply {
                status: 200,
                description: "The image.",
                schema: Schema::Binary,
                example: "",
            },
            Reply {
                status: 206,
                description: "A byte range of the image.",
                schema: Schema::Binary,
                example: "",
            },
        ],
        errors: &[400, 403, 404, 503],
    },
    Route {
        method: Verb::Get,
        path: "/.well-known/jwks.json",
        handler: |on| routing::on(on, public::jwks),
        operation_id: "getJwks",
        tag: "meta",
        summary: "The keys that verify access tokens",
        description: "A JSON Web Key Set (RFC 7517).",
        access: Access::Public,
        params: &[],
        body: None,
        replies: &[Reply {
            status: 200,
            description: "The key set.",
            schema: Schema::Named("Jwks"),
            example: r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"1","use":"sig","alg":"EdDSA","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#,
        }],
        errors: &[503],
    },
    Route {
        method: Verb::Get,
        path: "/openapi.json",
        handler: |on| routing::on(on, public::openapi),
        operation_id: "getOpenApi",
        tag: "meta",
        summary: "This document",
        description: "OpenAPI 3.1.",
        access: Access::Public,
        params: &[],
        body: None,
        replies: &[Reply {
            status: 200,
            description: "The document.",
            schema: Schema::Named("OpenApiDocument"),
            example: "",
        }],
        errors: &[],
    },
    Route {
        method: Verb::Get,
        path: "/healthz",
        handler: |on| routing::on(on, public::healthz),
        operation_id: "healthz",
        tag: "meta",
        summary: "Liveness",
        description: "The process is alive.",
        access: Access::Public,
        params: &[],
        body: None,
        replies: &[Reply {
            status: 200,
            description: "Alive.",
            schema: Schema::Named("Status"),
            example: r#"{"status":"ok"}"#,
        }],
        errors: &[],
    },
    Route {
        method: Verb::Get,
        path: "/readyz",
        handler: |on| routing::on(on, public::readyz),
        operation_id: "readyz",
        tag: "meta",
        summary: "Readiness",
        description: "Ready while auth and jobs answer; 503 naming the dependency that does not.",
        access: Access::Public,
        params: &[],
        body: None,
        replies: &[Reply {
            status: 200,
            description: "Ready.",
            schema: Schema::Named("Status"),
            example: r#"{"status":"ready"}"#,
        }],
        errors: &[503],
    },
    Route {
        method: Verb::Get,
        path: "/metrics",
        handler: |on| routing::on(on, public::metrics),
        operation_id: "metrics",
        tag: "meta",
        summary: "Prometheus metrics",
        description: "The Prometheus text format.",
        access: Access::Public,
        params: &[],
        body: None,
        replies: &[Reply {
            status: 200,
            description: "The metrics.",
            schema: Schema::Text,
            example: "",
        }],
        errors: &[],
    },
];
