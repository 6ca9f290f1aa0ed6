//! What one run reports, and how its CPU time and memory are read.
//!
//! CPU is counted over the timed window only (first send to last acknowledgement, or first
//! fetch to the N-th record), so connection setup, metadata and topic lookups, which differ in
//! kind between clients and do not scale with N, stay out of the per-record figure. It is the
//! whole process's user+system time, so every client thread (librdkafka's broker threads,
//! tokio's workers) is included.

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// The one JSON line a run prints. `kbus bench` prints the same fields, which is what lets
/// `peer-report` put every client in one table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub client: String,
    pub mode: String,
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub records_per_sec: f64,
    /// Decimal megabytes (10^6 bytes) of record values per second.
    pub mb_per_sec: f64,
    pub cpu_seconds: f64,
    pub cpu_us_per_record: f64,
    pub peak_rss_bytes: u64,
}

impl Outcome {
    pub fn new(
        client: &str,
        mode: &str,
        records: u64,
        bytes: u64,
        seconds: f64,
        cpu_seconds: f64,
        peak_rss_bytes: u64,
    ) -> Outcome {
        // A zero-length window can only come from a clock that did not move; report it as
        // one nanosecond rather than divide by zero and print `inf`, which is not JSON.
        let secs = seconds.max(1e-9);
        Outcome {
            client: client.to_string(),
            mode: mode.to_string(),
            records,
            bytes,
            seconds,
            records_per_sec: records as f64 / secs,
            mb_per_sec: bytes as f64 / secs / 1e6,
            cpu_seconds,
            cpu_us_per_record: if records == 0 {
                0.0
            } else {
                cpu_seconds * 1e6 / records as f64
            },
            peak_rss_bytes,
        }
    }

    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("an Outcome always serialises")
    }
}

/// User plus system CPU seconds this process has used so far, all threads.
pub fn process_cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage writes a complete rusage into the pointer it is given and reads nothing
    // from it; RUSAGE_SELF cannot fail on Linux, and the return value is checked anyway.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage(RUSAGE_SELF) failed");
    // SAFETY: rc == 0, so the kernel filled the struct.
    let usage = unsafe { usage.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Peak resident set size of this process (VmHWM), in bytes.
pub fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    vm_hwm_bytes(&status).unwrap_or(0)
}

/// Reads `VmHWM:   1234 kB` out of a /proc/PID/status text.
pub fn vm_hwm_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User plus system CPU seconds used so far by another process, from /proc/PID/stat: how
/// `peer-report` tells whether the broker, rather than the client, was the bottleneck.
pub fn other_process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    stat_cpu_seconds(&stat, if ticks > 0 { ticks as f64 } else { 100.0 })
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line, in seconds. The command name
/// (field 2) may contain spaces and parentheses, so fields are counted after its last `)`.
pub fn stat_cpu_seconds(stat: &str, ticks_per_sec: f64) -> Option<f64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace();
    // After the command name come field 3 (state) onwards: utime is field 14, the 12th here.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / ticks_per_sec)
}

/// Wall clock and process CPU at the start of the timed window.
pub struct Window {
    wall: Instant,
    cpu: f64,
}

impl Window {
    pub fn start() -> Window {
        Window {
            cpu: process_cpu_seconds(),
            wall: Instant::now(),
        }
    }

    /// Closes the window and reads peak RSS, which is taken over the whole process lifetime:
    /// what a deployment has to provision for.
    pub fn finish(self, client: &str, mode: &str, records: u64, bytes: u64) -> Outcome {
        let seconds = self.wall.elapsed().as_secs_f64();
        let cpu = process_cpu_seconds() - self.cpu;
        Outcome::new(client, mode, records, bytes, seconds, cpu, peak_rss_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_derived_from_counts_and_time() {
        let o = Outcome::new("rdkafka", "produce", 1_000_000, 100_000_000, 2.0, 0.5, 4096);
        assert_eq!(o.records_per_sec, 500_000.0);
        assert_eq!(o.mb_per_sec, 50.0);
        assert_eq!(o.cpu_us_per_record, 0.5);
    }

    #[test]
    fn zero_seconds_does_not_produce_infinity() {
        let o = Outcome::new("x", "consume", 10, 10, 0.0, 0.0, 0);
        assert!(o.records_per_sec.is_finite());
        assert!(o.to_json_line().starts_with('{'));
    }

    #[test]
    fn json_line_has_exactly_the_agreed_fields() {
        let o = Outcome::new("krafka", "consume", 20, 2000, 1.0, 0.25, 1 << 20);
        let line = o.to_json_line();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "bytes",
                "client",
                "cpu_seconds",
                "cpu_us_per_record",
                "mb_per_sec",
                "mode",
                "peak_rss_bytes",
                "records",
                "records_per_sec",
                "seconds"
            ]
        );
        assert_eq!(serde_json::from_str::<Outcome>(&line).unwrap(), o);
    }

    #[test]
    fn vm_hwm_is_read_in_kib() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(vm_hwm_bytes(status), Some(2048 * 1024));
        assert_eq!(vm_hwm_bytes("Name: x\n"), None);
    }

    #[test]
    fn this_process_has_a_peak_rss_and_cpu_that_grows() {
        assert!(peak_rss_bytes() > 0);
        let before = process_cpu_seconds();
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed().as_millis() < 50 {
            x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(7));
        }
        std::hint::black_box(x);
        assert!(process_cpu_seconds() > before);
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with spaces and a ')' must not shift the fields.
        let stat = "42 (tan su) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1 1 1";
        assert_eq!(stat_cpu_seconds(stat, 100.0), Some(3.0));
        assert_eq!(stat_cpu_seconds("garbage", 100.0), None);
    }

    #[test]
    fn own_stat_is_readable() {
        assert!(other_process_cpu_seconds(std::process::id()).is_some());
    }
}
