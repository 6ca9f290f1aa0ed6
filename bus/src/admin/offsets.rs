//! `Admin::list_offsets`: the shared ListOffsets round (`crate::offsets`) with retries, so a
//! leader that moved or is still being elected costs a refresh and a backoff, not an error.

use std::collections::HashSet;

use tokio::time::Instant;

use super::Admin;
use crate::error::Error;
use crate::offsets::{IsolationLevel, ListedOffset, OffsetSpec, list_offsets_round};

impl Admin {
    /// Looks up an offset per (topic, partition, query): one request per partition leader,
    /// concurrently. Results come in the order asked. Retriable per-partition errors (moved
    /// leaders, elections) are retried until `api_timeout`; the rest are that partition's
    /// error. Asking twice for one partition is an [`Error::InvalidArgument`], because Kafka
    /// answers a partition once per request.
    pub async fn list_offsets(
        &self,
        wanted: &[(&str, i32, OffsetSpec)],
        isolation: IsolationLevel,
    ) -> Result<Vec<Result<ListedOffset, Error>>, Error> {
        let mut seen = HashSet::new();
        for (topic, partition, _) in wanted {
            if !seen.insert((*topic, *partition)) {
                return Err(Error::InvalidArgument(format!(
                    "{topic}-{partition} is asked for twice"
                )));
            }
        }
        let deadline = Instant::now() + self.config.api_timeout;
        let mut results: Vec<Option<Result<ListedOffset, Error>>> = vec![None; wanted.len()];
        let mut pending: Vec<usize> = (0..wanted.len()).collect();
        let mut attempt = 0u32;
        while !pending.is_empty() {
            let round: Vec<(&str, i32, OffsetSpec)> = pending.iter().map(|&i| wanted[i]).collect();
            let answers = list_offsets_round(&self.client, &round, isolation).await;
            attempt += 1;
            let delay = self.client.backoff_delay(attempt);
            let may_retry = Instant::now() + delay < deadline;
            let mut again = Vec::new();
            for (i, answer) in pending.into_iter().zip(answers) {
                match answer {
                    Err(e) if e.is_retriable() && may_retry => again.push(i),
                    other => results[i] = Some(other),
                }
            }
            pending = again;
            if !pending.is_empty() {
                tokio::time::sleep(delay).await;
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Protocol("partition left unanswered".into()))))
            .collect())
    }

    /// One partition's offset; its error becomes the call's error.
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
        isolation: IsolationLevel,
    ) -> Result<ListedOffset, Error> {
        self.list_offsets(&[(topic, partition, spec)], isolation)
            .await?
            .pop()
            .unwrap_or_else(|| Err(Error::Protocol("partition left unanswered".into())))
    }
}
