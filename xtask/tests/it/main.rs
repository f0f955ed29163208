//! The integration tests: one binary, one module per area. They run the built xtask
//! against scratch projects, the example colibri and the real samples in tests/data;
//! the helpers they share with the benchmarks are in crates/test-support.

// Tests may start processes and print: the product's boundaries (clippy.toml) are
// not theirs.
#![allow(clippy::disallowed_methods, clippy::disallowed_macros, clippy::print_stdout, clippy::print_stderr)]

mod audit;
mod bulk;
mod bundle;
mod compat;
mod config;
mod display;
mod engine;
mod gate;
mod gate_aarch64;
mod gate_hostile;
mod iso;
mod makesum;
mod makesum_index;
mod port;
mod publish;
mod publish_pool;
mod release;
mod report;
mod reproduce;
mod runbook;
mod setup;
mod sign;
mod targets;
mod tidy;
