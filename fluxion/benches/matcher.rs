//! Matcher and JGF-load benchmark (plain `fn main`, no harness).
//!
//! `cargo bench -p fluxion --bench matcher` prints a markdown table of
//! matches/s filling graphs one core and one whole node at a time under each
//! policy (through the `Fluxion` trait: jobspec parse, match, JGF output), then
//! the JGF load time and peak RSS for three graph sizes. Each load runs in its
//! own process (this binary with `load N C G`) so peak RSS is per size.
//!
//! When flux-sched's `resource-query` is found at run time (`$RESOURCE_QUERY`,
//! `PATH`, `/usr/local/bin`, `/usr/local/libexec/flux`; see `tests/rq/mod.rs`)
//! and `BENCH_RESOURCE_QUERY` is not `0`, a last table runs the same inputs
//! through it in the same run and prints the ratio resource-query time /
//! pancake time: one-core matches filling 256×32 under `first` and `lonode`,
//! whole-node matches on 256×32 under both, and the JGF load of 256×32 and
//! 1024×128. resource-query is timed two ways: by its own per-match
//! `ELAPSE=` (printed with `-e`: jobspec parse, traversal, JGF writer; the
//! counterpart of pancake's trait call) and from the outside (wall clock of a
//! scripted session of N matches minus that of a load-only session, which adds
//! reading each jobspec file and printing the result). Its load time is its
//! own `Graph Load Time` (JGF parse and graph build, the file already read).

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fluxion::conformance::sample_rv1;
use fluxion::{EmbeddedFluxion, Fluxion, Request, rv1_to_jgf};

#[path = "../tests/rq/mod.rs"]
mod rq;

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
    // (policy, whole nodes) -> seconds per match on 256×32, for the comparison.
    let mut per_match_256: HashMap<(&str, bool), f64> = HashMap::new();
    // (nodes, cores) -> load seconds, for the comparison.
    let mut load_secs: HashMap<(u32, u32), f64> = HashMap::new();
    println!("## Matching (through the Fluxion trait: jobspec parse + match + JGF output)\n");
    println!(
        "| graph | policy | one core at a time: matches/s | µs/match | one node at a time: matches/s | µs/match |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for (nodes, cores) in [(4u32, 10u32), (256, 32), (1024, 128)] {
        for p in policies {
            let (n1, s1) = fill(nodes, cores, p, false);
            let (n2, s2) = fill(nodes, cores, p, true);
            if (nodes, cores) == (256, 32) {
                per_match_256.insert((p, false), s1 / n1 as f64);
                per_match_256.insert((p, true), s2 / n2 as f64);
            }
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
        if gpus == 0
            && let Ok(secs) = f[2].parse::<f64>()
        {
            load_secs.insert((nodes, cores), secs);
        }
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
    against_resource_query(&per_match_256, &load_secs);
}

/// resource-query's time for `n` identical matches on `jgf_file`: (own
/// ELAPSE sum, wall of the session minus the load-only session), both seconds.
fn rq_fill(
    exe: &Path,
    dir: &rq::Scratch,
    jgf_file: &Path,
    policy: &str,
    whole_nodes: bool,
    n: u32,
) -> Result<(f64, f64), String> {
    let req = if whole_nodes {
        Request::nodes(1, None, true)
    } else {
        Request::slots(1, 1, 0)
    };
    let js = dir.write(
        if whole_nodes {
            "node.json"
        } else {
            "core.json"
        },
        &req.to_jobspec_json(&["x"]),
    );
    let opts = rq::Options {
        policy,
        match_format: "jgf",
        elapse: true,
        markers: false,
        timeout: Duration::from_secs(600),
    };
    let load_only = rq::run(exe, jgf_file, &opts, &[])?;
    let cmds = vec![
        rq::Cmd::Match {
            op: "allocate",
            jobspec: js,
        };
        n as usize
    ];
    let s = rq::run(exe, jgf_file, &opts, &cmds)?;
    let allocated = s
        .replies
        .iter()
        .filter(|r| r.verdict == rq::Verdict::Allocated)
        .count();
    if allocated != n as usize {
        return Err(format!(
            "{allocated} of {n} matches allocated; stderr: {}",
            s.stderr.lines().next().unwrap_or("")
        ));
    }
    let own: f64 = s.replies.iter().filter_map(|r| r.elapse).sum();
    let wall = s.wall.saturating_sub(load_only.wall).as_secs_f64();
    Ok((own, wall))
}

/// The comparison table (see the module docs).
fn against_resource_query(
    per_match_256: &HashMap<(&str, bool), f64>,
    load_secs: &HashMap<(u32, u32), f64>,
) {
    if std::env::var("BENCH_RESOURCE_QUERY").is_ok_and(|v| v == "0") {
        println!("\nresource-query comparison skipped (BENCH_RESOURCE_QUERY=0)");
        return;
    }
    let exe = match rq::find() {
        rq::Found::Yes(p) => p,
        rq::Found::No => {
            println!("\nresource-query (flux-sched) not found: no comparison");
            return;
        }
        rq::Found::Broken(p, why) => {
            println!(
                "\nresource-query at {} does not run ({why}): no comparison",
                p.display()
            );
            return;
        }
    };
    let dir = rq::Scratch::new("bench");
    let jgf_256 = dir.write(
        "g256.json",
        &rv1_to_jgf(&sample_rv1(256, 32, 0)).expect("jgf"),
    );
    println!(
        "\n## Against flux-sched's resource-query ({}), same inputs, same run\n",
        exe.display()
    );
    println!(
        "ratio = resource-query time / pancake time; \"own\" is resource-query's per-match ELAPSE, \"wall\" is session minus load-only session\n"
    );
    println!(
        "| workload (256×32, fill) | policy | pancake µs/match | resource-query own µs/match | ratio | resource-query wall µs/match | ratio |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (whole, what, n) in [
        (false, "one core at a time", 256 * 32),
        (true, "one node at a time", 256),
    ] {
        for policy in ["first", "lonode"] {
            let Some(&ours) = per_match_256.get(&(policy, whole)) else {
                continue;
            };
            match rq_fill(&exe, &dir, &jgf_256, policy, whole, n) {
                Ok((own, wall)) => {
                    let (own, wall) = (own / f64::from(n), wall / f64::from(n));
                    println!(
                        "| {what} | {policy} | {:.2} | {:.2} | {:.1}× | {:.2} | {:.1}× |",
                        ours * 1e6,
                        own * 1e6,
                        own / ours,
                        wall * 1e6,
                        wall / ours
                    );
                }
                Err(e) => println!(
                    "| {what} | {policy} | {:.2} | failed: {e} | | | |",
                    ours * 1e6
                ),
            }
        }
    }
    println!(
        "\n| JGF load (Init) | pancake s | resource-query own s | ratio | resource-query load-only session wall s | ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (nodes, cores) in [(256u32, 32u32), (1024, 128)] {
        let Some(&ours) = load_secs.get(&(nodes, cores)) else {
            continue;
        };
        let file = if (nodes, cores) == (256, 32) {
            jgf_256.clone()
        } else {
            dir.write(
                "g-load.json",
                &rv1_to_jgf(&sample_rv1(nodes, cores, 0)).expect("jgf"),
            )
        };
        let opts = rq::Options {
            policy: "first",
            match_format: "jgf",
            elapse: true,
            markers: false,
            timeout: Duration::from_secs(600),
        };
        match rq::run(&exe, &file, &opts, &[]) {
            Ok(s) => {
                let own = s.load_time.unwrap_or(f64::NAN);
                let wall = s.wall.as_secs_f64();
                println!(
                    "| {nodes} nodes × {cores} cores | {ours:.3} | {own:.3} | {:.1}× | {wall:.3} | {:.1}× |",
                    own / ours,
                    wall / ours
                );
            }
            Err(e) => println!("| {nodes} nodes × {cores} cores | {ours:.3} | failed: {e} | | | |"),
        }
    }
}
