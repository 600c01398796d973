//! `perf record` around a throughput run (`--perf DIR`).

use std::process::{Child, Command};

use crate::procstat;

/// Start `perf record` into `dir/<name>.data` (stopped with SIGINT later):
/// the whole queue broker without call graphs (where its time goes, thread
/// by thread), and the module's own threads with DWARF call graphs (Rust
/// code has no frame pointers, so `-g` alone loses the callers).
pub(crate) fn start_perf(pid: i32, apps: &[i32], dir: &std::path::Path, name: &str) -> Vec<Child> {
    let _ = std::fs::create_dir_all(dir);
    let threads = procstat::threads(pid);
    let tids: Vec<String> = ["pancake", "pancake-worker"]
        .iter()
        .filter_map(|t| threads.get(*t))
        .flatten()
        .map(|t| t.to_string())
        .collect();
    let mut out = Vec::new();
    let mut spawn = |args: Vec<String>| {
        if let Ok(c) = Command::new("perf")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            out.push(c);
        }
    };
    let file = |suffix: &str| {
        dir.join(format!("{name}{suffix}.data"))
            .display()
            .to_string()
    };
    spawn(vec![
        "record".into(),
        "-F".into(),
        "999".into(),
        "-p".into(),
        pid.to_string(),
        "-o".into(),
        file("-broker"),
    ]);
    // The application brokers (rank 0 of each), to compare their cost per
    // job with and without pancake.
    if !apps.is_empty() {
        spawn(vec![
            "record".into(),
            "-g".into(),
            "-F".into(),
            "999".into(),
            "-p".into(),
            apps.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(","),
            "-o".into(),
            file("-apps"),
        ]);
    }
    if !tids.is_empty() {
        spawn(vec![
            "record".into(),
            "--call-graph".into(),
            "dwarf,16384".into(),
            "-F".into(),
            "999".into(),
            "-t".into(),
            tids.join(","),
            "-o".into(),
            file("-module"),
        ]);
    }
    out
}

pub(crate) fn stop_perf(children: Vec<Child>) {
    for mut c in children {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = c.wait();
    }
}
