//! HTTPS: the same API, ingest, enrolment and dashboard as the plaintext listener, over TLS
//! 1.2+ with the server certificate (`--https-listen`; the certificate is the one the MQTT TLS
//! listener presents and is reloaded when its files change). A client certificate of the
//! built-in CA is asked for but optional: operators log in, automation sends tokens, devices
//! enrol with their token — and HTTP ingest over HTTPS takes a batch only from the device whose
//! (unrevoked) certificate opened the connection ([`DeviceCert`], checked by the handler).
//!
//! Each handshake runs in its own task under a deadline, at most [`MAX_HANDSHAKES`] at once, so
//! a slow or silent client holds up nobody; finished handshakes queue for the HTTP server.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::serve::IncomingStream;
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::security::Security;
use crate::security::tls::{self, Presented, ReloadingCert};

/// Longest a client may take over its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait to be accepted.
pub const MAX_HANDSHAKES: usize = 256;

/// Who is at the other end of an HTTPS connection.
#[derive(Debug, Clone)]
pub struct HttpsPeer {
    pub addr: SocketAddr,
    /// The device of the client certificate, when one of the built-in CA's, unrevoked, was
    /// presented.
    pub device: Option<String>,
}

/// In a request's extensions when it came over HTTPS: the device its certificate names, if any.
#[derive(Debug, Clone)]
pub struct DeviceCert(pub Option<String>);

impl Connected<IncomingStream<'_, HttpsListener>> for HttpsPeer {
    fn connect_info(stream: IncomingStream<'_, HttpsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Puts an HTTPS request's peer where every handler looks for it (`ConnectInfo<SocketAddr>`),
/// and its certificate's device beside it ([`DeviceCert`]).
pub async fn peer_info(mut req: Request) -> Request {
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<HttpsPeer>>().cloned() {
        req.extensions_mut().insert(ConnectInfo(peer.addr));
        req.extensions_mut().insert(DeviceCert(peer.device));
    }
    req
}

/// Connections whose handshake is done, for `axum::serve`.
#[derive(Debug)]
pub struct HttpsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, HttpsPeer)>,
    local: SocketAddr,
}

/// The TLS settings: the server's shared ones ([`tls::server_config`]), a client certificate
/// of `client_ca` asked for but optional, and HTTP/1.1.
fn server_config(
    cert: Arc<ReloadingCert>,
    client_ca: Option<&std::path::Path>,
) -> Result<Arc<rustls::ServerConfig>, io::Error> {
    let verifier = match client_ca {
        Some(ca) => tls::client_verifier(ca, true).map_err(io::Error::other)?,
        None => WebPkiClientVerifier::no_client_auth(),
    };
    let mut config = tls::server_config(verifier, cert).map_err(io::Error::other)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The device of the connection's client certificate, unless there is none or it is revoked.
fn device_of(tls: &TlsStream<TcpStream>, security: &Security) -> Option<String> {
    let der = tls.get_ref().1.peer_certificates()?.first()?;
    let presented = Presented::parse(der)?;
    if security.is_revoked(&presented.serial) {
        return None;
    }
    presented.device
}

impl HttpsListener {
    /// Starts accepting on `tcp` until `shutdown` fires. Client certificates are checked
    /// against the CA of `security` when it has one.
    pub fn start(
        tcp: TcpListener,
        cert: Arc<ReloadingCert>,
        security: Arc<Security>,
        mut shutdown: watch::Receiver<bool>,
    ) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let client_ca = security.ca.as_ref().map(|ca| ca.ca_cert_path());
        let acceptor = TlsAcceptor::from(server_config(cert, client_ca.as_deref())?);
        let (tx, ready) = mpsc::channel(MAX_HANDSHAKES);
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                let (stream, peer) = tokio::select! {
                    _ = shutdown.changed() => return,
                    accepted = tcp.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "HTTPS accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                let security = Arc::clone(&security);
                tokio::spawn(async move {
                    let done = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    match done.await {
                        Ok(Ok(tls)) => {
                            drop(slot);
                            let device = device_of(&tls, &security);
                            let _ = tx.send((tls, HttpsPeer { addr: peer, device })).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTPS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "HTTPS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = HttpsPeer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // Shut down: no more connections, ever.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<HttpsPeer> {
        Ok(HttpsPeer {
            addr: self.local,
            device: None,
        })
    }
}
