//! The devices' TLS listener: rustls with the ring provider, TLS 1.3 and 1.2 only, a client
//! certificate signed by the built-in CA required, its serial checked against the revocation
//! list, and the certificate's common name taken as the device id.
//!
//! Each handshake gets its own server configuration around a verifier that remembers the
//! certificate it was shown, so a refused handshake is still attributed to the device it
//! claimed to be. Session resumption is off: every connection proves its certificate anew.
//! The server certificate is read through [`ReloadingCert`], which a watcher refreshes when
//! the files change.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::server::TlsStream;

use super::Security;
use super::events::Kind;
use super::live::{Close, LiveGuard};

/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {problem}")]
    Pem { path: PathBuf, problem: String },
    #[error("{path}: {problem}")]
    Key { path: PathBuf, problem: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(String),
}

/// What a client certificate says, as far as the server cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    /// The common name: the device id.
    pub device: Option<String>,
    pub serial: String,
    pub not_after_ms: i64,
    pub issuer: String,
}

impl Presented {
    pub fn parse(der: &[u8]) -> Option<Self> {
        use x509_parser::prelude::FromDer;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
        let device = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        Some(Self {
            device,
            serial: super::ca::serial_hex(cert.raw_serial()),
            not_after_ms: cert.validity().not_after.timestamp().saturating_mul(1000),
            issuer: cert.issuer().to_string(),
        })
    }
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            problem: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            problem: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

/// A verifier of client certificates that chain to `client_ca`; with `optional`, a client may
/// also present none.
pub(crate) fn client_verifier(
    client_ca: &Path,
    optional: bool,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(client_ca)? {
        roots.add(c)?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let builder = if optional {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    builder
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))
}

/// What every TLS listener of the server shares: TLS 1.3 and 1.2 only, the reloading server
/// certificate, and no session resumption (every connection proves its certificate again, so
/// a revoked one cannot get back in by resuming).
pub(crate) fn server_config(
    verifier: Arc<dyn ClientCertVerifier>,
    cert: Arc<ReloadingCert>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert as Arc<dyn ResolvesServerCert>);
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

fn stamp(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The server's certificate, replaced when its files change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    stamps: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ReloadingCert {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let provider = provider();
        let stamps = (stamp(cert_path), stamp(key_path));
        let current = Self::read(cert_path, key_path, &provider)?;
        Ok(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider,
            current: RwLock::new(Arc::new(current)),
            stamps: Mutex::new(stamps),
        })
    }

    fn read(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
        let certs = read_certs(cert)?;
        let der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
            path: key.to_owned(),
            problem: e.to_string(),
        })?;
        CertifiedKey::from_der(certs, der, provider).map_err(|e| TlsError::Key {
            path: key.to_owned(),
            problem: e.to_string(),
        })
    }

    /// Reloads when either file changed since the last load. `Ok(true)`: a new certificate is
    /// in use. A failed load (say, the certificate is new but its key not yet) keeps the old
    /// one and is tried again next time.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = (stamp(&self.cert_path), stamp(&self.key_path));
        let mut stamps = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        if *stamps == now {
            return Ok(false);
        }
        let fresh = Self::read(&self.cert_path, &self.key_path, &self.provider)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        *stamps = now;
        Ok(true)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// The CA's verifier, plus the revocation list, remembering what it was shown.
struct DeviceVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    security: Arc<Security>,
    shown: Arc<Mutex<Option<Presented>>>,
}

impl std::fmt::Debug for DeviceVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceVerifier").finish_non_exhaustive()
    }
}

impl ClientCertVerifier for DeviceVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let presented = Presented::parse(end_entity);
        *self.shown.lock().unwrap_or_else(|e| e.into_inner()) = presented.clone();
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        match presented {
            Some(p) if p.device.is_some() && !self.security.is_revoked(&p.serial) => Ok(verified),
            Some(p) if p.device.is_some() => {
                Err(rustls::Error::InvalidCertificate(CertificateError::Revoked))
            }
            _ => Err(rustls::Error::InvalidCertificate(
                CertificateError::BadEncoding,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The device whose certificate opened a connection.
pub struct Identity {
    pub device: String,
    pub serial: String,
    /// Fires when the server wants the connection closed (revoked, or taken over).
    pub close: oneshot::Receiver<Close>,
    _guard: LiveGuard,
}

/// Accepts device connections.
pub struct DeviceTls {
    client_verifier: Arc<dyn ClientCertVerifier>,
    cert: Arc<ReloadingCert>,
    security: Arc<Security>,
}

impl DeviceTls {
    /// Client certificates must chain to `client_ca`; the server presents `cert`.
    pub fn new(
        client_ca: &Path,
        cert: Arc<ReloadingCert>,
        security: Arc<Security>,
    ) -> Result<Self, TlsError> {
        Ok(Self {
            client_verifier: client_verifier(client_ca, false)?,
            cert,
            security,
        })
    }

    pub fn server_cert(&self) -> &Arc<ReloadingCert> {
        &self.cert
    }

    fn config(
        &self,
        shown: Arc<Mutex<Option<Presented>>>,
    ) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        let verifier = Arc::new(DeviceVerifier {
            inner: Arc::clone(&self.client_verifier),
            security: Arc::clone(&self.security),
            shown,
        });
        Ok(Arc::new(server_config(verifier, Arc::clone(&self.cert))?))
    }

    /// The TLS handshake and the device's identity; a refusal is recorded as a security event.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> io::Result<(TlsStream<TcpStream>, Identity)> {
        let shown = Arc::new(Mutex::new(None));
        let config = self.config(Arc::clone(&shown)).map_err(io::Error::other)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
        let shown = shown.lock().unwrap_or_else(|e| e.into_inner()).take();
        let sec = &self.security;
        let now = sec.now_ms();
        let stream = match handshake {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let (kind, detail) = classify(&e, shown.as_ref());
                let device = shown.as_ref().and_then(|p| p.device.as_deref());
                sec.events.record(now, kind, device, Some(peer), detail);
                return Err(e);
            }
            Err(_) => {
                sec.events.record(
                    now,
                    Kind::TlsHandshakeFailed,
                    None,
                    Some(peer),
                    "no TLS handshake within 10 s",
                );
                return Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake"));
            }
        };
        let presented = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| Presented::parse(c));
        let Some(Presented {
            device: Some(device),
            serial,
            not_after_ms,
            ..
        }) = presented
        else {
            return Err(io::Error::other(
                "no client certificate after the handshake",
            ));
        };
        let (id, close, previous) = sec.live.register(&serial, &device, peer);
        if let Some(old) = previous {
            sec.events.record(
                now,
                Kind::CertificateShared,
                Some(&device),
                Some(peer),
                format!(
                    "certificate {serial} connected from {peer} while in use from {old}{}; the newer connection takes over",
                    if old.ip() == peer.ip() { " (same host)" } else { "" }
                ),
            );
        }
        sec.check_expiry(&device, &serial, not_after_ms, Some(peer));
        Ok((
            stream,
            Identity {
                device,
                serial: serial.clone(),
                close,
                _guard: LiveGuard {
                    security: Arc::clone(sec),
                    serial,
                    id,
                },
            },
        ))
    }
}

/// The event kind and detail of a failed handshake.
fn classify(e: &io::Error, shown: Option<&Presented>) -> (Kind, String) {
    let cert = |p: Option<&Presented>| {
        p.map_or_else(String::new, |p| {
            format!(
                " (certificate {} of {:?}, issuer {})",
                p.serial,
                p.device.as_deref().unwrap_or("?"),
                p.issuer
            )
        })
    };
    let rustls_error = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::NoCertificatesPresented) => (
            Kind::NoClientCertificate,
            "no client certificate presented".to_owned(),
        ),
        Some(rustls::Error::InvalidCertificate(c)) => match c {
            CertificateError::UnknownIssuer
            | CertificateError::BadSignature
            | CertificateError::UnhandledCriticalExtension => (
                Kind::UnknownCa,
                format!("certificate not signed by this CA{}", cert(shown)),
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => (
                Kind::CertificateExpired,
                format!("certificate expired{}", cert(shown)),
            ),
            CertificateError::Revoked => (
                Kind::CertificateRevoked,
                format!(
                    "revoked certificate refused at the handshake{}",
                    cert(shown)
                ),
            ),
            other => (
                Kind::TlsHandshakeFailed,
                format!("invalid client certificate: {other:?}{}", cert(shown)),
            ),
        },
        Some(other) => (Kind::TlsHandshakeFailed, format!("TLS handshake: {other}")),
        None => (Kind::TlsHandshakeFailed, format!("TLS handshake: {e}")),
    }
}
