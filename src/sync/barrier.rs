//! Asymmetric memory barriers.
//!
//! Several protocols in the crate are Dekker-style: one side stores a flag and
//! then loads the other side's flag, and both sides must not miss each other
//! (a producer publishing a message vs. a consumer going to sleep; a producer
//! entering a push vs. a consumer closing its ring). That needs a StoreLoad
//! barrier on *both* sides, which on x86 is an `mfence` or a locked
//! instruction: tens of cycles on every push.
//!
//! The two sides are not equally hot. The producer's side runs on every
//! message; the consumer's side runs only when it is about to sleep or close.
//! So the hot side issues [`light`] (a compiler fence only) and the cold side
//! issues [`heavy`], which uses Linux's `membarrier(PRIVATE_EXPEDITED)` to
//! force a full barrier on every running thread of the process. This is the
//! technique of folly's `asymmetricHeavyBarrier` and of userspace RCU.
//!
//! Where `membarrier` is unavailable (old kernels, seccomp, non-Linux) both
//! functions fall back to `fence(SeqCst)`, which is always correct. Under loom
//! both are `fence(SeqCst)`: loom cannot model `membarrier`, and the symmetric
//! protocol is what the asymmetric one emulates.
//!
//! Setting `SHARED_NOTHING_NO_MEMBARRIER=1` before the first channel or worker
//! is created forces the symmetric fallback (used by the benches to measure
//! what the asymmetric barrier saves).

#[cfg(not(loom))]
use std::sync::atomic::{AtomicBool, Ordering, compiler_fence, fence};

#[cfg(not(loom))]
static ASYMMETRIC: AtomicBool = AtomicBool::new(false);

/// Decides once whether the asymmetric barrier is usable.
///
/// Must be called before any handle that uses [`light`] or [`heavy`] exists:
/// constructors of rings and workers call it, and the handles they return are
/// published to other threads only afterwards, so every later `light`/`heavy`
/// call happens-after this decision and both sides agree on the mode.
pub(crate) fn init() {
    #[cfg(not(loom))]
    {
        static INIT: std::sync::Once = std::sync::Once::new();
        INIT.call_once(|| {
            let disabled = std::env::var_os("SHARED_NOTHING_NO_MEMBARRIER")
                .is_some_and(|v| !v.is_empty() && v != "0");
            if !disabled && membarrier::register() {
                ASYMMETRIC.store(true, Ordering::Relaxed);
            }
        });
    }
}

/// Whether the asymmetric (membarrier) mode is in use.
#[cfg(test)]
pub(crate) fn is_asymmetric() -> bool {
    #[cfg(not(loom))]
    {
        ASYMMETRIC.load(Ordering::Relaxed)
    }
    #[cfg(loom)]
    {
        false
    }
}

/// The hot side's barrier: orders a preceding store before a following load
/// when paired with [`heavy`] on the other side.
#[inline]
pub(crate) fn light() {
    #[cfg(not(loom))]
    {
        if ASYMMETRIC.load(Ordering::Relaxed) {
            compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }
    #[cfg(loom)]
    loom::sync::atomic::fence(loom::sync::atomic::Ordering::SeqCst);
}

/// The cold side's barrier: after it returns, every thread that ran
/// [`light`] has either made its earlier stores visible to us or will see our
/// earlier stores in its later loads.
pub(crate) fn heavy() {
    #[cfg(not(loom))]
    {
        if !(ASYMMETRIC.load(Ordering::Relaxed) && membarrier::barrier()) {
            fence(Ordering::SeqCst);
        }
    }
    #[cfg(loom)]
    loom::sync::atomic::fence(loom::sync::atomic::Ordering::SeqCst);
}

/// A full two-sided fence, for cold paths.
pub(crate) fn full() {
    #[cfg(not(loom))]
    fence(Ordering::SeqCst);
    #[cfg(loom)]
    loom::sync::atomic::fence(loom::sync::atomic::Ordering::SeqCst);
}

#[cfg(all(not(loom), target_os = "linux"))]
mod membarrier {
    const CMD_QUERY: libc::c_long = 0;
    const CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

    fn call(cmd: libc::c_long) -> libc::c_long {
        // SAFETY: membarrier takes two integer arguments and touches no
        // user memory; an unsupported command returns -1 with errno set.
        unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                cmd,
                0 as libc::c_long,
                0 as libc::c_long,
            )
        }
    }

    /// Registers the process for private expedited barriers.
    pub(super) fn register() -> bool {
        let supported = call(CMD_QUERY);
        if supported < 0 || supported & CMD_PRIVATE_EXPEDITED == 0 {
            return false;
        }
        call(CMD_REGISTER_PRIVATE_EXPEDITED) == 0
    }

    /// Issues the barrier; `false` if the kernel refused it.
    pub(super) fn barrier() -> bool {
        call(CMD_PRIVATE_EXPEDITED) == 0
    }
}

#[cfg(all(not(loom), not(target_os = "linux")))]
mod membarrier {
    pub(super) fn register() -> bool {
        false
    }
    pub(super) fn barrier() -> bool {
        false
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn init_is_idempotent_and_barriers_run() {
        init();
        let mode = is_asymmetric();
        init();
        assert_eq!(mode, is_asymmetric());
        light();
        heavy();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn membarrier_is_available_on_this_kernel() {
        // Linux >= 4.14 has PRIVATE_EXPEDITED; if this machine refuses it the
        // crate still works (symmetric fences), but the benches would measure
        // the slower mode, so say so loudly.
        init();
        if std::env::var_os("SHARED_NOTHING_NO_MEMBARRIER").is_none() {
            assert!(is_asymmetric(), "membarrier(PRIVATE_EXPEDITED) unavailable");
        }
    }
}
