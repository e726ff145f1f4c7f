//! Mirrors the kernel crate's `transport` module, minus the socket glue.

#[path = "../../../transport/proto/mod.rs"]
pub mod proto;

#[path = "../../../transport/table.rs"]
pub mod table;
