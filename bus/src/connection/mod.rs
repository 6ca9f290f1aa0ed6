//! One connection to one broker. A writer task owns the socket's write half and a reader task
//! owns the read half; callers only enqueue whole frames and await their own response, so a
//! cancelled caller can never leave half a request on the wire (cancel safety), and requests
//! pipeline freely.
//!
//! Invariants:
//! - Correlation ids are assigned and registered under one lock, in the order frames are
//!   enqueued, so the reader can match every response.
//! - Once the connection fails, it stays failed: every in-flight and later request gets the
//!   same shared cause.

mod config;

pub use config::ConnectionConfig;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use kafka_proto::envelope::{decode_response, encode_request, peek_correlation_id};
use kafka_proto::messages::ApiVersionsRequest;
use kafka_proto::version::BrokerVersions;
use kafka_proto::{ApiKey, ErrorCode, FrameSplitter, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::error::{ConnectionFailure, RequestError};

type Reply = Result<Bytes, Arc<ConnectionFailure>>;

/// Bytes of room made in the receive buffer before each socket read.
const READ_SIZE: usize = 64 * 1024;

/// Locks the shared state. A panic elsewhere while holding the lock leaves the state usable
/// (every update to it is a single assignment or map operation), so poisoning is ignored.
fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// Size prefix (4), api key (2), api version (2), then the correlation id.
const CORRELATION_ID_OFFSET: usize = 8;

struct Shared {
    next_correlation_id: i32,
    in_flight: HashMap<i32, oneshot::Sender<Reply>>,
    failed: Option<Arc<ConnectionFailure>>,
}

impl Shared {
    fn fail(&mut self, cause: ConnectionFailure) -> Arc<ConnectionFailure> {
        let cause = self.failed.get_or_insert_with(|| Arc::new(cause)).clone();
        for (_, tx) in self.in_flight.drain() {
            let _ = tx.send(Err(cause.clone()));
        }
        cause
    }
}

/// A connection to one broker, cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Connection {
    addr: Arc<str>,
    config: Arc<ConnectionConfig>,
    shared: Arc<Mutex<Shared>>,
    outbound: mpsc::Sender<Bytes>,
    versions: Arc<BrokerVersions>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects over TCP and learns the broker's API versions.
    pub async fn connect(addr: &str, config: ConnectionConfig) -> Result<Connection, RequestError> {
        let stream = tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| RequestError::Timeout(config.connect_timeout))?
            .map_err(|e| RequestError::Connect {
                addr: addr.to_string(),
                source: Arc::new(e),
            })?;
        let _ = stream.set_nodelay(true);
        Connection::handshake(stream, addr, config).await
    }

    /// Runs the connection over any byte stream (a test peer, a TLS stream) and performs the
    /// ApiVersions handshake.
    pub async fn handshake<S>(
        stream: S,
        addr: &str,
        config: ConnectionConfig,
    ) -> Result<Connection, RequestError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let mut conn = Connection::start(stream, addr, config);
        conn.versions = Arc::new(conn.api_versions().await?);
        Ok(conn)
    }

    fn start<S>(stream: S, addr: &str, config: ConnectionConfig) -> Connection
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(stream);
        let shared = Arc::new(Mutex::new(Shared {
            next_correlation_id: 0,
            in_flight: HashMap::new(),
            failed: None,
        }));
        let (tx, rx) = mpsc::channel(config.max_in_flight_frames);
        tokio::spawn(write_loop(write, rx, shared.clone()));
        tokio::spawn(read_loop(read, shared.clone(), config.max_frame_size));
        Connection {
            addr: addr.into(),
            config: Arc::new(config),
            shared,
            outbound: tx,
            versions: Arc::new(BrokerVersions::default()),
        }
    }

    /// ApiVersions at the highest version we speak; a broker that does not know that version
    /// answers UNSUPPORTED_VERSION in v0 form with its own range (KIP-511), and we retry with it.
    async fn api_versions(&self) -> Result<BrokerVersions, RequestError> {
        let mut req = ApiVersionsRequest::default();
        req.client_software_name = self.config.client_software_name.clone();
        req.client_software_version = self.config.client_software_version.clone();
        let ours = kafka_proto::version::client_versions(ApiKey::ApiVersions)?;
        let mut version = ours.max;
        loop {
            let resp = self.send_at(&req, version).await?;
            let code = ErrorCode::from_code(resp.error_code);
            let versions = BrokerVersions::from_response(&resp);
            if code == ErrorCode::UnsupportedVersion {
                let usable = versions
                    .get(ApiKey::ApiVersions)
                    .and_then(|b| b.intersect(&ours));
                if let Some(v) = usable.filter(|v| v.max < version) {
                    version = v.max;
                    continue;
                }
                return Err(kafka_proto::VersionError::NotSupportedByBroker {
                    api: ApiKey::ApiVersions,
                    ours,
                    broker: versions.get(ApiKey::ApiVersions),
                }
                .into());
            }
            return Ok(versions);
        }
    }

    /// What the broker said it supports.
    pub fn broker_versions(&self) -> &BrokerVersions {
        &self.versions
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `req` at the highest version both sides speak (or the configured pin) and
    /// returns the typed response.
    pub async fn send<R: Request>(&self, req: &R) -> Result<R::Response, RequestError> {
        let version = self.version_for::<R>()?;
        self.send_at(req, version).await
    }

    /// The version `send` would use for `R`.
    pub fn version_for<R: Request>(&self) -> Result<i16, RequestError> {
        Ok(self.versions.negotiate(
            R::API_KEY,
            self.config.version_pins.get(&R::API_KEY).copied(),
        )?)
    }

    /// Sends `req` at exactly `version`.
    pub async fn send_at<R: Request>(
        &self,
        req: &R,
        version: i16,
    ) -> Result<R::Response, RequestError> {
        let (tx, rx) = oneshot::channel();
        // Encode outside the lock (a Produce request can be megabytes), then take an id and
        // patch it in: it sits at a fixed offset in every request header version.
        let mut frame = BytesMut::new();
        encode_request(
            &mut frame,
            version,
            0,
            self.config.client_id.as_deref(),
            req,
        )?;
        let correlation_id;
        {
            let mut shared = lock(&self.shared);
            if let Some(cause) = &shared.failed {
                return Err(self.closed(cause.clone()));
            }
            correlation_id = shared.next_correlation_id;
            shared.next_correlation_id = shared.next_correlation_id.wrapping_add(1);
            shared.in_flight.insert(correlation_id, tx);
        }
        frame[CORRELATION_ID_OFFSET..CORRELATION_ID_OFFSET + 4]
            .copy_from_slice(&correlation_id.to_be_bytes());
        let guard = InFlightGuard {
            shared: &self.shared,
            correlation_id,
        };
        if self.outbound.send(frame.freeze()).await.is_err() {
            let cause = lock(&self.shared).fail(ConnectionFailure::Dropped);
            return Err(self.closed(cause));
        }
        let reply = match tokio::time::timeout(self.config.request_timeout, rx).await {
            Err(_) => return Err(RequestError::Timeout(self.config.request_timeout)),
            Ok(Err(_)) => Err(Arc::new(ConnectionFailure::Dropped)),
            Ok(Ok(reply)) => reply,
        };
        std::mem::forget(guard);
        let frame = reply.map_err(|cause| self.closed(cause))?;
        let (_header, body) = decode_response::<R::Response>(frame, version).inspect_err(|e| {
            // A body we cannot parse means we may be out of step with the peer.
            lock(&self.shared).fail(ConnectionFailure::Frame(e.clone()));
        })?;
        Ok(body)
    }

    fn closed(&self, cause: Arc<ConnectionFailure>) -> RequestError {
        RequestError::ConnectionClosed {
            addr: self.addr.to_string(),
            cause,
        }
    }

    /// True once the connection has failed; a client should open a new one.
    pub fn is_closed(&self) -> bool {
        lock(&self.shared).failed.is_some()
    }

    /// Requests registered and not yet answered.
    pub fn in_flight(&self) -> usize {
        lock(&self.shared).in_flight.len()
    }
}

/// Forgets a request whose caller gave up (timeout or cancellation) so a late response is
/// dropped instead of leaking its slot.
struct InFlightGuard<'a> {
    shared: &'a Mutex<Shared>,
    correlation_id: i32,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        lock(self.shared).in_flight.remove(&self.correlation_id);
    }
}

async fn write_loop<W: AsyncWrite>(
    write: W,
    mut rx: mpsc::Receiver<Bytes>,
    shared: Arc<Mutex<Shared>>,
) {
    tokio::pin!(write);
    while let Some(frame) = rx.recv().await {
        if let Err(e) = write.write_all(&frame).await {
            lock(&shared).fail(ConnectionFailure::Io(e));
            return;
        }
        // Flush only when no further frame is queued, so pipelined requests share a syscall.
        if rx.is_empty()
            && let Err(e) = write.flush().await
        {
            lock(&shared).fail(ConnectionFailure::Io(e));
            return;
        }
    }
    let _ = write.shutdown().await;
}

async fn read_loop<R: AsyncRead>(read: R, shared: Arc<Mutex<Shared>>, max_frame_size: usize) {
    tokio::pin!(read);
    let mut splitter = FrameSplitter::with_max_frame_size(max_frame_size);
    loop {
        loop {
            match splitter.next_frame() {
                Ok(Some(frame)) => {
                    let mut s = lock(&shared);
                    let Some(id) = peek_correlation_id(&frame) else {
                        s.fail(ConnectionFailure::Frame(
                            kafka_proto::DecodeError::UnexpectedEof {
                                needed: 4,
                                remaining: frame.len(),
                            },
                        ));
                        return;
                    };
                    match s.in_flight.remove(&id) {
                        Some(tx) => {
                            let _ = tx.send(Ok(frame));
                        }
                        // Timed-out requests were forgotten; anything else is a protocol breach.
                        None if id < s.next_correlation_id && id >= 0 => {}
                        None => {
                            s.fail(ConnectionFailure::UnknownCorrelationId(id));
                            return;
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    lock(&shared).fail(ConnectionFailure::Frame(e));
                    return;
                }
            }
        }
        // Straight into the splitter's buffer: one copy from the socket, none after it.
        match read.read_buf(splitter.recv_buffer(READ_SIZE)).await {
            Ok(0) => {
                lock(&shared).fail(ConnectionFailure::Eof);
                return;
            }
            Ok(_) => {}
            Err(e) => {
                lock(&shared).fail(ConnectionFailure::Io(e));
                return;
            }
        }
    }
}
