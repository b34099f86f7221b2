//! Integration tests of `easel-jobs`, against the real service.

mod process;
