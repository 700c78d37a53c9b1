//! Freeing large values when the CPU has nothing else to do ([`later`]).
//!
//! A control state replaced by a tick's re-placements leaves thousands of copied nodes of the
//! session map that only it held; freeing them takes milliseconds, and on a busy node those
//! milliseconds were taken from the writes the next state waits on (the applier's map writes,
//! the raft peers' messages). One thread per process frees them instead, under `SCHED_IDLE`:
//! it runs only on a CPU no other thread of the host wants, and is preempted at once when one
//! does. Its backlog is bounded ([`BACKLOG`]): a value handed over while the thread is that far
//! behind (a host busy for that long) is freed on the spot, so memory never waits on idle
//! time without limit.

use std::sync::{
    mpsc::{sync_channel, SyncSender, TrySendError},
    Mutex, OnceLock,
};

use tracing::debug;

/// Values waiting to be freed at most; one more is freed by the caller.
pub const BACKLOG: usize = 8;

/// Something to free, whatever its type.
type Garbage = Box<dyn Send>;

/// Frees `value` on the reclaiming thread when a CPU is idle, or at once when that thread is
/// [`BACKLOG`] values behind or could not be started.
pub fn later<T: Send + 'static>(value: T) {
    let Some(queue) = queue() else {
        return drop(value);
    };
    let queue = queue.lock().unwrap_or_else(|e| e.into_inner());
    match queue.try_send(Box::new(value)) {
        Ok(()) => {}
        // Dropped here, on the caller, after the lock: the caller pays as it did before.
        Err(TrySendError::Full(value) | TrySendError::Disconnected(value)) => {
            drop(queue);
            drop(value);
        }
    }
}

/// The reclaiming thread's queue, started at the first call; `None` if the thread could not
/// be spawned.
fn queue() -> Option<&'static Mutex<SyncSender<Garbage>>> {
    static QUEUE: OnceLock<Option<Mutex<SyncSender<Garbage>>>> = OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (tx, rx) = sync_channel::<Garbage>(BACKLOG);
            let spawned = std::thread::Builder::new()
                .name("shardline-reclaim".into())
                .spawn(move || {
                    idle_priority();
                    // Each value is dropped as it is received.
                    for garbage in rx {
                        drop(garbage);
                    }
                });
            match spawned {
                Ok(_) => Some(Mutex::new(tx)),
                Err(e) => {
                    debug!("no reclaiming thread ({e}): values are freed where they are dropped");
                    None
                }
            }
        })
        .as_ref()
}

/// Puts the calling thread under `SCHED_IDLE` (no privilege needed); on failure it keeps its
/// normal priority, which only makes its frees compete as they did before.
fn idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid `sched_param` for the call's duration; pid 0 is this thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        debug!(
            "the reclaiming thread keeps its priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };
    use std::time::{Duration, Instant};

    use super::*;

    /// Counts its drops.
    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn every_value_handed_over_is_freed_even_past_the_backlog() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let n = 10 * BACKLOG;
        for _ in 0..n {
            later(Counted(dropped.clone()));
        }
        let t = Instant::now();
        while dropped.load(Ordering::SeqCst) < n {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "only {} of {n} freed after 30 s",
                dropped.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(dropped.load(Ordering::SeqCst), n, "each freed exactly once");
    }

    #[test]
    fn the_reclaiming_thread_runs_under_sched_idle() {
        let (tx, rx) = std::sync::mpsc::channel();
        /// Reports the policy of the thread that drops it.
        struct Policy(std::sync::mpsc::Sender<i32>);
        impl Drop for Policy {
            fn drop(&mut self) {
                // SAFETY: pid 0 is the calling thread.
                let _ = self.0.send(unsafe { libc::sched_getscheduler(0) });
            }
        }
        // Until one lands on the thread (a full backlog frees on the caller): the thread
        // drops every value it takes, so one of these does unless every one found it behind.
        for _ in 0..1_000 {
            later(Policy(tx.clone()));
            let policy = rx.recv_timeout(Duration::from_secs(30)).expect("dropped");
            if policy == libc::SCHED_IDLE {
                return;
            }
            assert_eq!(policy, libc::SCHED_OTHER, "a caller's own policy");
        }
        panic!("no value of 1,000 was dropped under SCHED_IDLE");
    }
}
