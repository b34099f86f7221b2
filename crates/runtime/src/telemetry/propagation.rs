//! W3C trace context (`traceparent`, `tracestate`) across hops.
//!
//! The propagator is a value, not a process global, so nothing here depends on what another
//! library installed.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Writes the current span's trace context into a carrier.
pub fn inject_current(carrier: &mut dyn Injector) {
    inject_span(&tracing::Span::current(), carrier);
}

/// Writes a span's trace context into a carrier.
pub fn inject_span(span: &tracing::Span, carrier: &mut dyn Injector) {
    let context = span.context();
    TraceContextPropagator::new().inject_context(&context, carrier);
}

/// Reads a trace context from a carrier; an empty context when there is none.
pub fn extract(carrier: &dyn Extractor) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(carrier)
}

/// Makes `span` a child of the trace context in `carrier`, if it holds a valid one.
pub fn set_parent_from(span: &tracing::Span, carrier: &dyn Extractor) {
    let parent = extract(carrier);
    if parent.span().span_context().is_valid() {
        // Fails only when the span is disabled or already started a trace of its own.
        let _ = span.set_parent(parent);
    }
}

/// The current span's trace context as a string map (e.g. for a queue message).
pub fn current_context_map() -> HashMap<String, String> {
    let mut map = HashMap::new();
    inject_current(&mut map);
    map
}

/// Writes the current span's trace context into HTTP headers (or gRPC metadata's headers).
pub fn inject_current_into_headers(headers: &mut http::HeaderMap) {
    inject_current(&mut HeaderInjector(headers));
}

/// Makes `span` a child of the trace context in HTTP headers.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    set_parent_from(span, &HeaderExtractor(headers));
}

/// The current trace id in lowercase hex, when the current span is being traced.
pub fn current_trace_id() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The trace id carried by a string map, if it holds a valid `traceparent`.
pub fn trace_id_of(map: &HashMap<String, String>) -> Option<String> {
    let context = extract(map);
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips_through_a_string_map() {
        let mut map = HashMap::new();
        map.insert(
            "traceparent".to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
        );
        assert_eq!(
            trace_id_of(&map).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let context = extract(&map);
        let mut out = HashMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut out);
        assert_eq!(out.get("traceparent"), map.get("traceparent"));
    }

    #[test]
    fn garbage_is_no_trace() {
        let mut map = HashMap::new();
        map.insert("traceparent".to_string(), "not a trace".to_string());
        assert_eq!(trace_id_of(&map), None);
    }
}
