//! The control-loop tick allocates nothing: a counting allocator watches this thread while
//! 10,000 sessions (seasonal, horizon 12) tick 500 times.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    time::{Duration, Instant},
};

use shardline::{
    control::forecast::SelectorConfig,
    control::sizing::SizingConfig,
    control::tick::{tick, SessionState},
};

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: every call is forwarded to the system allocator unchanged; the counters are
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn tick_allocates_nothing() {
    let t0 = Instant::now();
    let selector = SelectorConfig {
        horizon: 12,
        period: 48,
        ..SelectorConfig::default()
    };
    let decide = SizingConfig {
        per_shard_capacity: 100.0,
        ..SizingConfig::default()
    };
    let sessions = 10_000;
    let mut states = vec![SessionState::new(selector, 1, t0); sessions];
    let mut samples = vec![0.0; sessions];
    let mut changes = 0u64;
    COUNTING.with(|c| c.set(true));
    for step in 0..500u64 {
        for (i, s) in samples.iter_mut().enumerate() {
            let phase = (step as f64 + i as f64) / 48.0 * std::f64::consts::TAU;
            *s = 200.0 + 150.0 * phase.sin() * (i % 7) as f64;
        }
        let now = t0 + Duration::from_secs(60 * step);
        changes += tick(&mut states, &samples, &decide, now).count() as u64;
    }
    COUNTING.with(|c| c.set(false));
    let allocations = ALLOCATIONS.with(Cell::get);
    assert_eq!(allocations, 0, "tick allocated {allocations} times");
    assert!(
        changes > 0,
        "the load swings: some shard counts must change"
    );
    // The counter works: one box while counting is one allocation.
    COUNTING.with(|c| c.set(true));
    drop(std::hint::black_box(Box::new(1u64)));
    COUNTING.with(|c| c.set(false));
    assert_eq!(ALLOCATIONS.with(Cell::get), 1);
}
