// SPDX-License-Identifier: GPL-2.0

//! Kernel threads running a Rust closure (6.12's `kernel` crate has none).
//!
//! [`Thread::spawn`] starts a named kthread running a closure; dropping the
//! returned [`Thread`] (or calling [`Thread::stop`]) asks it to stop and
//! waits until it has returned. The closure polls [`should_stop`] and must
//! not block forever: whoever stops it first unblocks what it waits on
//! (shuts its socket down, notifies its condition variable).

use core::ptr::NonNull;
use kernel::{
    alloc::{flags::GFP_KERNEL, KBox},
    bindings, c_str,
    error::from_err_ptr,
    ffi::{c_int, c_void},
    prelude::*,
    str::CStr,
};

use super::raw;

/// What the thread function receives: the closure, until it takes it.
///
/// # Invariants
///
/// Only the thread touches `f` between thread creation and the return of
/// `kthread_stop`; the owner only afterwards.
struct Start<F> {
    f: Option<F>,
}

/// A running (or finished) kernel thread; stopped and joined on drop.
///
/// # Invariants
///
/// `task` is a kthread created by `kthread_create_on_node` with
/// `trampoline::<F>` and `start`, on which we hold a reference
/// (`get_task_struct`) that `kthread_stop_put` drops exactly once. `start`
/// came from `KBox::<Start<F>>::into_raw` and is freed by `free_start::<F>`
/// in `Drop` only after that call returned, so the thread can use it until
/// it exits.
pub(crate) struct Thread {
    task: NonNull<bindings::task_struct>,
    start: NonNull<c_void>,
    free_start: unsafe fn(*mut c_void),
}

// SAFETY: the owner only calls `kthread_stop_put` on the task, which any
// thread may do; `start` is only touched after the thread is gone.
unsafe impl Send for Thread {}
// SAFETY: no method reaches the task or `start` through `&Thread`.
unsafe impl Sync for Thread {}

/// The kthread's entry point: runs the closure once.
///
/// # Safety
///
/// `data` is the `Start<F>` of a [`Thread`], which outlives this call.
unsafe extern "C" fn trampoline<F: FnOnce() + Send + 'static>(data: *mut c_void) -> c_int {
    // SAFETY: `data` points to a live `Start<F>` that nothing else touches
    // until `kthread_stop` returns, after this function returned (type
    // invariant of `Start` and `Thread`).
    let start = unsafe { &mut *data.cast::<Start<F>>() };
    if let Some(f) = start.f.take() {
        f();
    }
    0
}

/// Frees a `Start<F>` (and a closure the thread never ran).
///
/// # Safety
///
/// `data` came from `KBox::<Start<F>>::into_raw` and no thread uses it.
unsafe fn free_start<F>(data: *mut c_void) {
    // SAFETY: guaranteed by the caller.
    drop(unsafe { KBox::from_raw(data.cast::<Start<F>>()) });
}

impl Thread {
    /// Starts a kthread called `name` (at most 15 bytes are shown) that
    /// runs `f`. Process context only (allocates and may sleep).
    pub(crate) fn spawn<F: FnOnce() + Send + 'static>(name: &CStr, f: F) -> Result<Thread> {
        let start = KBox::new(Start { f: Some(f) }, GFP_KERNEL)?;
        let data = KBox::into_raw(start);
        // `into_raw` never returns null.
        let start = NonNull::new(data.cast::<c_void>()).ok_or(ENOMEM)?;
        // SAFETY: `trampoline` matches the thread function type; `data`
        // stays valid until `kthread_stop_put` (it is owned by the `Thread`
        // built below, or freed here on failure, when no thread exists);
        // the format is "%s" with one NUL-terminated string argument.
        let task = unsafe {
            bindings::kthread_create_on_node(
                Some(trampoline::<F>),
                data.cast::<c_void>(),
                bindings::NUMA_NO_NODE,
                c_str!("%s").as_char_ptr(),
                name.as_char_ptr(),
            )
        };
        let task = match from_err_ptr(task).and_then(|t| NonNull::new(t).ok_or(ENOMEM)) {
            Ok(t) => t,
            Err(e) => {
                // SAFETY: `data` came from `KBox::into_raw` above and no
                // thread was created that could use it.
                drop(unsafe { KBox::from_raw(data) });
                return Err(e);
            }
        };
        // SAFETY: `task` is a live task just created; take a reference so
        // that stopping it stays safe after its function returned.
        unsafe { bindings::get_task_struct(task.as_ptr()) };
        // SAFETY: `task` is a new kthread, sleeping until this wake-up.
        unsafe { bindings::wake_up_process(task.as_ptr()) };
        // INVARIANT: created with `trampoline::<F>` and `start`, a
        // `Start<F>` that `free_start::<F>` frees; referenced above.
        Ok(Thread { task, start, free_start: free_start::<F> })
    }

    /// Asks the thread to stop and waits until its function returned.
    pub(crate) fn stop(self) {
        drop(self);
    }
}

impl Drop for Thread {
    fn drop(&mut self) {
        // SAFETY: we hold a reference on the kthread (type invariant), which
        // this drops; `kthread_stop_put` wakes it, waits for its function to
        // return (or for it to exit without running it) and puts the task.
        unsafe { bindings::kthread_stop_put(self.task.as_ptr()) };
        // SAFETY: `start` came from `KBox::into_raw`, `free_start` matches
        // its type, and the thread that used it is gone (type invariant). A
        // closure the thread never ran is dropped with it, here.
        unsafe { (self.free_start)(self.start.as_ptr()) };
    }
}

/// True once the owner of the current kthread asked it to stop; always
/// false outside a kthread.
pub(crate) fn should_stop() -> bool {
    // SAFETY: no preconditions; the shim checks that `current` is a kthread.
    unsafe { raw::dmsm_kthread_should_stop() }
}
