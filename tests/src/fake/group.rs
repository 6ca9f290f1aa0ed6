//! The classic group coordinator (KIP-62 session and rebalance timeouts, KIP-394 member id
//! required, KIP-345 static membership), as Kafka's `GroupCoordinator` behaves, on the tokio
//! clock. Pure state: handlers call in with `now`, long waits (JoinGroup until the join phase
//! ends, SyncGroup until the leader's assignment) come back as a oneshot receiver, and the
//! cluster's driver task calls [`Coordinator::tick`] at [`Coordinator::next_deadline`].

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_proto::ErrorCode;
use kafka_proto::messages::heartbeat_request::HeartbeatRequest;
use kafka_proto::messages::join_group_request::JoinGroupRequest;
use kafka_proto::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use kafka_proto::messages::sync_group_request::SyncGroupRequest;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// The classic group states, named as DescribeGroups and ListGroups name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A committed offset as OffsetFetch returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// A copy of one group, for tests to assert on.
#[derive(Debug, Clone)]
pub struct GroupSnapshot {
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// In join order.
    pub members: Vec<MemberSnapshot>,
    pub offsets: BTreeMap<(String, i32), Committed>,
}

impl GroupSnapshot {
    pub fn member_ids(&self) -> Vec<String> {
        self.members.iter().map(|m| m.member_id.clone()).collect()
    }

    pub fn committed(&self, topic: &str, partition: i32) -> Option<i64> {
        self.offsets
            .get(&(topic.to_string(), partition))
            .map(|c| c.offset)
    }
}

#[derive(Debug, Clone)]
pub struct MemberSnapshot {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    /// `(name, metadata)` in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// What the leader assigned it in the current generation (empty before SyncGroup).
    pub assignment: Bytes,
}

/// An answer now, or one that comes when the group gets there.
pub(crate) enum Pending<T> {
    Now(T),
    Wait(oneshot::Receiver<T>),
}

impl<T> Pending<T> {
    /// The answer once there is one; `None` when the group dropped the request unanswered.
    pub(crate) async fn resolve(self) -> Option<T> {
        match self {
            Pending::Now(t) => Some(t),
            Pending::Wait(rx) => rx.await.ok(),
        }
    }
}

pub(crate) struct SyncAnswer {
    pub error: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// When its session expires unless it heartbeats (ignored while it waits in join or sync).
    expires: Instant,
    join: Option<oneshot::Sender<JoinGroupResponse>>,
    sync: Option<oneshot::Sender<SyncAnswer>>,
}

impl Member {
    fn snapshot(&self) -> MemberSnapshot {
        MemberSnapshot {
            member_id: self.id.clone(),
            instance_id: self.instance_id.clone(),
            client_id: self.client_id.clone(),
            protocols: self.protocols.clone(),
            assignment: self.assignment.clone(),
        }
    }

    fn awaiting(&self) -> bool {
        self.join.is_some() || self.sync.is_some()
    }
}

pub(crate) struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: Vec<Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until they join or their session passes.
    pending: BTreeMap<String, Instant>,
    join_deadline: Option<Instant>,
    /// The join phase of a group formed from empty waits out the whole initial delay, even
    /// when everyone known has joined (Kafka's InitialDelayedJoin), so members starting
    /// together land in one generation.
    initial_join: bool,
    pub offsets: BTreeMap<(String, i32), Committed>,
}

impl Group {
    fn new() -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: Vec::new(),
            pending: BTreeMap::new(),
            join_deadline: None,
            initial_join: false,
            offsets: BTreeMap::new(),
        }
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn snapshot(&self) -> GroupSnapshot {
        GroupSnapshot {
            state: self.state,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            members: self.members.iter().map(Member::snapshot).collect(),
            offsets: self.offsets.clone(),
        }
    }

    pub fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    fn position(&self, member_id: &str) -> Option<usize> {
        self.members.iter().position(|m| m.id == member_id)
    }

    fn by_instance(&self, instance: &str) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.instance_id.as_deref() == Some(instance))
    }

    /// Kafka's member validation: a static instance id must belong to this member id
    /// (else the caller is a fenced, replaced instance); a dynamic member must exist.
    fn validate(&self, member_id: &str, instance: Option<&str>) -> Result<usize, ErrorCode> {
        if let Some(instance) = instance
            && let Some(i) = self.by_instance(instance)
        {
            return if self.members[i].id == member_id {
                Ok(i)
            } else {
                Err(ErrorCode::FencedInstanceId)
            };
        }
        self.position(member_id).ok_or(ErrorCode::UnknownMemberId)
    }

    fn metadata_for(&self, m: &Member) -> Bytes {
        let proto = self.protocol.as_deref().unwrap_or_default();
        m.protocols
            .iter()
            .find(|(n, _)| n == proto)
            .map(|(_, md)| md.clone())
            .unwrap_or_default()
    }

    /// The join answer for `idx` in the current generation; the leader gets the member list.
    fn join_answer(&self, idx: usize, version: i16, skip_assignment: bool) -> JoinGroupResponse {
        let m = &self.members[idx];
        let mut r = JoinGroupResponse::default();
        r.generation_id = self.generation;
        r.protocol_type = self.protocol_type.clone();
        r.protocol_name = Some(self.protocol.clone().unwrap_or_default());
        r.leader = self.leader.clone().unwrap_or_default();
        r.member_id = m.id.clone();
        if self.leader.as_deref() == Some(m.id.as_str()) {
            r.skip_assignment = skip_assignment && version >= 9;
            r.members = self
                .members
                .iter()
                .map(|o| {
                    let mut jm = JoinGroupResponseMember::default();
                    jm.member_id = o.id.clone();
                    jm.group_instance_id = o.instance_id.clone();
                    jm.metadata = self.metadata_for(o);
                    jm
                })
                .collect();
        }
        r
    }

    /// The first protocol in the leader's order (the first member's, before there is a
    /// leader) that every member supports.
    fn select_protocol(&self) -> Option<String> {
        let leader = self
            .leader
            .as_deref()
            .and_then(|l| self.position(l))
            .unwrap_or(0);
        self.members
            .get(leader)?
            .protocols
            .iter()
            .map(|(n, _)| n.clone())
            .find(|n| {
                self.members
                    .iter()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == n))
            })
    }

    fn prepare_rebalance(&mut self, now: Instant, initial_delay: Duration) {
        let was_empty = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        for m in &mut self.members {
            m.assignment = Bytes::new();
            if let Some(tx) = m.sync.take() {
                let _ = tx.send(sync_error(ErrorCode::RebalanceInProgress));
            }
        }
        let timeout = self
            .members
            .iter()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.initial_join = was_empty && !initial_delay.is_zero();
        self.join_deadline = Some(now + if was_empty { initial_delay } else { timeout });
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.iter().all(|m| m.join.is_some())
    }

    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let deadline_passed = self.join_deadline.is_some_and(|d| now >= d);
        if (self.all_joined() && !self.initial_join) || deadline_passed {
            self.complete_join(now);
        }
    }

    fn complete_join(&mut self, now: Instant) {
        // Members that did not rejoin in time are out (static ones too, as in Kafka).
        self.members.retain(|m| m.join.is_some());
        self.join_deadline = None;
        self.initial_join = false;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        let leader_present = self
            .leader
            .as_deref()
            .is_some_and(|l| self.position(l).is_some());
        if !leader_present {
            self.leader = Some(self.members[0].id.clone());
        }
        self.protocol = self.select_protocol();
        let leader = self.position(self.leader.as_deref().unwrap_or_default());
        self.protocol_type = Some(self.members[leader.unwrap_or(0)].protocol_type.clone());
        self.state = GroupState::CompletingRebalance;
        for i in 0..self.members.len() {
            let answer = self.join_answer(i, 0, false);
            let m = &mut self.members[i];
            m.expires = now + m.session_timeout;
            if let Some(tx) = m.join.take() {
                let _ = tx.send(answer);
            }
        }
    }

    fn remove_member(&mut self, idx: usize, now: Instant, initial_delay: Duration) {
        let m = self.members.remove(idx);
        if let Some(tx) = m.join {
            let _ = tx.send(join_error(ErrorCode::UnknownMemberId, &m.id));
        }
        if let Some(tx) = m.sync {
            let _ = tx.send(sync_error(ErrorCode::UnknownMemberId));
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, initial_delay);
                self.maybe_complete_join(now);
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now),
            _ => {}
        }
    }
}

fn join_error(code: ErrorCode, member_id: &str) -> JoinGroupResponse {
    let mut r = JoinGroupResponse::default();
    r.error_code = code.code();
    r.generation_id = -1;
    r.member_id = member_id.to_string();
    r.protocol_name = Some(String::new());
    r
}

fn sync_error(code: ErrorCode) -> SyncAnswer {
    SyncAnswer {
        error: code,
        protocol_type: None,
        protocol: None,
        assignment: Bytes::new(),
    }
}

/// Every group of the cluster. Group state is cluster-wide: moving a group's coordinator keeps
/// it, as Kafka's new coordinator reloads it from `__consumer_offsets`.
#[derive(Default)]
pub(crate) struct Coordinator {
    pub groups: BTreeMap<String, Group>,
    next_member: u64,
    /// Kafka's `group.initial.rebalance.delay.ms`; 0 unless the test sets it.
    pub initial_delay: Duration,
}

impl Coordinator {
    fn new_member_id(&mut self, prefix: &str) -> String {
        self.next_member += 1;
        let prefix = if prefix.is_empty() { "member" } else { prefix };
        format!("{prefix}-{:08}", self.next_member)
    }

    pub fn join(
        &mut self,
        req: &JoinGroupRequest,
        version: i16,
        client_id: &str,
        now: Instant,
    ) -> Pending<JoinGroupResponse> {
        let fail = |code: ErrorCode| Pending::Now(join_error(code, &req.member_id));
        if req.session_timeout_ms <= 0 {
            return fail(ErrorCode::InvalidSessionTimeout);
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return fail(ErrorCode::InconsistentGroupProtocol);
        }
        let initial_delay = self.initial_delay;
        let protocols: Vec<(String, Bytes)> = req
            .protocols
            .iter()
            .map(|p| (p.name.clone(), p.metadata.clone()))
            .collect();
        let session_timeout = Duration::from_millis(req.session_timeout_ms as u64);
        let rebalance_timeout = if version == 0 || req.rebalance_timeout_ms <= 0 {
            session_timeout
        } else {
            Duration::from_millis(req.rebalance_timeout_ms as u64)
        };
        let new_id = if req.member_id.is_empty() {
            let prefix = req
                .group_instance_id
                .as_deref()
                .unwrap_or(client_id)
                .to_string();
            Some(self.new_member_id(&prefix))
        } else {
            None
        };
        let group = self
            .groups
            .entry(req.group_id.clone())
            .or_insert_with(Group::new);
        if group.state == GroupState::Dead {
            *group = Group::new();
        }
        // Every member must share the protocol type and at least one protocol.
        if group.has_members() {
            let same_type = group.protocol_type.as_deref() == Some(req.protocol_type.as_str())
                || group
                    .members
                    .iter()
                    .all(|m| m.protocol_type == req.protocol_type);
            let common = protocols.iter().any(|(n, _)| {
                group
                    .members
                    .iter()
                    .filter(|m| m.id != req.member_id)
                    .all(|m| m.protocols.iter().any(|(p, _)| p == n))
            });
            if !same_type || !common {
                return fail(ErrorCode::InconsistentGroupProtocol);
            }
        }
        let (tx, rx) = oneshot::channel();
        let new_member = |id: String| Member {
            id,
            instance_id: req.group_instance_id.clone(),
            client_id: client_id.to_string(),
            session_timeout,
            rebalance_timeout,
            protocol_type: req.protocol_type.clone(),
            protocols: protocols.clone(),
            assignment: Bytes::new(),
            expires: now + session_timeout,
            join: None,
            sync: None,
        };

        if let Some(id) = new_id {
            if let Some(instance) = &req.group_instance_id
                && let Some(idx) = group.by_instance(instance)
            {
                // A static member restarted: it takes over under a new id; the old id is fenced.
                let old = std::mem::replace(&mut group.members[idx].id, id.clone());
                if group.leader.as_deref() == Some(old.as_str()) {
                    group.leader = Some(id.clone());
                }
                let m = &mut group.members[idx];
                if let Some(old_tx) = m.join.take() {
                    let _ = old_tx.send(join_error(ErrorCode::FencedInstanceId, &old));
                }
                if let Some(old_tx) = m.sync.take() {
                    let _ = old_tx.send(sync_error(ErrorCode::FencedInstanceId));
                }
                let same_type = m.protocol_type == req.protocol_type;
                m.session_timeout = session_timeout;
                m.rebalance_timeout = rebalance_timeout;
                m.client_id = client_id.to_string();
                m.expires = now + session_timeout;
                // Kafka's rule: the restart stands without a rebalance when the protocol the
                // group would select with the new metadata is the one in use. The metadata
                // bytes themselves may differ (a consumer's subscription carries the
                // partitions it owned, which a restarted process no longer knows).
                let previous = std::mem::replace(&mut m.protocols, protocols.clone());
                let keeps_protocol = same_type
                    && group.protocol.is_some()
                    && group.select_protocol() == group.protocol;
                if !keeps_protocol {
                    group.members[idx].protocols = previous;
                }
                let m = &mut group.members[idx];
                match group.state {
                    GroupState::Stable | GroupState::CompletingRebalance if keeps_protocol => {
                        // No rebalance: the current generation stands; the leader is told to
                        // skip assigning (v9) since the assignment is already in place.
                        return Pending::Now(group.join_answer(idx, version, true));
                    }
                    GroupState::PreparingRebalance => {
                        m.protocols = protocols;
                        m.join = Some(tx);
                        group.maybe_complete_join(now);
                    }
                    _ => {
                        m.protocols = protocols;
                        m.join = Some(tx);
                        group.prepare_rebalance(now, initial_delay);
                        group.maybe_complete_join(now);
                    }
                }
                return Pending::Wait(rx);
            }
            if version >= 4 && req.group_instance_id.is_none() {
                // KIP-394: hand out an id and make the client come back with it.
                group.pending.insert(id.clone(), now + session_timeout);
                let mut r = join_error(ErrorCode::MemberIdRequired, &id);
                r.member_id = id;
                return Pending::Now(r);
            }
            let mut m = new_member(id);
            m.join = Some(tx);
            group.members.push(m);
            if group.state != GroupState::PreparingRebalance {
                group.prepare_rebalance(now, initial_delay);
            }
            group.maybe_complete_join(now);
            return Pending::Wait(rx);
        }

        let Some(idx) = group.position(&req.member_id) else {
            if group.pending.remove(&req.member_id).is_some() {
                let mut m = new_member(req.member_id.clone());
                m.join = Some(tx);
                group.members.push(m);
                if group.state != GroupState::PreparingRebalance {
                    group.prepare_rebalance(now, initial_delay);
                }
                group.maybe_complete_join(now);
                return Pending::Wait(rx);
            }
            if let Some(instance) = &req.group_instance_id
                && group.by_instance(instance).is_some()
            {
                return fail(ErrorCode::FencedInstanceId);
            }
            return fail(ErrorCode::UnknownMemberId);
        };
        if let Err(code) = group.validate(&req.member_id, req.group_instance_id.as_deref()) {
            return fail(code);
        }
        let is_leader = group.leader.as_deref() == Some(req.member_id.as_str());
        let m = &mut group.members[idx];
        let unchanged = m.protocols == protocols;
        m.session_timeout = session_timeout;
        m.rebalance_timeout = rebalance_timeout;
        m.expires = now + session_timeout;
        match group.state {
            GroupState::PreparingRebalance => {
                m.protocols = protocols;
                m.join = Some(tx);
                group.maybe_complete_join(now);
            }
            // A follower that rejoins unchanged gets the current generation back (Kafka does
            // not rebalance for it); the leader or a changed member starts a rebalance.
            GroupState::CompletingRebalance if unchanged => {
                return Pending::Now(group.join_answer(idx, version, false));
            }
            GroupState::Stable if unchanged && !is_leader => {
                return Pending::Now(group.join_answer(idx, version, false));
            }
            _ => {
                m.protocols = protocols;
                m.join = Some(tx);
                group.prepare_rebalance(now, initial_delay);
                group.maybe_complete_join(now);
            }
        }
        Pending::Wait(rx)
    }

    pub fn sync(&mut self, req: &SyncGroupRequest, now: Instant) -> Pending<SyncAnswer> {
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            return Pending::Now(sync_error(ErrorCode::UnknownMemberId));
        };
        let idx = match group.validate(&req.member_id, req.group_instance_id.as_deref()) {
            Ok(i) => i,
            Err(code) => return Pending::Now(sync_error(code)),
        };
        if req.generation_id != group.generation {
            return Pending::Now(sync_error(ErrorCode::IllegalGeneration));
        }
        if req
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != group.protocol_type.as_ref())
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|p| Some(p) != group.protocol.as_ref())
        {
            return Pending::Now(sync_error(ErrorCode::InconsistentGroupProtocol));
        }
        let answer = |g: &Group, i: usize| SyncAnswer {
            error: ErrorCode::None,
            protocol_type: g.protocol_type.clone(),
            protocol: g.protocol.clone(),
            assignment: g.members[i].assignment.clone(),
        };
        match group.state {
            GroupState::Empty | GroupState::Dead => {
                Pending::Now(sync_error(ErrorCode::UnknownMemberId))
            }
            GroupState::PreparingRebalance => {
                Pending::Now(sync_error(ErrorCode::RebalanceInProgress))
            }
            GroupState::Stable => {
                group.members[idx].expires = now + group.members[idx].session_timeout;
                Pending::Now(answer(group, idx))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                let m = &mut group.members[idx];
                m.expires = now + m.session_timeout;
                m.sync = Some(tx);
                if group.leader.as_deref() == Some(req.member_id.as_str()) {
                    for m in &mut group.members {
                        m.assignment = req
                            .assignments
                            .iter()
                            .find(|a| a.member_id == m.id)
                            .map(|a| a.assignment.clone())
                            .unwrap_or_default();
                    }
                    group.state = GroupState::Stable;
                    for i in 0..group.members.len() {
                        let a = answer(group, i);
                        if let Some(tx) = group.members[i].sync.take() {
                            let _ = tx.send(a);
                        }
                    }
                }
                Pending::Wait(rx)
            }
        }
    }

    pub fn heartbeat(&mut self, req: &HeartbeatRequest, now: Instant) -> ErrorCode {
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            return ErrorCode::UnknownMemberId;
        };
        if group.state == GroupState::Dead {
            return ErrorCode::CoordinatorNotAvailable;
        }
        let idx = match group.validate(&req.member_id, req.group_instance_id.as_deref()) {
            Ok(i) => i,
            Err(code) => return code,
        };
        if req.generation_id != group.generation {
            return ErrorCode::IllegalGeneration;
        }
        let m = &mut group.members[idx];
        m.expires = now + m.session_timeout;
        match group.state {
            GroupState::PreparingRebalance => ErrorCode::RebalanceInProgress,
            GroupState::Empty => ErrorCode::UnknownMemberId,
            _ => ErrorCode::None,
        }
    }

    /// One member leaving; `member_id` may be empty when a static instance id names it.
    pub fn leave(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        now: Instant,
    ) -> ErrorCode {
        let initial_delay = self.initial_delay;
        let Some(group) = self.groups.get_mut(group_id) else {
            return ErrorCode::UnknownMemberId;
        };
        let idx = match instance {
            Some(inst) => match group.by_instance(inst) {
                Some(i) if member_id.is_empty() || group.members[i].id == member_id => i,
                Some(_) => return ErrorCode::FencedInstanceId,
                None => return ErrorCode::UnknownMemberId,
            },
            None => match group.position(member_id) {
                Some(i) => i,
                None => return ErrorCode::UnknownMemberId,
            },
        };
        group.remove_member(idx, now, initial_delay);
        ErrorCode::None
    }

    /// Validates an OffsetCommit's identity the way Kafka does; `Ok` means store it.
    pub fn check_commit(
        &mut self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance: Option<&str>,
        now: Instant,
    ) -> ErrorCode {
        let group = self
            .groups
            .entry(group_id.to_string())
            .or_insert_with(Group::new);
        if group.state == GroupState::Dead {
            *group = Group::new();
        }
        if generation < 0 && member_id.is_empty() && instance.is_none() {
            // An admin or simple consumer commit: only while nobody owns the partitions.
            return if group.state == GroupState::Empty {
                ErrorCode::None
            } else {
                ErrorCode::IllegalGeneration
            };
        }
        let idx = match group.validate(member_id, instance) {
            Ok(i) => i,
            Err(code) => return code,
        };
        if generation != group.generation {
            return ErrorCode::IllegalGeneration;
        }
        if group.state == GroupState::CompletingRebalance {
            return ErrorCode::RebalanceInProgress;
        }
        let m = &mut group.members[idx];
        m.expires = now + m.session_timeout;
        ErrorCode::None
    }

    /// Ends sessions, pending member ids and join phases whose time has come.
    pub fn tick(&mut self, now: Instant) {
        let initial_delay = self.initial_delay;
        for group in self.groups.values_mut() {
            group.pending.retain(|_, exp| *exp > now);
            while let Some(idx) = group
                .members
                .iter()
                .position(|m| !m.awaiting() && m.expires <= now)
            {
                group.remove_member(idx, now, initial_delay);
            }
            group.maybe_complete_join(now);
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for g in self.groups.values() {
            g.pending.values().for_each(|t| consider(*t));
            g.members
                .iter()
                .filter(|m| !m.awaiting())
                .for_each(|m| consider(m.expires));
            if let Some(d) = g.join_deadline {
                consider(d);
            }
        }
        next
    }

    /// Ends a member's session now, as if it had stopped heartbeating long ago.
    pub fn expire(&mut self, group_id: &str, member_id: &str, now: Instant) -> bool {
        let initial_delay = self.initial_delay;
        let Some(group) = self.groups.get_mut(group_id) else {
            return false;
        };
        let Some(idx) = group.position(member_id) else {
            return false;
        };
        group.remove_member(idx, now, initial_delay);
        true
    }
}
