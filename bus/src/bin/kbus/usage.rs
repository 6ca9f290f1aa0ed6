//! What this process has used: CPU seconds (user + system) and peak resident memory, read
//! from procfs so the benchmark needs no C bindings. Linux only; elsewhere the figures are
//! reported as absent rather than guessed.

/// User + system CPU seconds of this process so far.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is parenthesised and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 11 and 12 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks_per_second())
}

/// The kernel's USER_HZ. It is 100 on every mainstream Linux build; procfs has no file for it
/// and reading it otherwise needs libc's sysconf.
fn clock_ticks_per_second() -> f64 {
    100.0
}

/// Peak resident set size (VmHWM) in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Current resident set size (VmRSS) in bytes.
#[cfg(test)]
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_read_and_plausible() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        let start = cpu_seconds().unwrap();
        // Burn a little CPU so the counter must move.
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed().as_millis() < 60 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds().unwrap() > start);
        let rss = rss_bytes().unwrap();
        let peak = peak_rss_bytes().unwrap();
        assert!(peak >= rss && peak > 1 << 20, "peak {peak} rss {rss}");
    }
}
