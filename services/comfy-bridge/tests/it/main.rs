//! Integration tests of `easel-comfy-bridge`, against the real service and ComfyUI simulators.

mod backends;
mod errors;
mod isolation;
mod process;
mod runs;
mod support;
