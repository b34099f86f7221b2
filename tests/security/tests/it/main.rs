//! easel's attack suite: each test is an attack from a security review, run against the real
//! platform (the service binaries as separate processes through `easel_e2e::Platform`, or
//! `easel up`), that must be refused or survived. One module per area; the next endpoint adds
//! its attacks here.

mod backend_isolation;
