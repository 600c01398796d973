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
//!
//! The pieces: `opts` (the command line), `setup` (getting a pod ready),
//! `runs` (the throughput and one-at-a-time runs), `memory` (the memory
//! figure), `backlog` (the backlog scenario), `report` (the markdown
//! report), `export` (CSV and plot), with `client` (the bench's Flux
//! connections), `procstat` (`/proc` sampling), `perf`, `diagnose`,
//! `stats` and `text` as helpers.

mod backlog;
mod client;
mod diagnose;
mod export;
mod memory;
mod opts;
mod perf;
mod procstat;
mod report;
mod runs;
mod setup;
mod stats;
mod text;

use export::{csv, plot};
use memory::{Memory, memory};
use opts::{Mode, parse_opts};
use pancake_pod::{flux_version, skip_reason};
use procstat::loadavg;
use report::{backlog_targets, report};
use runs::{Measure, measure};

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
