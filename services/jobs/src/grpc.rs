//! `easel.jobs.internal.v1.InternalJobService`: thin handlers from proto to [`Jobs`] and back.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use easel_proto::jobs::internal::v1::internal_job_service_server::InternalJobService;
use easel_proto::jobs::internal::v1::{
    CancelJobRequest, GetJobRequest, ListJobsRequest, SubmitJobRequest, WatchJobRequest,
};
use easel_proto::jobs::v1::{
    CancelJobResponse, GetJobResponse, JobStatus, ListJobsResponse, SubmitJobResponse,
};
use tonic::{Request, Response, Status};

use crate::error::JobsError;
use crate::model::{Caller, JobId};
use crate::service::Jobs;
use crate::watch::watch;

type WatchResponseStream = std::pin::Pin<
    Box<
        dyn futures::Stream<Item = Result<easel_proto::jobs::v1::WatchJobResponse, Status>>
            + Send
            + 'static,
    >,
>;

/// The gRPC service.
#[derive(Clone, Debug)]
pub struct JobApi {
    jobs: Arc<Jobs>,
}

impl JobApi {
    /// Serves `jobs`.
    pub fn new(jobs: Arc<Jobs>) -> Self {
        JobApi { jobs }
    }
}

fn request_of<T>(request: Option<T>) -> Result<T, JobsError> {
    request.ok_or_else(|| JobsError::field("request", "is required"))
}

fn page_token(token: &str) -> Result<Option<String>, JobsError> {
    if token.is_empty() {
        return Ok(None);
    }
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|id| JobId::parse(&id))
        .map(|id| Some(id.into_string()))
        .ok_or_else(|| JobsError::field("page_token", "is not a token this service returned"))
}

#[tonic::async_trait]
impl InternalJobService for JobApi {
    async fn submit_job(
        &self,
        request: Request<SubmitJobRequest>,
    ) -> Result<Response<SubmitJobResponse>, Status> {
        let request = request.into_inner();
        let caller = Caller::from_principal(request.caller)?;
        let request = request_of(request.request)?;
        let (job, replayed) = self.jobs.submit(&caller, &request).await?;
        Ok(Response::new(SubmitJobResponse {
            job: Some(job),
            replayed,
        }))
    }

    async fn get_job(
        &self,
        request: Request<GetJobRequest>,
    ) -> Result<Response<GetJobResponse>, Status> {
        let request = request.into_inner();
        let caller = Caller::from_principal(request.caller)?;
        let request = request_of(request.request)?;
        let job = self.jobs.get(&caller, &request.job_id).await?;
        Ok(Response::new(GetJobResponse { job: Some(job) }))
    }

    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        let request = request.into_inner();
        let caller = Caller::from_principal(request.caller)?;
        let request = request_of(request.request)?;
        let limit = match request.page_size {
            0 => 20,
            size @ 1..=100 => u64::from(size),
            _ => return Err(JobsError::field("page_size", "must be from 1 to 100").into()),
        };
        let mut statuses = Vec::new();
        for (index, value) in request.statuses.iter().enumerate() {
            match JobStatus::try_from(*value) {
                Ok(status) if status != JobStatus::Unspecified => statuses.push(status),
                _ => {
                    return Err(JobsError::field(
                        format!("statuses[{index}]"),
                        format!("{value} is not a job status"),
                    )
                    .into());
                }
            }
        }
        let before = page_token(&request.page_token)?;
        let (jobs, next) = self
            .jobs
            .list(&caller, &statuses, before.as_deref(), limit)
            .await?;
        Ok(Response::new(ListJobsResponse {
            jobs,
            next_page_token: next
                .map(|id| URL_SAFE_NO_PAD.encode(id.as_bytes()))
                .unwrap_or_default(),
        }))
    }

    async fn cancel_job(
        &self,
        request: Request<CancelJobRequest>,
    ) -> Result<Response<CancelJobResponse>, Status> {
        let request = request.into_inner();
        let caller = Caller::from_principal(request.caller)?;
        let request = request_of(request.request)?;
        let job = self.jobs.cancel(&caller, &request.job_id).await?;
        Ok(Response::new(CancelJobResponse { job: Some(job) }))
    }

    async fn watch_job(
        &self,
        request: Request<WatchJobRequest>,
    ) -> Result<Response<WatchResponseStream>, Status> {
        let request = request.into_inner();
        let caller = Caller::from_principal(request.caller)?;
        let request = request_of(request.request)?;
        let stream = watch(
            self.jobs.clone(),
            &caller,
            &request.job_id,
            request.after_seq,
        )
        .await?;
        Ok(Response::new(Box::pin(stream)))
    }
}
