// SPDX-License-Identifier: GPL-2.0

//! dm-specmirror: remote block mirroring as a device-mapper target.
//!
//! One target type, `specmirror`, with two roles (see
//! `Documentation/dm-specmirror.rst`): a `source` intercepts the writes of a
//! host and streams them to a `target` on another host, which applies them.
//!
//! Status: scaffolding. The table line is fully parsed and checked, and both
//! roles map I/O straight to their data device; replication (the `log/` and
//! `transport/` core) is not wired in yet.

use core::fmt::Write;
use kernel::{alloc::flags::GFP_KERNEL, c_str, error::code::EINVAL, prelude::*};

pub mod log;
pub mod transport;

#[path = "transport/table.rs"]
pub mod table;

mod dm;

use dm::{Args, Bio, Ctr, CtrError, DmDev, MapResult, Registration, StatusType, StatusWriter, TargetOps};
use table::{TableConfig, TableError};

module! {
    type: SpecMirrorModule,
    name: "dm_specmirror",
    author: "dm-specmirror developers",
    description: "device-mapper speculative remote mirror (specmirror target)",
    license: "GPL",
}

struct SpecMirrorModule {
    _target: Registration<SpecMirror>,
}

impl kernel::Module for SpecMirrorModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        // SAFETY: reads a bool module parameter set before init runs.
        if unsafe { dm::raw::dmsm_selftest_enabled() } {
            dm::selftest::run().inspect_err(|e| pr_err!("specmirror: selftest failed: {:?}\n", e))?;
            pr_info!("specmirror: selftest passed\n");
        }
        let target = Registration::new(module)?;
        pr_info!("specmirror target registered (version 0.1.0)\n");
        Ok(SpecMirrorModule { _target: target })
    }
}

/// One `specmirror` device: its parsed table line and its data device.
struct SpecMirror {
    config: TableConfig,
    data: DmDev,
}

/// `ti->error` strings for the table errors, NUL-terminated by `table.rs`.
fn table_error(e: TableError) -> CtrError {
    match CStr::from_bytes_with_nul(e.message_nul().as_bytes()) {
        Ok(msg) => CtrError::inval(msg),
        Err(_) => CtrError::inval(c_str!("Invalid table line")),
    }
}

impl TargetOps for SpecMirror {
    const NAME: &'static CStr = c_str!("specmirror");
    const VERSION: [u32; 3] = [0, 1, 0];

    fn ctr(ctx: &Ctr<'_>, args: &Args<'_>) -> Result<KBox<Self>, CtrError> {
        let line = table::parse(args.iter()).map_err(|e| {
            pr_warn!("specmirror: rejected table line: {}\n", e.message());
            table_error(e)
        })?;
        // parse() succeeded, so word 1 (the data device) exists.
        let path = args.get(1).ok_or(table_error(TableError::TooFewArgs))?;
        let data = ctx.get_device(path)?;
        ctx.accept_flush_discard_zeroes();
        let _ = ctx.len();
        KBox::new(SpecMirror { config: line.config, data }, GFP_KERNEL)
            .map_err(|_| CtrError { msg: c_str!("Cannot allocate target context"), err: ENOMEM })
    }

    fn map(&self, bio: &mut Bio<'_>) -> MapResult {
        // Scaffolding: both roles pass I/O straight to the data device.
        bio.remap(&self.data);
        MapResult::Remapped
    }

    fn status(&self, kind: StatusType, out: &mut StatusWriter<'_>) {
        let dev = self.data.name().to_str().unwrap_or("?");
        let _ = match kind {
            StatusType::Info => {
                write!(out, "{} {} passthrough", self.config.role_str(), dev)
            }
            StatusType::Table => self.config.write_table(out, dev),
            StatusType::Ima => {
                let _ = write!(out, "target_name=specmirror,target_version=0.1.0,");
                self.config.write_ima(out, dev)
            }
        };
    }

    fn message(&self, args: &Args<'_>, _out: &mut StatusWriter<'_>) -> Result {
        let verb = args.get(0).and_then(|s| s.to_str().ok()).unwrap_or("");
        pr_warn!("specmirror: unrecognised message '{}' ({} words)\n", verb, args.len());
        Err(EINVAL)
    }

    fn data_dev(&self) -> &DmDev {
        &self.data
    }
}
