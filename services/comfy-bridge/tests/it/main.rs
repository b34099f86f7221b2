//! Integration tests of `easel-comfy-bridge`, against the real service.

mod process;
