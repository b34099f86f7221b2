//! The client libraries and the Postman collection against the platform's binaries as
//! processes: each test starts its own platform and runs one client suite as a child process.

mod postman;
mod python;
mod typescript;
