//! The membership state machine, sans-IO: what each coordinator answer means for this
//! member's id, generation and partitions, and what to do next. The tokio layer
//! ([`super::coordinator`], [`super::heartbeat`], `GroupConsumer::poll`) only sends the
//! requests this asks for and runs the callbacks it reports; every decision is here and is
//! unit-tested per error code.
//!
//! Kafka's rules (classic protocol, KIP-394 member ids, KIP-345 static members, KIP-429
//! cooperative rebalancing):
//! - MEMBER_ID_REQUIRED: take the member id the coordinator gave and join again at once.
//! - REBALANCE_IN_PROGRESS: rejoin, keeping id, generation and partitions (they are revoked
//!   cleanly by the rejoin: all of them in the eager protocol, what moves in the cooperative).
//! - ILLEGAL_GENERATION: our generation is over: its partitions are *lost*; keep the member id.
//! - UNKNOWN_MEMBER_ID: the coordinator forgot us (session expired): partitions lost, and
//!   the member id is reset so the next join gets a new one.
//! - NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS, connection
//!   failures: find the coordinator again and retry.
//! - FENCED_INSTANCE_ID: another process took our static identity; fatal.

use std::collections::BTreeSet;

use kafka_proto::ErrorCode;

use super::types::TopicPartition;
use crate::error::Error;
use crate::routing::is_coordinator_moved;

/// Generation id meaning "not in a generation".
pub const NO_GENERATION: i32 = -1;

/// What the caller should do after an error answer.
#[derive(Debug, Clone)]
pub enum Next {
    /// Back off, then send the same request again.
    Retry,
    /// Find the coordinator again, then retry.
    Rediscover,
    /// (Re)join the group. The state already reflects what the error reset.
    Rejoin,
    /// Join again immediately with the member id now set (MEMBER_ID_REQUIRED).
    JoinAgain,
    /// Give up with this error.
    Fatal(Error),
}

impl PartialEq for Next {
    /// Errors compare by their message (`Error` is not `PartialEq`).
    fn eq(&self, other: &Next) -> bool {
        match (self, other) {
            (Next::Fatal(a), Next::Fatal(b)) => a.to_string() == b.to_string(),
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

/// What a finished rebalance changes for this member.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AssignmentChange {
    /// Owned before, not assigned now: revoke (cooperative protocol; empty when eager, where
    /// everything was revoked before joining).
    pub revoked: Vec<TopicPartition>,
    /// Newly assigned: fetch committed offsets, then `on_assigned`.
    pub added: Vec<TopicPartition>,
    /// The full assignment now.
    pub assigned: Vec<TopicPartition>,
    /// Cooperative protocol: partitions were revoked, so rejoin at once to let the leader
    /// give them to their new owner (KIP-429's follow-up rebalance).
    pub rejoin: bool,
}

/// What to do with owned partitions before sending JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prepare {
    /// Partitions from a generation that is gone (`on_lost`, no commit possible).
    pub lost: Vec<TopicPartition>,
    /// Partitions to revoke cleanly before joining (eager protocol: all; commit first).
    pub revoked: Vec<TopicPartition>,
}

/// Who a commit speaks for, fixed when the commit is made: a commit made in one generation
/// must never go out under a later one, where its partitions may belong to another member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitIdentity {
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
}

/// Where the member is in the join/sync cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not in a generation (never joined, left, or reset by an error).
    Unjoined,
    /// JoinGroup or SyncGroup in progress.
    Joining,
    /// Holding an assignment; heartbeats run.
    Stable,
    /// Left for good (closed or fenced).
    Closed,
}

/// The member's state. One instance is shared (behind a mutex, never held across an await)
/// by the application's task, the heartbeat task and in-flight async commits.
#[derive(Debug, Clone)]
pub struct Membership {
    pub group_id: String,
    pub instance_id: Option<String>,
    /// Empty until the coordinator assigns one.
    pub member_id: String,
    pub generation: i32,
    pub phase: Phase,
    pub leader: bool,
    /// The coordinator's node id, once found.
    pub coordinator: Option<i32>,
    /// What this member owns now.
    pub owned: BTreeSet<TopicPartition>,
    /// Whether the group runs the cooperative protocol.
    pub cooperative: bool,
    /// Set when something (heartbeat, commit, subscription change, revocation) asks for a
    /// rejoin; cleared when a join starts.
    pub rejoin_needed: bool,
    /// The generation `owned` was assigned in is gone, so `owned` is lost rather than revoked.
    pub owned_lost: bool,
    /// A fatal error seen by the heartbeat task, reported by the next `poll`.
    pub fatal: Option<Error>,
    /// Partitions come from the group (subscribe), so commits need a live generation.
    pub subscribed: bool,
    /// The generation of the last completed SyncGroup (what `generation()` reports).
    pub synced_generation: i32,
}

impl Membership {
    pub fn new(group_id: String, instance_id: Option<String>, cooperative: bool) -> Self {
        Membership {
            group_id,
            instance_id,
            member_id: String::new(),
            generation: NO_GENERATION,
            phase: Phase::Unjoined,
            leader: false,
            coordinator: None,
            owned: BTreeSet::new(),
            cooperative,
            rejoin_needed: false,
            owned_lost: false,
            fatal: None,
            subscribed: false,
            synced_generation: NO_GENERATION,
        }
    }

    /// Whether `poll` must (re)join before anything else.
    pub fn needs_join(&self) -> bool {
        self.phase != Phase::Closed && (self.phase != Phase::Stable || self.rejoin_needed)
    }

    /// (generation, member id) of the assignment held now: set when a SyncGroup completes,
    /// kept while rejoining from it (so `on_revoked` sees the generation its commits go
    /// under), gone once the generation ends.
    pub fn generation(&self) -> Option<(i32, String)> {
        (self.synced_generation != NO_GENERATION
            && self.generation != NO_GENERATION
            && self.phase != Phase::Closed)
            .then(|| (self.synced_generation, self.member_id.clone()))
    }

    /// Called before JoinGroup: which owned partitions are lost, which are revoked now.
    pub fn prepare_join(&mut self) -> Prepare {
        let mut out = Prepare::default();
        if self.owned_lost || self.generation == NO_GENERATION {
            out.lost = std::mem::take(&mut self.owned).into_iter().collect();
        } else if !self.cooperative {
            out.revoked = std::mem::take(&mut self.owned).into_iter().collect();
        }
        self.owned_lost = false;
        self.rejoin_needed = false;
        self.phase = Phase::Joining;
        out
    }

    /// Applies an error answer to JoinGroup. `member_id` is the id the response carried.
    pub fn on_join_error(&mut self, code: ErrorCode, member_id: &str) -> Next {
        if code == ErrorCode::MemberIdRequired {
            self.member_id = member_id.to_owned();
            return Next::JoinAgain;
        }
        self.on_error(code)
    }

    /// Applies a successful JoinGroup.
    pub fn on_joined(&mut self, generation: i32, member_id: &str, leader: bool) {
        self.generation = generation;
        self.member_id = member_id.to_owned();
        self.leader = leader;
    }

    /// Applies a successful SyncGroup: the new assignment, and what changed.
    pub fn on_synced(&mut self, assigned: Vec<TopicPartition>) -> AssignmentChange {
        let new: BTreeSet<TopicPartition> = assigned.into_iter().collect();
        let revoked: Vec<TopicPartition> = self.owned.difference(&new).cloned().collect();
        let added: Vec<TopicPartition> = new.difference(&self.owned).cloned().collect();
        let rejoin = self.cooperative && !revoked.is_empty();
        self.owned = new.clone();
        self.synced_generation = self.generation;
        self.phase = Phase::Stable;
        if rejoin {
            self.rejoin_needed = true;
        }
        AssignmentChange {
            revoked,
            added,
            assigned: new.into_iter().collect(),
            rejoin,
        }
    }

    /// Applies an error answer from the coordinator (JoinGroup, SyncGroup, Heartbeat,
    /// OffsetCommit) and says what to do next.
    pub fn on_error(&mut self, code: ErrorCode) -> Next {
        match code {
            ErrorCode::None => Next::Retry,
            ErrorCode::RebalanceInProgress => {
                self.request_rejoin();
                // A SyncGroup overtaken by a new rebalance: join again.
                self.abandon_join();
                Next::Rejoin
            }
            ErrorCode::IllegalGeneration => {
                self.reset_generation();
                Next::Rejoin
            }
            ErrorCode::UnknownMemberId => {
                self.reset_generation();
                self.member_id.clear();
                Next::Rejoin
            }
            code if is_coordinator_moved(code) => {
                self.coordinator = None;
                Next::Rediscover
            }
            ErrorCode::FencedInstanceId => {
                let e = Error::FencedInstanceId {
                    instance_id: self.instance_id.clone().unwrap_or_default(),
                };
                self.reset_generation();
                self.phase = Phase::Closed;
                self.fatal = Some(e.clone());
                Next::Fatal(e)
            }
            code if code.is_retriable() => Next::Retry,
            code => Next::Fatal(Error::Group {
                group: self.group_id.clone(),
                code,
                message: None,
            }),
        }
    }

    /// Asks for a rejoin at the next `poll` for a reason no coordinator answer carries: the
    /// subscription changed, a join round failed on this side, or the leader saw partitions
    /// its assignment did not cover.
    pub fn request_rejoin(&mut self) {
        self.rejoin_needed = true;
    }

    /// The join round in flight ended without a generation (an error answer, a backoff, a
    /// failed task): the member is no longer joining, so the next round starts afresh.
    pub fn abandon_join(&mut self) {
        if self.phase == Phase::Joining {
            self.phase = Phase::Unjoined;
        }
    }

    /// A connection to the coordinator failed: look for it again.
    pub fn on_connection_error(&mut self) -> Next {
        self.coordinator = None;
        Next::Rediscover
    }

    /// The heartbeat task left because the application did not poll within
    /// max_poll_interval: the generation is gone and so are the partitions.
    pub fn on_poll_timeout(&mut self) {
        self.reset_generation();
        if self.instance_id.is_none() {
            // Java resets a dynamic member's id after a proactive leave.
            self.member_id.clear();
        }
    }

    /// After LeaveGroup on close.
    pub fn on_closed(&mut self) {
        self.generation = NO_GENERATION;
        self.synced_generation = NO_GENERATION;
        self.phase = Phase::Closed;
        self.owned.clear();
    }

    /// Our generation is gone: what we own is lost, and we must join again.
    fn reset_generation(&mut self) {
        self.generation = NO_GENERATION;
        self.synced_generation = NO_GENERATION;
        self.leader = false;
        if !self.owned.is_empty() {
            self.owned_lost = true;
        }
        self.rejoin_needed = true;
        if self.phase != Phase::Closed {
            self.phase = Phase::Unjoined;
        }
    }

    /// A subscribed member outside any generation cannot commit: its partitions may belong
    /// to someone else already (Java fails such a commit locally too).
    pub fn check_can_commit(&self) -> Result<(), Error> {
        if !self.subscribed || self.generation != NO_GENERATION {
            return Ok(());
        }
        let code = if self.member_id.is_empty() {
            ErrorCode::UnknownMemberId
        } else {
            ErrorCode::IllegalGeneration
        };
        Err(Error::CommitFailed {
            code,
            message: Some("this member is not in a generation of the group; it must rejoin".into()),
        })
    }

    /// The identity a commit made now carries, or `CommitFailed` when a subscribed member is
    /// outside any generation.
    pub fn commit_identity(&self) -> Result<CommitIdentity, Error> {
        self.check_can_commit()?;
        Ok(CommitIdentity {
            generation: self.generation,
            member_id: self.member_id.clone(),
            instance_id: self.instance_id.clone(),
        })
    }

    /// Whether `id` is still this member's identity. A commit checks before every attempt: once
    /// its generation is over (a rebalance completed, the member was reset or closed), sending
    /// it would either be refused or, worse, land under the new generation.
    pub fn is_current(&self, id: &CommitIdentity) -> bool {
        self.phase != Phase::Closed
            && self.generation == id.generation
            && self.member_id == id.member_id
    }

    /// `Err(CommitFailed)` when a subscribed member's commit made as `id` can no longer be
    /// sent. Commits of a member that never subscribed (no generation) are not fenced.
    pub fn check_identity(&self, id: &CommitIdentity) -> Result<(), Error> {
        if !self.subscribed || self.is_current(id) {
            return Ok(());
        }
        let code = if self.member_id != id.member_id {
            ErrorCode::UnknownMemberId
        } else {
            ErrorCode::IllegalGeneration
        };
        Err(Error::CommitFailed {
            code,
            message: Some(format!(
                "the commit was made in generation {} which is over",
                id.generation
            )),
        })
    }

    /// Applies an error answer to a Heartbeat. REBALANCE_IN_PROGRESS while this member is
    /// already on its way into the join (revoking before JoinGroup) is what it expects: the
    /// heartbeat kept the session alive, and nothing else changes. `None`: carry on.
    pub fn on_heartbeat_error(&mut self, code: ErrorCode) -> Option<Next> {
        if code == ErrorCode::RebalanceInProgress && self.phase == Phase::Joining {
            return None;
        }
        Some(self.on_error(code))
    }

    /// Marks the JoinGroup about to be sent: what was asked for before (by a heartbeat during
    /// the revocation, say) is what this join does.
    pub fn begin_join(&mut self) {
        if self.phase != Phase::Closed {
            self.phase = Phase::Joining;
        }
        self.rejoin_needed = false;
    }

    /// The error a commit made as `id` gets for `code`. The membership is updated as for any
    /// error only while `id` is still current: the answer to a commit from an older
    /// generation says nothing about the one the member is in now.
    pub fn commit_error(
        &mut self,
        code: ErrorCode,
        message: Option<String>,
        id: &CommitIdentity,
    ) -> Error {
        let current = self.is_current(id);
        match code {
            ErrorCode::IllegalGeneration
            | ErrorCode::UnknownMemberId
            | ErrorCode::RebalanceInProgress => {
                if current {
                    self.on_error(code);
                }
                Error::CommitFailed { code, message }
            }
            ErrorCode::FencedInstanceId => match self.on_error(code) {
                Next::Fatal(e) => e,
                _ => Error::FencedInstanceId {
                    instance_id: self.instance_id.clone().unwrap_or_default(),
                },
            },
            code => Error::Broker {
                code,
                message,
                context: Some(format!("commit of group {}", self.group_id)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn stable(cooperative: bool, owned: &[i32]) -> Membership {
        let mut m = Membership::new("g".into(), None, cooperative);
        m.prepare_join();
        m.on_joined(5, "m-1", false);
        m.on_synced(owned.iter().map(|&p| tp(p)).collect());
        m
    }

    #[test]
    fn a_new_member_must_join_and_has_no_generation() {
        let m = Membership::new("g".into(), None, false);
        assert!(m.needs_join());
        assert_eq!(m.generation(), None);
    }

    #[test]
    fn member_id_required_sets_the_id_and_joins_again() {
        let mut m = Membership::new("g".into(), None, false);
        m.prepare_join();
        assert_eq!(
            m.on_join_error(ErrorCode::MemberIdRequired, "m-42"),
            Next::JoinAgain
        );
        assert_eq!(m.member_id, "m-42");
    }

    #[test]
    fn synced_member_is_stable_with_its_generation() {
        let m = stable(false, &[0, 1]);
        assert!(!m.needs_join());
        assert_eq!(m.generation(), Some((5, "m-1".into())));
        assert_eq!(m.owned.len(), 2);
    }

    #[test]
    fn rebalance_in_progress_rejoins_keeping_id_generation_and_partitions() {
        let mut m = stable(false, &[0, 1]);
        assert_eq!(m.on_error(ErrorCode::RebalanceInProgress), Next::Rejoin);
        assert!(m.needs_join());
        assert_eq!(m.member_id, "m-1");
        assert_eq!(m.generation, 5);
        // Eager: everything is revoked cleanly before the join, nothing lost.
        let p = m.prepare_join();
        assert_eq!(p.revoked, vec![tp(0), tp(1)]);
        assert!(p.lost.is_empty());
    }

    #[test]
    fn cooperative_rejoin_revokes_nothing_up_front() {
        let mut m = stable(true, &[0, 1]);
        m.on_error(ErrorCode::RebalanceInProgress);
        assert_eq!(m.prepare_join(), Prepare::default());
        assert_eq!(m.owned.len(), 2, "still owned while rejoining");
    }

    #[test]
    fn illegal_generation_loses_partitions_but_keeps_the_member_id() {
        let mut m = stable(false, &[0, 1]);
        assert_eq!(m.on_error(ErrorCode::IllegalGeneration), Next::Rejoin);
        assert_eq!(m.member_id, "m-1");
        assert_eq!(m.generation, NO_GENERATION);
        assert_eq!(m.generation(), None);
        let p = m.prepare_join();
        assert_eq!(p.lost, vec![tp(0), tp(1)]);
        assert!(p.revoked.is_empty());
    }

    #[test]
    fn unknown_member_id_loses_partitions_and_resets_the_member_id() {
        let mut m = stable(true, &[3]);
        assert_eq!(m.on_error(ErrorCode::UnknownMemberId), Next::Rejoin);
        assert_eq!(m.member_id, "");
        assert_eq!(m.prepare_join().lost, vec![tp(3)]);
    }

    #[test]
    fn coordinator_errors_rediscover_and_keep_membership() {
        for code in [
            ErrorCode::NotCoordinator,
            ErrorCode::CoordinatorNotAvailable,
            ErrorCode::CoordinatorLoadInProgress,
        ] {
            let mut m = stable(false, &[0]);
            m.coordinator = Some(1);
            assert_eq!(m.on_error(code), Next::Rediscover, "{code:?}");
            assert_eq!(m.coordinator, None);
            assert_eq!(m.generation(), Some((5, "m-1".into())));
        }
        let mut m = stable(false, &[0]);
        m.coordinator = Some(1);
        assert_eq!(m.on_connection_error(), Next::Rediscover);
        assert_eq!(m.coordinator, None);
    }

    #[test]
    fn fenced_instance_id_is_fatal_and_typed() {
        let mut m = Membership::new("g".into(), Some("i-1".into()), false);
        let next = m.on_error(ErrorCode::FencedInstanceId);
        assert!(matches!(
            next,
            Next::Fatal(Error::FencedInstanceId { ref instance_id }) if instance_id == "i-1"
        ));
        assert_eq!(m.phase, Phase::Closed);
        assert!(!m.needs_join());
        assert!(m.fatal.is_some());
    }

    #[test]
    fn other_errors_retry_when_retriable_else_fatal() {
        let mut m = stable(false, &[0]);
        assert_eq!(m.on_error(ErrorCode::RequestTimedOut), Next::Retry);
        assert!(matches!(
            m.on_error(ErrorCode::InconsistentGroupProtocol),
            Next::Fatal(Error::Group { .. })
        ));
        assert!(matches!(
            m.on_error(ErrorCode::GroupAuthorizationFailed),
            Next::Fatal(_)
        ));
    }

    #[test]
    fn cooperative_sync_revokes_what_moved_and_asks_for_a_follow_up() {
        let mut m = stable(true, &[0, 1, 2]);
        m.on_error(ErrorCode::RebalanceInProgress);
        m.prepare_join();
        m.on_joined(6, "m-1", true);
        let c = m.on_synced(vec![tp(0), tp(1)]);
        assert_eq!(c.revoked, vec![tp(2)]);
        assert!(c.added.is_empty());
        assert!(c.rejoin);
        assert!(m.needs_join());
        // The follow-up gives nothing back and takes nothing: stable.
        m.prepare_join();
        m.on_joined(7, "m-1", true);
        let c = m.on_synced(vec![tp(0), tp(1)]);
        assert_eq!(
            c,
            AssignmentChange {
                assigned: vec![tp(0), tp(1)],
                ..Default::default()
            }
        );
        assert!(!m.needs_join());
    }

    #[test]
    fn eager_sync_adds_everything_and_never_asks_for_a_follow_up() {
        let mut m = stable(false, &[0, 1]);
        m.on_error(ErrorCode::RebalanceInProgress);
        m.prepare_join();
        m.on_joined(6, "m-1", false);
        let c = m.on_synced(vec![tp(1)]);
        assert_eq!(c.added, vec![tp(1)]);
        assert!(c.revoked.is_empty());
        assert!(!c.rejoin);
    }

    #[test]
    fn commit_errors_are_typed_and_reset_as_kafka_does() {
        let mut m = stable(false, &[0]);
        let id = m.commit_identity().unwrap();
        let e = m.commit_error(ErrorCode::IllegalGeneration, None, &id);
        assert!(matches!(
            e,
            Error::CommitFailed {
                code: ErrorCode::IllegalGeneration,
                ..
            }
        ));
        assert_eq!(m.member_id, "m-1");
        assert!(m.needs_join());
        let mut m = stable(false, &[0]);
        let id = m.commit_identity().unwrap();
        assert!(matches!(
            m.commit_error(ErrorCode::RebalanceInProgress, None, &id),
            Error::CommitFailed { .. }
        ));
        assert_eq!(
            m.generation, 5,
            "a rebalance alone does not end the generation"
        );
        let mut m = stable(false, &[0]);
        let id = m.commit_identity().unwrap();
        assert!(matches!(
            m.commit_error(ErrorCode::UnknownMemberId, None, &id),
            Error::CommitFailed { .. }
        ));
        assert_eq!(m.member_id, "");
        assert!(matches!(
            m.commit_error(ErrorCode::OffsetMetadataTooLarge, None, &id),
            Error::Broker { .. }
        ));
    }

    #[test]
    fn a_commit_keeps_the_identity_it_was_made_with() {
        let mut m = stable(false, &[0, 1]);
        m.subscribed = true;
        let id = m.commit_identity().unwrap();
        assert_eq!(
            id,
            CommitIdentity {
                generation: 5,
                member_id: "m-1".into(),
                instance_id: None
            }
        );
        assert!(m.check_identity(&id).is_ok());
        // Revoking before the join keeps the generation: commits from on_revoked still go.
        m.on_error(ErrorCode::RebalanceInProgress);
        m.prepare_join();
        assert!(m.check_identity(&id).is_ok());
        // The next generation: the old commit is over, whatever the member owns now.
        m.on_joined(6, "m-1", false);
        m.on_synced(vec![tp(0)]);
        assert!(matches!(
            m.check_identity(&id),
            Err(Error::CommitFailed {
                code: ErrorCode::IllegalGeneration,
                ..
            })
        ));
        // A stale commit's refusal does not touch the generation the member is in now.
        let e = m.commit_error(ErrorCode::IllegalGeneration, None, &id);
        assert!(matches!(e, Error::CommitFailed { .. }));
        assert_eq!(m.generation(), Some((6, "m-1".into())));
        assert!(!m.needs_join());
        // A new member id: UNKNOWN_MEMBER_ID.
        let id6 = m.commit_identity().unwrap();
        m.on_error(ErrorCode::UnknownMemberId);
        assert!(matches!(
            m.check_identity(&id6),
            Err(Error::CommitFailed {
                code: ErrorCode::UnknownMemberId,
                ..
            })
        ));
        // Closed: nothing from before goes out.
        let mut m = stable(false, &[0]);
        m.subscribed = true;
        let id = m.commit_identity().unwrap();
        m.on_closed();
        assert!(m.check_identity(&id).is_err());
    }

    #[test]
    fn a_heartbeat_rebalance_while_revoking_changes_nothing() {
        let mut m = stable(false, &[0, 1]);
        m.on_error(ErrorCode::RebalanceInProgress);
        m.prepare_join();
        assert_eq!(m.on_heartbeat_error(ErrorCode::RebalanceInProgress), None);
        assert_eq!(m.phase, Phase::Joining);
        assert!(!m.rejoin_needed);
        // Stable: the same answer asks for a rejoin.
        let mut m = stable(false, &[0]);
        assert_eq!(
            m.on_heartbeat_error(ErrorCode::RebalanceInProgress),
            Some(Next::Rejoin)
        );
        assert!(m.needs_join());
        // While revoking, an eviction still counts.
        let mut m = stable(false, &[0]);
        m.on_error(ErrorCode::RebalanceInProgress);
        m.prepare_join();
        assert_eq!(
            m.on_heartbeat_error(ErrorCode::UnknownMemberId),
            Some(Next::Rejoin)
        );
        assert_eq!(m.member_id, "");
        m.begin_join();
        assert_eq!(m.phase, Phase::Joining);
        assert!(!m.rejoin_needed);
    }

    #[test]
    fn an_abandoned_join_starts_over_and_a_requested_rejoin_is_kept() {
        let mut m = stable(false, &[0]);
        m.on_error(ErrorCode::RebalanceInProgress);
        m.prepare_join();
        m.begin_join();
        m.abandon_join();
        assert_eq!(m.phase, Phase::Unjoined);
        assert!(m.needs_join());
        // Only a join in flight is abandoned: a stable or closed member stays as it is.
        let mut m = stable(false, &[0]);
        m.abandon_join();
        assert_eq!(m.phase, Phase::Stable);
        assert!(!m.needs_join());
        m.request_rejoin();
        assert!(m.needs_join());
        assert_eq!(
            m.generation(),
            Some((5, "m-1".into())),
            "a rejoin keeps the generation"
        );
        m.on_closed();
        m.abandon_join();
        assert_eq!(m.phase, Phase::Closed);
    }

    #[test]
    fn a_subscribed_member_without_a_generation_cannot_commit() {
        let mut m = stable(false, &[0]);
        m.subscribed = true;
        assert!(m.check_can_commit().is_ok());
        m.on_error(ErrorCode::IllegalGeneration);
        assert!(matches!(
            m.check_can_commit(),
            Err(Error::CommitFailed {
                code: ErrorCode::IllegalGeneration,
                ..
            })
        ));
        m.on_error(ErrorCode::UnknownMemberId);
        assert!(matches!(
            m.check_can_commit(),
            Err(Error::CommitFailed {
                code: ErrorCode::UnknownMemberId,
                ..
            })
        ));
        // Manual assignment (not subscribed) commits as a simple consumer.
        let mut simple = Membership::new("g".into(), None, false);
        simple.subscribed = false;
        assert!(simple.check_can_commit().is_ok());
    }

    #[test]
    fn poll_timeout_loses_partitions_and_resets_a_dynamic_member() {
        let mut m = stable(false, &[0]);
        m.on_poll_timeout();
        assert_eq!(m.member_id, "");
        assert!(m.needs_join());
        assert_eq!(m.prepare_join().lost, vec![tp(0)]);
        let mut s = Membership::new("g".into(), Some("i".into()), false);
        s.prepare_join();
        s.on_joined(1, "m-9", false);
        s.on_synced(vec![tp(0)]);
        s.on_poll_timeout();
        assert_eq!(s.member_id, "m-9", "a static member keeps its id");
    }
}
