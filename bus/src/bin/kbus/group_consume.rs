//! `kbus consume -g GROUP`: consumes as a member of a consumer group. Partitions come from the
//! group's assignment; positions start at the group's committed offsets (`--from` earliest or
//! latest applies only where the group has none). The offsets of *printed* records are
//! committed every second and when kbus exits on `-n`/`-e`; records a poll returned beyond
//! `-n` are not, so the next member starts right after the last printed one.
//!
//! Ctrl-C (and SIGTERM on Unix) end it the same way: commit, then leave the group, so the
//! partitions move at once instead of after the session timeout.
//!
//! `-e` stops once every partition assigned to this member is read to the high watermark its
//! latest fetch reported, at a moment when no records are waiting: with other members, that
//! is the end of this member's share, not of the topic. A member the group gives no partition
//! (more members than partitions) has an empty share: it stops once it has held that empty
//! assignment, in one generation, through a whole idle poll (so not in the middle of a
//! rebalance that is about to give it something).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bus::consumer::{AutoOffsetReset, ConsumerConfig, Offset};
use bus::{Error, GroupConfig, GroupConsumer, TopicPartitionOffset};
use tokio::time::Instant;

use crate::format::{Format, View};

/// How often printed offsets are committed.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

pub struct GroupArgs {
    pub group: String,
    pub topic: String,
    pub from: Offset,
    pub count: Option<u64>,
    pub exit_at_end: bool,
    pub format: Format,
    pub fetch_wait_ms: u64,
    /// The group's session timeout; heartbeats go at a tenth of it. `None`: the defaults.
    pub session_timeout_ms: Option<u64>,
}

pub async fn run(a: GroupArgs, brokers: &str) -> Result<(), String> {
    let reset = match a.from {
        Offset::Earliest => AutoOffsetReset::Earliest,
        Offset::Latest => AutoOffsetReset::Latest,
        _ => {
            return Err(
                "consume -g: --from takes earliest or latest (the group's offsets decide the rest)"
                    .into(),
            );
        }
    };
    let client = crate::connect(brokers).await?;
    // An unknown topic is an error here, as without -g, rather than an empty subscription.
    client.topic(&a.topic).await.map_err(|e| e.to_string())?;
    let mut group = GroupConfig::new(&a.group).auto_commit(false);
    if let Some(ms) = a.session_timeout_ms {
        let session = Duration::from_millis(ms);
        group = group
            .session_timeout(session)
            .heartbeat_interval(session / 10)
            .rebalance_timeout(session);
    }
    let mut consumer = GroupConsumer::new(
        client,
        group,
        ConsumerConfig::default()
            .auto_offset_reset(reset)
            .fetch_max_wait(Duration::from_millis(a.fetch_wait_ms)),
    )
    .map_err(|e| e.to_string())?;
    consumer
        .subscribe([a.topic.as_str()])
        .map_err(|e| e.to_string())?;

    let mut printed: HashMap<(Arc<str>, i32), i64> = HashMap::new();
    let result = consume(&mut consumer, &a, &mut printed).await;
    let committed = commit(&mut consumer, &mut printed)
        .await
        .map_err(|e| format!("commit: {e}"));
    let closed = consumer.close().await.map_err(|e| format!("closing: {e}"));
    result.and(committed).and(closed)
}

/// Commits the next offset after each printed record of the partitions still assigned.
async fn commit(
    consumer: &mut GroupConsumer,
    printed: &mut HashMap<(Arc<str>, i32), i64>,
) -> Result<(), Error> {
    let assigned = consumer.assignment();
    let offsets: Vec<TopicPartitionOffset> = printed
        .drain()
        .filter(|((t, p), _)| {
            assigned
                .iter()
                .any(|tp| tp.topic == *t && tp.partition == *p)
        })
        .map(|((t, p), next)| TopicPartitionOffset::new(t, p, next))
        .collect();
    if offsets.is_empty() {
        return Ok(());
    }
    consumer.commit_offsets(&offsets).await
}

async fn consume(
    consumer: &mut GroupConsumer,
    a: &GroupArgs,
    pending: &mut HashMap<(Arc<str>, i32), i64>,
) -> Result<(), String> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    let mut next_commit = Instant::now() + COMMIT_INTERVAL;
    let mut shutdown = Shutdown::new()?;
    let mut at_end = EndOfShare::default();
    loop {
        if Instant::now() >= next_commit {
            out.flush().map_err(|e| format!("stdout: {e}"))?;
            // A rebalance in between fails the commit; the new owner re-reads from the last
            // commit that went through, so records may repeat but none are skipped.
            if let Err(e) = commit(consumer, pending).await {
                eprintln!("kbus: commit: {e}");
            }
            next_commit = Instant::now() + COMMIT_INTERVAL;
        }
        if a.count.is_some_and(|c| printed >= c) {
            return out.flush().map_err(|e| format!("stdout: {e}"));
        }
        let polled = tokio::select! {
            p = tokio::time::timeout(Duration::from_millis(500), consumer.poll()) => p,
            // Interrupted: stop here; the caller commits what was printed and leaves.
            () = shutdown.wait() => return out.flush().map_err(|e| format!("stdout: {e}")),
        };
        let batch = match polled {
            Err(_) => {
                out.flush().map_err(|e| format!("stdout: {e}"))?;
                if a.exit_at_end {
                    let assigned = consumer.assignment();
                    let read_to_end = assigned.iter().all(|tp| consumer.lag(tp) == Some(0));
                    let generation = consumer.generation().map(|(g, _)| g);
                    if at_end.idle(assigned.len(), read_to_end, generation) {
                        return Ok(());
                    }
                }
                continue;
            }
            Ok(b) => b.map_err(|e| e.to_string())?,
        };
        for r in &batch {
            if a.count.is_some_and(|c| printed >= c) {
                break;
            }
            a.format
                .write(&mut out, &View::of(r))
                .map_err(|e| format!("stdout: {e}"))?;
            pending.insert((r.topic.clone(), r.partition), r.offset + 1);
            printed += 1;
        }
    }
}

/// Whether `-e` is done, asked after each idle poll (no records for a while).
#[derive(Debug, Default)]
struct EndOfShare {
    /// The generation of the previous idle poll, if this member held nothing then.
    empty_in: Option<i32>,
}

impl EndOfShare {
    /// `assigned` partitions, all `read_to_end` (lag 0), in `generation` (`None`: not in one).
    fn idle(&mut self, assigned: usize, read_to_end: bool, generation: Option<i32>) -> bool {
        if assigned > 0 {
            self.empty_in = None;
            return read_to_end;
        }
        let settled = generation.is_some() && self.empty_in == generation;
        self.empty_in = generation;
        settled
    }
}

/// Ctrl-C, or SIGTERM on Unix (what `kill` and container runtimes send). On Unix both are
/// signal streams, which keep a signal that arrives while kbus is busy committing.
struct Shutdown {
    #[cfg(unix)]
    signals: [tokio::signal::unix::Signal; 2],
}

impl Shutdown {
    fn new() -> Result<Shutdown, String> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let handler = |kind| signal(kind).map_err(|e| format!("cannot handle signals: {e}"));
            Ok(Shutdown {
                signals: [
                    handler(SignalKind::interrupt())?,
                    handler(SignalKind::terminate())?,
                ],
            })
        }
        #[cfg(not(unix))]
        Ok(Shutdown {})
    }

    async fn wait(&mut self) {
        #[cfg(unix)]
        {
            let [int, term] = &mut self.signals;
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::EndOfShare;

    #[test]
    fn a_share_ends_when_read_to_the_end() {
        let mut e = EndOfShare::default();
        assert!(!e.idle(2, false, Some(3)));
        assert!(e.idle(2, true, Some(3)));
    }

    #[test]
    fn an_empty_share_ends_after_a_whole_idle_poll_in_one_generation() {
        let mut e = EndOfShare::default();
        // Joining: no generation yet.
        assert!(!e.idle(0, true, None));
        assert!(!e.idle(0, true, None));
        // The first idle poll in a generation that gave nothing: maybe a rebalance is on.
        assert!(!e.idle(0, true, Some(4)));
        // A new generation, still nothing: wait once more.
        assert!(!e.idle(0, true, Some(5)));
        assert!(e.idle(0, true, Some(5)));
        // Partitions in between reset the count.
        let mut e = EndOfShare::default();
        assert!(!e.idle(0, true, Some(1)));
        assert!(!e.idle(1, false, Some(2)));
        assert!(!e.idle(0, true, Some(2)));
        assert!(e.idle(0, true, Some(2)));
    }
}
