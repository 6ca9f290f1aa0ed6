//! `kbus` end to end against the broker: topics, produce lines, consume them back, bench JSON,
//! and one-line errors with a non-zero exit for bad flags, unknown topics and unreachable
//! brokers. Broker tests need `KAFKA_BOOTSTRAP`; under `CI=true` its absence is a failure.

mod common;

use common::kbus::{assert_one_line_errors, broker, ok, run, unique};

#[test]
fn produce_lines_then_consume_them_back() {
    let Some(b) = broker() else { return };
    let t = unique("kbus-cli");
    ok(&run(
        &[
            "-b",
            &b,
            "topics",
            "create",
            &t,
            "-p",
            "3",
            "-c",
            "retention.ms=3600000",
        ],
        "",
    ));
    let listed = ok(&run(&["-b", &b, "topics", "list"], ""));
    assert!(listed.lines().any(|l| l == format!("{t}\t3")), "{listed}");

    let lines: String = (0..500)
        .map(|i| format!("k{}:value {i}\n", i % 17))
        .collect();
    ok(&run(
        &[
            "-b",
            &b,
            "produce",
            "-t",
            &t,
            "-K",
            ":",
            "--acks",
            "all",
            "-z",
            "lz4",
            "--linger-ms",
            "2",
        ],
        &lines,
    ));
    let out = ok(&run(
        &[
            "-b",
            &b,
            "consume",
            "-t",
            &t,
            "--from",
            "earliest",
            "-e",
            "-f",
            "%p %o %k=%v\\n",
        ],
        "",
    ));
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got.len(), 500, "{out}");
    // Every line once, each key on its murmur2 partition, offsets in order per partition.
    let mut seen = std::collections::HashSet::new();
    let mut last_offset = std::collections::HashMap::new();
    for line in &got {
        let (p, rest) = line.split_once(' ').unwrap();
        let (o, kv) = rest.split_once(' ').unwrap();
        let (k, v) = kv.split_once('=').unwrap();
        let p: i32 = p.parse().unwrap();
        let o: i64 = o.parse().unwrap();
        assert_eq!(p, partitioner::partition_for_key(k.as_bytes(), 3).unwrap());
        assert!(seen.insert(v.to_owned()), "duplicate {v}");
        if let Some(prev) = last_offset.insert(p, o) {
            assert!(o > prev);
        }
    }
    // --count stops early; --partition reads one partition.
    let two = ok(&run(
        &["-b", &b, "consume", "-t", &t, "-n", "2", "-f", "%v\\n"],
        "",
    ));
    assert_eq!(two.lines().count(), 2);
    let p0 = ok(&run(
        &[
            "-b", &b, "consume", "-t", &t, "-p", "0", "-e", "-f", "%p\\n",
        ],
        "",
    ));
    assert!(p0.lines().all(|l| l == "0"));

    let described = ok(&run(&["-b", &b, "topics", "describe", &t], ""));
    assert!(described.contains("partitions 3"), "{described}");
    ok(&run(&["-b", &b, "topics", "delete", &t], ""));
}

#[test]
fn bench_prints_one_valid_json_line() {
    let Some(b) = broker() else { return };
    let t = unique("kbus-bench-cli");
    for mode in ["produce", "consume"] {
        let mut args = vec![
            "-b", &b, "bench", mode, "-t", &t, "--count", "20000", "--size", "64",
        ];
        if mode == "produce" {
            args.extend(["--partitions", "2", "--acks", "all"]);
        } else {
            args.extend(["--fetch-max-wait-ms", "10"]);
        }
        let out = ok(&run(&args, ""));
        let line = out.lines().last().unwrap();
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["client"], "kbus");
        assert_eq!(v["mode"], mode);
        assert_eq!(v["records"], 20000);
        assert_eq!(v["bytes"], 20000 * 64);
        for field in [
            "seconds",
            "records_per_sec",
            "mb_per_sec",
            "cpu_seconds",
            "peak_rss_bytes",
        ] {
            assert!(
                v[field].as_f64().is_some_and(|x| x >= 0.0),
                "{field} in {line}"
            );
        }
        assert!(v["peak_rss_bytes"].as_f64().unwrap() > 1e6);
    }
}

#[test]
fn mistakes_give_one_line_and_a_failure_exit() {
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["produce", "--bogus", "-t", "x"],
            "unknown flag --bogus",
        ),
        (vec!["produce"], "-t TOPIC is required"),
        (vec!["consume", "-t", "x", "--from", "yesterday"], "--from"),
        (vec!["produce", "-t", "x", "--acks", "2"], "--acks"),
        (vec!["bench", "produce", "--count", "many"], "--count"),
        (vec!["frobnicate"], "unknown command"),
        (
            vec!["-b", "127.0.0.1:1", "topics", "list"],
            "no broker reachable",
        ),
    ];
    assert_one_line_errors(&cases);
    if let Some(b) = broker() {
        let out = run(
            &["-b", &b, "consume", "-t", &unique("kbus-missing"), "-e"],
            "",
        );
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("unknown topic"));
    }
}
