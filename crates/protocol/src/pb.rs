//! Protobuf messages of `proto/fleetmon.proto`, derived with prost (no protoc needed), and the
//! conversion to and from [`crate::Batch`] through the per-batch string table.

use std::collections::{BTreeMap, HashMap};

use crate::batch::{Batch, Sample};

/// `fleetmon.v1.Batch`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbBatch {
    #[prost(string, tag = "1")]
    pub device: String,
    #[prost(string, tag = "2")]
    pub boot_id: String,
    #[prost(uint64, tag = "3")]
    pub seq: u64,
    #[prost(int64, tag = "4")]
    pub sent_at_ms: i64,
    #[prost(uint64, tag = "5")]
    pub dropped_before: u64,
    #[prost(string, repeated, tag = "6")]
    pub strings: Vec<String>,
    #[prost(message, repeated, tag = "7")]
    pub samples: Vec<PbSample>,
}

/// `fleetmon.v1.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbSample {
    #[prost(uint32, tag = "1")]
    pub metric: u32,
    #[prost(uint32, repeated, tag = "2")]
    pub labels: Vec<u32>,
    #[prost(int64, tag = "3")]
    pub ts_ms: i64,
    #[prost(double, tag = "4")]
    pub value: f64,
}

/// A string-table reference that points nowhere, or labels that do not pair up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("sample {sample}: string index {index} is out of range (table has {len} strings)")]
    IndexOutOfRange {
        sample: usize,
        index: u32,
        len: usize,
    },
    #[error("sample {sample}: labels hold {len} indices; expected (name, value) pairs")]
    OddLabels { sample: usize, len: usize },
    #[error("sample {sample}: label `{name}` appears twice")]
    DuplicateLabel { sample: usize, name: String },
}

impl From<&Batch> for PbBatch {
    fn from(batch: &Batch) -> Self {
        let mut table = StringTable::default();
        let samples = batch
            .samples
            .iter()
            .map(|s| PbSample {
                metric: table.intern(&s.metric),
                labels: s
                    .labels
                    .iter()
                    .flat_map(|(k, v)| [table.intern(k), table.intern(v)])
                    .collect(),
                ts_ms: s.ts_ms,
                value: s.value,
            })
            .collect();
        PbBatch {
            device: batch.device.clone(),
            boot_id: batch.boot_id.clone(),
            seq: batch.seq,
            sent_at_ms: batch.sent_at_ms,
            dropped_before: batch.dropped_before,
            strings: table.strings,
            samples,
        }
    }
}

impl TryFrom<PbBatch> for Batch {
    type Error = TableError;

    fn try_from(pb: PbBatch) -> Result<Self, Self::Error> {
        let lookup = |sample: usize, index: u32| {
            pb.strings
                .get(index as usize)
                .cloned()
                .ok_or(TableError::IndexOutOfRange {
                    sample,
                    index,
                    len: pb.strings.len(),
                })
        };
        let mut samples = Vec::with_capacity(pb.samples.len());
        for (i, s) in pb.samples.iter().enumerate() {
            if s.labels.len() % 2 != 0 {
                return Err(TableError::OddLabels {
                    sample: i,
                    len: s.labels.len(),
                });
            }
            let mut labels = BTreeMap::new();
            for pair in s.labels.chunks_exact(2) {
                let name = lookup(i, pair[0])?;
                let value = lookup(i, pair[1])?;
                if labels.insert(name.clone(), value).is_some() {
                    return Err(TableError::DuplicateLabel { sample: i, name });
                }
            }
            samples.push(Sample {
                metric: lookup(i, s.metric)?,
                labels,
                ts_ms: s.ts_ms,
                value: s.value,
            });
        }
        Ok(Batch {
            device: pb.device,
            boot_id: pb.boot_id,
            seq: pb.seq,
            sent_at_ms: pb.sent_at_ms,
            dropped_before: pb.dropped_before,
            samples,
        })
    }
}

#[derive(Default)]
struct StringTable {
    strings: Vec<String>,
    index: HashMap<String, u32>,
}

impl StringTable {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        // A batch holds far fewer than 2^32 distinct strings: payloads are size-limited.
        let i = u32::try_from(self.strings.len()).unwrap_or(u32::MAX);
        self.strings.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cross_the_wire_once() {
        let batch = Batch {
            device: "d1".into(),
            boot_id: "b".into(),
            seq: 1,
            sent_at_ms: 5,
            dropped_before: 0,
            samples: (0..10)
                .map(|t| Sample::new("cpu_usage_ratio", t, 0.5).with_label("core", "0"))
                .collect(),
        };
        let pb = PbBatch::from(&batch);
        assert_eq!(pb.strings, vec!["cpu_usage_ratio", "core", "0"]);
        assert_eq!(Batch::try_from(pb).unwrap(), batch);
    }

    #[test]
    fn dangling_index_is_an_error() {
        let pb = PbBatch {
            strings: vec!["m".into()],
            samples: vec![PbSample {
                metric: 3,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            Batch::try_from(pb),
            Err(TableError::IndexOutOfRange {
                sample: 0,
                index: 3,
                len: 1
            })
        );
    }
}
