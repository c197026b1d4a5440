//! A single-cell Li-ion battery with a charger that is plugged in now and then: the charge is
//! counted in ampere-hours (so it falls steadily while discharging, faster when the CPU is
//! busy), charging follows constant current then a taper near full, and the terminal voltage
//! comes from an open-circuit-voltage curve with an internal-resistance drop.

use fastrand::Rng;

use crate::signal::{gaussian, happens, uniform};

/// Open-circuit voltage of a Li-ion cell by state of charge.
const OCV: [(f64, f64); 9] = [
    (0.00, 3.00),
    (0.05, 3.45),
    (0.10, 3.60),
    (0.20, 3.68),
    (0.40, 3.75),
    (0.60, 3.85),
    (0.80, 3.98),
    (0.90, 4.06),
    (1.00, 4.18),
];

/// A pack that runs the node for about four days on a charge (it is plugged in about every
/// other day), so a healthy node is never within a day of empty after a charge.
const CAPACITY_AH: f64 = 20.0;
const INTERNAL_OHMS: f64 = 0.06;
const CHARGE_AMPS: f64 = 1.5;
/// Idle draw and the extra at 100 % CPU.
const IDLE_AMPS: f64 = 0.16;
const CPU_AMPS: f64 = 0.30;

/// What the battery reports at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Reading {
    pub charge_ratio: f64,
    pub voltage_volts: f64,
    /// Magnitude of the current, ≥ 0; the direction is `discharging`.
    pub current_amperes: f64,
    /// Magnitude of the power, ≥ 0.
    pub power_watts: f64,
    pub discharging: bool,
    pub mains: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Battery {
    charge: f64,
    /// Seconds the charger stays plugged in, when it is.
    plugged_for_s: Option<f64>,
}

impl Battery {
    pub fn new(rng: &mut Rng) -> Self {
        Self {
            charge: uniform(rng, 0.35, 0.95),
            plugged_for_s: None,
        }
    }

    /// Advances `dt` seconds with the CPU at `cpu_ratio`.
    #[cfg(test)]
    pub fn step(&mut self, rng: &mut Rng, dt: f64, cpu_ratio: f64) -> Reading {
        self.step_failing(rng, dt, cpu_ratio, 0.0)
    }

    /// Like [`Battery::step`], with a failing cell or charger when `extra_drain_per_s > 0`:
    /// no charging, and that much more charge (as a ratio of full) lost every second.
    pub fn step_failing(
        &mut self,
        rng: &mut Rng,
        dt: f64,
        cpu_ratio: f64,
        extra_drain_per_s: f64,
    ) -> Reading {
        let failing = extra_drain_per_s > 0.0;
        match self.plugged_for_s {
            Some(left) if left <= 0.0 => self.plugged_for_s = None,
            Some(left) => self.plugged_for_s = Some(left - dt),
            None => {
                // Someone plugs it in about every other day, and soon once it runs low.
                let rate = if self.charge < 0.05 {
                    1.0 / 600.0
                } else if self.charge < 0.2 {
                    1.0 / 7_200.0
                } else {
                    1.0 / 172_800.0
                };
                if happens(rng, rate, dt) {
                    self.plugged_for_s = Some(uniform(rng, 2.0 * 3_600.0, 10.0 * 3_600.0));
                }
            }
        }
        if failing {
            self.plugged_for_s = None;
        }
        let load = IDLE_AMPS + CPU_AMPS * cpu_ratio.clamp(0.0, 1.0);
        let (current, discharging) = if self.plugged_for_s.is_some() {
            // Constant current, tapering linearly from 80 % to nothing at full; the charger
            // also feeds the load, so the battery sees only the charge current.
            let taper = ((1.0 - self.charge) / 0.2).clamp(0.0, 1.0);
            (CHARGE_AMPS * taper, false)
        } else {
            (load, true)
        };
        let delta_ah = current * dt / 3_600.0;
        let extra = if failing { extra_drain_per_s * dt } else { 0.0 };
        self.charge = if discharging {
            (self.charge - delta_ah / CAPACITY_AH - extra).max(0.0)
        } else {
            (self.charge + delta_ah / CAPACITY_AH).min(1.0)
        };
        let ocv = open_circuit_voltage(self.charge);
        let drop = current * INTERNAL_OHMS;
        let voltage = if discharging { ocv - drop } else { ocv + drop } + 0.002 * gaussian(rng);
        Reading {
            charge_ratio: self.charge,
            voltage_volts: voltage.max(0.0),
            current_amperes: current,
            power_watts: current * voltage.max(0.0),
            discharging,
            mains: self.plugged_for_s.is_some(),
        }
    }
}

fn open_circuit_voltage(charge: f64) -> f64 {
    let c = charge.clamp(0.0, 1.0);
    for w in OCV.windows(2) {
        let ((c0, v0), (c1, v1)) = (w[0], w[1]);
        if c <= c1 {
            return v0 + (v1 - v0) * (c - c0) / (c1 - c0);
        }
    }
    OCV[OCV.len() - 1].1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charge_falls_while_discharging_and_rises_while_charging() {
        let mut rng = Rng::with_seed(11);
        let mut battery = Battery::new(&mut rng);
        let mut last = battery.step(&mut rng, 1.0, 0.1);
        let (mut saw_discharge, mut saw_charge) = (false, false);
        // Ten simulated days at one-minute steps.
        for i in 0..14_400 {
            let now = battery.step(&mut rng, 60.0, (i % 7) as f64 / 10.0);
            assert!((0.0..=1.0).contains(&now.charge_ratio));
            assert!(now.current_amperes >= 0.0 && now.power_watts >= 0.0);
            assert!((2.8..=4.4).contains(&now.voltage_volts), "{now:?}");
            assert_eq!(now.mains, !now.discharging);
            if now.discharging && last.discharging {
                assert!(now.charge_ratio < last.charge_ratio || now.charge_ratio == 0.0);
                saw_discharge = true;
            }
            if !now.discharging && !last.discharging && last.charge_ratio < 0.99 {
                assert!(now.charge_ratio > last.charge_ratio);
                saw_charge = true;
            }
            last = now;
        }
        assert!(saw_discharge && saw_charge, "ten days should see both");
    }

    #[test]
    fn drain_rate_is_plausible() {
        let mut rng = Rng::with_seed(5);
        let mut battery = Battery {
            charge: 0.9,
            plugged_for_s: None,
        };
        let start = battery.charge;
        // One hour, idle: about IDLE_AMPS / CAPACITY_AH per hour.
        let mut r = battery.step(&mut rng, 1.0, 0.0);
        for _ in 0..3_599 {
            r = battery.step(&mut rng, 1.0, 0.0);
        }
        let per_hour = start - r.charge_ratio;
        assert!(r.discharging);
        assert!(
            (per_hour - IDLE_AMPS / CAPACITY_AH).abs() < 1e-3,
            "{per_hour}"
        );
    }

    #[test]
    fn voltage_curve_is_monotone() {
        let mut last = 0.0;
        for i in 0..=100 {
            let v = open_circuit_voltage(f64::from(i) / 100.0);
            assert!(v >= last);
            last = v;
        }
        assert!((open_circuit_voltage(1.0) - 4.18).abs() < 1e-9);
    }
}
