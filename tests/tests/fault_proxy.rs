//! The fault-injecting proxy itself: faithful forwarding, each fault it can inject, seeded
//! jitter, and the broker-address rewriting that keeps clients on the proxy. The first group
//! runs against small local servers, so byte counts and frame boundaries are exact; the second
//! runs against the real broker (skipped without one, unless CI=true).

use std::net::SocketAddr;
use std::time::Duration;

use bus::{Connection, ConnectionConfig, RequestError};
use bytes::{Bytes, BytesMut};
use integration_tests::fault_proxy::{FaultPlan, FaultProxy, ProxyStats};
use integration_tests::{bootstrap, unique_topic};
use kafka_proto::envelope::{decode_request, decode_response, encode_request};
use kafka_proto::frame::begin_frame;
use kafka_proto::messages::find_coordinator_response::Coordinator;
use kafka_proto::messages::metadata_response::MetadataResponseBroker;
use kafka_proto::messages::{
    FindCoordinatorRequest, FindCoordinatorResponse, MetadataRequest, MetadataResponse,
    ResponseHeader,
};
use kafka_proto::version::{client_versions, response_header_version};
use kafka_proto::{ApiKey, Encode, ErrorCode, FrameSplitter, Request, Response, VersionRange};
use partitioner::{RandomSource, SplitMix64};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, timeout};

/// How long any single step may take before the test calls it a hang. Generous: the machine
/// running the tests may be busy, and only lower bounds on time are ever asserted.
const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Local servers and helpers
// ---------------------------------------------------------------------------------------------

async fn local_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Echoes every connection's bytes back.
async fn echo_server() -> SocketAddr {
    let (listener, addr) = local_listener().await;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// On every connection, writes `blob`, then reads until the peer closes and reports how many
/// bytes it received. A report arriving at all proves the proxy closed the upstream side.
async fn blob_server(blob: Vec<u8>) -> (SocketAddr, mpsc::UnboundedReceiver<usize>) {
    let (listener, addr) = local_listener().await;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let blob = blob.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = stream.write_all(&blob).await;
                let mut received = 0;
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    received += n;
                }
                let _ = tx.send(received);
            });
        }
    });
    (addr, rx)
}

/// Reads until end of stream or an error, returning what arrived.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match timeout(PATIENCE, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "connection still open after {PATIENCE:?}; got {} bytes",
                got.len()
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Asserts that a connection to `addr` is closed on arrival without a byte of service. The
/// proxy resets a refused connection straight after accepting it, so depending on timing the
/// client sees that as a failed connect or as a reset or end of stream on its first read.
async fn assert_refused(addr: SocketAddr) {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return;
    };
    let _ = stream.write_all(b"anyone?").await;
    assert!(read_until_closed(&mut stream).await.is_empty());
}

/// Writes `data` and reads the same number of bytes back, returning them.
async fn ping(stream: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    stream.write_all(data).await.unwrap();
    let mut back = vec![0u8; data.len()];
    timeout(PATIENCE, stream.read_exact(&mut back))
        .await
        .expect("echo within patience")
        .expect("echo arrives");
    back
}

/// Polls `condition` until it holds, for counters that settle just after the bytes they count.
async fn eventually(what: &str, proxy: &FaultProxy, condition: impl Fn(&ProxyStats) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let stats = proxy.stats();
        if condition(&stats) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never true; stats {stats:?}"
        );
        sleep(Duration::from_millis(10)).await;
    }
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut f = i32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// A seeded stream of request-shaped frames (api key 0, so never rewritten) of varied sizes.
fn frames_stream(seed: u64, count: usize) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    let mut wire = Vec::new();
    for i in 0..count {
        let len = 8 + (rng.next_u64() % 3000) as usize;
        let mut body: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        body[..8].copy_from_slice(&[0, 0, 0, 9, 0, 0, 0, i as u8]);
        wire.extend(framed(&body));
    }
    wire
}

// ---------------------------------------------------------------------------------------------
// Without a broker
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_everything_faithfully_without_faults() {
    let proxy = FaultProxy::start(&echo_server().await.to_string(), FaultPlan::none()).unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    let wire = frames_stream(1, 200);
    // Written in odd-sized pieces, read concurrently, so chunking never lines up with frames.
    let (mut r, mut w) = client.split();
    let writer = async {
        let mut rng = SplitMix64::new(2);
        let mut rest = &wire[..];
        while !rest.is_empty() {
            let n = (1 + (rng.next_u64() % 5000) as usize).min(rest.len());
            w.write_all(&rest[..n]).await.unwrap();
            rest = &rest[n..];
        }
    };
    let reader = async {
        let mut back = vec![0u8; wire.len()];
        timeout(PATIENCE, r.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        back
    };
    let ((), back) = tokio::join!(writer, reader);
    assert!(back == wire, "echo differs from what was sent");
    let len = wire.len() as u64;
    eventually("all bytes counted", &proxy, |s| {
        s.bytes_to_broker == len && s.bytes_to_client == len
    })
    .await;
    let stats = proxy.stats();
    assert_eq!(stats.connections_accepted, 1);
    assert_eq!(stats.connections_open, 1);
    assert_eq!(stats.connections_cut, 0);
    assert_eq!(stats.frames_rewritten, 0);
    assert_eq!(stats.rewrite_failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_that_is_not_kafka_framing_passes_through_unchanged() {
    let proxy = FaultProxy::start(&echo_server().await.to_string(), FaultPlan::none()).unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    // A Metadata v12 request whose correlation id equals its key and version, so its echo
    // reads as the response to it; then a negative size, after which the proxy must stop
    // interpreting the stream.
    let mut wire = framed(&[0, 3, 0, 12, 0, 3, 0, 12]);
    wire.extend_from_slice(&(-5i32).to_be_bytes());
    let mut rng = SplitMix64::new(3);
    wire.extend((0..5000).map(|_| rng.next_u64() as u8));
    assert_eq!(ping(&mut client, &wire).await, wire);
    // The echoed "request" came back as a response to a Metadata request and could not be
    // decoded as one: forwarded unchanged and counted, never dropped.
    eventually("failure counted", &proxy, |s| s.rewrite_failures == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuts_after_n_bytes_from_the_broker_even_mid_frame() {
    let blob = framed(&[7u8; 1000]);
    let (upstream, mut server) = blob_server(blob.clone()).await;
    let plan = FaultPlan::none().cut_after_bytes_to_client(37..=37);
    let proxy = FaultProxy::start(&upstream.to_string(), plan).unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    let got = read_until_closed(&mut client).await;
    assert_eq!(
        got,
        blob[..37],
        "exactly the first 37 bytes, then the close"
    );
    let upstream_saw = timeout(PATIENCE, server.recv()).await.unwrap().unwrap();
    assert_eq!(upstream_saw, 0, "the broker side was closed too");
    let stats = proxy.stats();
    assert_eq!(stats.connections_cut, 1);
    assert_eq!(stats.bytes_to_client, 37);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuts_after_n_bytes_to_the_broker() {
    let (upstream, mut server) = blob_server(Vec::new()).await;
    let plan = FaultPlan::none().cut_after_bytes_to_broker(100..=100);
    let proxy = FaultProxy::start(&upstream.to_string(), plan).unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    // The write may or may not see the close, depending on when it lands; either is fine.
    let _ = client.write_all(&[1u8; 1000]).await;
    let upstream_saw = timeout(PATIENCE, server.recv()).await.unwrap().unwrap();
    assert_eq!(upstream_saw, 100);
    assert!(read_until_closed(&mut client).await.is_empty());
    assert_eq!(proxy.stats().connections_cut, 1);
    assert_eq!(proxy.stats().bytes_to_broker, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuts_after_n_response_frames_at_the_frame_boundary() {
    let plan = FaultPlan::none().cut_after_responses(3..=3);
    let proxy = FaultProxy::start(&echo_server().await.to_string(), plan).unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    for i in 0..3u8 {
        let request = framed(&[i; 50]);
        assert_eq!(ping(&mut client, &request).await, request);
    }
    assert!(
        read_until_closed(&mut client).await.is_empty(),
        "closed right after the third whole response"
    );
    assert_eq!(proxy.stats().connections_cut, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuts_a_connection_once_it_has_been_open_long_enough() {
    let plan = FaultPlan::none()
        .cut_after_elapsed(Duration::from_millis(300)..=Duration::from_millis(300));
    let proxy = FaultProxy::start(&echo_server().await.to_string(), plan).unwrap();
    let started = Instant::now();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(ping(&mut client, b"early").await, b"early");
    assert!(read_until_closed(&mut client).await.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(proxy.stats().connections_cut, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_all_holds_traffic_for_the_whole_stall() {
    let proxy = FaultProxy::start(&echo_server().await.to_string(), FaultPlan::none()).unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(ping(&mut client, b"warm").await, b"warm");
    let stall = Duration::from_millis(300);
    let started = Instant::now();
    proxy.stall_all(stall);
    assert_eq!(ping(&mut client, b"held").await, b"held");
    assert!(
        started.elapsed() >= stall,
        "answered after {:?}, inside a {stall:?} stall",
        started.elapsed()
    );
    // Nothing is lost or cut by a stall.
    assert_eq!(ping(&mut client, b"after").await, b"after");
    assert_eq!(proxy.stats().connections_cut, 0);
    // An endless stall is a request, not an overflow; cutting still works during it.
    proxy.stall_all(Duration::MAX);
    client.write_all(b"never").await.unwrap();
    assert_eq!(proxy.cut_all(), 1);
    assert!(read_until_closed(&mut client).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_stalls_hold_traffic() {
    let length = Duration::from_millis(400);
    let plan = FaultPlan::none().stall_every(
        Duration::from_millis(100)..=Duration::from_millis(100),
        length..=length,
    );
    let proxy = FaultProxy::start(&echo_server().await.to_string(), plan).unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    // Ping continuously across the first stall (100 ms to 500 ms after accept). The first ping
    // sent after it starts waits for the rest of it; allow plenty for a slow scheduler.
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    let mut n = 0u32;
    while started.elapsed() < Duration::from_millis(800) {
        let data = n.to_be_bytes();
        let sent = Instant::now();
        assert_eq!(ping(&mut client, &data).await, data);
        slowest = slowest.max(sent.elapsed());
        n += 1;
    }
    assert!(
        slowest >= Duration::from_millis(200),
        "no ping was held: slowest {slowest:?}"
    );
    assert!(proxy.stats().stalls >= 1);
    assert_eq!(proxy.stats().connections_cut, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_all_closes_every_open_connection() {
    let proxy = FaultProxy::start(&echo_server().await.to_string(), FaultPlan::none()).unwrap();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(ping(&mut c, b"hi").await, b"hi");
        clients.push(c);
    }
    assert_eq!(proxy.cut_all(), 3);
    for c in &mut clients {
        assert!(read_until_closed(c).await.is_empty());
    }
    assert_eq!(proxy.stats().connections_cut, 3);
    eventually("all closed", &proxy, |s| s.connections_open == 0).await;
    // The proxy itself keeps working.
    let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(ping(&mut again, b"again").await, b"again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_on_cut_closes_with_a_reset() {
    let plan = FaultPlan::none().reset_on_cut(true);
    let proxy = FaultProxy::start(&echo_server().await.to_string(), plan).unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(ping(&mut client, b"hi").await, b"hi");
    assert_eq!(proxy.cut_all(), 1);
    let mut buf = [0u8; 8];
    let read = timeout(PATIENCE, client.read(&mut buf)).await.unwrap();
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_connections_for_a_while_then_accepts_again() {
    let proxy = FaultProxy::start(&echo_server().await.to_string(), FaultPlan::none()).unwrap();
    let window = Duration::from_millis(300);
    let started = Instant::now();
    proxy.refuse_connections_for(window);
    assert_refused(proxy.addr()).await;
    assert_eq!(proxy.stats().connections_refused, 1);
    assert_eq!(proxy.stats().connections_accepted, 0);
    sleep(window.saturating_sub(started.elapsed()) + Duration::from_millis(50)).await;
    let mut accepted = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(ping(&mut accepted, b"back").await, b"back");
    assert_eq!(proxy.stats().connections_accepted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_cuts_stop_at_the_cap_and_refuse_reconnects_briefly() {
    let window = Duration::from_millis(300);
    let plan = FaultPlan::none()
        .cut_after_bytes_to_client(1..=1)
        .refuse_after_cut(window)
        .max_cuts(1);
    let proxy = FaultProxy::start(&echo_server().await.to_string(), plan).unwrap();

    let mut first = TcpStream::connect(proxy.addr()).await.unwrap();
    let cut_at = Instant::now();
    first.write_all(b"hello").await.unwrap();
    assert_eq!(read_until_closed(&mut first).await, b"h");

    // Straight after the cut the "broker" is away.
    assert_refused(proxy.addr()).await;
    assert_eq!(proxy.stats().connections_refused, 1);

    // After the window, and with the single allowed cut used up, everything goes through.
    sleep(window.saturating_sub(cut_at.elapsed()) + Duration::from_millis(50)).await;
    let mut third = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(ping(&mut third, b"hello again").await, b"hello again");
    assert_eq!(proxy.stats().connections_cut, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_can_be_switched_off_and_on() {
    let plan = FaultPlan::none().cut_after_bytes_to_client(2..=2);
    let proxy = FaultProxy::start(&echo_server().await.to_string(), plan).unwrap();
    proxy.set_faults_enabled(false);
    let mut calm = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(ping(&mut calm, b"untouched").await, b"untouched");
    proxy.set_faults_enabled(true);
    let mut cut = TcpStream::connect(proxy.addr()).await.unwrap();
    cut.write_all(b"untouched").await.unwrap();
    assert_eq!(read_until_closed(&mut cut).await, b"un");
    // A trigger disarmed while faults were off stays disarmed on that connection.
    assert_eq!(ping(&mut calm, b"still fine").await, b"still fine");
}

/// The bytes each of `n` sequential connections gets before its cut.
async fn cut_points(upstream: SocketAddr, seed: u64, n: usize) -> Vec<usize> {
    let plan = FaultPlan::none()
        .seed(seed)
        .cut_after_bytes_to_client(10..=500);
    let proxy = FaultProxy::start(&upstream.to_string(), plan).unwrap();
    let mut points = Vec::new();
    for _ in 0..n {
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        points.push(read_until_closed(&mut client).await.len());
    }
    points
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_is_drawn_per_connection_and_replays_with_the_seed() {
    let (upstream, _server) = blob_server(vec![1u8; 1000]).await;
    let a = cut_points(upstream, 42, 6).await;
    let b = cut_points(upstream, 42, 6).await;
    let c = cut_points(upstream, 43, 6).await;
    assert!(a.iter().all(|p| (10..=500).contains(p)), "{a:?}");
    assert_eq!(a, b, "same seed, same cuts");
    assert_ne!(a, c, "another seed, other cuts");
    assert!(a.windows(2).any(|w| w[0] != w[1]), "cut points vary: {a:?}");
}

#[tokio::test]
async fn start_rejects_an_upstream_without_a_port() {
    for bad in ["localhost", "localhost:", ":9092", "host:99999"] {
        let err = FaultProxy::start(bad, FaultPlan::none()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{bad}");
    }
}

#[test]
fn start_outside_a_runtime_is_an_error_not_a_panic() {
    assert!(FaultProxy::start("127.0.0.1:9092", FaultPlan::none()).is_err());
}

// ---------------------------------------------------------------------------------------------
// Address rewriting against fake brokers
// ---------------------------------------------------------------------------------------------

fn response_frame<R: Response>(correlation_id: i32, version: i16, body: &R) -> BytesMut {
    let mut buf = BytesMut::new();
    let start = begin_frame(&mut buf);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    header
        .encode(&mut buf, response_header_version(R::API_KEY, version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    kafka_proto::frame::finish_frame(&mut buf, start).unwrap();
    buf
}

fn metadata_naming(cluster: &str, brokers: &[(i32, SocketAddr)]) -> MetadataResponse {
    let mut resp = MetadataResponse::default();
    resp.cluster_id = Some(cluster.into());
    resp.controller_id = 1;
    for (id, addr) in brokers {
        let mut b = MetadataResponseBroker::default();
        b.node_id = *id;
        b.host = addr.ip().to_string();
        b.port = i32::from(addr.port());
        resp.brokers.push(b);
    }
    resp
}

/// A broker that answers Metadata with `brokers`, FindCoordinator with `coordinator`, and
/// anything else with a Metadata-shaped body, which the proxy must leave alone because no
/// Metadata request asked for it.
fn fake_broker(
    listener: TcpListener,
    cluster: &'static str,
    brokers: Vec<(i32, SocketAddr)>,
    coordinator: (i32, SocketAddr),
) {
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let brokers = brokers.clone();
            tokio::spawn(async move {
                let mut splitter = FrameSplitter::with_max_frame_size(1 << 20);
                loop {
                    let frame = match splitter.next_frame() {
                        Ok(Some(frame)) => frame,
                        Ok(None) => match stream.read_buf(splitter.recv_buffer(4096)).await {
                            Ok(1..) => continue,
                            _ => return,
                        },
                        Err(_) => return,
                    };
                    let key = i16::from_be_bytes([frame[0], frame[1]]);
                    let version = i16::from_be_bytes([frame[2], frame[3]]);
                    let id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
                    let reply = match ApiKey::from_i16(key) {
                        Some(ApiKey::Metadata) => {
                            response_frame(id, version, &metadata_naming(cluster, &brokers))
                        }
                        Some(ApiKey::FindCoordinator) => {
                            let (_, req) =
                                decode_request::<FindCoordinatorRequest>(frame.clone()).unwrap();
                            let (node, addr) = coordinator;
                            let mut resp = FindCoordinatorResponse::default();
                            if version < 4 {
                                resp.node_id = node;
                                resp.host = addr.ip().to_string();
                                resp.port = i32::from(addr.port());
                            }
                            for key in req.coordinator_keys {
                                let mut c = Coordinator::default();
                                c.key = key;
                                c.node_id = node;
                                c.host = addr.ip().to_string();
                                c.port = i32::from(addr.port());
                                resp.coordinators.push(c);
                            }
                            response_frame(id, version, &resp)
                        }
                        _ => response_frame(id, 12, &metadata_naming(cluster, &brokers)),
                    };
                    if stream.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// Sends one request and returns its response frame (without the size prefix).
async fn request<R: Request>(stream: &mut TcpStream, req: &R, version: i16, id: i32) -> Bytes {
    let mut buf = BytesMut::new();
    encode_request(&mut buf, version, id, Some("fault-proxy-test"), req).unwrap();
    stream.write_all(&buf).await.unwrap();
    read_frame(stream).await
}

async fn read_frame(stream: &mut TcpStream) -> Bytes {
    let mut size = [0u8; 4];
    timeout(PATIENCE, stream.read_exact(&mut size))
        .await
        .unwrap()
        .unwrap();
    let size = usize::try_from(i32::from_be_bytes(size)).unwrap();
    assert!(size < 1 << 20, "implausible frame size {size}");
    let mut body = vec![0u8; size];
    timeout(PATIENCE, stream.read_exact(&mut body))
        .await
        .unwrap()
        .unwrap();
    Bytes::from(body)
}

fn metadata_request(version: i16) -> MetadataRequest {
    let mut req = MetadataRequest::default();
    // v0 has no null "all topics" and reads an empty list as all; later an empty list is none.
    req.topics = Some(vec![]);
    if version < 4 {
        req.allow_auto_topic_creation = true; // the only value versions before 4 can carry
    }
    req
}

fn find_coordinator_request(version: i16, group: &str) -> FindCoordinatorRequest {
    let mut req = FindCoordinatorRequest::default();
    req.key_type = 0; // group
    if version < 4 {
        req.key = group.into();
    } else {
        req.coordinator_keys = vec![group.into()];
    }
    req
}

/// (host, port) of the coordinator in a FindCoordinator response, at either shape.
fn coordinator_of(resp: &FindCoordinatorResponse, version: i16) -> (i16, String, i32) {
    if version < 4 {
        (resp.error_code, resp.host.clone(), resp.port)
    } else {
        let c = &resp.coordinators[0];
        (c.error_code, c.host.clone(), c.port)
    }
}

fn hosts(resp: &MetadataResponse) -> Vec<(i32, String, i32)> {
    resp.brokers
        .iter()
        .map(|b| (b.node_id, b.host.clone(), b.port))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_every_advertised_broker_to_a_listener_of_its_own() {
    let (listener_a, a) = local_listener().await;
    let (listener_b, b) = local_listener().await;
    let brokers = vec![(1, a), (2, b)];
    fake_broker(listener_a, "A", brokers.clone(), (2, b));
    fake_broker(listener_b, "B", brokers, (2, b));
    let proxy = FaultProxy::start(&a.to_string(), FaultPlan::none()).unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();

    let metadata_versions = client_versions(ApiKey::Metadata).unwrap();
    let mut via_b = None;
    let mut id = 0;
    for version in metadata_versions.iter() {
        id += 1;
        let frame = request(&mut client, &metadata_request(version), version, id).await;
        let (header, resp) = decode_response::<MetadataResponse>(frame, version).unwrap();
        assert_eq!(header.correlation_id, id);
        let got = hosts(&resp);
        assert_eq!(got.len(), 2, "v{version}");
        assert_eq!(
            got[0],
            (1, "127.0.0.1".into(), i32::from(proxy.addr().port())),
            "v{version}: the bootstrap broker maps to the bootstrap listener"
        );
        assert_eq!(got[1].1, "127.0.0.1", "v{version}");
        assert_ne!(got[1].2, i32::from(proxy.addr().port()), "v{version}");
        assert_ne!(
            got[1].2,
            i32::from(b.port()),
            "v{version}: must not leak the real port"
        );
        assert_eq!(
            *via_b.get_or_insert(got[1].2),
            got[1].2,
            "v{version}: one listener per upstream"
        );
        if version >= 2 {
            assert_eq!(resp.cluster_id.as_deref(), Some("A"));
        }
    }
    let b_port = u16::try_from(via_b.unwrap()).unwrap();
    let b_listener: SocketAddr = ([127, 0, 0, 1], b_port).into();
    let mut expected = vec![(a.to_string(), proxy.addr()), (b.to_string(), b_listener)];
    expected.sort();
    assert_eq!(proxy.listeners(), expected);

    // The second listener really leads to broker B, and B's answer is rewritten the same way.
    let mut to_b = TcpStream::connect(b_listener).await.unwrap();
    let frame = request(&mut to_b, &metadata_request(12), 12, 1).await;
    let (_, resp) = decode_response::<MetadataResponse>(frame, 12).unwrap();
    assert_eq!(resp.cluster_id.as_deref(), Some("B"));
    assert_eq!(
        hosts(&resp),
        vec![
            (1, "127.0.0.1".into(), i32::from(proxy.addr().port())),
            (2, "127.0.0.1".into(), i32::from(b_port)),
        ]
    );

    // FindCoordinator at every version, both the top-level and the per-key shapes.
    let fc_versions = client_versions(ApiKey::FindCoordinator).unwrap();
    for version in fc_versions.iter() {
        id += 1;
        let req = find_coordinator_request(version, "g");
        let frame = request(&mut client, &req, version, id).await;
        let (_, resp) = decode_response::<FindCoordinatorResponse>(frame, version).unwrap();
        assert_eq!(
            coordinator_of(&resp, version),
            (0, "127.0.0.1".into(), i32::from(b_port)),
            "FindCoordinator v{version}"
        );
    }

    // A response to anything else is forwarded byte for byte, even if it looks like Metadata.
    let mut opaque = vec![0, 0, 0, 3, 0, 0, 0, 0];
    opaque[4..8].copy_from_slice(&77i32.to_be_bytes());
    opaque.extend_from_slice(&[0xff, 0xff]); // null client id
    let mut direct = TcpStream::connect(a).await.unwrap();
    direct.write_all(&framed(&opaque)).await.unwrap();
    client.write_all(&framed(&opaque)).await.unwrap();
    assert_eq!(read_frame(&mut client).await, read_frame(&mut direct).await);

    let expected = u64::from((metadata_versions.max - metadata_versions.min + 1) as u16)
        + 1
        + u64::from((fc_versions.max - fc_versions.min + 1) as u16);
    eventually("rewrites counted", &proxy, |s| {
        s.frames_rewritten == expected
    })
    .await;
    assert_eq!(proxy.stats().rewrite_failures, 0);
}

// ---------------------------------------------------------------------------------------------
// Against the real broker
// ---------------------------------------------------------------------------------------------

fn usable(conn: &Connection, api: ApiKey) -> VersionRange {
    conn.broker_versions()
        .get(api)
        .and_then(|b| b.intersect(&client_versions(api).unwrap()))
        .unwrap_or_else(|| panic!("no {api:?} version in common with the broker"))
}

/// The proxy listener for the broker a direct response advertised.
fn listener_for(proxy: &FaultProxy, host: &str, port: i32) -> (String, i32) {
    let upstream = format!("{host}:{port}");
    let addr = proxy
        .listeners()
        .into_iter()
        .find(|(u, _)| *u == upstream)
        .map(|(_, addr)| addr)
        .unwrap_or_else(|| panic!("no listener for {upstream}: {:?}", proxy.listeners()));
    (addr.ip().to_string(), i32::from(addr.port()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_metadata_through_the_proxy_names_only_the_proxy() {
    let Some(upstream) = bootstrap() else { return };
    let proxy = FaultProxy::start(&upstream, FaultPlan::none()).unwrap();
    let config = ConnectionConfig::default;
    let direct = Connection::connect(&upstream, config()).await.unwrap();
    let via = Connection::connect(&proxy.addr().to_string(), config())
        .await
        .unwrap();
    let versions = usable(&via, ApiKey::Metadata);
    assert!(
        versions.max - versions.min >= 4,
        "expected a range of Metadata versions, got {versions:?}"
    );
    let mut rewritten = 0;
    for version in versions.iter() {
        let req = metadata_request(version);
        let real = direct.send_at(&req, version).await.unwrap();
        let seen = via.send_at(&req, version).await.unwrap();
        rewritten += 1;
        assert!(!seen.brokers.is_empty(), "v{version}: no brokers");
        // Everything but broker addresses is as the broker sent it. v0 lists every topic,
        // which other tests may be changing, so only its brokers are compared.
        let mut expected = real.clone();
        for b in &mut expected.brokers {
            (b.host, b.port) = listener_for(&proxy, &b.host, b.port);
        }
        if version == 0 {
            assert_eq!(seen.brokers, expected.brokers, "v{version}");
        } else {
            assert_eq!(seen, expected, "v{version}");
        }
    }
    // Clients following the rewritten addresses stay on the proxy and get answers.
    let first = via
        .send_at(&metadata_request(versions.max), versions.max)
        .await
        .unwrap();
    rewritten += 1;
    for b in &first.brokers {
        let follower = Connection::connect(&format!("{}:{}", b.host, b.port), config())
            .await
            .unwrap();
        follower
            .send_at(&metadata_request(versions.max), versions.max)
            .await
            .unwrap();
        rewritten += 1;
    }
    let stats = proxy.stats();
    assert!(stats.connections_accepted >= 2, "{stats:?}");
    assert_eq!(stats.rewrite_failures, 0);
    assert_eq!(stats.frames_rewritten, rewritten);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_find_coordinator_through_the_proxy_names_only_the_proxy() {
    let Some(upstream) = bootstrap() else { return };
    let proxy = FaultProxy::start(&upstream, FaultPlan::none()).unwrap();
    let direct = Connection::connect(&upstream, ConnectionConfig::default())
        .await
        .unwrap();
    let via = Connection::connect(&proxy.addr().to_string(), ConnectionConfig::default())
        .await
        .unwrap();
    let group = unique_topic("fault-proxy-group");
    for version in usable(&via, ApiKey::FindCoordinator).iter() {
        let req = find_coordinator_request(version, &group);
        // A new group's coordinator may take a moment to be ready.
        let mut attempts = 0;
        let (real, seen) = loop {
            let real = direct.send_at(&req, version).await.unwrap();
            let seen = via.send_at(&req, version).await.unwrap();
            let codes = [
                coordinator_of(&real, version).0,
                coordinator_of(&seen, version).0,
            ];
            if codes.iter().all(|c| *c == 0) {
                break (real, seen);
            }
            attempts += 1;
            assert!(
                attempts < 40
                    && codes
                        .iter()
                        .all(|c| ErrorCode::from_code(*c).is_retriable()),
                "FindCoordinator v{version}: error codes {codes:?}"
            );
            sleep(Duration::from_millis(250)).await;
        };
        let (_, real_host, real_port) = coordinator_of(&real, version);
        let (_, host, port) = coordinator_of(&seen, version);
        assert_eq!(
            (host, port),
            listener_for(&proxy, &real_host, real_port),
            "FindCoordinator v{version}"
        );
    }
    assert_eq!(proxy.stats().rewrite_failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_inside_a_broker_response_fails_the_request_instead_of_hanging() {
    let Some(upstream) = bootstrap() else { return };
    // Learn how many bytes the handshake takes, so the cut can be aimed just past it.
    let probe = FaultProxy::start(&upstream, FaultPlan::none()).unwrap();
    let conn = Connection::connect(&probe.addr().to_string(), ConnectionConfig::default())
        .await
        .unwrap();
    let version = usable(&conn, ApiKey::Metadata).max;
    probe.cut_all();
    eventually("probe closed", &probe, |s| s.connections_open == 0).await;
    let handshake = probe.stats().bytes_to_client;
    assert!(handshake > 0);

    let at = handshake + 20;
    let plan = FaultPlan::none().cut_after_bytes_to_client(at..=at);
    let proxy = FaultProxy::start(&upstream, plan).unwrap();
    let config = ConnectionConfig::default().request_timeout(PATIENCE);
    let conn = Connection::connect(&proxy.addr().to_string(), config)
        .await
        .unwrap();
    let result = conn.send_at(&metadata_request(version), version).await;
    assert!(
        matches!(result, Err(RequestError::ConnectionClosed { .. })),
        "expected the connection to be closed under the request, got {result:?}"
    );
    assert!(conn.is_closed());
    let stats = proxy.stats();
    assert_eq!(
        stats.bytes_to_client, at,
        "cut 20 bytes into the Metadata response"
    );
    assert_eq!(stats.connections_cut, 1);
}
