//! `kbus consume -g GROUP`: consumes as a member of a consumer group. Partitions come from the
//! group's assignment; positions start at the group's committed offsets (`--from` earliest or
//! latest applies only where the group has none). The offsets of *printed* records are
//! committed every second, when partitions are revoked in a rebalance (so the next owner
//! starts right after them instead of at the last periodic commit), and when kbus exits on
//! `-n`/`-e`; records a poll returned beyond `-n` are not, so the next member starts right
//! after the last printed one. Output is flushed before every poll, so whatever a rebalance
//! commits has reached stdout.
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::consumer::{AutoOffsetReset, ConsumerConfig, Offset};
use bus::{
    Error, GroupConfig, GroupConsumer, RebalanceContext, RebalanceListener, TopicPartition,
    TopicPartitionOffset,
};
use tokio::time::Instant;

use crate::format::{Format, View};

/// How often printed offsets are committed.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// The next offset after the last printed record, per partition, not yet committed. Shared
/// with the rebalance listener, which commits a revoked partition's entry.
type Printed = Arc<Mutex<HashMap<(Arc<str>, i32), i64>>>;

fn lock(p: &Printed) -> std::sync::MutexGuard<'_, HashMap<(Arc<str>, i32), i64>> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// Commits what was printed of partitions as they are revoked, while the generation is still
/// valid; forgets it for partitions lost (another member may own them: a commit would fail).
struct CommitOnRevoke {
    printed: Printed,
}

impl CommitOnRevoke {
    fn take(&self, partitions: &[TopicPartition]) -> Vec<TopicPartitionOffset> {
        let mut printed = lock(&self.printed);
        partitions
            .iter()
            .filter_map(|tp| {
                let next = printed.remove(&(tp.topic.clone(), tp.partition))?;
                Some(TopicPartitionOffset::new(
                    tp.topic.clone(),
                    tp.partition,
                    next,
                ))
            })
            .collect()
    }
}

impl RebalanceListener for CommitOnRevoke {
    async fn on_revoked(&mut self, ctx: &mut RebalanceContext<'_>, partitions: &[TopicPartition]) {
        let offsets = self.take(partitions);
        if !offsets.is_empty()
            && let Err(e) = ctx.commit_offsets(&offsets).await
        {
            eprintln!("kbus: commit on revoke: {e}");
        }
    }

    async fn on_lost(&mut self, _ctx: &mut RebalanceContext<'_>, partitions: &[TopicPartition]) {
        self.take(partitions);
    }
}

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
    let printed: Printed = Arc::default();
    let mut consumer = GroupConsumer::new(
        client,
        group,
        ConsumerConfig::default()
            .auto_offset_reset(reset)
            .fetch_max_wait(Duration::from_millis(a.fetch_wait_ms)),
    )
    .map_err(|e| e.to_string())?
    .with_listener(CommitOnRevoke {
        printed: printed.clone(),
    });
    consumer
        .subscribe([a.topic.as_str()])
        .map_err(|e| e.to_string())?;

    let result = consume(&mut consumer, &a, &printed).await;
    let committed = commit(&mut consumer, &printed)
        .await
        .map_err(|e| format!("commit: {e}"));
    let closed = consumer.close().await.map_err(|e| format!("closing: {e}"));
    result.and(committed).and(closed)
}

/// Commits the next offset after each printed record of the partitions still assigned.
async fn commit(
    consumer: &mut GroupConsumer<CommitOnRevoke>,
    printed: &Printed,
) -> Result<(), Error> {
    let assigned = consumer.assignment();
    let offsets: Vec<TopicPartitionOffset> = lock(printed)
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
    consumer: &mut GroupConsumer<CommitOnRevoke>,
    a: &GroupArgs,
    pending: &Printed,
) -> Result<(), String> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    let mut next_commit = Instant::now() + COMMIT_INTERVAL;
    // A signal is noticed between polls (poll_for waits at most 500 ms), never inside one,
    // where it could cut a commit on revoke short.
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let mut shutdown = Shutdown::new()?;
        let interrupted = interrupted.clone();
        tokio::spawn(async move {
            shutdown.wait().await;
            interrupted.store(true, Ordering::SeqCst);
        });
    }
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
        // What a rebalance inside this poll commits must be on stdout already.
        out.flush().map_err(|e| format!("stdout: {e}"))?;
        // Interrupted: stop here; the caller commits what was printed and leaves.
        if interrupted.load(Ordering::SeqCst) {
            return Ok(());
        }
        // poll_for, not a timeout around poll: a rebalance callback (the commit on revoke)
        // is never cut short.
        let polled = consumer
            .poll_for(Duration::from_millis(500))
            .await
            .map_err(|e| e.to_string())?;
        let batch = match polled {
            b if b.is_empty() => {
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
            b => b,
        };
        // One lock per batch: only the listener, inside `poll_for` on this task, takes it too.
        let mut next = lock(pending);
        for r in &batch {
            if a.count.is_some_and(|c| printed >= c) {
                break;
            }
            a.format
                .write(&mut out, &View::of(r))
                .map_err(|e| format!("stdout: {e}"))?;
            next.insert((r.topic.clone(), r.partition), r.offset + 1);
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
