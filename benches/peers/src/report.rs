//! The markdown that `peer-report` prints: one row per run, then our ratios against each peer
//! next to the goals from the benchmark issue.

use std::fmt::Write as _;

use crate::measure::Outcome;

/// `count` records of `size` bytes each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    pub count: u64,
    pub size: usize,
}

impl Workload {
    /// The two workloads of the benchmark issue.
    pub const DEFAULT: [Workload; 2] = [
        Workload {
            count: 1_000_000,
            size: 100,
        },
        Workload {
            count: 200_000,
            size: 1024,
        },
    ];

    /// Parses `COUNTxSIZE`, e.g. `1000000x100`.
    pub fn parse(text: &str) -> Result<Workload, String> {
        let (count, size) = text
            .split_once('x')
            .ok_or_else(|| format!("workload {text:?} is not COUNTxSIZE"))?;
        let count: u64 = count
            .parse()
            .map_err(|_| format!("workload {text:?}: bad count"))?;
        let size: usize = size
            .parse()
            .map_err(|_| format!("workload {text:?}: bad size"))?;
        if count == 0 {
            return Err(format!("workload {text:?}: count must be at least 1"));
        }
        Ok(Workload { count, size })
    }

    pub fn parse_list(text: &str) -> Result<Vec<Workload>, String> {
        text.split(',').map(|w| Workload::parse(w.trim())).collect()
    }

    /// For topic names: `1000000x100`.
    pub fn slug(&self) -> String {
        format!("{}x{}", self.count, self.size)
    }

    /// For people: `1,000,000 × 100 B`, `200,000 × 1 KiB`.
    pub fn label(&self) -> String {
        let size = if self.size >= 1024 && self.size.is_multiple_of(1024) {
            format!("{} KiB", self.size / 1024)
        } else {
            format!("{} B", self.size)
        };
        format!("{} × {size}", thousands(self.count as f64))
    }
}

/// One finished (or failed) run.
#[derive(Debug, Clone)]
pub struct Run {
    pub workload: Workload,
    pub mode: String,
    /// The client's name as the report shows it.
    pub client: String,
    /// True for our client (`kbus bench`), whose figures the ratios are taken against.
    pub ours: bool,
    pub result: Result<Outcome, String>,
    /// The broker's CPU use in cores (CPU seconds per wall second) over the child process's
    /// life, when the broker's pid was given.
    pub broker_cores: Option<f64>,
}

impl Run {
    /// The client's CPU time as a fraction of one core over its timed window.
    fn client_cores(o: &Outcome) -> f64 {
        if o.seconds > 0.0 {
            o.cpu_seconds / o.seconds
        } else {
            0.0
        }
    }
}

/// Throughput goal (ours ÷ peer at least this) and CPU goal (ours ÷ peer at most this) from the
/// benchmark issue; `None` where the issue sets no goal.
pub fn goals(peer: &str) -> (Option<f64>, Option<f64>) {
    match peer {
        "rdkafka" => (Some(1.0), Some(0.6)),
        "rskafka" => (Some(3.0), None),
        // "Ahead of krafka": any ratio above 1; shown as ≥ 1.0.
        "krafka" => (Some(1.0), None),
        _ => (None, None),
    }
}

/// Below this fraction of a core for every client in a group, the client was mostly waiting,
/// so the broker (which shares the machine) set the pace, not the client.
pub const BROKER_BOUND_CORES: f64 = 0.5;

fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

/// Runs grouped by (workload, mode) in first-seen order.
fn groups(runs: &[Run]) -> Vec<(Workload, String, Vec<&Run>)> {
    let mut out: Vec<(Workload, String, Vec<&Run>)> = Vec::new();
    for run in runs {
        match out
            .iter_mut()
            .find(|(w, m, _)| *w == run.workload && *m == run.mode)
        {
            Some((_, _, members)) => members.push(run),
            None => out.push((run.workload, run.mode.clone(), vec![run])),
        }
    }
    out
}

/// One run per (workload, mode, client): the one with the median records/s among the
/// repetitions, so that a repetition disturbed by other load on the machine moves neither end of
/// a ratio. A client that failed any repetition is reported by its first failure: a benchmark
/// must not hide a client that only works sometimes.
pub fn medians(runs: &[Run]) -> Vec<Run> {
    let mut keys: Vec<(Workload, &str, &str)> = Vec::new();
    for run in runs {
        let key = (run.workload, run.mode.as_str(), run.client.as_str());
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.into_iter()
        .map(|(workload, mode, client)| {
            let mut same: Vec<&Run> = runs
                .iter()
                .filter(|r| r.workload == workload && r.mode == mode && r.client == client)
                .collect();
            if let Some(failed) = same.iter().find(|r| r.result.is_err()) {
                return (*failed).clone();
            }
            let rate = |r: &Run| r.result.as_ref().map_or(0.0, |o| o.records_per_sec);
            same.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
            same[(same.len() - 1) / 2].clone()
        })
        .collect()
}

/// The whole markdown report.
pub fn markdown(runs: &[Run]) -> String {
    let mut md = String::new();
    let with_broker = runs.iter().any(|r| r.broker_cores.is_some());
    md.push_str(
        "| workload | mode | client | records/s | MB/s | CPU µs/record | client CPU (cores) |",
    );
    if with_broker {
        md.push_str(" broker CPU (cores) |");
    }
    md.push_str(" peak RSS MiB |\n|---|---|---|--:|--:|--:|--:|");
    if with_broker {
        md.push_str("--:|");
    }
    md.push_str("--:|\n");
    let mut any_waited = false;
    for run in runs {
        let client = if run.ours {
            format!("**{}** (ours)", run.client)
        } else {
            run.client.clone()
        };
        match &run.result {
            Ok(o) => {
                let waited = Run::client_cores(o) < BROKER_BOUND_CORES;
                any_waited |= waited;
                let _ = write!(
                    md,
                    "| {} | {} | {} | {}{} | {:.1} | {:.2} | {:.2} |",
                    run.workload.label(),
                    run.mode,
                    client,
                    thousands(o.records_per_sec),
                    if waited { " †" } else { "" },
                    o.mb_per_sec,
                    o.cpu_us_per_record,
                    Run::client_cores(o),
                );
                if with_broker {
                    match run.broker_cores {
                        Some(cores) => {
                            let _ = write!(md, " {cores:.2} |");
                        }
                        None => md.push_str(" – |"),
                    }
                }
                let _ = writeln!(md, " {} |", mib(o.peak_rss_bytes));
            }
            Err(err) => {
                let first = err.lines().next().unwrap_or("failed");
                let cells = if with_broker { 5 } else { 4 };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | failed: {} |{}",
                    run.workload.label(),
                    run.mode,
                    client,
                    first.replace('|', "\\|"),
                    " |".repeat(cells)
                );
            }
        }
    }

    let mut notes = Vec::new();
    if any_waited {
        notes.push(format!(
            "- † The client used under {BROKER_BOUND_CORES} of a core over its run: it was \
             mostly waiting, for the broker or, on a busy machine, for a core, so its records/s \
             shows that limit more than the client's; compare CPU per record there."
        ));
    }
    for (workload, mode, members) in groups(runs) {
        let ok: Vec<&Outcome> = members
            .iter()
            .filter_map(|r| r.result.as_ref().ok())
            .collect();
        if ok.len() >= 2 && ok.iter().all(|o| Run::client_cores(o) < BROKER_BOUND_CORES) {
            notes.push(format!(
                "- {} {mode}: every client used under {BROKER_BOUND_CORES} of a core, so the \
                 broker capped throughput here; compare CPU per record, not records/s.",
                workload.label()
            ));
        }
    }

    let ratio_rows = ratios(runs);
    if !ratio_rows.is_empty() {
        md.push_str(
            "\nOur ratios (throughput: ours ÷ peer, higher is better; CPU per record: ours ÷ peer, \
             lower is better):\n\n| workload | mode | vs | throughput | goal | CPU/record | goal |\n\
             |---|---|---|--:|---|--:|---|\n",
        );
        for row in ratio_rows {
            let (t_goal, c_goal) = goals(&row.peer);
            let verdict = |ok: bool| if ok { "met" } else { "missed" };
            let t_goal = t_goal.map_or("–".to_string(), |g| {
                format!("≥ {g:.1} ({})", verdict(row.throughput >= g))
            });
            let c_goal = c_goal.map_or("–".to_string(), |g| {
                format!("≤ {g:.1} ({})", verdict(row.cpu <= g))
            });
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.2}× | {t_goal} | {:.2}× | {c_goal} |",
                row.workload.label(),
                row.mode,
                row.peer,
                row.throughput,
                row.cpu
            );
        }
    }
    if !notes.is_empty() {
        md.push('\n');
        md.push_str(&notes.join("\n"));
        md.push('\n');
    }
    md
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ratio {
    pub workload: Workload,
    pub mode: String,
    pub peer: String,
    /// Our records/s ÷ the peer's.
    pub throughput: f64,
    /// Our CPU µs per record ÷ the peer's.
    pub cpu: f64,
}

/// Our ratios against every peer that, like us, finished the same workload and mode.
pub fn ratios(runs: &[Run]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for (workload, mode, members) in groups(runs) {
        let Some(ours) = members
            .iter()
            .find(|r| r.ours)
            .and_then(|r| r.result.as_ref().ok())
        else {
            continue;
        };
        for peer in members.iter().filter(|r| !r.ours) {
            let Ok(theirs) = &peer.result else { continue };
            out.push(Ratio {
                workload,
                mode: mode.clone(),
                peer: peer.client.clone(),
                throughput: ours.records_per_sec / theirs.records_per_sec,
                cpu: ours.cpu_us_per_record / theirs.cpu_us_per_record,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(client: &str, rps: f64, cpu_us: f64, seconds: f64) -> Outcome {
        let records = (rps * seconds) as u64;
        Outcome::new(
            client,
            "produce",
            records,
            records * 100,
            seconds,
            cpu_us * records as f64 / 1e6,
            64 << 20,
        )
    }

    fn run(client: &str, ours: bool, result: Result<Outcome, String>) -> Run {
        Run {
            workload: Workload::DEFAULT[0],
            mode: "produce".into(),
            client: client.into(),
            ours,
            result,
            broker_cores: None,
        }
    }

    #[test]
    fn workloads_parse_and_label() {
        assert_eq!(
            Workload::parse_list("1000000x100, 200000x1024").unwrap(),
            Workload::DEFAULT
        );
        assert_eq!(Workload::DEFAULT[0].label(), "1,000,000 × 100 B");
        assert_eq!(Workload::DEFAULT[1].label(), "200,000 × 1 KiB");
        assert_eq!(Workload::DEFAULT[1].slug(), "200000x1024");
        assert!(Workload::parse("100").is_err());
        assert!(Workload::parse("0x100").is_err());
        assert!(Workload::parse("ax1").is_err());
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1234567.0), "1,234,567");
    }

    #[test]
    fn ratios_are_ours_over_peer() {
        let runs = vec![
            run("kbus", true, Ok(outcome("kbus", 400_000.0, 1.0, 2.0))),
            run(
                "rdkafka",
                false,
                Ok(outcome("rdkafka", 200_000.0, 2.0, 2.0)),
            ),
            run("rskafka", false, Err("boom".into())),
        ];
        let r = ratios(&runs);
        assert_eq!(r.len(), 1, "failed peers get no ratio");
        assert_eq!(r[0].peer, "rdkafka");
        assert!((r[0].throughput - 2.0).abs() < 1e-9);
        assert!((r[0].cpu - 0.5).abs() < 1e-9);

        let md = markdown(&runs);
        assert!(
            md.contains("| rdkafka | 2.00× | ≥ 1.0 (met) | 0.50× | ≤ 0.6 (met) |"),
            "{md}"
        );
        assert!(md.contains("| rskafka | failed: boom |"), "{md}");
        assert!(md.contains("**kbus** (ours)"), "{md}");
    }

    #[test]
    fn goals_that_are_missed_say_so() {
        let runs = vec![
            run("kbus", true, Ok(outcome("kbus", 200_000.0, 1.0, 2.0))),
            run(
                "rskafka",
                false,
                Ok(outcome("rskafka", 100_000.0, 1.0, 2.0)),
            ),
        ];
        let md = markdown(&runs);
        assert!(
            md.contains("| rskafka | 2.00× | ≥ 3.0 (missed) | 1.00× | – |"),
            "{md}"
        );
    }

    #[test]
    fn no_ratios_without_our_run() {
        let runs = vec![run(
            "rdkafka",
            false,
            Ok(outcome("rdkafka", 1000.0, 1.0, 1.0)),
        )];
        assert!(ratios(&runs).is_empty());
        assert!(!markdown(&runs).contains("Our ratios"));
    }

    #[test]
    fn broker_bound_groups_are_flagged() {
        // 0.1 s of CPU in 1 s of wall time for both: neither client was busy.
        let idle = vec![
            run(
                "rdkafka",
                false,
                Ok(outcome("rdkafka", 100_000.0, 1.0, 1.0)),
            ),
            run("krafka", false, Ok(outcome("krafka", 100_000.0, 1.0, 1.0))),
        ];
        assert!(markdown(&idle).contains("the broker capped throughput"));
        // 0.9 cores for one of them: that client set the pace.
        let busy = vec![
            run(
                "rdkafka",
                false,
                Ok(outcome("rdkafka", 100_000.0, 9.0, 1.0)),
            ),
            run("krafka", false, Ok(outcome("krafka", 100_000.0, 1.0, 1.0))),
        ];
        assert!(!markdown(&busy).contains("the broker capped throughput"));
    }

    #[test]
    fn median_run_is_chosen_by_records_per_second() {
        let runs = vec![
            run(
                "rdkafka",
                false,
                Ok(outcome("rdkafka", 300_000.0, 1.0, 1.0)),
            ),
            run("krafka", false, Ok(outcome("krafka", 50_000.0, 1.0, 1.0))),
            run(
                "rdkafka",
                false,
                Ok(outcome("rdkafka", 100_000.0, 3.0, 1.0)),
            ),
            run(
                "rdkafka",
                false,
                Ok(outcome("rdkafka", 200_000.0, 2.0, 1.0)),
            ),
        ];
        let m = medians(&runs);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].client, "rdkafka");
        let o = m[0].result.as_ref().unwrap();
        assert_eq!(o.records_per_sec, 200_000.0);
        // The whole run is kept, so its CPU figure belongs to the same repetition.
        assert!((o.cpu_us_per_record - 2.0).abs() < 1e-9);
        assert_eq!(m[1].client, "krafka");
    }

    #[test]
    fn a_failed_repetition_is_not_hidden_by_the_median() {
        let runs = vec![
            run("krafka", false, Ok(outcome("krafka", 1.0, 1.0, 1.0))),
            run("krafka", false, Err("lost records".into())),
            run("krafka", false, Ok(outcome("krafka", 1.0, 1.0, 1.0))),
        ];
        let m = medians(&runs);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].result.as_ref().unwrap_err(), "lost records");
    }

    #[test]
    fn a_client_waiting_on_the_broker_is_marked() {
        let runs = vec![
            run(
                "rdkafka",
                false,
                Ok(outcome("rdkafka", 100_000.0, 1.0, 1.0)),
            ),
            run(
                "rskafka",
                false,
                Ok(outcome("rskafka", 900_000.0, 1.0, 1.0)),
            ),
        ];
        let md = markdown(&runs);
        assert!(md.contains("| 100,000 † |"), "{md}");
        assert!(md.contains("| 900,000 |"), "{md}");
        assert!(md.contains("† The client used under"), "{md}");
    }

    #[test]
    fn broker_column_appears_only_when_measured() {
        let mut r = run(
            "rdkafka",
            false,
            Ok(outcome("rdkafka", 100_000.0, 1.0, 2.0)),
        );
        assert!(!markdown(std::slice::from_ref(&r)).contains("broker CPU"));
        r.broker_cores = Some(0.5);
        let md = markdown(&[r]);
        assert!(md.contains("broker CPU (cores)"));
        assert!(md.contains("| 0.50 | 64.0 |"), "{md}");
    }
}
