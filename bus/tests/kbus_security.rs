//! kbus with its security flags, end to end against tansu behind TLS with SCRAM users (the
//! setup `tests/tests/security.rs` uses, from `integration_tests::secure`): topics, produce and
//! consume over SASL_SSL with SCRAM-SHA-256 and SCRAM-SHA-512, the password from the flag or
//! from `KAFKA_SASL_PASSWORD`; and a wrong password or an untrusted CA failing with one line on
//! stderr, exit status 1 and a single dial. Needs the tansu binary: without it the tests skip,
//! under `CI=true` they fail.

mod common;

use std::process::Output;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::kbus::{kbus, ok, run_cmd, unique};
use integration_tests::secure::{SecureBroker, USERS, ca, secure_broker, tansu_or_skip};

/// Where the password goes.
enum Password<'a> {
    Flag(&'a str),
    Env(&'a str),
}

/// Runs `kbus -b BOOTSTRAP --security-protocol SASL_SSL --ssl-ca CA --sasl-mechanism MECH
/// --sasl-username USER [--sasl-password P] ARGS...` with `stdin`.
fn secure_kbus(
    bootstrap: &str,
    ca: &str,
    mechanism: &str,
    user: &str,
    password: Password<'_>,
    args: &[&str],
    stdin: &str,
) -> Output {
    let mut cmd = kbus();
    cmd.args(["-b", bootstrap, "--security-protocol", "SASL_SSL"])
        .args(["--ssl-ca", ca, "--sasl-mechanism", mechanism])
        .args(["--sasl-username", user])
        .env_remove("KAFKA_SASL_PASSWORD");
    match password {
        Password::Flag(p) => cmd.args(["--sasl-password", p]),
        Password::Env(p) => cmd.env("KAFKA_SASL_PASSWORD", p),
    };
    cmd.args(args);
    run_cmd(cmd, stdin)
}

/// tansu behind TLS with [`USERS`], and the runtime that runs its TLS terminator.
fn broker() -> Option<(tokio::runtime::Runtime, SecureBroker)> {
    let bin = tansu_or_skip()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let b = rt.block_on(secure_broker(&bin, USERS));
    Some((rt, b))
}

/// A failed run: exit status 1 and exactly one line on stderr, which is returned.
fn one_line_failure(out: &Output) -> String {
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("kbus: "), "{stderr}");
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);
    stderr
}

#[test]
fn topics_produce_and_consume_over_sasl_ssl() {
    let Some((_rt, b)) = broker() else { return };
    let trusted = b.pki.ca.to_str().unwrap();
    let addr = b.addr();
    let alice = |args: &[&str], stdin: &str| {
        let pw = Password::Flag("alice-secret");
        secure_kbus(&addr, trusted, "SCRAM-SHA-256", "alice", pw, args, stdin)
    };
    // bob by the certificate's DNS name, his password from the environment.
    let by_name = format!("localhost:{}", b.port);
    let bob = |args: &[&str], stdin: &str| {
        let pw = Password::Env("bob-secret");
        secure_kbus(&by_name, trusted, "SCRAM-SHA-512", "bob", pw, args, stdin)
    };

    let topic = unique("kbus-sasl-ssl");
    let created = ok(&alice(&["topics", "create", &topic, "-p", "1"], ""));
    assert!(
        created.starts_with(&format!("created {topic}")),
        "{created}"
    );
    let listed = ok(&bob(&["topics", "list"], ""));
    assert!(
        listed.lines().any(|l| l == format!("{topic}\t1")),
        "{listed}"
    );

    let lines: Vec<String> = (0..20).map(|i| format!("record {i}")).collect();
    ok(&alice(
        &["produce", "-t", &topic, "--acks", "all"],
        &(lines.join("\n") + "\n"),
    ));
    let consumed = ok(&bob(
        &["consume", "-t", &topic, "--from", "earliest", "-e"],
        "",
    ));
    assert_eq!(consumed.lines().collect::<Vec<_>>(), lines);
}

#[test]
fn wrong_password_and_untrusted_ca_fail_in_one_line_after_one_dial() {
    let Some((_rt, b)) = broker() else { return };
    let trusted = b.pki.ca.to_str().unwrap();
    let addr = b.addr();
    // The broker is ready: the right password works.
    let pw = Password::Flag("alice-secret");
    ok(&secure_kbus(
        &addr,
        trusted,
        "SCRAM-SHA-256",
        "alice",
        pw,
        &["topics", "list"],
        "",
    ));

    let before = b.accepted.load(Ordering::SeqCst);
    let started = Instant::now();
    let pw = Password::Flag("not-alices-password");
    let out = secure_kbus(
        &addr,
        trusted,
        "SCRAM-SHA-256",
        "alice",
        pw,
        &["topics", "list"],
        "",
    );
    let took = started.elapsed();
    let line = one_line_failure(&out);
    assert!(line.contains("authentication failed"), "{line}");
    assert!(!line.contains("not-alices-password"), "{line}");
    // One dial, no retries: a reconnect loop would dial again and wait out kbus' 5 s
    // metadata budget.
    assert_eq!(b.accepted.load(Ordering::SeqCst) - before, 1, "{line}");
    assert!(took < Duration::from_secs(4), "took {took:?}: {line}");

    // A CA that did not sign the broker's certificate.
    let other = b.pki.dir.write("other-ca.pem", &ca("someone else").pem());
    let before = b.accepted.load(Ordering::SeqCst);
    let out = secure_kbus(
        &addr,
        other.to_str().unwrap(),
        "SCRAM-SHA-256",
        "alice",
        Password::Env("alice-secret"),
        &["topics", "list"],
        "",
    );
    let line = one_line_failure(&out);
    assert!(line.contains("not signed by a trusted CA"), "{line}");
    assert_eq!(b.accepted.load(Ordering::SeqCst) - before, 1, "{line}");
}
