//! `fleetmon ca ...`: the built-in certificate authority. Every command works on the CA
//! directory (`--ca-dir`, default `fleetmon-ca`) that `fleetmon server --ca-dir` reads; a
//! running server sees revocations and a new server certificate without a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use fleetmon_server::security::ca::{CaDir, write_atomic};

use crate::say;

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Args)]
pub struct CaArgs {
    /// The CA directory (CA key and certificate, server certificate, index, tokens).
    #[arg(
        long,
        global = true,
        env = "FLEETMON_CA_DIR",
        default_value = "fleetmon-ca"
    )]
    pub ca_dir: PathBuf,
    /// A server's data directory: when given, issues, revocations and enrolment tokens are
    /// recorded in its audit log.
    #[arg(long, global = true, env = "FLEETMON_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CaCommand,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create the CA: a P-256 key (0600) and a self-signed certificate.
    Init {
        /// The CA's common name [default: "fleetmon CA" and a random suffix].
        #[arg(long)]
        name: Option<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// Write the server's certificate and key (`server.pem`, `server.key`); a running server
    /// reloads them.
    ServerCert {
        /// A DNS name or IP address the server is reached by; repeat for several
        /// [default: localhost, 127.0.0.1, ::1].
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 397)]
        days: i64,
    },
    /// Issue a device certificate (CN = DEVICE) and key, written to OUT_DIR/DEVICE.pem and
    /// DEVICE.key (0600). Enrolment (`enrol-token`) keeps the key on the device instead.
    Issue {
        device: String,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// Where the certificate and key go [default: CA_DIR/devices].
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Revoke every certificate of DEVICE; a running server closes its connections.
    Revoke { device: String },
    /// List issued certificates: device, serial, expiry, revocation.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a single-use enrolment token for DEVICE (`fleetmon-agent enrol --token`).
    EnrolToken {
        device: String,
        /// How long the token is valid.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn date(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn run(args: CaArgs) -> anyhow::Result<()> {
    let CaArgs {
        ca_dir,
        data_dir,
        command,
    } = args;
    let ca = CaDir::new(&ca_dir);
    let audit = |action: &str, detail: &str| -> anyhow::Result<()> {
        match &data_dir {
            Some(dir) => crate::operators::audit_ca(dir, action, detail),
            None => Ok(()),
        }
    };
    let now = now_ms();
    match command {
        CaCommand::Init { name, days } => {
            if days < 1 {
                bail!("--days {days}: expected at least 1");
            }
            let name = name.unwrap_or_else(|| format!("fleetmon CA {:04x}", fastrand_suffix()));
            ca.init(&name, days, now)?;
            audit("ca.init", &name)?;
            say(&format!(
                "CA {name:?} created in {} (key ca.key, certificate ca.pem)",
                ca.path().display()
            ));
        }
        CaCommand::ServerCert { sans, days } => {
            let sans = if sans.is_empty() {
                vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
            } else {
                sans
            };
            ca.server_cert(&sans, days, now)?;
            audit("ca.server_cert", &sans.join(", "))?;
            say(&format!(
                "server certificate for {} written to {} and {}",
                sans.join(", "),
                ca.server_cert_path().display(),
                ca.server_key_path().display()
            ));
        }
        CaCommand::Issue {
            device,
            days,
            out_dir,
        } => {
            let made = ca.issue(&device, now - 5 * 60_000, now + days * DAY_MS, now)?;
            audit(
                "ca.issue",
                &format!("{device}: certificate {}", made.record.serial),
            )?;
            let out = out_dir.unwrap_or_else(|| ca.path().join("devices"));
            let (cert, key) = write_pair(&out, &device, &made.cert_pem, made.key_pem.as_deref())?;
            say(&format!(
                "certificate {} for {device:?}, valid until {}: {} and {}",
                made.record.serial,
                date(made.record.not_after_ms),
                cert.display(),
                key.display()
            ));
        }
        CaCommand::Revoke { device } => {
            let revoked = ca.revoke(&device, now)?;
            let serials: Vec<&str> = revoked.iter().map(|c| c.serial.as_str()).collect();
            audit(
                "ca.revoke",
                &format!("{device}: certificates {}", serials.join(", ")),
            )?;
            if revoked.is_empty() {
                say(&format!("{device:?} has no certificate left to revoke"));
            }
            for c in revoked {
                say(&format!("revoked certificate {} of {device:?}", c.serial));
            }
        }
        CaCommand::List { json } => {
            let all = ca.list()?;
            if json {
                say(&serde_json::to_string_pretty(&all)?);
                return Ok(());
            }
            say(&format!(
                "{:<24} {:<34} {:<9} {:<21} STATUS",
                "DEVICE", "SERIAL", "HOW", "EXPIRES"
            ));
            for c in all {
                let status = match c.revoked_ms {
                    Some(t) => format!("revoked {}", date(t)),
                    None if c.not_after_ms <= now => "expired".to_owned(),
                    None if c.not_after_ms - now < 30 * DAY_MS => "expires soon".to_owned(),
                    None => "valid".to_owned(),
                };
                say(&format!(
                    "{:<24} {:<34} {:<9} {:<21} {status}",
                    c.device,
                    c.serial,
                    c.how,
                    date(c.not_after_ms)
                ));
            }
        }
        CaCommand::EnrolToken { device, ttl } => {
            if ttl.is_zero() {
                bail!("--ttl must be longer than zero");
            }
            let token = ca.enrol_token(&device, ms(ttl), now)?;
            audit(
                "ca.enrol_token",
                &format!("{device}, valid {}", humantime::format_duration(ttl)),
            )?;
            say(&token);
        }
    }
    Ok(())
}

/// Writes `DEVICE.pem` and, when there is one, `DEVICE.key` (0600) into `dir`.
fn write_pair(
    dir: &Path,
    device: &str,
    cert: &str,
    key: Option<&str>,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert_path = dir.join(format!("{device}.pem"));
    let key_path = dir.join(format!("{device}.key"));
    if let Some(key) = key {
        write_atomic(&key_path, key.as_bytes(), 0o600)
            .with_context(|| format!("writing {}", key_path.display()))?;
    }
    write_atomic(&cert_path, cert.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", cert_path.display()))?;
    Ok((cert_path, key_path))
}

/// A short random suffix, so two CAs made with the defaults have different names.
fn fastrand_suffix() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos ^ std::process::id()) as u16
}
