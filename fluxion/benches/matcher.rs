//! Matcher and JGF-load benchmark (plain `fn main`, no harness).
//!
//! `cargo bench -p fluxion --bench matcher` prints a markdown table of
//! matches/s filling graphs one core and one whole node at a time under each
//! policy (through the `Fluxion` trait: jobspec parse, match, JGF output), then
//! the JGF load time and peak RSS for three graph sizes. Each load runs in its
//! own process (this binary with `load N C G`) so peak RSS is per size.

use std::process::Command;
use std::time::Instant;

use fluxion::conformance::sample_rv1;
use fluxion::{EmbeddedFluxion, Fluxion, Request, rv1_to_jgf};

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Child mode: build the JGF text, reset the peak, load it, report.
fn load(nodes: u32, cores: u32, gpus: u32) {
    let text = rv1_to_jgf(&sample_rv1(nodes, cores, gpus)).expect("jgf");
    // Reset VmHWM so the peak covers the load only (the input text stays resident).
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = status_kib("VmRSS:");
    let t0 = Instant::now();
    let mut fx = EmbeddedFluxion::new();
    fx.init("first", &text).expect("init");
    let secs = t0.elapsed().as_secs_f64();
    let peak = status_kib("VmHWM:");
    let vertices = fx.matcher().map(|m| m.graph().jgf().len()).unwrap_or(0);
    // One match to prove the graph is usable.
    let js = Request::slots(1, 1, 0).to_jobspec_json(&["x"]);
    let t1 = Instant::now();
    fx.match_allocate(&js, false).expect("match");
    let first_match_ms = t1.elapsed().as_secs_f64() * 1e3;
    println!(
        "{vertices} {:.1} {secs:.3} {peak} {before} {reset} {first_match_ms:.3}",
        text.len() as f64 / 1048576.0
    );
}

fn fill(nodes: u32, cores: u32, policy: &str, whole_nodes: bool) -> (u64, f64) {
    let text = rv1_to_jgf(&sample_rv1(nodes, cores, 0)).expect("jgf");
    let mut fx = EmbeddedFluxion::new();
    fx.init(policy, &text).expect("init");
    let req = if whole_nodes {
        Request::nodes(1, None, true)
    } else {
        Request::slots(1, 1, 0)
    };
    let js = req.to_jobspec_json(&["x"]);
    let n = if whole_nodes { nodes } else { nodes * cores };
    let t0 = Instant::now();
    for _ in 0..n {
        fx.match_allocate(&js, false).expect("match while filling");
    }
    let secs = t0.elapsed().as_secs_f64();
    assert!(
        fx.match_allocate(&js, false).is_err(),
        "graph should be full"
    );
    (u64::from(n), secs)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "load") {
        let num = |k: usize| args.get(i + k).and_then(|s| s.parse().ok()).unwrap_or(1);
        load(num(1), num(2), num(3));
        return;
    }
    let policies = ["first", "low", "lonode", "high", "hinode"];
    println!("## Matching (through the Fluxion trait: jobspec parse + match + JGF output)\n");
    println!(
        "| graph | policy | one core at a time: matches/s | µs/match | one node at a time: matches/s | µs/match |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for (nodes, cores) in [(4u32, 10u32), (256, 32), (1024, 128)] {
        for p in policies {
            let (n1, s1) = fill(nodes, cores, p, false);
            let (n2, s2) = fill(nodes, cores, p, true);
            println!(
                "| {nodes}×{cores} | {p} | {:.0} | {:.2} | {:.0} | {:.2} |",
                n1 as f64 / s1,
                s1 * 1e6 / n1 as f64,
                n2 as f64 / s2,
                s2 * 1e6 / n2 as f64
            );
        }
    }
    println!("\n## JGF load (Init), one process per size\n");
    println!(
        "| graph | vertices | JGF MiB | load s | peak RSS during load MiB | RSS before load MiB | first match ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let exe = std::env::current_exe().expect("current exe");
    for (nodes, cores, gpus) in [(256u32, 32u32, 0u32), (1024, 128, 0), (16384, 64, 4)] {
        let out = Command::new(&exe)
            .args([
                "load",
                &nodes.to_string(),
                &cores.to_string(),
                &gpus.to_string(),
            ])
            .output()
            .expect("run load child");
        let line = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 7 || !out.status.success() {
            println!(
                "| {nodes}×{cores}×{gpus} | failed: {} |",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            continue;
        }
        let kib = |s: &str| s.parse::<f64>().unwrap_or(0.0) / 1024.0;
        println!(
            "| {nodes} nodes × {cores} cores × {gpus} GPUs | {} | {} | {} | {:.0}{} | {:.0} | {} |",
            f[0],
            f[1],
            f[2],
            kib(f[3]),
            if f[5] == "true" {
                ""
            } else {
                " (peak not reset)"
            },
            kib(f[4]),
            f[6]
        );
    }
}
