//! A notifier process over one outbox directory, used by the crash tests and handy for trying a
//! receiver out:
//!
//! ```sh
//! cargo run -p fleetmon-notify --example outbox_worker -- OUTBOX_DIR notify.toml < notifications.jsonl
//! ```
//!
//! Reads notifications as JSON lines on stdin; prints `enqueued <id> <Accepted|Duplicate>` once
//! each is durable, then `stdin closed` at the end of input, and keeps delivering until killed.

use std::io::{BufRead, Write};
use std::time::Duration;

use fleetmon_notify::{Notification, Notifier, NotifyConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(config)) = (args.next(), args.next()) else {
        return Err("usage: outbox_worker OUTBOX_DIR CONFIG.toml".into());
    };
    let config = NotifyConfig::from_toml(&std::fs::read_to_string(&config)?)?;
    let notifier = Notifier::start(config, &dir)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let n: Notification = serde_json::from_str(&line)?;
        let id = n.id.clone();
        let r = notifier.enqueue(n)?;
        writeln!(out, "enqueued {id} {r:?}")?;
        out.flush()?;
    }
    writeln!(out, "stdin closed")?;
    out.flush()?;
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
