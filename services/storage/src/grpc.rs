//! `easel.storage.v1.StorageService` over gRPC: thin handlers from proto to [`Storage`] and
//! back, errors mapped once.

use std::pin::Pin;

use easel_proto::storage::v1::storage_service_server::StorageService;
use easel_proto::storage::v1::{
    DeleteArtifactRequest, DeleteArtifactResponse, GetArtifactRequest, GetArtifactResponse,
    ListArtifactsRequest, ListArtifactsResponse, PutArtifactRequest, PutArtifactResponse,
    SignUrlRequest, SignUrlResponse, StatArtifactRequest, StatArtifactResponse,
    get_artifact_response, put_artifact_request,
};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::error::StorageError;
use crate::model::{duration, timestamp};
use crate::service::Storage;

/// The gRPC face of [`Storage`].
#[derive(Clone, Debug)]
pub struct StorageApi {
    storage: Storage,
}

impl StorageApi {
    /// Serves `storage`.
    pub fn new(storage: Storage) -> Self {
        StorageApi { storage }
    }
}

type GetStream = Pin<Box<dyn Stream<Item = Result<GetArtifactResponse, Status>> + Send>>;

#[tonic::async_trait]
impl StorageService for StorageApi {
    async fn put_artifact(
        &self,
        request: Request<Streaming<PutArtifactRequest>>,
    ) -> Result<Response<PutArtifactResponse>, Status> {
        let mut stream = request.into_inner();
        let header = match stream.next().await {
            Some(Ok(PutArtifactRequest {
                part: Some(put_artifact_request::Part::Header(header)),
            })) => header,
            Some(Err(status)) => return Err(StorageError::Stream(status).into()),
            _ => {
                return Err(
                    StorageError::field("header", "the first message must be the header").into(),
                );
            }
        };
        let chunks = stream.map(|message| match message {
            Ok(PutArtifactRequest {
                part: Some(put_artifact_request::Part::Chunk(bytes)),
            }) => Ok(bytes::Bytes::from(bytes)),
            Ok(_) => Err(Status::invalid_argument(
                "every message after the header must be a chunk",
            )),
            Err(status) => Err(status),
        });
        let record = self.storage.put(header, Box::pin(chunks)).await?;
        Ok(Response::new(PutArtifactResponse {
            artifact: Some(record.to_proto()),
        }))
    }

    async fn get_artifact(
        &self,
        request: Request<GetArtifactRequest>,
    ) -> Result<Response<GetStream>, Status> {
        let request = request.into_inner();
        let (record, chunks) = self
            .storage
            .get(&request.owner, &request.artifact_id)
            .await?;
        crate::metrics::operation("get");
        let first = futures::stream::once(async move {
            Ok(GetArtifactResponse {
                part: Some(get_artifact_response::Part::Artifact(record.to_proto())),
            })
        });
        let rest = chunks.map(|chunk| match chunk {
            Ok(bytes) => {
                metrics::counter!(crate::metrics::BYTES_SERVED).increment(bytes.len() as u64);
                Ok(GetArtifactResponse {
                    part: Some(get_artifact_response::Part::Chunk(Vec::from(bytes))),
                })
            }
            Err(error) => Err(Status::from(error)),
        });
        Ok(Response::new(Box::pin(first.chain(rest))))
    }

    async fn stat_artifact(
        &self,
        request: Request<StatArtifactRequest>,
    ) -> Result<Response<StatArtifactResponse>, Status> {
        let request = request.into_inner();
        let record = self
            .storage
            .stat(&request.owner, &request.artifact_id)
            .await?;
        crate::metrics::operation("stat");
        Ok(Response::new(StatArtifactResponse {
            artifact: Some(record.to_proto()),
        }))
    }

    async fn sign_url(
        &self,
        request: Request<SignUrlRequest>,
    ) -> Result<Response<SignUrlResponse>, Status> {
        let request = request.into_inner();
        let ttl = duration("ttl", request.ttl.as_ref())?;
        let signed = self
            .storage
            .sign_url(&request.owner, &request.artifact_id, ttl)
            .await?;
        crate::metrics::operation("sign");
        Ok(Response::new(SignUrlResponse {
            url: signed.url.to_string(),
            expire_time: Some(timestamp(signed.expires_at)),
        }))
    }

    async fn delete_artifact(
        &self,
        request: Request<DeleteArtifactRequest>,
    ) -> Result<Response<DeleteArtifactResponse>, Status> {
        let request = request.into_inner();
        self.storage
            .delete(&request.owner, &request.artifact_id)
            .await?;
        crate::metrics::operation("delete");
        Ok(Response::new(DeleteArtifactResponse {}))
    }

    async fn list_artifacts(
        &self,
        request: Request<ListArtifactsRequest>,
    ) -> Result<Response<ListArtifactsResponse>, Status> {
        let request = request.into_inner();
        let page = self
            .storage
            .list(
                &request.owner,
                &request.job_id,
                request.page_size,
                &request.page_token,
            )
            .await?;
        crate::metrics::operation("list");
        Ok(Response::new(ListArtifactsResponse {
            artifacts: page.artifacts.iter().map(|a| a.to_proto()).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}
