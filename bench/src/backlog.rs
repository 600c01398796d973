//! The backlog scenario (issue #10): does scheduling slow down with the
//! backlog?
//!
//! One container job holds 3 of the 4 nodes for an hour; then `B`
//! whole-cluster jobs wait behind it (they can never start before it
//! ends); then small one-core, 30-second jobs, one at a time, each of which
//! can backfill on the free node under `queue-policy=easy`. For each `B`
//! (0 first: the empty-queue baseline, in the same pod) it reports the
//! small jobs' submit→start latency and how many Fluxion calls (and
//! scheduling passes) each one cost, read from the module's counters.

use std::time::{Duration, Instant};

use pancake_pod::{Pod, PodSpec};
use serde_json::Value;

use crate::client::{Client, Feed, RunSpec};
use crate::memory::submit_only;
use crate::opts::{Mode, Opts};
use crate::runs::analyse;
use crate::setup::{dry_run, fluxion_server, load_pancake_with, wait_connected};
use crate::stats;
use crate::text::{fmt_ms, short};

/// One backlog size's numbers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Backlog {
    pub mode: &'static str,
    /// Whole-cluster jobs waiting.
    pub waiting: usize,
    /// Their submit→start latencies, seconds.
    pub start_lat: Vec<f64>,
    /// Fluxion matches per small job.
    pub calls: f64,
    /// Scheduling passes per small job.
    pub passes: f64,
    pub error: Option<String>,
}

/// The module's counters (`flux module stats pancake`: small, whatever the
/// backlog).
fn counters(c: &Client) -> Value {
    c.rpc(0, "pancake.stats-get", "{}")
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        .unwrap_or(Value::Null)
}

fn counter(v: &Value, name: &str) -> u64 {
    v["stats"][name].as_u64().unwrap_or(0)
}

/// Run the scenario in `mode` for every size of `opts.backlog`.
pub(crate) fn run(opts: &Opts, mode: Mode) -> Result<Vec<Backlog>, String> {
    let pod = Pod::start(PodSpec::default())?;
    let (_scratch, server) = fluxion_server(mode)?;
    load_pancake_with(
        &pod,
        server.as_ref().map(|s| s.uri.as_str()),
        &["queue-policy=easy"],
    )?;
    let mut brokers = vec![("queue".to_string(), pod.queue.uri.clone())];
    brokers.extend(pod.apps.iter().map(|b| (b.name.clone(), b.uri.clone())));
    let c = Client::connect(&brokers)?;
    wait_connected(&c, pod.apps.len())?;
    c.follow_journals()?;
    let q = &pod.queue;
    let hog = q
        .run(&[
            "submit",
            "--setattr=container=lammps",
            "-N3",
            "--exclusive",
            "-t",
            "1h",
            "sleep",
            "3600",
        ])?
        .trim()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while q.run(&["jobs", "-no", "{state}", &hog])?.trim() != "RUN" {
        if Instant::now() > deadline {
            return Err("the job holding 3 nodes did not start".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let small = dry_run(&pod, &["--setattr=container=chatterbug", "-t", "30s"])?;
    let big: Value = serde_json::from_str(&q.run(&[
        "submit",
        "--dry-run",
        "--setattr=container=ior",
        "-N4",
        "--exclusive",
        "-t",
        "10m",
        "true",
    ])?)
    .map_err(|e| format!("dry-run jobspec: {e}"))?;
    let big = big.to_string();
    let mut out = Vec::new();
    let mut waiting = 0;
    for &b in std::iter::once(&0).chain(opts.backlog.iter()) {
        let mut m = Backlog {
            mode: mode.name(),
            waiting: b,
            ..Backlog::default()
        };
        if b > waiting {
            eprintln!("   {b} whole-cluster jobs waiting...");
            if let Some(e) = submit_only(&c, opts, b - waiting, &big) {
                m.error = Some(format!("submitting the backlog: {e}"));
                out.push(m);
                break;
            }
            waiting = b;
            // Every one of them offered to pancake and found not to fit.
            let deadline = Instant::now() + Duration::from_secs(600);
            while counters(&c)["waiting"].as_u64().unwrap_or(0) < b as u64 {
                if Instant::now() > deadline {
                    m.error = Some(format!("pancake never had {b} jobs waiting"));
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            if m.error.is_some() {
                out.push(m);
                break;
            }
        }
        let before = counters(&c);
        let r = c.run(&RunSpec {
            jobs: opts.backlog_small,
            feed: Feed::Queue {
                jobspecs: vec![small.clone()],
            },
            max_in_flight: 1,
            pipeline: opts.pipeline,
            urgency: 16,
            stall_timeout: opts.stall,
            done_on_submit: false,
        });
        let after = counters(&c);
        let jobs = opts.backlog_small.max(1) as f64;
        m.calls = (counter(&after, "matches") - counter(&before, "matches")) as f64 / jobs;
        m.passes = (counter(&after, "passes") - counter(&before, "passes")) as f64 / jobs;
        m.start_lat = analyse(&c, &r, true).start_lat;
        m.error = r.error;
        eprintln!(
            "   backlog {b}: small-job submit→start p50 {:.1} ms, {:.1} fluxion calls and {:.1} passes per small job",
            stats::quantile(&m.start_lat, 0.5) * 1e3,
            m.calls,
            m.passes
        );
        out.push(m);
    }
    let _ = q.run(&["cancel", "--all"]);
    drop(c);
    drop(server);
    if let Err(e) = pod.shutdown() {
        eprintln!("   pod shutdown failed: {e}");
    }
    Ok(out)
}

/// The report's section: one row per mode and backlog size, the latency
/// against the empty queue of the same run.
pub(crate) fn report(results: &[Backlog]) -> String {
    use std::fmt::Write as _;
    let mut s = String::from(
        "\n## Backlog: one job holds 3 of 4 nodes, B whole-cluster jobs wait behind it, one-core 30-s jobs backfill one at a time (queue-policy=easy)\n\n\
         | mode | waiting B | small jobs | submit→start p50 / p99 ms | × empty queue | fluxion calls per small job | passes per small job |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for m in results {
        if let Some(e) = &m.error {
            let _ = writeln!(
                s,
                "| {} | {} | failed: {} | | | | |",
                m.mode,
                m.waiting,
                short(e)
            );
            continue;
        }
        let (p50, p99) = stats::p50_p99_ms(&m.start_lat);
        let base = results
            .iter()
            .find(|b| b.mode == m.mode && b.waiting == 0)
            .map(|b| stats::p50_p99_ms(&b.start_lat).0);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} / {} | {:.2} | {:.1} | {:.1} |",
            m.mode,
            m.waiting,
            m.start_lat.len(),
            fmt_ms(p50),
            fmt_ms(p99),
            base.map_or(f64::NAN, |b| p50 / b),
            m.calls,
            m.passes
        );
    }
    s
}

/// The largest backlog of `mode`, against its empty queue: (latency
/// ratio, calls per small job).
pub(crate) fn worst(results: &[Backlog], mode: &str) -> Option<(usize, f64, f64)> {
    let base = results
        .iter()
        .find(|b| b.mode == mode && b.waiting == 0 && b.error.is_none())?;
    let big = results
        .iter()
        .filter(|b| b.mode == mode && b.error.is_none())
        .max_by_key(|b| b.waiting)?;
    let ratio = stats::quantile(&big.start_lat, 0.5) / stats::quantile(&base.start_lat, 0.5);
    Some((big.waiting, ratio, big.calls))
}
