//! easel's attack suite lives in `tests/it`: one module per area (`backend_isolation`, …),
//! each test an attack that must be refused or survived, against real processes.
