// SPDX-License-Identifier: GPL-2.0

//! Replication transport: the pure protocol state machines (`proto`, shared
//! with the userspace test crate) and, in the kernel build, the glue that
//! runs them: sockets and threads (`net`, `thread`, `frames`) and the two
//! roles (`source_dev`, `target_dev`).

pub(crate) mod frames;
pub(crate) mod net;
pub mod proto;
pub(crate) mod source_dev;
pub(crate) mod target_dev;
pub(crate) mod thread;
