//! Integration tests of `easel-auth`, against the real service.

mod process;
