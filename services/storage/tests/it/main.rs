//! Integration tests of `easel-storage`, against the real service.

mod process;
