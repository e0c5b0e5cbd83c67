//! The inflate guard refuses bombs with bounded memory: it streams compressed
//! data through a small buffer instead of inflating it, and counts runs
//! instead of expanding them. Measured with a counting allocator; this file is
//! its own test binary with one test, so nothing else allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

mod bombs;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        // SAFETY: same layout, passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: allocated above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// What the guard may hold at once while checking a bomb (its input excluded).
const GUARD_MEMORY: usize = 1 << 20;

#[test]
fn bombs_are_refused_within_a_megabyte() {
    let bombs: Vec<_> = bombs::deflate_bombs()
        .into_iter()
        .chain(bombs::run_bombs())
        .collect();
    for (name, bomb) in &bombs {
        let base = CURRENT.load(Ordering::SeqCst);
        PEAK.store(base, Ordering::SeqCst);
        let result = cue_core::guard::check_chunks(bomb);
        let used = PEAK.load(Ordering::SeqCst) - base;
        assert!(result.is_err(), "{name} passed");
        assert!(used < GUARD_MEMORY, "{name}: the guard held {used} bytes");
        println!("{name}: refused holding at most {used} bytes");
    }
}
