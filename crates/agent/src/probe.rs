//! Network probes, blackbox style: round-trip time, jitter and loss over a window.
//!
//! - The server: the MQTT keepalive ping is timed by the uplink (no extra traffic), reported
//!   as `target="server"`.
//! - Configured targets (`probe.targets`, `HOST:PORT`): a TCP connect, timed from SYN to
//!   established, `count` times per interval with `timeout` each. A refused connection still
//!   measures a round trip (the RST came back); a timeout or unreachable network is a loss.
//!
//! Per target: `probe_rtt_seconds` (mean of the answered probes in the window),
//! `probe_jitter_seconds` (mean absolute difference of consecutive answered RTTs, as RFC 3550
//! describes jitter), `probe_loss_ratio` (unanswered / sent). A target with no probe yet gives
//! no series.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::collect::Out;

/// The last `cap` probe outcomes of one target (`None` = lost).
#[derive(Debug, Clone)]
pub struct Window {
    cap: usize,
    outcomes: VecDeque<Option<Duration>>,
}

impl Window {
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            outcomes: VecDeque::new(),
        }
    }

    pub fn record(&mut self, rtt: Option<Duration>) {
        if self.outcomes.len() == self.cap {
            self.outcomes.pop_front();
        }
        self.outcomes.push_back(rtt);
    }

    /// (rtt, jitter, loss) in seconds and ratio; `None` before the first probe.
    pub fn summary(&self) -> Option<(Option<f64>, Option<f64>, f64)> {
        if self.outcomes.is_empty() {
            return None;
        }
        let rtts: Vec<f64> = self
            .outcomes
            .iter()
            .flatten()
            .map(Duration::as_secs_f64)
            .collect();
        let loss = 1.0 - rtts.len() as f64 / self.outcomes.len() as f64;
        let rtt = (!rtts.is_empty()).then(|| rtts.iter().sum::<f64>() / rtts.len() as f64);
        let jitter = (rtts.len() >= 2).then(|| {
            rtts.windows(2).map(|w| (w[1] - w[0]).abs()).sum::<f64>() / (rtts.len() - 1) as f64
        });
        Some((rtt, jitter, loss))
    }

    /// Adds this window's series for `target`.
    pub fn report(&self, target: &str, out: &mut Out) {
        let Some((rtt, jitter, loss)) = self.summary() else {
            return;
        };
        let labels = [("target", target)];
        if let Some(r) = rtt {
            out.push("probe_rtt_seconds", &labels, r);
        }
        if let Some(j) = jitter {
            out.push("probe_jitter_seconds", &labels, j);
        }
        out.push("probe_loss_ratio", &labels, loss);
    }
}

/// One timed TCP connect; `None` when no answer came back in time.
pub async fn tcp_connect_rtt(target: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    match timeout(limit, TcpStream::connect(target)).await {
        Ok(Ok(_stream)) => Some(start.elapsed()),
        // A refusal is an answer from the host: it measures the round trip too.
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => Some(start.elapsed()),
        _ => None,
    }
}

/// Probe windows of the configured targets, shared with the task that fills them.
pub type Probes = Arc<Mutex<BTreeMap<String, Window>>>;

/// Probes every target `count` times per `interval`, forever; run it as a task.
pub async fn run_tcp_probes(
    targets: Vec<String>,
    count: u32,
    limit: Duration,
    interval: Duration,
    probes: Probes,
) {
    if targets.is_empty() {
        return;
    }
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        for target in &targets {
            for _ in 0..count {
                let rtt = tcp_connect_rtt(target, limit).await;
                let mut map = probes.lock().unwrap_or_else(|e| e.into_inner());
                map.entry(target.clone())
                    .or_insert_with(|| Window::new(usize::try_from(count).unwrap_or(1) * 5))
                    .record(rtt);
            }
        }
    }
}

/// Adds the series of every probed target.
pub fn report(probes: &Probes, out: &mut Out) {
    let map = probes.lock().unwrap_or_else(|e| e.into_inner());
    for (target, w) in map.iter() {
        w.report(target, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_rtt_jitter_and_loss() {
        let mut w = Window::new(4);
        assert!(w.summary().is_none());
        for ms in [Some(10), None, Some(30), Some(20), Some(40)] {
            w.record(ms.map(Duration::from_millis));
        }
        // The first (10 ms) fell out of the window of 4.
        let (rtt, jitter, loss) = w.summary().unwrap();
        assert!((rtt.unwrap() - 0.03).abs() < 1e-9);
        assert!((jitter.unwrap() - 0.015).abs() < 1e-9);
        assert_eq!(loss, 0.25);
    }

    #[tokio::test]
    async fn answered_refused_and_unanswered_connects() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        assert!(
            tcp_connect_rtt(&addr, Duration::from_secs(2))
                .await
                .is_some()
        );
        // Nobody listens any more: the RST is an answer, and it measures the round trip.
        drop(l);
        assert!(
            tcp_connect_rtt(&addr, Duration::from_secs(2))
                .await
                .is_some()
        );
        // A listener whose accept queue is full drops SYNs: no answer within the limit is a
        // loss.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let full = socket.listen(0).unwrap();
        let addr = full.local_addr().unwrap().to_string();
        let mut held = Vec::new();
        for _ in 0..4 {
            if let Ok(Ok(s)) = timeout(Duration::from_millis(300), TcpStream::connect(&addr)).await
            {
                held.push(s);
            }
        }
        assert!(
            tcp_connect_rtt(&addr, Duration::from_millis(300))
                .await
                .is_none()
        );
    }
}
