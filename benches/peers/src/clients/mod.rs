//! One module per peer client, each with `produce` and `consume` for one workload.
//!
//! Records have null keys, so each client spreads them with its own default for keyless
//! records (librdkafka: sticky random partition, krafka: KIP-794 sticky batches, rskafka: the
//! round-robin chunks described in its module). Keys would add hashing that measures the
//! partitioner rather than the client's throughput path.

pub mod krafka;
pub mod rdkafka;
pub mod rskafka;

use crate::Result;
use crate::args::{BenchArgs, Client, Mode};
use crate::measure::Outcome;

/// Runs the workload `args` describes in this process.
pub fn run(args: &BenchArgs) -> Result<Outcome> {
    if let Some(partitions) = args.partitions {
        // Creating the topic is setup, not the workload: a throwaway runtime does it so none is
        // left running during an rdkafka run.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(rskafka::ensure_topic(
            &args.brokers,
            &args.topic,
            partitions,
        ))?;
    }
    match args.client {
        Client::Rdkafka => match args.mode {
            Mode::Produce => rdkafka::produce(args),
            Mode::Consume => rdkafka::consume(args),
        },
        Client::Krafka | Client::Rskafka => {
            // Both are tokio clients; the runtime is tokio's default multi-threaded one, one
            // worker per core, as an application would have.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                match (args.client, args.mode) {
                    (Client::Krafka, Mode::Produce) => krafka::produce(args).await,
                    (Client::Krafka, Mode::Consume) => krafka::consume(args).await,
                    (_, Mode::Produce) => rskafka::produce(args).await,
                    (_, Mode::Consume) => rskafka::consume(args).await,
                }
            })
        }
    }
}
