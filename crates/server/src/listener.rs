//! Where connections come from. A [`Listener`] accepts an [`Incoming`] connection cheaply;
//! [`Incoming::establish`] then does whatever handshake the transport needs (none for plain
//! TCP; the TLS handshake once TLS is configured) inside the connection's own task, so a slow
//! handshake never holds up the accept loop. Protocol code sees only a [`Connection`].

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// A byte stream to a peer, whatever the transport.
pub trait Connection: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Connection for T {}

/// A bound listening socket.
pub struct Listener {
    tcp: TcpListener,
}

/// An accepted socket, not yet ready for protocol traffic.
pub struct Incoming {
    tcp: TcpStream,
    peer: SocketAddr,
}

/// A connection ready for protocol traffic.
pub struct Established {
    pub stream: Box<dyn Connection>,
    pub peer: SocketAddr,
}

impl Listener {
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        Ok(Self {
            tcp: TcpListener::bind(addr).await?,
        })
    }

    pub fn from_tcp(tcp: TcpListener) -> Self {
        Self { tcp }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    pub async fn accept(&self) -> io::Result<Incoming> {
        let (tcp, peer) = self.tcp.accept().await?;
        Ok(Incoming { tcp, peer })
    }
}

impl Incoming {
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Completes the transport's handshake.
    pub async fn establish(self) -> io::Result<Established> {
        self.tcp.set_nodelay(true)?;
        Ok(Established {
            stream: Box::new(self.tcp),
            peer: self.peer,
        })
    }
}
