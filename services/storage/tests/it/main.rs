//! Integration tests of `easel-storage`, against the real service (in-process, on port 0),
//! real PostgreSQL and a real S3 server (`s3s-fs`, started per test).

mod bad_input;
mod contract;
mod process;
mod signed_urls;
mod support;
mod sweeper;
