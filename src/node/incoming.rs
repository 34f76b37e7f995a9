//! Accepting connections on the gRPC port, in TLS when `raft.tls` is set.
//!
//! ```text
//!  accept ──▶ peek the first byte (≤ HANDSHAKE_TIMEOUT)
//!    0x16, a TLS ClientHello ─┬─ raft.tls set ──▶ handshake ──▶ served
//!                             └─ plain port ────▶ logged, closed
//!    anything else (HTTP/2) ──┬─ plain port ────▶ served
//!                             └─ raft.tls set ──▶ served, but every call
//!                                 answers UNAUTHENTICATED with the reason
//! ```
//!
//! Both mix-ups of a TLS and a plain-text node are logged here, once per
//! period and address, in words that say which setting to fix; a
//! plain-text peer or `pgkeelctl` also reads the reason in its answer.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::consensus::throttle::Throttle;

/// How long a client has to send its first bytes and finish a handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause after an accept error that is not the client's (e.g. out of
/// file descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// The first byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE: u8 = 0x16;
/// The largest TLS record (2^14 bytes plus expansion).
const MAX_RECORD: usize = 16 * 1024 + 2048;

/// The server side of `raft.tls`; never built without the `tls` feature.
#[cfg(feature = "tls")]
pub type Acceptor = tokio_rustls::TlsAcceptor;
#[cfg(not(feature = "tls"))]
pub type Acceptor = std::convert::Infallible;

/// What the router learns about the connection a call came on.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The client's address, for whoever handles the call to name it.
    pub remote: SocketAddr,
    /// A plain-text client on a TLS port: its calls are refused.
    pub plain_on_tls: bool,
}

impl ConnInfo {
    /// The answer to every call on a plain-text connection to a TLS port.
    pub fn refusal() -> tonic::Status {
        tonic::Status::unauthenticated(
            "this node's gRPC port speaks TLS only (raft.tls is set) and this connection is plain text — pgkeelctl: pass --cacert (and --cert/--key when raft.tls.verify_client is on); a peer: set the same raft.tls on every node",
        )
    }
}

enum Io {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// One accepted connection, in TLS or not.
pub struct Conn {
    io: Io,
    info: ConnInfo,
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

macro_rules! delegate {
    ($self:ident, $io:ident => $e:expr) => {
        match &mut $self.get_mut().io {
            Io::Plain($io) => {
                let $io = Pin::new($io);
                $e
            }
            #[cfg(feature = "tls")]
            Io::Tls($io) => {
                let $io = Pin::new($io.as_mut());
                $e
            }
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, io => io.poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, io => io.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, io => io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, io => io.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, io => io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(io) => io.is_write_vectored(),
            #[cfg(feature = "tls")]
            Io::Tls(io) => io.is_write_vectored(),
        }
    }
}

/// The connections accepted on `listener`, each classified (and in TLS,
/// handshaken) in its own task so a slow client holds up no other. The
/// accept loop ends when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Acceptor>,
) -> ReceiverStream<Result<Conn, io::Error>> {
    let (tx, rx) = mpsc::channel(16);
    let logged = Arc::new(Throttle::default());
    let tls = tls.map(Arc::new);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) if client_error(&e) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "gRPC: accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let (tx, tls, logged) = (tx.clone(), tls.clone(), logged.clone());
            tokio::spawn(async move {
                if let Some(conn) = classify(tcp, remote, tls.as_deref(), &logged).await {
                    let _ = tx.send(Ok(conn)).await;
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Looks at the first byte and decides how to serve the connection;
/// `None` when it is closed instead.
async fn classify(
    tcp: TcpStream,
    remote: SocketAddr,
    tls: Option<&Acceptor>,
    logged: &Throttle<(std::net::IpAddr, &'static str)>,
) -> Option<Conn> {
    let _ = tcp.set_nodelay(true);
    let mut first = [0u8; 1];
    let speaks_tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await {
        Ok(Ok(1)) => first[0] == TLS_HANDSHAKE,
        // Closed, failed or silent: nothing to serve.
        _ => return None,
    };
    let plain = |tcp, plain_on_tls| Conn {
        io: Io::Plain(tcp),
        info: ConnInfo {
            remote,
            plain_on_tls,
        },
    };
    match (tls, speaks_tls) {
        (None, false) => Some(plain(tcp, false)),
        (None, true) => {
            if logged.ready((remote.ip(), "tls-on-plain")) {
                tracing::warn!(%remote, "a TLS client dialed this plain-text gRPC port and was closed: set raft.tls on this node as on the others (or drop --cacert from pgkeelctl)");
            }
            close_after_hello(tcp).await;
            None
        }
        (Some(_), false) => {
            if logged.ready((remote.ip(), "plain-on-tls")) {
                tracing::warn!(%remote, "a plain-text client dialed this TLS gRPC port (raft.tls is set); its calls are refused: set the same raft.tls on every node, and give pgkeelctl --cacert");
            }
            Some(plain(tcp, true))
        }
        #[cfg(feature = "tls")]
        (Some(acceptor), true) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => Some(Conn {
                    io: Io::Tls(Box::new(stream)),
                    info: ConnInfo {
                        remote,
                        plain_on_tls: false,
                    },
                }),
                Ok(Err(e)) => {
                    let (kind, reason) = crate::tls::describe_refused_client(&e);
                    if logged.ready((remote.ip(), kind)) {
                        tracing::warn!(%remote, "refused a TLS connection: {reason}");
                    }
                    None
                }
                Err(_) => {
                    tracing::debug!(%remote, "gRPC: TLS handshake timed out");
                    None
                }
            }
        }
        #[cfg(not(feature = "tls"))]
        (Some(never), true) => match *never {},
    }
}

/// Reads the client's first TLS record (its ClientHello) and closes
/// cleanly: the client then reads an end of file in its handshake, which
/// it can tell apart from a crash, instead of the reset that closing on
/// unread data would send.
async fn close_after_hello(mut tcp: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let drain = async {
        let mut header = [0u8; 5];
        tcp.read_exact(&mut header).await?;
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let mut record = vec![0u8; len.min(MAX_RECORD)];
        tcp.read_exact(&mut record).await?;
        tcp.shutdown().await
    };
    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, drain).await;
}

/// Accept errors that concern one client only; the next accept may succeed.
pub(crate) fn client_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
