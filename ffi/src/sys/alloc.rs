//! A global allocator that counts allocations per thread, so tests can prove
//! that a code path allocates nothing:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: faultbridge_ffi::sys::alloc::CountingAlloc = faultbridge_ffi::sys::alloc::CountingAlloc;
//! let before = faultbridge_ffi::sys::alloc::thread_allocations();
//! hot_path();
//! assert_eq!(faultbridge_ffi::sys::alloc::thread_allocations(), before);
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// Delegates to [`System`] and counts `alloc`/`realloc` calls of the calling thread.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAlloc;

fn count() {
    // `try_with`: the thread-local may already be gone while a thread exits.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

/// Allocations (`alloc`, `alloc_zeroed`, `realloc`) made so far by this thread
/// when [`CountingAlloc`] is the global allocator.
pub fn thread_allocations() -> u64 {
    ALLOCATIONS.try_with(|c| c.get()).unwrap_or(0)
}

// SAFETY: every method forwards its arguments unchanged to `System`, which
// upholds the `GlobalAlloc` contract; counting touches only a const-initialised
// thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller guarantees `layout` has a non-zero size, as `System.alloc` requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as for `alloc`: the caller guarantees a non-zero size.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller guarantees `ptr` came from this allocator (so from
        // `System`) with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller guarantees `ptr`/`layout` came from this allocator
        // (so from `System`) and that `new_size` is non-zero and fits `isize`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
