//! The group consumer against a scripted one-broker coordinator over in-memory pipes, in
//! paused tokio time (so its 30 ms heartbeats and 400 ms poll interval are exact), for the
//! answers a real test broker will not give on demand (tansu 0.6 never refuses a commit, never
//! fences a static member, never evicts by rebalance timeout): MEMBER_ID_REQUIRED, each
//! heartbeat error code, a refused commit, FENCED_INSTANCE_ID, LeaveGroup on close (dynamic
//! members only) and on max_poll_interval.
//!
//! The fake serves one topic `t` with two partitions and no records; JoinGroup makes the
//! caller the only member and leader; SyncGroup hands back what the leader assigned.

mod common;

use common::scripted::{
    FrameReader, PIPE_PORT, api_key, api_versions, pipe_client_config, pipe_dialer, reply,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::consumer::{AutoOffsetReset, ConsumerConfig};
use bus::{
    Client, Error, GroupConfig, GroupConsumer, RebalanceContext, RebalanceListener, TopicPartition,
    TopicPartitionOffset,
};
use bytes::Bytes;
use kafka_proto::envelope::decode_request;
use kafka_proto::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_proto::messages::join_group_response::JoinGroupResponseMember;
use kafka_proto::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_proto::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_proto::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_proto::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartitions, OffsetFetchResponseTopics,
};
use kafka_proto::messages::*;
use kafka_proto::{ApiKey, ErrorCode};
use tokio::io::DuplexStream;

const WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct State {
    generation: i32,
    next_member: u32,
    /// Member ids of every JoinGroup, in order.
    joins: Vec<String>,
    /// The error code the next heartbeat gets (once).
    heartbeat_code: Option<i16>,
    heartbeats: u32,
    /// The error code the next commits get.
    commit_code: i16,
    /// (generation, member id, instance id) of every commit.
    commits: Vec<(i32, String, Option<String>)>,
    committed: BTreeMap<i32, i64>,
    /// (member id, instance id, reason) of every LeaveGroup.
    leaves: Vec<(String, Option<String>, Option<String>)>,
    /// What the leader assigned, per member.
    assignments: BTreeMap<String, Bytes>,
    /// The last member's subscription metadata.
    metadata: Bytes,
}

#[derive(Clone)]
struct Fake(Arc<Mutex<State>>);

impl Fake {
    async fn start() -> Fake {
        Fake(Arc::new(Mutex::new(State::default())))
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    async fn consumer(&self, group: GroupConfig) -> GroupConsumer {
        let fake = self.clone();
        let dialer = pipe_dialer(move |_node, stream| serve(stream, fake.clone()));
        let client = Client::connect(pipe_client_config(dialer)).await.unwrap();
        let mut c = GroupConsumer::new(
            client,
            group,
            ConsumerConfig::default()
                .auto_offset_reset(AutoOffsetReset::Earliest)
                .fetch_max_wait(Duration::from_millis(20)),
        )
        .unwrap();
        c.subscribe(["t"]).unwrap();
        c
    }
}

fn config() -> GroupConfig {
    GroupConfig::new("g")
        .heartbeat_interval(Duration::from_millis(30))
        .session_timeout(Duration::from_secs(5))
        .auto_commit(false)
}

macro_rules! answer {
    ($stream:expr, $frame:expr, $req:ty, |$h:ident, $r:ident| $body:expr) => {{
        let ($h, $r) = decode_request::<$req>($frame).unwrap();
        let resp = $body;
        reply($stream, $h.correlation_id, $h.request_api_version, &resp).await;
    }};
}

async fn serve(mut stream: DuplexStream, fake: Fake) {
    let mut reader = FrameReader::new();
    while let Some(frame) = reader.next(&mut stream).await {
        let key = api_key(&frame);
        let s = &mut stream;
        match key {
            k if k == ApiKey::ApiVersions as i16 => {
                answer!(s, frame, ApiVersionsRequest, |_h, _r| {
                    api_versions(&[
                        (ApiKey::ApiVersions, 3),
                        (ApiKey::Metadata, 12),
                        (ApiKey::ListOffsets, 7),
                        (ApiKey::Fetch, 12),
                        (ApiKey::FindCoordinator, 4),
                        (ApiKey::JoinGroup, 9),
                        (ApiKey::SyncGroup, 5),
                        (ApiKey::Heartbeat, 4),
                        (ApiKey::LeaveGroup, 5),
                        (ApiKey::OffsetCommit, 8),
                        (ApiKey::OffsetFetch, 8),
                    ])
                })
            }
            k if k == ApiKey::Metadata as i16 => answer!(s, frame, MetadataRequest, |_h, _r| {
                let mut resp = MetadataResponse::default();
                resp.cluster_id = Some("fake".into());
                resp.controller_id = 1;
                let mut b = MetadataResponseBroker::default();
                b.node_id = 1;
                b.host = "node-1".into();
                b.port = PIPE_PORT;
                resp.brokers.push(b);
                let mut t = MetadataResponseTopic::default();
                t.name = Some("t".into());
                for i in 0..2 {
                    let mut p = MetadataResponsePartition::default();
                    p.partition_index = i;
                    p.leader_id = 1;
                    p.replica_nodes = vec![1];
                    p.isr_nodes = vec![1];
                    t.partitions.push(p);
                }
                resp.topics.push(t);
                resp
            }),
            k if k == ApiKey::FindCoordinator as i16 => {
                answer!(s, frame, FindCoordinatorRequest, |_h, req| {
                    let mut resp = FindCoordinatorResponse::default();
                    let mut c =
                        kafka_proto::messages::find_coordinator_response::Coordinator::default();
                    c.key = req.coordinator_keys.first().cloned().unwrap_or_default();
                    c.node_id = 1;
                    c.host = "node-1".into();
                    c.port = PIPE_PORT;
                    resp.coordinators.push(c);
                    resp
                })
            }
            k if k == ApiKey::JoinGroup as i16 => answer!(s, frame, JoinGroupRequest, |_h, req| {
                let mut st = fake.st();
                st.joins.push(req.member_id.clone());
                let mut resp = JoinGroupResponse::default();
                if req.member_id.is_empty() && req.group_instance_id.is_none() {
                    st.next_member += 1;
                    resp.error_code = ErrorCode::MemberIdRequired.code();
                    resp.member_id = format!("m-{}", st.next_member);
                } else {
                    st.generation += 1;
                    let member = if req.member_id.is_empty() {
                        st.next_member += 1;
                        format!("m-{}", st.next_member)
                    } else {
                        req.member_id.clone()
                    };
                    st.metadata = req.protocols[0].metadata.clone();
                    resp.generation_id = st.generation;
                    resp.protocol_type = Some("consumer".into());
                    resp.protocol_name = Some(req.protocols[0].name.clone());
                    resp.leader = member.clone();
                    resp.member_id = member.clone();
                    let mut m = JoinGroupResponseMember::default();
                    m.member_id = member;
                    m.group_instance_id = req.group_instance_id.clone();
                    m.metadata = req.protocols[0].metadata.clone();
                    resp.members.push(m);
                }
                resp
            }),
            k if k == ApiKey::SyncGroup as i16 => answer!(s, frame, SyncGroupRequest, |_h, req| {
                let mut st = fake.st();
                for a in &req.assignments {
                    st.assignments
                        .insert(a.member_id.clone(), a.assignment.clone());
                }
                let mut resp = SyncGroupResponse::default();
                if req.generation_id != st.generation {
                    resp.error_code = ErrorCode::IllegalGeneration.code();
                } else {
                    resp.assignment = st
                        .assignments
                        .get(&req.member_id)
                        .cloned()
                        .unwrap_or_default();
                }
                resp
            }),
            k if k == ApiKey::Heartbeat as i16 => answer!(s, frame, HeartbeatRequest, |_h, _r| {
                let mut st = fake.st();
                st.heartbeats += 1;
                let mut resp = HeartbeatResponse::default();
                resp.error_code = st.heartbeat_code.take().unwrap_or(0);
                resp
            }),
            k if k == ApiKey::LeaveGroup as i16 => {
                answer!(s, frame, LeaveGroupRequest, |_h, req| {
                    let mut st = fake.st();
                    for m in &req.members {
                        st.leaves.push((
                            m.member_id.clone(),
                            m.group_instance_id.clone(),
                            m.reason.clone(),
                        ));
                    }
                    LeaveGroupResponse::default()
                })
            }
            k if k == ApiKey::OffsetCommit as i16 => {
                answer!(s, frame, OffsetCommitRequest, |_h, req| {
                    let mut st = fake.st();
                    st.commits.push((
                        req.generation_id_or_member_epoch,
                        req.member_id.clone(),
                        req.group_instance_id.clone(),
                    ));
                    let code = st.commit_code;
                    let mut resp = OffsetCommitResponse::default();
                    for t in &req.topics {
                        let mut rt = OffsetCommitResponseTopic::default();
                        rt.name = t.name.clone();
                        for p in &t.partitions {
                            if code == 0 {
                                st.committed.insert(p.partition_index, p.committed_offset);
                            }
                            let mut rp = OffsetCommitResponsePartition::default();
                            rp.partition_index = p.partition_index;
                            rp.error_code = code;
                            rt.partitions.push(rp);
                        }
                        resp.topics.push(rt);
                    }
                    resp
                })
            }
            k if k == ApiKey::OffsetFetch as i16 => {
                answer!(s, frame, OffsetFetchRequest, |_h, req| {
                    let st = fake.st();
                    let mut resp = OffsetFetchResponse::default();
                    let mut g = OffsetFetchResponseGroup::default();
                    g.group_id = req.groups[0].group_id.clone();
                    for t in req.groups[0].topics.iter().flatten() {
                        let mut rt = OffsetFetchResponseTopics::default();
                        rt.name = t.name.clone();
                        for &p in &t.partition_indexes {
                            let mut rp = OffsetFetchResponsePartitions::default();
                            rp.partition_index = p;
                            rp.committed_offset = st.committed.get(&p).copied().unwrap_or(-1);
                            rt.partitions.push(rp);
                        }
                        g.topics.push(rt);
                    }
                    resp.groups.push(g);
                    resp
                })
            }
            k if k == ApiKey::ListOffsets as i16 => {
                answer!(s, frame, ListOffsetsRequest, |_h, req| {
                    let mut resp = ListOffsetsResponse::default();
                    for t in &req.topics {
                        let mut rt = ListOffsetsTopicResponse::default();
                        rt.name = t.name.clone();
                        for p in &t.partitions {
                            let mut rp = ListOffsetsPartitionResponse::default();
                            rp.partition_index = p.partition_index;
                            rp.offset = 0;
                            rp.timestamp = -1;
                            rt.partitions.push(rp);
                        }
                        resp.topics.push(rt);
                    }
                    resp
                })
            }
            k if k == ApiKey::Fetch as i16 => {
                let (h, req) = decode_request::<FetchRequest>(frame).unwrap();
                tokio::time::sleep(Duration::from_millis(req.max_wait_ms as u64)).await;
                let mut resp = FetchResponse::default();
                for t in &req.topics {
                    let mut rt = FetchableTopicResponse::default();
                    rt.topic = t.topic.clone();
                    for p in &t.partitions {
                        let mut d = PartitionData::default();
                        d.partition_index = p.partition;
                        d.records = Some(Bytes::new());
                        rt.partitions.push(d);
                    }
                    resp.responses.push(rt);
                }
                reply(s, h.correlation_id, h.request_api_version, &resp).await;
            }
            other => panic!("the fake coordinator does not serve API key {other}"),
        }
    }
}

type Log = Arc<Mutex<Vec<(&'static str, Vec<i32>)>>>;

struct Recorder(Log);

impl RebalanceListener for Recorder {
    async fn on_assigned(&mut self, _: &mut RebalanceContext<'_>, p: &[TopicPartition]) {
        self.0
            .lock()
            .unwrap()
            .push(("assigned", p.iter().map(|tp| tp.partition).collect()));
    }
    async fn on_revoked(&mut self, _: &mut RebalanceContext<'_>, p: &[TopicPartition]) {
        self.0
            .lock()
            .unwrap()
            .push(("revoked", p.iter().map(|tp| tp.partition).collect()));
    }
    async fn on_lost(&mut self, _: &mut RebalanceContext<'_>, p: &[TopicPartition]) {
        self.0
            .lock()
            .unwrap()
            .push(("lost", p.iter().map(|tp| tp.partition).collect()));
    }
}

/// Polls (there are no records, so each poll runs until the slice ends) until `done`.
async fn poll_until<L: RebalanceListener>(
    c: &mut GroupConsumer<L>,
    mut done: impl FnMut(&mut GroupConsumer<L>) -> bool,
) -> Option<Error> {
    let mut last = None;
    tokio::time::timeout(WAIT, async {
        while !done(c) {
            if let Ok(Err(e)) = tokio::time::timeout(Duration::from_millis(50), c.poll()).await {
                last = Some(e);
            }
        }
    })
    .await
    .expect("condition within WAIT");
    last
}

#[tokio::test(start_paused = true)]
async fn member_id_required_is_answered_by_joining_with_the_given_id_then_heartbeats_run() {
    let fake = Fake::start().await;
    let mut c = fake.consumer(config()).await;
    poll_until(&mut c, |c| c.assignment().len() == 2).await;
    assert_eq!(fake.st().joins, ["", "m-1"]);
    assert_eq!(c.generation(), Some((1, "m-1".to_string())));
    assert_eq!(c.member_id(), "m-1");
    // The subscription the member sent names the topic, at v3.
    let meta = fake.st().metadata.clone();
    let sub = bus::group::protocol::decode_subscription(meta).unwrap();
    assert_eq!(sub.topics, ["t"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(fake.st().heartbeats >= 3, "heartbeats run without polls");
    c.close().await.unwrap();
    let leaves = fake.st().leaves.clone();
    assert_eq!(leaves.len(), 1);
    assert_eq!(leaves[0].0, "m-1");
}

/// A member that held both partitions, then got `code` on a heartbeat, once it is in
/// generation 2; with its callbacks' log.
async fn after_heartbeat_error(code: ErrorCode) -> (Fake, Log, GroupConsumer<Recorder>) {
    let fake = Fake::start().await;
    let log: Log = Arc::default();
    let mut c = fake
        .consumer(config())
        .await
        .with_listener(Recorder(log.clone()));
    poll_until(&mut c, |c| c.assignment().len() == 2).await;
    fake.st().heartbeat_code = Some(code.code());
    poll_until(&mut c, |c| c.generation().is_some_and(|(g, _)| g == 2)).await;
    (fake, log, c)
}

#[tokio::test(start_paused = true)]
async fn rebalance_in_progress_revokes_cleanly_and_rejoins_with_the_same_id() {
    let (fake, log, c) = after_heartbeat_error(ErrorCode::RebalanceInProgress).await;
    assert_eq!(fake.st().joins, ["", "m-1", "m-1"]);
    assert_eq!(
        *log.lock().unwrap(),
        [
            ("assigned", vec![0, 1]),
            ("revoked", vec![0, 1]),
            ("assigned", vec![0, 1])
        ]
    );
    c.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn unknown_member_id_loses_the_partitions_and_rejoins_with_a_new_id() {
    let (fake, log, c) = after_heartbeat_error(ErrorCode::UnknownMemberId).await;
    // The id was reset: an empty join, MEMBER_ID_REQUIRED, then the new id.
    assert_eq!(fake.st().joins, ["", "m-1", "", "m-2"]);
    assert_eq!(
        *log.lock().unwrap(),
        [
            ("assigned", vec![0, 1]),
            ("lost", vec![0, 1]),
            ("assigned", vec![0, 1])
        ]
    );
    c.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn illegal_generation_loses_the_partitions_but_keeps_the_member_id() {
    let (fake, log, c) = after_heartbeat_error(ErrorCode::IllegalGeneration).await;
    assert_eq!(fake.st().joins, ["", "m-1", "m-1"]);
    assert_eq!(log.lock().unwrap()[1], ("lost", vec![0, 1]));
    c.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_refused_commit_is_commit_failed_and_carries_the_generation() {
    let fake = Fake::start().await;
    let mut c = fake.consumer(config().group_instance_id("i-1")).await;
    poll_until(&mut c, |c| c.assignment().len() == 2).await;
    let offsets = [TopicPartitionOffset::new("t", 0, 7)];
    c.commit_offsets(&offsets).await.unwrap();
    let (generation, member) = c.generation().unwrap();
    assert_eq!(
        fake.st().commits[0],
        (generation, member, Some("i-1".to_string())),
        "commits carry generation, member id and instance id"
    );
    let tp = TopicPartition::new("t", 0);
    assert_eq!(c.committed(&[tp]).await.unwrap()[0].1, Some(7));
    fake.st().commit_code = ErrorCode::IllegalGeneration.code();
    let err = c.commit_offsets(&offsets).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::CommitFailed {
                code: ErrorCode::IllegalGeneration,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(c.generation(), None);
    // Retriable errors are retried, not reported.
    fake.st().commit_code = ErrorCode::CoordinatorLoadInProgress.code();
    let fake2 = fake.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        fake2.st().commit_code = 0;
    });
    poll_until(&mut c, |c| c.generation().is_some()).await;
    c.commit_offsets(&offsets).await.unwrap();
    // An async commit does not borrow the consumer: it can poll while the commit runs.
    let pending = c.commit_async(vec![TopicPartitionOffset::new("t", 1, 9)]);
    let _ = tokio::time::timeout(Duration::from_millis(20), c.poll()).await;
    pending.await.unwrap();
    assert_eq!(fake.st().committed.get(&1), Some(&9));
    // A static member does not leave on close.
    c.close().await.unwrap();
    assert!(fake.st().leaves.is_empty());
}

#[tokio::test(start_paused = true)]
async fn fenced_instance_id_is_fatal_and_typed() {
    let fake = Fake::start().await;
    let mut c = fake.consumer(config().group_instance_id("i-1")).await;
    poll_until(&mut c, |c| c.assignment().len() == 2).await;
    fake.st().heartbeat_code = Some(ErrorCode::FencedInstanceId.code());
    let err = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(Err(e)) = tokio::time::timeout(Duration::from_millis(50), c.poll()).await {
                break e;
            }
        }
    })
    .await
    .unwrap();
    assert!(
        matches!(err, Error::FencedInstanceId { ref instance_id } if instance_id == "i-1"),
        "{err:?}"
    );
    // It stays fatal: no rejoin.
    let joins = fake.st().joins.len();
    let again = tokio::time::timeout(Duration::from_millis(200), c.poll()).await;
    assert!(matches!(again, Ok(Err(Error::FencedInstanceId { .. }))));
    assert_eq!(fake.st().joins.len(), joins);
}

#[tokio::test(start_paused = true)]
async fn a_member_that_stops_polling_leaves_after_max_poll_interval() {
    let fake = Fake::start().await;
    let log: Log = Arc::default();
    let mut c = fake
        .consumer(config().max_poll_interval(Duration::from_millis(400)))
        .await
        .with_listener(Recorder(log.clone()));
    poll_until(&mut c, |c| c.assignment().len() == 2).await;
    // Busy elsewhere: heartbeats go on until max_poll_interval, then the member leaves.
    let beats = fake.st().heartbeats;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        fake.st().leaves.is_empty(),
        "still within max_poll_interval"
    );
    assert!(
        fake.st().heartbeats > beats,
        "heartbeats go on without polls"
    );
    tokio::time::timeout(WAIT, async {
        // The fake records the leave before the member has its answer.
        while fake.st().leaves.is_empty() || c.generation().is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the member leaves after max_poll_interval");
    let leaves = fake.st().leaves.clone();
    assert_eq!(leaves.len(), 1, "{leaves:?}");
    assert!(leaves[0].2.as_deref().unwrap_or("").contains("poll"));
    // The next poll reports the partitions lost and rejoins as a new member.
    poll_until(&mut c, |c| c.generation().is_some()).await;
    assert_eq!(log.lock().unwrap()[1], ("lost", vec![0, 1]));
    c.close().await.unwrap();
}
