//! The delivery workers: one std thread per integration (receiver × webhook/slack/email), each
//! taking its due notifications from the shared [`Outbox`], applying the rate limit, sending,
//! and recording the outcome durably before it moves on.
//!
//! A thread per integration keeps a slow SMTP server from holding up a webhook, and makes the
//! rate limit and the order of attempts per integration simple. Blocking I/O is fine here: the
//! server's async runtime only calls [`Notifier::enqueue`], which writes and fsyncs one file.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{debug, error, info, warn};

use crate::backoff::{self, TokenBucket};
use crate::config::{ConfigError, NotifyConfig, RetryConfig};
use crate::deliver::{Deliver, Outcome};
use crate::email::EmailSender;
use crate::http::{SlackSender, WebhookSender};
use crate::outbox::{Enqueued, Next, Outbox, OutboxError, TargetState, now_ms};
use crate::payload::Notification;
use crate::secret::SecretError;

/// Errors from starting the notifier or enqueueing.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("notify config key `{key}`: {source}")]
    Secret { key: String, source: SecretError },
    #[error("notify config key `{key}`: {problem}")]
    Integration { key: String, problem: String },
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("notification {id}: no receiver named `{receiver}` is configured")]
    UnknownReceiver { id: String, receiver: String },
    #[error("cannot start a delivery thread: {0}")]
    Spawn(std::io::Error),
}

/// Counters for one receiver (all its integrations together).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReceiverStats {
    /// Deliveries waiting now (one per notification and integration).
    pub queued: u64,
    /// Successful deliveries since start.
    pub delivered: u64,
    /// Failed attempts that will be retried, since start.
    pub retried: u64,
    /// Deliveries given up on (dead-lettered), since start.
    pub failed: u64,
}

/// A snapshot for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub receivers: BTreeMap<String, ReceiverStats>,
    /// Notifications waiting in the outbox, and their bytes on disk.
    pub outbox_entries: usize,
    pub outbox_bytes: u64,
}

struct Shared {
    outbox: Mutex<Outbox>,
    wake: Condvar,
    stop: AtomicBool,
    counters: Mutex<BTreeMap<String, ReceiverStats>>,
    retry: RetryConfig,
    /// receiver → its integration names, in the order targets are recorded.
    targets: BTreeMap<String, Vec<String>>,
}

impl Shared {
    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, receiver: &str, f: impl FnOnce(&mut ReceiverStats)) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        f(c.entry(receiver.to_owned()).or_default());
    }
}

/// Handle to the running delivery workers. Dropping it stops them (as [`Notifier::shutdown`]).
pub struct Notifier {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

struct Worker {
    receiver: String,
    target: String,
    sender: Box<dyn Deliver>,
    bucket: Option<TokenBucket>,
}

/// Integration names of a receiver: `webhook[0]`, `slack[0]`, `email[0]`, ...
fn build_workers(config: &NotifyConfig) -> Result<Vec<Worker>, NotifyError> {
    let mut out = Vec::new();
    for (name, r) in &config.receivers {
        let bucket = || r.rate_limit.map(|l| TokenBucket::new(l, Instant::now()));
        for (i, w) in r.webhook.iter().enumerate() {
            let key = format!("receivers.{name}.webhook[{i}]");
            let src = w
                .secret_source()
                .map_err(|problem| NotifyError::Integration {
                    key: key.clone(),
                    problem,
                })?;
            let secret = src
                .map(|s| s.resolve())
                .transpose()
                .map_err(|source| NotifyError::Secret { key, source })?;
            out.push(Worker {
                receiver: name.clone(),
                target: format!("webhook[{i}]"),
                sender: Box::new(WebhookSender::new(&w.url, secret, w.timeout)),
                bucket: bucket(),
            });
        }
        for (i, s) in r.slack.iter().enumerate() {
            out.push(Worker {
                receiver: name.clone(),
                target: format!("slack[{i}]"),
                sender: Box::new(SlackSender::new(&s.url, s.timeout)),
                bucket: bucket(),
            });
        }
        for (i, e) in r.email.iter().enumerate() {
            let key = format!("receivers.{name}.email[{i}]");
            let src = e
                .password_source()
                .map_err(|problem| NotifyError::Integration {
                    key: key.clone(),
                    problem,
                })?;
            let password =
                src.map(|s| s.resolve())
                    .transpose()
                    .map_err(|source| NotifyError::Secret {
                        key: key.clone(),
                        source,
                    })?;
            let sender = EmailSender::new(e, password)
                .map_err(|problem| NotifyError::Integration { key, problem })?;
            out.push(Worker {
                receiver: name.clone(),
                target: format!("email[{i}]"),
                sender: Box::new(sender),
                bucket: bucket(),
            });
        }
    }
    Ok(out)
}

impl Notifier {
    /// Validates the config, reads its secrets, opens the outbox in `outbox_dir` and starts a
    /// delivery thread per integration. Whatever waited in the outbox is delivered first.
    pub fn start(config: NotifyConfig, outbox_dir: impl AsRef<Path>) -> Result<Self, NotifyError> {
        config.validate()?;
        let workers = build_workers(&config)?;
        let mut outbox = Outbox::open(outbox_dir, config.outbox)?;
        let mut targets: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for w in &workers {
            targets
                .entry(w.receiver.clone())
                .or_default()
                .push(w.target.clone());
        }
        // Waiting deliveries nobody can make any more go to the dead letter, not limbo.
        for (seq, idx, receiver, target) in outbox.pending_slots() {
            let known = targets.get(&receiver).is_some_and(|t| t.contains(&target));
            if !known {
                outbox.fail(
                    seq,
                    idx,
                    &format!("receiver `{receiver}` has no integration `{target}` any more"),
                )?;
            }
        }
        let waiting = outbox.len();
        let shared = Arc::new(Shared {
            outbox: Mutex::new(outbox),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            counters: Mutex::new(
                config
                    .receivers
                    .keys()
                    .map(|k| (k.clone(), ReceiverStats::default()))
                    .collect(),
            ),
            retry: config.retry,
            targets,
        });
        let mut threads = Vec::new();
        for w in workers {
            let s = Arc::clone(&shared);
            let name = format!("notify-{}-{}", w.receiver, w.target);
            let t = std::thread::Builder::new()
                .name(name)
                .spawn(move || run_worker(&s, w));
            match t {
                Ok(t) => threads.push(t),
                Err(e) => {
                    let mut n = Notifier { shared, threads };
                    n.stop();
                    return Err(NotifyError::Spawn(e));
                }
            }
        }
        info!(integrations = threads.len(), waiting, "notifier started");
        Ok(Notifier { shared, threads })
    }

    /// Accepts a notification for delivery to every integration of its receiver. Returns once
    /// it is durable on disk; an id already accepted (and not yet forgotten) is a no-op.
    pub fn enqueue(&self, notification: Notification) -> Result<Enqueued, NotifyError> {
        let Some(targets) = self.shared.targets.get(&notification.receiver) else {
            return Err(NotifyError::UnknownReceiver {
                id: notification.id,
                receiver: notification.receiver,
            });
        };
        let r = self
            .shared
            .outbox()
            .enqueue(notification, targets.clone())?;
        if r == Enqueued::Accepted {
            self.shared.wake.notify_all();
        }
        Ok(r)
    }

    /// Counters per receiver and the outbox's size.
    pub fn stats(&self) -> Stats {
        let (pending, entries, bytes) = {
            let ob = self.shared.outbox();
            (ob.pending(), ob.len(), ob.bytes())
        };
        let mut receivers = self
            .shared
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for r in receivers.values_mut() {
            r.queued = 0;
        }
        for (_, receiver, _) in pending {
            receivers.entry(receiver).or_default().queued += 1;
        }
        Stats {
            receivers,
            outbox_entries: entries,
            outbox_bytes: bytes,
        }
    }

    /// Waits until nothing is waiting in the outbox, up to `timeout`; true if it emptied.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.shared.outbox().is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the workers after their current attempt (bounded by the integration's timeout)
    /// and waits for them. Waiting notifications stay in the outbox for the next start.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                error!("a notification delivery thread panicked");
            }
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop();
        }
    }
}

/// How often an idle worker wakes to prune finished ids.
const IDLE_TICK: Duration = Duration::from_secs(30);

fn run_worker(shared: &Shared, mut w: Worker) {
    let mut guard = shared.outbox();
    let mut last_prune = Instant::now();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        if now.duration_since(last_prune) >= IDLE_TICK {
            last_prune = now;
            if let Err(e) = guard.prune_finished(now_ms()) {
                warn!(error = %e, "outbox: cannot prune finished ids");
            }
        }
        let (seq, index, notification, enqueued_ms, failures) =
            match guard.next_due(&w.receiver, &w.target, now) {
                Next::Idle => {
                    guard = wait(shared, guard, IDLE_TICK);
                    continue;
                }
                Next::WaitUntil(at) => {
                    guard = wait(shared, guard, at.saturating_duration_since(now));
                    continue;
                }
                Next::Due {
                    seq,
                    index,
                    notification,
                    enqueued_ms,
                    failures,
                } => (seq, index, notification, enqueued_ms, failures),
            };
        if let Some(b) = &mut w.bucket
            && let Err(later) = b.try_take(now)
        {
            debug!(receiver = %w.receiver, target = %w.target, wait_ms = later.as_millis() as u64,
                "rate limited; the notification waits in the outbox");
            guard = wait(shared, guard, later);
            continue;
        }
        drop(guard);
        let outcome = w.sender.deliver(&notification);
        guard = shared.outbox();
        let id = &notification.id;
        let result = match outcome {
            Outcome::Delivered => {
                shared.count(&w.receiver, |c| c.delivered += 1);
                info!(%id, receiver = %w.receiver, target = %w.target, attempts = failures + 1,
                    "notification delivered");
                guard.mark(seq, index, TargetState::Delivered)
            }
            Outcome::Permanent { reason } => {
                shared.count(&w.receiver, |c| c.failed += 1);
                guard.fail(seq, index, &format!("refused by receiver: {reason}"))
            }
            Outcome::Retry {
                reason,
                retry_after,
            } => {
                let failures = failures.saturating_add(1);
                let age = Duration::from_millis(now_ms().saturating_sub(enqueued_ms));
                if age >= shared.retry.max_age {
                    shared.count(&w.receiver, |c| c.failed += 1);
                    guard.fail(
                        seq,
                        index,
                        &format!(
                            "gave up after {failures} attempts in {}: {reason}",
                            humantime::format_duration(Duration::from_secs(age.as_secs()))
                        ),
                    )
                } else {
                    shared.count(&w.receiver, |c| c.retried += 1);
                    let delay = backoff::delay(&shared.retry, failures, retry_after)
                        .min(shared.retry.max_age - age);
                    warn!(%id, receiver = %w.receiver, target = %w.target, attempt = failures,
                        retry_in_ms = delay.as_millis() as u64, %reason, "delivery failed; will retry");
                    guard.schedule_retry(seq, index, failures, Instant::now() + delay);
                    Ok(())
                }
            }
        };
        if let Err(e) = result {
            // The outcome is kept in memory, so this process does not repeat it; after a
            // restart the delivery may be attempted again (the receiver can dedupe by id).
            error!(%id, receiver = %w.receiver, target = %w.target, error = %e,
                "cannot record the delivery outcome durably");
            guard.schedule_retry(seq, index, failures.saturating_add(1), far_future());
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

fn wait<'a>(
    shared: &'a Shared,
    guard: MutexGuard<'a, Outbox>,
    dur: Duration,
) -> MutexGuard<'a, Outbox> {
    let dur = dur.clamp(Duration::from_millis(1), IDLE_TICK);
    match shared.wake.wait_timeout(guard, dur) {
        Ok((g, _)) => g,
        Err(p) => p.into_inner().0,
    }
}
