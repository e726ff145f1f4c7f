//! Throughput model for `specmirror-sim report` (filled in below).

/// Prints the report table.
pub fn print_report() {}
