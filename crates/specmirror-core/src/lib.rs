//! The pure core of dm-specmirror, built from the same files the kernel
//! module compiles (`log/` and `transport/proto/` at the repository root).
//! Nothing here may use `std`, `alloc` or `kernel::`: the module paths below
//! mirror the kernel crate's (`crate::log`, `crate::transport::proto`) so a
//! file refers to its siblings the same way in both builds.
#![no_std]

#[path = "../../../log/mod.rs"]
pub mod log;

pub mod transport;

#[cfg(feature = "vec-pages")]
pub mod vec_pages;

#[cfg(feature = "vec-pages")]
pub mod pair;
