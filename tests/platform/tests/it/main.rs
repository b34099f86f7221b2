//! The platform's tests: `easel-gateway` in front of the real auth, jobs, comfy-bridge and
//! storage services (assembled in process by `easel-platform`, each on its own database) and
//! the ComfyUI simulator.

// A failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

mod contract;
mod door;
mod envoy;
mod grpc_web;
mod host_header;
mod logs;
mod malformed;
mod process;
mod protocols;
mod rest;
mod scopes;
mod streams;
mod support;
