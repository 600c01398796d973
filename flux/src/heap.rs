//! A module's own heap, counted, and its broker's heap, trimmed.
//!
//! A module shares its broker's process and allocator, so the broker's
//! resident size cannot say what the module holds. A module library that
//! declares [`Counting`] its `#[global_allocator]` has every Rust
//! allocation it makes (on any of its threads) counted; [`live`] is the
//! total it holds now. Memory libflux allocates (messages, futures) is not
//! in it. Each library linking this crate has its own counter.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting live bytes.
#[derive(Debug)]
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`, which upholds the
// GlobalAlloc contract; the counter is only arithmetic on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout contract is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in alloc.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr was allocated by this allocator with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: ptr and layout come from this allocator; new_size is the
        // caller's, under realloc's contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

/// Bytes the module's Rust code holds on the heap now.
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Give the heap a burst of work left free back to the kernel.
///
/// A module shares its broker's allocator. Freed memory stays in glibc's
/// arenas, so a one-off burst (a journal backlog of thousands of jobs, each
/// message held until it is read) would otherwise weigh on the broker's
/// resident size for as long as it runs. Call it after such a burst, not
/// per message: it walks every arena. A no-op where the C library has no
/// `malloc_trim`.
pub fn release_free_heap() {
    // SAFETY: malloc_trim only returns free pages of the allocator's own
    // arenas to the kernel; it touches no live allocation and is thread-safe.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test binary's own allocator is the default one: only these
    // direct calls move the counter.
    #[test]
    fn counts_what_is_live() {
        let before = live();
        let l = Layout::from_size_align(100, 8).unwrap();
        // SAFETY: a non-zero layout; the block is freed below with the
        // layout realloc gave it.
        unsafe {
            let p = Counting.alloc(l);
            assert!(!p.is_null());
            assert_eq!(live() - before, 100);
            let p = Counting.realloc(p, l, 300);
            assert!(!p.is_null());
            assert_eq!(live() - before, 300);
            Counting.dealloc(p, Layout::from_size_align(300, 8).unwrap());
            let z = Counting.alloc_zeroed(l);
            assert_eq!(*z, 0);
            assert_eq!(live() - before, 100);
            Counting.dealloc(z, l);
        }
        assert_eq!(live(), before);
    }
}
