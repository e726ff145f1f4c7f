// SPDX-License-Identifier: GPL-2.0

//! The kernel interface: the only code that calls raw bindings. Each
//! file wraps one kind of kernel object in a thin safe type, with the
//! `unsafe` inside it and a `// SAFETY:` comment on every block:
//!
//! - [`dm`]: device-mapper target registration, table constructor,
//!   devices, status, messages, events;
//! - [`bio`]: the bios dm hands to the target;
//! - [`devio`]: the bios the roles build themselves (local writes from
//!   ring pages, records from commit-log pages, repair reads);
//! - [`metaio`]: whole-block synchronous I/O on the metadata device;
//! - [`pages`]: ring pages and the kernel's CRC-32C;
//! - [`sync`]: the irq-safe spinlock behind each role's state;
//! - [`net`]: kernel TCP sockets in the table loader's namespace;
//! - [`frames`]: whole frames off a socket;
//! - [`thread`]: kernel threads running a closure;
//! - [`selftest`]: a developer smoke test of the above at module load.
//!
//! It uses the pure core (`log/`) for the `Pages` and `Crc32c` traits it
//! implements; nothing here decides anything about the protocol.

/// Declarations bindgen generated from `bindings.h` (see Kbuild).
#[allow(
    dead_code,
    improper_ctypes,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unreachable_pub,
    unnecessary_transmutes,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::undocumented_unsafe_blocks
)]
pub(crate) mod raw {
    include!("bindings_generated.rs");
}

pub(crate) mod bio;
pub(crate) mod devio;
pub(crate) mod dm;
pub(crate) mod frames;
pub(crate) mod metaio;
pub(crate) mod net;
pub(crate) mod pages;
pub(crate) mod selftest;
pub(crate) mod sync;
pub(crate) mod thread;

pub(crate) use dm::*;

/// Whether the developer-only fault-injection messages are enabled
/// (module parameter `dmsm_fault_injection`).
pub(crate) fn fault_injection() -> bool {
    // SAFETY: reads a module parameter; no preconditions.
    unsafe { raw::dmsm_fault_injection_enabled() }
}

/// Whether the developer self-test runs at load (`dmsm_selftest`).
pub(crate) fn selftest_enabled() -> bool {
    // SAFETY: reads a bool module parameter set before init runs.
    unsafe { raw::dmsm_selftest_enabled() }
}

/// Monotonic time in nanoseconds (`ktime_get`), the core's `Instant`.
pub(crate) fn now() -> u64 {
    u64::try_from(kernel::time::Ktime::ktime_get().to_ns()).unwrap_or(0)
}
