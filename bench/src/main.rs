//! `pancake-bench`: direct, pancake and pancake + gRPC side by side, on the
//! simulated pod, in one run.
//!
//! ```text
//! cargo run --release -p pancake-bench -- [--jobs 1000] [--serial 50] [--waiting 10000]
//!     [--backlog 1000,10000] [--backlog-small 30]
//!     [--modes direct,pancake,grpc] [--exec real,test] [--direct-containers 1]
//!     [--csv FILE] [--perf DIR]
//! ```
//!
//! For each execution kind (`real`: `true` runs under a job shell; `test`:
//! Flux's test exec, no shell) and each mode, a fresh pod (a queue broker and
//! three application brokers, 4 nodes × 10 cores each) runs `--jobs` one-core
//! jobs as fast as it can, then `--serial` jobs one at a time; then one more
//! pod holds `--waiting` jobs to weigh the module's memory, and, for each
//! pancake mode, one more runs the backlog scenario (`backlog.rs`). See
//! `bench/README.md` for what each number means.

mod backlog;
mod client;
mod procstat;
mod stats;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::rc::Rc;
use std::time::{Duration, Instant};

use client::{Client, Feed, RunResult, RunSpec};
use fluxion::Rv1;
use pancake_pod::{Broker, FluxionServer, Pod, PodSpec, flux_version, skip_reason};
use procstat::{Probe, Snapshot};
use serde_json::Value;
use stats::p50_p99_ms;

/// How a job gets to an application broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Straight to the application broker with an R the bench chose.
    Direct,
    /// Through the queue broker and pancake's embedded matcher.
    Pancake,
    /// The same with `pancake-fluxion` over loopback gRPC.
    Grpc,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Pancake => "pancake",
            Mode::Grpc => "pancake+grpc",
        }
    }
}

/// How a job runs on its application broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exec {
    /// `true` under a real job shell.
    Real,
    /// Flux's test exec (`run_duration=0`), put there by `bench-testexec`.
    Test,
}

impl Exec {
    fn name(self) -> &'static str {
        match self {
            Exec::Real => "real",
            Exec::Test => "test",
        }
    }
}

#[derive(Debug, Clone)]
struct Opts {
    jobs: usize,
    serial: usize,
    waiting: usize,
    modes: Vec<Mode>,
    execs: Vec<Exec>,
    direct_containers: usize,
    pipeline: usize,
    csv: Option<PathBuf>,
    perf: Option<PathBuf>,
    stall: f64,
    trace: bool,
    plot: Option<PathBuf>,
    /// Backlog sizes for the backlog scenario (empty: skip it).
    backlog: Vec<usize>,
    /// Small jobs per backlog size.
    backlog_small: usize,
}

const USAGE: &str = "usage: pancake-bench [--jobs N] [--serial N] [--waiting N] \
[--modes direct,pancake,grpc] [--exec real,test] [--direct-containers K] \
[--pipeline N] [--stall SECS] [--trace] [--csv FILE] [--plot FILE.png] [--perf DIR] \
[--backlog N,N,...] [--backlog-small N]";

fn parse_opts() -> Result<Opts, String> {
    let mut o = Opts {
        jobs: 1000,
        serial: 50,
        waiting: 10000,
        modes: vec![Mode::Direct, Mode::Pancake, Mode::Grpc],
        execs: vec![Exec::Real, Exec::Test],
        direct_containers: 1,
        pipeline: 64,
        csv: None,
        perf: None,
        stall: 60.0,
        trace: false,
        plot: None,
        backlog: vec![1000, 10000],
        backlog_small: 30,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or(format!("{a} needs a value\n{USAGE}"))
        };
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{a}: {e}"));
        match a.as_str() {
            "--jobs" => o.jobs = num(val()?)?,
            "--serial" => o.serial = num(val()?)?,
            "--waiting" => o.waiting = num(val()?)?,
            "--direct-containers" => o.direct_containers = num(val()?)?.clamp(1, 3),
            "--pipeline" => o.pipeline = num(val()?)?.max(1),
            "--csv" => o.csv = Some(PathBuf::from(val()?)),
            "--stall" => o.stall = num(val()?)? as f64,
            "--trace" => o.trace = true,
            "--plot" => o.plot = Some(PathBuf::from(val()?)),
            "--perf" => o.perf = Some(PathBuf::from(val()?)),
            "--backlog-small" => o.backlog_small = num(val()?)?.max(1),
            "--backlog" => {
                let v = val()?;
                o.backlog = if v == "0" || v.is_empty() {
                    Vec::new()
                } else {
                    v.split(',')
                        .map(|n| num(n.to_string()))
                        .collect::<Result<_, _>>()?
                };
                o.backlog.sort_unstable();
            }
            "--modes" => {
                o.modes = val()?
                    .split(',')
                    .map(|m| match m {
                        "direct" => Ok(Mode::Direct),
                        "pancake" => Ok(Mode::Pancake),
                        "grpc" => Ok(Mode::Grpc),
                        _ => Err(format!("unknown mode {m:?}\n{USAGE}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--exec" => {
                o.execs = val()?
                    .split(',')
                    .map(|m| match m {
                        "real" => Ok(Exec::Real),
                        "test" => Ok(Exec::Test),
                        _ => Err(format!("unknown exec {m:?}\n{USAGE}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "-h" | "--help" => return Err(USAGE.into()),
            _ => return Err(format!("unknown argument {a:?}\n{USAGE}")),
        }
    }
    Ok(o)
}

/// The machine's load averages (`/proc/loadavg`, first three fields).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// One throughput run's (or latency run's) numbers.
#[derive(Debug, Clone, Default)]
struct Measure {
    exec: &'static str,
    mode: &'static str,
    phase: &'static str,
    jobs: usize,
    /// Jobs seen to complete (`clean`) before the run ended.
    completed: usize,
    failed: usize,
    wall: f64,
    submit_secs: f64,
    /// queue (or direct app) submit → application start, seconds.
    start_lat: Vec<f64>,
    /// application finish → queue finish, seconds (pancake only).
    mirror_lat: Vec<f64>,
    /// Pancake: queue submit → application submit (matching and forwarding).
    fwd_lat: Vec<f64>,
    /// application submit → application start.
    app_lat: Vec<f64>,
    cpu: Snapshot,
    load_before: String,
    load_after: String,
    error: Option<String>,
    /// Things noticed on the way (a failed pod shutdown...).
    notes: Vec<String>,
}

impl Measure {
    /// Completed jobs per second, first submit to last completion.
    fn rate(&self) -> f64 {
        self.completed as f64 / self.wall
    }
    /// CPU milliseconds per job of group `k` (own time).
    fn ms(&self, k: &str) -> f64 {
        self.cpu.own(k) * 1e3 / self.jobs.max(1) as f64
    }
    /// Own CPU of every broker process (queue and applications), ms per job.
    fn brokers_ms(&self) -> f64 {
        self.ms("queue") + self.apps_ms()
    }
    fn apps_ms(&self) -> f64 {
        self.cpu
            .groups
            .iter()
            .filter(|(k, _)| k.starts_with("app:"))
            .map(|(_, v)| v.0)
            .sum::<f64>()
            * 1e3
            / self.jobs.max(1) as f64
    }
    /// Reaped children (job shells and tasks), ms per job.
    fn shells_ms(&self) -> f64 {
        self.cpu.groups.values().map(|v| v.1).sum::<f64>() * 1e3 / self.jobs.max(1) as f64
            - self.cpu.children("bench") * 1e3 / self.jobs.max(1) as f64
    }
}

/// The memory figure (see `memory`).
#[derive(Debug, Clone, Default)]
struct Memory {
    waiting: usize,
    /// Queue broker VmRSS, KiB: plugin loaded, module removed, one job
    /// holding every core.
    rss_idle: u64,
    /// After `waiting` container jobs, still without the module (they wait
    /// in SCHED, offered to nobody).
    rss_jobs: u64,
    /// After loading the module, which was offered every one of them.
    rss_module: u64,
    /// The module's own live heap (`heap_bytes`), bytes: loaded with no
    /// job, and after taking up the held jobs.
    heap_base: u64,
    heap_jobs: u64,
    tracked: usize,
    jobspec_bytes: usize,
    load: String,
    error: Option<String>,
}

impl Memory {
    /// KiB per waiting container job for the broker without the module
    /// (job-manager, KVS, content cache, queue plugin).
    fn broker_per_job(&self) -> f64 {
        (self.rss_jobs as f64 - self.rss_idle as f64) / self.waiting as f64
    }
    /// KiB per waiting job that loading the module added (its base size
    /// included, so an upper bound).
    fn module_rss_per_job(&self) -> f64 {
        (self.rss_module as f64 - self.rss_jobs as f64) / self.waiting as f64
    }
    /// KiB of the module's own heap per waiting job (its base size taken
    /// out): what the dispatcher and the module keep for each.
    fn module_per_job(&self) -> f64 {
        (self.heap_jobs as f64 - self.heap_base as f64) / 1024.0 / self.waiting as f64
    }
}

fn main() {
    let opts = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Some(reason) = skip_reason() {
        eprintln!("pancake-bench needs flux-core: {reason}");
        std::process::exit(1);
    }
    eprintln!(
        "pancake-bench: flux-core {}, {} jobs, {} serial, {} waiting; load {}",
        flux_version(),
        opts.jobs,
        opts.serial,
        opts.waiting,
        loadavg()
    );
    let mut results: Vec<Measure> = Vec::new();
    // `--jobs 0 --serial 0`: the memory figure alone.
    let runs = if opts.jobs + opts.serial > 0 {
        opts.execs.clone()
    } else {
        Vec::new()
    };
    for &exec in &runs {
        for &mode in &opts.modes {
            eprintln!("== {} exec, {} ==", exec.name(), mode.name());
            match measure(&opts, exec, mode) {
                Ok(mut m) => results.append(&mut m),
                Err(e) => {
                    eprintln!("   failed: {e}");
                    results.push(Measure {
                        exec: exec.name(),
                        mode: mode.name(),
                        phase: "throughput",
                        error: Some(e),
                        ..Measure::default()
                    });
                }
            }
        }
    }
    let memory = if opts.waiting > 0 {
        eprintln!("== memory: {} waiting jobs ==", opts.waiting);
        Some(memory(&opts).unwrap_or_else(|e| Memory {
            waiting: opts.waiting,
            error: Some(e),
            ..Memory::default()
        }))
    } else {
        None
    };
    let mut backlogs = Vec::new();
    if !opts.backlog.is_empty() {
        for &mode in opts.modes.iter().filter(|m| **m != Mode::Direct) {
            eprintln!("== backlog, {} ==", mode.name());
            match backlog::run(&opts, mode) {
                Ok(mut b) => backlogs.append(&mut b),
                Err(e) => {
                    eprintln!("   failed: {e}");
                    backlogs.push(backlog::Backlog {
                        mode: mode.name(),
                        error: Some(e),
                        ..backlog::Backlog::default()
                    });
                }
            }
        }
    }
    let mut report = report(&opts, &results, memory.as_ref());
    if !backlogs.is_empty() {
        report.push_str(&backlog::report(&backlogs));
        report.push_str(&backlog_targets(&backlogs));
    }
    println!("{report}");
    if let Some(path) = &opts.csv {
        let csv = csv(&results, memory.as_ref());
        if let Err(e) = std::fs::write(path, csv) {
            eprintln!("writing {}: {e}", path.display());
            std::process::exit(1);
        }
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &opts.plot {
        match plot(&results, path) {
            Ok(()) => eprintln!("wrote {}", path.display()),
            Err(e) => eprintln!("no plot: {e}"),
        }
    }
}

/// A PNG with gnuplot (when installed): jobs/s per mode, and submit→start
/// p50 with one job in flight, per execution kind.
fn plot(results: &[Measure], path: &std::path::Path) -> Result<(), String> {
    let mut tput = String::new();
    let mut lat = String::new();
    for m in results.iter().filter(|m| m.completed > 0) {
        let label = format!("\"{} {}\"", m.exec, m.mode);
        match m.phase {
            "throughput" => {
                let _ = writeln!(tput, "{label} {:.2}", m.rate());
            }
            "one-at-a-time" => {
                let _ = writeln!(
                    lat,
                    "{label} {:.2}",
                    stats::quantile(&m.start_lat, 0.5) * 1e3
                );
            }
            _ => {}
        }
    }
    let script = format!(
        "set terminal png size 1200,500\nset output '{}'\nset multiplot layout 1,2 title 'pancake-bench (same run)'\n\
         set style data histograms\nset style fill solid 0.6\nset boxwidth 0.8\nset yrange [0:*]\nset xtics rotate by -30\nset grid ytics\n\
         $tput << EOD\n{tput}EOD\n$lat << EOD\n{lat}EOD\n\
         set title 'throughput (jobs/s)'\nplot $tput using 2:xtic(1) notitle\n\
         set title 'submit to application start, one job in flight, p50 (ms)'\nplot $lat using 2:xtic(1) notitle\nunset multiplot\n",
        path.display()
    );
    let file = std::env::temp_dir().join(format!("pancake-bench-{}.gp", std::process::id()));
    std::fs::write(&file, script).map_err(|e| e.to_string())?;
    let out = Command::new("gnuplot")
        .arg(&file)
        .output()
        .map_err(|e| format!("gnuplot: {e} (apt-get install gnuplot-nox)"))?;
    let _ = std::fs::remove_file(&file);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("gnuplot: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// The pancake module's load arguments for `mode`.
fn load_pancake(pod: &Pod, fluxion: Option<&str>) -> Result<(), String> {
    load_pancake_with(pod, fluxion, &[])
}

/// [`load_pancake`] with more module options.
fn load_pancake_with(pod: &Pod, fluxion: Option<&str>, more: &[&str]) -> Result<(), String> {
    let (module, plugin) = pod.install_pancake()?;
    let q = &pod.queue;
    q.run(&["jobtap", "load", &plugin.to_string_lossy(), "role=queue"])?;
    let view = format!("view={}", pod.root().display());
    let plugin_arg = format!("plugin={}", plugin.display());
    let module = module.to_string_lossy().into_owned();
    let mut args = vec!["module", "load", &module, &view, &plugin_arg];
    let fx;
    if let Some(uri) = fluxion {
        fx = format!("fluxion={uri}");
        args.push(&fx);
    }
    args.extend_from_slice(more);
    q.run(&args).map(|_| ())
}

/// Wait until pancake reports every container connected and Fluxion ready.
fn wait_connected(c: &Client, apps: usize) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st: Value = status(c);
        let up = st["containers"]
            .as_array()
            .map(|a| a.iter().filter(|c| c["state"] == "connected").count())
            .unwrap_or(0);
        if up == apps && st["fluxion"]["ready"] == true {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("pancake not ready after 60 s: {st}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `bench-testexec` plugin built next to this binary.
fn testexec_plugin() -> Result<PathBuf, String> {
    let p = pancake_pod::lib_dir().join("libpancake_bench_testexec.so");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} is missing: cargo build --release -p pancake-bench-testexec (make bench does)",
            p.display()
        ))
    }
}

/// A jobspec for `true` as `flux submit` makes it (environment included),
/// with `extra` options.
fn dry_run(pod: &Pod, extra: &[&str]) -> Result<String, String> {
    let mut args = vec!["submit", "--dry-run", "-n1"];
    args.extend_from_slice(extra);
    args.push("true");
    let js = pod.queue.run(&args)?;
    // Normalise (one line, no trailing newline).
    let v: Value = serde_json::from_str(&js).map_err(|e| format!("dry-run jobspec: {e}"))?;
    Ok(v.to_string())
}

/// The R of slot `s`: one core of one node, as an alloc-bypass R.
fn slot_r(spec: &PodSpec, s: usize) -> Result<Rv1, String> {
    let rank = s as u32 / spec.cores;
    let core = s as u32 % spec.cores;
    let text = serde_json::json!({
        "version": 1,
        "execution": {
            "R_lite": [{ "rank": rank.to_string(), "children": { "core": core.to_string() } }],
            "starttime": 0.0,
            "expiration": 0.0,
            "nodelist": [format!("{}-{rank}", spec.hostname)],
        }
    })
    .to_string();
    Rv1::parse(&text).map_err(|e| e.to_string())
}

/// Start `perf record` into `dir/<name>.data` (stopped with SIGINT later):
/// the whole queue broker without call graphs (where its time goes, thread
/// by thread), and the module's own threads with DWARF call graphs (Rust
/// code has no frame pointers, so `-g` alone loses the callers).
fn start_perf(pid: i32, apps: &[i32], dir: &std::path::Path, name: &str) -> Vec<Child> {
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

fn stop_perf(children: Vec<Child>) {
    for mut c in children {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = c.wait();
    }
}

/// One pod, one execution kind, one mode: the throughput run, then the
/// one-job-at-a-time run.
fn measure(opts: &Opts, exec: Exec, mode: Mode) -> Result<Vec<Measure>, String> {
    let spec = PodSpec::default();
    let pod = Pod::start(spec.clone())?;
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::create_dir_all(scratch.path().join("var/log")).map_err(|e| e.to_string())?;
    let server = if mode == Mode::Grpc {
        Some(FluxionServer::start(scratch.path())?)
    } else {
        None
    };
    let pancake = mode != Mode::Direct;
    if pancake {
        load_pancake(&pod, server.as_ref().map(|s| s.uri.as_str()))?;
    }
    let mut brokers = vec![("queue".to_string(), pod.queue.uri.clone())];
    brokers.extend(pod.apps.iter().map(|b| (b.name.clone(), b.uri.clone())));
    let c = Client::connect(&brokers)?;
    if pancake {
        wait_connected(&c, pod.apps.len())?;
    }
    if exec == Exec::Test {
        let p = testexec_plugin()?;
        for b in &pod.apps {
            b.run(&["jobtap", "load", &p.to_string_lossy()])?;
        }
    }
    let targets: Vec<usize> = pod
        .apps
        .iter()
        .take(opts.direct_containers)
        .map(|b| c.conn(&b.name).unwrap_or(1))
        .collect();
    if mode == Mode::Direct {
        for &t in &targets {
            pod.app(c.name(t))
                .run(&["jobtap", "load", "alloc-bypass.so"])?;
        }
    }
    let feed = if pancake {
        let jobspecs = pod
            .apps
            .iter()
            .map(|b| dry_run(&pod, &[&format!("--setattr=container={}", b.name)]))
            .collect::<Result<Vec<_>, _>>()?;
        Feed::Queue { jobspecs }
    } else {
        // What pancake would send (`app_jobspec`), with the slot's R.
        let base: Value = serde_json::from_str(&dry_run(&pod, &[])?).map_err(|e| e.to_string())?;
        let slots = (spec.nodes * spec.cores) as usize;
        let made = (0..slots)
            .map(|s| {
                slot_r(&spec, s)
                    .map(|r| pancake_core::dispatch::app_jobspec(&base, &r, 0, 0).to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Feed::Direct {
            targets: targets.clone(),
            slots,
            jobspec: Rc::new(move |s| made[s].clone()),
        }
    };
    c.follow_journals()?;

    // What to sample: every broker of every instance, the module's threads,
    // and the gRPC server.
    let mut probe = Probe::default();
    let qpid = pod.queue.broker_pid()?;
    probe
        .procs
        .insert("queue".into(), procstat::instance_brokers(qpid));
    for b in &pod.apps {
        probe.procs.insert(
            format!("app:{}", b.name),
            procstat::instance_brokers(b.broker_pid()?),
        );
    }
    if pancake {
        probe
            .threads
            .insert("module".into(), (qpid, "pancake".into()));
        probe
            .threads
            .insert("worker".into(), (qpid, "pancake-worker".into()));
    }
    if server.is_some() {
        let port_file = scratch.path().to_string_lossy().into_owned();
        probe.procs.insert(
            "fluxion".into(),
            procstat::pids_with_cmdline(&port_file)
                .into_iter()
                .filter(|&p| p != std::process::id() as i32)
                .collect(),
        );
    }
    if pancake && !procstat::threads(qpid).contains_key("pancake") {
        eprintln!(
            "   note: no thread named \"pancake\" in the queue broker; threads: {:?}",
            procstat::threads(qpid).keys().collect::<Vec<_>>()
        );
    }

    let mut out = Vec::new();
    let perf = match &opts.perf {
        Some(dir) => {
            let apps: Vec<i32> = pod
                .apps
                .iter()
                .filter_map(|b| b.broker_pid().ok())
                .collect();
            start_perf(
                qpid,
                &apps,
                dir,
                &format!("perf-{}-{}", exec.name(), mode.name().replace('+', "-")),
            )
        }
        None => Vec::new(),
    };
    let run = |jobs: usize, in_flight: usize, phase: &'static str| -> Measure {
        let load_before = loadavg();
        let before = probe.sample();
        let r = c.run(&RunSpec {
            jobs,
            feed: feed.clone(),
            max_in_flight: in_flight,
            pipeline: opts.pipeline,
            urgency: 16,
            stall_timeout: opts.stall,
            done_on_submit: false,
        });
        let after = probe.sample();
        if r.error.is_some() {
            eprintln!("{}", stuck_report(&pod, &c, &r, pancake));
        }
        if opts.trace
            && phase == "one-at-a-time"
            && let Some(last) = r.jobs.last()
        {
            eprintln!("{}", trace(&pod, &c, last, pancake));
        }
        let mut m = analyse(&c, &r, pancake);
        m.exec = exec.name();
        m.mode = mode.name();
        m.phase = phase;
        m.cpu = after.since(&before);
        m.load_before = load_before;
        m.load_after = loadavg();
        m
    };
    if opts.jobs > 0 {
        let m = run(opts.jobs, usize::MAX, "throughput");
        eprintln!(
            "   throughput: {} of {} jobs completed in {:.2} s = {:.1} jobs/s ({} failed){}",
            m.completed,
            m.jobs,
            m.wall,
            m.rate(),
            m.failed,
            m.error
                .as_ref()
                .map(|e| format!(" ERROR {e}"))
                .unwrap_or_default()
        );
        out.push(m);
    }
    stop_perf(perf);
    if opts.serial > 0 {
        let m = run(opts.serial, 1, "one-at-a-time");
        eprintln!(
            "   one at a time: submit→start p50 {:.1} ms ({} jobs)",
            stats::quantile(&m.start_lat, 0.5) * 1e3,
            m.jobs
        );
        out.push(m);
    }
    if pancake {
        // Sanity: every allocation freed, nothing left tracked.
        let st: Value = status(&c);
        eprintln!("   pancake stats: {}", st["stats"]);
    }
    drop(c);
    drop(server);
    // A failed shutdown (a broker that exited non-zero, a survivor) is a
    // finding, not a reason to throw the numbers away.
    if let Err(e) = pod.shutdown() {
        let first = e.lines().next().unwrap_or("").to_string();
        eprintln!("   pod shutdown failed: {e}");
        for m in &mut out {
            m.notes.push(format!("pod shutdown failed: {first}"));
        }
    }
    Ok(out)
}

/// The broker a job of the run was submitted to.
fn broker_of<'a>(pod: &'a Pod, c: &Client, j: &client::Job) -> &'a Broker {
    if j.conn == 0 {
        &pod.queue
    } else {
        pod.app(c.name(j.conn))
    }
}

/// The eventlogs of one job, queue side and application side.
fn trace(pod: &Pod, c: &Client, j: &client::Job, pancake: bool) -> String {
    let mut s = String::new();
    let b = broker_of(pod, c, j);
    let id = j.id.to_string();
    let _ = writeln!(
        s,
        "   trace: {} job {}:\n{}",
        b.name,
        flux::job::id_f58(j.id),
        b.run(&["job", "eventlog", &id]).unwrap_or_else(|e| e)
    );
    if pancake {
        let seen = c.seen.borrow();
        for (conn, jobs) in seen.iter().enumerate().skip(1) {
            for (app_id, a) in jobs {
                if a.queue_id == Some(j.id) {
                    let _ = writeln!(
                        s,
                        "   its {} job:\n{}",
                        c.name(conn),
                        pod.app(c.name(conn))
                            .run(&["job", "eventlog", &app_id.to_string()])
                            .unwrap_or_else(|e| e)
                    );
                }
            }
        }
    }
    s
}

/// What the brokers know of the first few jobs that never completed.
fn stuck_report(pod: &Pod, c: &Client, r: &RunResult, pancake: bool) -> String {
    let mut s = String::new();
    let seen = c.seen.borrow();
    let status: Value = if pancake { status(c) } else { Value::Null };
    for j in r.jobs.iter().filter(|j| j.done.is_none()).take(3) {
        let b = broker_of(pod, c, j);
        let id = j.id.to_string();
        let _ = writeln!(
            s,
            "   stuck: {} job {} (submitted {:.3}):\n{}",
            b.name,
            flux::job::id_f58(j.id),
            j.sent,
            b.run(&["job", "eventlog", &id]).unwrap_or_else(|e| e)
        );
        let exec = b
            .run(&["job", "eventlog", "-p", "guest.exec.eventlog", &id])
            .unwrap_or_else(|e| e);
        // Flux prints `ƒ` or `f` before an F58 id depending on the locale.
        let f58 = flux::job::encode(j.id, "f58plain").unwrap_or_default();
        let f58 = f58.get(1..).unwrap_or_default().to_string();
        let log = pod.queue.run(&["dmesg"]).unwrap_or_default();
        let mentions: Vec<&str> = log.lines().filter(|l| l.contains(&f58)).collect();
        let _ = writeln!(
            s,
            "   its exec eventlog:\n{exec}\n   dmesg lines naming it:\n{}",
            mentions.join("\n")
        );
        if pancake {
            let entry = status["jobs"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["id"].as_u64() == Some(j.id)))
                .cloned()
                .unwrap_or(Value::Null);
            let _ = writeln!(s, "   pancake.status: {entry}");
            for (conn, jobs) in seen.iter().enumerate().skip(1) {
                for (app_id, a) in jobs {
                    if a.queue_id == Some(j.id) {
                        let _ = writeln!(
                            s,
                            "   its {} job {}:\n{}",
                            c.name(conn),
                            flux::job::id_f58(*app_id),
                            pod.app(c.name(conn))
                                .run(&["job", "eventlog", &app_id.to_string()])
                                .unwrap_or_else(|e| e)
                        );
                    }
                }
            }
        }
    }
    if pancake {
        let log = pod.queue.run(&["dmesg"]).unwrap_or_default();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                [
                    ".err[",
                    ".crit[",
                    ".warning[",
                    ".alert[",
                    ".emerg[",
                    "panic",
                ]
                .iter()
                .any(|k| l.contains(k))
            })
            .collect();
        let panics: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("panic"))
            .take(10)
            .collect();
        let _ = writeln!(
            s,
            "   queue broker warnings and errors in dmesg (last 20):\n{}\n   panics (first 10):\n{}",
            lines[lines.len().saturating_sub(20)..].join("\n"),
            panics.join("\n")
        );
    }
    s
}

/// Turn a run and the journals into latencies and counts.
fn analyse(c: &Client, r: &RunResult, pancake: bool) -> Measure {
    let seen = c.seen.borrow();
    // Pancake: queue id → (application connection, application job).
    let mut by_queue: HashMap<u64, (usize, u64)> = HashMap::new();
    if pancake {
        for (conn, jobs) in seen.iter().enumerate().skip(1) {
            for (&app_id, s) in jobs {
                if let Some(q) = s.queue_id {
                    by_queue.insert(q, (conn, app_id));
                }
            }
        }
    }
    let mut m = Measure {
        jobs: r.jobs.len(),
        completed: r.jobs.iter().filter(|j| j.done.is_some()).count(),
        wall: r.last_done - r.first_sent,
        submit_secs: r.last_answered - r.first_sent,
        error: r.error.clone(),
        ..Measure::default()
    };
    for j in &r.jobs {
        // Jobs that never completed are counted apart (`completed`).
        let Some(own) = seen[j.conn].get(&j.id).filter(|_| j.done.is_some()) else {
            continue;
        };
        let app = if pancake {
            by_queue.get(&j.id).and_then(|&(a, id)| seen[a].get(&id))
        } else {
            Some(own)
        };
        let ok = own.status == Some(0) && own.exception.is_none();
        if !ok {
            m.failed += 1;
        }
        if let (Some(t0), Some(app)) = (own.submit, app) {
            if let Some(t1) = app.start {
                m.start_lat.push(t1 - t0);
            }
            if let Some(a0) = app.submit {
                m.fwd_lat.push(a0 - t0);
                if let Some(t1) = app.start {
                    m.app_lat.push(t1 - a0);
                }
            }
            if pancake && let (Some(f0), Some(f1)) = (app.finish, own.finish) {
                m.mirror_lat.push(f1 - f0);
            }
        }
    }
    m
}

fn status(c: &Client) -> Value {
    c.rpc(0, "pancake.status", "{}")
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        .unwrap_or(Value::Null)
}

/// The module's own live heap, bytes (read before the answer is built).
fn heap_bytes(c: &Client) -> u64 {
    status(c)["heap_bytes"].as_u64().unwrap_or(0)
}

/// Weigh the module with `--waiting` waiting container jobs.
///
/// No `pancake.status` or `flux module stats` figure gives the module's
/// memory, and unloading it gives nothing back to the kernel (glibc keeps
/// the freed heap), so the queue broker's VmRSS is read around the module's
/// arrival instead: one container job holds every core, the module is
/// removed (the queue broker then has no scheduler), and `--waiting`
/// container jobs are submitted: they wait in SCHED, offered to nobody.
/// Loading the module then takes the running job back from the journal
/// backlog, and the job-manager offers it every waiting job (`sched.alloc`,
/// unlimited mode): the RSS that adds is the module's memory for them (its
/// held requests and dispatcher entries, plus its own base size), and its
/// heap is read from `heap_bytes`.
fn memory(opts: &Opts) -> Result<Memory, String> {
    let pod = Pod::start(PodSpec::default())?;
    load_pancake(&pod, None)?;
    let c = Client::connect(&[("queue".to_string(), pod.queue.uri.clone())])?;
    wait_connected(&c, pod.apps.len())?;
    let qpid = pod.queue.broker_pid()?;
    // Every core held, for as long as the measure takes.
    pod.queue.run(&[
        "submit",
        "--setattr=container=lammps",
        "-N4",
        "--exclusive",
        "sleep",
        "inf",
    ])?;
    let container_js = dry_run(&pod, &["--setattr=container=ior"])?;
    let mut m = Memory {
        waiting: opts.waiting,
        jobspec_bytes: container_js.len(),
        load: loadavg(),
        ..Memory::default()
    };
    m.heap_base = heap_bytes(&c);
    // The plugin keeps the container names the module gave it.
    pod.queue.run(&["module", "remove", "pancake"])?;
    quiesce(qpid, None);
    m.rss_idle = procstat::rss_kib(qpid);
    if let Some(e) = submit_only(&c, opts, opts.waiting, &container_js) {
        return Err(format!("submitting waiting container jobs: {e}"));
    }
    quiesce(qpid, None);
    m.rss_jobs = procstat::rss_kib(qpid);
    // The copies load_pancake installed: copying again would write into a
    // file the broker may still have mapped.
    let module = pod.root().join("lib/pancake.so");
    let plugin = pod.root().join("lib/pancake-bypass.so");
    pod.queue
        .run(&[
            "module",
            "load",
            &module.to_string_lossy(),
            &format!("view={}", pod.root().display()),
            &format!("plugin={}", plugin.display()),
        ])
        .map_err(|e| {
            let log = pod.queue.run(&["dmesg"]).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            format!(
                "{e}\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })?;
    wait_connected(&c, pod.apps.len())?;
    let stats = |c: &Client| -> Value {
        c.rpc(0, "pancake.stats-get", "{}")
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
            .unwrap_or(Value::Null)
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    while stats(&c)["waiting"].as_u64().unwrap_or(0) < opts.waiting as u64 {
        if Instant::now() > deadline {
            return Err(format!("pancake never had {} jobs waiting", opts.waiting));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    quiesce(qpid, Some("pancake"));
    quiesce(qpid, None);
    m.rss_module = procstat::rss_kib(qpid);
    let st = stats(&c);
    m.tracked = st["waiting"].as_u64().unwrap_or(0) as usize;
    m.heap_jobs = st["heap_bytes"].as_u64().unwrap_or(0);
    eprintln!(
        "   RSS {} KiB idle (no scheduler) → {} KiB with {} waiting container jobs → {} KiB after loading pancake ({} waiting in it); module heap {} KiB with one job, {} KiB with them",
        m.rss_idle,
        m.rss_jobs,
        opts.waiting,
        m.rss_module,
        m.tracked,
        m.heap_base / 1024,
        m.heap_jobs / 1024
    );
    let _ = pod.queue.run(&["cancel", "--all"]);
    drop(c);
    if let Err(e) = pod.shutdown() {
        eprintln!("   pod shutdown failed: {e}");
    }
    Ok(m)
}

/// Submit `jobs` copies of `jobspec` to the queue broker as fast as it
/// takes them, waiting for nothing but their submit answers; the error, if
/// the run failed.
fn submit_only(c: &Client, opts: &Opts, jobs: usize, jobspec: &str) -> Option<String> {
    c.run(&RunSpec {
        jobs,
        feed: Feed::Queue {
            jobspecs: vec![jobspec.to_string()],
        },
        max_in_flight: usize::MAX,
        pipeline: opts.pipeline,
        urgency: 16,
        stall_timeout: opts.stall,
        done_on_submit: true,
    })
    .error
}

/// Wait until the queue broker (or its thread `thread`) stops using CPU:
/// two consecutive half-second samples without a tick.
fn quiesce(pid: i32, thread: Option<&str>) {
    let sample = || match thread {
        Some(t) => procstat::threads(pid)
            .get(t)
            .map(|tids| tids.iter().map(|&x| procstat::thread_cpu(pid, x)).sum())
            .unwrap_or(0.0),
        None => procstat::cpu(pid).0,
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last = sample();
    let mut still = 0;
    while still < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let now = sample();
        // The broker's own heartbeat costs a tick now and then.
        if now - last < 0.015 {
            still += 1;
        } else {
            still = 0;
        }
        last = now;
    }
}

/// The first line of `e`, at most 160 characters.
fn short(e: &str) -> String {
    let line = e.lines().next().unwrap_or("");
    line.chars().take(160).collect()
}

fn fmt_ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

/// The markdown report: throughput, latency and CPU per mode, ratios against
/// direct from the same run, the targets, memory.
fn report(opts: &Opts, results: &[Measure], mem: Option<&Memory>) -> String {
    let mut s = String::new();
    let direct = |exec: &str, phase: &str| {
        results
            .iter()
            .find(|m| m.exec == exec && m.phase == phase && m.mode == "direct" && m.jobs > 0)
    };
    let _ = writeln!(
        s,
        "\n## Throughput: {} one-core jobs, 4 nodes × 10 cores, direct to {} container(s), pancake over 3\n",
        opts.jobs, opts.direct_containers
    );
    let _ = writeln!(
        s,
        "| exec | mode | completed / jobs (failed) | wall s | jobs/s | × direct | submit→start p50 / p99 ms | p50 − direct ms | app finish→queue finish p50 / p99 ms | load before → after |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for m in results.iter().filter(|m| m.phase == "throughput") {
        if let Some(e) = &m.error
            && m.jobs == 0
        {
            let _ = writeln!(
                s,
                "| {} | {} | failed: {} | | | | | | | |",
                m.exec,
                m.mode,
                short(e)
            );
            continue;
        }
        let d = direct(m.exec, "throughput");
        let (p50, p99) = p50_p99_ms(&m.start_lat);
        let (f50, f99) = p50_p99_ms(&m.mirror_lat);
        let ratio = d.map(|d| m.rate() / d.rate()).unwrap_or(f64::NAN);
        let added = d
            .map(|d| p50 - p50_p99_ms(&d.start_lat).0)
            .unwrap_or(f64::NAN);
        let _ = writeln!(
            s,
            "| {} | {} | {} / {} ({}) | {:.2} | {:.1} | {:.2} | {} / {} | {} | {} / {} | {} → {} |{}",
            m.exec,
            m.mode,
            m.completed,
            m.jobs,
            m.failed,
            m.wall,
            m.rate(),
            ratio,
            fmt_ms(p50),
            fmt_ms(p99),
            if m.mode == "direct" {
                "-".into()
            } else {
                fmt_ms(added)
            },
            fmt_ms(f50),
            fmt_ms(f99),
            m.load_before,
            m.load_after,
            m.error
                .iter()
                .map(|e| short(e))
                .chain(m.notes.iter().map(|n| short(n)))
                .map(|e| format!(" {e}"))
                .collect::<String>()
        );
    }
    let _ = writeln!(
        s,
        "\n## CPU per job (ms, own time; throughput runs)\n\n| exec | mode | queue brokers | app brokers | all brokers | module thread | worker thread | pancake-fluxion | shells + tasks | bench client | module / all brokers | module / direct's app brokers |"
    );
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for m in results
        .iter()
        .filter(|m| m.phase == "throughput" && m.jobs > 0)
    {
        let d = direct(m.exec, "throughput");
        let module = m.ms("module");
        let pancake = m.mode != "direct";
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {:.2} | {:.2} | {} | {} |",
            m.exec,
            m.mode,
            m.ms("queue"),
            m.apps_ms(),
            m.brokers_ms(),
            if pancake {
                format!("{module:.3}")
            } else {
                "-".into()
            },
            if pancake {
                format!("{:.3}", m.ms("worker"))
            } else {
                "-".into()
            },
            if m.mode == "pancake+grpc" {
                format!("{:.3}", m.ms("fluxion"))
            } else {
                "-".into()
            },
            m.shells_ms(),
            m.ms("bench"),
            if pancake {
                format!("{:.1} %", 100.0 * module / m.brokers_ms())
            } else {
                "-".into()
            },
            match (pancake, d) {
                (true, Some(d)) => format!("{:.1} %", 100.0 * module / d.apps_ms()),
                _ => "-".into(),
            },
        );
    }
    if opts.serial > 0 {
        let _ = writeln!(
            s,
            "\n## One job in flight ({} jobs each)\n\n| exec | mode | submit→start p50 / p99 ms | p50 − direct ms | of which queue submit→app submit p50 ms | app submit→start p50 ms | app finish→queue finish p50 / p99 ms |",
            opts.serial
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|");
        for m in results.iter().filter(|m| m.phase == "one-at-a-time") {
            let d = direct(m.exec, "one-at-a-time");
            let (p50, p99) = p50_p99_ms(&m.start_lat);
            let (f50, f99) = p50_p99_ms(&m.mirror_lat);
            let added = d
                .map(|d| p50 - p50_p99_ms(&d.start_lat).0)
                .unwrap_or(f64::NAN);
            let _ = writeln!(
                s,
                "| {} | {} | {} / {} | {} | {} | {} | {} / {} |{}",
                m.exec,
                m.mode,
                fmt_ms(p50),
                fmt_ms(p99),
                if m.mode == "direct" {
                    "-".into()
                } else {
                    fmt_ms(added)
                },
                if m.mode == "direct" {
                    "-".into()
                } else {
                    fmt_ms(stats::quantile(&m.fwd_lat, 0.5) * 1e3)
                },
                fmt_ms(stats::quantile(&m.app_lat, 0.5) * 1e3),
                fmt_ms(f50),
                fmt_ms(f99),
                m.error
                    .as_ref()
                    .map(|e| format!(" ERROR: {e}"))
                    .unwrap_or_default()
            );
        }
    }
    if let Some(mem) = mem {
        let _ = writeln!(s, "\n## Memory with {} waiting jobs\n", mem.waiting);
        match &mem.error {
            Some(e) => {
                let _ = writeln!(s, "failed: {e}");
            }
            None => {
                let _ = writeln!(
                    s,
                    "queue broker (rank 0) VmRSS: {} KiB with the queue plugin, one job holding every core and no module (no scheduler) → {} KiB with {} waiting container jobs (jobspec {} bytes, environment included) → {} KiB after `flux module load pancake` was offered them ({} waiting in it; load {}).\n\n\
                     * the broker without the module, per waiting container job (job-manager, KVS, content cache, plugin): {:.2} KiB\n\
                     * the broker's VmRSS that loading the module added, per waiting job: {:.2} KiB (the module's base size and what libflux holds for it included)\n\
                     * **the module's own heap, per waiting job: {:.2} KiB** ({} KiB loaded with no job → {} KiB with them; `heap_bytes` in `pancake.status`)",
                    mem.rss_idle,
                    mem.rss_jobs,
                    mem.waiting,
                    mem.jobspec_bytes,
                    mem.rss_module,
                    mem.tracked,
                    mem.load,
                    mem.broker_per_job(),
                    mem.module_rss_per_job(),
                    mem.module_per_job(),
                    mem.heap_base / 1024,
                    mem.heap_jobs / 1024
                );
            }
        }
    }
    s.push_str(&targets(results, mem));
    s
}

/// The issue's targets against this run's numbers.
fn targets(results: &[Measure], mem: Option<&Memory>) -> String {
    let mut s =
        String::from("\n## Targets (issue #6)\n\n| target | measured | met |\n|---|---:|---|\n");
    let find = |exec: &str, mode: &str, phase: &str| {
        results
            .iter()
            .find(|m| m.exec == exec && m.mode == mode && m.phase == phase && m.jobs > 0)
    };
    let mut row = |what: &str, val: Option<f64>, unit: &str, ok: &dyn Fn(f64) -> bool| {
        let _ = match val {
            Some(v) if !v.is_nan() => writeln!(
                s,
                "| {what} | {v:.2}{unit} | {} |",
                if ok(v) { "yes" } else { "no" }
            ),
            _ => writeln!(s, "| {what} | not measured | |"),
        };
    };
    let ratio = |exec: &str| {
        Some(
            find(exec, "pancake", "throughput")?.rate()
                / find(exec, "direct", "throughput")?.rate(),
        )
    };
    row(
        "pancake throughput ≥ 0.75 × direct, real exec",
        ratio("real"),
        "×",
        &|v| v >= 0.75,
    );
    row(
        "pancake throughput / direct, test exec both sides (cap ~0.5)",
        ratio("test"),
        "×",
        &|v| v >= 0.5,
    );
    for exec in ["real", "test"] {
        let added = find(exec, "pancake", "one-at-a-time").and_then(|p| {
            let d = find(exec, "direct", "one-at-a-time")?;
            Some(p50_p99_ms(&p.start_lat).0 - p50_p99_ms(&d.start_lat).0)
        });
        row(
            &format!("added submit→start p50 ≤ 20 ms, one job in flight ({exec} exec)"),
            added,
            " ms",
            &|v| v <= 20.0,
        );
        let mirror = find(exec, "pancake", "one-at-a-time").map(|p| p50_p99_ms(&p.mirror_lat).0);
        row(
            &format!("app finish → queue finish p50 ≤ 10 ms, one job in flight ({exec} exec)"),
            mirror,
            " ms",
            &|v| v <= 10.0,
        );
    }
    let share =
        find("real", "pancake", "throughput").map(|m| 100.0 * m.ms("module") / m.brokers_ms());
    row(
        "module thread ≤ 5 % of broker CPU per job (module / all brokers, real exec)",
        share,
        " %",
        &|v| v <= 5.0,
    );
    let mem_v = mem
        .filter(|m| m.error.is_none())
        .map(Memory::module_per_job);
    row(
        "≤ 2 KiB module memory per waiting job",
        mem_v,
        " KiB",
        &|v| v <= 2.0,
    );
    s
}

/// The backlog targets of issue #10 against this run's numbers.
fn backlog_targets(results: &[backlog::Backlog]) -> String {
    let mut s =
        String::from("\n## Targets (issue #10)\n\n| target | measured | met |\n|---|---:|---|\n");
    for mode in ["pancake", "pancake+grpc"] {
        let Some((b, ratio, calls)) = backlog::worst(results, mode) else {
            continue;
        };
        let _ = writeln!(
            s,
            "| small-job submit→start p50 with {b} waiting ≤ 1.5 × empty queue ({mode}) | {ratio:.2}× | {} |",
            if ratio <= 1.5 { "yes" } else { "no" }
        );
        let _ = writeln!(
            s,
            "| fluxion calls per small job with {b} waiting ≤ 64 ({mode}) | {calls:.1} | {} |",
            if calls <= 64.0 { "yes" } else { "no" }
        );
    }
    s
}

/// Long-format CSV: one metric per line.
fn csv(results: &[Measure], mem: Option<&Memory>) -> String {
    let mut s = String::from("exec,mode,phase,metric,value,unit\n");
    for m in results.iter().filter(|m| m.jobs > 0) {
        let mut put = |metric: &str, v: f64, unit: &str| {
            let _ = writeln!(
                s,
                "{},{},{},{metric},{v:.6},{unit}",
                m.exec, m.mode, m.phase
            );
        };
        let (p50, p99) = p50_p99_ms(&m.start_lat);
        let (f50, f99) = p50_p99_ms(&m.mirror_lat);
        put("jobs", m.jobs as f64, "jobs");
        put("completed", m.completed as f64, "jobs");
        put("failed", m.failed as f64, "jobs");
        put("wall", m.wall, "s");
        put("throughput", m.rate(), "jobs/s");
        put("submit_all", m.submit_secs, "s");
        put("submit_to_start_p50", p50, "ms");
        put("submit_to_start_p99", p99, "ms");
        put("mirror_finish_p50", f50, "ms");
        put("mirror_finish_p99", f99, "ms");
        put(
            "queue_to_app_submit_p50",
            stats::quantile(&m.fwd_lat, 0.5) * 1e3,
            "ms",
        );
        put(
            "app_submit_to_start_p50",
            stats::quantile(&m.app_lat, 0.5) * 1e3,
            "ms",
        );
        put("cpu_queue_brokers", m.ms("queue"), "ms/job");
        put("cpu_app_brokers", m.apps_ms(), "ms/job");
        put("cpu_module_thread", m.ms("module"), "ms/job");
        put("cpu_worker_thread", m.ms("worker"), "ms/job");
        put("cpu_pancake_fluxion", m.ms("fluxion"), "ms/job");
        put("cpu_shells_tasks", m.shells_ms(), "ms/job");
        put("cpu_bench_client", m.ms("bench"), "ms/job");
        for (i, l) in [&m.load_before, &m.load_after].iter().enumerate() {
            if let Some(v) = l.split_whitespace().next().and_then(|v| v.parse().ok()) {
                put(
                    if i == 0 {
                        "load1_before"
                    } else {
                        "load1_after"
                    },
                    v,
                    "",
                );
            }
        }
    }
    if let Some(mem) = mem.filter(|m| m.error.is_none()) {
        let mut put = |metric: &str, v: f64, unit: &str| {
            let _ = writeln!(s, "real,pancake,waiting,{metric},{v:.3},{unit}");
        };
        put("waiting", mem.waiting as f64, "jobs");
        put("tracked", mem.tracked as f64, "jobs");
        put("rss_idle", mem.rss_idle as f64, "KiB");
        put("rss_held_jobs", mem.rss_jobs as f64, "KiB");
        put("rss_module_loaded", mem.rss_module as f64, "KiB");
        put("broker_per_job", mem.broker_per_job(), "KiB");
        put("module_rss_per_job", mem.module_rss_per_job(), "KiB");
        put("module_per_job", mem.module_per_job(), "KiB");
    }
    s
}
