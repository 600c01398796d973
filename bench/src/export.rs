//! The run's numbers as files: long-format CSV (`--csv`) and a gnuplot PNG
//! (`--plot`).

use std::fmt::Write as _;
use std::process::Command;

use crate::memory::Memory;
use crate::runs::Measure;
use crate::stats::{self, p50_p99_ms};

/// A PNG with gnuplot (when installed): jobs/s per mode, and submit→start
/// p50 with one job in flight, per execution kind.
pub(crate) fn plot(results: &[Measure], path: &std::path::Path) -> Result<(), String> {
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

/// Long-format CSV: one metric per line.
pub(crate) fn csv(results: &[Measure], mem: Option<&Memory>) -> String {
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
