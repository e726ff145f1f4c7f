// SPDX-License-Identifier: GPL-2.0

//! Replication transport: the pure protocol state machines (`proto`, shared
//! with the userspace test crate) and, in the kernel build, the socket and
//! thread glue (`net`, `thread`).

pub(crate) mod net;
pub mod proto;
pub(crate) mod thread;
