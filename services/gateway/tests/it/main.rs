//! Integration tests of `easel-gateway`, against the real service.

mod process;
