//! Records, rollback ring, commit log and region locks (pure core).
//!
//! Everything below uses `core` only, allocates nothing and never panics on
//! input: the kernel module compiles these very files, and a userspace
//! crate tests them at full speed.
//!
//! - [`record`]: frame header, codec, HELLO payload, CRC convention.
//! - [`ring`]: source-side rollback ring (send cursor, ack, rewind).
//! - [`commit`]: target-side commit log (flush epochs, issue/complete).
//! - [`filter`]: counting filter of the regions pending records touch.
//! - [`locks`]: target-side region lock table.
//! - [`pages`]: caller page storage seen as a byte ring (shared by both).
//! - [`meta`]: persistent metadata: superblock, dirty bitmap, generations.

pub mod commit;
pub mod filter;
pub mod locks;
pub mod meta;
pub mod pages;
pub mod record;
pub mod ring;
