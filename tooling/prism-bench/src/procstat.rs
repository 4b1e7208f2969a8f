//! CPU time and peak memory of a server process and its descendants (the
//! proxy and the plugins it started), read from /proc.

use std::collections::{HashMap, HashSet};
use std::fs;

/// /proc reports CPU time in clock ticks of USER_HZ, which Linux fixes at
/// 100 for user space on every architecture.
const TICKS_PER_SECOND: f64 = 100.0;

/// One process of a tree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Process {
    pub pid: u32,
    /// The executable's file name (from the command line; the kernel's
    /// `comm` is cut at 15 bytes, which makes plugin names ambiguous).
    pub name: String,
    /// user + system CPU seconds since the process started.
    pub cpu_seconds: f64,
    /// Peak resident set since the process started (VmHWM), in bytes.
    pub peak_rss_bytes: u64,
    /// Resident set now (VmRSS), in bytes.
    pub rss_bytes: u64,
}

/// A reading of a process tree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// user + system CPU seconds, summed over the tree.
    pub cpu_seconds: f64,
    /// Sum of each process's peak resident set (VmHWM), in bytes.
    pub peak_rss_bytes: u64,
    pub processes: usize,
    /// Each process, by pid.
    pub each: Vec<Process>,
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

/// A `kB` field of /proc/<pid>/status, in bytes.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.strip_prefix(field).is_some_and(|rest| rest.starts_with(':')))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// VmHWM in bytes from the text of /proc/<pid>/status.
pub fn parse_peak_rss(status: &str) -> Option<u64> {
    status_kib(status, "VmHWM")
}

/// VmRSS in bytes from the text of /proc/<pid>/status.
pub fn parse_rss(status: &str) -> Option<u64> {
    status_kib(status, "VmRSS")
}

/// The file name of argv[0] from /proc/<pid>/cmdline (NUL separated).
pub fn parse_cmdline_name(cmdline: &[u8]) -> Option<String> {
    let argv0 = cmdline.split(|b| *b == 0).next().filter(|a| !a.is_empty())?;
    let argv0 = String::from_utf8_lossy(argv0);
    Some(argv0.rsplit('/').next().unwrap_or(&argv0).to_owned())
}

fn process_name(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .as_deref()
        .and_then(parse_cmdline_name)
        .or_else(|| fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|c| c.trim().to_owned()))
        .unwrap_or_else(|| pid.to_string())
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
    let mut pids: Vec<u32> = tree.into_iter().collect();
    pids.sort_unstable();
    for pid in pids {
        let cpu_seconds = stats.get(&pid).map_or(0.0, |(_, ticks)| *ticks as f64 / TICKS_PER_SECOND);
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let process = Process {
            pid,
            name: process_name(pid),
            cpu_seconds,
            peak_rss_bytes: parse_peak_rss(&status).unwrap_or(0),
            rss_bytes: parse_rss(&status).unwrap_or(0),
        };
        out.cpu_seconds += process.cpu_seconds;
        out.peak_rss_bytes += process.peak_rss_bytes;
        out.each.push(process);
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
        assert_eq!(parse_rss(status), Some(1000 * 1024));
    }

    #[test]
    fn names_from_the_command_line() {
        assert_eq!(
            parse_cmdline_name(b"/opt/bin/prism-plugin-redis\0--socket\0x\0").as_deref(),
            Some("prism-plugin-redis")
        );
        assert_eq!(parse_cmdline_name(b"redis-server *:6379\0").as_deref(), Some("redis-server *:6379"));
        assert_eq!(parse_cmdline_name(b""), None);
    }

    #[test]
    fn this_process_can_be_read() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.processes >= 1);
        assert!(s.peak_rss_bytes > 0);
        let me = s.each.iter().find(|p| p.pid == std::process::id()).unwrap();
        assert!(me.rss_bytes > 0 && me.rss_bytes <= me.peak_rss_bytes);
        assert!(!me.name.is_empty());
        assert_eq!(sample(u32::MAX), None);
    }
}
