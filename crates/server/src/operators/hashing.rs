//! Password hashing on threads of its own at the lowest CPU priority (nice 19). An Argon2 hash
//! takes tens of milliseconds of CPU; on a small server, a burst of logins — an attack's first
//! attempts, before throttling answers the rest without hashing — would otherwise take whole
//! scheduler slices from the threads serving everyone else. At nice 19 the kernel gives the
//! hashing what the other threads leave, so other operators' requests keep their latency.
//!
//! Jobs queue for [`Hashing::run`]; callers bound how many wait (the login semaphore). A job
//! that panics loses only its answer, never the thread.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads.
#[derive(Debug)]
pub struct Hashing {
    jobs: mpsc::Sender<Job>,
}

/// The niceness hashing threads ask for.
pub const NICE: i32 = 19;

impl Hashing {
    /// Starts `threads` hashing threads (at least one).
    pub fn start(threads: usize) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("fleetmon-hash-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "no password hashing thread");
            }
        }
        Self { jobs }
    }

    /// Runs `f` on a hashing thread; None when it panicked (or no thread runs).
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if let Ok(value) = catch_unwind(AssertUnwindSafe(f)) {
                let _ = tx.send(value);
            }
        });
        self.jobs.send(job).ok()?;
        rx.await.ok()
    }
}

/// Best effort: the calling thread at [`NICE`] (Linux sets niceness per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICE) {
        tracing::warn!(error = %e, "password hashing keeps normal CPU priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Field 19 of `/proc/thread-self/stat`: the thread's niceness.
    fn own_nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after_name = stat.rsplit(')').next().unwrap();
        after_name
            .split_whitespace()
            .nth(16)
            .unwrap()
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn jobs_run_at_low_priority_and_a_panic_loses_only_its_answer() {
        let hashing = Hashing::start(1);
        assert_eq!(hashing.run(|| 6 * 7).await, Some(42));
        #[cfg(target_os = "linux")]
        assert_eq!(hashing.run(own_nice).await, Some(NICE));
        let panicked: Option<()> = hashing.run(|| panic!("a bad hash")).await;
        assert_eq!(panicked, None);
        assert_eq!(hashing.run(|| "still here").await, Some("still here"));
        assert_ne!(own_nice(), NICE, "the caller's thread is untouched");
    }
}
