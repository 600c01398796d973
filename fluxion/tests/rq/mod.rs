//! A driver for flux-sched's `resource-query`, shared by the differential
//! test (`tests/differential.rs`) and the matcher bench (`benches/matcher.rs`,
//! through `#[path]`).
//!
//! `resource-query` is flux-sched's command-line front end to Fluxion's
//! traverser: it loads a resource graph (`-L file -f jgf`), then reads
//! commands from standard input (`match allocate_with_satisfiability FILE`,
//! `cancel ID`, `quit`, ...) and prints one result block per match on standard
//! output. It is found at run time, never at build time, so pancake builds and
//! tests without flux-sched.
//!
//! Quirks of the tool (flux-sched v0.54) that this driver works around:
//!
//! * `make install` does not install `resource-query`: it is a build-tree
//!   utility (`build/resource/utilities/resource-query`, no `install()` rule).
//!   Copy it somewhere on `PATH` or point `RESOURCE_QUERY` at it.
//! * At end of input it does not stop: its loop `continue`s on a NULL line from
//!   readline, spinning forever. Every script therefore ends with `quit`, and
//!   the session is killed after a deadline all the same.
//! * Commands print nothing to tie their output to them, and a match whose
//!   jobspec cannot be read or parsed prints no result block at all, so each
//!   command may be followed by `cat @@step-N`: `cat` of a missing file prints
//!   only `INFO: Jobspec in @@step-N`, which serves as a marker.
//! * The job id of the k-th match command (1-based) is k: the counter advances
//!   on every allocate-type match, failed or not.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The result of looking for `resource-query`.
#[derive(Debug)]
pub enum Found {
    /// A binary that ran `--help` successfully.
    Yes(PathBuf),
    /// No candidate exists.
    No,
    /// A candidate exists but does not run (missing libraries, ...).
    Broken(PathBuf, String),
}

/// Where `make install` would put it if it were installed, and where this
/// project's machines put it by hand.
const HINTS: [&str; 3] = [
    "/usr/local/bin/resource-query",
    "/usr/local/libexec/flux/resource-query",
    "/usr/libexec/flux/resource-query",
];

/// Looks for `resource-query`: `$RESOURCE_QUERY`, then `PATH`, then [`HINTS`].
/// Checked at run time.
pub fn find() -> Found {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("RESOURCE_QUERY").filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(p));
    } else {
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path).map(|d| d.join("resource-query")));
        }
        candidates.extend(HINTS.iter().map(PathBuf::from));
    }
    let Some(exe) = candidates.into_iter().find(|p| p.is_file()) else {
        return Found::No;
    };
    match Command::new(&exe)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => Found::Yes(exe),
        Ok(o) => Found::Broken(
            exe,
            format!(
                "--help exited with {}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .next()
                    .unwrap_or("")
            ),
        ),
        Err(e) => Found::Broken(exe, e.to_string()),
    }
}

/// One command of a session.
#[derive(Debug, Clone)]
pub enum Cmd {
    /// `match <op> <file>`; `op` is `allocate`, `allocate_with_satisfiability`, ...
    Match { op: &'static str, jobspec: PathBuf },
    /// `cancel <jobid>`.
    Cancel(u64),
}

/// What resource-query answered to a match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `RESOURCES=ALLOCATED` (scheduled now).
    Allocated,
    /// `RESOURCES=RESERVED` (scheduled in the future).
    Reserved,
    /// `No matching resources found` alone: busy now. Note that plain
    /// `match allocate` never says more than this, even for a request that
    /// can never fit (the traverser sets EBUSY for every failure of
    /// `MATCH_ALLOCATE`); only `allocate_with_satisfiability` (and
    /// `allocate_orelse_reserve`) tell the two apart.
    Busy,
    /// `No matching resources found` and `Unsatisfiable request`.
    Unsatisfiable,
}

/// One result block.
#[derive(Debug, Clone)]
pub struct Reply {
    /// `JOBID=`.
    pub jobid: u64,
    /// The verdict.
    pub verdict: Verdict,
    /// The emitted resource set (the `-F` format), empty on failure.
    pub r: String,
    /// `ELAPSE=` seconds (with `-e`): resource-query's own timing of the match
    /// (jobspec parse, traversal, writer), printed with microsecond resolution.
    pub elapse: Option<f64>,
}

/// The output of a session.
#[derive(Debug, Default)]
pub struct Session {
    /// `INFO: Graph Load Time:` seconds (with `-e`): JGF parse and graph build.
    pub load_time: Option<f64>,
    /// Result blocks per command, when markers were on (`None` for commands
    /// that print no block, such as `cancel` or a match whose jobspec failed).
    pub per_cmd: Vec<Option<Reply>>,
    /// Every result block in order.
    pub replies: Vec<Reply>,
    /// From spawn to the end of standard output.
    pub wall: Duration,
    /// Standard error.
    pub stderr: String,
}

/// Options of one session.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    /// `-P`.
    pub policy: &'a str,
    /// `-F`.
    pub match_format: &'a str,
    /// `-e`.
    pub elapse: bool,
    /// Put a `cat @@step-N` marker after each command.
    pub markers: bool,
    /// Kill the session after this long.
    pub timeout: Duration,
}

fn parse_block(lines: &[&str], r: &str) -> Option<Reply> {
    let mut jobid = None;
    let mut verdict = None;
    let mut unsat = false;
    let mut elapse = None;
    for l in lines {
        let l = l.trim_start_matches("INFO:").trim();
        if let Some(v) = l.strip_prefix("JOBID=") {
            jobid = v.trim().parse().ok();
        } else if let Some(v) = l.strip_prefix("RESOURCES=") {
            verdict = match v.trim() {
                "ALLOCATED" => Some(Verdict::Allocated),
                "RESERVED" => Some(Verdict::Reserved),
                _ => None,
            };
        } else if l == "No matching resources found" {
            verdict = Some(Verdict::Busy);
        } else if l == "Unsatisfiable request" {
            unsat = true;
        } else if let Some(v) = l.strip_prefix("ELAPSE=") {
            elapse = v.trim().parse().ok();
        }
    }
    let mut verdict = verdict?;
    if unsat {
        verdict = Verdict::Unsatisfiable;
    }
    Some(Reply {
        jobid: jobid?,
        verdict,
        r: r.trim().to_string(),
        elapse,
    })
}

/// Parses a session's standard output (see the module docs for its shape).
pub fn parse_output(out: &str, ncmds: usize) -> (Option<f64>, Vec<Option<Reply>>, Vec<Reply>) {
    const RULE: &str = "INFO: =============================";
    let mut load_time = None;
    let mut per_cmd: Vec<Option<Reply>> = vec![None; ncmds];
    let mut replies = Vec::new();
    let mut pending: Option<Reply> = None;
    let mut r = String::new();
    let mut block: Vec<&str> = Vec::new();
    let mut inside = false;
    for line in out.lines() {
        if inside {
            if line == RULE {
                inside = false;
                if let Some(rep) = parse_block(&block, &r) {
                    replies.push(rep.clone());
                    pending = Some(rep);
                }
                block.clear();
                r.clear();
            } else {
                block.push(line);
            }
        } else if line == RULE {
            inside = true;
        } else if let Some(v) = line.strip_prefix("INFO: Graph Load Time:") {
            load_time = v.trim().parse().ok();
        } else if let Some(m) = line.strip_prefix("INFO: Jobspec in @@step-") {
            if let Some(slot) = m
                .trim()
                .parse::<usize>()
                .ok()
                .and_then(|i| per_cmd.get_mut(i))
            {
                *slot = pending.take();
            }
            pending = None;
            r.clear();
        } else if !line.starts_with("INFO:") {
            r.push_str(line);
            r.push('\n');
        }
    }
    (load_time, per_cmd, replies)
}

/// Runs one session on the graph in `jgf_file`, feeding `cmds` then `quit`.
pub fn run(
    exe: &Path,
    jgf_file: &Path,
    opts: &Options<'_>,
    cmds: &[Cmd],
) -> Result<Session, String> {
    let mut script = String::new();
    for (i, c) in cmds.iter().enumerate() {
        match c {
            Cmd::Match { op, jobspec } => {
                script.push_str(&format!("match {op} {}\n", jobspec.display()));
            }
            Cmd::Cancel(id) => script.push_str(&format!("cancel {id}\n")),
        }
        if opts.markers {
            script.push_str(&format!("cat @@step-{i}\n"));
        }
    }
    script.push_str("quit\n");
    let mut args: Vec<String> = vec![
        "-L".into(),
        jgf_file.display().to_string(),
        "-f".into(),
        "jgf".into(),
        "-P".into(),
        opts.policy.into(),
        "-F".into(),
        opts.match_format.into(),
        "-d".into(),
    ];
    if opts.elapse {
        args.push("-e".into());
    }
    let t0 = Instant::now();
    let mut child = Command::new(exe)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning {}: {e}", exe.display()))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    let writer = std::thread::spawn(move || {
        // A session that dies early closes the pipe; the error shows in the output.
        let _ = stdin.write_all(script.as_bytes());
    });
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        (s, Instant::now())
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = t0 + opts.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "resource-query did not finish within {:?} (args {args:?})",
                    opts.timeout
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => return Err(format!("waiting for resource-query: {e}")),
        }
    };
    let _ = writer.join();
    let (out, t_end) = reader.join().map_err(|_| "stdout reader panicked")?;
    let err = err_reader.join().map_err(|_| "stderr reader panicked")?;
    if !status.success() {
        return Err(format!(
            "resource-query exited with {status} (args {args:?}): {}",
            err.trim()
        ));
    }
    let (load_time, per_cmd, replies) = parse_output(&out, cmds.len());
    Ok(Session {
        load_time,
        per_cmd,
        replies,
        wall: t_end.duration_since(t0),
        stderr: err,
    })
}

/// A scratch directory under the system temp dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// Creates `<tmp>/fluxion-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> Scratch {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fluxion-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    /// Writes `text` to `name` inside the directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write scratch file");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
