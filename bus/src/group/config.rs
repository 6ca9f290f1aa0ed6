//! Group options, each default stated with its unit and reason. Kept apart from
//! [`ConsumerConfig`](crate::consumer::ConsumerConfig) (how to fetch) so a group option cannot
//! land on a consumer without a group.

use std::time::Duration;

/// A partition assignment strategy, named on the wire as Java names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AssignorKind {
    /// Per topic, contiguous ranges of partitions to members in member-id order ("range").
    Range,
    /// All partitions dealt out one by one over the members ("roundrobin").
    RoundRobin,
    /// Balanced, keeps partitions where they are, and moves them in two rebalances so a
    /// partition is never owned twice (KIP-429, "cooperative-sticky").
    CooperativeSticky,
}

impl AssignorKind {
    /// The protocol name in JoinGroup.
    pub fn name(self) -> &'static str {
        match self {
            AssignorKind::Range => "range",
            AssignorKind::RoundRobin => "roundrobin",
            AssignorKind::CooperativeSticky => "cooperative-sticky",
        }
    }

    pub fn from_name(name: &str) -> Option<AssignorKind> {
        match name {
            "range" => Some(AssignorKind::Range),
            "roundrobin" => Some(AssignorKind::RoundRobin),
            "cooperative-sticky" => Some(AssignorKind::CooperativeSticky),
            _ => None,
        }
    }

    /// Whether the assignor supports the cooperative rebalance protocol (KIP-429).
    pub fn cooperative(self) -> bool {
        matches!(self, AssignorKind::CooperativeSticky)
    }
}

/// Options for [`GroupConsumer`](super::GroupConsumer).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupConfig {
    /// The group to join. Required (no default).
    pub group_id: String,
    /// Static membership (KIP-345): a stable id per consumer instance. A restart within
    /// `session_timeout` gets its partitions back without a rebalance, and closing does not
    /// leave the group (as Java does). Default `None` (dynamic member).
    pub group_instance_id: Option<String>,
    /// The coordinator evicts the member when no heartbeat arrives for this long. Default 45 s,
    /// Kafka 3.x's `session.timeout.ms`.
    pub session_timeout: Duration,
    /// How often the background task heartbeats. Default 3 s, Kafka's
    /// `heartbeat.interval.ms`; must be below `session_timeout` (a third or less is wise).
    pub heartbeat_interval: Duration,
    /// How long the coordinator waits for every member to rejoin during a rebalance. Default
    /// `None`: the same as `max_poll_interval`, as in Java, since a member rejoins from `poll`.
    pub rebalance_timeout: Option<Duration>,
    /// The application must call `poll` at least this often; otherwise the heartbeat task
    /// leaves the group so its partitions move to a member that makes progress. Default
    /// 300 s, Kafka's `max.poll.interval.ms`.
    pub max_poll_interval: Duration,
    /// Assignors in order of preference. Default `[Range, CooperativeSticky]`, Java 3.x's
    /// default: eager range now, with an upgrade path to cooperative. The protocol is
    /// cooperative only if every assignor listed supports it.
    pub assignors: Vec<AssignorKind>,
    /// Commit the positions of records already returned by `poll` every
    /// `auto_commit_interval`, before rebalances and on close. Default on, Kafka's default.
    pub auto_commit: bool,
    /// Default 5 s, Kafka's `auto.commit.interval.ms`.
    pub auto_commit_interval: Duration,
    /// The most records one `poll` returns. Default 500, Kafka's `max.poll.records`.
    pub max_poll_records: usize,
}

impl GroupConfig {
    pub fn new(group_id: impl Into<String>) -> Self {
        GroupConfig {
            group_id: group_id.into(),
            group_instance_id: None,
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            rebalance_timeout: None,
            max_poll_interval: Duration::from_secs(300),
            assignors: vec![AssignorKind::Range, AssignorKind::CooperativeSticky],
            auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            max_poll_records: 500,
        }
    }

    pub fn group_instance_id(mut self, id: impl Into<String>) -> Self {
        self.group_instance_id = Some(id.into());
        self
    }

    pub fn session_timeout(mut self, d: Duration) -> Self {
        self.session_timeout = d;
        self
    }

    pub fn heartbeat_interval(mut self, d: Duration) -> Self {
        self.heartbeat_interval = d;
        self
    }

    pub fn rebalance_timeout(mut self, d: Duration) -> Self {
        self.rebalance_timeout = Some(d);
        self
    }

    pub fn max_poll_interval(mut self, d: Duration) -> Self {
        self.max_poll_interval = d;
        self
    }

    pub fn assignors(mut self, assignors: impl IntoIterator<Item = AssignorKind>) -> Self {
        self.assignors = assignors.into_iter().collect();
        self
    }

    pub fn auto_commit(mut self, on: bool) -> Self {
        self.auto_commit = on;
        self
    }

    pub fn auto_commit_interval(mut self, d: Duration) -> Self {
        self.auto_commit_interval = d;
        self
    }

    pub fn max_poll_records(mut self, n: usize) -> Self {
        self.max_poll_records = n;
        self
    }

    /// The rebalance timeout in effect.
    pub fn effective_rebalance_timeout(&self) -> Duration {
        self.rebalance_timeout.unwrap_or(self.max_poll_interval)
    }

    /// Whether the group runs the cooperative protocol: only if every assignor supports it
    /// (Java's rule), since the coordinator may pick any of them.
    pub fn cooperative(&self) -> bool {
        !self.assignors.is_empty() && self.assignors.iter().all(|a| a.cooperative())
    }

    /// Rejects settings that cannot work, naming the option.
    pub fn validate(&self) -> Result<(), String> {
        if self.group_id.is_empty() {
            return Err("group_id must not be empty".into());
        }
        if self.group_instance_id.as_deref() == Some("") {
            return Err(
                "group_instance_id must not be empty (use None for a dynamic member)".into(),
            );
        }
        for (name, d) in [
            ("session_timeout", self.session_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
            ("max_poll_interval", self.max_poll_interval),
            ("rebalance_timeout", self.effective_rebalance_timeout()),
            ("auto_commit_interval", self.auto_commit_interval),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be positive"));
            }
            if d.as_millis() > i32::MAX as u128 {
                return Err(format!("{name} must fit in i32 milliseconds"));
            }
        }
        if self.heartbeat_interval >= self.session_timeout {
            return Err("heartbeat_interval must be below session_timeout".into());
        }
        if self.assignors.is_empty() {
            return Err("assignors must name at least one assignor".into());
        }
        for (i, a) in self.assignors.iter().enumerate() {
            if self.assignors[..i].contains(a) {
                return Err(format!("assignors lists {} twice", a.name()));
            }
        }
        if self.max_poll_records == 0 {
            return Err("max_poll_records must be at least 1".into());
        }
        Ok(())
    }
}

/// Milliseconds as a protocol `int32` (validated configs never saturate).
pub(crate) fn wire_ms(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_javas_and_valid() {
        let c = GroupConfig::new("g");
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.session_timeout, Duration::from_secs(45));
        assert_eq!(c.heartbeat_interval, Duration::from_secs(3));
        assert_eq!(c.effective_rebalance_timeout(), Duration::from_secs(300));
        assert_eq!(
            c.assignors,
            vec![AssignorKind::Range, AssignorKind::CooperativeSticky]
        );
        assert!(!c.cooperative(), "range is eager, so the group is eager");
        assert!(c.auto_commit);
        assert_eq!(c.auto_commit_interval, Duration::from_secs(5));
        assert_eq!(c.max_poll_records, 500);
    }

    #[test]
    fn impossible_settings_are_named() {
        let err = |c: GroupConfig| c.validate().unwrap_err();
        assert!(err(GroupConfig::new("")).contains("group_id"));
        assert!(
            err(GroupConfig::new("g").heartbeat_interval(Duration::from_secs(45)))
                .contains("heartbeat_interval")
        );
        assert!(err(GroupConfig::new("g").assignors([])).contains("assignors"));
        assert!(
            err(GroupConfig::new("g").assignors([AssignorKind::Range, AssignorKind::Range]))
                .contains("twice")
        );
        assert!(err(GroupConfig::new("g").max_poll_records(0)).contains("max_poll_records"));
        assert!(err(GroupConfig::new("g").group_instance_id("")).contains("group_instance_id"));
        assert!(
            GroupConfig::new("g")
                .assignors([AssignorKind::CooperativeSticky])
                .cooperative()
        );
    }
}
