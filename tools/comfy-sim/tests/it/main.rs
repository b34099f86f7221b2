//! Integration tests: the simulator in-process on port 0, driven like the recordings.

mod behaviour;
mod conformance;
mod faults;
mod support;
