//! Differential test: pancake's [`EmbeddedFluxion`] against flux-sched's own
//! matcher, driven through its `resource-query` tool (see `rq/mod.rs`).
//!
//! Random small graphs (1–4 nodes × 1–8 cores × 0–2 GPUs, all nodes alike in
//! half of the cases and each drawn on its own in the other half, built as Rv1
//! and converted with the crate's own `rv1_to_jgf`, exactly what pancake gives
//! Fluxion at `Init`) and random sequences of matches and cancels (the jobspec
//! shapes `flux submit` writes, through `Request::to_jobspec_json`) run
//! through flux-sched under each of its policies that pancake also has. Every
//! allocation flux-sched prints is read back with the crate's
//! `allocation_to_rv1` (so its real JGF output is parsed too). Two comparisons
//! follow, step by step:
//!
//! 1. **Same state.** A *shadow* `EmbeddedFluxion` holds exactly flux-sched's
//!    allocations (each one `restore`d from flux-sched's JGF, which also
//!    proves that flux-sched never handed out a vertex twice or one outside
//!    the graph). Before each restore the shadow is asked the same request on
//!    that same state (and the trial allocation is cancelled again). Both must
//!    give the same verdict (allocated / busy / unsatisfiable) and, when both
//!    allocate, the same number of nodes where the request has a node level,
//!    and the same numbers of cores and GPUs (and nodes, under a `*nodex`
//!    policy) unless whole nodes are given out on a graph of unlike nodes,
//!    where those counts depend on which nodes are picked. Whether a request
//!    fits a given state does not depend on the policy, so this holds under
//!    every policy, placement aside.
//! 2. **Own state.** An independent `EmbeddedFluxion` runs the same sequence
//!    with its own placements. Under the policies where pancake places like
//!    Fluxion (`lonode`, `hinode`, `lonodex`, `hinodex`, and `firstnodex` on
//!    graphs of alike nodes; see below) everything must agree over the whole
//!    sequence: verdicts and cores, GPUs and nodes of every allocation.
//!
//! When `resource-query` is not found (`$RESOURCE_QUERY`, `PATH`,
//! `/usr/local/bin`, `/usr/local/libexec/flux`), the test prints
//! `SKIP differential: resource-query (flux-sched) not found` and passes.
//! `DIFFERENTIAL_CASES`, `DIFFERENTIAL_SEED` change the number of cases and
//! the seed; `DIFFERENTIAL_TRACE=1` prints every step.
//!
//! What flux-sched (v0.54) does that the comparison has to allow for:
//!
//! * Busy versus unsatisfiable: plain `match allocate` reports every failure
//!   the same way ("No matching resources found"); only
//!   `match allocate_with_satisfiability` adds "Unsatisfiable request" when the
//!   request could not fit even the empty graph. This test uses the latter.
//! * Policies (`resource/policies/dfu_match_policy_factory.cpp`): `lonode` and
//!   `hinode` are Fluxion's `low`/`high` id scoring with a node factor
//!   (node id × 10000) that dominates, which is pancake's node order and id
//!   order; the `x` variants add node exclusivity. `locality` and `variation`
//!   exist in flux-sched only.
//! * `low` and `high` have no node factor: candidate slots are ranked by the
//!   ids of their own cores and GPUs across all nodes, so a request of several
//!   slots without a node level spreads (three one-core slots on an empty
//!   3-node graph take core 0 of each node) and later requests see a
//!   different state. pancake's `low`/`high` are its `lonode`/`hinode` (they
//!   pack), so only the same-state comparison applies, without node counts
//!   for slot-only requests.
//! * `first` is `high` + node factor + "stop on the first match", and visits
//!   children in descending order of a per-edge weight (the free amount of
//!   the last pruning-filter type, updated only when an allocation touches the
//!   edge, 0 for an edge never touched) and then of `uniq_id`
//!   (`explore_dynamically`, `upd_by_outedges`). On an empty graph that is the
//!   last node and its highest cores; afterwards it prefers nodes with more
//!   free cores that were touched before, which spreads. pancake's `first` is
//!   graph order, first fit, lowest ids. Same-state comparison only, without
//!   node counts for slot-only requests.
//! * Even so, flux-sched's `first` never missed a fit in these runs: whenever
//!   it said busy, the same state had no room either (its early stop only
//!   changes placement). The same-state comparison therefore holds strictly
//!   under every policy.

mod rq;

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use fluxion::rv1::Totals;
use fluxion::rv1::{RankResources, Rv1};
use fluxion::{
    EmbeddedFluxion, Fluxion, FluxionError, IdSet, Request, allocation_to_rv1, rv1_to_jgf,
};

/// A small deterministic generator (xorshift64*), so failures replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.next() % u64::from(hi - lo + 1)) as u32
    }

    fn chance(&mut self, percent: u32) -> bool {
        self.range(0, 99) < percent
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Allocated(Totals),
    Busy,
    Unsatisfiable,
}

#[derive(Debug, Clone)]
enum Step {
    Match(Request),
    /// Cancel the job of an earlier step (an index into the steps).
    Cancel(usize),
}

/// Every policy both have, in the order cases cycle through them.
const POLICIES: [&str; 8] = [
    "first",
    "lonode",
    "hinode",
    "low",
    "high",
    "lonodex",
    "hinodex",
    "firstnodex",
];

/// Policies under which pancake places like flux-sched (own-state
/// comparison). `firstnodex` only on graphs whose nodes are all alike: it
/// visits nodes in another order, which only shows when they differ.
fn places_like_fluxion(policy: &str, uniform: bool) -> bool {
    matches!(policy, "lonode" | "hinode" | "lonodex" | "hinodex")
        || (policy == "firstnodex" && uniform)
}

/// Policies that allocate every node used whole.
fn node_exclusive_policy(policy: &str) -> bool {
    policy.ends_with("nodex")
}

fn random_request(rng: &mut Rng, nodes: u32, cores: u32, gpus: u32) -> Request {
    // Mostly ask for GPUs only where there are some; sometimes ask anyway.
    let gpu = |rng: &mut Rng| {
        if (gpus > 0 && rng.chance(40)) || rng.chance(5) {
            rng.range(1, 2)
        } else {
            0
        }
    };
    // Mostly sizes that fit a node; sometimes too big.
    let cpn = |rng: &mut Rng| {
        if rng.chance(90) {
            rng.range(1, cores.div_ceil(2).max(1))
        } else {
            rng.range(1, cores + 1)
        }
    };
    let nn = |rng: &mut Rng| {
        if rng.chance(90) {
            rng.range(1, nodes)
        } else {
            nodes + 1
        }
    };
    match rng.range(0, 99) {
        // flux submit -n N -c C [-g G]
        0..=44 => {
            let (c, g) = (cpn(rng), gpu(rng));
            Request::slots(rng.range(1, 4), c, g)
        }
        // flux submit -N N -n T [-c C] [-g G]
        45..=74 => {
            let n = nn(rng);
            let mut r = Request::nodes(n, Some(rng.range(n, 2 * n)), false);
            r.cores_per_slot = cpn(rng);
            r.gpus_per_slot = gpu(rng);
            r
        }
        // flux submit -N N (whole nodes)
        _ => Request::nodes(nn(rng), None, true),
    }
}

fn totals_of(jgf: &str, who: &str) -> Totals {
    allocation_to_rv1(jgf, 0.0, 0.0)
        .and_then(|r| r.totals())
        .unwrap_or_else(|e| panic!("{who} allocation does not convert to Rv1: {e}\n{jgf}"))
}

/// Matches `js` on `fx`: the outcome, and the job id and JGF of an allocation.
fn embedded_match(fx: &mut EmbeddedFluxion, js: &str) -> (Outcome, Option<(i64, String)>) {
    match fx.match_allocate(js, false) {
        Ok(out) => (
            Outcome::Allocated(totals_of(&out.allocation, "pancake")),
            Some((out.jobid, out.allocation)),
        ),
        Err(FluxionError::Busy(_)) => (Outcome::Busy, None),
        Err(FluxionError::Unsatisfiable(_)) => (Outcome::Unsatisfiable, None),
        Err(e) => panic!("pancake answered neither busy nor unsatisfiable: {e}\n{js}"),
    }
}

fn rq_outcome(reply: Option<&rq::Reply>, stderr: &str) -> Outcome {
    let Some(rep) = reply else {
        panic!("resource-query printed no result for a match; stderr:\n{stderr}");
    };
    match rep.verdict {
        rq::Verdict::Allocated => Outcome::Allocated(totals_of(&rep.r, "flux-sched")),
        rq::Verdict::Busy => Outcome::Busy,
        rq::Verdict::Unsatisfiable => Outcome::Unsatisfiable,
        rq::Verdict::Reserved => panic!("resource-query reserved without being asked"),
    }
}

/// `rank:cores/gpus` per node of an allocation, for traces.
fn short_r(jgf: &str) -> String {
    allocation_to_rv1(jgf, 0.0, 0.0)
        .and_then(|r| r.rank_map())
        .map(|m| {
            m.iter()
                .map(|(rank, r)| format!("{rank}:{}/{}", r.cores, r.gpus))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|e| e.to_string())
}

fn describe_req(r: &Request) -> String {
    let slot = format!("{}c{}g", r.cores_per_slot, r.gpus_per_slot);
    match r.nnodes {
        None => format!("-n{} ×{slot}", r.slots),
        Some(n) => format!(
            "-N{n} ×{} ×{slot}{}",
            r.slots,
            if r.node_exclusive { " excl" } else { "" }
        ),
    }
}

struct Case {
    /// (cores, GPUs) of each node; all alike in half of the cases.
    shape: Vec<(u32, u32)>,
    policy: &'static str,
    steps: Vec<Step>,
}

impl Case {
    fn describe(&self) -> String {
        let first = self.shape[0];
        let nodes = if self.uniform() {
            format!(
                "{} nodes × {} cores × {} GPUs",
                self.shape.len(),
                first.0,
                first.1
            )
        } else {
            let each: Vec<String> = self
                .shape
                .iter()
                .map(|(c, g)| format!("{c}c{g}g"))
                .collect();
            format!("nodes [{}]", each.join(" "))
        };
        format!("{nodes}, policy {}", self.policy)
    }

    /// All nodes alike.
    fn uniform(&self) -> bool {
        self.shape.iter().all(|&n| n == self.shape[0])
    }

    /// The Init JGF: an Rv1 of ranks `flux-sample-<rank>` with cores and GPUs
    /// numbered from 0, through the crate's `rv1_to_jgf`.
    fn jgf(&self) -> String {
        let ranks: BTreeMap<u32, RankResources> = self
            .shape
            .iter()
            .enumerate()
            .map(|(r, &(c, g))| {
                (
                    r as u32,
                    RankResources {
                        hostname: Some(format!("flux-sample-{r}")),
                        cores: (0..c).collect::<IdSet>(),
                        gpus: (0..g).collect::<IdSet>(),
                    },
                )
            })
            .collect();
        rv1_to_jgf(&Rv1::from_ranks(&ranks, 0.0, 0.0)).expect("test graph")
    }
}

#[derive(Debug, Default)]
struct Tally {
    allocated: usize,
    busy: usize,
    unsatisfiable: usize,
    own_state_compared: usize,
}

/// Runs `case` through flux-sched and both pancake instances; returns a
/// description of each disagreement.
fn run_case(exe: &Path, case: &Case, tally: &mut Tally) -> Vec<String> {
    let trace = std::env::var_os("DIFFERENTIAL_TRACE").is_some();
    let dir = rq::Scratch::new("differential");
    let jgf = case.jgf();
    let jgf_file = dir.write("graph.json", &jgf);
    let mut cmds = Vec::new();
    let mut rq_jobid_of = vec![0u64; case.steps.len()];
    let mut matches = 0u64;
    for (i, s) in case.steps.iter().enumerate() {
        match s {
            Step::Match(req) => {
                let p: PathBuf = dir.write(&format!("js{i}.json"), &req.to_jobspec_json(&["true"]));
                matches += 1;
                rq_jobid_of[i] = matches;
                cmds.push(rq::Cmd::Match {
                    op: "allocate_with_satisfiability",
                    jobspec: p,
                });
            }
            Step::Cancel(j) => cmds.push(rq::Cmd::Cancel(rq_jobid_of[*j])),
        }
    }
    let opts = rq::Options {
        policy: case.policy,
        match_format: "jgf",
        elapse: false,
        markers: true,
        timeout: Duration::from_secs(60),
    };
    let session = rq::run(exe, &jgf_file, &opts, &cmds)
        .unwrap_or_else(|e| panic!("{}: {e}", case.describe()));

    let init = |fx: &mut EmbeddedFluxion| {
        fx.init(case.policy, &jgf)
            .unwrap_or_else(|e| panic!("pancake init: {e}"));
    };
    // Holds flux-sched's allocations (restored under ids offset by SHADOW).
    const SHADOW: i64 = 1_000_000;
    let mut shadow = EmbeddedFluxion::new();
    init(&mut shadow);
    let mut restored = vec![false; case.steps.len()];
    // Runs the sequence with its own placements.
    let own_state = places_like_fluxion(case.policy, case.uniform());
    let mut own = EmbeddedFluxion::new();
    init(&mut own);
    let mut own_jobid_of: Vec<Option<i64>> = vec![None; case.steps.len()];

    let mut problems = Vec::new();
    for (i, s) in case.steps.iter().enumerate() {
        let req = match s {
            Step::Match(req) => req,
            Step::Cancel(j) => {
                if trace {
                    println!("[{}] step {i}: cancel step {j}", case.describe());
                }
                if std::mem::take(&mut restored[*j]) {
                    shadow.cancel(SHADOW + *j as i64).expect("shadow cancel");
                }
                if let Some(id) = own_jobid_of[*j].take() {
                    own.cancel(id).expect("pancake cancel");
                }
                continue;
            }
        };
        let js = req.to_jobspec_json(&["true"]);
        let rep = session.per_cmd.get(i).and_then(Option::as_ref);
        let theirs = rq_outcome(rep, &session.stderr);
        match theirs {
            Outcome::Allocated(_) => tally.allocated += 1,
            Outcome::Busy => tally.busy += 1,
            Outcome::Unsatisfiable => tally.unsatisfiable += 1,
        }
        let their_r = rep.map(|r| r.r.as_str()).unwrap_or("");
        let mut fail = |what: &str, ours: Outcome| {
            problems.push(format!(
                "{}: step {i} {} ({what})\n  pancake:    {ours:?}\n  flux-sched: {theirs:?} {}",
                case.describe(),
                describe_req(req),
                short_r(their_r)
            ));
        };

        // 1. Same state: the shadow's answer on flux-sched's allocations.
        let (same, trial) = embedded_match(&mut shadow, &js);
        if let Some((id, _)) = &trial {
            shadow.cancel(*id).expect("shadow cancel of a trial");
        }
        // Whole nodes carry all their cores and GPUs, so on a graph of unlike
        // nodes the counts of an exclusive allocation depend on placement.
        let whole_nodes = req.node_exclusive || node_exclusive_policy(case.policy);
        let counts_fixed = case.uniform() || !whole_nodes;
        let agree = match (same, theirs) {
            (Outcome::Allocated(a), Outcome::Allocated(b)) => {
                (req.nnodes.is_none() || a.nodes == b.nodes)
                    && (!counts_fixed || (a.cores == b.cores && a.gpus == b.gpus))
                    && (!(counts_fixed && whole_nodes) || a.nodes == b.nodes)
            }
            (a, b) => a == b,
        };
        if !agree {
            fail("same state", same);
        }
        if matches!(theirs, Outcome::Allocated(_))
            && let Err(e) = shadow.restore(SHADOW + i as i64, their_r)
        {
            fail(
                &format!("flux-sched's allocation does not restore: {e}"),
                same,
            );
        } else if matches!(theirs, Outcome::Allocated(_)) {
            restored[i] = true;
        }

        // 2. Own state.
        let (ours, alloc) = embedded_match(&mut own, &js);
        own_jobid_of[i] = alloc.as_ref().map(|a| a.0);
        if own_state {
            tally.own_state_compared += 1;
            if ours != theirs {
                fail("own state", ours);
            }
        }
        if trace {
            println!(
                "[{}] step {i} {}: flux-sched {theirs:?} {} | pancake same state {same:?} | own state {ours:?} {}",
                case.describe(),
                describe_req(req),
                short_r(their_r),
                alloc.map(|a| short_r(&a.1)).unwrap_or_default()
            );
        }
    }
    problems
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn random_case(rng: &mut Rng, policy: &'static str) -> Case {
    let nodes = rng.range(1, 4);
    let (cores, gpus) = (rng.range(1, 8), rng.range(0, 2));
    let uniform = rng.chance(50);
    let shape: Vec<(u32, u32)> = (0..nodes)
        .map(|_| {
            if uniform {
                (cores, gpus)
            } else {
                (rng.range(1, 8), rng.range(0, 2))
            }
        })
        .collect();
    let nsteps = rng.range(4, 12) as usize;
    let mut steps: Vec<Step> = Vec::with_capacity(nsteps);
    for i in 0..nsteps {
        if i > 0 && rng.chance(25) {
            let matches: Vec<usize> = steps
                .iter()
                .enumerate()
                .filter(|(_, s)| matches!(s, Step::Match(_)))
                .map(|(k, _)| k)
                .collect();
            if !matches.is_empty() {
                let k = matches[rng.range(0, matches.len() as u32 - 1) as usize];
                steps.push(Step::Cancel(k));
                continue;
            }
        }
        steps.push(Step::Match(random_request(rng, nodes, cores, gpus)));
    }
    Case {
        shape,
        policy,
        steps,
    }
}

/// Writes a line to the real standard error, past the test harness's capture
/// (which only takes `print!`/`eprint!`), so it shows in a plain `cargo test`.
fn loud(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[test]
fn embedded_matches_flux_sched() {
    let exe = match rq::find() {
        rq::Found::Yes(p) => p,
        rq::Found::No => {
            loud("SKIP differential: resource-query (flux-sched) not found");
            return;
        }
        rq::Found::Broken(p, why) => {
            // An explicit RESOURCE_QUERY that does not run is a setup error.
            assert!(
                std::env::var_os("RESOURCE_QUERY").is_none(),
                "RESOURCE_QUERY={} does not run: {why}",
                p.display()
            );
            loud(&format!(
                "SKIP differential: resource-query (flux-sched) not found (the one at {} does not run: {why})",
                p.display()
            ));
            return;
        }
    };
    let ncases = env_num("DIFFERENTIAL_CASES", 96);
    let seed = env_num("DIFFERENTIAL_SEED", 0x5eed_f1ec);
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut problems = Vec::new();
    let mut tally = Tally::default();
    for c in 0..ncases {
        let case = random_case(&mut rng, POLICIES[c as usize % POLICIES.len()]);
        problems.extend(run_case(&exe, &case, &mut tally));
    }
    loud(&format!(
        "differential: {ncases} cases against {} (seed {seed:#x}): flux-sched allocated {}, busy {}, unsatisfiable {}; \
         {} of these also compared on pancake's own state",
        exe.display(),
        tally.allocated,
        tally.busy,
        tally.unsatisfiable,
        tally.own_state_compared
    ));
    assert!(
        problems.is_empty(),
        "{} disagreement(s) between pancake and flux-sched:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
