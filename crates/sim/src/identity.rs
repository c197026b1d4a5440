//! Who a simulated device is: its id, model, site, boot id and software versions, chosen from
//! the run's seed and the device's index alone, so the same seed gives the same fleet, and
//! adding devices does not change the ones already there.

use fastrand::Rng;

use crate::model::Model;
use crate::signal::{mix, uniform};

/// Stream tags, so identity and value draws of one device never share a sequence.
const IDENTITY_STREAM: u64 = 0x1D;
const VALUE_STREAM: u64 = 0x5A;

/// A site: where devices stand, its time zone (for daily cycles) and its network distance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Site {
    pub name: &'static str,
    pub utc_offset_h: f64,
    /// Baseline probe round trip over a wired uplink, seconds.
    pub rtt_s: f64,
}

/// The sites devices are spread over.
pub const SITES: [Site; 5] = [
    Site {
        name: "site-a",
        utc_offset_h: 1.0,
        rtt_s: 0.012,
    },
    Site {
        name: "site-b",
        utc_offset_h: -5.0,
        rtt_s: 0.028,
    },
    Site {
        name: "site-c",
        utc_offset_h: 9.0,
        rtt_s: 0.045,
    },
    Site {
        name: "site-d",
        utc_offset_h: 0.0,
        rtt_s: 0.018,
    },
    Site {
        name: "site-e",
        utc_offset_h: -8.0,
        rtt_s: 0.070,
    },
];

/// The fixed facts of one simulated device.
#[derive(Debug, Clone)]
pub struct Identity {
    pub device: String,
    pub model: Model,
    pub site: Site,
    /// Changes on every boot on a real device; random-looking (a UUID), from the seed.
    pub boot_id: String,
    pub os: &'static str,
    pub kernel: &'static str,
    pub firmware: &'static str,
    /// How long the device had been up when the simulation started, seconds.
    pub uptime_at_start_s: f64,
    /// Seed of the device's value stream.
    pub value_seed: u64,
}

impl Identity {
    /// Device number `index` of a fleet seeded with `seed`, named `device`.
    pub fn new(seed: u64, index: usize, device: String) -> Self {
        let mut rng = Rng::with_seed(mix(mix(seed, index as u64), IDENTITY_STREAM));
        let model = match rng.u32(0..10) {
            0..=4 => Model::Rpi4,
            5..=6 => Model::Gateway,
            _ => Model::BatterySensor,
        };
        Self::build(seed, index, device, model, &mut rng)
    }

    /// Like [`Identity::new`] with the model forced (tests of one model's values).
    pub fn with_model(seed: u64, index: usize, device: String, model: Model) -> Self {
        let mut rng = Rng::with_seed(mix(mix(seed, index as u64), IDENTITY_STREAM));
        Self::build(seed, index, device, model, &mut rng)
    }

    fn build(seed: u64, index: usize, device: String, model: Model, rng: &mut Rng) -> Self {
        let profile = model.profile();
        let site = SITES[rng.usize(0..SITES.len())];
        let boot_id = uuid_v4(rng);
        let kernel = profile.kernels[rng.usize(0..profile.kernels.len())];
        // Newer firmware is more common: a fleet mid-rollout.
        let n = profile.firmwares.len();
        let firmware = profile.firmwares[n - 1 - rng.usize(0..n).min(rng.usize(0..n))];
        // Between one hour and 40 days, most devices up for days.
        let uptime_at_start_s = uniform(rng, 8.2, 15.06).exp();
        Self {
            device,
            model,
            site,
            boot_id,
            os: profile.os,
            kernel,
            firmware,
            uptime_at_start_s,
            value_seed: mix(mix(seed, index as u64), VALUE_STREAM),
        }
    }
}

/// A version-4-shaped UUID from `rng`.
fn uuid_v4(rng: &mut Rng) -> String {
    let hi = rng.u64(..);
    let lo = rng.u64(..);
    let a = hi >> 32;
    let b = (hi >> 16) & 0xFFFF;
    let c = 0x4000 | (hi & 0x0FFF);
    let d = 0x8000 | ((lo >> 48) & 0x3FFF);
    let e = lo & 0xFFFF_FFFF_FFFF;
    format!("{a:08x}-{b:04x}-{c:04x}-{d:04x}-{e:012x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_deterministic_per_seed_and_index() {
        let a = Identity::new(42, 7, "sim-00007".into());
        let b = Identity::new(42, 7, "sim-00007".into());
        assert_eq!(a.boot_id, b.boot_id);
        assert_eq!(a.model, b.model);
        assert_eq!(a.site, b.site);
        assert_eq!(a.value_seed, b.value_seed);
        let other_seed = Identity::new(43, 7, "sim-00007".into());
        assert_ne!(a.boot_id, other_seed.boot_id);
        let other_index = Identity::new(42, 8, "sim-00008".into());
        assert_ne!(a.boot_id, other_index.boot_id);
    }

    #[test]
    fn a_fleet_mixes_models_and_sites() {
        let fleet: Vec<Identity> = (0..200)
            .map(|i| Identity::new(1, i, format!("d{i}")))
            .collect();
        for model in Model::ALL {
            let n = fleet.iter().filter(|d| d.model == model).count();
            assert!(n >= 20, "{model}: only {n} of 200");
        }
        for site in SITES {
            assert!(fleet.iter().any(|d| d.site == site));
        }
        let uptimes = fleet.iter().map(|d| d.uptime_at_start_s);
        assert!(
            uptimes
                .clone()
                .all(|u| (3_600.0..=40.0 * 86_400.0).contains(&u))
        );
    }

    #[test]
    fn boot_ids_look_like_uuids() {
        let id = Identity::new(9, 0, "x".into()).boot_id;
        assert_eq!(id.len(), 36);
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }
}
