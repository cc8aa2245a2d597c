//! hactl: a highly available PostgreSQL stack over SSH, and the proof that it stays available.
//!
//! Only what the binary and the integration tests use is public; the rest is crate-private, so
//! that dead code is reported.

mod backup;
mod cli;
mod commands;
mod engine;
mod exit;
mod failover;
pub mod inventory;
mod lab;
mod modules;
mod pki;
mod probe;
mod restore;
mod roles;
mod secrets;
pub mod ssh;
mod stack;
mod status;
mod template;
mod yaml;

pub use commands::main;
#[doc(hidden)]
pub use failover::example_report as failover_example_report;
