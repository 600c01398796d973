//! The memory figure: the module weighed with `--waiting` waiting container
//! jobs ([`Memory`]).

use std::time::{Duration, Instant};

use pancake_pod::{Pod, PodSpec};
use serde_json::Value;

use crate::client::{Client, Feed, RunSpec};
use crate::opts::Opts;
use crate::procstat::{self, loadavg};
use crate::setup::{dry_run, load_pancake, status, wait_connected};

/// The memory figure (see `memory`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Memory {
    pub(crate) waiting: usize,
    /// Queue broker VmRSS, KiB: plugin loaded, module removed, one job
    /// holding every core.
    pub(crate) rss_idle: u64,
    /// After `waiting` container jobs, still without the module (they wait
    /// in SCHED, offered to nobody).
    pub(crate) rss_jobs: u64,
    /// After loading the module, which was offered every one of them.
    pub(crate) rss_module: u64,
    /// The module's own live heap (`heap_bytes`), bytes: loaded with no
    /// job, and after taking up the held jobs.
    pub(crate) heap_base: u64,
    pub(crate) heap_jobs: u64,
    pub(crate) tracked: usize,
    pub(crate) jobspec_bytes: usize,
    pub(crate) load: String,
    pub(crate) error: Option<String>,
}

impl Memory {
    /// KiB per waiting container job for the broker without the module
    /// (job-manager, KVS, content cache, queue plugin).
    pub(crate) fn broker_per_job(&self) -> f64 {
        (self.rss_jobs as f64 - self.rss_idle as f64) / self.waiting as f64
    }
    /// KiB per waiting job that loading the module added (its base size
    /// included, so an upper bound).
    pub(crate) fn module_rss_per_job(&self) -> f64 {
        (self.rss_module as f64 - self.rss_jobs as f64) / self.waiting as f64
    }
    /// KiB of the module's own heap per waiting job (its base size taken
    /// out): what the dispatcher and the module keep for each.
    pub(crate) fn module_per_job(&self) -> f64 {
        (self.heap_jobs as f64 - self.heap_base as f64) / 1024.0 / self.waiting as f64
    }
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
pub(crate) fn memory(opts: &Opts) -> Result<Memory, String> {
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
pub(crate) fn submit_only(c: &Client, opts: &Opts, jobs: usize, jobspec: &str) -> Option<String> {
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
