// SPDX-License-Identifier: GPL-2.0

//! Thin safe wrappers over the device-mapper C API: target registration,
//! the table constructor's context, devices, status, messages, events.
//!
//! 6.12's `kernel` crate has no device-mapper abstraction, so this module
//! is the one place that touches `struct target_type`, `struct dm_target`,
//! `struct dm_dev` and the bios dm hands to `map`. Everything above it is
//! safe Rust: a target implements [`TargetOps`] and [`Registration`] turns
//! that into a registered dm target type.
//!
//! dm calls `map` on many CPUs at once, so the per-device state is only
//! ever reached through `&T` (never `&mut T`), as the unmerged 2023 RFC for
//! Rust dm abstractions learned the hard way.

use core::{fmt, marker::PhantomData};
use kernel::{
    alloc::{flags::GFP_KERNEL, KBox},
    c_str,
    error::{code::EINVAL, to_result, Error},
    ffi::{c_char, c_int, c_uint, c_void},
    prelude::*,
    str::CStr,
    types::Opaque,
    ThisModule,
};

use super::bio::Bio;
use super::raw::{self, dm_dev, dm_target, target_type};

/// What `map` tells dm to do with a bio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MapResult {
    /// The bio was remapped; dm submits it to the new device.
    Remapped,
    /// The target took the bio (see [`Bio::take`]) and will submit or
    /// end it itself.
    Submitted,
    /// End the bio with an I/O error.
    Kill,
}

impl MapResult {
    fn to_c(self) -> c_int {
        let v = match self {
            MapResult::Remapped => raw::DM_MAPIO_REMAPPED,
            MapResult::Submitted => raw::DM_MAPIO_SUBMITTED,
            MapResult::Kill => raw::DM_MAPIO_KILL,
        };
        // The DM_MAPIO_* values are small constants.
        v as c_int
    }
}

/// Which status dm asks for (`dmsetup status`, `dmsetup table`, IMA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatusType {
    /// `dmsetup status`: one line of runtime state.
    Info,
    /// `dmsetup table`: the table line that recreates the device.
    Table,
    /// IMA measurement: `key=value,` pairs ending in `;`.
    Ima,
}

/// Why a constructor failed: the message dm prints and the errno.
pub(crate) struct CtrError {
    /// Static message for `ti->error`.
    pub(crate) msg: &'static CStr,
    /// Returned to dm (and to `dmsetup`).
    pub(crate) err: Error,
}

impl CtrError {
    /// An `-EINVAL` with `msg`.
    pub(crate) fn inval(msg: &'static CStr) -> Self {
        CtrError { msg, err: EINVAL }
    }

    /// An `-EINVAL` with one of the core's NUL-terminated messages, or
    /// `fallback` if it is not one.
    pub(crate) fn inval_nul(msg: &'static str, fallback: &'static CStr) -> Self {
        CtrError::inval(CStr::from_bytes_with_nul(msg.as_bytes()).unwrap_or(fallback))
    }
}

/// The words of a table line or a message, as dm split them.
///
/// # Invariants
///
/// `argv` points to `argc` valid NUL-terminated strings that live for `'a`.
pub(crate) struct Args<'a> {
    argv: *mut *mut c_char,
    argc: usize,
    _p: PhantomData<&'a CStr>,
}

impl<'a> Args<'a> {
    /// # Safety
    ///
    /// `argv` must point to `argc` valid NUL-terminated strings that stay
    /// valid and unchanged for `'a`.
    unsafe fn from_raw(argc: c_uint, argv: *mut *mut c_char) -> Self {
        // INVARIANT: guaranteed by the caller.
        Args { argv, argc: argc as usize, _p: PhantomData }
    }

    /// Number of words.
    pub(crate) fn len(&self) -> usize {
        self.argc
    }

    /// Word `i`, if there is one.
    pub(crate) fn get(&self, i: usize) -> Option<&'a CStr> {
        if i >= self.argc {
            return None;
        }
        // SAFETY: `i < argc`, and by the type invariant each of the first
        // `argc` entries of `argv` is a valid NUL-terminated string for 'a.
        Some(unsafe { CStr::from_char_ptr(*self.argv.add(i)) })
    }

    /// The words as byte slices (without NUL), in order.
    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + '_ {
        (0..self.argc).map(move |i| self.get(i).map_or(&[][..], |s| s.as_bytes()))
    }
}

/// A device opened with `dm_get_device` for one target instance.
///
/// # Invariants
///
/// `dev` came from a successful `dm_get_device(ti, ..)` and is released
/// exactly once, by `Drop`, with the same `ti`, which outlives this value
/// (it is dropped from the target's destructor at the latest).
pub(crate) struct DmDev {
    ti: *mut dm_target,
    dev: *mut dm_dev,
}

// SAFETY: a `dm_dev` is a refcounted handle dm core protects with its own
// locks; we only read its name and bdev, which do not change while held.
unsafe impl Send for DmDev {}
// SAFETY: as above, shared reads only.
unsafe impl Sync for DmDev {}

impl DmDev {
    /// The device's name as dm prints it (`major:minor`).
    pub(crate) fn name(&self) -> &CStr {
        // SAFETY: by the type invariant `dev` is a live dm_dev; `name` is a
        // NUL-terminated char array dm filled in `dm_get_device`.
        unsafe { CStr::from_char_ptr((*self.dev).name.as_ptr()) }
    }

    pub(crate) fn bdev(&self) -> *mut kernel::bindings::block_device {
        // SAFETY: by the type invariant `dev` is a live dm_dev.
        unsafe { (*self.dev).bdev }
    }

    /// Flushes the device's volatile write cache and waits for it: every
    /// write completed before is then on stable media. Process context
    /// only (it sleeps).
    pub(crate) fn flush(&self) -> kernel::error::Result {
        // SAFETY: `bdev()` is the live block device this dm_dev holds open;
        // the caller is in process context, where the flush may sleep.
        kernel::error::to_result(unsafe { raw::dmsm_bdev_flush(self.bdev()) })
    }

    /// Reads `len` bytes (whole sectors, at most a page) at `sector` into
    /// page `i` of `buf` and waits. Process context only (it sleeps).
    pub(crate) fn read_into(&self, sector: u64, buf: &mut super::pages::KPages, i: usize, len: usize) -> kernel::error::Result {
        let page = buf.page_ptr(i).ok_or(kernel::error::code::EINVAL)?;
        let len = u32::try_from(len).map_err(|_| kernel::error::code::EINVAL)?;
        // SAFETY: `bdev()` is the live block device this dm_dev holds open;
        // `page` is a live page of `buf`, which `&mut` keeps ours for the
        // read; the helper checks `len` against the page; the caller is in
        // process context, where the read may sleep.
        kernel::error::to_result(unsafe { raw::dmsm_range_read_sync(self.bdev(), sector, page, len) })
    }

    /// The device's size in 512-byte sectors.
    pub(crate) fn sectors(&self) -> u64 {
        // SAFETY: `bdev()` is the live block device this dm_dev holds open.
        unsafe { raw::dmsm_bdev_nr_sectors(self.bdev()) }
    }

    /// The device's logical block size in bytes.
    pub(crate) fn logical_block_size(&self) -> u32 {
        // SAFETY: `bdev()` is the live block device this dm_dev holds open.
        unsafe { raw::dmsm_bdev_logical_block_size(self.bdev()) }
    }
}

impl Drop for DmDev {
    fn drop(&mut self) {
        // SAFETY: by the type invariant, `dev` came from `dm_get_device` on
        // this `ti` and is put exactly once, here.
        unsafe { raw::dm_put_device(self.ti, self.dev) };
    }
}

/// The target instance being constructed.
///
/// # Invariants
///
/// `ti` is the `dm_target` dm passed to `ctr`, valid for `'a`.
pub(crate) struct Ctr<'a> {
    ti: *mut dm_target,
    _p: PhantomData<&'a mut dm_target>,
}

impl Ctr<'_> {
    /// Opens `path` (a path or `major:minor`) with the table's mode;
    /// `failed` is the `ti->error` if that fails.
    pub(crate) fn get_device(&self, path: &CStr, failed: &'static CStr) -> Result<DmDev, CtrError> {
        let mut dev: *mut dm_dev = core::ptr::null_mut();
        // SAFETY: `ti` is valid (type invariant) and so is its table; `path`
        // is NUL-terminated; `dev` is a valid out pointer.
        let r = unsafe {
            let mode = raw::dm_table_get_mode((*self.ti).table);
            raw::dm_get_device(self.ti, path.as_char_ptr(), mode, &mut dev)
        };
        match to_result(r) {
            // INVARIANT: `dev` came from a successful dm_get_device on `ti`.
            Ok(()) if !dev.is_null() => Ok(DmDev { ti: self.ti, dev }),
            _ => Err(CtrError::inval(failed)),
        }
    }

    /// Target length in sectors.
    pub(crate) fn len(&self) -> u64 {
        // SAFETY: `ti` is valid (type invariant).
        unsafe { (*self.ti).len }
    }

    /// Reserves `size` bytes of per-bio data (see [`Bio::per_bio`]).
    pub(crate) fn set_per_bio_data_size(&self, size: usize) {
        // SAFETY: `ti` is valid and owned by this ctr call (type invariant).
        unsafe { (*self.ti).per_io_data_size = size as c_uint };
    }

    /// Makes dm split bios so that none crosses a multiple of `sectors`
    /// (a power of two), discards and write-zeroes included.
    pub(crate) fn set_max_io_len(&self, sectors: u32) -> Result<(), CtrError> {
        // SAFETY: `ti` is valid and owned by this ctr call (type invariant).
        let r = unsafe {
            (*self.ti).set_max_discard_granularity(true);
            raw::dm_set_target_max_io_len(self.ti, sectors.into())
        };
        to_result(r).map_err(|_| CtrError::inval(c_str!("Invalid region size for this device")))
    }

    /// A handle to raise dm events for this target from any thread.
    pub(crate) fn events(&self) -> Events {
        // INVARIANT: the table of a target under construction lives at
        // least until the target's dtr.
        // SAFETY: `ti` is valid (type invariant).
        Events { table: unsafe { (*self.ti).table } }
    }

    /// A handle on this target for the role's threads (suspend mode).
    pub(crate) fn target(&self) -> TargetRef {
        // INVARIANT: the target lives until its dtr, and the role's
        // threads are stopped before dtr returns.
        TargetRef { ti: self.ti }
    }

    /// Asks dm to pass us flushes, discards and write-zeroes (one bio each).
    pub(crate) fn accept_flush_discard_zeroes(&self) {
        // SAFETY: `ti` is valid and owned by this ctr call (type invariant);
        // dm reads these fields only after ctr returns.
        unsafe {
            (*self.ti).num_flush_bios = 1;
            (*self.ti).num_discard_bios = 1;
            (*self.ti).num_write_zeroes_bios = 1;
        }
    }
}

/// The target itself, for questions its threads ask dm.
///
/// # Invariants
///
/// `ti` is a live target; the owner stops using it before its dtr
/// returns.
pub(crate) struct TargetRef {
    ti: *mut dm_target,
}

// SAFETY: `dm_noflush_suspending` may be called from any process context.
unsafe impl Send for TargetRef {}
// SAFETY: as above.
unsafe impl Sync for TargetRef {}

impl TargetRef {
    /// True during a `noflush` suspend: bios may be handed back to dm
    /// (requeued) instead of being completed.
    pub(crate) fn noflush_suspending(&self) -> bool {
        // SAFETY: `ti` is live (type invariant).
        unsafe { raw::dmsm_noflush_suspending(self.ti) }
    }
}

/// Raises dm events (`dmsetup wait`, `dmeventd`) for one target.
///
/// # Invariants
///
/// `table` is the table of the target this came from; the owner stops
/// using it before that target's dtr returns.
pub(crate) struct Events {
    table: *mut raw::dm_table,
}

// SAFETY: `dm_table_event` may be called from any process context.
unsafe impl Send for Events {}
// SAFETY: as above.
unsafe impl Sync for Events {}

impl Events {
    /// Signals a state change. Process context only (takes a mutex).
    pub(crate) fn raise(&self) {
        // SAFETY: the table is alive (type invariant).
        unsafe { raw::dm_table_event(self.table) };
    }
}

/// What `end_io` tells dm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EndIo {
    /// The bio is finished.
    Done,
    /// The target took the bio and ends it later.
    Incomplete,
}

/// Queue limits handed to `io_hints`.
pub(crate) struct Limits<'a> {
    l: &'a mut kernel::bindings::queue_limits,
}

impl Limits<'_> {
    /// Caps discard and write-zeroes bios at `sectors`.
    pub(crate) fn cap_abnormal_io(&mut self, sectors: u32) {
        // SAFETY: `l` is a valid, exclusively borrowed queue_limits.
        unsafe { raw::dmsm_limit_abnormal_io(self.l, sectors) };
    }
}

/// A status or message result buffer: `fmt::Write` that truncates like
/// DMEMIT and always leaves a NUL-terminated string.
pub(crate) struct StatusWriter<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> StatusWriter<'a> {
    /// # Safety
    ///
    /// `result` must be valid for writes of `maxlen` bytes for `'a`.
    unsafe fn from_raw(result: *mut c_char, maxlen: c_uint) -> Self {
        let buf = if result.is_null() || maxlen == 0 {
            &mut [][..]
        } else {
            // SAFETY: valid for `maxlen` bytes by the caller's guarantee.
            unsafe { core::slice::from_raw_parts_mut(result.cast::<u8>(), maxlen as usize) }
        };
        if let Some(b) = buf.first_mut() {
            *b = 0;
        }
        StatusWriter { buf, pos: 0 }
    }
}

impl fmt::Write for StatusWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Keep one byte for the NUL; silently truncate like scnprintf.
        let room = self.buf.len().saturating_sub(self.pos + 1);
        let n = s.len().min(room);
        if let (Some(dst), Some(src)) = (self.buf.get_mut(self.pos..self.pos + n), s.as_bytes().get(..n)) {
            dst.copy_from_slice(src);
            self.pos += n;
        }
        if let Some(b) = self.buf.get_mut(self.pos) {
            *b = 0;
        }
        Ok(())
    }
}

/// A device-mapper target type written in Rust.
pub(crate) trait TargetOps: Sized + Send + Sync {
    /// Name in table lines.
    const NAME: &'static CStr;
    /// Version shown by `dmsetup targets`.
    const VERSION: [u32; 3];

    /// Builds one instance from its table line.
    fn ctr(ctx: &Ctr<'_>, args: &Args<'_>) -> Result<KBox<Self>, CtrError>;
    /// Routes one bio; called concurrently on many CPUs, in atomic
    /// context at worst (never sleep).
    fn map(&self, bio: &mut Bio<'_>) -> MapResult;
    /// A bio `map` remapped has ended with `status` (any context, hard irq
    /// included). [`EndIo::Incomplete`] keeps the bio (see [`Bio::take`]).
    fn end_io(&self, _bio: &mut Bio<'_>, _status: u8) -> EndIo {
        EndIo::Done
    }
    /// Adjusts the queue limits dm computed from the data device.
    fn io_hints(&self, _limits: &mut Limits<'_>) {}
    /// Before the table goes live (create, resume): start threads and
    /// sockets. An error fails the resume.
    fn preresume(&self) -> Result {
        Ok(())
    }
    /// A suspend starts (in-flight bios still to end).
    fn presuspend(&self) {}
    /// The suspend was cancelled.
    fn presuspend_undo(&self) {}
    /// After a suspend completed (in-flight bios are done): stop them.
    fn postsuspend(&self) {}
    /// Writes one status line.
    fn status(&self, kind: StatusType, out: &mut StatusWriter<'_>);
    /// Handles `dmsetup message <dev> 0 <words...>`.
    fn message(&self, args: &Args<'_>, out: &mut StatusWriter<'_>) -> Result;
    /// The data device, for `iterate_devices` (limits, dependencies).
    fn data_dev(&self) -> &DmDev;
}

/// Returns the instance `ctr` stored in `ti->private`.
///
/// # Safety
///
/// `ti` must be a target of type `T` whose `ctr` succeeded and whose `dtr`
/// has not run.
unsafe fn instance<'a, T: TargetOps>(ti: *mut dm_target) -> &'a T {
    // SAFETY: `private` holds the `KBox<T>` ctr leaked, alive until dtr.
    unsafe { &*((*ti).private as *const T) }
}

/// dm's `ctr` for `T`: parses the line and stores the instance in `ti->private`.
///
/// # Safety
///
/// Called by dm only, with a valid `ti` under construction and `argc` valid
/// strings in `argv`.
unsafe extern "C" fn ctr_callback<T: TargetOps>(ti: *mut dm_target, argc: c_uint, argv: *mut *mut c_char) -> c_int {
    // SAFETY: dm passes `argc` valid strings that live through the call.
    let args = unsafe { Args::from_raw(argc, argv) };
    // INVARIANT: `ti` is the target dm is constructing, valid during ctr.
    let ctx = Ctr { ti, _p: PhantomData };
    match T::ctr(&ctx, &args) {
        Ok(t) => {
            // SAFETY: `ti` is valid; `private` is ours to set. Ownership of
            // the box moves to dm until dtr takes it back.
            unsafe { (*ti).private = KBox::into_raw(t).cast::<c_void>() };
            0
        }
        Err(e) => {
            // SAFETY: `ti` is valid; `error` takes a static string, which
            // `e.msg` is.
            unsafe { (*ti).error = e.msg.as_char_ptr().cast_mut() };
            e.err.to_errno()
        }
    }
}

/// dm's `dtr` for `T`: drops the instance.
///
/// # Safety
///
/// Called by dm only, once, after a successful `ctr` on `ti`.
unsafe extern "C" fn dtr_callback<T: TargetOps>(ti: *mut dm_target) {
    // SAFETY: dtr runs once, after a successful ctr stored a `KBox<T>` in
    // `private`, and no other callback runs concurrently or afterwards.
    drop(unsafe { KBox::from_raw((*ti).private.cast::<T>()) });
}

/// dm's `map` for `T`.
///
/// # Safety
///
/// Called by dm only, with a constructed `ti` and a bio it owns.
unsafe extern "C" fn map_callback<T: TargetOps>(ti: *mut dm_target, bio: *mut kernel::bindings::bio) -> c_int {
    // SAFETY: map runs between ctr and dtr.
    let t = unsafe { instance::<T>(ti) };
    // SAFETY: `bio` and `ti` are dm's, valid for this call; the bio is
    // ours until map returns.
    let mut b = unsafe { Bio::from_raw(bio, ti) };
    let r = t.map(&mut b);
    if b.was_taken() {
        return raw::DM_MAPIO_SUBMITTED as c_int;
    }
    r.to_c()
}

/// dm's `end_io` for `T`.
///
/// # Safety
///
/// Called by dm only, with a constructed `ti` and a bio `map` remapped.
unsafe extern "C" fn end_io_callback<T: TargetOps>(
    ti: *mut dm_target,
    bio: *mut kernel::bindings::bio,
    error: *mut kernel::bindings::blk_status_t,
) -> c_int {
    // SAFETY: end_io runs between ctr and dtr.
    let t = unsafe { instance::<T>(ti) };
    // SAFETY: dm passes a valid status pointer.
    let status = unsafe { *error };
    // SAFETY: `bio` and `ti` are dm's, valid for this call.
    let mut b = unsafe { Bio::from_raw(bio, ti) };
    let r = t.end_io(&mut b, status);
    if b.was_taken() || r == EndIo::Incomplete {
        return raw::DM_ENDIO_INCOMPLETE as c_int;
    }
    raw::DM_ENDIO_DONE as c_int
}

/// dm's `io_hints` for `T`.
///
/// # Safety
///
/// Called by dm only, with a constructed `ti` and valid limits.
unsafe extern "C" fn io_hints_callback<T: TargetOps>(ti: *mut dm_target, limits: *mut kernel::bindings::queue_limits) {
    // SAFETY: io_hints runs between ctr and dtr.
    let t = unsafe { instance::<T>(ti) };
    // SAFETY: dm passes limits it owns for the duration of the call.
    let Some(l) = (unsafe { limits.as_mut() }) else { return };
    t.io_hints(&mut Limits { l });
}

/// dm's `preresume` for `T`.
///
/// # Safety
///
/// Called by dm only, with a constructed `ti`, in process context.
unsafe extern "C" fn preresume_callback<T: TargetOps>(ti: *mut dm_target) -> c_int {
    // SAFETY: preresume runs between ctr and dtr.
    let t = unsafe { instance::<T>(ti) };
    match t.preresume() {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// dm's `presuspend` for `T`.
///
/// # Safety
///
/// Called by dm only, between `ctr` and `dtr`.
unsafe extern "C" fn presuspend_callback<T: TargetOps>(ti: *mut dm_target) {
    // SAFETY: presuspend runs between ctr and dtr.
    let t = unsafe { instance::<T>(ti) };
    t.presuspend();
}

/// dm's `presuspend_undo` for `T`.
///
/// # Safety
///
/// Called by dm only, between `ctr` and `dtr`.
unsafe extern "C" fn presuspend_undo_callback<T: TargetOps>(ti: *mut dm_target) {
    // SAFETY: presuspend_undo runs between ctr and dtr.
    let t = unsafe { instance::<T>(ti) };
    t.presuspend_undo();
}

/// dm's `postsuspend` for `T`.
///
/// # Safety
///
/// Called by dm only, with a constructed `ti`, in process context.
unsafe extern "C" fn postsuspend_callback<T: TargetOps>(ti: *mut dm_target) {
    // SAFETY: postsuspend runs between ctr and dtr.
    let t = unsafe { instance::<T>(ti) };
    t.postsuspend();
}

/// dm's `status` for `T`.
///
/// # Safety
///
/// Called by dm only, with a constructed `ti` and a `maxlen`-byte buffer.
unsafe extern "C" fn status_callback<T: TargetOps>(
    ti: *mut dm_target,
    kind: raw::status_type_t,
    _flags: c_uint,
    result: *mut c_char,
    maxlen: c_uint,
) {
    let kind = match kind {
        raw::status_type_t_STATUSTYPE_INFO => StatusType::Info,
        raw::status_type_t_STATUSTYPE_TABLE => StatusType::Table,
        raw::status_type_t_STATUSTYPE_IMA => StatusType::Ima,
        _ => return,
    };
    // SAFETY: status runs between ctr and dtr.
    let t = unsafe { instance::<T>(ti) };
    // SAFETY: dm passes a buffer of `maxlen` bytes.
    let mut w = unsafe { StatusWriter::from_raw(result, maxlen) };
    t.status(kind, &mut w);
}

/// dm's `message` for `T`.
///
/// # Safety
///
/// Called by dm only, with a constructed `ti`, `argc` valid strings in
/// `argv` and a `maxlen`-byte buffer.
unsafe extern "C" fn message_callback<T: TargetOps>(
    ti: *mut dm_target,
    argc: c_uint,
    argv: *mut *mut c_char,
    result: *mut c_char,
    maxlen: c_uint,
) -> c_int {
    // SAFETY: message runs between ctr and dtr.
    let t = unsafe { instance::<T>(ti) };
    // SAFETY: dm passes `argc` valid strings that live through the call.
    let args = unsafe { Args::from_raw(argc, argv) };
    // SAFETY: dm passes a buffer of `maxlen` bytes.
    let mut w = unsafe { StatusWriter::from_raw(result, maxlen) };
    match t.message(&args, &mut w) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// dm's `iterate_devices` for `T`.
///
/// # Safety
///
/// Called by dm only, with a constructed `ti`.
unsafe extern "C" fn iterate_devices_callback<T: TargetOps>(
    ti: *mut dm_target,
    f: raw::iterate_devices_callout_fn,
    data: *mut c_void,
) -> c_int {
    let Some(f) = f else { return 0 };
    // SAFETY: iterate_devices runs between ctr and dtr.
    let t = unsafe { instance::<T>(ti) };
    let dev = t.data_dev();
    // SAFETY: `f` and `data` come from dm; `dev.dev` is a live dm_dev of
    // this target; the whole target range maps onto it from sector 0.
    unsafe { f(ti, dev.dev, 0, (*ti).len, data) }
}

/// A registered target type; unregistered on drop (module unload).
///
/// # Invariants
///
/// `tt` was passed to a successful `dm_register_target` and stays at the
/// same address, untouched by Rust, until `Drop` unregisters it.
pub(crate) struct Registration<T: TargetOps> {
    tt: KBox<Opaque<target_type>>,
    _p: PhantomData<T>,
}

// SAFETY: after registration Rust never touches the target_type again
// except to unregister it; dm core serialises its own use with its locks.
unsafe impl<T: TargetOps> Send for Registration<T> {}
// SAFETY: as above: no shared access from Rust.
unsafe impl<T: TargetOps> Sync for Registration<T> {}

impl<T: TargetOps> Registration<T> {
    /// Registers `T` as a dm target type owned by `module`.
    pub(crate) fn new(module: &'static ThisModule) -> Result<Self> {
        let tt = target_type {
            name: T::NAME.as_char_ptr(),
            module: module.as_ptr(),
            version: T::VERSION,
            ctr: Some(ctr_callback::<T>),
            dtr: Some(dtr_callback::<T>),
            map: Some(map_callback::<T>),
            end_io: Some(end_io_callback::<T>),
            io_hints: Some(io_hints_callback::<T>),
            preresume: Some(preresume_callback::<T>),
            presuspend: Some(presuspend_callback::<T>),
            presuspend_undo: Some(presuspend_undo_callback::<T>),
            postsuspend: Some(postsuspend_callback::<T>),
            status: Some(status_callback::<T>),
            message: Some(message_callback::<T>),
            iterate_devices: Some(iterate_devices_callback::<T>),
            ..Default::default()
        };
        let tt = KBox::new(Opaque::new(tt), GFP_KERNEL)?;
        // SAFETY: `tt` is a fully initialised target_type at a stable heap
        // address that lives until `Drop` unregisters it.
        to_result(unsafe { raw::dm_register_target(tt.get()) })?;
        // INVARIANT: registered above; the box is never moved out of.
        Ok(Registration { tt, _p: PhantomData })
    }
}

impl<T: TargetOps> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: registered in `new` (type invariant). dm holds a module
        // reference per live table, so no instance exists at unload.
        unsafe { raw::dm_unregister_target(self.tt.get()) };
    }
}
