// SPDX-License-Identifier: GPL-2.0

//! dm-specmirror: remote block mirroring as a device-mapper target.
//!
//! One target type, `specmirror`, with two roles (see
//! `Documentation/dm-specmirror.rst`): a `source` intercepts the writes of a
//! host and streams them to a `target` on another host, which applies them.
//!
//! The pure core (`log/`, `transport/proto/`, `transport/table.rs`)
//! decides; the kernel interface (`transport/sys/`) wraps the raw calls;
//! the roles (`transport/source_dev/`, `transport/target_dev/`) execute
//! the core's steps with bios, pages and sockets.

use core::fmt::Write;
use kernel::{
    alloc::flags::GFP_KERNEL,
    c_str,
    error::code::{EINVAL, ENOMEM},
    new_mutex,
    prelude::*,
    sync::Mutex,
};

pub mod log;
pub mod transport;

use kernel::sync::Arc;
use transport::sys::bio::Bio;
use transport::sys::{self as sys, Args, Ctr, CtrError, DmDev, EndIo, Limits, MapResult, Registration, StatusType, StatusWriter, TargetOps};
use transport::table::{self as table, Role, TableConfig, TableError};
use transport::metadata::Metadata;
use transport::{source_dev::SourceDev, target_dev::TargetDev};

/// The version dmsetup shows; the wire protocol's is in `log/record.rs`.
const VERSION: [u32; 3] = [0, 8, 2];

module! {
    type: SpecMirrorModule,
    name: "dm_specmirror",
    author: "dm-specmirror developers",
    description: "device-mapper speculative remote mirror (specmirror target)",
    license: "GPL",
}

struct SpecMirrorModule {
    // Dropped in this order: no device (and so no socket) is left when the
    // memalloc key reference goes.
    _target: Registration<SpecMirror>,
    _memalloc: sys::net::MemallocSocks,
}

impl kernel::Module for SpecMirrorModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        if sys::selftest_enabled() {
            sys::selftest::run().inspect_err(|e| pr_err!("specmirror: selftest failed: {:?}\n", e))?;
            pr_info!("specmirror: selftest passed\n");
        }
        let memalloc = sys::net::MemallocSocks::hold();
        let target = Registration::new(module)?;
        pr_info!("specmirror target registered (version {}.{}.{})\n", VERSION[0], VERSION[1], VERSION[2]);
        Ok(SpecMirrorModule { _target: target, _memalloc: memalloc })
    }
}

/// One `specmirror` device: a source or a target, and its metadata
/// (shared with the source's worker, which saves the dirty bitmap).
struct SpecMirror {
    role: RoleDev,
    meta: Arc<Mutex<Metadata>>,
}

/// The role half of a device.
enum RoleDev {
    Source(Arc<SourceDev>),
    Target(Arc<TargetDev>),
}

/// `ti->error` strings for the table errors, NUL-terminated by `table.rs`.
fn table_error(e: TableError) -> CtrError {
    CtrError::inval_nul(e.message_nul(), c_str!("Invalid table line"))
}

/// Largest bio the source copies into one record: 512 KiB keeps a record
/// within one bio of the target (BIO_MAX_VECS pages) and bounds the time
/// `map` holds the ring lock.
const MAX_BIO_SECTORS: u32 = 1024;

impl SpecMirror {
    fn config(&self) -> &TableConfig {
        match &self.role {
            RoleDev::Source(s) => s.config(),
            RoleDev::Target(t) => t.config(),
        }
    }
}

impl Drop for RoleDev {
    fn drop(&mut self) {
        // dtr: dm suspended the device first, but stop again in case the
        // table was never resumed (threads are not running then).
        match self {
            RoleDev::Source(s) => s.stop(),
            RoleDev::Target(t) => t.stop(),
        }
    }
}

impl TargetOps for SpecMirror {
    const NAME: &'static CStr = c_str!("specmirror");
    const VERSION: [u32; 3] = VERSION;

    fn ctr(ctx: &Ctr<'_>, args: &Args<'_>) -> Result<KBox<Self>, CtrError> {
        let line = table::parse(args.iter()).map_err(|e| {
            pr_warn!("specmirror: rejected table line: {}\n", e.message());
            table_error(e)
        })?;
        // parse() succeeded, so words 1 and 2 (the devices) exist.
        let path = args.get(1).ok_or(table_error(TableError::TooFewArgs))?;
        let meta_path = args.get(2).ok_or(table_error(TableError::TooFewArgs))?;
        let data = ctx.get_device(path, c_str!("Data device lookup failed"))?;
        // dm checks the length only after the constructor; the metadata
        // must not be formatted for a size the data device does not have.
        if ctx.len() > data.sectors() {
            return Err(CtrError::inval(c_str!("Data device is smaller than the target")));
        }
        let meta_dev = ctx.get_device(meta_path, c_str!("Metadata device lookup failed"))?;
        if meta_dev.bdev() == data.bdev() {
            return Err(CtrError::inval(c_str!("Metadata device must not be the data device")));
        }
        let meta = Metadata::open(meta_dev, &line.config, ctx.len())?;
        let meta = Arc::pin_init(new_mutex!(meta, "specmirror_meta"), GFP_KERNEL)
            .map_err(|_| CtrError { msg: c_str!("Cannot allocate metadata state"), err: ENOMEM })?;
        ctx.accept_flush_discard_zeroes();
        ctx.set_per_bio_data_size(core::mem::size_of::<transport::sys::bio::PerBio>());
        ctx.set_max_io_len(line.config.region_sectors.min(MAX_BIO_SECTORS))?;
        let nomem = |_| CtrError { msg: c_str!("Cannot allocate the ring or the threads' state"), err: ENOMEM };
        let role = match line.config.role {
            Role::Source => RoleDev::Source(SourceDev::new(line.config, data, meta.clone(), ctx.events(), ctx.target(), ctx.len())?),
            Role::Target => RoleDev::Target(TargetDev::new(line.config, data, meta.clone(), ctx.events(), ctx.len()).map_err(nomem)?),
        };
        KBox::new(SpecMirror { role, meta }, GFP_KERNEL).map_err(|_| CtrError { msg: c_str!("Cannot allocate target context"), err: ENOMEM })
    }

    fn map(&self, bio: &mut Bio<'_>) -> MapResult {
        match &self.role {
            RoleDev::Source(s) => s.map(bio),
            RoleDev::Target(t) => t.map(bio),
        }
    }

    fn end_io(&self, bio: &mut Bio<'_>, status: u8) -> EndIo {
        match &self.role {
            RoleDev::Source(s) => s.end_io(bio, status),
            RoleDev::Target(t) => t.end_io(bio, status),
        }
    }

    fn io_hints(&self, limits: &mut Limits<'_>) {
        limits.cap_abnormal_io(self.config().region_sectors);
    }

    fn preresume(&self) -> Result {
        match &self.role {
            RoleDev::Source(s) => s.start(),
            RoleDev::Target(t) => t.start(),
        }
    }

    fn presuspend(&self) {
        match &self.role {
            RoleDev::Source(s) => s.presuspend(),
            RoleDev::Target(t) => t.presuspend(),
        }
    }

    fn presuspend_undo(&self) {
        match &self.role {
            RoleDev::Source(s) => s.presuspend_undo(),
            RoleDev::Target(t) => t.presuspend_undo(),
        }
    }

    fn postsuspend(&self) {
        match &self.role {
            RoleDev::Source(s) => s.stop(),
            RoleDev::Target(t) => t.stop(),
        }
    }

    fn status(&self, kind: StatusType, out: &mut StatusWriter<'_>) {
        let dev = self.data_dev().name().to_str().unwrap_or("?");
        // The worker holds the lock only across one metadata block write.
        let meta = self.meta.lock();
        let gen = meta.superblock().gens.current;
        let meta = meta.dev().name().to_str().unwrap_or("?");
        let _ = match kind {
            StatusType::Info => {
                match &self.role {
                    RoleDev::Source(s) => s.status(out, dev),
                    RoleDev::Target(t) => t.status(out, dev),
                }
                // The current generation the superblock holds (0: a target
                // never synced).
                write!(out, " meta={} gen={:016x}", meta, gen)
            }
            StatusType::Table => self.config().write_table(out, dev, meta),
            StatusType::Ima => {
                let _ = write!(out, "target_name=specmirror,target_version={}.{}.{},", VERSION[0], VERSION[1], VERSION[2]);
                self.config().write_ima(out, dev, meta)
            }
        };
    }

    fn message(&self, args: &Args<'_>, _out: &mut StatusWriter<'_>) -> Result {
        let mut words: [&[u8]; 4] = [&[]; 4];
        if args.len() > words.len() {
            return Err(EINVAL);
        }
        for (w, a) in words.iter_mut().zip(args.iter()) {
            *w = a;
        }
        let words = words.get(..args.len()).unwrap_or(&[]);
        let r = match &self.role {
            RoleDev::Source(s) => s.message(words),
            RoleDev::Target(t) => t.message(words),
        };
        if r.is_err() {
            let verb = args.get(0).and_then(|s| s.to_str().ok()).unwrap_or("");
            pr_warn!("specmirror: message '{}' ({} words) failed: {:?}\n", verb, args.len(), r);
        }
        r
    }

    fn data_dev(&self) -> &DmDev {
        match &self.role {
            RoleDev::Source(s) => s.data(),
            RoleDev::Target(t) => t.data(),
        }
    }
}
