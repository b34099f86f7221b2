//! `/api/v1/jobs`: submit, list, get and cancel.

use axum::extract::{Request, State};
use axum::response::Response;
use easel_proto::jobs::v1::{CancelJobRequest, GetJobRequest, Job, JobStatus, ListJobsRequest};
use easel_runtime::error::Error;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use super::actions::Target;
use super::json::{ApiError, PathParam, json_body, json_response};
use super::query::Query;
use super::submit::parse_submit;
use super::view::{JobLinks, RestJob, STATUS_WORDS, parse_status_word};
use super::{BaseUrl, RestState, base_url};
use crate::context::CallContext;

/// The answer to a submit: the job, and whether an earlier request with the same idempotency
/// key made it.
#[derive(Debug, Serialize)]
struct Submitted {
    #[serde(flatten)]
    job: RestJob,
    replayed: bool,
}

/// A page of jobs.
#[derive(Debug, Serialize)]
struct JobPage {
    jobs: Vec<RestJob>,
    #[serde(skip_serializing_if = "String::is_empty")]
    next_page_token: String,
}

/// The job of an answer that must carry one.
fn job_of(job: Option<&Job>) -> Result<&Job, ApiError> {
    job.ok_or_else(|| ApiError(Error::internal("the jobs service answered without a job")))
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
    let job = RestJob::new(job_of(answer.job.as_ref())?, &base);
    let location = HeaderValue::from_str(&JobLinks::new(&base, &job.job_id).status_url).ok();
    let status = if answer.replayed {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let replayed = answer.replayed;
    let mut response = json_response(status, &Submitted { job, replayed });
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
    BaseUrl(base): BaseUrl,
    PathParam(job_id): PathParam,
    query: Query,
) -> Result<Response, ApiError> {
    query.finish()?;
    let answer = state
        .gateway
        .get_job(&context, GetJobRequest { job_id })
        .await?;
    let job = RestJob::new(job_of(answer.job.as_ref())?, &base);
    Ok(json_response(StatusCode::OK, &job))
}

/// `GET /api/v1/jobs?page_size&page_token&status`: the caller's jobs, newest first.
pub async fn list(
    State(state): State<RestState>,
    context: CallContext,
    BaseUrl(base): BaseUrl,
    mut query: Query,
) -> Result<Response, ApiError> {
    let page_size = query.take_u32(&["page_size", "pageSize"])?.unwrap_or(0);
    let page_token = query
        .take_string(&["page_token", "pageToken"])?
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
    let page = JobPage {
        jobs: answer
            .jobs
            .iter()
            .map(|job| RestJob::new(job, &base))
            .collect(),
        next_page_token: answer.next_page_token,
    };
    Ok(json_response(StatusCode::OK, &page))
}

/// A status filter: a status word (`processing`), or the proto's name (`JOB_STATUS_RUNNING`,
/// `RUNNING`).
fn parse_status(name: &str) -> Result<JobStatus, Error> {
    parse_status_word(name).ok_or_else(|| {
        let shown: String = name.chars().take(64).collect();
        Error::invalid_field(
            "status",
            format!(
                "unknown status \"{shown}\"; expected one of {}",
                STATUS_WORDS.join(", ")
            ),
        )
    })
}

/// `POST /api/v1/jobs/{id}:cancel`.
pub async fn cancel(
    State(state): State<RestState>,
    context: CallContext,
    BaseUrl(base): BaseUrl,
    Target(job_id): Target,
) -> Result<Response, ApiError> {
    let answer = state
        .gateway
        .cancel_job(&context, CancelJobRequest { job_id })
        .await?;
    let job = RestJob::new(job_of(answer.job.as_ref())?, &base);
    Ok(json_response(StatusCode::OK, &job))
}

#[cfg(test)]
mod tests {
    use super::*;

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
