//! TLS for the uplink: rustls with the `ring` provider (never aws-lc, which breaks ARM cross
//! builds). The server is verified against the configured CA only — not the system roots —
//! and a client certificate is presented for mutual TLS when configured. PEM files are read
//! with `rustls-pki-types`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading PEM file {path}: {problem}")]
    Pem { path: PathBuf, problem: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            problem: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// A client configuration trusting only `ca_file`, with an optional client certificate.
pub fn client_config(
    ca_file: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(ca_file)? {
        roots.add(cert)?;
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
    let config = match client {
        Some((cert_file, key_file)) => {
            let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::Pem {
                path: key_file.to_owned(),
                problem: e.to_string(),
            })?;
            builder.with_client_auth_cert(certs(cert_file)?, key)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
