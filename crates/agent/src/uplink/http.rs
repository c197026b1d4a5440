//! The HTTP fallback: `POST {http_url}/api/v1/ingest` with the same frame as MQTT.
//! The server answers 200 only once the batch is durable (`duplicate` included), so a 200 is
//! an acknowledgement exactly like a PUBACK and the batch leaves the spool. Any other answer
//! leaves it there. HTTPS verifies the server against the configured CA only, with the
//! device's client certificate when configured (rustls, ring provider).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, ClientCert, PemItem, RootCerts, TlsConfig, TlsProvider};

/// Why a batch was not acknowledged over HTTP.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("HTTP ingest answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("HTTP ingest: {0}")]
    Transport(#[from] ureq::Error),
    #[error("reading {path}: {problem}")]
    Pem { path: String, problem: String },
}

/// A blocking client for the ingest endpoint.
#[derive(Debug)]
pub struct HttpUplink {
    agent: ureq::Agent,
    url: String,
}

fn pem_items(path: &Path) -> Result<Vec<PemItem<'static>>, HttpError> {
    let err = |problem: String| HttpError::Pem {
        path: path.display().to_string(),
        problem,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    ureq::tls::parse_pem(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))
}

fn certs(path: &Path) -> Result<Vec<Certificate<'static>>, HttpError> {
    Ok(pem_items(path)?
        .into_iter()
        .filter_map(|i| match i {
            PemItem::Certificate(c) => Some(c),
            _ => None,
        })
        .collect())
}

impl HttpUplink {
    /// `base` is the server's URL (`http://host:8427`); the CA and client certificate apply
    /// to `https://` URLs.
    pub fn new(
        base: &str,
        ca_file: Option<&Path>,
        client: Option<(&Path, &Path)>,
    ) -> Result<Self, HttpError> {
        let mut tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()));
        if let Some(ca) = ca_file {
            tls = tls.root_certs(RootCerts::Specific(Arc::new(certs(ca)?)));
        }
        if let Some((cert, key)) = client {
            let key = pem_items(key)?
                .into_iter()
                .find_map(|i| match i {
                    PemItem::PrivateKey(k) => Some(k),
                    _ => None,
                })
                .ok_or_else(|| HttpError::Pem {
                    path: key.display().to_string(),
                    problem: "no private key".into(),
                })?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&certs(cert)?, key)));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(15)))
            .tls_config(tls.build())
            .build()
            .into();
        Ok(Self {
            agent,
            url: format!("{}/api/v1/ingest", base.trim_end_matches('/')),
        })
    }

    /// Posts one encoded batch; `Ok` means the server has it durably.
    pub fn post(&self, payload: &[u8]) -> Result<(), HttpError> {
        let mut r = self
            .agent
            .post(&self.url)
            .header("content-type", "application/octet-stream")
            .send(payload)?;
        let status = r.status().as_u16();
        if status == 200 {
            return Ok(());
        }
        let body = r.body_mut().read_to_string().unwrap_or_default();
        Err(HttpError::Status { status, body })
    }
}
