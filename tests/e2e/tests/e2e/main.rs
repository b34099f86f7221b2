//! End-to-end tests: the platform's binaries as separate processes, driven over REST,
//! WebSocket, SSE, gRPC, gRPC-web (from the wire format and from a real Chromium through a
//! real Envoy), HTTPS at the production edge, and the `easel` CLI.

mod browser;
mod edge_tls;
mod errors;
mod grpc;
mod redis_outage;
mod rest;
mod trace;
mod up;
