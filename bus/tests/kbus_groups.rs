//! `kbus groups` end to end against the broker: offsets set with `reset --to-offset` (a dry
//! run first), the group listed, described, its lag table and total, reset to latest, to
//! earliest and to a datetime, deleted; a group with a live member described; `kbus consume
//! -g -e` on a member the group gives nothing; and one-line errors with a non-zero exit for
//! incomplete or contradictory commands. Broker tests need `KAFKA_BOOTSTRAP`; under `CI=true`
//! its absence is a failure.

mod common;

use common::kbus::{assert_one_line_errors, broker, kbus, ok, run, unique};
use std::process::{Command, Stdio};

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

/// A fresh topic `prefix-...` of `partitions` partitions, made with `kbus topics create`, and
/// a fresh group name `prefix-group-...`.
fn topic_and_group(b: &str, prefix: &str, partitions: u32) -> (String, String) {
    let t = unique(prefix);
    let g = unique(&format!("{prefix}-group"));
    let p = partitions.to_string();
    ok(&run(&["-b", b, "topics", "create", &t, "-p", &p], ""));
    (t, g)
}

/// `kbus groups lag GROUP`'s table (the run must succeed).
fn lag_table(b: &str, g: &str) -> String {
    ok(&run(&["-b", b, "groups", "lag", g], ""))
}

#[test]
fn offsets_are_set_listed_described_lagged_reset_and_deleted() {
    let Some(b) = broker() else { return };
    let (t, g) = topic_and_group(&b, "kbus-groups", 2);
    let twenty: String = (0..20).map(|i| format!("a{i}\n")).collect();
    ok(&run(&["-b", &b, "produce", "-t", &t, "-p", "0"], &twenty));
    ok(&run(
        &["-b", &b, "produce", "-t", &t, "-p", "1"],
        "b0\nb1\nb2\nb3\nb4\n",
    ));

    let dry = run(
        &[
            "-b",
            &b,
            "groups",
            "reset",
            &g,
            "-t",
            &t,
            "--to-offset",
            "3",
            "--dry-run",
        ],
        "",
    );
    assert_eq!(
        lines(&ok(&dry)),
        [
            "TOPIC\tPARTITION\tPREVIOUS\tNEW".to_string(),
            format!("{t}\t0\t-\t3"),
            format!("{t}\t1\t-\t3"),
        ]
    );
    assert!(String::from_utf8_lossy(&dry.stderr).contains("dry run"));
    // Nothing committed yet: an empty table.
    assert_eq!(
        lines(&lag_table(&b, &g)),
        ["TOPIC\tPARTITION\tCOMMITTED\tHWM\tLAG", "total\t\t\t\t0"]
    );

    let set = ok(&run(
        &[
            "-b",
            &b,
            "groups",
            "reset",
            &g,
            "--topic",
            &t,
            "--to-offset",
            "3",
        ],
        "",
    ));
    assert!(set.contains(&format!("{t}\t1\t-\t3")), "{set}");
    let listed = ok(&run(&["-b", &b, "groups", "list"], ""));
    assert!(
        listed
            .lines()
            .any(|l| l.split('\t').next() == Some(g.as_str())),
        "{listed}"
    );
    assert_eq!(
        lines(&lag_table(&b, &g)),
        [
            "TOPIC\tPARTITION\tCOMMITTED\tHWM\tLAG".to_string(),
            format!("{t}\t0\t3\t20\t17"),
            format!("{t}\t1\t3\t5\t2"),
            "total\t\t\t\t19".to_string(),
        ]
    );
    let described = ok(&run(&["-b", &b, "groups", "describe", &g], ""));
    assert!(
        described.starts_with(&format!("group {g} state Empty ")),
        "{described}"
    );
    assert!(described.trim_end().ends_with("members 0"), "{described}");

    let latest = ok(&run(
        &["-b", &b, "groups", "reset", &g, "-t", &t, "--to-latest"],
        "",
    ));
    assert!(latest.contains(&format!("{t}\t0\t3\t20")), "{latest}");
    let lag = lag_table(&b, &g);
    assert!(lag.ends_with("total\t\t\t\t0\n"), "{lag}");

    assert_eq!(
        ok(&run(&["-b", &b, "groups", "delete", &g], "")),
        format!("deleted {g}\n")
    );
    let listed = ok(&run(&["-b", &b, "groups", "list"], ""));
    assert!(
        !listed
            .lines()
            .any(|l| l.split('\t').next() == Some(g.as_str())),
        "{listed}"
    );
}

#[test]
fn group_mistakes_give_one_line_and_a_failure_exit() {
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["groups"], "expected list"),
        (vec!["groups", "frob"], "unknown subcommand"),
        (vec!["groups", "describe"], "GROUP is missing"),
        (vec!["groups", "lag"], "GROUP is missing"),
        (vec!["groups", "delete"], "GROUP is missing"),
        (vec!["groups", "reset", "g", "-t", "x"], "--to-earliest"),
        (
            vec![
                "groups",
                "reset",
                "g",
                "-t",
                "x",
                "--to-latest",
                "--to-earliest",
            ],
            "only one",
        ),
        (
            vec!["groups", "reset", "g", "--to-latest"],
            "--topic is missing",
        ),
        (
            vec!["groups", "reset", "g", "-t", "x", "--to-datetime", "noon"],
            "--to-datetime",
        ),
        (vec!["groups", "list", "--bogus"], "unknown flag --bogus"),
        (
            vec!["-b", "127.0.0.1:1", "groups", "list"],
            "no broker reachable",
        ),
    ];
    assert_one_line_errors(&cases);
    let help = ok(&run(&["help", "groups"], ""));
    assert!(help.contains("--to-datetime MS"), "{help}");
}

#[test]
fn consume_as_a_group_member_commits_what_it_printed() {
    let Some(b) = broker() else { return };
    // Two batches, 7 and 23 records: tansu 0.6 answers a fetch from inside a batch by
    // skipping the batch, so the group's commit after 7 must fall on a batch boundary there.
    let (t, g) = topic_and_group(&b, "kbus-gconsume", 1);
    let seven: String = (0..7).map(|i| format!("v{i}\n")).collect();
    let rest: String = (7..30).map(|i| format!("v{i}\n")).collect();
    ok(&run(&["-b", &b, "produce", "-t", &t], &seven));
    ok(&run(&["-b", &b, "produce", "-t", &t], &rest));

    // -n 7: exactly seven printed, and only those committed.
    let first = ok(&run(
        &[
            "-b",
            &b,
            "consume",
            "-t",
            &t,
            "-g",
            &g,
            "-n",
            "7",
            "-f",
            "%p %o %v\\n",
        ],
        "",
    ));
    assert_eq!(first.lines().count(), 7, "{first}");
    let lag = lag_table(&b, &g);
    assert!(lag.ends_with("total\t\t\t\t23\n"), "{lag}");

    // -e: the rest, then exit; together every record exactly once.
    let rest = ok(&run(
        &[
            "-b",
            &b,
            "consume",
            "-t",
            &t,
            "-g",
            &g,
            "-e",
            "-f",
            "%p %o %v\\n",
        ],
        "",
    ));
    let mut all: Vec<&str> = first.lines().chain(rest.lines()).collect();
    assert_eq!(all.len(), 30, "{first}{rest}");
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 30, "a record printed twice: {first}{rest}");
    let lag = lag_table(&b, &g);
    assert!(lag.ends_with("total\t\t\t\t0\n"), "{lag}");

    // A group member takes no partition flag and no numeric --from.
    for (args, want) in [
        (vec!["-p", "0"], "exclude each other"),
        (vec!["--from", "5"], "earliest or latest"),
    ] {
        let mut full = vec![
            "-b",
            b.as_str(),
            "consume",
            "-t",
            t.as_str(),
            "-g",
            g.as_str(),
        ];
        full.extend(args);
        let out = run(&full, "");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

/// `partition -> committed` from `kbus groups lag`.
fn committed(b: &str, g: &str) -> std::collections::HashMap<i32, i64> {
    let out = run(&["-b", b, "groups", "lag", g], "");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with("total"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Some((f.get(1)?.parse().ok()?, f.get(2)?.parse().ok()?))
        })
        .collect()
}

/// What the members printed: per partition, the offsets seen, and the lowest not yet seen.
#[derive(Default)]
struct Printed {
    seen: std::collections::HashMap<i32, std::collections::BTreeSet<i64>>,
    lines: u64,
}

impl Printed {
    fn contiguous(&self, p: i32) -> i64 {
        let mut next = 0;
        if let Some(s) = self.seen.get(&p) {
            while s.contains(&next) {
                next += 1;
            }
        }
        next
    }
}

fn spawn_member(
    b: &str,
    t: &str,
    g: &str,
    session_ms: &str,
    printed: &std::sync::Arc<std::sync::Mutex<Printed>>,
) -> std::process::Child {
    let mut child = kbus()
        .args(["-b", b, "consume", "-t", t, "-g", g, "-f", "%p %o\\n"])
        .args(["--session-timeout-ms", session_ms])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let printed = printed.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Some((p, o)) = line.split_once(' ') else {
                continue;
            };
            let mut s = printed.lock().unwrap();
            s.lines += 1;
            s.seen
                .entry(p.parse().unwrap())
                .or_default()
                .insert(o.parse().unwrap());
        }
    });
    child
}

/// Two `kbus consume -g` processes share a group; the records arrive in five waves, and after
/// each of the first four is printed one member is killed (SIGKILL: no final commit, no
/// LeaveGroup) and started again, so every kill falls mid-stream however fast the members
/// read, and usually before the victim's last printed records were committed.
/// Nothing is lost, and no commit is ever ahead of what was printed (a commit is checked again
/// after a second when it looks ahead, since printed lines reach the test through a pipe).
/// Records go out one per batch: tansu 0.6 skips a batch fetched from its middle.
#[test]
fn killed_kbus_group_members_lose_nothing() {
    let Some(b) = broker() else { return };
    let started = std::time::Instant::now();
    const N: usize = 3000;
    const WAVES: usize = 5;
    let (t, g) = topic_and_group(&b, "kbus-gkill", 4);
    let produce_wave = |w: usize| {
        let input: String = (w * N / WAVES..(w + 1) * N / WAVES)
            .map(|i| format!("k{}:v{i}\n", i % 97))
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
                "--batch-size",
                "1",
                "--linger-ms",
                "0",
            ],
            &input,
        ));
    };
    // Short, so a killed member is evicted quickly; Kafka refuses less than its
    // `group.min.session.timeout.ms`, 6 s by default.
    let tansu = ok(&run(&["-b", &b, "metadata"], "")).starts_with("cluster tansu_cluster");
    let session_ms = if tansu { "3000" } else { "6000" };
    let printed = std::sync::Arc::new(std::sync::Mutex::new(Printed::default()));
    let mut members = [
        spawn_member(&b, &t, &g, session_ms, &printed),
        spawn_member(&b, &t, &g, session_ms, &printed),
    ];
    let unique_seen = |p: &std::sync::Mutex<Printed>| {
        p.lock()
            .unwrap()
            .seen
            .values()
            .map(|s| s.len())
            .sum::<usize>()
    };
    let mut kills = 0;
    let mut ahead = Vec::new();
    let mut wave = 0;
    produce_wave(wave);
    let mut next_check = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while unique_seen(&printed) < N {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(90),
            "stalled at {} of {N} after {kills} kills",
            unique_seen(&printed)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        if std::time::Instant::now() >= next_check {
            for (p, c) in committed(&b, &g) {
                if c > printed.lock().unwrap().contiguous(p) {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    let seen = printed.lock().unwrap().contiguous(p);
                    if c > seen {
                        ahead.push(format!(
                            "partition {p}: committed {c}, printed below {seen}"
                        ));
                    }
                }
            }
            next_check = std::time::Instant::now() + std::time::Duration::from_secs(2);
        }
        if unique_seen(&printed) >= (wave + 1) * N / WAVES && wave + 1 < WAVES {
            let victim = kills % 2;
            members[victim].kill().unwrap();
            members[victim].wait().unwrap();
            kills += 1;
            members[victim] = spawn_member(&b, &t, &g, session_ms, &printed);
            wave += 1;
            produce_wave(wave);
        }
    }
    // The survivors commit within a second of printing.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let total = loop {
        let c = committed(&b, &g);
        let total: i64 = c.values().sum();
        if total == N as i64 || std::time::Instant::now() > deadline {
            break total;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    for m in &mut members {
        let _ = m.kill();
        let _ = m.wait();
    }
    let s = printed.lock().unwrap();
    println!(
        "kbus kill: {N} records, {kills} kills, {} duplicates, {:?}",
        s.lines - N as u64,
        started.elapsed()
    );
    assert!(ahead.is_empty(), "{ahead:?}");
    assert_eq!(total, N as i64, "final commits");
    assert_eq!(kills, WAVES - 1);
}

/// SIGTERM (as `kill` or a container runtime sends it) ends `kbus consume -g` cleanly: it
/// commits what it printed and leaves the group, so the group is empty at once.
#[test]
fn a_terminated_kbus_member_commits_and_leaves() {
    let Some(b) = broker() else { return };
    let (t, g) = topic_and_group(&b, "kbus-gterm", 1);
    ok(&run(&["-b", &b, "produce", "-t", &t], "a\nb\nc\n"));
    let mut child = kbus()
        .args(["-b", &b, "consume", "-t", &t, "-g", &g])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        seen.push(line.trim_end().to_owned());
    }
    assert_eq!(seen, ["a", "b", "c"]);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lag = lag_table(&b, &g);
    assert!(lag.contains(&format!("{t}\t0\t3\t3\t0")), "{lag}");
    let described = ok(&run(&["-b", &b, "groups", "describe", &g], ""));
    assert!(described.trim_end().ends_with("members 0"), "{described}");
}

/// `reset --to-datetime MS` moves to the first record at or after MS; `--to-earliest` to the
/// log start. Each prints the previous and the new offset, and the lag table follows.
#[test]
fn offsets_are_reset_to_a_datetime_and_to_earliest() {
    let Some(b) = broker() else { return };
    let (t, g) = topic_and_group(&b, "kbus-greset", 1);
    ok(&run(&["-b", &b, "produce", "-t", &t], "a\nb\nc\n"));
    std::thread::sleep(std::time::Duration::from_millis(100));
    let mid = integration_tests::now_ms();
    std::thread::sleep(std::time::Duration::from_millis(100));
    ok(&run(&["-b", &b, "produce", "-t", &t], "d\ne\n"));
    let reset = |to: &[&str]| {
        let mut args = vec![
            "-b",
            b.as_str(),
            "groups",
            "reset",
            g.as_str(),
            "-t",
            t.as_str(),
        ];
        args.extend_from_slice(to);
        lines(&ok(&run(&args, "")))
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
    };
    let header = "TOPIC\tPARTITION\tPREVIOUS\tNEW".to_string();
    assert_eq!(
        reset(&["--to-offset", "5"]),
        [header.clone(), format!("{t}\t0\t-\t5")]
    );
    let mid = mid.to_string();
    assert_eq!(
        reset(&["--to-datetime", &mid]),
        [header.clone(), format!("{t}\t0\t5\t3")]
    );
    assert_eq!(
        lines(&lag_table(&b, &g)),
        [
            "TOPIC\tPARTITION\tCOMMITTED\tHWM\tLAG".to_string(),
            format!("{t}\t0\t3\t5\t2"),
            "total\t\t\t\t2".to_string(),
        ]
    );
    assert_eq!(
        reset(&["--to-earliest"]),
        [header.clone(), format!("{t}\t0\t3\t0")]
    );
    assert_eq!(
        lines(&lag_table(&b, &g)),
        [
            "TOPIC\tPARTITION\tCOMMITTED\tHWM\tLAG".to_string(),
            format!("{t}\t0\t0\t5\t5"),
            "total\t\t\t\t5".to_string(),
        ]
    );
}

/// Our own group member, once it read `records`; then polling in a task until the returned flag
/// is set. Its client id is "a", so its member id ("a-" and a UUID, on Kafka and tansu alike)
/// sorts before a kbus member's ("kbus-..."): the range assignor gives it a contested
/// partition.
async fn live_member(
    b: &str,
    group: &str,
    topic: &str,
    records: usize,
) -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    tokio::task::JoinHandle<bus::GroupConsumer>,
) {
    use bus::{AssignorKind, Client, ClientConfig, ConnectionConfig, GroupConfig, GroupConsumer};
    use std::time::Duration;

    let client = Client::connect(
        ClientConfig::new([b]).connection(ConnectionConfig::default().client_id("a")),
    )
    .await
    .unwrap();
    let config = GroupConfig::new(group)
        .session_timeout(Duration::from_secs(10))
        .heartbeat_interval(Duration::from_millis(300))
        .rebalance_timeout(Duration::from_secs(10))
        .assignors([AssignorKind::Range])
        .auto_commit(false);
    let mut a = GroupConsumer::new(client, config, integration_tests::consumer_config()).unwrap();
    a.subscribe([topic]).unwrap();
    let mut got = 0;
    while got < records || a.assignment().is_empty() {
        got += tokio::time::timeout(Duration::from_secs(30), a.poll())
            .await
            .expect("records within 30 s")
            .unwrap()
            .len();
    }
    if records > 0 {
        // The first partition's records, committed; any other partition never.
        a.commit_offsets(&[bus::TopicPartitionOffset::new(topic, 0, records as i64)])
            .await
            .unwrap();
    }
    let member_id = a.member_id();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let polling = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = tokio::time::timeout(Duration::from_millis(200), a.poll()).await;
            }
            a
        })
    };
    (member_id, stop, polling)
}

/// A group with a live member: `groups describe` shows it, and `groups lag` shows its commit
/// and, as "-", the partition it never committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_with_a_live_member_is_described_and_lagged() {
    let Some(b) = broker() else { return };
    let (t, g) = topic_and_group(&b, "kbus-glive", 2);
    ok(&run(
        &["-b", &b, "produce", "-t", &t, "-p", "0"],
        "a\nb\nc\n",
    ));
    let tansu = ok(&run(&["-b", &b, "metadata"], "")).starts_with("cluster tansu_cluster");
    let (member_id, stop, polling) = live_member(&b, &g, &t, 3).await;

    // The test body is not a runtime worker: blocking on kbus here leaves both to the member.
    let described = ok(&run(&["-b", &b, "groups", "describe", &g], ""));
    let d = lines(&described);
    assert!(
        d[0].starts_with(&format!("group {g} state Stable ")) && d[0].ends_with(" members 1"),
        "{described}"
    );
    assert!(
        d[1].starts_with(&format!("member {member_id} ")),
        "{described}"
    );
    if !tansu {
        // tansu 0.6 leaves a member's client id, host, instance id and assignment out.
        assert!(d[0].contains(" protocol range "), "{described}");
        assert!(d[1].contains(" client-id a "), "{described}");
        assert_eq!(d[2], format!("  assigned {t} 0,1"), "{described}");
    }
    assert_eq!(
        lines(&lag_table(&b, &g)),
        [
            "TOPIC\tPARTITION\tCOMMITTED\tHWM\tLAG".to_string(),
            format!("{t}\t0\t3\t3\t0"),
            format!("{t}\t1\t-\t0\t-"),
            "total\t\t\t\t0".to_string(),
        ]
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    polling.await.unwrap().close().await.unwrap();
}

/// `kbus consume -g -e` joins a group whose one partition range gives to the live member (its
/// member id sorts first), so it is given nothing: it still exits (successfully, printing
/// nothing: given the partition it would print the record after the live member's commit)
/// instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_at_end_ends_a_member_the_group_gives_nothing() {
    let Some(b) = broker() else { return };
    let (t, g) = topic_and_group(&b, "kbus-gempty", 1);
    ok(&run(&["-b", &b, "produce", "-t", &t], "a\nb\n"));
    let (_, stop, polling) = live_member(&b, &g, &t, 2).await;
    // Past the live member's commit: a member given the partition would print it.
    ok(&run(&["-b", &b, "produce", "-t", &t], "c\n"));
    let mut child = kbus()
        .args(["-b", &b, "consume", "-t", &t, "-g", &g, "-e"])
        .args(["--session-timeout-ms", "10000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            panic!(
                "kbus -e with no partitions did not exit: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "it owned nothing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut a = polling.await.unwrap();
    // The leave rebalanced the group (eager: revoke, then rejoin): the partition is the live
    // member's again.
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while a.assignment().len() != 1 {
            let _ = tokio::time::timeout(std::time::Duration::from_millis(200), a.poll()).await;
        }
    })
    .await
    .expect("the live member holds the partition again");
    a.close().await.unwrap();
}
