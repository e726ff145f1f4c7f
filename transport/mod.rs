// SPDX-License-Identifier: GPL-2.0

//! Replication: the pure core's state machines and table parsing, the
//! kernel interface, and the two roles that join them.
//!
//! Arrows point one way: the core (`proto`, `table`, and `crate::log`)
//! imports nothing from the kernel; `sys` is the only user of the raw
//! bindings and uses the core only for the traits it implements; the
//! roles (`source_dev`, `target_dev`, and `metadata`, which loads either
//! role's metadata device) sit above both; the crate root
//! (`dm_specmirror.rs`) above the roles.

pub(crate) mod metadata;
pub mod proto;
pub(crate) mod source_dev;
pub(crate) mod sys;
pub mod table;
pub(crate) mod target_dev;
