//! The timed runs: one pod per execution kind and mode, its throughput run
//! and its one-job-at-a-time run, and their numbers ([`Measure`]).

use std::collections::HashMap;
use std::rc::Rc;

use pancake_pod::{Pod, PodSpec};
use serde_json::Value;

use crate::client::{Client, Feed, RunResult, RunSpec};
use crate::diagnose::{stuck_report, trace};
use crate::opts::{Exec, Mode, Opts};
use crate::perf::{start_perf, stop_perf};
use crate::procstat::{self, Probe, Snapshot, loadavg};
use crate::setup::{
    dry_run, fluxion_server, load_pancake, slot_r, status, testexec_plugin, wait_connected,
};
use crate::stats;

/// One throughput run's (or latency run's) numbers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Measure {
    pub(crate) exec: &'static str,
    pub(crate) mode: &'static str,
    pub(crate) phase: &'static str,
    pub(crate) jobs: usize,
    /// Jobs seen to complete (`clean`) before the run ended.
    pub(crate) completed: usize,
    pub(crate) failed: usize,
    pub(crate) wall: f64,
    pub(crate) submit_secs: f64,
    /// queue (or direct app) submit → application start, seconds.
    pub(crate) start_lat: Vec<f64>,
    /// application finish → queue finish, seconds (pancake only).
    pub(crate) mirror_lat: Vec<f64>,
    /// Pancake: queue submit → application submit (matching and forwarding).
    pub(crate) fwd_lat: Vec<f64>,
    /// application submit → application start.
    pub(crate) app_lat: Vec<f64>,
    pub(crate) cpu: Snapshot,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
    pub(crate) error: Option<String>,
    /// Things noticed on the way (a failed pod shutdown...).
    pub(crate) notes: Vec<String>,
}

impl Measure {
    /// Completed jobs per second, first submit to last completion.
    pub(crate) fn rate(&self) -> f64 {
        self.completed as f64 / self.wall
    }
    /// CPU milliseconds per job of group `k` (own time).
    pub(crate) fn ms(&self, k: &str) -> f64 {
        self.cpu.own(k) * 1e3 / self.jobs.max(1) as f64
    }
    /// Own CPU of every broker process (queue and applications), ms per job.
    pub(crate) fn brokers_ms(&self) -> f64 {
        self.ms("queue") + self.apps_ms()
    }
    pub(crate) fn apps_ms(&self) -> f64 {
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
    pub(crate) fn shells_ms(&self) -> f64 {
        self.cpu.groups.values().map(|v| v.1).sum::<f64>() * 1e3 / self.jobs.max(1) as f64
            - self.cpu.children("bench") * 1e3 / self.jobs.max(1) as f64
    }
}

/// One pod, one execution kind, one mode: the throughput run, then the
/// one-job-at-a-time run.
pub(crate) fn measure(opts: &Opts, exec: Exec, mode: Mode) -> Result<Vec<Measure>, String> {
    let spec = PodSpec::default();
    let pod = Pod::start(spec.clone())?;
    let (scratch, server) = fluxion_server(mode)?;
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

/// Turn a run and the journals into latencies and counts.
pub(crate) fn analyse(c: &Client, r: &RunResult, pancake: bool) -> Measure {
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
