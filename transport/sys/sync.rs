// SPDX-License-Identifier: GPL-2.0

//! An irq-safe spinlock for [`kernel::sync::lock::Lock`].
//!
//! 6.12's `SpinLock` uses plain `spin_lock`, which deadlocks if a bio's
//! `end_io` (hard or soft irq) takes the lock on a CPU where process
//! context already holds it. [`IrqSpinBackend`] takes the lock with
//! `spin_lock_irqsave` and keeps the saved flags in the guard, so one lock
//! can be shared between the map path, worker threads and completions.
//! It works with [`kernel::sync::CondVar`]: a wait restores the flags,
//! sleeps, and retakes the lock with a fresh save.
//!
//! ```ignore
//! let l = KBox::pin_init(new_irq_spinlock!(0u64, "ring"), GFP_KERNEL)?;
//! *l.lock() += 1;
//! ```

use kernel::{ffi::c_ulong, sync::lock::Backend};

use super::raw;

/// A [`kernel::sync::lock::Lock`] over a `spinlock_t` taken with irqs disabled.
pub(crate) type IrqSpinLock<T> = kernel::sync::lock::Lock<T, IrqSpinBackend>;

/// A [`kernel::sync::lock::Guard`] of an [`IrqSpinLock`].
pub(crate) type IrqSpinGuard<'a, T> = kernel::sync::lock::Guard<'a, T, IrqSpinBackend>;

/// Lock backend: `spin_lock_irqsave` / `spin_unlock_irqrestore`.
pub(crate) struct IrqSpinBackend;

// SAFETY: `spinlock_t` gives mutual exclusion between `lock` and `unlock`.
// `relock` keeps the default, which calls `lock` (the same method) and
// stores the fresh irq flags in the guard state.
unsafe impl Backend for IrqSpinBackend {
    type State = kernel::bindings::spinlock_t;
    /// The irq flags `spin_lock_irqsave` saved, restored on unlock.
    type GuardState = c_ulong;

    unsafe fn init(ptr: *mut Self::State, name: *const kernel::ffi::c_char, key: *mut kernel::bindings::lock_class_key) {
        // SAFETY: the caller guarantees `ptr` is valid for writes and that
        // `name` and `key` stay valid for reads indefinitely.
        unsafe { kernel::bindings::__spin_lock_init(ptr, name, key) }
    }

    unsafe fn lock(ptr: *mut Self::State) -> Self::GuardState {
        // SAFETY: the caller guarantees `ptr` is valid and was initialised
        // by `init`.
        unsafe { raw::dmsm_spin_lock_irqsave(ptr) }
    }

    unsafe fn unlock(ptr: *mut Self::State, guard_state: &Self::GuardState) {
        // SAFETY: the caller owns the lock, taken by `lock`, which returned
        // `guard_state` on this CPU (the guard is not `Send`).
        unsafe { raw::dmsm_spin_unlock_irqrestore(ptr, *guard_state) }
    }
}

/// Creates an [`IrqSpinLock`] initialiser with a new lockdep class, named
/// after the optional string literal (else after the source location).
#[macro_export]
macro_rules! new_irq_spinlock {
    ($inner:expr $(, $name:literal)? $(,)?) => {
        $crate::transport::sys::sync::IrqSpinLock::new(
            $inner,
            ::kernel::optional_name!($($name)?),
            ::kernel::static_lock_class!(),
        )
    };
}
pub(crate) use new_irq_spinlock;
