//! Runs every workload through our client (`kbus bench`) and each peer (`peer-bench`), each
//! produce and each consume in its own child process against a fresh topic, then prints a
//! markdown table with our ratios and writes the raw JSON lines to a file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use peer_bench::args::{Acks, Compression, number};
use peer_bench::clients::rskafka::{delete_topic, ensure_topic};
use peer_bench::measure::{Outcome, other_process_cpu_seconds};
use peer_bench::report::{Run, Workload, markdown, medians};

const USAGE: &str = "usage: peer-report [--brokers HOST:PORT] [--kbus PATH] [--peer-bench PATH] \
[--clients kbus,rdkafka,krafka,rskafka] [--workloads 1000000x100,200000x1024] [--partitions 6] \
[--acks all|1|0] [--compression none|gzip|snappy|lz4|zstd] [--linger-ms 5] \
[--fetch-max-wait-ms MS] [--repeat 3] [--broker-pid PID] [--out peer-results.jsonl] [--timeout-secs 900] \
[--keep-topics]";

struct Options {
    brokers: String,
    kbus: Option<PathBuf>,
    peer_bench: PathBuf,
    clients: Vec<String>,
    workloads: Vec<Workload>,
    partitions: i32,
    acks: Acks,
    compression: Compression,
    linger_ms: u64,
    fetch_max_wait_ms: Option<u64>,
    repeat: u32,
    broker_pid: Option<u32>,
    out: PathBuf,
    timeout: Duration,
    keep_topics: bool,
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        brokers: std::env::var("KAFKA_BOOTSTRAP").unwrap_or_default(),
        kbus: None,
        peer_bench: std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("peer-bench"),
        clients: ["kbus", "rdkafka", "krafka", "rskafka"]
            .map(String::from)
            .to_vec(),
        workloads: Workload::DEFAULT.to_vec(),
        partitions: 6,
        acks: Acks::All,
        compression: Compression::None,
        linger_ms: 5,
        fetch_max_wait_ms: None,
        repeat: 3,
        broker_pid: None,
        out: PathBuf::from("peer-results.jsonl"),
        timeout: Duration::from_secs(900),
        keep_topics: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--keep-topics" {
            o.keep_topics = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--brokers" => o.brokers = value,
            "--kbus" => o.kbus = Some(value.into()),
            "--peer-bench" => o.peer_bench = value.into(),
            "--clients" => o.clients = value.split(',').map(|c| c.trim().to_string()).collect(),
            "--workloads" => o.workloads = Workload::parse_list(&value)?,
            "--partitions" => o.partitions = number(&flag, &value)?,
            "--acks" => o.acks = value.parse()?,
            "--compression" => o.compression = value.parse()?,
            "--linger-ms" => o.linger_ms = number(&flag, &value)?,
            "--fetch-max-wait-ms" => o.fetch_max_wait_ms = Some(number(&flag, &value)?),
            "--repeat" => o.repeat = number(&flag, &value)?,
            "--broker-pid" => o.broker_pid = Some(number(&flag, &value)?),
            "--out" => o.out = value.into(),
            "--timeout-secs" => o.timeout = Duration::from_secs(number(&flag, &value)?),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if o.brokers.is_empty() {
        return Err(format!(
            "no broker: pass --brokers or set KAFKA_BOOTSTRAP\n{USAGE}"
        ));
    }
    for c in &o.clients {
        if c != "kbus" && c.parse::<peer_bench::args::Client>().is_err() {
            return Err(format!("unknown client {c:?} in --clients"));
        }
    }
    if o.repeat < 1 {
        return Err("--repeat must be at least 1".into());
    }
    if o.partitions < 1 {
        return Err("--partitions must be at least 1".into());
    }
    Ok(o)
}

/// Why our client cannot run, or `None` when it can.
fn kbus_unavailable(kbus: Option<&Path>) -> Option<String> {
    match kbus {
        None => Some("no --kbus PATH given".into()),
        Some(p) if !p.is_file() => Some(format!("{} does not exist", p.display())),
        Some(_) => None,
    }
}

/// The command line of one run: `kbus bench MODE ...` for ours, `peer-bench --client ...` for
/// a peer. Produce-only settings are passed to produce runs only.
fn command(
    o: &Options,
    client: &str,
    mode: &str,
    topic: &str,
    w: Workload,
) -> (PathBuf, Vec<String>) {
    let (program, mut args) = if client == "kbus" {
        let kbus = o.kbus.clone().expect("checked before any run");
        (kbus, vec!["bench".to_string(), mode.to_string()])
    } else {
        (
            o.peer_bench.clone(),
            ["--client", client, "--mode", mode]
                .map(String::from)
                .to_vec(),
        )
    };
    args.extend(
        [
            "--brokers",
            &o.brokers,
            "--topic",
            topic,
            "--count",
            &w.count.to_string(),
            "--size",
            &w.size.to_string(),
        ]
        .map(String::from),
    );
    if mode == "consume"
        && let Some(wait) = o.fetch_max_wait_ms
    {
        args.extend(["--fetch-max-wait-ms".to_string(), wait.to_string()]);
    }
    if mode == "produce" {
        args.extend(
            [
                "--acks",
                o.acks.name(),
                "--compression",
                o.compression.name(),
                "--linger-ms",
                &o.linger_ms.to_string(),
            ]
            .map(String::from),
        );
    }
    (program, args)
}

/// Runs one child and returns its JSON line (raw, for the results file) and its parsed outcome.
async fn run_child(
    o: &Options,
    program: &Path,
    args: &[String],
) -> (Result<(String, Outcome), String>, Option<f64>) {
    let broker_before = o.broker_pid.and_then(other_process_cpu_seconds);
    let started = Instant::now();
    let child = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output();
    let result = match tokio::time::timeout(o.timeout, child).await {
        Err(_) => Err(format!("timed out after {:?}", o.timeout)),
        Ok(Err(err)) => Err(format!("could not run {}: {err}", program.display())),
        Ok(Ok(output)) => {
            let stdout = String::from_utf8_lossy(&output.stdout);
            let stderr = String::from_utf8_lossy(&output.stderr);
            let line = stdout
                .lines()
                .rev()
                .find(|l| l.trim_start().starts_with('{'))
                .map(str::to_string);
            match (output.status.success(), line) {
                (true, Some(line)) => serde_json::from_str::<Outcome>(&line)
                    .map(|outcome| (line.clone(), outcome))
                    .map_err(|e| format!("unreadable JSON line {line:?}: {e}")),
                (true, None) => Err("printed no JSON line".to_string()),
                (false, _) => Err(format!(
                    "exited with {}: {}",
                    output.status,
                    stderr.trim().lines().last().unwrap_or("(no stderr)")
                )),
            }
        }
    };
    // Over the child's whole life, setup included, since the broker's CPU cannot be split at
    // the child's timed window; for runs of seconds the setup is a small share.
    let wall = started.elapsed().as_secs_f64();
    let after = o.broker_pid.and_then(other_process_cpu_seconds);
    let broker_cores = match (broker_before, after) {
        (Some(before), Some(after)) if wall > 0.0 => Some((after - before) / wall),
        _ => None,
    };
    (result, broker_cores)
}

async fn main_async(o: Options) -> Result<bool, String> {
    if !o.peer_bench.is_file() {
        return Err(format!(
            "peer-bench not found at {} (build it, or pass --peer-bench PATH)",
            o.peer_bench.display()
        ));
    }
    let mut clients = o.clients.clone();
    let mut skipped_ours = None;
    if clients.iter().any(|c| c == "kbus")
        && let Some(why) = kbus_unavailable(o.kbus.as_deref())
    {
        eprintln!("skipping our client (kbus bench): {why}; reporting the peers only");
        skipped_ours = Some(why);
        clients.retain(|c| c != "kbus");
    }

    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut raw = String::new();
    let mut runs = Vec::new();
    let mut all_ok = true;
    // Repetitions go round all clients in turn, so a burst of other load on the machine falls
    // on one repetition of each client rather than on every repetition of one.
    let rounds = o
        .workloads
        .iter()
        .flat_map(|&w| (1..=o.repeat).map(move |rep| (w, rep)));
    for (workload, rep) in rounds {
        for client in &clients {
            let topic = format!("peers-{client}-{}-{stamp}-{rep}", workload.slug());
            if let Err(err) = ensure_topic(&o.brokers, &topic, o.partitions).await {
                return Err(format!("creating topic {topic}: {err}"));
            }
            for mode in ["produce", "consume"] {
                let (program, args) = command(&o, client, mode, &topic, workload);
                eprintln!(
                    "{} {mode} {client} ({rep} of {}) ...",
                    workload.label(),
                    o.repeat
                );
                let (result, broker_cores) = run_child(&o, &program, &args).await;
                let result = match result {
                    Ok((line, outcome)) => {
                        eprintln!("  {line}");
                        raw.push_str(&line);
                        raw.push('\n');
                        Ok(outcome)
                    }
                    Err(err) => {
                        eprintln!("  failed: {err}");
                        all_ok = false;
                        Err(err)
                    }
                };
                let produced = result.is_ok();
                runs.push(Run {
                    workload,
                    mode: mode.to_string(),
                    client: client.clone(),
                    ours: client == "kbus",
                    result,
                    broker_cores,
                });
                if mode == "produce" && !produced {
                    // Nothing to consume: record the consume as not run.
                    runs.push(Run {
                        workload,
                        mode: "consume".to_string(),
                        client: client.clone(),
                        ours: client == "kbus",
                        result: Err("not run: produce failed".into()),
                        broker_cores: None,
                    });
                    break;
                }
            }
            if !o.keep_topics {
                // A broker that keeps logs in memory would otherwise carry every earlier
                // topic into the later runs.
                if let Err(err) = delete_topic(&o.brokers, &topic).await {
                    eprintln!("  could not delete {topic}: {err}");
                }
            }
        }
    }

    std::fs::write(&o.out, raw).map_err(|e| format!("writing {}: {e}", o.out.display()))?;
    print!("{}", markdown(&medians(&runs)));
    if let Some(why) = skipped_ours {
        println!("\nOur client was not run ({why}), so there are no ratios.");
    }
    let wait = o
        .fetch_max_wait_ms
        .map_or("each client's default".to_string(), |w| format!("{w} ms"));
    println!(
        "\nMedian of {} runs by records/s. Settings: {} partitions, acks={}, compression={}, \
         linger {} ms, fetch max wait {wait}. Raw JSON lines: {}.",
        o.repeat,
        o.partitions,
        o.acks.name(),
        o.compression.name(),
        o.linger_ms,
        o.out.display()
    );
    Ok(all_ok)
}

fn main() {
    let options = match parse() {
        Ok(o) => o,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    match runtime.block_on(main_async(options)) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(message) => {
            eprintln!("peer-report: {message}");
            std::process::exit(1);
        }
    }
}
