//! What the `kbus` end-to-end tests share: the binary, the broker they run against, and
//! running one command with its stdin.

use std::io::Write;
use std::process::{Command, Output, Stdio};

pub fn kbus() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kbus"))
}

/// The broker from `KAFKA_BOOTSTRAP`; without one the test skips, except under `CI=true`.
pub fn broker() -> Option<String> {
    match std::env::var("KAFKA_BOOTSTRAP") {
        Ok(b) if !b.is_empty() => Some(b),
        _ => {
            assert!(
                !integration_tests::ci(),
                "KAFKA_BOOTSTRAP is not set and CI=true"
            );
            eprintln!("note: KAFKA_BOOTSTRAP not set; skipping");
            None
        }
    }
}

/// Runs kbus with `args`, writing `stdin` to it, and waits for it.
pub fn run(args: &[&str], stdin: &str) -> Output {
    let mut cmd = kbus();
    cmd.args(args);
    run_cmd(cmd, stdin)
}

/// Runs `cmd` (kbus with its arguments and environment), writing `stdin` to it, and waits
/// for it.
pub fn run_cmd(mut cmd: Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The stdout of a successful run; a failed one fails the test with kbus's stderr.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "kbus failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Each `(args, want)` run fails, with one line on stderr that contains `want`.
pub fn assert_one_line_errors(cases: &[(Vec<&str>, &str)]) {
    for (args, want) in cases {
        let out = run(args, "");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
}

/// A name no other run uses: `prefix`, this process id and the time in nanoseconds.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}
