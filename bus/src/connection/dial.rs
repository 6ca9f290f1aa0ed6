//! How a connection gets its byte stream. TCP by default; a [`Dialer`] replaces it, so an
//! in-process fake broker (or a test proxy) can serve the real client over an in-memory pipe,
//! deterministically and in virtual time, and the security layer can wrap what it returns.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

/// A duplex byte stream a connection can run over: a TCP socket, a TLS stream, a test pipe.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// A boxed [`Transport`].
pub type BoxTransport = Box<dyn Transport>;

/// The future a [`Dial`] returns.
pub type DialFuture<'a> = Pin<Box<dyn Future<Output = io::Result<BoxTransport>> + Send + 'a>>;

/// Opens a byte stream to `host:port`. Implement it to route connections somewhere other than
/// the operating system's TCP stack.
pub trait Dial: Send + Sync + 'static {
    fn dial<'a>(&'a self, addr: &'a str) -> DialFuture<'a>;
}

/// A shareable [`Dial`], set on [`ConnectionConfig::dialer`](super::ConnectionConfig::dialer).
#[derive(Clone)]
pub struct Dialer(Arc<dyn Dial>);

impl Dialer {
    pub fn new(dial: impl Dial) -> Dialer {
        Dialer(Arc::new(dial))
    }

    pub fn dial<'a>(&'a self, addr: &'a str) -> DialFuture<'a> {
        self.0.dial(addr)
    }
}

impl fmt::Debug for Dialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dialer(custom)")
    }
}
