//! HTTPS: the same API, ingest, enrolment and dashboard as the plaintext listener, over TLS
//! 1.2+ with the server certificate (`--https-listen`; the certificate is the one the MQTT TLS
//! listener presents and is reloaded when its files change). No client certificate is asked
//! for: operators log in, automation sends tokens, devices enrol with their token.
//!
//! Each handshake runs in its own task under a deadline, at most [`MAX_HANDSHAKES`] at once, so
//! a slow or silent client holds up nobody; finished handshakes queue for the HTTP server.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::ResolvesServerCert;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::security::tls::{ReloadingCert, provider};

/// Longest a client may take over its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait to be accepted.
pub const MAX_HANDSHAKES: usize = 256;

/// Connections whose handshake is done, for `axum::serve`.
#[derive(Debug)]
pub struct HttpsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

/// The TLS settings: TLS 1.3 and 1.2, HTTP/1.1, no client certificate, no session resumption
/// state kept on the server.
fn server_config(cert: Arc<ReloadingCert>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(cert as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl HttpsListener {
    /// Starts accepting on `tcp` until `shutdown` fires.
    pub fn start(
        tcp: TcpListener,
        cert: Arc<ReloadingCert>,
        mut shutdown: watch::Receiver<bool>,
    ) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(server_config(cert).map_err(io::Error::other)?);
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
                tokio::spawn(async move {
                    let done = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    match done.await {
                        Ok(Ok(tls)) => {
                            drop(slot);
                            let _ = tx.send((tls, peer)).await;
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
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // Shut down: no more connections, ever.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
