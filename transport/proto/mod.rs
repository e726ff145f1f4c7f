//! Source and target protocol state machines (pure core, sans-IO).
/// placeholder
pub fn _x() -> u32 { crate::log::_y() }
