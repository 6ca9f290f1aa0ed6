//! An in-process fake Kafka cluster in the manner of franz-go's kfake: N brokers (node ids
//! `0..N`) that speak the real wire protocol, decoded and encoded with `kafka_proto`, reached
//! by the real `bus` client through its [`Dial`] hook over `tokio::io::duplex` pipes. Nothing
//! touches a socket or the wall clock, so under `#[tokio::test(start_paused = true)]` every
//! session timeout, rebalance timeout and fetch wait runs in virtual time, deterministically.
//!
//! It serves ApiVersions, Metadata, CreateTopics, InitProducerId, Produce, Fetch, ListOffsets,
//! FindCoordinator, the classic group protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups; see [`group`]), and
//! lets a test inject faults per API key ([`FakeCluster::hook`]), move group coordinators and
//! partition leaders, end member sessions, cut connections and read back group state and a log
//! of every request.
//!
//! Brokers advertise `fake-<node>:9092`; [`FakeCluster::dialer`] maps those names (and
//! `fake:9092`, for bootstrap) to nodes.

pub mod group;
pub mod hooks;
mod log;
mod serve;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::connection::{BoxTransport, Dial, DialFuture, Dialer};
use bus::{ClientConfig, ConnectionConfig};
use kafka_proto::{ApiKey, ErrorCode};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

pub use group::{Committed, GroupSnapshot, GroupState, MemberSnapshot};
pub use hooks::{Action, HookCtx};

use group::Coordinator;
use hooks::{Hook, Hooks};
use log::Logs;
pub use log::MAX_PARTITIONS;

/// The port every fake broker advertises.
const PORT: u16 = 9092;

/// The APIs the fake serves and the highest version it advertises of each: everything this
/// crate's client can send (the spec's stable range), so the client negotiates its newest.
const SERVED: &[(ApiKey, i16)] = &[
    (ApiKey::Produce, 11),
    (ApiKey::Fetch, 17),
    (ApiKey::ListOffsets, 10),
    (ApiKey::Metadata, 12),
    (ApiKey::OffsetCommit, 9),
    (ApiKey::OffsetFetch, 9),
    (ApiKey::FindCoordinator, 6),
    (ApiKey::JoinGroup, 9),
    (ApiKey::Heartbeat, 4),
    (ApiKey::LeaveGroup, 5),
    (ApiKey::SyncGroup, 5),
    (ApiKey::DescribeGroups, 5),
    (ApiKey::ListGroups, 5),
    (ApiKey::ApiVersions, 4),
    (ApiKey::CreateTopics, 7),
    (ApiKey::InitProducerId, 5),
    (ApiKey::DeleteGroups, 2),
];

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    pub node: i32,
    pub api: ApiKey,
    pub version: i16,
    pub at: Instant,
    /// The group a group API names.
    pub group: Option<String>,
    pub client_id: Option<String>,
}

pub(crate) struct Inner {
    nodes: i32,
    logs: Mutex<Logs>,
    coord: Mutex<Coordinator>,
    coordinator_overrides: Mutex<BTreeMap<String, i32>>,
    hooks: Mutex<Hooks>,
    log: Mutex<Vec<LoggedRequest>>,
    /// Bumped on every append, so waiting fetches re-check.
    appended: watch::Sender<u64>,
    /// Wakes the group driver after a state change (new deadlines).
    wake: Notify,
    /// Per node: bumped to close every open session of that node.
    kill: Vec<watch::Sender<u64>>,
    down: Mutex<BTreeSet<i32>>,
    producer_ids: AtomicI64,
    connections: Mutex<Vec<u64>>,
    /// Loopback ports per node once [`FakeCluster::listen_tcp`] ran; advertised instead of
    /// `fake-<n>:9092`.
    tcp_ports: Mutex<Option<Vec<u16>>>,
}

impl Inner {
    /// The address a node advertises in Metadata and FindCoordinator.
    fn address(&self, node: i32) -> (String, i32) {
        match &*self.tcp_ports.lock().unwrap() {
            Some(ports) => ("127.0.0.1".into(), ports[node as usize] as i32),
            None => (format!("fake-{node}"), PORT as i32),
        }
    }

    /// A group's coordinator: a test's override, else a fixed hash of the name.
    fn coordinator_for(&self, group: &str) -> i32 {
        if let Some(n) = self.coordinator_overrides.lock().unwrap().get(group) {
            return *n;
        }
        let h = group
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
        (h % self.nodes as u32) as i32
    }
}

/// A fake cluster. Cheap to clone; every clone is the same cluster.
#[derive(Clone)]
pub struct FakeCluster {
    inner: Arc<Inner>,
}

impl FakeCluster {
    /// Starts `nodes` brokers. Must be called inside a tokio runtime: it spawns the task that
    /// ends sessions and join phases on the tokio clock.
    pub fn new(nodes: i32) -> FakeCluster {
        assert!(nodes >= 1, "a cluster needs a broker");
        let inner = Arc::new(Inner {
            nodes,
            logs: Mutex::new(Logs::default()),
            coord: Mutex::new(Coordinator::default()),
            coordinator_overrides: Mutex::new(BTreeMap::new()),
            hooks: Mutex::new(Hooks::default()),
            log: Mutex::new(Vec::new()),
            appended: watch::channel(0).0,
            wake: Notify::new(),
            kill: (0..nodes).map(|_| watch::channel(0).0).collect(),
            down: Mutex::new(BTreeSet::new()),
            producer_ids: AtomicI64::new(1000),
            connections: Mutex::new(vec![0; nodes as usize]),
            tcp_ports: Mutex::new(None),
        });
        // The driver holds the cluster for as long as the runtime runs; tests are short.
        let driver = inner.clone();
        tokio::spawn(async move {
            loop {
                let next = driver.coord.lock().unwrap().next_deadline();
                let far = Instant::now() + Duration::from_secs(86_400);
                tokio::select! {
                    _ = tokio::time::sleep_until(next.unwrap_or(far)) => {}
                    _ = driver.wake.notified() => {}
                }
                driver.coord.lock().unwrap().tick(Instant::now());
            }
        });
        FakeCluster { inner }
    }

    /// Like [`new`](Self::new), with `topics` created: `(name, partitions)`.
    pub fn with_topics(nodes: i32, topics: &[(&str, i32)]) -> FakeCluster {
        let fake = FakeCluster::new(nodes);
        for (name, partitions) in topics {
            fake.create_topic(name, *partitions);
        }
        fake
    }

    /// The bootstrap address for a client: node 0's advertised name.
    pub fn bootstrap(&self) -> String {
        format!("fake-0:{PORT}")
    }

    /// The dialer that connects a client to this cluster.
    pub fn dialer(&self) -> Dialer {
        Dialer::new(FakeDial {
            inner: self.inner.clone(),
        })
    }

    /// A client config that reaches this cluster, with short backoffs that suit virtual time.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::new([self.bootstrap()])
            .connection(ConnectionConfig::default().dialer(self.dialer()))
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        self.inner
            .logs
            .lock()
            .unwrap()
            .create(name, partitions, self.inner.nodes)
            .unwrap_or_else(|e| panic!("create {name}: {e:?}"));
    }

    /// Makes `node` the leader of a partition, bumping its leader epoch.
    pub fn move_leader(&self, topic: &str, partition: i32, node: i32) {
        let mut logs = self.inner.logs.lock().unwrap();
        let p = logs
            .partition_mut(topic, partition)
            .expect("no such partition");
        p.leader = node;
        p.leader_epoch += 1;
    }

    pub fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        self.inner
            .logs
            .lock()
            .unwrap()
            .partition(topic, partition)
            .map(|p| p.leader)
    }

    /// The partition's high watermark (next offset to be written).
    pub fn high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        self.inner
            .logs
            .lock()
            .unwrap()
            .partition(topic, partition)
            .map(|p| p.high_watermark)
    }

    /// `(base offset, last offset)` of every stored batch of a partition.
    pub fn batches(&self, topic: &str, partition: i32) -> Vec<(i64, i64)> {
        self.inner
            .logs
            .lock()
            .unwrap()
            .partition(topic, partition)
            .map(|p| p.batches.iter().map(|b| (b.base, b.last)).collect())
            .unwrap_or_default()
    }

    /// Moves `group`'s coordinator: the old node answers NOT_COORDINATOR from now on. The
    /// group's state moves with it (Kafka's new coordinator reloads it from its log).
    pub fn move_coordinator(&self, group: &str, node: i32) {
        assert!((0..self.inner.nodes).contains(&node));
        self.inner
            .coordinator_overrides
            .lock()
            .unwrap()
            .insert(group.to_string(), node);
    }

    /// Kafka's `group.initial.rebalance.delay.ms` for groups formed from empty (default 0).
    pub fn set_initial_rebalance_delay(&self, d: Duration) {
        self.inner.coord.lock().unwrap().initial_delay = d;
    }

    /// A copy of the group's state, or `None` if it never existed (or was deleted).
    pub fn group_state(&self, group: &str) -> Option<GroupSnapshot> {
        self.inner
            .coord
            .lock()
            .unwrap()
            .groups
            .get(group)
            .map(|g| g.snapshot())
    }

    /// Ends a member's session now, as its session timeout would.
    pub fn expire_member(&self, group: &str, member_id: &str) -> bool {
        let done = self
            .inner
            .coord
            .lock()
            .unwrap()
            .expire(group, member_id, Instant::now());
        self.inner.wake.notify_one();
        done
    }

    /// Takes `node` down: its connections close and dials are refused until [`up`](Self::up).
    pub fn down(&self, node: i32) {
        self.inner.down.lock().unwrap().insert(node);
        self.inner.kill[node as usize].send_modify(|n| *n += 1);
    }

    pub fn up(&self, node: i32) {
        self.inner.down.lock().unwrap().remove(&node);
    }

    /// How many connections were ever dialed to `node`.
    pub fn connections(&self, node: i32) -> u64 {
        self.inner.connections.lock().unwrap()[node as usize]
    }

    /// Sets the hook for `api`, replacing any earlier one.
    pub fn hook(&self, api: ApiKey, f: impl FnMut(&HookCtx<'_>) -> Action + Send + 'static) {
        self.inner.hooks.lock().unwrap().by_key.insert(
            api,
            Hook {
                f: Box::new(f),
                once: false,
            },
        );
    }

    /// Sets a hook for `api` that removes itself after it first answers other than `Pass`.
    pub fn hook_once(&self, api: ApiKey, f: impl FnMut(&HookCtx<'_>) -> Action + Send + 'static) {
        self.inner.hooks.lock().unwrap().by_key.insert(
            api,
            Hook {
                f: Box::new(f),
                once: true,
            },
        );
    }

    /// Fails the next `n` requests of `api` with `code`, then serves normally again.
    pub fn fail_next(&self, api: ApiKey, n: u32, code: ErrorCode) {
        let mut left = n;
        self.hook(api, move |_| {
            if left == 0 {
                return Action::Pass;
            }
            left -= 1;
            Action::Error(code)
        });
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.inner.log.lock().unwrap().clone()
    }

    /// How many requests of `api` arrived (hooked ones included).
    pub fn count(&self, api: ApiKey) -> usize {
        self.inner
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.api == api)
            .count()
    }

    /// Also serves every node on a loopback TCP port, for clients that cannot take a dialer
    /// (a subprocess such as the `kbus` binary), and advertises those ports from now on.
    /// Returns the bootstrap address. Timers then run on the runtime's clock as usual, so use
    /// real time (no `start_paused`) with a subprocess.
    pub async fn listen_tcp(&self) -> io::Result<String> {
        let mut ports = Vec::new();
        for node in 0..self.inner.nodes {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            ports.push(listener.local_addr()?.port());
            let fake = self.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let _ = stream.set_nodelay(true);
                    fake.serve(node, stream);
                }
            });
        }
        let bootstrap = format!("127.0.0.1:{}", ports[0]);
        *self.inner.tcp_ports.lock().unwrap() = Some(ports);
        Ok(bootstrap)
    }

    /// Serves one connection on `stream` as `node`, e.g. a TCP socket accepted by the test.
    pub fn serve<S>(&self, node: i32, stream: S) -> tokio::task::JoinHandle<()>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        self.inner.connections.lock().unwrap()[node as usize] += 1;
        tokio::spawn(serve::session(self.inner.clone(), node, stream))
    }
}

struct FakeDial {
    inner: Arc<Inner>,
}

impl FakeDial {
    fn node_of(&self, addr: &str) -> Option<i32> {
        let (host, port) = addr.rsplit_once(':')?;
        if port.parse::<u16>().ok()? != PORT {
            return None;
        }
        if host == "fake" {
            return Some(0);
        }
        let node: i32 = host.strip_prefix("fake-")?.parse().ok()?;
        (0..self.inner.nodes).contains(&node).then_some(node)
    }
}

impl Dial for FakeDial {
    fn dial<'a>(&'a self, addr: &'a str) -> DialFuture<'a> {
        Box::pin(async move {
            let Some(node) = self.node_of(addr) else {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no fake broker at {addr}"),
                ));
            };
            if self.inner.down.lock().unwrap().contains(&node) {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("fake broker {node} is down"),
                ));
            }
            let (client, server) = tokio::io::duplex(1 << 20);
            self.inner.connections.lock().unwrap()[node as usize] += 1;
            tokio::spawn(serve::session(self.inner.clone(), node, server));
            Ok(Box::new(client) as BoxTransport)
        })
    }
}

/// A bare connection to one fake broker for raw protocol exchanges: one request at a time,
/// at the version the test names, no negotiation or retries.
pub struct RawClient {
    stream: BoxTransport,
    splitter: kafka_proto::FrameSplitter,
    next_id: i32,
}

impl FakeCluster {
    /// Opens a raw connection to `node`.
    pub async fn raw(&self, node: i32) -> RawClient {
        let stream = self
            .dialer()
            .dial(&format!("fake-{node}:{PORT}"))
            .await
            .expect("dial fake broker");
        RawClient {
            stream,
            splitter: kafka_proto::FrameSplitter::new(),
            next_id: 1,
        }
    }
}

impl RawClient {
    /// Sends `req` at `version` and reads its answer; `Err` if the connection closed first.
    pub async fn send<R: kafka_proto::Request>(
        &mut self,
        req: &R,
        version: i16,
    ) -> Result<R::Response, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let id = self.next_id;
        self.next_id += 1;
        let mut buf = bytes::BytesMut::new();
        kafka_proto::envelope::encode_request(&mut buf, version, id, Some("raw"), req)
            .map_err(|e| e.to_string())?;
        self.stream
            .write_all(&buf)
            .await
            .map_err(|e| e.to_string())?;
        let mut chunk = vec![0u8; 64 * 1024];
        let frame = loop {
            if let Some(f) = self.splitter.next_frame().map_err(|e| e.to_string())? {
                break f;
            }
            match self.stream.read(&mut chunk).await {
                Ok(0) => return Err("connection closed".into()),
                Ok(n) => self.splitter.push(&chunk[..n]),
                Err(e) => return Err(e.to_string()),
            }
        };
        let (header, body) = kafka_proto::envelope::decode_response::<R::Response>(frame, version)
            .map_err(|e| e.to_string())?;
        if header.correlation_id != id {
            return Err(format!("answer to {} for {id}", header.correlation_id));
        }
        Ok(body)
    }
}
