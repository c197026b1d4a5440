//! Group commit: many appenders, one fsync. Each appender queues its framed records and waits;
//! the first one to find no leader becomes the leader, optionally waits `flush_interval` for
//! company, takes everything queued, hands it to the sink (WAL write + fsync + apply to memory,
//! in queue order) and wakes everyone with the result. Then leadership passes to whoever is
//! still waiting. An appender returns only after the group holding its records was synced, or
//! with the error that group met.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Writes, syncs and applies one group: the concatenated framed records and the items in
/// queue order; an error fails every member.
pub type Sink<'a, T> = dyn Fn(&[u8], Vec<T>) -> Result<(), String> + 'a;

/// One queued append: its framed records and what to apply once durable.
struct Entry<T> {
    ticket: u64,
    framed: Vec<u8>,
    item: T,
}

struct Queue<T> {
    pending: Vec<Entry<T>>,
    next_ticket: u64,
    leader: bool,
    /// Results of finished tickets not yet collected by their appender.
    results: std::collections::HashMap<u64, Result<(), String>>,
}

/// The leader/follower queue.
pub struct GroupCommit<T> {
    queue: Mutex<Queue<T>>,
    cv: Condvar,
    interval: Duration,
    max_group_bytes: usize,
}

impl<T> std::fmt::Debug for GroupCommit<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T> GroupCommit<T> {
    /// `interval`: how long a leader waits for more appenders before syncing (zero: sync
    /// right away, one group per leader turn).
    pub fn new(interval: Duration) -> Self {
        Self {
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                next_ticket: 0,
                leader: false,
                results: std::collections::HashMap::new(),
            }),
            cv: Condvar::new(),
            interval,
            max_group_bytes: 16 << 20,
        }
    }

    /// Queues `framed` records and returns once they are durable (and `item` applied), or with
    /// the error of their group. `sink` receives a whole group: the concatenated framed
    /// records and the items in queue order; it must write, sync and apply, or fail.
    pub fn submit(&self, framed: Vec<u8>, item: T, sink: &Sink<'_, T>) -> Result<(), String> {
        let mut q = lock(&self.queue);
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        q.pending.push(Entry {
            ticket,
            framed,
            item,
        });
        loop {
            if let Some(result) = q.results.remove(&ticket) {
                return result;
            }
            if !q.leader {
                q.leader = true;
                if !self.interval.is_zero() {
                    drop(q);
                    std::thread::sleep(self.interval);
                    q = lock(&self.queue);
                }
                let mut group = Vec::new();
                let mut bytes = 0usize;
                let mut rest = std::mem::take(&mut q.pending).into_iter();
                for e in rest.by_ref() {
                    bytes += e.framed.len();
                    group.push(e);
                    if bytes >= self.max_group_bytes {
                        break;
                    }
                }
                q.pending = rest.collect();
                drop(q);
                let tickets: Vec<u64> = group.iter().map(|e| e.ticket).collect();
                let mut items = Vec::with_capacity(group.len());
                let framed = if group.len() == 1
                    && let Some(e) = group.pop()
                {
                    // Alone: its bytes as they are, not a copy (a bulk append's are megabytes).
                    items.push(e.item);
                    e.framed
                } else {
                    let mut framed = Vec::with_capacity(bytes);
                    for e in group {
                        framed.extend_from_slice(&e.framed);
                        items.push(e.item);
                    }
                    framed
                };
                let result = sink(&framed, items);
                q = lock(&self.queue);
                for t in tickets {
                    q.results.insert(t, result.clone());
                }
                q.leader = false;
                self.cv.notify_all();
                continue;
            }
            q = self.cv.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn concurrent_appenders_share_syncs_and_keep_order_within_groups() {
        let gc = Arc::new(GroupCommit::<u64>::new(Duration::from_millis(2)));
        let syncs = Arc::new(AtomicU64::new(0));
        let applied = Arc::new(Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for t in 0..8u64 {
            let gc = gc.clone();
            let syncs = syncs.clone();
            let applied = applied.clone();
            handles.push(std::thread::spawn(move || {
                for i in 0..50u64 {
                    let sink = |_: &[u8], items: Vec<u64>| {
                        syncs.fetch_add(1, Ordering::SeqCst);
                        lock(&applied).extend(items);
                        Ok(())
                    };
                    gc.submit(vec![1], t * 1000 + i, &sink).unwrap();
                    // Durable means applied before we return.
                    assert!(lock(&applied).contains(&(t * 1000 + i)));
                }
            }));
        }
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(lock(&applied).len(), 400);
        let syncs = syncs.load(Ordering::SeqCst);
        assert!(syncs < 400, "{syncs} syncs for 400 appends: no grouping");
    }

    #[test]
    fn a_failed_group_reports_its_error_to_every_member() {
        let gc = GroupCommit::<u8>::new(Duration::ZERO);
        let sink = |_: &[u8], _: Vec<u8>| Err("disk full".to_owned());
        assert_eq!(gc.submit(vec![], 1, &sink), Err("disk full".to_owned()));
        let ok = |_: &[u8], _: Vec<u8>| Ok(());
        assert_eq!(gc.submit(vec![], 2, &ok), Ok(()));
    }
}
