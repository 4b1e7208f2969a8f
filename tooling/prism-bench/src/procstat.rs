//! CPU time and peak memory of a server process and its descendants (the
//! proxy and the plugins it started), read from /proc.

use std::collections::{HashMap, HashSet};
use std::fs;

/// /proc reports CPU time in clock ticks of USER_HZ, which Linux fixes at
/// 100 for user space on every architecture.
const TICKS_PER_SECOND: f64 = 100.0;

/// A reading of a process tree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// user + system CPU seconds, summed over the tree.
    pub cpu_seconds: f64,
    /// Sum of each process's peak resident set (VmHWM), in bytes.
    pub peak_rss_bytes: u64,
    pub processes: usize,
}

/// `(ppid, utime + stime ticks)` from the text of /proc/<pid>/stat.
pub fn parse_stat(text: &str) -> Option<(u32, u64)> {
    // The command name is in parentheses and may itself contain spaces or
    // parentheses, so fields are counted after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// VmHWM in bytes from the text of /proc/<pid>/status.
pub fn parse_peak_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Reads `root` and every process descended from it; `None` when `root` is
/// gone.
pub fn sample(root: u32) -> Option<Sample> {
    let mut stats: HashMap<u32, (u32, u64)> = HashMap::new();
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if let Some(stat) = fs::read_to_string(format!("/proc/{pid}/stat")).ok().as_deref().and_then(parse_stat) {
            stats.insert(pid, stat);
        }
    }
    stats.get(&root)?;
    let mut tree = HashSet::from([root]);
    // Parents may have larger pids than children after pid wrap-around, so
    // repeat until no process joins.
    loop {
        let before = tree.len();
        for (pid, (ppid, _)) in &stats {
            if tree.contains(ppid) {
                tree.insert(*pid);
            }
        }
        if tree.len() == before {
            break;
        }
    }
    let mut out = Sample { processes: tree.len(), ..Sample::default() };
    for pid in tree {
        if let Some((_, ticks)) = stats.get(&pid) {
            out.cpu_seconds += *ticks as f64 / TICKS_PER_SECOND;
        }
        if let Some(rss) = fs::read_to_string(format!("/proc/{pid}/status")).ok().as_deref().and_then(parse_peak_rss) {
            out.peak_rss_bytes += rss;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_awkward_names() {
        let line = "1234 (prism (proxy) x) S 99 1234 1234 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 5 0 100 0 0";
        assert_eq!(parse_stat(line), Some((99, 300)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn peak_rss_from_status() {
        let status = "Name:\tprism-proxy\nVmPeak:\t  100 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_peak_rss(status), Some(2048 * 1024));
        assert_eq!(parse_peak_rss("Name: x\n"), None);
    }

    #[test]
    fn this_process_can_be_read() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.processes >= 1);
        assert!(s.peak_rss_bytes > 0);
        assert_eq!(sample(u32::MAX), None);
    }
}
