//! One simulated device: its values, its seqs and its own account of what it produced, what
//! reached the network and what the server acknowledged. The MQTT connection it speaks over
//! (its own, or one shared with other devices behind a gateway) is [`crate::connection`]; this
//! file is what stays the device's own either way, so every guarantee of the summary holds
//! per device whatever the connection layout.
//!
//! # Injected faults
//! The device follows its [`FaultPlan`] (see [`crate::faults`]): a batch chosen to be lost is
//! held back and dropped once the next one is produced (so the last seq is always sent); a
//! batch chosen to be corrupted is queued after a corrupted copy of itself; an acknowledged
//! batch chosen to be duplicated is queued once more.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use fleetmon_protocol::{Format, SeqSet, Topic, encode_columnar, encode_json, encode_protobuf};
use rumqttc::{Publish, QoS};
use tracing::debug;

use crate::faults::{FaultPlan, LossGate};
use crate::generator::Generator;
use crate::identity::Identity;
use crate::outbox::{Kind, Outbox, Written};
use crate::stats::FleetStats;
use crate::summary::DeviceSummary;

/// What one device is, fixed for the run.
#[derive(Debug, Clone)]
pub(crate) struct DeviceConfig {
    pub identity: Identity,
    pub first_seq: u64,
    pub faults: FaultPlan,
    /// The scenario's value faults, applied by the generator.
    pub value_faults: crate::scenario::DeviceFaults,
}

/// One device's state; `member` is its position on its connection (see [`Outbox`]).
pub(crate) struct Device {
    pub cfg: DeviceConfig,
    member: usize,
    generator: Generator,
    /// The device clock of the last batch: batches get strictly increasing times, as a real
    /// device's readings do, even when ticks bunch up under load.
    last_clock_ms: i64,
    pub summary: DeviceSummary,
    stats: Arc<FleetStats>,
    telemetry_topic: String,
    pub status_topic: String,
    /// Seqs written at least once, and acknowledged; copied into the summary at the end.
    sent: SeqSet,
    acked: SeqSet,
    /// The batch chosen to be lost, held until it is certain not to be the last.
    losses: LossGate<(u32, Vec<u8>)>,
}

impl Device {
    pub fn new(cfg: DeviceConfig, member: usize, stats: Arc<FleetStats>) -> Self {
        let id = &cfg.identity;
        let summary = DeviceSummary {
            device: id.device.clone(),
            model: id.model.as_str().to_owned(),
            site: id.site.name.to_owned(),
            boot_id: id.boot_id.clone(),
            first_seq: cfg.first_seq,
            clock_skew_ms: cfg.faults.clock_skew_ms,
            value_faults: cfg.value_faults.windows.clone(),
            ..DeviceSummary::default()
        };
        let mut generator = Generator::new(id);
        generator.set_faults(cfg.value_faults.clone());
        Self {
            generator,
            member,
            last_clock_ms: i64::MIN,
            telemetry_topic: Topic::telemetry(&id.device),
            status_topic: Topic::status(&id.device),
            summary,
            stats,
            sent: SeqSet::new(),
            acked: SeqSet::new(),
            losses: LossGate::default(),
            cfg,
        }
    }

    pub fn id(&self) -> &str {
        &self.cfg.identity.device
    }

    /// Produces the next batch into the outbox, unless this device's backlog is full.
    pub fn produce(&mut self, outbox: &mut Outbox, format: Format) {
        if outbox.is_full(self.member) {
            self.summary.batches_skipped += 1;
            self.stats.skipped();
            if self.summary.batches_skipped == 1 {
                debug!(device = %self.id(), "backlog full; holding back new batches");
            }
            return;
        }
        let seq = self.cfg.first_seq + self.summary.batches_produced;
        let device_clock = wall_clock_ms()
            .saturating_add(self.cfg.faults.clock_skew_ms)
            .max(self.last_clock_ms.saturating_add(1));
        self.last_clock_ms = device_clock;
        let batch = self.generator.batch(seq, device_clock);
        let payload = match format {
            Format::Protobuf => encode_protobuf(&batch),
            Format::Columnar => encode_columnar(&batch),
            Format::Json => encode_json(&batch),
        };
        let samples = u32::try_from(batch.samples.len()).unwrap_or(u32::MAX);
        self.summary.samples_per_batch.record(seq, samples);
        self.summary.batches_produced += 1;
        self.stats.produced();
        let lose = self.cfg.faults.lost(seq);
        let admitted = self.losses.admit(seq, (samples, payload), lose);
        self.summary.lost_seqs.extend(admitted.lost);
        if let Some((samples, payload)) = admitted.send {
            self.enqueue(outbox, format, seq, samples, payload);
        }
    }

    /// Production is over: a batch held back to be lost turns out to be the last one and is
    /// sent after all.
    pub fn finish_producing(&mut self, outbox: &mut Outbox, format: Format) {
        if let Some((seq, (samples, payload))) = self.losses.finish() {
            self.enqueue(outbox, format, seq, samples, payload);
        }
    }

    /// Queues batch `seq` for sending, after a corrupted copy if the plan says so.
    fn enqueue(
        &mut self,
        outbox: &mut Outbox,
        format: Format,
        seq: u64,
        samples: u32,
        payload: Vec<u8>,
    ) {
        if self.cfg.faults.corrupted(seq) {
            let bad = self.cfg.faults.corrupt_payload(seq, &payload, format);
            let publish = Publish::new(self.telemetry_topic.clone(), QoS::AtLeastOnce, bad);
            outbox.push_corrupt(self.member, seq, publish);
        }
        let publish = Publish::new(self.telemetry_topic.clone(), QoS::AtLeastOnce, payload);
        outbox.push_telemetry(self.member, seq, samples, publish);
    }

    /// A retained status message.
    pub fn status(&self, online: bool) -> Publish {
        let mut publish = Publish::new(
            self.status_topic.clone(),
            QoS::AtLeastOnce,
            if online { "online" } else { "offline" },
        );
        publish.retain = true;
        publish
    }

    /// One of this device's messages was written to the network.
    pub fn written(&mut self, written: Written) {
        match written.kind {
            Kind::Telemetry { seq, .. } => {
                if self.sent.insert(seq) {
                    self.summary.batches_sent += 1;
                } else {
                    self.summary.resends += 1;
                }
            }
            Kind::Corrupt { .. } if written.first => self.summary.corrupted += 1,
            _ => {}
        }
    }

    /// One of this device's messages was acknowledged. `closing`: no extra copy is queued
    /// any more (it could not be waited for).
    pub fn acked(&mut self, outbox: &mut Outbox, kind: Kind, publish: Publish, closing: bool) {
        match kind {
            Kind::Telemetry { seq, .. } if self.acked.insert(seq) => {
                self.summary.batches_acked += 1;
                self.stats.acked();
                if !closing && self.cfg.faults.duplicated(seq) {
                    outbox.push_duplicate(self.member, seq, publish);
                }
            }
            Kind::Duplicate { .. } => self.summary.duplicated += 1,
            _ => {}
        }
    }

    /// The run is over: what the device did, with `connections` successful CONNACKs of the
    /// connection it spoke over.
    pub fn finish(mut self, connections: u64, clean_disconnect: bool) -> DeviceSummary {
        self.summary.connections = connections;
        self.summary.clean_disconnect = clean_disconnect;
        self.summary.sent_seqs = self.sent.ranges().to_vec();
        self.summary.acked_seqs = self.acked.ranges().to_vec();
        let counts = &self.summary.samples_per_batch;
        self.summary.samples_sent = counts.total_in(&self.summary.sent_seqs);
        self.summary.samples_acked = counts.total_in(&self.summary.acked_seqs);
        debug!(
            device = %self.id(),
            produced = self.summary.batches_produced,
            acked = self.summary.batches_acked,
            "device finished"
        );
        self.summary
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
impl Device {
    /// The seqs acknowledged so far.
    pub fn acked_ranges(&self) -> Vec<[u64; 2]> {
        self.acked.ranges().to_vec()
    }
}
