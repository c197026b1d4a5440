//! `fleetmon-agent enrol --server URL --token TOKEN`: the device makes its own key (P-256)
//! and a certificate request, and trades the single-use token from
//! `fleetmon ca enrol-token DEVICE` for a certificate at `POST {URL}/api/v1/enrol`. The key
//! never leaves the device. Key (0600), certificate and — unless one is already there — the
//! CA certificate are written where the configuration's `server.tls_*_file` keys say, so
//! `fleetmon-agent run` then connects over mutual TLS.
//!
//! Over `http://` the CA certificate is trusted on first use; over `https://` the server is
//! verified against the configured CA file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::config::Config;

/// Why enrolment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    #[error(
        "config key `server.{0}` is not set: enrolment writes the device's key and certificate there"
    )]
    MissingPath(&'static str),
    #[error("making the key or the certificate request: {0}")]
    Key(#[from] rcgen::Error),
    #[error("enrolment request: {0}")]
    Transport(#[from] ureq::Error),
    #[error("the server refused the enrolment ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the server's answer is not an enrolment: {0}")]
    Answer(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading the CA file {path}: {problem}")]
    Ca { path: PathBuf, problem: String },
}

#[derive(Debug, Deserialize)]
struct Answer {
    device: String,
    certificate: String,
    ca: String,
    serial: String,
}

/// What enrolment wrote.
#[derive(Debug)]
pub struct Enrolled {
    pub device: String,
    pub serial: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Written only when no CA file was there yet.
    pub ca_file: Option<PathBuf>,
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), EnrolError> {
    let io = |source| EnrolError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)
}

fn agent(ca_file: Option<&Path>) -> Result<ureq::Agent, EnrolError> {
    use ureq::tls::{PemItem, RootCerts, TlsConfig, TlsProvider};
    let mut tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()));
    if let Some(path) = ca_file.filter(|p| p.is_file()) {
        let err = |problem: String| EnrolError::Ca {
            path: path.to_owned(),
            problem,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let certs = ureq::tls::parse_pem(&bytes)
            .filter_map(|i| match i {
                Ok(PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect::<Vec<_>>();
        tls = tls.root_certs(RootCerts::Specific(Arc::new(certs)));
    }
    Ok(ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .tls_config(tls.build())
        .build()
        .into())
}

/// Enrols the configured device with the server at `server` (its HTTP base URL).
pub fn enrol(config: &Config, server: &str, token: &str) -> Result<Enrolled, EnrolError> {
    let s = &config.server;
    let cert_file = s
        .tls_cert_file
        .clone()
        .ok_or(EnrolError::MissingPath("tls_cert_file"))?;
    let key_file = s
        .tls_key_file
        .clone()
        .ok_or(EnrolError::MissingPath("tls_key_file"))?;
    let ca_file = s
        .tls_ca_file
        .clone()
        .ok_or(EnrolError::MissingPath("tls_ca_file"))?;

    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, config.device_id.as_str());
    let csr = params.serialize_request(&key)?.pem()?;

    let url = format!("{}/api/v1/enrol", server.trim_end_matches('/'));
    let body = serde_json::json!({ "token": token.trim(), "csr": csr });
    let mut response = agent(Some(&ca_file))?
        .post(&url)
        .header("content-type", "application/json")
        .send(body.to_string().as_bytes())?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| EnrolError::Answer(e.to_string()))?;
    if status != 200 {
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(text);
        return Err(EnrolError::Refused { status, message });
    }
    let answer: Answer =
        serde_json::from_str(&text).map_err(|e| EnrolError::Answer(e.to_string()))?;

    // The key first: a certificate without its key is useless, a key without one harmless.
    write(&key_file, key.serialize_pem().as_bytes(), 0o600)?;
    write(&cert_file, answer.certificate.as_bytes(), 0o644)?;
    let ca_written = if ca_file.is_file() {
        None
    } else {
        write(&ca_file, answer.ca.as_bytes(), 0o644)?;
        Some(ca_file)
    };
    Ok(Enrolled {
        device: answer.device,
        serial: answer.serial,
        cert_file,
        key_file,
        ca_file: ca_written,
    })
}
