//! `easel.jobs.internal.v1.InternalJobService`: thin handlers from proto to [`Jobs`] and back.
//!
//! [`service`] is what the server mounts: the generated service, except that `WatchJob`
//! streams are encoded with a small initial buffer. tonic's default reserves 8 KiB per call
//! for its whole life, which for thousands of long-lived watch streams of small events is most
//! of their memory.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use easel_proto::jobs::internal::v1::internal_job_service_server::{
    InternalJobService, InternalJobServiceServer, SERVICE_NAME,
};
use easel_proto::jobs::internal::v1::{
    CancelJobRequest, GetJobRequest, ListJobsRequest, SubmitJobRequest, WatchJobRequest,
};
use easel_proto::jobs::v1::{
    CancelJobResponse, GetJobResponse, JobStatus, ListJobsResponse, SubmitJobResponse,
    WatchJobResponse,
};
use futures::future::BoxFuture;
use tonic::codec::{BufferSettings, Codec};
use tonic::server::{NamedService, ServerStreamingService};
use tonic::{Request, Response, Status};
use tonic_prost::{ProstDecoder, ProstEncoder};

use crate::error::JobsError;
use crate::model::{Caller, JobId};
use crate::service::Jobs;
use crate::watch::watch;
use easel_runtime::page;

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
    page::decode(token, "", |id| JobId::parse(id).map(JobId::into_string))
        .map_err(|invalid| JobsError::field(page::FIELD, invalid.to_string()))
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
            next_page_token: next.map(|id| page::encode(&id, "")).unwrap_or_default(),
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
        Ok(Response::new(stream))
    }
}

/// The gRPC path of `WatchJob`.
const WATCH_PATH: &str = "/easel.jobs.internal.v1.InternalJobService/WatchJob";
/// The first size of a watch stream's encode buffer; it grows by this much when a message
/// needs more (a snapshot with many outputs).
const WATCH_BUFFER: usize = 256;

/// The service to mount: the generated one, with `WatchJob` served by [`WatchMethod`].
#[derive(Clone, Debug)]
pub struct JobsService {
    generated: InternalJobServiceServer<JobApi>,
    api: Arc<JobApi>,
}

/// The service for `jobs`.
pub fn service(jobs: Arc<Jobs>) -> JobsService {
    let api = JobApi::new(jobs);
    JobsService {
        generated: InternalJobServiceServer::new(api.clone()),
        api: Arc::new(api),
    }
}

impl NamedService for JobsService {
    const NAME: &'static str = SERVICE_NAME;
}

impl tower::Service<http::Request<tonic::body::Body>> for JobsService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.uri().path() == WATCH_PATH {
            let method = WatchMethod(self.api.clone());
            return Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(WatchCodec);
                Ok(grpc.server_streaming(method, request).await)
            });
        }
        self.generated.call(request)
    }
}

/// `WatchJob` through [`JobApi`].
struct WatchMethod(Arc<JobApi>);

impl ServerStreamingService<WatchJobRequest> for WatchMethod {
    type Response = WatchJobResponse;
    type ResponseStream = WatchResponseStream;
    type Future = BoxFuture<'static, Result<Response<WatchResponseStream>, Status>>;

    fn call(&mut self, request: Request<WatchJobRequest>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move { api.watch_job(request).await })
    }
}

/// The protobuf codec with a small encode buffer.
#[derive(Clone, Copy, Debug, Default)]
struct WatchCodec;

impl Codec for WatchCodec {
    type Encode = WatchJobResponse;
    type Decode = WatchJobRequest;
    type Encoder = ProstEncoder<WatchJobResponse>;
    type Decoder = ProstDecoder<WatchJobRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(WATCH_BUFFER, 32 * 1024))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}
