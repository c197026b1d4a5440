//! Threads of their own, at a lower CPU priority, for work that must not take the CPU from
//! ingest and the device sessions: password hashing (nice 19), and the periodic fleet-wide
//! passes — rule evaluation, derived series, store housekeeping (nice 10). When the machine is
//! busy the kernel gives these what the ingest path leaves; when it is idle they run at full
//! speed. At 100,000 devices on two cores the passes otherwise took as much CPU as ingest and
//! the sessions together, and batches waited (BENCHMARKS.md, "100,000 devices").
//!
//! Jobs queue for [`Workers::run`]. A job that panics loses only its answer, never the thread.
//! Dropping the workers waits for the job in hand (so a stopped server's store is closed
//! when the server is), then the threads end.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send>;

/// The niceness of the periodic passes' threads.
pub const PASSES_NICE: i32 = 10;

/// A few threads running queued jobs at a given niceness.
#[derive(Debug)]
pub struct Workers {
    jobs: Option<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `threads` threads (at least one) named `name-N` at niceness `nice`.
    pub fn start(name: &str, threads: usize, nice: i32) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    lower_priority(nice);
                    loop {
                        let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => tracing::error!(error = %e, name, "no worker thread"),
            }
        }
        Self {
            jobs: Some(jobs),
            threads: handles,
        }
    }

    /// Runs `f` on a worker thread; None when it panicked (or no thread runs).
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
        self.jobs.as_ref()?.send(job).ok()?;
        rx.await.ok()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.jobs = None;
        let me = std::thread::current().id();
        for handle in self.threads.drain(..) {
            if handle.thread().id() != me {
                let _ = handle.join();
            }
        }
    }
}

/// Best effort: the calling thread at niceness `nice` (Linux sets niceness per thread).
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice) {
        tracing::warn!(error = %e, nice, "a worker thread keeps normal CPU priority");
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
        let workers = Workers::start("test", 1, 19);
        assert_eq!(workers.run(|| 6 * 7).await, Some(42));
        #[cfg(target_os = "linux")]
        assert_eq!(workers.run(own_nice).await, Some(19));
        let panicked: Option<()> = workers.run(|| panic!("a bad job")).await;
        assert_eq!(panicked, None);
        assert_eq!(workers.run(|| "still here").await, Some("still here"));
        assert_ne!(own_nice(), 19, "the caller's thread is untouched");
    }

    #[tokio::test]
    async fn dropping_waits_for_the_job_in_hand() {
        let workers = Workers::start("test", 1, PASSES_NICE);
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&done);
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let running = workers.run(move || {
            let _ = started_tx.send(());
            std::thread::sleep(std::time::Duration::from_millis(200));
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        // Start the job, then give up waiting for it and drop the workers.
        tokio::select! {
            _ = running => unreachable!("the job sleeps"),
            _ = started_rx => {}
        }
        drop(workers);
        assert!(done.load(std::sync::atomic::Ordering::SeqCst));
    }
}
