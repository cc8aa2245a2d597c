//! hactl: a highly available PostgreSQL stack over SSH, and the proof that it stays available.

pub mod cli;
pub mod engine;
pub mod exit;
pub mod failover;
pub mod inventory;
pub mod lab;
pub mod modules;
pub mod probe;
pub mod roles;
pub mod secrets;
pub mod ssh;
pub mod stack;
pub mod template;
pub mod yaml;
