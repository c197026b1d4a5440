//! Where connections come from. A [`Listener`] accepts an [`Incoming`] connection cheaply;
//! [`Incoming::establish`] then does whatever handshake the transport needs (none for plain
//! TCP; the mutual-TLS handshake on the devices' TLS listener) inside the connection's own
//! task, so a slow handshake never holds up the accept loop. Protocol code sees only a
//! [`Connection`], and on TLS the device [`Identity`] its certificate proved.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::security::tls::{DeviceTls, Identity};

/// A byte stream to a peer, whatever the transport.
pub trait Connection: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Connection for T {}

/// A bound listening socket.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<Arc<DeviceTls>>,
}

/// An accepted socket, not yet ready for protocol traffic.
pub struct Incoming {
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<DeviceTls>>,
}

/// A connection ready for protocol traffic.
pub struct Established {
    pub stream: Box<dyn Connection>,
    pub peer: SocketAddr,
    /// The device a client certificate proved (TLS listener only).
    pub identity: Option<Identity>,
}

impl Listener {
    /// Plain TCP.
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        Ok(Self {
            tcp: TcpListener::bind(addr).await?,
            tls: None,
        })
    }

    /// Mutual TLS: every connection must prove a device certificate.
    pub async fn bind_tls(addr: SocketAddr, tls: Arc<DeviceTls>) -> io::Result<Self> {
        Ok(Self {
            tcp: TcpListener::bind(addr).await?,
            tls: Some(tls),
        })
    }

    pub fn from_tcp(tcp: TcpListener) -> Self {
        Self { tcp, tls: None }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    pub async fn accept(&self) -> io::Result<Incoming> {
        let (tcp, peer) = self.tcp.accept().await?;
        Ok(Incoming {
            tcp,
            peer,
            tls: self.tls.clone(),
        })
    }
}

impl Incoming {
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether establishing it takes a TLS handshake.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Completes the transport's handshake (a refused TLS handshake is a security event).
    pub async fn establish(self) -> io::Result<Established> {
        self.tcp.set_nodelay(true)?;
        match self.tls {
            None => Ok(Established {
                stream: Box::new(self.tcp),
                peer: self.peer,
                identity: None,
            }),
            Some(tls) => {
                let (stream, identity) = tls.accept(self.tcp, self.peer).await?;
                Ok(Established {
                    stream: Box::new(stream),
                    peer: self.peer,
                    identity: Some(identity),
                })
            }
        }
    }
}
