//! `kbus`: the command-line tool over the client.
//!
//! ```text
//! kbus [-b BROKERS] topics list | create NAME [-p N] [-r N] [-c KEY=VALUE]... | delete NAME... | describe NAME...
//! kbus [-b BROKERS] produce -t TOPIC [-K DELIM] [--acks all|1|0] [-z CODEC] [-p PARTITION] [--linger-ms MS]
//! kbus [-b BROKERS] consume -t TOPIC [--from earliest|latest|OFFSET] [-n COUNT] [-e] [-f FORMAT] [-p PARTITION | -g GROUP]
//! kbus [-b BROKERS] bench produce|consume [-t TOPIC] [--count N] [--size BYTES] [--partitions P] [--acks A] [-z CODEC] [--linger-ms MS]
//! kbus [-b BROKERS] api-versions | metadata [TOPIC...]
//! kbus [-b BROKERS] groups list | describe GROUP | lag GROUP | delete GROUP... | reset GROUP -t TOPIC (--to-earliest|--to-latest|--to-datetime MS|--to-offset N) [--dry-run]
//! ```
//! Every command also takes the security flags (`--security-protocol`, `--sasl-*`, `--ssl-*`;
//! see `security.rs`).
//! Brokers come from `-b/--brokers`, then `KAFKA_BROKERS`, then `KAFKA_BOOTSTRAP`, then
//! `127.0.0.1:9092`. Every failure is one line on stderr and a non-zero exit; progress of long
//! runs goes to stderr so stdout stays data.

mod args;
mod bench;
mod consume;
mod format;
mod group_consume;
mod groups;
mod produce;
mod security;
mod usage;

use std::process::ExitCode;
use std::time::Duration;

use args::Args;
use bus::admin::{ConfigResource, NewTopic};
use bus::{Client, ClientConfig};
use kafka_proto::ApiKey;

/// `println!` that reports a closed stdout (`kbus topics list | head`) as an error instead of
/// panicking; `main` turns a broken pipe into a quiet, successful exit.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($t)*).map_err(|e| format!("stdout: {e}"))?
    }};
}

const USAGE: &str = "usage: kbus [-b BROKERS] [--security-protocol P --sasl-mechanism M --sasl-username U --sasl-password P (or KAFKA_SASL_PASSWORD) --ssl-ca F --ssl-cert F --ssl-key F --ssl-insecure-skip-verify] <topics list|create|delete|describe | produce -t TOPIC | consume -t TOPIC | bench produce|consume | groups list|describe|lag|delete|reset | api-versions | metadata [TOPIC...]>  (kbus help COMMAND for flags)";

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::new(std::env::args().skip(1))).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.starts_with("stdout: ") && e.contains("Broken pipe") => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kbus: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The broker list, by precedence.
fn brokers(args: &mut Args) -> Result<String, String> {
    if let Some(b) = args.value(Some("-b"), "--brokers")? {
        return Ok(b);
    }
    for var in ["KAFKA_BROKERS", "KAFKA_BOOTSTRAP"] {
        if let Ok(v) = std::env::var(var)
            && !v.trim().is_empty()
        {
            return Ok(v);
        }
    }
    Ok("127.0.0.1:9092".into())
}

/// The security flags, parsed once before the command runs.
static SECURITY: std::sync::OnceLock<bus::security::SecurityConfig> = std::sync::OnceLock::new();

/// Connects, failing fast (a few seconds, not minutes) when no broker answers.
async fn connect(brokers: &str) -> Result<Client, String> {
    let mut cfg = ClientConfig::from_broker_list(brokers);
    cfg.connection.security = SECURITY.get().cloned().unwrap_or_default();
    cfg.metadata_retries = 1;
    cfg.metadata_wait = Duration::from_secs(5);
    cfg.connection.connect_timeout = Duration::from_secs(5);
    Client::connect(cfg).await.map_err(|e| e.to_string())
}

async fn run(mut args: Args) -> Result<(), String> {
    let brokers = brokers(&mut args)?;
    let _ = SECURITY.set(security::parse(&mut args)?);
    if args.switch(Some("-h"), "--help") {
        out!("{USAGE}");
        return Ok(());
    }
    let cmd = args.positional().ok_or(USAGE)?;
    match cmd.as_str() {
        "topics" => topics(args, &brokers).await,
        "produce" => produce::run(args, &brokers).await,
        "consume" => consume::run(args, &brokers).await,
        "bench" => bench::run(args, &brokers).await,
        "groups" => groups::run(args, &brokers).await,
        "api-versions" => {
            args.finish()?;
            api_versions(&brokers).await
        }
        "metadata" => metadata(args, &brokers).await,
        "help" => {
            out!("{}", help(args.positional().as_deref()));
            Ok(())
        }
        other => Err(format!("unknown command {other:?}; {USAGE}")),
    }
}

fn help(cmd: Option<&str>) -> &'static str {
    match cmd {
        Some("topics") => {
            "kbus topics list\nkbus topics create NAME [-p|--partitions N (1)] [-r|--replication-factor N (1)] [-c|--config KEY=VALUE]...\nkbus topics delete NAME...\nkbus topics describe NAME..."
        }
        Some("produce") => {
            "kbus produce -t TOPIC [-K|--key-delimiter DELIM] [--acks all|1|0 (all)] [-z|--compression none|gzip|snappy|lz4|zstd] [-p|--partition N] [--linger-ms MS (5)] [--batch-size BYTES (1000000)]\nreads one record per stdin line; with -K, the text before the first DELIM is the key"
        }
        Some("consume") => {
            "kbus consume -t TOPIC [--from earliest|latest|OFFSET (earliest)] [-n|--count N] [-e|--exit-at-end] [-f|--format FMT (%v\\n)] [-p|--partition N | -g|--group GROUP [--session-timeout-ms MS (45000)]]\nwith -g: a group member; positions from the group's commits (--from earliest|latest where none), printed offsets committed every second and on exit\nFMT fields: %t topic %p partition %o offset %k key %v value %T timestamp"
        }
        Some("bench") => {
            "kbus bench produce|consume [-t TOPIC (kbus-bench)] [--count N (1000000)] [--size BYTES (100)] [--partitions P (6)] [--acks all|1|0] [-z CODEC] [--linger-ms MS]\nprints one JSON line: records, seconds, records_per_sec, mb_per_sec, cpu_seconds, peak_rss_bytes"
        }
        Some("groups") => groups::HELP,
        _ => USAGE,
    }
}

async fn topics(mut args: Args, brokers: &str) -> Result<(), String> {
    let sub = args
        .positional()
        .ok_or("topics: expected list, create, delete or describe")?;
    match sub.as_str() {
        "list" => {
            args.finish()?;
            let client = connect(brokers).await?;
            let mut topics = client
                .admin()
                .list_topics(false)
                .await
                .map_err(|e| e.to_string())?;
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            for t in topics {
                out!("{}\t{}", t.name, t.partitions);
            }
            Ok(())
        }
        "create" => {
            let partitions = args.parsed::<i32>(Some("-p"), "--partitions")?.unwrap_or(1);
            let rf = args
                .parsed::<i16>(Some("-r"), "--replication-factor")?
                .unwrap_or(1);
            let configs = args.values(Some("-c"), "--config")?;
            let name = args.positional().ok_or("topics create: NAME is missing")?;
            args.finish()?;
            let mut topic = NewTopic::new(&name)
                .partitions(partitions)
                .replication_factor(rf);
            for c in configs {
                let (k, v) = c
                    .split_once('=')
                    .ok_or_else(|| format!("--config: {c:?} is not KEY=VALUE"))?;
                topic = topic.config(k, v);
            }
            let client = connect(brokers).await?;
            client
                .admin()
                .create_topic(topic)
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            out!("created {name} ({partitions} partitions, replication {rf})");
            Ok(())
        }
        "delete" => {
            let mut names = Vec::new();
            while let Some(n) = args.positional() {
                names.push(n);
            }
            args.finish()?;
            if names.is_empty() {
                return Err("topics delete: NAME is missing".into());
            }
            let client = connect(brokers).await?;
            let admin = client.admin();
            for name in names {
                admin
                    .delete_topic(&name)
                    .await
                    .map_err(|e| format!("{name}: {e}"))?;
                out!("deleted {name}");
            }
            Ok(())
        }
        "describe" => {
            let mut names = Vec::new();
            while let Some(n) = args.positional() {
                names.push(n);
            }
            args.finish()?;
            if names.is_empty() {
                return Err("topics describe: NAME is missing".into());
            }
            let client = connect(brokers).await?;
            for name in names {
                let t = client.topic(&name).await.map_err(|e| e.to_string())?;
                out!("topic {} partitions {}", t.name, t.partition_count());
                for p in &t.partitions {
                    out!(
                        "  partition {} leader {} replicas {:?} isr {:?}",
                        p.partition,
                        p.leader,
                        p.replicas,
                        p.isr
                    );
                }
                // Configs are best effort: not every broker answers DescribeConfigs.
                if let Ok(configs) = client
                    .admin()
                    .describe_config(ConfigResource::Topic(name.clone()))
                    .await
                {
                    for (k, e) in configs.iter().filter(|(_, e)| !e.is_default()) {
                        out!("  config {k}={}", e.value.as_deref().unwrap_or(""));
                    }
                }
            }
            Ok(())
        }
        other => Err(format!(
            "topics: unknown subcommand {other:?} (list, create, delete, describe)"
        )),
    }
}

async fn api_versions(brokers: &str) -> Result<(), String> {
    let client = connect(brokers).await?;
    let conn = client.any_broker().await.map_err(|e| e.to_string())?;
    out!("{:<28} {:>9} {:>7}  will send", "API", "broker", "client");
    for api in ApiKey::ALL {
        let Some(b) = conn.broker_versions().get(*api) else {
            continue;
        };
        let ours = api
            .info()
            .supported
            .map(|r| format!("{}-{}", r.min, r.max))
            .unwrap_or_else(|| "-".into());
        let send = conn
            .broker_versions()
            .negotiate(*api, None)
            .map(|v| format!("v{v}"))
            .unwrap_or_else(|_| "unsupported".into());
        out!(
            "{:<28} {:>9} {:>7}  {send}",
            api.info().name,
            format!("{}-{}", b.min, b.max),
            ours
        );
    }
    Ok(())
}

async fn metadata(mut args: Args, brokers: &str) -> Result<(), String> {
    let mut topics = Vec::new();
    while let Some(t) = args.positional() {
        topics.push(t);
    }
    args.finish()?;
    let client = connect(brokers).await?;
    let resp = client
        .fetch_metadata(if topics.is_empty() {
            None
        } else {
            Some(&topics)
        })
        .await
        .map_err(|e| e.to_string())?;
    out!("cluster {}", resp.cluster_id.as_deref().unwrap_or("?"));
    for b in &resp.brokers {
        out!("broker {} {}:{}", b.node_id, b.host, b.port);
    }
    for t in &resp.topics {
        let err = kafka_proto::ErrorCode::from_code(t.error_code);
        out!(
            "topic {} partitions={}{}",
            t.name.as_deref().unwrap_or("?"),
            t.partitions.len(),
            if err.is_ok() {
                String::new()
            } else {
                format!(" {}", err.name())
            }
        );
    }
    Ok(())
}
