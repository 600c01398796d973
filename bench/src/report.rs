//! The markdown report: throughput, latency, CPU and memory per mode, and
//! the targets of issues #6 and #10 against this run's numbers.

use std::fmt::Write as _;

use crate::backlog;
use crate::memory::Memory;
use crate::opts::Opts;
use crate::runs::Measure;
use crate::stats::{self, p50_p99_ms};
use crate::text::{fmt_ms, short};

/// The markdown report: throughput, latency and CPU per mode, ratios against
/// direct from the same run, the targets, memory.
pub(crate) fn report(opts: &Opts, results: &[Measure], mem: Option<&Memory>) -> String {
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

/// The targets against this run's numbers.
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
pub(crate) fn backlog_targets(results: &[backlog::Backlog]) -> String {
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
