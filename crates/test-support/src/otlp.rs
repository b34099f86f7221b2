//! An in-process OTLP trace receiver, to assert on the spans services export.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::sync::Notify;

/// An OTLP/gRPC trace collector in the test process: point `OTEL_EXPORTER_OTLP_ENDPOINT` (or a
/// `easel_runtime::TelemetryConfig`) at [`OtlpReceiver::endpoint`] and assert on what arrives.
#[derive(Clone, Debug)]
pub struct OtlpReceiver {
    address: SocketAddr,
    collected: Arc<Collected>,
}

#[derive(Debug, Default)]
struct Collected {
    spans: Mutex<Vec<ReceivedSpan>>,
    arrived: Notify,
}

/// A span as received, with its service's name.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    /// `service.name` of the exporting process.
    pub service_name: String,
    /// The span.
    pub span: Span,
}

impl ReceivedSpan {
    /// The trace id in lowercase hex.
    pub fn trace_id(&self) -> String {
        hex_string(&self.span.trace_id)
    }

    /// The span id in lowercase hex.
    pub fn span_id(&self) -> String {
        hex_string(&self.span.span_id)
    }

    /// The parent span id in lowercase hex (empty for a root).
    pub fn parent_span_id(&self) -> String {
        hex_string(&self.span.parent_span_id)
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[derive(Clone)]
struct ReceiverService {
    collected: Arc<Collected>,
}

#[tonic::async_trait]
impl TraceService for ReceiverService {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service_name = resource_spans
                .resource
                .iter()
                .flat_map(|resource| resource.attributes.iter())
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| attribute.value.as_ref())
                .and_then(|value| match &value.value {
                    Some(
                        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(name),
                    ) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    received.push(ReceivedSpan {
                        service_name: service_name.clone(),
                        span,
                    });
                }
            }
        }
        if let Ok(mut spans) = self.collected.spans.lock() {
            spans.extend(received);
        }
        self.collected.arrived.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl OtlpReceiver {
    /// Starts the receiver on a loopback port; it runs until the test's runtime ends.
    pub async fn start() -> OtlpReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("cannot bind the OTLP receiver: {error}"));
        let address = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("no local address: {error}"));
        let collected = Arc::new(Collected::default());
        let service = TraceServiceServer::new(ReceiverService {
            collected: collected.clone(),
        });
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        OtlpReceiver { address, collected }
    }

    /// The endpoint URL for the exporter.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.collected
            .spans
            .lock()
            .map(|spans| spans.clone())
            .unwrap_or_default()
    }

    /// Waits until `done` holds for the spans received, or the deadline passes; returns the
    /// spans either way so the test can assert and show them.
    pub async fn wait_for(
        &self,
        deadline: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let arrived = self.collected.arrived.notified();
            let spans = self.spans();
            if done(&spans) || tokio::time::Instant::now() >= until {
                return spans;
            }
            let _ = tokio::time::timeout_at(until, arrived).await;
        }
    }
}
