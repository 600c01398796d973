//! CPU time and memory of the pod's processes, from `/proc`.
//!
//! Every instance of the pod is a `flux start --test-size=4`: four broker
//! processes, children of that `flux start`. A job's shell runs under the
//! broker of the rank it was given, so an instance's CPU is the sum over its
//! brokers. Each broker's own time (`utime + stime`) is kept apart from its
//! reaped children's (`cutime + cstime`: job shells and tasks), which are
//! the same work whichever way a job got there.
//!
//! The pancake module runs in a thread of the queue broker (rank 0) named
//! after it: flux-core names each module's thread after the module, so its
//! `/proc/<pid>/task/<tid>/comm` is `pancake`; the module's own worker (the
//! embedded Fluxion matcher, or the gRPC client) is `pancake-worker`.

use std::collections::BTreeMap;
use std::fs;

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
fn ticks_per_sec() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map(|v| v as f64)
        .unwrap_or(100.0)
}

/// (utime + stime, cutime + cstime) in seconds from a `stat` file's text.
fn parse_stat(text: &str) -> Option<(f64, f64)> {
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'. Then: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
    let rest = text.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok());
    let hz = ticks_per_sec();
    Some(((n(14)? + n(15)?) / hz, (n(16)? + n(17)?) / hz))
}

/// A process's parent pid.
pub fn ppid(pid: i32) -> Option<i32> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = text.rsplit_once(')')?.1;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// A process's own and reaped children's CPU seconds.
pub fn cpu(pid: i32) -> (f64, f64) {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| parse_stat(&t))
        .unwrap_or((0.0, 0.0))
}

/// A thread's CPU seconds.
pub fn thread_cpu(pid: i32, tid: i32) -> f64 {
    fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))
        .ok()
        .and_then(|t| parse_stat(&t))
        .map(|(own, _)| own)
        .unwrap_or(0.0)
}

/// The threads of `pid` by name: comm → tids.
pub fn threads(pid: i32) -> BTreeMap<String, Vec<i32>> {
    let mut out: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(tid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let comm = fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default();
        out.entry(comm.trim().to_string()).or_default().push(tid);
    }
    out
}

/// Every process whose parent is `parent`.
pub fn children(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        if let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>()
            && ppid(pid) == Some(parent)
        {
            out.push(pid);
        }
    }
    out.sort();
    out
}

/// The broker processes of the instance whose rank 0 broker is `rank0`:
/// its siblings under the same `flux start` (only those named like a broker).
pub fn instance_brokers(rank0: i32) -> Vec<i32> {
    let Some(parent) = ppid(rank0) else {
        return vec![rank0];
    };
    let mut out: Vec<i32> = children(parent)
        .into_iter()
        .filter(|&p| {
            let comm = fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            comm.contains("broker")
        })
        .collect();
    if !out.contains(&rank0) {
        out.push(rank0);
    }
    out.sort();
    out
}

/// A process's resident set in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Pids whose command line contains `needle`.
pub fn pids_with_cmdline(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        if let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() {
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmd)
                .replace('\0', " ")
                .contains(needle)
            {
                out.push(pid);
            }
        }
    }
    out
}

/// CPU seconds of one group of processes or threads at one instant.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// name → (own seconds, children's seconds).
    pub groups: BTreeMap<String, (f64, f64)>,
}

impl Snapshot {
    /// `self - before`, per group.
    pub fn since(&self, before: &Snapshot) -> Snapshot {
        let mut groups = BTreeMap::new();
        for (k, (a, b)) in &self.groups {
            let (a0, b0) = before.groups.get(k).copied().unwrap_or((0.0, 0.0));
            groups.insert(k.clone(), (a - a0, b - b0));
        }
        Snapshot { groups }
    }

    /// Own seconds of group `k` (0 if absent).
    pub fn own(&self, k: &str) -> f64 {
        self.groups.get(k).map(|g| g.0).unwrap_or(0.0)
    }

    /// Children's seconds of group `k` (0 if absent).
    pub fn children(&self, k: &str) -> f64 {
        self.groups.get(k).map(|g| g.1).unwrap_or(0.0)
    }
}

/// What to sample: named process groups and named threads.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// group name → pids (summed).
    pub procs: BTreeMap<String, Vec<i32>>,
    /// group name → (pid, thread name): every thread of that name.
    pub threads: BTreeMap<String, (i32, String)>,
}

impl Probe {
    /// Sample now.
    pub fn sample(&self) -> Snapshot {
        let mut groups = BTreeMap::new();
        for (k, pids) in &self.procs {
            let mut own = 0.0;
            let mut kids = 0.0;
            for &p in pids {
                let (a, b) = cpu(p);
                own += a;
                kids += b;
            }
            groups.insert(k.clone(), (own, kids));
        }
        for (k, (pid, name)) in &self.threads {
            let tids = threads(*pid).remove(name).unwrap_or_default();
            let own: f64 = tids.iter().map(|&t| thread_cpu(*pid, t)).sum();
            groups.insert(k.clone(), (own, 0.0));
        }
        groups.insert("bench".into(), cpu(std::process::id() as i32));
        Snapshot { groups }
    }
}

/// The machine's load averages (`/proc/loadavg`, first three fields).
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let t = "123 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 100 50 20 10 20 0 1";
        let (own, kids) = parse_stat(t).unwrap();
        let hz = ticks_per_sec();
        assert!((own - 150.0 / hz).abs() < 1e-9);
        assert!((kids - 30.0 / hz).abs() < 1e-9);
    }
}
