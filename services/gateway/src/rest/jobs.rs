//! `/api/v1/jobs`: submit, list, get and cancel.

use axum::extract::{Request, State};
use axum::response::Response;
use easel_proto::jobs::v1::{
    CancelJobRequest, GetJobRequest, JobStatus, ListJobsRequest, SubmitJobResponse,
};
use easel_proto::names::ShortName;
use easel_runtime::error::Error;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use super::json::{ApiError, PathParam, json_body, json_response};
use super::query::Query;
use super::submit::parse_submit;
use super::{RestState, base_url, split_action};
use crate::context::CallContext;

/// Where a job can be followed and acted on.
#[derive(Debug, Serialize)]
pub struct JobLinks {
    /// `GET` the job.
    #[serde(rename = "self")]
    pub job: String,
    /// `GET` its Server-Sent Events.
    pub events: String,
    /// Open a WebSocket of its events.
    pub websocket: String,
    /// `POST` to cancel it.
    pub cancel: String,
}

impl JobLinks {
    /// The links of `job_id` under `base` (empty: relative links).
    pub fn new(base: &str, job_id: &str) -> JobLinks {
        let job = format!("{base}/api/v1/jobs/{job_id}");
        let websocket_base = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            base.to_string()
        };
        JobLinks {
            events: format!("{job}/events"),
            cancel: format!("{job}:cancel"),
            websocket: format!("{websocket_base}/ws/jobs/{job_id}"),
            job,
        }
    }
}

/// The body of a submit's answer: the message plus the job's links.
#[derive(Debug, Serialize)]
struct Submitted<'a> {
    #[serde(flatten)]
    answer: &'a SubmitJobResponse,
    links: JobLinks,
}

/// `POST /api/v1/jobs`: 202 with the job and its links, or 200 with
/// `Idempotency-Replayed: true` when an earlier request with the same key made the job.
pub async fn submit(
    State(state): State<RestState>,
    context: CallContext,
    request: Request,
) -> Result<Response, ApiError> {
    let idempotency_key = match request.headers().get("idempotency-key") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map(str::to_string)
                .map_err(|_| Error::invalid_field("Idempotency-Key", "must be printable ASCII"))?,
        ),
    };
    let base = base_url(&state, request.extensions());
    let body = json_body(request, &state, false).await?;
    let submit = parse_submit(&body, idempotency_key.as_deref())?;
    let answer = state.gateway.submit_job(&context, submit).await?;
    let job_id = answer
        .job
        .as_ref()
        .map(|job| job.id.clone())
        .unwrap_or_default();
    let links = JobLinks::new(&base, &job_id);
    let location = HeaderValue::from_str(&links.job).ok();
    let status = if answer.replayed {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let replayed = answer.replayed;
    let mut response = json_response(
        status,
        &Submitted {
            answer: &answer,
            links,
        },
    );
    let headers = response.headers_mut();
    if let Some(location) = location {
        headers.insert(header::LOCATION, location);
    }
    if replayed {
        headers.insert("idempotency-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// `GET /api/v1/jobs/{id}`.
pub async fn get(
    State(state): State<RestState>,
    context: CallContext,
    PathParam(job_id): PathParam,
    query: Query,
) -> Result<Response, ApiError> {
    query.finish()?;
    let answer = state
        .gateway
        .get_job(&context, GetJobRequest { job_id })
        .await?;
    Ok(json_response(StatusCode::OK, &answer))
}

/// `GET /api/v1/jobs?pageSize&pageToken&status`: the caller's jobs, newest first.
pub async fn list(
    State(state): State<RestState>,
    context: CallContext,
    mut query: Query,
) -> Result<Response, ApiError> {
    let page_size = query.take_u32(&["pageSize", "page_size"])?.unwrap_or(0);
    let page_token = query
        .take_string(&["pageToken", "page_token"])?
        .unwrap_or_default();
    let statuses = query
        .take_all(&["status", "statuses"])
        .iter()
        .map(|name| parse_status(name))
        .collect::<Result<Vec<_>, _>>()?;
    query.finish()?;
    let answer = state
        .gateway
        .list_jobs(
            &context,
            ListJobsRequest {
                page_size,
                page_token,
                statuses: statuses.into_iter().map(|status| status as i32).collect(),
            },
        )
        .await?;
    Ok(json_response(StatusCode::OK, &answer))
}

/// A status filter: `JOB_STATUS_RUNNING`, `RUNNING` or `running`.
fn parse_status(name: &str) -> Result<JobStatus, Error> {
    JobStatus::parse(name).ok_or_else(|| {
        let shown: String = name.chars().take(64).collect();
        Error::invalid_field(
            "status",
            format!(
                "unknown status \"{shown}\"; expected one of {}",
                JobStatus::short_names().join(", ").to_ascii_uppercase()
            ),
        )
    })
}

/// `POST /api/v1/jobs/{id}:cancel`.
pub async fn action(
    State(state): State<RestState>,
    context: CallContext,
    PathParam(segment): PathParam,
) -> Result<Response, ApiError> {
    let (job_id, _) = split_action(&segment, &["cancel"])?;
    let answer = state
        .gateway
        .cancel_job(
            &context,
            CancelJobRequest {
                job_id: job_id.to_string(),
            },
        )
        .await?;
    Ok(json_response(StatusCode::OK, &answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_follow_the_base_url() {
        let links = JobLinks::new("https://api.example.com", "job_1");
        assert_eq!(links.job, "https://api.example.com/api/v1/jobs/job_1");
        assert_eq!(
            links.events,
            "https://api.example.com/api/v1/jobs/job_1/events"
        );
        assert_eq!(
            links.cancel,
            "https://api.example.com/api/v1/jobs/job_1:cancel"
        );
        assert_eq!(links.websocket, "wss://api.example.com/ws/jobs/job_1");
        let relative = JobLinks::new("", "job_1");
        assert_eq!(relative.websocket, "/ws/jobs/job_1");
    }

    #[test]
    fn statuses_parse_in_every_spelling() {
        assert_eq!(parse_status("running").unwrap(), JobStatus::Running);
        assert_eq!(
            parse_status("JOB_STATUS_FAILED").unwrap(),
            JobStatus::Failed
        );
        assert_eq!(
            parse_status("bogus").unwrap_err().field_violations()[0].field,
            "status"
        );
        assert!(parse_status("unspecified").is_err());
    }
}
