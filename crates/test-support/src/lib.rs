//! The fixtures of easel's tests and benches, each the real thing, isolated per test: a
//! throwaway PostgreSQL database, a Redis key prefix (or a private `redis-server` for tests
//! that kill it), an in-process OTLP trace receiver, service binaries as child processes, an
//! S3 server (`s3s-fs`) and Envoy.
//!
//! Tests run in parallel, so every fixture hands out something no other test touches. A
//! dev-dependency only: no production crate depends on it.

mod binary;
mod database;
mod envoy;
mod otlp;
mod process;
mod redis_prefix;
mod redis_server;
mod s3;

pub use binary::workspace_binary;
pub use database::{TestDatabase, postgres_admin_url};
pub use envoy::Envoy;
pub use otlp::{OtlpReceiver, ReceivedSpan};
pub use process::{ServiceProcess, check_service_process};
pub use redis_prefix::{TestRedis, redis_url};
pub use redis_server::RedisServer;
pub use s3::S3Server;
