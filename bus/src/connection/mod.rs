//! One connection to one broker. The protocol state (correlation ids, the in-flight set,
//! deadlines, throttling, frame splitting) lives in the sans-IO [`ConnectionState`]; this module
//! only moves bytes between it and the socket and wakes the callers waiting on it:
//! - a writer task writes the frames the state releases (none while the broker throttles us);
//! - a reader task reads straight into the state's receive buffer and delivers each reply;
//! - a timer task expires requests at the deadlines the state reports.
//!
//! Callers enqueue whole frames under one lock and await their own reply, so a cancelled caller
//! never leaves half a request on the wire (cancel safety), and requests pipeline freely.
//! Once the connection fails it stays failed: every in-flight and later request gets the same
//! shared cause, and the client opens a new connection.
//!
//! Security (see [`crate::security`]): TLS wraps the dialed stream before anything is sent;
//! SASL runs after ApiVersions as ordinary requests. Callers' requests pass a gate (a read
//! lock) that re-authentication takes exclusively, so no request goes out mid-exchange.

mod config;
pub mod dial;
pub mod state;

pub use config::ConnectionConfig;
pub use dial::{BoxTransport, Dial, DialFuture, Dialer, Transport};
pub use state::{ConnectionState, Event};

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_proto::envelope::{decode_response, encode_request};
use kafka_proto::messages::ApiVersionsRequest;
use kafka_proto::version::BrokerVersions;
use kafka_proto::{ApiKey, ErrorCode, Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, RwLock, Semaphore, oneshot};

use crate::error::{ConnectionFailure, RequestError};
use crate::security::{SecurityError, TlsConfig, sasl, tls};

/// How a request ended, as the tasks tell the waiting caller.
enum Outcome {
    Frame(Bytes),
    TimedOut,
    Failed(Arc<ConnectionFailure>),
}

/// Bytes of room made in the receive buffer before each socket read.
const READ_SIZE: usize = 64 * 1024;

/// The tokio clock (virtual under a paused test runtime) as the std instant the state speaks.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Locks the shared state. Every update under the lock leaves the state consistent before any
/// call that could panic, so a poisoned lock is still usable.
fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

struct Shared {
    state: ConnectionState,
    waiters: HashMap<i32, oneshot::Sender<Outcome>>,
}

impl Shared {
    /// Hands every outcome the state produced to its waiter.
    fn dispatch(&mut self) {
        while let Some(event) = self.state.poll_event() {
            let (id, outcome) = match event {
                Event::Response {
                    correlation_id,
                    frame,
                } => (correlation_id, Outcome::Frame(frame)),
                Event::TimedOut { correlation_id } => (correlation_id, Outcome::TimedOut),
                Event::Failed {
                    correlation_id,
                    cause,
                } => (correlation_id, Outcome::Failed(cause)),
            };
            if let Some(tx) = self.waiters.remove(&id) {
                let _ = tx.send(outcome);
            }
        }
    }

    fn fail(&mut self, cause: ConnectionFailure) -> Arc<ConnectionFailure> {
        let cause = self.state.fail(cause);
        self.dispatch();
        cause
    }
}

/// Wakes the connection's tasks.
struct Wakers {
    writer: Notify,
    timer: Notify,
}

/// Fails the connection from outside its tasks (a close, a drop, a failed re-authentication)
/// and wakes the writer and the timer so they see it and end.
fn fail_and_wake(shared: &Mutex<Shared>, wakers: &Wakers, cause: ConnectionFailure) {
    lock(shared).fail(cause);
    wakers.writer.notify_one();
    wakers.timer.notify_one();
}

/// A connection to one broker, cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Connection {
    addr: Arc<str>,
    config: Arc<ConnectionConfig>,
    shared: Arc<Mutex<Shared>>,
    wakers: Arc<Wakers>,
    permits: Arc<Semaphore>,
    versions: Arc<BrokerVersions>,
    /// Frames written to the socket so far (the writer publishes it after each write).
    written: tokio::sync::watch::Sender<u64>,
    /// Held shared by every caller's request, exclusively while re-authenticating. Only SASL
    /// connections re-authenticate, so only they have one: plain and TLS connections take no
    /// lock per request.
    gate: Option<Arc<RwLock<()>>>,
    _closer: Arc<CloseOnDrop>,
}

/// Closes the socket when the last handle to the connection goes away; the tasks hold the
/// shared state too, so without this an unused connection would stay open forever.
struct CloseOnDrop {
    shared: Arc<Mutex<Shared>>,
    wakers: Arc<Wakers>,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        fail_and_wake(&self.shared, &self.wakers, ConnectionFailure::Dropped);
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects (over TCP, or through the configured [`Dialer`]) and learns the broker's API
    /// versions.
    pub async fn connect(addr: &str, config: ConnectionConfig) -> Result<Connection, RequestError> {
        check_security(addr, &config)?;
        let dial = async {
            match &config.dialer {
                Some(dialer) => dialer.dial(addr).await,
                None => {
                    let stream = TcpStream::connect(addr).await?;
                    let _ = stream.set_nodelay(true);
                    Ok(Box::new(stream) as BoxTransport)
                }
            }
        };
        let mut stream = tokio::time::timeout(config.connect_timeout, dial)
            .await
            .map_err(|_| RequestError::Timeout(config.connect_timeout))?
            .map_err(|e| RequestError::Connect {
                addr: addr.to_string(),
                source: Arc::new(e),
            })?;
        if config.security.protocol.uses_tls() {
            /// The settings of TLS without an `ssl` table, one for the process: the system CA
            /// bundle is then read and parsed once, not on every dial.
            static DEFAULT_TLS: LazyLock<TlsConfig> = LazyLock::new(TlsConfig::default);
            let tls_config = config.security.tls.as_ref().unwrap_or(&DEFAULT_TLS);
            let handshake = tls::connect(stream, addr, tls_config);
            stream = tokio::time::timeout(config.connect_timeout, handshake)
                .await
                .map_err(|_| RequestError::Timeout(config.connect_timeout))?
                .map_err(|e| RequestError::Security {
                    addr: addr.to_string(),
                    source: Arc::new(SecurityError::Tls(e)),
                })?;
        }
        Connection::handshake_checked(stream, addr, config).await
    }

    /// Runs the connection over any byte stream (a test peer, a TLS stream), performs the
    /// ApiVersions handshake and, when the security protocol says so, SASL authentication.
    /// The stream is used as given: with `SSL`/`SASL_SSL` the caller has done the TLS.
    pub async fn handshake<S>(
        stream: S,
        addr: &str,
        config: ConnectionConfig,
    ) -> Result<Connection, RequestError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        check_security(addr, &config)?;
        Connection::handshake_checked(stream, addr, config).await
    }

    async fn handshake_checked<S>(
        stream: S,
        addr: &str,
        config: ConnectionConfig,
    ) -> Result<Connection, RequestError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let mut conn = Connection::start(stream, addr, config);
        conn.versions = Arc::new(conn.api_versions().await?);
        if conn.config.security.protocol.uses_sasl() {
            // check_security made sure the settings are there; never skip authentication.
            let sasl = conn.config.security.sasl.as_ref().ok_or_else(|| {
                security_config_error(addr, "a SASL protocol needs sasl settings".into())
            })?;
            if let Some(lifetime) = sasl::authenticate(&conn, sasl).await? {
                tokio::spawn(reauthenticate(conn.downgrade(), lifetime));
            }
        }
        Ok(conn)
    }

    fn start<S>(stream: S, addr: &str, config: ConnectionConfig) -> Connection
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(stream);
        let shared = Arc::new(Mutex::new(Shared {
            state: ConnectionState::new(config.max_frame_size),
            waiters: HashMap::new(),
        }));
        let wakers = Arc::new(Wakers {
            writer: Notify::new(),
            timer: Notify::new(),
        });
        let written = tokio::sync::watch::Sender::new(0u64);
        tokio::spawn(write_loop(
            write,
            shared.clone(),
            wakers.clone(),
            written.clone(),
        ));
        tokio::spawn(read_loop(read, shared.clone(), wakers.clone()));
        tokio::spawn(timer_loop(Arc::downgrade(&shared), wakers.clone()));
        Connection {
            addr: addr.into(),
            _closer: Arc::new(CloseOnDrop {
                shared: shared.clone(),
                wakers: wakers.clone(),
            }),
            permits: Arc::new(Semaphore::new(config.max_in_flight_frames)),
            written,
            gate: config
                .security
                .protocol
                .uses_sasl()
                .then(|| Arc::new(RwLock::new(()))),
            config: Arc::new(config),
            shared,
            wakers,
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
            let resp = self
                .send_ungated(&req, version, self.config.request_timeout)
                .await?;
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

    /// The configured per-request timeout.
    pub fn request_timeout(&self) -> std::time::Duration {
        self.config.request_timeout
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
        self.send_at_with_timeout(req, version, self.config.request_timeout)
            .await
    }

    /// Sends `req` at exactly `version`, waiting up to `timeout` for the answer instead of the
    /// configured `request_timeout`: for requests the broker legitimately holds longer
    /// (JoinGroup waits out a whole rebalance).
    pub async fn send_at_with_timeout<R: Request>(
        &self,
        req: &R,
        version: i16,
        timeout: std::time::Duration,
    ) -> Result<R::Response, RequestError> {
        let _gate = self.pass_gate().await;
        self.send_ungated(req, version, timeout).await
    }

    /// Waits while a re-authentication holds the gate; the guard keeps the next one out until
    /// this request is answered.
    async fn pass_gate(&self) -> Option<tokio::sync::RwLockReadGuard<'_, ()>> {
        match &self.gate {
            Some(gate) => Some(gate.read().await),
            None => None,
        }
    }

    /// Sends without passing the gate: the handshakes, which run before any caller's request
    /// or while the gate is held exclusively.
    pub(crate) async fn send_ungated<R: Request>(
        &self,
        req: &R,
        version: i16,
        timeout: std::time::Duration,
    ) -> Result<R::Response, RequestError> {
        let frame = self.encode(req, version)?;
        let _permit = self.permit().await?;
        let (tx, rx) = oneshot::channel();
        let correlation_id = {
            let mut shared = lock(&self.shared);
            let id = shared
                .state
                .start_request(now(), frame, timeout)
                .map_err(|cause| self.closed(cause))?;
            shared.waiters.insert(id, tx);
            id
        };
        self.wakers.writer.notify_one();
        self.wakers.timer.notify_one();
        let guard = InFlightGuard {
            shared: &self.shared,
            correlation_id,
        };
        let outcome = rx.await;
        std::mem::forget(guard);
        let frame = match outcome {
            Ok(Outcome::Frame(frame)) => frame,
            Ok(Outcome::TimedOut) => {
                return Err(RequestError::Timeout(timeout));
            }
            Ok(Outcome::Failed(cause)) => return Err(self.closed(cause)),
            // The tasks are gone: the runtime is shutting down.
            Err(_) => return Err(self.closed(Arc::new(ConnectionFailure::Dropped))),
        };
        let (_header, body) = decode_response::<R::Response>(frame, version).inspect_err(|e| {
            // A body we cannot parse means we may be out of step with the peer.
            lock(&self.shared).fail(ConnectionFailure::Frame(e.clone()));
        })?;
        let throttle = body.throttle_time_ms();
        if throttle > 0 {
            lock(&self.shared).state.throttle(now(), throttle);
            self.wakers.timer.notify_one();
        }
        Ok(body)
    }

    /// Sends a request the broker will not answer (Produce with acks=0) and returns once the
    /// frame has been written to the socket. Waiting for the write (not just the queueing)
    /// is what lets a producer's memory bound hold with acks=0: the frame's bytes stay the
    /// caller's until they are on the wire.
    pub async fn send_oneway<R: Request>(&self, req: &R) -> Result<(), RequestError> {
        let version = self.version_for::<R>()?;
        let frame = self.encode(req, version)?;
        let _gate = self.pass_gate().await;
        let mut written = self.written.subscribe();
        let number = {
            let mut shared = lock(&self.shared);
            let id = shared
                .state
                .start_request(now(), frame, self.config.request_timeout)
                .map_err(|cause| self.closed(cause))?;
            // No reply will come, so nothing waits for one.
            shared.state.cancel(id);
            shared.state.queued_total()
        };
        self.wakers.writer.notify_one();
        let wait = written.wait_for(|&w| w >= number);
        match tokio::time::timeout(self.config.request_timeout, wait).await {
            Ok(Ok(w)) if *w != WRITER_GONE => Ok(()),
            Ok(_) => {
                let cause = lock(&self.shared)
                    .state
                    .failure()
                    .cloned()
                    .unwrap_or_else(|| Arc::new(ConnectionFailure::Dropped));
                Err(self.closed(cause))
            }
            Err(_) => Err(RequestError::Timeout(self.config.request_timeout)),
        }
    }

    fn encode<R: Request>(&self, req: &R, version: i16) -> Result<BytesMut, RequestError> {
        // Encoded outside the lock (a Produce request can be megabytes); the state patches the
        // correlation id in at a fixed offset.
        let mut frame = BytesMut::new();
        encode_request(
            &mut frame,
            version,
            0,
            self.config.client_id.as_deref(),
            req,
        )?;
        Ok(frame)
    }

    /// Bounds the requests outstanding on this connection, so a stalled broker makes callers
    /// wait instead of queueing without limit.
    async fn permit(&self) -> Result<OwnedSemaphorePermit, RequestError> {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| self.closed(Arc::new(ConnectionFailure::Dropped)))
    }

    fn closed(&self, cause: Arc<ConnectionFailure>) -> RequestError {
        RequestError::ConnectionClosed {
            addr: self.addr.to_string(),
            cause,
        }
    }

    /// A handle that does not keep the connection open (for its own background tasks).
    fn downgrade(&self) -> WeakConnection {
        WeakConnection {
            addr: self.addr.clone(),
            config: self.config.clone(),
            shared: self.shared.clone(),
            wakers: self.wakers.clone(),
            permits: self.permits.clone(),
            versions: self.versions.clone(),
            written: self.written.clone(),
            gate: self.gate.clone(),
            closer: Arc::downgrade(&self._closer),
        }
    }

    /// Whether `other` is a handle to this same connection.
    pub fn same_as(&self, other: &Connection) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// True once the connection has failed; a client should open a new one.
    pub fn is_closed(&self) -> bool {
        lock(&self.shared).state.failure().is_some()
    }

    /// Requests registered and not yet answered.
    pub fn in_flight(&self) -> usize {
        lock(&self.shared).state.in_flight()
    }

    /// Fails the connection on purpose (a client closing it, or giving up on it); every
    /// request in flight fails with [`ConnectionFailure::Dropped`].
    pub fn close(&self) {
        fail_and_wake(&self.shared, &self.wakers, ConnectionFailure::Dropped);
    }
}

/// Refuses contradictory security settings before anything is dialed or sent: a `SASL_*`
/// protocol without SASL settings must not become an unauthenticated connection, and settings
/// the protocol would not use must not be silently dropped. The client validates its whole
/// config too; this covers connections made directly.
fn check_security(addr: &str, config: &ConnectionConfig) -> Result<(), RequestError> {
    config
        .security
        .validate()
        .map_err(|m| security_config_error(addr, m))
}

fn security_config_error(addr: &str, message: String) -> RequestError {
    RequestError::Security {
        addr: addr.to_string(),
        source: Arc::new(SecurityError::Config(message)),
    }
}

/// A [`Connection`] that is gone once every caller's handle is.
struct WeakConnection {
    addr: Arc<str>,
    config: Arc<ConnectionConfig>,
    shared: Arc<Mutex<Shared>>,
    wakers: Arc<Wakers>,
    permits: Arc<Semaphore>,
    versions: Arc<BrokerVersions>,
    written: tokio::sync::watch::Sender<u64>,
    gate: Option<Arc<RwLock<()>>>,
    closer: Weak<CloseOnDrop>,
}

impl WeakConnection {
    fn upgrade(&self) -> Option<Connection> {
        Some(Connection {
            _closer: self.closer.upgrade()?,
            addr: self.addr.clone(),
            config: self.config.clone(),
            shared: self.shared.clone(),
            wakers: self.wakers.clone(),
            permits: self.permits.clone(),
            versions: self.versions.clone(),
            written: self.written.clone(),
            gate: self.gate.clone(),
        })
    }
}

/// Re-authenticates (KIP-368) before each session lifetime the broker grants runs out, with
/// the gate held so no caller's request is sent mid-exchange. A failure fails the connection
/// (the broker would close it at expiry anyway); the client then dials afresh. Ends with the
/// connection.
async fn reauthenticate(conn: WeakConnection, mut lifetime: Duration) {
    loop {
        let random = getrandom::u64().unwrap_or(0);
        tokio::time::sleep(sasl::reauth_delay(lifetime, random)).await;
        let Some(c) = conn.upgrade() else { return };
        if c.is_closed() {
            return;
        }
        let Some(sasl_config) = c.config.security.sasl.clone() else {
            return;
        };
        let Some(gate) = c.gate.clone() else { return };
        let _exclusive = gate.write().await;
        match sasl::authenticate(&c, &sasl_config).await {
            Ok(Some(next)) => lifetime = next,
            Ok(None) => return,
            Err(e) => {
                fail_and_wake(&c.shared, &c.wakers, ConnectionFailure::Reauthentication(e));
                return;
            }
        }
    }
}

/// Forgets a request whose caller gave up (cancellation) so a late response is dropped
/// instead of leaking its slot.
struct InFlightGuard<'a> {
    shared: &'a Mutex<Shared>,
    correlation_id: i32,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        let mut shared = lock(self.shared);
        shared.state.cancel(self.correlation_id);
        shared.waiters.remove(&self.correlation_id);
    }
}

/// Marks the end of writing: `send_oneway` callers still waiting learn the writer is gone.
const WRITER_GONE: u64 = u64::MAX;

async fn write_loop<W: AsyncWrite>(
    write: W,
    shared: Arc<Mutex<Shared>>,
    wakers: Arc<Wakers>,
    written: tokio::sync::watch::Sender<u64>,
) {
    write_frames(write, shared, wakers, &written).await;
    written.send_replace(WRITER_GONE);
}

async fn write_frames<W: AsyncWrite>(
    write: W,
    shared: Arc<Mutex<Shared>>,
    wakers: Arc<Wakers>,
    written: &tokio::sync::watch::Sender<u64>,
) {
    tokio::pin!(write);
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        let (failed, taken) = {
            let mut s = lock(&shared);
            let t = now();
            while let Some(frame) = s.state.poll_transmit(t) {
                batch.push(frame);
            }
            (s.state.failure().is_some(), s.state.transmitted_total())
        };
        if failed {
            let _ = write.shutdown().await;
            return;
        }
        if batch.is_empty() {
            // Woken by a new request, the end of a throttle (via the timer) or a failure.
            wakers.writer.notified().await;
            continue;
        }
        for frame in batch.drain(..) {
            if let Err(e) = write.write_all(&frame).await {
                lock(&shared).fail(ConnectionFailure::Io(e));
                wakers.timer.notify_one();
                return;
            }
        }
        // One flush per batch, so pipelined requests share a syscall.
        if let Err(e) = write.flush().await {
            lock(&shared).fail(ConnectionFailure::Io(e));
            wakers.timer.notify_one();
            return;
        }
        written.send_replace(taken);
    }
}

async fn read_loop<R: AsyncRead>(read: R, shared: Arc<Mutex<Shared>>, wakers: Arc<Wakers>) {
    tokio::pin!(read);
    loop {
        // Borrow the receive buffer for the read so the lock is not held across it; only this
        // task ever appends to it.
        let mut buf = {
            let mut s = lock(&shared);
            if s.state.failure().is_some() {
                return;
            }
            std::mem::take(s.state.recv_buffer(READ_SIZE))
        };
        let result = read.read_buf(&mut buf).await;
        let mut s = lock(&shared);
        *s.state.recv_buffer(0) = buf;
        match result {
            Ok(0) => {
                s.fail(ConnectionFailure::Eof);
            }
            Ok(_) => {
                s.state.handle_received(now());
                s.dispatch();
            }
            Err(e) => {
                s.fail(ConnectionFailure::Io(e));
            }
        }
        if s.state.failure().is_some() {
            drop(s);
            wakers.writer.notify_one();
            wakers.timer.notify_one();
            return;
        }
    }
}

/// Expires requests at their deadlines and releases the writer when a throttle ends. Holds
/// only a weak reference so a dropped connection's timer ends with it.
async fn timer_loop(shared: std::sync::Weak<Mutex<Shared>>, wakers: Arc<Wakers>) {
    loop {
        let next = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let mut s = lock(&shared);
            if s.state.failure().is_some() {
                return;
            }
            let t = now();
            s.state.handle_timeout(t);
            s.dispatch();
            if !s.state.is_throttled(t) && s.state.queued() > 0 {
                wakers.writer.notify_one();
            }
            s.state.poll_timeout()
        };
        match next {
            Some(at) => {
                let at = tokio::time::Instant::from_std(at);
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = wakers.timer.notified() => {}
                }
            }
            None => wakers.timer.notified().await,
        }
    }
}
