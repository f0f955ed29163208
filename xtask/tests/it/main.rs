//! The integration tests: one binary, one module per area. They run the built xtask
//! against scratch projects, the example colibri and the real samples in tests/data.

mod nginx;
mod pipeline_kit;
mod repo_kit;
mod support;

mod bulk;
mod compat;
mod config;
mod engine;
mod gate;
mod iso;
mod makesum;
mod port;
mod publish;
mod release;
mod runbook;
mod setup;
mod sign;
mod tidy;

use gate::initramfs;
