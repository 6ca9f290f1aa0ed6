//! The group's requests to its coordinator, thin over the client: each builds the request for
//! the negotiated version from the shared [`Membership`], sends it, and hands the answer's
//! error code to the state machine. Retrying and waiting live here; deciding does not.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use kafka_proto::messages::heartbeat_request::HeartbeatRequest;
use kafka_proto::messages::join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol};
use kafka_proto::messages::leave_group_request::{LeaveGroupRequest, MemberIdentity};
use kafka_proto::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_proto::messages::offset_fetch_request::{
    OffsetFetchRequest, OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_proto::messages::sync_group_request::{SyncGroupRequest, SyncGroupRequestAssignment};
use kafka_proto::{ErrorCode, Request};

use futures_util::future::Either;
use tokio::sync::{mpsc, oneshot};

use super::config::{AssignorKind, GroupConfig, wire_ms};
use super::membership::{CommitIdentity, Membership, Next};
use super::types::{TopicPartition, TopicPartitionOffset};
use crate::client::Client;
use crate::error::{Error, RequestError};
use crate::routing::{
    find_group_coordinator, is_coordinator_moved, send_versioned, send_versioned_with_timeout,
};

/// Beyond the rebalance timeout, for the coordinator's answer to travel back.
const JOIN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
/// The protocol type every consumer group uses.
pub const PROTOCOL_TYPE: &str = "consumer";

/// How many times a request is retried on retriable errors before the error is returned
/// (the caller, usually `poll`, may try again later).
const MAX_ATTEMPTS: u32 = 20;

/// LeaveGroup attempts on retriable errors before `close` reports the last one.
const LEAVE_ATTEMPTS: u32 = 5;

/// Rejects offsets no commit can carry, before anything is queued.
fn check_offsets(offsets: &[TopicPartitionOffset]) -> Result<(), Error> {
    match offsets.iter().find(|o| o.offset < 0) {
        Some(o) => Err(Error::InvalidArgument(format!(
            "{}-{}: cannot commit negative offset {}",
            o.topic, o.partition, o.offset
        ))),
        None => Ok(()),
    }
}

/// One commit waiting its turn.
struct QueuedCommit {
    id: CommitIdentity,
    offsets: Vec<TopicPartitionOffset>,
    reply: oneshot::Sender<Result<(), Error>>,
    /// Sent even when nobody waits for the answer any more (`commit_async`, auto-commit);
    /// otherwise a commit whose caller went away before its turn is skipped.
    detached: bool,
}

/// A consumer's commits, sent one at a time in the order they were made (each with all its
/// retries before the next starts), by one task. So a slow or retried commit can never land
/// after a later one and put older offsets back, and every commit keeps the identity it was
/// made with (Java sends a consumer's commits in call order for the same reason).
#[derive(Debug)]
pub struct CommitQueue {
    coord: Coordinator,
    tx: Option<mpsc::UnboundedSender<QueuedCommit>>,
}

impl CommitQueue {
    pub fn new(coord: Coordinator) -> CommitQueue {
        CommitQueue { coord, tx: None }
    }

    /// Queues a commit of `offsets` under the identity the member has now, and returns its
    /// outcome. The identity and the queue position are fixed here, synchronously, before the
    /// returned future is first polled. Invalid offsets and a subscribed member outside any
    /// generation fail without queueing.
    pub fn submit(
        &mut self,
        offsets: Vec<TopicPartitionOffset>,
        detached: bool,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        if offsets.is_empty() {
            return Either::Left(std::future::ready(Ok(())));
        }
        let id = match check_offsets(&offsets).and_then(|()| self.coord.lock().commit_identity()) {
            Ok(id) => id,
            Err(e) => return Either::Left(std::future::ready(Err(e))),
        };
        let (reply, rx) = oneshot::channel();
        let mut job = QueuedCommit {
            id,
            offsets,
            reply,
            detached,
        };
        if let Some(tx) = &self.tx {
            match tx.send(job) {
                Ok(()) => return Either::Right(Self::outcome(rx)),
                // The task is gone (it ends only with its runtime): start another.
                Err(mpsc::error::SendError(j)) => job = j,
            }
        }
        let (tx, queue) = mpsc::unbounded_channel();
        tokio::spawn(run_commits(self.coord.clone(), queue));
        // A fresh channel with its receiver alive cannot refuse.
        let _ = tx.send(job);
        self.tx = Some(tx);
        Either::Right(Self::outcome(rx))
    }

    async fn outcome(rx: oneshot::Receiver<Result<(), Error>>) -> Result<(), Error> {
        rx.await
            .unwrap_or_else(|_| Err(Error::Protocol("the commit task ended".into())))
    }
}

/// The commit task: one commit at a time, in queue order, until the consumer is gone and the
/// queue is drained.
async fn run_commits(coord: Coordinator, mut queue: mpsc::UnboundedReceiver<QueuedCommit>) {
    while let Some(job) = queue.recv().await {
        if !job.detached && job.reply.is_closed() {
            continue;
        }
        let result = coord.commit_as(&job.id, &job.offsets).await;
        let _ = job.reply.send(result);
    }
}

/// The answer to a successful JoinGroup.
#[derive(Debug, Clone)]
pub struct Joined {
    pub generation: i32,
    pub member_id: String,
    pub protocol: Option<AssignorKind>,
    pub leader: String,
    /// Only the leader gets these: (member id, instance id, subscription bytes).
    pub members: Vec<(String, Option<String>, Bytes)>,
}

/// What a join attempt came to.
#[derive(Debug)]
pub enum JoinResult {
    Joined(Joined),
    /// Act on this (the membership is already updated).
    Next(Next),
}

/// Handle to the coordinator for one group member. Cheap to clone: the heartbeat task and
/// async commits hold their own.
#[derive(Clone)]
pub struct Coordinator {
    pub client: Client,
    pub config: Arc<GroupConfig>,
    pub state: Arc<Mutex<Membership>>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("group", &self.config.group_id)
            .finish_non_exhaustive()
    }
}

/// Whether a request failure means the coordinator connection is gone.
fn is_connection_error(e: &Error) -> bool {
    matches!(
        e,
        Error::Request(RequestError::ConnectionClosed { .. } | RequestError::Connect { .. })
            | Error::NoBrokerReachable { .. }
            | Error::UnknownBroker(_)
    )
}

impl Coordinator {
    pub fn lock(&self) -> MutexGuard<'_, Membership> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The coordinator's node id, finding it (FindCoordinator, key type 0) when unknown.
    /// Retries with backoff on retriable errors.
    pub async fn node(&self) -> Result<i32, Error> {
        if let Some(n) = self.lock().coordinator {
            return Ok(n);
        }
        let group = &self.config.group_id;
        let node = self
            .retrying("FindCoordinator", MAX_ATTEMPTS, || {
                find_group_coordinator(&self.client, group)
            })
            .await?;
        // Make sure the client can dial it (its address comes from metadata).
        if !self.client.metadata().brokers.contains_key(&node) {
            let _ = self.client.refresh_metadata().await;
        }
        self.lock().coordinator = Some(node);
        Ok(node)
    }

    /// Runs `once` up to `attempts` times while it fails with a retriable error, with the
    /// client's backoff after each failure; the last retriable error if none succeeded.
    async fn retrying<T, F: Future<Output = Result<T, Error>>>(
        &self,
        what: &str,
        attempts: u32,
        mut once: impl FnMut() -> F,
    ) -> Result<T, Error> {
        let mut last = None;
        for attempt in 1..=attempts {
            match once().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retriable() => last = Some(e),
                Err(e) => return Err(e),
            }
            tokio::time::sleep(self.client.backoff_delay(attempt)).await;
        }
        Err(last.unwrap_or_else(|| Error::Timeout(what.into())))
    }

    /// Sends a request built for the negotiated version to the coordinator at `node`; a lost
    /// connection sends the member looking for the coordinator again.
    async fn send<R: Request>(
        &self,
        node: i32,
        build: impl FnOnce(i16) -> Result<R, Error>,
    ) -> Result<R::Response, Error> {
        let result = send_versioned(&self.client, node, build).await;
        if let Err(e) = &result
            && is_connection_error(e)
        {
            self.lock().on_connection_error();
        }
        result
    }

    /// Applies a request failure to the membership: connection errors and timeouts send us
    /// looking for the coordinator again.
    fn on_request_failure(&self, e: &Error) -> Option<Next> {
        if is_connection_error(e) {
            return Some(self.lock().on_connection_error());
        }
        if matches!(e, Error::Request(RequestError::Timeout(_))) {
            return Some(Next::Retry);
        }
        None
    }

    /// One JoinGroup. `subscriptions` are the protocols in preference order with their
    /// metadata.
    pub async fn join(
        &self,
        protocols: &[(AssignorKind, Bytes)],
        reason: &str,
    ) -> Result<JoinResult, Error> {
        let node = self.node().await?;
        let (member_id, instance) = {
            let m = self.lock();
            (m.member_id.clone(), m.instance_id.clone())
        };
        let cfg = &self.config;
        // The coordinator holds a JoinGroup until every member rejoined or the rebalance
        // timeout passed, so the answer may take that long (Java waits the same).
        let timeout = self
            .client
            .config()
            .connection
            .request_timeout
            .max(cfg.effective_rebalance_timeout() + JOIN_GRACE);
        let result = send_versioned_with_timeout(&self.client, node, timeout, |v| {
            if instance.is_some() && v < 5 {
                return Err(Error::Unsupported(
                    "static membership needs JoinGroup v5 (Kafka 2.3)".into(),
                ));
            }
            Ok(JoinGroupRequest {
                group_id: cfg.group_id.clone(),
                session_timeout_ms: wire_ms(cfg.session_timeout),
                rebalance_timeout_ms: wire_ms(cfg.effective_rebalance_timeout()),
                member_id: member_id.clone(),
                group_instance_id: instance.clone(),
                protocol_type: PROTOCOL_TYPE.into(),
                protocols: protocols
                    .iter()
                    .map(|(kind, meta)| JoinGroupRequestProtocol {
                        name: kind.name().into(),
                        metadata: meta.clone(),
                        ..Default::default()
                    })
                    .collect(),
                reason: Some(reason.to_owned()),
                ..Default::default()
            })
        })
        .await;
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                return match self.on_request_failure(&e) {
                    Some(next) => Ok(JoinResult::Next(next)),
                    None => Err(e),
                };
            }
        };
        let code = ErrorCode::from_code(resp.error_code);
        if code != ErrorCode::None {
            return Ok(JoinResult::Next(
                self.lock().on_join_error(code, &resp.member_id),
            ));
        }
        let protocol = resp
            .protocol_name
            .as_deref()
            .and_then(AssignorKind::from_name);
        Ok(JoinResult::Joined(Joined {
            generation: resp.generation_id,
            member_id: resp.member_id,
            protocol,
            leader: resp.leader,
            members: resp
                .members
                .into_iter()
                .map(|m| (m.member_id, m.group_instance_id, m.metadata))
                .collect(),
        }))
    }

    /// One SyncGroup; the leader passes the assignments. Ok(Err(next)) on an error answer.
    pub async fn sync(
        &self,
        protocol: Option<AssignorKind>,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<Result<Bytes, Next>, Error> {
        let node = self.node().await?;
        let (member_id, instance, generation) = {
            let m = self.lock();
            (m.member_id.clone(), m.instance_id.clone(), m.generation)
        };
        let cfg = &self.config;
        let result = send_versioned(&self.client, node, |v| {
            Ok(SyncGroupRequest {
                group_id: cfg.group_id.clone(),
                generation_id: generation,
                member_id: member_id.clone(),
                group_instance_id: if v >= 3 { instance.clone() } else { None },
                protocol_type: Some(PROTOCOL_TYPE.into()),
                protocol_name: protocol.map(|p| p.name().to_owned()),
                assignments: assignments
                    .iter()
                    .map(|(member, bytes)| SyncGroupRequestAssignment {
                        member_id: member.clone(),
                        assignment: bytes.clone(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
        })
        .await;
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                return match self.on_request_failure(&e) {
                    // A lost SyncGroup cannot simply be resent after the group moved on:
                    // rejoin, keeping what we own.
                    Some(Next::Retry) => {
                        Ok(Err(self.lock().on_error(ErrorCode::RebalanceInProgress)))
                    }
                    Some(next) => Ok(Err(next)),
                    None => Err(e),
                };
            }
        };
        match ErrorCode::from_code(resp.error_code) {
            ErrorCode::None => Ok(Ok(resp.assignment)),
            code => Ok(Err(self.lock().on_error(code))),
        }
    }

    /// One Heartbeat for `generation`. Ok(None) when all is well.
    pub async fn heartbeat(&self) -> Result<Option<Next>, Error> {
        let node = self.node().await?;
        let (member_id, instance, generation) = {
            let m = self.lock();
            (m.member_id.clone(), m.instance_id.clone(), m.generation)
        };
        let group = self.config.group_id.clone();
        let result = send_versioned(&self.client, node, |v| {
            Ok(HeartbeatRequest {
                group_id: group,
                generation_id: generation,
                member_id,
                group_instance_id: if v >= 3 { instance } else { None },
                ..Default::default()
            })
        })
        .await;
        match result {
            Ok(resp) => match ErrorCode::from_code(resp.error_code) {
                ErrorCode::None => Ok(None),
                code => {
                    let mut m = self.lock();
                    if m.generation != generation {
                        // Answer to a generation that already ended; ignore it.
                        return Ok(None);
                    }
                    Ok(m.on_heartbeat_error(code))
                }
            },
            Err(e) => match self.on_request_failure(&e) {
                Some(next) => Ok(Some(next)),
                None => Err(e),
            },
        }
    }

    /// LeaveGroup for this member. A moved or unavailable coordinator is looked up again and
    /// the leave resent (a few times: the session timeout evicts the member anyway, only
    /// later), so the group rebalances at once.
    pub async fn leave(&self, reason: &str) -> Result<(), Error> {
        self.retrying("LeaveGroup", LEAVE_ATTEMPTS, || self.leave_once(reason))
            .await
    }

    async fn leave_once(&self, reason: &str) -> Result<(), Error> {
        let node = self.node().await?;
        let (member_id, instance) = {
            let m = self.lock();
            (m.member_id.clone(), m.instance_id.clone())
        };
        if member_id.is_empty() {
            return Ok(());
        }
        let group = self.config.group_id.clone();
        let resp = self
            .send(node, |v| {
                let mut req = LeaveGroupRequest {
                    group_id: group,
                    ..Default::default()
                };
                if v >= 3 {
                    req.members = vec![MemberIdentity {
                        member_id,
                        group_instance_id: instance,
                        reason: Some(reason.to_owned()),
                        ..Default::default()
                    }];
                } else {
                    req.member_id = member_id;
                }
                Ok(req)
            })
            .await?;
        let code = resp
            .members
            .first()
            .map(|m| m.error_code)
            .filter(|_| resp.error_code == 0)
            .unwrap_or(resp.error_code);
        match ErrorCode::from_code(code) {
            // Already gone: the goal is reached.
            ErrorCode::None | ErrorCode::UnknownMemberId => Ok(()),
            code => {
                if is_coordinator_moved(code) {
                    self.lock().on_error(code);
                }
                Err(Error::broker(
                    code,
                    None,
                    format!("leave group {}", self.config.group_id),
                ))
            }
        }
    }

    /// Commits `offsets` as `id` (the identity the commit was made with), retrying retriable
    /// errors and rediscovering the coordinator. Before every attempt the identity is checked
    /// against the membership: once its generation is over, the commit fails with
    /// `Error::CommitFailed` rather than go out under another generation. Fencing answers are
    /// `Error::CommitFailed` too.
    ///
    /// `offsets` are non-empty and valid: [`CommitQueue::submit`] checked them.
    async fn commit_as(
        &self,
        id: &CommitIdentity,
        offsets: &[TopicPartitionOffset],
    ) -> Result<(), Error> {
        let mut by_topic: BTreeMap<&str, Vec<&TopicPartitionOffset>> = BTreeMap::new();
        for o in offsets {
            by_topic.entry(&o.topic).or_default().push(o);
        }
        self.retrying("OffsetCommit", MAX_ATTEMPTS, || {
            self.commit_once(id, &by_topic)
        })
        .await
    }

    async fn commit_once(
        &self,
        id: &CommitIdentity,
        by_topic: &BTreeMap<&str, Vec<&TopicPartitionOffset>>,
    ) -> Result<(), Error> {
        self.lock().check_identity(id)?;
        let node = self.node().await?;
        self.lock().check_identity(id)?;
        let group = self.config.group_id.clone();
        let resp = self
            .send(node, |v| {
                Ok(OffsetCommitRequest {
                    group_id: group,
                    generation_id_or_member_epoch: id.generation,
                    member_id: id.member_id.clone(),
                    group_instance_id: if v >= 7 { id.instance_id.clone() } else { None },
                    topics: by_topic
                        .iter()
                        .map(|(topic, parts)| OffsetCommitRequestTopic {
                            name: (*topic).to_owned(),
                            partitions: parts
                                .iter()
                                .map(|o| OffsetCommitRequestPartition {
                                    partition_index: o.partition,
                                    committed_offset: o.offset,
                                    committed_leader_epoch: -1,
                                    committed_metadata: o.metadata.clone(),
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
            })
            .await?;
        for t in &resp.topics {
            for p in &t.partitions {
                let code = ErrorCode::from_code(p.error_code);
                match code {
                    ErrorCode::None => {}
                    code if code.is_retriable() => {
                        if is_coordinator_moved(code) {
                            self.lock().on_error(code);
                        }
                        return Err(Error::broker(
                            code,
                            None,
                            format!("{}-{}", t.name, p.partition_index),
                        ));
                    }
                    code => return Err(self.lock().commit_error(code, None, id)),
                }
            }
        }
        Ok(())
    }

    /// The committed offsets of `partitions` (None: nothing committed). Uses the batched
    /// form (v8+) when the broker has it.
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, Option<i64>)>, Error> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        self.retrying("OffsetFetch", MAX_ATTEMPTS, || {
            self.committed_once(partitions)
        })
        .await
    }

    async fn committed_once(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, Option<i64>)>, Error> {
        let node = self.node().await?;
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in partitions {
            by_topic.entry(&tp.topic).or_default().push(tp.partition);
        }
        let group = self.config.group_id.clone();
        let resp = self
            .send(node, |v| {
                let mut req = OffsetFetchRequest::default();
                if v >= 8 {
                    req.groups = vec![OffsetFetchRequestGroup {
                        group_id: group,
                        topics: Some(
                            by_topic
                                .iter()
                                .map(|(t, p)| OffsetFetchRequestTopics {
                                    name: (*t).to_owned(),
                                    partition_indexes: p.clone(),
                                    ..Default::default()
                                })
                                .collect(),
                        ),
                        ..Default::default()
                    }];
                } else {
                    req.group_id = group;
                    req.topics = Some(
                        by_topic
                            .iter()
                            .map(|(t, p)| OffsetFetchRequestTopic {
                                name: (*t).to_owned(),
                                partition_indexes: p.clone(),
                                ..Default::default()
                            })
                            .collect(),
                    );
                }
                Ok(req)
            })
            .await?;
        // (topic, partition, offset, code) in either response form.
        let mut answers: Vec<(String, i32, i64, i16)> = Vec::new();
        let group_code = if let Some(g) = resp.groups.first() {
            for t in &g.topics {
                for p in &t.partitions {
                    answers.push((
                        t.name.clone(),
                        p.partition_index,
                        p.committed_offset,
                        p.error_code,
                    ));
                }
            }
            g.error_code
        } else {
            for t in &resp.topics {
                for p in &t.partitions {
                    answers.push((
                        t.name.clone(),
                        p.partition_index,
                        p.committed_offset,
                        p.error_code,
                    ));
                }
            }
            resp.error_code
        };
        let context = format!("offsets of group {}", self.config.group_id);
        let check = |code: i16| -> Result<(), Error> {
            match ErrorCode::from_code(code) {
                ErrorCode::None => Ok(()),
                c => {
                    if is_coordinator_moved(c) {
                        self.lock().on_error(c);
                    }
                    Err(Error::broker(c, None, context.clone()))
                }
            }
        };
        check(group_code)?;
        let mut out = Vec::with_capacity(partitions.len());
        for tp in partitions {
            let found = answers
                .iter()
                .find(|(t, p, _, _)| *t == *tp.topic && *p == tp.partition);
            match found {
                Some(&(_, _, offset, code)) => {
                    check(code)?;
                    out.push((tp.clone(), (offset >= 0).then_some(offset)));
                }
                None => {
                    return Err(Error::Protocol(format!(
                        "OffsetFetch did not answer for {tp}"
                    )));
                }
            }
        }
        Ok(out)
    }
}
