//! The integration tests: one binary, one module per area. They run the built xtask
//! against scratch projects, the example colibri and the real samples in tests/data.

mod support;

mod config;
mod engine;
mod gate;
mod port;
mod tidy;
