//! A loopback TCP proxy that sits between a client and a real broker and breaks the connection
//! on purpose, so integration tests can check what a client promises under failure (no lost and
//! no duplicated records from the idempotent producer, no stuck consumer group) rather than only
//! on a quiet network. A fault plan is seeded, so a failing run can be replayed exactly.
//!
//! # Keeping clients on the proxy
//!
//! A Kafka client only uses its bootstrap address once: after that it connects to the hosts
//! and ports the brokers advertise in Metadata and FindCoordinator responses. Forwarded
//! unchanged, those would send the client straight to the broker and past every fault. So the
//! proxy follows the request stream of each connection (size prefix, then api key, api version
//! and correlation id at fixed offsets in every request header version) and remembers the
//! Metadata (key 3) and FindCoordinator (key 10) requests. When the response with a remembered
//! correlation id comes back, it is decoded with `kafka-proto` at the request's version, every
//! advertised broker is replaced by the proxy listener for that broker (one loopback listener
//! per distinct upstream `host:port`, opened the first time it is seen), and the response is
//! re-encoded with a new size prefix. Every other frame, and every byte client to broker, is
//! forwarded as it arrives, byte for byte, without waiting for whole frames, so faults can land
//! anywhere, including mid-frame. A response that cannot be decoded is forwarded unchanged and
//! counted in [`ProxyStats::rewrite_failures`], which tests should expect to be zero.
//!
//! # Faults
//!
//! A [`FaultPlan`] says when to cut a connection (close both sides) and when to stall it (stop
//! forwarding for a while, letting TCP back-pressure build). Per-connection thresholds are drawn
//! from ranges with a generator seeded by the plan's seed and the connection's accept order, so
//! the same client behaviour meets the same faults on every run. [`FaultProxy`] also offers
//! manual faults for tests that want to pick the moment themselves.
//!
//! Memory is bounded by what arrives, never by what a size prefix claims: only rewritten
//! responses are buffered, and only up to the frame cap.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_proto::envelope::decode_response;
use kafka_proto::frame::{
    DEFAULT_MAX_FRAME_SIZE, FRAME_PREFIX_LEN, FrameEncodeError, begin_frame, finish_frame,
};
use kafka_proto::messages::{FindCoordinatorResponse, MetadataResponse};
use kafka_proto::version::response_header_version;
use kafka_proto::{ApiKey, DecodeError, Encode, EncodeError, Response};
use partitioner::{RandomSource, SplitMix64};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, sleep, sleep_until};

/// Bytes read from a socket at a time. Small enough that a cut or stall lands within a few
/// kilobytes of where a test asked for it even when the peer writes megabytes at once.
const READ_CHUNK: usize = 16 * 1024;

/// How long the proxy waits for the upstream broker to accept a connection before closing the
/// client side; a client then sees an ordinary connection failure and retries.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Metadata or FindCoordinator requests remembered per connection. A real client has a handful
/// in flight; the cap only stops a misbehaving peer from growing the map without bound. Past
/// it, responses are forwarded unrewritten (and so count as no failure: they were never seen).
const MAX_PENDING_REWRITES: usize = 1024;

/// When and how a [`FaultProxy`] breaks connections.
///
/// Every trigger is off by default ([`FaultPlan::none`] forwards faithfully). Triggers given as
/// ranges are drawn uniformly (inclusive, reversed ends are swapped) once per connection, so
/// different connections fail at different points, yet the draw depends only on the seed and the
/// connection's accept order. Several triggers may be armed; the first to fire wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultPlan {
    seed: u64,
    cut_after_bytes_to_client: Option<RangeInclusive<u64>>,
    cut_after_bytes_to_broker: Option<RangeInclusive<u64>>,
    cut_after_responses: Option<RangeInclusive<u64>>,
    cut_after_elapsed: Option<RangeInclusive<Duration>>,
    stall_every: Option<(RangeInclusive<Duration>, RangeInclusive<Duration>)>,
    refuse_after_cut: Duration,
    max_cuts: Option<u64>,
    reset_on_cut: bool,
}

impl Default for FaultPlan {
    fn default() -> Self {
        Self::none()
    }
}

impl FaultPlan {
    /// No faults: the proxy only forwards and rewrites broker addresses. Seed 0, no cap on
    /// cuts, cuts close with FIN, no refusal after a cut.
    pub fn none() -> Self {
        FaultPlan {
            seed: 0,
            cut_after_bytes_to_client: None,
            cut_after_bytes_to_broker: None,
            cut_after_responses: None,
            cut_after_elapsed: None,
            stall_every: None,
            refuse_after_cut: Duration::ZERO,
            max_cuts: None,
            reset_on_cut: false,
        }
    }

    /// Seeds every per-connection draw, so a failing run can be replayed. Default 0.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Cuts a connection once `n` bytes have gone from the broker to the client (counted after
    /// rewriting). The point is arbitrary, usually inside a response frame, which is what tests
    /// that a client survives a half-read response. With `n = 0` the cut happens when the
    /// broker first sends anything, and none of it is forwarded.
    pub fn cut_after_bytes_to_client(mut self, n: RangeInclusive<u64>) -> Self {
        self.cut_after_bytes_to_client = Some(n);
        self
    }

    /// Cuts a connection once `n` bytes have gone from the client to the broker, so the broker
    /// sees a half-written request. `n = 0` behaves as in
    /// [`cut_after_bytes_to_client`](Self::cut_after_bytes_to_client).
    pub fn cut_after_bytes_to_broker(mut self, n: RangeInclusive<u64>) -> Self {
        self.cut_after_bytes_to_broker = Some(n);
        self
    }

    /// Cuts a connection right after it has delivered `n` whole response frames (an `n` of 0
    /// counts as 1). The cut falls between frames, so requests still in flight are lost whole:
    /// the case where the broker may have acted on a request the client never heard back about.
    pub fn cut_after_responses(mut self, n: RangeInclusive<u64>) -> Self {
        self.cut_after_responses = Some(n);
        self
    }

    /// Cuts each connection once it has been open for a duration drawn from `after`, wherever
    /// its traffic happens to be; with a busy client this gives a steady rate of cuts.
    pub fn cut_after_elapsed(mut self, after: RangeInclusive<Duration>) -> Self {
        self.cut_after_elapsed = Some(after);
        self
    }

    /// Stalls each connection repeatedly: after a gap drawn from `gap` (counted from accept,
    /// then from the end of the previous stall), nothing is forwarded in either direction for a
    /// time drawn from `length`. Data read during a stall is held and delivered afterwards.
    pub fn stall_every(
        mut self,
        gap: RangeInclusive<Duration>,
        length: RangeInclusive<Duration>,
    ) -> Self {
        self.stall_every = Some((gap, length));
        self
    }

    /// After each cut made by the plan, refuses new connections (accepts and immediately closes
    /// them) for `window`, as a broker that is restarting would. Default zero: never refuse.
    pub fn refuse_after_cut(mut self, window: Duration) -> Self {
        self.refuse_after_cut = window;
        self
    }

    /// Stops cutting after `n` cuts made by the plan (manual [`FaultProxy::cut_all`] does not
    /// count), so a test can inject a known number of faults and then let the client finish.
    /// Default: unlimited.
    pub fn max_cuts(mut self, n: u64) -> Self {
        self.max_cuts = Some(n);
        self
    }

    /// Closes cut connections with a TCP reset instead of an orderly FIN, so clients see
    /// `ECONNRESET` rather than end of stream. Applies to manual cuts too. Default false.
    pub fn reset_on_cut(mut self, reset: bool) -> Self {
        self.reset_on_cut = reset;
        self
    }
}

/// A snapshot of what the proxy has done, for tests to assert on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted and forwarded (refused ones are not counted here).
    pub connections_accepted: u64,
    /// Connections closed on arrival while refusing.
    pub connections_refused: u64,
    /// Connections cut, by the plan or by [`FaultProxy::cut_all`].
    pub connections_cut: u64,
    /// Connections currently open through the proxy.
    pub connections_open: u64,
    /// Scheduled stalls started (manual [`FaultProxy::stall_all`] is not counted).
    pub stalls: u64,
    /// Metadata and FindCoordinator responses re-encoded with proxy addresses.
    pub frames_rewritten: u64,
    /// Responses that should have been rewritten but could not be decoded or re-encoded, and
    /// were forwarded unchanged; the client may then bypass the proxy.
    pub rewrite_failures: u64,
    /// Bytes forwarded from clients to brokers.
    pub bytes_to_broker: u64,
    /// Bytes forwarded from brokers to clients (after rewriting).
    pub bytes_to_client: u64,
}

/// A running proxy. Dropping it closes its listeners and every connection through it.
pub struct FaultProxy {
    inner: Arc<Inner>,
    addr: SocketAddr,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Starts a proxy for the broker at `upstream` (`host:port`) on a fresh loopback port.
    ///
    /// Must be called within a tokio runtime; outside one it returns an error rather than
    /// panicking. The upstream is not contacted until a client connects, so a broker that is
    /// down shows up as connections closed on arrival, as it would without the proxy.
    pub fn start(upstream: &str, plan: FaultPlan) -> io::Result<FaultProxy> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            io::Error::other(format!("FaultProxy::start needs a tokio runtime: {e}"))
        })?;
        let has_port = upstream
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !has_port {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("upstream {upstream:?} is not host:port"),
            ));
        }
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            cuts_left: AtomicU64::new(plan.max_cuts.unwrap_or(u64::MAX)),
            plan,
            runtime,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            counters: Counters::default(),
            listeners: Mutex::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(0),
            faults_enabled: AtomicBool::new(true),
            refuse_until: Mutex::new(None),
            stalled_until: Mutex::new(None),
            shutdown,
        });
        let addr = inner.listener_for(upstream)?;
        Ok(FaultProxy { inner, addr })
    }

    /// Where clients should bootstrap from: the listener for the `upstream` given to `start`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every listener so far, as (upstream `host:port`, proxy address), sorted by upstream.
    /// Upstreams are compared as strings, so `localhost:9092` and `127.0.0.1:9092` get separate
    /// listeners (both work; they merely count connections separately).
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        let mut all: Vec<_> = lock(&self.inner.listeners)
            .iter()
            .map(|(upstream, addr)| (upstream.clone(), *addr))
            .collect();
        all.sort();
        all
    }

    /// The current counters.
    pub fn stats(&self) -> ProxyStats {
        self.inner.counters.snapshot()
    }

    /// Cuts every open connection now (including ones still connecting upstream) and returns
    /// how many were told to close. Sockets close moments later, when their tasks next run;
    /// the cuts are counted before the sockets close, so a client that sees the close also
    /// sees the count.
    pub fn cut_all(&self) -> usize {
        let connections = lock(&self.inner.connections);
        for cut in connections.values() {
            cut.notify_one();
        }
        connections.len()
    }

    /// Stops forwarding on every connection, present and new, for `length` from now.
    pub fn stall_all(&self, length: Duration) {
        extend_until(&self.inner.stalled_until, later(Instant::now(), length));
    }

    /// Refuses new connections for `window` from now: they are accepted and closed at once.
    pub fn refuse_connections_for(&self, window: Duration) {
        extend_until(&self.inner.refuse_until, later(Instant::now(), window));
    }

    /// Turns the plan's faults (cuts, stalls, refusal after a cut) off or back on, e.g. to let
    /// a client drain cleanly at the end of a chaos test. Manual faults are unaffected.
    pub fn set_faults_enabled(&self, enabled: bool) {
        self.inner.faults_enabled.store(enabled, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.inner.shutdown.send_replace(true);
    }
}

/// Locks a mutex, ignoring poisoning: every critical section here is a single read or update
/// that leaves the data consistent even if a panic happened elsewhere while it was held.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// `base + by`, saturating at a century instead of panicking on overflow, so a test can ask
/// for an effectively endless stall or refusal with `Duration::MAX`.
fn later(base: Instant, by: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    base.checked_add(by.min(CENTURY)).unwrap_or(base)
}

/// Moves a deadline later (never earlier), so overlapping requests keep the longest.
fn extend_until(slot: &Mutex<Option<Instant>>, until: Instant) {
    let mut slot = lock(slot);
    if slot.is_none_or(|current| current < until) {
        *slot = Some(until);
    }
}

#[derive(Default)]
struct Counters {
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    connections_cut: AtomicU64,
    connections_open: AtomicU64,
    stalls: AtomicU64,
    frames_rewritten: AtomicU64,
    rewrite_failures: AtomicU64,
    bytes_to_broker: AtomicU64,
    bytes_to_client: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::SeqCst);
}

impl Counters {
    fn snapshot(&self) -> ProxyStats {
        let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
        ProxyStats {
            connections_accepted: get(&self.connections_accepted),
            connections_refused: get(&self.connections_refused),
            connections_cut: get(&self.connections_cut),
            connections_open: get(&self.connections_open),
            stalls: get(&self.stalls),
            frames_rewritten: get(&self.frames_rewritten),
            rewrite_failures: get(&self.rewrite_failures),
            bytes_to_broker: get(&self.bytes_to_broker),
            bytes_to_client: get(&self.bytes_to_client),
        }
    }
}

struct Inner {
    plan: FaultPlan,
    /// Kept so listeners opened while rewriting are spawned on the runtime `start` ran in.
    runtime: tokio::runtime::Handle,
    bind_ip: IpAddr,
    counters: Counters,
    /// Upstream `host:port` to the proxy listener forwarding to it.
    listeners: Mutex<HashMap<String, SocketAddr>>,
    /// Open connections by accept index, each with its manual-cut signal.
    connections: Mutex<HashMap<u64, Arc<Notify>>>,
    next_connection: AtomicU64,
    /// Plan cuts still allowed; `u64::MAX` when the plan sets no cap.
    cuts_left: AtomicU64,
    faults_enabled: AtomicBool,
    refuse_until: Mutex<Option<Instant>>,
    /// Proxy-wide stall from [`FaultProxy::stall_all`]; per-connection stalls live in `Conn`.
    stalled_until: Mutex<Option<Instant>>,
    shutdown: watch::Sender<bool>,
}

impl Inner {
    /// The listener forwarding to `upstream`, opened (and its accept loop spawned) on first use.
    fn listener_for(self: &Arc<Self>, upstream: &str) -> io::Result<SocketAddr> {
        let mut listeners = lock(&self.listeners);
        if let Some(addr) = listeners.get(upstream) {
            return Ok(*addr);
        }
        let std_listener = std::net::TcpListener::bind((self.bind_ip, 0))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let listener = {
            let _runtime = self.runtime.enter();
            TcpListener::from_std(std_listener)?
        };
        self.runtime
            .spawn(accept_loop(self.clone(), listener, upstream.into()));
        listeners.insert(upstream.to_owned(), addr);
        Ok(addr)
    }

    fn refusing(&self) -> bool {
        lock(&self.refuse_until).is_some_and(|until| Instant::now() < until)
    }

    fn faults_enabled(&self) -> bool {
        self.faults_enabled.load(Ordering::SeqCst)
    }

    /// Asks to make one plan cut; `false` when faults are off or the plan's cap is used up, in
    /// which case the caller disarms its trigger and keeps forwarding. On `true` the cut is
    /// already counted.
    fn try_plan_cut(&self) -> bool {
        if !self.faults_enabled() {
            return false;
        }
        if self.plan.max_cuts.is_some()
            && self
                .cuts_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_err()
        {
            return false;
        }
        bump(&self.counters.connections_cut, 1);
        if !self.plan.refuse_after_cut.is_zero() {
            extend_until(
                &self.refuse_until,
                later(Instant::now(), self.plan.refuse_after_cut),
            );
        }
        true
    }

    /// Rewrites a complete response frame, or `None` to forward the original.
    fn rewrite(self: &Arc<Self>, api_key: i16, version: i16, frame: Bytes) -> Option<Bytes> {
        let mut map = |host: &str, port: i32| -> Result<(String, i32), RewriteError> {
            // Error responses carry an empty host and a port of -1: nothing to redirect.
            if host.is_empty() || !(1..=i32::from(u16::MAX)).contains(&port) {
                return Ok((host.to_owned(), port));
            }
            let upstream = upstream_key(host, port);
            let addr = self
                .listener_for(&upstream)
                .map_err(|source| RewriteError::Listener { upstream, source })?;
            Ok((addr.ip().to_string(), i32::from(addr.port())))
        };
        match rewrite_frame(api_key, version, frame, &mut map) {
            Ok(frame) => {
                bump(&self.counters.frames_rewritten, 1);
                Some(frame)
            }
            Err(error) => {
                bump(&self.counters.rewrite_failures, 1);
                eprintln!("fault proxy: forwarding a response unrewritten: {error}");
                None
            }
        }
    }
}

/// `host:port`, bracketing IPv6 literals so the result parses back as a socket address.
fn upstream_key(host: &str, port: i32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

async fn accept_loop(inner: Arc<Inner>, listener: TcpListener, upstream: Arc<str>) {
    let mut shutdown = inner.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // Out of descriptors or a connection reset before accept: back off, don't spin.
            Err(_) => {
                sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if inner.refusing() {
            // A reset on close makes the refusal immediate and unambiguous to the client.
            let _ = stream.set_zero_linger();
            bump(&inner.counters.connections_refused, 1);
            continue;
        }
        bump(&inner.counters.connections_accepted, 1);
        let index = inner.next_connection.fetch_add(1, Ordering::SeqCst);
        inner
            .runtime
            .spawn(serve(inner.clone(), stream, upstream.clone(), index));
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// A peer closed or failed; the other side is closed to match.
    Closed,
    /// Cut by the plan or by hand (already counted).
    Cut,
    /// The proxy was dropped.
    Shutdown,
}

/// Keeps a connection in the registry (for `cut_all`) and the open gauge for exactly as long
/// as its task lives, however the task ends.
struct Registration<'a> {
    inner: &'a Inner,
    index: u64,
}

impl<'a> Registration<'a> {
    fn new(inner: &'a Inner, index: u64, cut: Arc<Notify>) -> Self {
        lock(&inner.connections).insert(index, cut);
        bump(&inner.counters.connections_open, 1);
        Registration { inner, index }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        lock(&self.inner.connections).remove(&self.index);
        self.inner
            .counters
            .connections_open
            .fetch_sub(1, Ordering::SeqCst);
    }
}

/// State the two directions of one connection share.
#[derive(Default)]
struct Conn {
    /// Correlation id to (api key, api version) of requests whose responses get rewritten.
    pending: Mutex<HashMap<i32, (i16, i16)>>,
    stalled_until: Mutex<Option<Instant>>,
}

impl Conn {
    async fn wait_while_stalled(&self, inner: &Inner) {
        loop {
            let mine = *lock(&self.stalled_until);
            let everyone = *lock(&inner.stalled_until);
            let until = mine.max(everyone);
            match until {
                Some(until) if Instant::now() < until => sleep_until(until).await,
                _ => return,
            }
        }
    }
}

/// One connection's draws from the plan. Each trigger has its own generator stream, so arming
/// one trigger does not move another's draws.
struct Schedule {
    bytes_to_client: Option<u64>,
    bytes_to_broker: Option<u64>,
    responses: Option<u64>,
    elapsed: Option<Duration>,
    stall: Option<(RangeInclusive<Duration>, RangeInclusive<Duration>)>,
    stall_rng: SplitMix64,
}

impl Schedule {
    fn draw(plan: &FaultPlan, index: u64) -> Self {
        let rng = |stream: u64| {
            // Mixing through one SplitMix64 step keeps the per-connection streams apart even
            // for neighbouring seeds and indexes.
            let key = plan.seed
                ^ index.wrapping_mul(0xd6e8_feb8_6659_fd93)
                ^ stream.wrapping_mul(0xa076_1d64_78bd_642f);
            SplitMix64::new(SplitMix64::new(key).next_u64())
        };
        Schedule {
            bytes_to_client: plan
                .cut_after_bytes_to_client
                .as_ref()
                .map(|r| draw_u64(&mut rng(1), r)),
            bytes_to_broker: plan
                .cut_after_bytes_to_broker
                .as_ref()
                .map(|r| draw_u64(&mut rng(2), r)),
            responses: plan
                .cut_after_responses
                .as_ref()
                .map(|r| draw_u64(&mut rng(3), r).max(1)),
            elapsed: plan
                .cut_after_elapsed
                .as_ref()
                .map(|r| draw_duration(&mut rng(4), r)),
            stall: plan.stall_every.clone(),
            stall_rng: rng(5),
        }
    }

    /// The next (gap before, length of) stall, if the plan stalls.
    fn next_stall(&mut self) -> Option<(Duration, Duration)> {
        let (gap, length) = self.stall.as_ref()?;
        Some((
            draw_duration(&mut self.stall_rng, gap),
            draw_duration(&mut self.stall_rng, length),
        ))
    }
}

/// Uniform in the inclusive range (ends in either order), by multiply-high: no modulo bias
/// worth the name and no panic on the full `u64` range.
fn draw_u64(rng: &mut SplitMix64, range: &RangeInclusive<u64>) -> u64 {
    let (lo, hi) = if range.start() <= range.end() {
        (*range.start(), *range.end())
    } else {
        (*range.end(), *range.start())
    };
    let span = u128::from(hi - lo) + 1;
    let offset = (u128::from(rng.next_u64()) * span) >> 64;
    // offset < span <= 2^64, so it fits, and lo + offset <= hi.
    lo + u64::try_from(offset).unwrap_or(0)
}

fn draw_duration(rng: &mut SplitMix64, range: &RangeInclusive<Duration>) -> Duration {
    let nanos = |d: &Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(draw_u64(rng, &(nanos(range.start())..=nanos(range.end()))))
}

async fn serve(inner: Arc<Inner>, mut client: TcpStream, upstream: Arc<str>, index: u64) {
    let _ = client.set_nodelay(true);
    let mut shutdown = inner.shutdown.subscribe();
    let cut = Arc::new(Notify::new());
    let _registration = Registration::new(&inner, index, cut.clone());
    let connect = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(&*upstream));
    let mut broker = tokio::select! {
        connected = connect => match connected {
            Ok(Ok(broker)) => broker,
            // Dropping the client closes it: to the client, the broker is unreachable.
            _ => return,
        },
        () = cut.notified() => {
            bump(&inner.counters.connections_cut, 1);
            if inner.plan.reset_on_cut {
                let _ = client.set_zero_linger();
            }
            return;
        }
        _ = shutdown.wait_for(|stop| *stop) => return,
    };
    let _ = broker.set_nodelay(true);

    let mut schedule = Schedule::draw(&inner.plan, index);
    let conn = Conn::default();
    let opened = Instant::now();
    let end = {
        let (client_read, client_write) = client.split();
        let (broker_read, broker_write) = broker.split();
        let up = pump_to_broker(
            &inner,
            &conn,
            client_read,
            broker_write,
            schedule.bytes_to_broker,
        );
        let down = pump_to_client(
            &inner,
            &conn,
            broker_read,
            client_write,
            schedule.bytes_to_client,
            schedule.responses,
        );
        tokio::pin!(up, down);
        let mut lifetime = schedule.elapsed.map(|after| later(opened, after));
        let mut stall = schedule
            .next_stall()
            .map(|(gap, len)| (later(opened, gap), len));
        loop {
            tokio::select! {
                end = &mut up => break end,
                end = &mut down => break end,
                () = cut.notified() => {
                    bump(&inner.counters.connections_cut, 1);
                    break End::Cut;
                }
                () = sleep_until(lifetime.unwrap_or(opened)), if lifetime.is_some() => {
                    if inner.try_plan_cut() {
                        break End::Cut;
                    }
                    lifetime = None;
                }
                () = sleep_until(stall.map_or(opened, |(at, _)| at)), if stall.is_some() => {
                    let now = Instant::now();
                    let length = stall.map_or(Duration::ZERO, |(_, len)| len);
                    if inner.faults_enabled() {
                        extend_until(&conn.stalled_until, later(now, length));
                        bump(&inner.counters.stalls, 1);
                    }
                    stall = schedule
                        .next_stall()
                        .map(|(gap, len)| (later(later(now, length), gap), len));
                }
                _ = shutdown.wait_for(|stop| *stop) => break End::Shutdown,
            }
        }
    };
    if end == End::Cut && inner.plan.reset_on_cut {
        let _ = client.set_zero_linger();
        let _ = broker.set_zero_linger();
    }
    // Dropping both streams here closes both sides, whichever way the connection ended.
}

/// How much of a `len`-byte write may go out under a byte-count cut, and whether to cut
/// after it. A trigger the plan may not fire (faults off, cap used up) is disarmed.
fn byte_budget(
    len: usize,
    forwarded: u64,
    cut_at: &mut Option<u64>,
    inner: &Inner,
) -> (usize, bool) {
    if let Some(at) = *cut_at {
        let room = at.saturating_sub(forwarded);
        if u64::try_from(len).unwrap_or(u64::MAX) >= room {
            if inner.try_plan_cut() {
                return (usize::try_from(room).unwrap_or(len).min(len), true);
            }
            *cut_at = None;
        }
    }
    (len, false)
}

async fn pump_to_broker<R, W>(
    inner: &Inner,
    conn: &Conn,
    mut from: R,
    mut to: W,
    mut cut_at: Option<u64>,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; READ_CHUNK];
    let mut tracker = RequestTracker::default();
    let mut forwarded = 0u64;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return End::Closed,
            Ok(n) => n,
        };
        conn.wait_while_stalled(inner).await;
        let data = &buf[..n];
        // Remember the request before the broker can possibly answer it.
        tracker.feed(data, &mut |api_key, version, correlation_id| {
            if api_key == ApiKey::Metadata as i16 || api_key == ApiKey::FindCoordinator as i16 {
                let mut pending = lock(&conn.pending);
                if pending.len() < MAX_PENDING_REWRITES {
                    pending.insert(correlation_id, (api_key, version));
                }
            }
        });
        let (take, cut) = byte_budget(data.len(), forwarded, &mut cut_at, inner);
        if to.write_all(&data[..take]).await.is_err() {
            return End::Closed;
        }
        forwarded += take as u64;
        bump(&inner.counters.bytes_to_broker, take as u64);
        if cut {
            return End::Cut;
        }
    }
}

async fn pump_to_client<R, W>(
    inner: &Arc<Inner>,
    conn: &Conn,
    mut from: R,
    mut to: W,
    mut bytes_at: Option<u64>,
    mut responses_at: Option<u64>,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; READ_CHUNK];
    let mut frames = ResponseFrames::new(DEFAULT_MAX_FRAME_SIZE);
    let mut segments = Vec::new();
    let mut forwarded = 0u64;
    let mut responses = 0u64;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return End::Closed,
            Ok(n) => n,
        };
        conn.wait_while_stalled(inner).await;
        frames.feed(&buf[..n], &mut ConnHooks { inner, conn }, &mut segments);
        for segment in segments.drain(..) {
            let (take, cut) = byte_budget(segment.bytes.len(), forwarded, &mut bytes_at, inner);
            if to.write_all(&segment.bytes[..take]).await.is_err() {
                return End::Closed;
            }
            forwarded += take as u64;
            bump(&inner.counters.bytes_to_client, take as u64);
            if cut {
                return End::Cut;
            }
            if segment.ends_frame {
                responses += 1;
                if responses_at.is_some_and(|at| responses >= at) {
                    if inner.try_plan_cut() {
                        return End::Cut;
                    }
                    responses_at = None;
                }
            }
        }
    }
}

/// The rewrite hooks of one live connection.
struct ConnHooks<'a> {
    inner: &'a Arc<Inner>,
    conn: &'a Conn,
}

impl RewriteHooks for ConnHooks<'_> {
    fn awaiting_any(&mut self) -> bool {
        !lock(&self.conn.pending).is_empty()
    }

    fn claim(&mut self, correlation_id: i32) -> Option<(i16, i16)> {
        lock(&self.conn.pending).remove(&correlation_id)
    }

    fn rewrite(&mut self, api_key: i16, version: i16, frame: Bytes) -> Option<Bytes> {
        self.inner.rewrite(api_key, version, frame)
    }
}

/// Follows the client-to-broker byte stream and reports each request's api key, version and
/// correlation id, without buffering anything but the 12 header bytes it reads them from.
///
/// A negative size prefix means the stream has lost its framing (the broker will close the
/// connection); the tracker then stops reporting rather than guess.
#[derive(Debug, Default)]
struct RequestTracker {
    head: [u8; 12],
    have: usize,
    skip: usize,
    lost: bool,
}

impl RequestTracker {
    fn feed(&mut self, mut data: &[u8], record: &mut impl FnMut(i16, i16, i32)) {
        while !data.is_empty() && !self.lost {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let want = if self.have < FRAME_PREFIX_LEN {
                FRAME_PREFIX_LEN
            } else {
                12
            };
            let n = (want - self.have).min(data.len());
            self.head[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            let size = i32::from_be_bytes([self.head[0], self.head[1], self.head[2], self.head[3]]);
            if self.have == FRAME_PREFIX_LEN {
                match usize::try_from(size) {
                    Err(_) => self.lost = true,
                    // Too short to hold key, version and correlation id: not a request we track.
                    Ok(len) if len < 8 => {
                        self.skip = len;
                        self.have = 0;
                    }
                    Ok(_) => {}
                }
            } else if self.have == 12 {
                let field = |at: usize| i16::from_be_bytes([self.head[at], self.head[at + 1]]);
                let correlation_id =
                    i32::from_be_bytes([self.head[8], self.head[9], self.head[10], self.head[11]]);
                record(field(4), field(6), correlation_id);
                // size >= 8 was checked when the prefix completed.
                self.skip = usize::try_from(size).unwrap_or(8) - 8;
                self.have = 0;
            }
        }
    }
}

/// A piece of the broker-to-client stream ready to forward.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    bytes: Bytes,
    /// The segment ends a response frame (counted by `cut_after_responses`).
    ends_frame: bool,
}

/// What [`ResponseFrames`] needs from its connection, as a trait so the framing logic can be
/// tested without sockets.
trait RewriteHooks {
    /// Whether any response is still expected to need rewriting. While none is, header bytes
    /// are forwarded the moment they arrive instead of being held until the correlation id is
    /// complete: a response cannot belong to a request that has not been recorded yet.
    fn awaiting_any(&mut self) -> bool;
    /// Claims `correlation_id` if its response is to be rewritten: the request's (api key,
    /// version).
    fn claim(&mut self, correlation_id: i32) -> Option<(i16, i16)>;
    /// A whole response (correlation id onwards, no prefix) as a whole new frame, or `None` to
    /// forward the original.
    fn rewrite(&mut self, api_key: i16, version: i16, frame: Bytes) -> Option<Bytes>;
}

#[derive(Debug)]
enum DownState {
    /// Reading a frame's size prefix and correlation id; the first `sent` of the `have` bytes
    /// in `buf` have been forwarded already.
    Head {
        buf: [u8; 8],
        have: usize,
        sent: usize,
    },
    /// Forwarding the rest of a frame as it arrives.
    Pass { left: usize },
    /// Buffering a whole response to rewrite it.
    Collect {
        api_key: i16,
        version: i16,
        prefix: [u8; 4],
        size: usize,
        frame: BytesMut,
    },
    /// Framing lost (negative size): forward everything untouched from here on.
    Lost,
}

impl DownState {
    fn head() -> Self {
        DownState::Head {
            buf: [0; 8],
            have: 0,
            sent: 0,
        }
    }

    /// After the head of a frame: the rest of its `left` bytes, or the next frame.
    fn pass(left: usize) -> Self {
        if left == 0 {
            DownState::head()
        } else {
            DownState::Pass { left }
        }
    }
}

/// Splits the broker-to-client stream at frame boundaries just far enough to find the responses
/// to rewrite; everything else leaves as soon as it arrives, unbuffered.
#[derive(Debug)]
struct ResponseFrames {
    state: DownState,
    /// Responses larger than this are forwarded unrewritten instead of buffered.
    max_rewrite: usize,
}

impl ResponseFrames {
    fn new(max_rewrite: usize) -> Self {
        ResponseFrames {
            state: DownState::head(),
            max_rewrite,
        }
    }

    /// Consumes `data` and appends what to forward to `out`.
    fn feed(&mut self, mut data: &[u8], hooks: &mut impl RewriteHooks, out: &mut Vec<Segment>) {
        while !data.is_empty() {
            self.state = match std::mem::replace(&mut self.state, DownState::Lost) {
                DownState::Lost => {
                    push(out, data, false);
                    data = &[];
                    DownState::Lost
                }
                DownState::Pass { left } => {
                    let n = left.min(data.len());
                    push(out, &data[..n], n == left);
                    data = &data[n..];
                    DownState::pass(left - n)
                }
                DownState::Head {
                    mut buf,
                    mut have,
                    sent,
                } => {
                    let want = if have < FRAME_PREFIX_LEN {
                        FRAME_PREFIX_LEN
                    } else {
                        8
                    };
                    let n = (want - have).min(data.len());
                    buf[have..have + n].copy_from_slice(&data[..n]);
                    have += n;
                    data = &data[n..];
                    self.after_head(buf, have, sent, hooks, out)
                }
                DownState::Collect {
                    api_key,
                    version,
                    prefix,
                    size,
                    mut frame,
                } => {
                    let n = (size - frame.len()).min(data.len());
                    frame.put_slice(&data[..n]);
                    data = &data[n..];
                    if frame.len() == size {
                        finish(api_key, version, prefix, frame, hooks, out);
                        DownState::head()
                    } else {
                        DownState::Collect {
                            api_key,
                            version,
                            prefix,
                            size,
                            frame,
                        }
                    }
                }
            };
        }
    }

    /// Decides what to do with a frame head holding `have` bytes, `sent` of them forwarded.
    fn after_head(
        &self,
        buf: [u8; 8],
        have: usize,
        sent: usize,
        hooks: &mut impl RewriteHooks,
        out: &mut Vec<Segment>,
    ) -> DownState {
        if have < FRAME_PREFIX_LEN {
            if hooks.awaiting_any() {
                return DownState::Head { buf, have, sent };
            }
            push(out, &buf[sent..have], false);
            return DownState::Head {
                buf,
                have,
                sent: have,
            };
        }
        let Ok(size) = usize::try_from(i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]])) else {
            push(out, &buf[sent..have], false);
            return DownState::Lost;
        };
        if have == FRAME_PREFIX_LEN {
            // Too short for a correlation id (no request of ours produced it), already partly
            // forwarded, or nothing awaited: this frame goes through untouched.
            if size < 4 || sent > 0 || !hooks.awaiting_any() {
                push(out, &buf[sent..have], size == 0);
                return DownState::pass(size);
            }
            return DownState::Head { buf, have, sent };
        }
        if have < 8 {
            return DownState::Head { buf, have, sent };
        }
        // Only reachable with nothing forwarded: any earlier forwarding left via `pass` above.
        let correlation_id = i32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        match hooks.claim(correlation_id) {
            Some((api_key, version)) if size <= self.max_rewrite => {
                let mut frame = BytesMut::with_capacity(size.min(READ_CHUNK));
                frame.put_slice(&buf[4..8]);
                let prefix = [buf[0], buf[1], buf[2], buf[3]];
                if size == 4 {
                    finish(api_key, version, prefix, frame, hooks, out);
                    DownState::head()
                } else {
                    DownState::Collect {
                        api_key,
                        version,
                        prefix,
                        size,
                        frame,
                    }
                }
            }
            _ => {
                push(out, &buf[sent..], size == 4);
                DownState::pass(size - 4)
            }
        }
    }
}

fn push(out: &mut Vec<Segment>, bytes: &[u8], ends_frame: bool) {
    if !bytes.is_empty() || ends_frame {
        out.push(Segment {
            bytes: Bytes::copy_from_slice(bytes),
            ends_frame,
        });
    }
}

/// Emits a collected response: rewritten if possible, else exactly as it came.
fn finish(
    api_key: i16,
    version: i16,
    prefix: [u8; 4],
    frame: BytesMut,
    hooks: &mut impl RewriteHooks,
    out: &mut Vec<Segment>,
) {
    let frame = frame.freeze();
    let bytes = hooks
        .rewrite(api_key, version, frame.clone())
        .unwrap_or_else(|| {
            let mut original = BytesMut::with_capacity(FRAME_PREFIX_LEN + frame.len());
            original.put_slice(&prefix);
            original.put_slice(&frame);
            original.freeze()
        });
    out.push(Segment {
        bytes,
        ends_frame: true,
    });
}

/// Why a response meant for rewriting was forwarded unchanged instead.
#[derive(Debug, Error)]
enum RewriteError {
    #[error("cannot decode the response: {0}")]
    Decode(#[from] DecodeError),
    #[error("cannot re-encode the response: {0}")]
    Encode(#[from] EncodeError),
    #[error("the re-encoded response does not fit a frame: {0}")]
    Frame(#[from] FrameEncodeError),
    #[error("cannot open a listener for upstream {upstream}: {source}")]
    Listener {
        upstream: String,
        #[source]
        source: io::Error,
    },
    #[error("api key {0} is not one whose responses the proxy rewrites")]
    NotRewritten(i16),
}

type AddressMap<'a> = dyn FnMut(&str, i32) -> Result<(String, i32), RewriteError> + 'a;

/// Re-encodes a Metadata or FindCoordinator response (correlation id onwards) with every
/// advertised broker address passed through `map`, returning a whole frame with its prefix.
fn rewrite_frame(
    api_key: i16,
    version: i16,
    frame: Bytes,
    map: &mut AddressMap<'_>,
) -> Result<Bytes, RewriteError> {
    match ApiKey::from_i16(api_key) {
        Some(ApiKey::Metadata) => reencode::<MetadataResponse>(frame, version, |resp| {
            for broker in &mut resp.brokers {
                (broker.host, broker.port) = map(&broker.host, broker.port)?;
            }
            Ok(())
        }),
        Some(ApiKey::FindCoordinator) => {
            reencode::<FindCoordinatorResponse>(frame, version, |resp| {
                // Versions 0-3 answer for one key at top level; 4+ only in `coordinators`.
                if version <= 3 && resp.error_code == 0 {
                    (resp.host, resp.port) = map(&resp.host, resp.port)?;
                }
                for coordinator in &mut resp.coordinators {
                    if coordinator.error_code == 0 {
                        (coordinator.host, coordinator.port) =
                            map(&coordinator.host, coordinator.port)?;
                    }
                }
                Ok(())
            })
        }
        _ => Err(RewriteError::NotRewritten(api_key)),
    }
}

fn reencode<R: Response>(
    frame: Bytes,
    version: i16,
    edit: impl FnOnce(&mut R) -> Result<(), RewriteError>,
) -> Result<Bytes, RewriteError> {
    let (header, mut body) = decode_response::<R>(frame, version)?;
    edit(&mut body)?;
    let mut out = BytesMut::new();
    let start = begin_frame(&mut out);
    header.encode(&mut out, response_header_version(R::API_KEY, version))?;
    body.encode(&mut out, version)?;
    finish_frame(&mut out, start)?;
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use kafka_proto::messages::metadata_response::MetadataResponseBroker;
    use kafka_proto::messages::{ResponseHeader, find_coordinator_response::Coordinator};

    use super::*;

    fn request_frame(api_key: i16, version: i16, correlation_id: i32, body_len: usize) -> Vec<u8> {
        let mut frame = Vec::new();
        frame.extend_from_slice(&i32::try_from(8 + body_len).unwrap().to_be_bytes());
        frame.extend_from_slice(&api_key.to_be_bytes());
        frame.extend_from_slice(&version.to_be_bytes());
        frame.extend_from_slice(&correlation_id.to_be_bytes());
        frame.extend((0..body_len).map(|i| i as u8));
        frame
    }

    #[test]
    fn the_tracker_reports_every_request_at_every_split_point() {
        let mut wire = Vec::new();
        wire.extend(request_frame(3, 12, 1, 30));
        wire.extend(request_frame(0, 9, 2, 0));
        // Too short for a header: skipped, not misread.
        wire.extend_from_slice(&[0, 0, 0, 3, 9, 9, 9]);
        wire.extend(request_frame(10, 4, 3, 5));
        let expected = vec![(3, 12, 1), (0, 9, 2), (10, 4, 3)];
        for cut in 0..=wire.len() {
            let mut tracker = RequestTracker::default();
            let mut seen = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                tracker.feed(part, &mut |k, v, c| seen.push((k, v, c)));
            }
            assert_eq!(seen, expected, "split at {cut}");
        }
        // Byte by byte too.
        let mut tracker = RequestTracker::default();
        let mut seen = Vec::new();
        for byte in &wire {
            tracker.feed(std::slice::from_ref(byte), &mut |k, v, c| {
                seen.push((k, v, c))
            });
        }
        assert_eq!(seen, expected);
    }

    #[test]
    fn the_tracker_stops_at_a_negative_size() {
        let mut wire = (-1i32).to_be_bytes().to_vec();
        wire.extend(request_frame(3, 1, 7, 0));
        let mut tracker = RequestTracker::default();
        let mut seen = Vec::new();
        tracker.feed(&wire, &mut |k, v, c| seen.push((k, v, c)));
        assert!(seen.is_empty());
    }

    fn response(correlation_id: i32, body: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        frame.extend_from_slice(&i32::try_from(4 + body.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(&correlation_id.to_be_bytes());
        frame.extend_from_slice(body);
        frame
    }

    /// Hooks that claim the listed correlation ids (as Metadata v1) and rewrite by wrapping
    /// the frame in `[`..`]`, recording what they were given.
    struct Wrap {
        pending: Vec<i32>,
        seen: Vec<Vec<u8>>,
    }

    impl RewriteHooks for Wrap {
        fn awaiting_any(&mut self) -> bool {
            !self.pending.is_empty()
        }

        fn claim(&mut self, correlation_id: i32) -> Option<(i16, i16)> {
            let at = self.pending.iter().position(|p| *p == correlation_id)?;
            self.pending.remove(at);
            Some((3, 1))
        }

        fn rewrite(&mut self, _: i16, _: i16, frame: Bytes) -> Option<Bytes> {
            self.seen.push(frame.to_vec());
            let mut new = b"[".to_vec();
            new.extend_from_slice(&frame);
            new.push(b']');
            Some(Bytes::from(new))
        }
    }

    /// Feeds `parts` and returns the concatenated output, the number of frame ends, the
    /// frames handed to `rewrite`, and the segments produced per part.
    fn run(parts: &[&[u8]], rewritten: &[i32]) -> (Vec<u8>, usize, Vec<Vec<u8>>, Vec<usize>) {
        let mut frames = ResponseFrames::new(1024);
        let mut hooks = Wrap {
            pending: rewritten.to_vec(),
            seen: Vec::new(),
        };
        let mut out = Vec::new();
        let mut per_part = Vec::new();
        for part in parts {
            let before = out.iter().map(|s: &Segment| s.bytes.len()).sum::<usize>();
            frames.feed(part, &mut hooks, &mut out);
            per_part.push(out.iter().map(|s| s.bytes.len()).sum::<usize>() - before);
        }
        let ends = out.iter().filter(|s| s.ends_frame).count();
        let bytes = out.iter().flat_map(|s| s.bytes.to_vec()).collect();
        (bytes, ends, hooks.seen, per_part)
    }

    #[test]
    fn responses_pass_through_or_are_rewritten_at_every_split_point() {
        let first = response(1, b"pass me");
        let second = response(2, b"rewrite me");
        let third = response(3, b"");
        let empty = 0i32.to_be_bytes().to_vec();
        let short = vec![0, 0, 0, 2, 7, 7];
        let wire: Vec<u8> = [&first[..], &second, &third, &empty, &short].concat();
        let mut expected = first.clone();
        expected.push(b'[');
        expected.extend_from_slice(&second[4..]);
        expected.push(b']');
        expected.extend_from_slice(&third);
        expected.extend_from_slice(&empty);
        expected.extend_from_slice(&short);
        for cut in 0..=wire.len() {
            let (bytes, ends, seen, _) = run(&[&wire[..cut], &wire[cut..]], &[2]);
            assert_eq!(bytes, expected, "split at {cut}");
            assert_eq!(ends, 5, "split at {cut}");
            assert_eq!(seen, vec![second[4..].to_vec()]);
        }
        let bytewise: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(run(&bytewise, &[2]).0, expected);
    }

    #[test]
    fn oversized_and_garbage_responses_are_forwarded_untouched() {
        let big = response(5, &[1; 2000]);
        let (bytes, ends, seen, _) = run(&[&big], &[5]);
        assert_eq!(bytes, big);
        assert_eq!(ends, 1);
        assert!(seen.is_empty(), "a frame over the cap is never buffered");
        let mut garbage = (-3i32).to_be_bytes().to_vec();
        garbage.extend(response(5, b"after the loss"));
        let (bytes, ends, seen, _) = run(&[&garbage[..2], &garbage[2..]], &[5]);
        assert_eq!(bytes, garbage);
        assert_eq!(ends, 0);
        assert!(seen.is_empty());
    }

    #[test]
    fn nothing_is_held_back_while_no_rewrite_is_awaited() {
        let wire = response(9, b"abc");
        for cut in 0..=wire.len() {
            let (bytes, ends, _, per_part) = run(&[&wire[..cut], &wire[cut..]], &[]);
            assert_eq!(bytes, wire);
            assert_eq!(ends, 1);
            assert_eq!(per_part, vec![cut, wire.len() - cut], "split at {cut}");
        }
        // While a rewrite is awaited, a head is held only until its correlation id shows it
        // is someone else's.
        let (_, _, _, per_part) = run(&[&wire[..6], &wire[6..]], &[1]);
        assert_eq!(per_part, vec![0, wire.len()]);
        let (_, _, _, per_part) = run(&[&wire[..9], &wire[9..]], &[1]);
        assert_eq!(per_part, vec![9, wire.len() - 9]);
    }

    fn encode_response<R: Response>(correlation_id: i32, version: i16, body: &R) -> Bytes {
        let mut buf = BytesMut::new();
        let mut header = ResponseHeader::default();
        header.correlation_id = correlation_id;
        header
            .encode(&mut buf, response_header_version(R::API_KEY, version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    fn to_proxy(host: &str, port: i32) -> Result<(String, i32), RewriteError> {
        Ok((format!("proxy-for-{host}"), port + 1))
    }

    #[test]
    fn metadata_brokers_are_mapped_and_the_rest_survives() {
        for version in [0, 1, 9, 12] {
            let mut resp = MetadataResponse::default();
            for (id, host) in [(1, "a"), (2, "b")] {
                let mut broker = MetadataResponseBroker::default();
                broker.node_id = id;
                broker.host = host.into();
                broker.port = 9092;
                resp.brokers.push(broker);
            }
            let frame = encode_response(42, version, &resp);
            let out = rewrite_frame(3, version, frame, &mut to_proxy).unwrap();
            let len = i32::from_be_bytes(out[..4].try_into().unwrap());
            assert_eq!(usize::try_from(len).unwrap(), out.len() - 4);
            let (header, back) =
                decode_response::<MetadataResponse>(out.slice(4..), version).unwrap();
            assert_eq!(header.correlation_id, 42);
            let got: Vec<_> = back
                .brokers
                .iter()
                .map(|b| (b.node_id, b.host.as_str(), b.port))
                .collect();
            assert_eq!(
                got,
                vec![(1, "proxy-for-a", 9093), (2, "proxy-for-b", 9093)]
            );
        }
    }

    #[test]
    fn find_coordinator_is_mapped_at_top_level_and_per_key_but_errors_are_not() {
        let mut old = FindCoordinatorResponse::default();
        old.host = "a".into();
        old.port = 1;
        let out = rewrite_frame(10, 3, encode_response(1, 3, &old), &mut to_proxy).unwrap();
        let (_, back) = decode_response::<FindCoordinatorResponse>(out.slice(4..), 3).unwrap();
        assert_eq!((back.host.as_str(), back.port), ("proxy-for-a", 2));

        let mut new = FindCoordinatorResponse::default();
        let mut ok = Coordinator::default();
        ok.key = "g".into();
        ok.host = "b".into();
        ok.port = 5;
        let mut failed = Coordinator::default();
        failed.key = "h".into();
        failed.error_code = 15;
        failed.host = String::new();
        failed.port = -1;
        new.coordinators = vec![ok, failed];
        let out = rewrite_frame(10, 4, encode_response(2, 4, &new), &mut to_proxy).unwrap();
        let (_, back) = decode_response::<FindCoordinatorResponse>(out.slice(4..), 4).unwrap();
        assert_eq!(
            (
                back.coordinators[0].host.as_str(),
                back.coordinators[0].port
            ),
            ("proxy-for-b", 6)
        );
        assert_eq!(
            (
                back.coordinators[1].host.as_str(),
                back.coordinators[1].port
            ),
            ("", -1)
        );
    }

    #[test]
    fn undecodable_responses_are_errors_not_panics() {
        let junk = Bytes::from_static(&[0, 0, 0, 1, 0xff, 0xff]);
        assert!(matches!(
            rewrite_frame(3, 12, junk.clone(), &mut to_proxy),
            Err(RewriteError::Decode(_))
        ));
        assert!(matches!(
            rewrite_frame(0, 9, junk, &mut to_proxy),
            Err(RewriteError::NotRewritten(0))
        ));
    }

    #[test]
    fn draws_stay_in_range_and_follow_the_seed() {
        let mut rng = SplitMix64::new(1);
        for _ in 0..1000 {
            let v = draw_u64(&mut rng, &(10..=20));
            assert!((10..=20).contains(&v));
            assert_eq!(draw_u64(&mut rng, &(7..=7)), 7);
            let reversed = draw_u64(&mut rng, &RangeInclusive::new(20, 10));
            assert!((10..=20).contains(&reversed));
        }
        assert_eq!(draw_u64(&mut rng, &(u64::MAX..=u64::MAX)), u64::MAX);
        // The full range must not overflow the span arithmetic.
        let _ = draw_u64(&mut rng, &(0..=u64::MAX));
        let plan = FaultPlan::none()
            .seed(9)
            .cut_after_bytes_to_client(0..=1_000_000);
        let a: Vec<_> = (0..5)
            .map(|i| Schedule::draw(&plan, i).bytes_to_client)
            .collect();
        let b: Vec<_> = (0..5)
            .map(|i| Schedule::draw(&plan, i).bytes_to_client)
            .collect();
        assert_eq!(a, b);
        assert!(
            a.windows(2).any(|w| w[0] != w[1]),
            "connections get different draws: {a:?}"
        );
        // Arming another trigger does not move this one's draws.
        let more = plan.clone().cut_after_responses(1..=100);
        let c: Vec<_> = (0..5)
            .map(|i| Schedule::draw(&more, i).bytes_to_client)
            .collect();
        assert_eq!(a, c);
    }
}
