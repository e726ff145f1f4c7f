//! Records, rollback ring, commit log and region locks (pure core).
/// placeholder
pub fn _y() -> u32 { 1 }
