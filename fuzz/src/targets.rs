//! The fuzz targets: what each one generates and what it runs.
//!
//! A target's `run` must never panic on any input; besides "no panic", a
//! few cheap properties that must hold for every accepted input are checked
//! with [`inv!`] (a failed one is reported like a panic, at its line here).
//! `run` returns a short signature of what happened (the error text with
//! numbers and quoted parts blanked): an input with a new signature took a
//! path not seen before and joins the corpus.

use std::collections::{BTreeMap, VecDeque};

use fluxion::jgf::Jgf;
use fluxion::rv1::RankResources;
use fluxion::{
    EmbeddedFluxion, Fluxion, FluxionError, Graph, IdSet, Jobspec, Matcher, Policy, Request, Rv1,
    allocation_to_rv1, hostlist, rv1_to_jgf,
};
use pancake_core::dispatch::{
    Action, AppEvent, Capacity, Dispatcher, Event, Granted, JobId, Prior, QueuePolicy,
};
use pancake_core::{journal, options::Options, role::Role, show};
use serde_json::{Value, json};

use crate::mutate::{self, Dict};
use crate::rng::Rng;
use crate::seeds;

/// A property that must hold: reported as a finding when it does not.
macro_rules! inv {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            panic!("invariant: {}", format!($($fmt)+));
        }
    };
}

/// What generators see: the dictionaries and the corpus (seeds first).
#[derive(Debug)]
pub struct Ctx<'a> {
    pub dict: &'a Dict,
    pub corpus: &'a [Vec<String>],
    pub nseeds: usize,
}

impl Ctx<'_> {
    /// A base input: a seed or a corpus entry, half and half.
    pub fn base(&self, rng: &mut Rng) -> &Vec<String> {
        if self.corpus.len() > self.nseeds && rng.one_in(2) {
            &self.corpus[self.nseeds + rng.below(self.corpus.len() - self.nseeds)]
        } else {
            &self.corpus[rng.below(self.nseeds.max(1).min(self.corpus.len()))]
        }
    }

    /// Part `i` of a few random corpus entries (splice donors).
    pub fn donors(&self, rng: &mut Rng, i: usize) -> Vec<&str> {
        (0..3)
            .filter_map(|_| self.corpus[rng.below(self.corpus.len())].get(i))
            .map(String::as_str)
            .collect()
    }
}

/// How a part of an input is mutated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Json,
    IdSet,
    Hostlist,
}

/// A new value for part `i` of an input, from `base`.
pub fn mutate_part(rng: &mut Rng, ctx: &Ctx, i: usize, base: &str, kind: Kind) -> String {
    let donors = ctx.donors(rng, i);
    match rng.weighted(&[6, 30, 64]) {
        0 => mutate::random_text(rng, ctx.dict),
        1 => mutate::mutate_text(rng, base, ctx.dict, &donors),
        _ => match kind {
            Kind::IdSet => mutate::mutate_idset(rng, base, ctx.dict),
            Kind::Hostlist => mutate::mutate_hostlist(rng, base, ctx.dict),
            Kind::Json => match serde_json::from_str::<Value>(base) {
                Ok(doc) => {
                    let dvals: Vec<Value> = donors
                        .iter()
                        .filter_map(|d| serde_json::from_str(d).ok())
                        .collect();
                    let mut drefs: Vec<&Value> = dvals.iter().collect();
                    drefs.push(&doc);
                    mutate::mutate_json(rng, &doc, ctx.dict, &drefs, &donors)
                }
                Err(_) => mutate::mutate_text(rng, base, ctx.dict, &donors),
            },
        },
    }
}

/// One fuzz target.
#[derive(Debug)]
pub struct Target {
    pub name: &'static str,
    pub about: &'static str,
    /// Inputs have several parts (saved as a JSON array of strings).
    pub multi: bool,
    /// Extra dictionary tokens (keys and names of the format).
    pub tokens: &'static [&'static str],
    pub seeds: fn() -> Vec<Vec<String>>,
    pub generate: fn(&mut Rng, &Ctx) -> Vec<String>,
    pub run: fn(&[String]) -> String,
}

pub fn all() -> Vec<Target> {
    vec![
        Target {
            name: "jobspec",
            about: "Jobspec::parse / from_value (+ Request round trip, fluxion_jobspec, Capacity::why_never)",
            multi: false,
            tokens: &[
                "version",
                "resources",
                "tasks",
                "attributes",
                "type",
                "count",
                "with",
                "label",
                "exclusive",
                "unit",
                "slot",
                "node",
                "core",
                "gpu",
                "memory",
                "command",
                "per_slot",
                "total",
                "system",
                "user",
                "duration",
                "container",
                "environment",
                "min",
                "max",
                "operator",
                "operand",
            ],
            seeds: || seeds::jobspecs().into_iter().map(|s| vec![s]).collect(),
            generate: gen_jobspec,
            run: run_jobspec,
        },
        Target {
            name: "rv1",
            about: "Rv1::parse, rank_map, validate, totals, is_subset_of, overlaps, from_ranks, rv1_to_jgf, Capacity::of, check_grant",
            multi: true,
            tokens: RV1_TOKENS,
            seeds: || {
                let s = seeds::rv1s();
                (0..s.len())
                    .map(|i| vec![s[i].clone(), s[(i + 1) % s.len()].clone()])
                    .collect()
            },
            generate: gen_rv1,
            run: run_rv1,
        },
        Target {
            name: "idset",
            about: "IdSet::parse, Display round trip, union/intersection/difference/is_subset/intersects",
            multi: true,
            tokens: &[],
            seeds: || {
                let s = mutate::idsets();
                (0..s.len())
                    .map(|i| vec![s[i].clone(), s[(i * 7 + 3) % s.len()].clone()])
                    .collect()
            },
            generate: gen_idset,
            run: run_idset,
        },
        Target {
            name: "hostlist",
            about: "hostlist::parse, count, parse_all, encode round trip",
            multi: true,
            tokens: &[],
            seeds: || {
                let s = mutate::hostlists();
                (0..s.len())
                    .map(|i| vec![s[i].clone(), s[(i * 5 + 1) % s.len()].clone()])
                    .collect()
            },
            generate: gen_hostlist,
            run: run_hostlist,
        },
        Target {
            name: "jgf",
            about: "Jgf::parse (every dialect), to_json_string round trip, Graph::from_jgf",
            multi: false,
            tokens: JGF_TOKENS,
            seeds: || seeds::jgfs().into_iter().map(|s| vec![s]).collect(),
            generate: gen_jgf,
            run: run_jgf,
        },
        Target {
            name: "allocation",
            about: "allocation_to_rv1 (match allocations in every writer form) -> the R must be valid",
            multi: true,
            tokens: JGF_TOKENS,
            seeds: || {
                seeds::allocations()
                    .into_iter()
                    .map(|s| vec![s, "1720000000".into(), "3600".into()])
                    .collect()
            },
            generate: gen_allocation,
            run: run_allocation,
        },
        Target {
            name: "matcher",
            about: "EmbeddedFluxion init (mutated JGF, policy) then match_allocate/cancel/restore sequences; no core is ever given twice",
            multi: true,
            tokens: JGF_TOKENS,
            seeds: seeds_matcher,
            generate: gen_matcher,
            run: run_matcher,
        },
        Target {
            name: "journal",
            about: "journal::parse, parse_eventlog_entry, prior, app_submitted, queue_event, app_event, container",
            multi: false,
            tokens: &[
                "id",
                "events",
                "jobspec",
                "R",
                "timestamp",
                "name",
                "context",
                "memo",
                "fluxion_id",
                "app_id",
                "description",
                "pancake",
                "queue_id",
                "alloc-bypass",
                "status",
                "severity",
                "type",
                "note",
                "urgency",
                "priority",
                "submit",
                "start",
                "finish",
                "exception",
                "clean",
                "alloc",
                "dependency-add",
                "dependency-remove",
            ],
            seeds: || {
                let mut v: Vec<Vec<String>> = seeds::journal_entries()
                    .into_iter()
                    .map(|s| vec![s])
                    .collect();
                v.push(vec![seeds::eventlog_lines().join("\n")]);
                v
            },
            generate: gen_journal,
            run: run_journal,
        },
        Target {
            name: "options",
            about: "Options::parse (module arguments) + apply_config ([pancake] table), parse_fsd, Role::from_conf",
            multi: true,
            tokens: &[
                "fluxion",
                "policy",
                "queue-policy",
                "queue_policy",
                "view",
                "broker",
                "brokers",
                "strict",
                "plugin",
                "lost-grace",
                "lost_grace",
                "pancake",
                "role",
                "=",
                "==",
            ],
            seeds: seeds::options,
            generate: gen_options,
            run: run_options,
        },
        Target {
            name: "plugin",
            about: "the jobtap plugin's pure checks: Role::from_conf, container and R of job.validate input, R validate/is_subset_of/overlaps against admitted jobs",
            multi: true,
            tokens: RV1_TOKENS,
            seeds: seeds_plugin,
            generate: gen_plugin,
            run: run_plugin,
        },
        Target {
            name: "dispatch",
            about: "Dispatcher::handle fed arbitrary event sequences (an embedded Fluxion answers some of its requests)",
            multi: true,
            tokens: &[
                "e",
                "id",
                "c",
                "js",
                "prio",
                "t",
                "urg",
                "prior",
                "f",
                "ok",
                "err",
                "r",
                "app",
                "q",
                "ev",
                "status",
                "kind",
                "sev",
                "note",
                "dt",
                "reserved",
                "allocated",
                "last",
                "held",
                "started",
            ],
            seeds: seeds_dispatch,
            generate: gen_dispatch,
            run: run_dispatch,
        },
        Target {
            name: "show",
            about: "flux pancake's views of a pancake.status answer: show::status, map, map_json, jobs, jobs_json",
            multi: false,
            tokens: &[
                "version",
                "flux-core",
                "uptime",
                "worker",
                "fluxion",
                "backend",
                "ready",
                "containers",
                "jobs",
                "graph",
                "stats",
                "name",
                "uri",
                "state",
                "reason",
                "strict",
                "waiting",
                "running",
                "id",
                "container",
                "phase",
                "fluxion_id",
                "app_id",
                "R",
                "progress",
            ],
            seeds: || {
                seeds::status_answers()
                    .into_iter()
                    .map(|s| vec![s])
                    .collect()
            },
            generate: gen_show,
            run: run_show,
        },
    ]
}

const RV1_TOKENS: &[&str] = &[
    "version",
    "execution",
    "R_lite",
    "rank",
    "children",
    "core",
    "gpu",
    "nodelist",
    "nslots",
    "starttime",
    "expiration",
    "properties",
    "scheduling",
    "attributes",
];

const JGF_TOKENS: &[&str] = &[
    "graph",
    "nodes",
    "edges",
    "id",
    "metadata",
    "type",
    "basename",
    "name",
    "uniq_id",
    "rank",
    "exclusive",
    "unit",
    "size",
    "status",
    "paths",
    "containment",
    "properties",
    "source",
    "target",
    "subsystem",
    "contains",
    "in",
    "cluster",
    "rack",
    "node",
    "socket",
    "core",
    "gpu",
    "memory",
    "numanode",
];

/// Blank out numbers and quoted parts, keep the first 60 characters.
pub fn signature(text: &str) -> String {
    let mut out = String::new();
    let mut in_quote = false;
    let mut last_hash = false;
    for c in text.chars() {
        if c == '"' {
            in_quote = !in_quote;
            if in_quote {
                out.push_str("\"…\"");
            }
            continue;
        }
        if in_quote {
            continue;
        }
        if c.is_ascii_digit() {
            if !last_hash {
                out.push('#');
            }
            last_hash = true;
            continue;
        }
        last_hash = false;
        out.push(c);
        if out.len() >= 60 {
            break;
        }
    }
    out
}

fn err_sig(e: impl std::fmt::Display) -> String {
    format!("err:{}", signature(&e.to_string()))
}

// ---------------------------------------------------------------------------
// jobspec

fn gen_jobspec(rng: &mut Rng, ctx: &Ctx) -> Vec<String> {
    if rng.one_in(8) {
        let r = seeds::random_request(rng);
        return vec![seeds::jobspec_text(rng, &r)];
    }
    let base = &ctx.base(rng)[0];
    vec![mutate_part(rng, ctx, 0, base, Kind::Json)]
}

fn run_jobspec(p: &[String]) -> String {
    let text = &p[0];
    let parsed = Jobspec::parse(text);
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        let again = Jobspec::from_value(&v);
        inv!(
            again.is_ok() == parsed.is_ok(),
            "parse and from_value disagree"
        );
        if parsed.is_ok() {
            // What the dispatcher hands Fluxion must still be a valid jobspec.
            let stripped = pancake_core::dispatch::fluxion_jobspec(&v);
            inv!(
                Jobspec::parse(&stripped).is_ok(),
                "fluxion_jobspec broke a valid jobspec: {stripped}"
            );
        }
    }
    match parsed {
        Ok(js) => {
            let req = &js.request;
            let _ = (req.total_slots(), req.total_cores(), req.total_gpus());
            let back = Jobspec::parse(&req.to_jobspec_json(&["x"]));
            inv!(
                back.as_ref().map(|b| &b.request) == Ok(req),
                "Request does not survive to_jobspec_json: {req:?} -> {back:?}"
            );
            // Capacity::of never exceeds 2^20 nodes of 2^32 cores and GPUs.
            for (nodes, cores, gpus) in [(1, 1, 0), (4, 10, 2), (1 << 20, 1 << 32, 1 << 32)] {
                let _ = Capacity {
                    nodes,
                    cores_per_node: cores,
                    gpus_per_node: gpus,
                }
                .why_never(req);
            }
            format!(
                "ok:{}{}{}{}",
                req.nnodes.is_some(),
                req.node_exclusive,
                req.gpus_per_slot > 0,
                req.memory_per_slot.is_some()
            )
        }
        Err(e) => err_sig(e),
    }
}

// ---------------------------------------------------------------------------
// rv1

fn gen_rv1(rng: &mut Rng, ctx: &Ctx) -> Vec<String> {
    let base = ctx.base(rng).clone();
    let mut out = base.clone();
    if rng.one_in(8) {
        let r = seeds::random_rv1(rng);
        out[0] = seeds::rv1_text(rng, &r);
    } else {
        out[0] = mutate_part(rng, ctx, 0, &base[0], Kind::Json);
    }
    if rng.one_in(3) {
        out[1] = mutate_part(rng, ctx, 1, &base[1], Kind::Json);
    } else if rng.one_in(3) {
        out[1] = out[0].clone();
    }
    if rng.one_in(2) {
        out.swap(0, 1);
    }
    out
}

fn rank_count(r: &Rv1) -> u64 {
    r.execution
        .r_lite
        .iter()
        .map(|e| IdSet::parse(&e.rank).map(|s| s.len()).unwrap_or(0))
        .sum()
}

fn run_rv1(p: &[String]) -> String {
    let parsed = Rv1::parse(&p[0]);
    let a: Rv1 = match serde_json::from_str(&p[0]) {
        Ok(a) => a,
        Err(e) => {
            inv!(parsed.is_err(), "parse accepted what serde refused");
            return err_sig(e);
        }
    };
    let b: Option<Rv1> = serde_json::from_str(&p[1]).ok();
    let m = a.rank_map();
    inv!(
        a.validate().is_ok() == m.is_ok() && parsed.is_ok() == m.is_ok(),
        "validate, parse and rank_map disagree"
    );
    let _ = a.totals();
    let _ = Capacity::of(&a);
    if let Some(b) = &b {
        let ab = a.overlaps(b);
        let ba = b.overlaps(&a);
        if let (Ok(x), Ok(y)) = (&ab, &ba) {
            inv!(x == y, "overlaps is not symmetric");
        }
        let _ = a.is_subset_of(b);
        if let Ok(t) = a.totals() {
            let req = Request::slots(t.cores.min(1 << 20) as u32, 1, 0);
            let _ = pancake_core::dispatch::check_grant(&a, &req, b);
            let req = Request::nodes(t.nodes.clamp(1, 1 << 20) as u32, None, true);
            let _ = pancake_core::dispatch::check_grant(&a, &req, b);
        }
    }
    let m = match m {
        Ok(m) => m,
        Err(e) => return err_sig(e),
    };
    inv!(
        a.is_subset_of(&a).ok() == Some(true),
        "a valid R is not a subset of itself"
    );
    // Writing the ranks back gives the same ranks.
    let again = Rv1::from_ranks(&m, a.execution.starttime, a.execution.expiration);
    let text = again.to_json_string();
    match Rv1::parse(&text) {
        Ok(r2) => {
            let m2 = r2.rank_map();
            inv!(
                m2.as_ref().ok() == Some(&m),
                "from_ranks/parse changed the ranks: {text}"
            );
        }
        Err(e) => inv!(false, "from_ranks wrote an invalid R ({e}): {text}"),
    }
    // The Init graph of a valid R with host names loads into the matcher.
    let vertices: u64 = m
        .values()
        .map(|r| 1 + r.cores.len() + r.gpus.len())
        .sum::<u64>();
    if vertices < 200_000 && rank_count(&a) < 200_000 {
        match rv1_to_jgf(&a) {
            Ok(jgf) => {
                let g = Graph::parse(&jgf);
                inv!(
                    g.is_ok() || m.is_empty(),
                    "rv1_to_jgf wrote a graph the matcher refuses: {:?}",
                    g.err()
                );
                if let Ok(g) = g {
                    inv!(
                        g.total_cores() == m.values().map(|r| r.cores.len()).sum::<u64>(),
                        "graph cores differ from the R's"
                    );
                }
            }
            Err(e) => return format!("ok-nojgf:{}", signature(&e.to_string())),
        }
    }
    format!("ok:{}:{}", m.len().min(3), a.execution.properties.is_some())
}

// ---------------------------------------------------------------------------
// idset

fn gen_idset(rng: &mut Rng, ctx: &Ctx) -> Vec<String> {
    let base = ctx.base(rng).clone();
    let mut out = base.clone();
    let i = rng.below(2);
    out[i] = mutate_part(rng, ctx, i, &base[i], Kind::IdSet);
    if rng.one_in(3) {
        out[1 - i] = mutate_part(rng, ctx, 1 - i, &base[1 - i], Kind::IdSet);
    }
    out
}

fn canonical(s: &IdSet) -> bool {
    s.ranges().iter().all(|&(lo, hi)| lo <= hi)
        && s.ranges()
            .windows(2)
            .all(|w| u64::from(w[0].1) + 1 < u64::from(w[1].0))
}

fn run_idset(p: &[String]) -> String {
    let a = match IdSet::parse(&p[0]) {
        Ok(a) => a,
        Err(e) => return err_sig(e),
    };
    inv!(
        canonical(&a),
        "parse built non-canonical ranges {:?}",
        a.ranges()
    );
    let text = a.to_string();
    inv!(
        IdSet::parse(&text).as_ref() == Ok(&a),
        "Display does not round trip: {text}"
    );
    let _ = (a.len(), a.first(), a.last(), a.is_empty());
    if let Some(f) = a.first() {
        inv!(a.contains(f), "first not contained");
    }
    if let Some(l) = a.last() {
        inv!(a.contains(l), "last not contained");
        inv!(
            !a.contains(l.saturating_add(1)) || l == u32::MAX,
            "past last contained"
        );
    }
    let Ok(b) = IdSet::parse(&p[1]) else {
        return "ok:1".into();
    };
    let u = a.union(&b);
    let i = a.intersection(&b);
    let d = a.difference(&b);
    for s in [&u, &i, &d] {
        inv!(
            canonical(s),
            "set operation built non-canonical ranges {:?}",
            s.ranges()
        );
    }
    inv!(
        u.len() + i.len() == a.len() + b.len(),
        "|a u b| + |a n b| != |a| + |b|"
    );
    inv!(d.intersection(&b).is_empty(), "(a - b) meets b");
    inv!(d.union(&i) == a, "(a - b) u (a n b) != a");
    inv!(
        a.is_subset(&b) == d.is_empty(),
        "is_subset disagrees with difference"
    );
    inv!(
        a.intersects(&b) != i.is_empty(),
        "intersects disagrees with intersection"
    );
    inv!(
        i.is_subset(&a) && i.is_subset(&b),
        "a n b not inside a and b"
    );
    inv!(a.union(&b) == b.union(&a), "union not symmetric");
    "ok:2".into()
}

// ---------------------------------------------------------------------------
// hostlist

fn gen_hostlist(rng: &mut Rng, ctx: &Ctx) -> Vec<String> {
    let base = ctx.base(rng).clone();
    let mut out = base.clone();
    let i = rng.below(out.len());
    out[i] = mutate_part(rng, ctx, i, &base[i], Kind::Hostlist);
    if rng.one_in(4) {
        out.push(rng.pick(&ctx.dict.hostlists).clone());
    }
    if out.len() > 2 && rng.one_in(4) {
        out.truncate(2);
    }
    out
}

fn run_hostlist(p: &[String]) -> String {
    let n = hostlist::count(&p[0]);
    let hosts = hostlist::parse(&p[0]);
    let _ = hostlist::parse_all(p);
    match (&n, &hosts) {
        (Ok(n), Ok(h)) => inv!(*n == h.len() as u64, "count {n} but parse gave {}", h.len()),
        (Err(_), Ok(_)) => inv!(false, "count failed where parse succeeded"),
        _ => {}
    }
    let hosts = match hosts {
        Ok(h) => h,
        Err(e) => return err_sig(e),
    };
    if hosts.len() <= 20_000 {
        let enc = hostlist::encode(&hosts);
        let back = hostlist::parse(&enc);
        inv!(
            back.as_ref() == Ok(&hosts),
            "encode does not round trip: {enc:?} -> {:?}",
            back.map(|b| b.into_iter().take(8).collect::<Vec<_>>())
        );
    }
    format!("ok:{}", hosts.len().min(3))
}

// ---------------------------------------------------------------------------
// jgf

fn gen_jgf(rng: &mut Rng, ctx: &Ctx) -> Vec<String> {
    if rng.one_in(10) {
        return vec![seeds::random_jgf(rng)];
    }
    let base = &ctx.base(rng)[0];
    if rng.one_in(6) {
        return vec![seeds::jgf_dialect(rng, base)];
    }
    vec![mutate_part(rng, ctx, 0, base, Kind::Json)]
}

fn run_jgf(p: &[String]) -> String {
    let g = match Jgf::parse(&p[0]) {
        Ok(g) => g,
        Err(e) => return err_sig(e),
    };
    let _ = (g.roots(), g.child_index());
    for v in g.vertices() {
        let _ = (
            v.kind(),
            v.name(),
            v.name_is_default(),
            v.basename(),
            v.properties(),
            v.path(),
            v.parent(),
        );
    }
    let text = g.to_json_string();
    match Jgf::parse(&text) {
        Ok(g2) => inv!(g2.len() == g.len(), "round trip changed the vertex count"),
        Err(e) => inv!(false, "to_json_string wrote JGF that does not parse: {e}"),
    }
    match Graph::from_jgf(g) {
        Ok(graph) => {
            for n in 0..graph.node_count().min(64) {
                let _ = (
                    graph.node_core_ids(n),
                    graph.node_gpu_ids(n),
                    graph.node_vertex(n),
                );
            }
            format!("ok:{}", graph.has_memory())
        }
        Err(e) => format!("graph-{}", err_sig(e)),
    }
}

// ---------------------------------------------------------------------------
// allocation

fn gen_allocation(rng: &mut Rng, ctx: &Ctx) -> Vec<String> {
    let base = ctx.base(rng).clone();
    let mut out = base.clone();
    match rng.below(10) {
        0 => out[0] = seeds::random_allocations(rng, 1).pop().unwrap_or_default(),
        1 => {
            out[1] = rng.pick(mutate::NUMBERS).to_string();
            out[2] = rng.pick(mutate::NUMBERS).to_string();
        }
        _ => out[0] = mutate_part(rng, ctx, 0, &base[0], Kind::Json),
    }
    out
}

fn run_allocation(p: &[String]) -> String {
    let start: f64 = p[1].parse().unwrap_or(0.0);
    let dur: f64 = p[2].parse().unwrap_or(0.0);
    match allocation_to_rv1(&p[0], start, dur) {
        Ok(r) => {
            let v = r.validate();
            inv!(
                v.is_ok(),
                "allocation_to_rv1 returned an invalid R ({}): {}",
                v.err().map(|e| e.to_string()).unwrap_or_default(),
                r.to_json_string()
            );
            format!("ok:{}", r.execution.r_lite.len().min(3))
        }
        Err(e) => err_sig(e),
    }
}

// ---------------------------------------------------------------------------
// matcher

const POLICIES: &[&str] = &[
    "first",
    "",
    "low",
    "high",
    "lonode",
    "hinode",
    "lonodex",
    "hinodex",
    "firstnodex",
    "bogus",
];

fn random_op(rng: &mut Rng) -> String {
    match rng.weighted(&[60, 15, 10, 8, 4, 3]) {
        0 => {
            let r = seeds::random_request(rng);
            json!({"op": "match", "reserve": rng.one_in(3), "js": seeds::jobspec_text(rng, &r)})
        }
        1 => json!({"op": "cancel", "id": *rng.pick(&[1i64, 2, 3, 4, 0, -1, i64::MAX])}),
        2 => json!({"op": "restore", "id": rng.range(1, 12), "from": rng.below(8)}),
        3 => json!({"op": "now", "t": *rng.pick(&[0i64, 10, 60, 3600, -5, i64::MAX, i64::MIN])}),
        4 => json!({"op": "restore", "id": *rng.pick(&[0i64, -3, i64::MAX, 50]),
                     "jgf": seeds::random_allocations(rng, 1).pop().unwrap_or_default()}),
        _ => json!({"op": "init"}),
    }
    .to_string()
}

fn seeds_matcher() -> Vec<Vec<String>> {
    let mut rng = Rng::new(5);
    let mut out = Vec::new();
    for jgf in seeds::jgfs() {
        let mut v = vec![rng.pick(&POLICIES[..9]).to_string(), jgf];
        for _ in 0..8 {
            v.push(random_op(&mut rng));
        }
        out.push(v);
    }
    out
}

/// Mutate one JSON op or step (part `at` of an input): the whole text, or,
/// half the time when it carries one, the jobspec inside it (`js`).
fn mutate_op(rng: &mut Rng, ctx: &Ctx, at: usize, op: &str) -> String {
    match serde_json::from_str::<Value>(op) {
        Ok(mut v) if v.get("js").is_some() && rng.one_in(2) => {
            let js = v["js"].as_str().unwrap_or("").to_string();
            v["js"] = Value::String(mutate_part(rng, ctx, usize::MAX, &js, Kind::Json));
            v.to_string()
        }
        _ => mutate_part(rng, ctx, at, op, Kind::Json),
    }
}

fn gen_matcher(rng: &mut Rng, ctx: &Ctx) -> Vec<String> {
    let base = ctx.base(rng).clone();
    let mut out = base.clone();
    match rng.below(10) {
        0 => out[0] = rng.pick(POLICIES).to_string(),
        1 | 2 => out[1] = mutate_part(rng, ctx, 1, &base[1], Kind::Json),
        3 => out[1] = seeds::random_jgf(rng),
        4 | 5 => {
            let at = 2 + rng.below(out.len() - 1);
            let n = 1 + rng.small(6) as usize;
            for _ in 0..n {
                out.insert(at.min(out.len()), random_op(rng));
            }
        }
        6 if out.len() > 2 => {
            let at = 2 + rng.below(out.len() - 2);
            out.remove(at);
        }
        _ if out.len() > 2 => {
            let at = 2 + rng.below(out.len() - 2);
            out[at] = mutate_op(rng, ctx, at, &out[at]);
        }
        _ => out.push(random_op(rng)),
    }
    out.truncate(40);
    out
}

/// No core or GPU of a node is held by two live allocations, and the free
/// counts plus what allocations hold add up to the graph.
fn check_matcher(m: &Matcher) {
    let mut cores: BTreeMap<(usize, i64), i64> = BTreeMap::new();
    let mut gpus: BTreeMap<(usize, i64), i64> = BTreeMap::new();
    let (mut held_c, mut held_g) = (0u64, 0u64);
    for id in m.jobids() {
        if m.is_reserved(id) == Some(true) {
            continue;
        }
        for s in m.shares(id).unwrap_or_default() {
            for c in &s.cores {
                held_c += 1;
                if let Some(other) = cores.insert((s.node, *c), id) {
                    inv!(
                        false,
                        "core {c} of node {} held by jobs {other} and {id}",
                        s.node
                    );
                }
            }
            for g in &s.gpus {
                held_g += 1;
                if let Some(other) = gpus.insert((s.node, *g), id) {
                    inv!(
                        false,
                        "gpu {g} of node {} held by jobs {other} and {id}",
                        s.node
                    );
                }
            }
        }
    }
    inv!(
        m.free_cores() + held_c == m.graph().total_cores(),
        "free cores {} + held {held_c} != total {}",
        m.free_cores(),
        m.graph().total_cores()
    );
    inv!(
        m.free_gpus() + held_g == m.graph().total_gpus(),
        "free gpus {} + held {held_g} != total {}",
        m.free_gpus(),
        m.graph().total_gpus()
    );
}

fn run_matcher(p: &[String]) -> String {
    let mut fx = EmbeddedFluxion::new();
    inv!(
        matches!(
            fx.match_allocate("{}", false),
            Err(FluxionError::NotInitialized)
        ),
        "match before init"
    );
    let init = fx.init(&p[0], &p[1]);
    if let Err(e) = &init {
        inv!(fx.matcher().is_none(), "a failed first init left a matcher");
        // Keep going: every call must answer NotInitialized, not panic.
        let _ = fx.cancel(1);
        let _ = fx.restore(1, &p[1]);
        return err_sig(e);
    }
    let mut allocs: Vec<String> = Vec::new();
    let mut sig = String::from("ok");
    for op in &p[2..] {
        let Ok(v) = serde_json::from_str::<Value>(op) else {
            continue;
        };
        match v["op"].as_str().unwrap_or("") {
            "match" => {
                let js = v["js"].as_str().unwrap_or("");
                match fx.match_allocate(js, v["reserve"].as_bool().unwrap_or(false)) {
                    Ok(m) => {
                        let _ = allocation_to_rv1(&m.allocation, 0.0, 0.0);
                        allocs.push(m.allocation);
                        sig.push(if m.reserved { 'R' } else { 'M' });
                    }
                    Err(FluxionError::Busy(_)) => sig.push('b'),
                    Err(FluxionError::Unsatisfiable(_)) => sig.push('u'),
                    Err(_) => sig.push('x'),
                }
            }
            "cancel" => {
                let _ = fx.cancel(v["id"].as_i64().unwrap_or(1));
            }
            "restore" => {
                let id = v["id"].as_i64().unwrap_or(1);
                let text = match v["jgf"].as_str() {
                    Some(t) => t.to_string(),
                    None if !allocs.is_empty() => {
                        let k = v["from"].as_u64().unwrap_or(0) as usize;
                        allocs[k % allocs.len()].clone()
                    }
                    None => continue,
                };
                sig.push(if fx.restore(id, &text).is_ok() {
                    'S'
                } else {
                    's'
                });
            }
            "now" => {
                if let Some(m) = fx.matcher_mut() {
                    m.set_now(v["t"].as_i64().unwrap_or(0));
                }
            }
            "init" => {
                let _ = fx.init(&p[0], &p[1]);
            }
            _ => {}
        }
        if let Some(m) = fx.matcher() {
            check_matcher(m);
        }
        if sig.len() > 12 {
            sig.truncate(12);
        }
    }
    sig
}

// ---------------------------------------------------------------------------
// journal

fn gen_journal(rng: &mut Rng, ctx: &Ctx) -> Vec<String> {
    let base = &ctx.base(rng)[0];
    if base.contains('\n') && rng.one_in(2) {
        // An eventlog: mutate one line.
        let mut lines: Vec<String> = base.lines().map(str::to_string).collect();
        let i = rng.below(lines.len());
        lines[i] = mutate_part(rng, ctx, 0, &lines[i], Kind::Json);
        return vec![lines.join("\n")];
    }
    vec![mutate_part(rng, ctx, 0, base, Kind::Json)]
}

fn run_journal(p: &[String]) -> String {
    let text = &p[0];
    for line in text.lines() {
        if let Some(ev) = journal::parse_eventlog_entry(line) {
            let _ = journal::app_event(&ev);
            let _ = journal::queue_event(7, &ev);
        }
    }
    let _ = journal::parse_eventlog_entry(text);
    match journal::parse(text) {
        Ok(entry) => {
            let _ = journal::prior(&entry.events, entry.r.as_ref());
            for ev in &entry.events {
                let _ = journal::app_event(ev);
                let _ = journal::queue_event(entry.id.unwrap_or(0), ev);
            }
            let submitted = journal::app_submitted("lammps", &entry);
            if let Some(js) = &entry.jobspec {
                let _ = journal::container(js);
            }
            format!("ok:{}:{}", entry.id.is_some(), submitted.is_some())
        }
        Err(e) => err_sig(e),
    }
}

// ---------------------------------------------------------------------------
// options

fn gen_options(rng: &mut Rng, ctx: &Ctx) -> Vec<String> {
    let base = ctx.base(rng).clone();
    let mut out = base.clone();
    match rng.below(6) {
        0 => {
            // Add an argument built from the dictionary.
            let mut args: Vec<String> = serde_json::from_str(&out[0]).unwrap_or_default();
            let key = rng.pick(&ctx.dict.tokens).clone();
            let val = ctx.dict.any_string(rng);
            args.push(if rng.one_in(8) {
                key
            } else {
                format!("{key}={val}")
            });
            out[0] = serde_json::to_string(&args).unwrap_or_default();
        }
        1 | 2 => out[0] = mutate_part(rng, ctx, 0, &base[0], Kind::Json),
        _ => out[1] = mutate_part(rng, ctx, 1, &base[1], Kind::Json),
    }
    out
}

fn run_options(p: &[String]) -> String {
    let args: Vec<String> = serde_json::from_str(&p[0])
        .unwrap_or_else(|_| p[0].split_whitespace().map(str::to_string).collect());
    let conf: Value = serde_json::from_str(&p[1]).unwrap_or(Value::Null);
    for a in &args {
        if let Some((_, v)) = a.split_once('=') {
            if let Some(d) = pancake_core::options::parse_fsd(v) {
                inv!(d.is_finite() && d >= 0.0, "parse_fsd({v:?}) = {d}");
            }
            let _ = QueuePolicy::parse(v);
            let _ = Policy::parse(v);
        }
    }
    let _ = Role::from_conf(&conf);
    let _ = Role::from_conf(&json!({ "role": args.first() }));
    let mut o = match Options::parse(&args) {
        Ok(o) => o,
        Err(e) => return err_sig(e),
    };
    if let Some(g) = o.lost_grace {
        inv!(g.is_finite() && g >= 0.0, "lost_grace {g}");
    }
    let r = o.apply_config(&conf);
    let _ = o.to_json();
    match r {
        Ok(()) => {
            // Config reload: applying the same table again must not fail.
            let again = o.apply_config(&conf);
            inv!(again.is_ok(), "a second apply_config failed: {again:?}");
            "ok".into()
        }
        Err(e) => format!("conf-{}", err_sig(e)),
    }
}

// ---------------------------------------------------------------------------
// plugin

fn seeds_plugin() -> Vec<Vec<String>> {
    let mine = fluxion::conformance::sample_rv1(2, 4, 1);
    let ranks = mine.rank_map().unwrap_or_default();
    let one = |rank: u32, cores: &str| {
        let mut m = BTreeMap::new();
        let mut r = ranks.get(&rank).cloned().unwrap_or_default();
        r.cores = IdSet::parse(cores).unwrap_or_default();
        m.insert(rank, r);
        Rv1::from_ranks(&m, 0.0, 0.0)
    };
    let input = |r: &Rv1| {
        json!({"id": 1234, "userid": 1000, "jobspec": {"attributes": {"system":
            {"alloc-bypass": {"R": r}, "container": "lammps"}}}})
        .to_string()
    };
    vec![
        vec![
            r#"{"role":"app","container":"lammps","strict":"true"}"#.into(),
            input(&one(0, "0-1")),
            mine.to_json_string(),
            one(1, "0").to_json_string(),
        ],
        vec![
            r#"{"role":"queue"}"#.into(),
            json!({"id": 1, "userid": 0, "jobspec": {"attributes": {"system": {"container": "ior"}}}})
                .to_string(),
            mine.to_json_string(),
        ],
        vec![
            "{}".into(),
            input(&one(1, "2-3")),
            mine.to_json_string(),
            one(1, "3").to_json_string(),
            one(0, "0-3").to_json_string(),
        ],
    ]
}

fn gen_plugin(rng: &mut Rng, ctx: &Ctx) -> Vec<String> {
    let base = ctx.base(rng).clone();
    let mut out = base.clone();
    let i = rng.below(out.len());
    out[i] = mutate_part(rng, ctx, i, &base[i], Kind::Json);
    if rng.one_in(5) && out.len() < 12 {
        let r = seeds::random_rv1(rng);
        out.push(seeds::rv1_text(rng, &r));
    }
    out
}

fn run_plugin(p: &[String]) -> String {
    let conf: Value = serde_json::from_str(&p[0]).unwrap_or(Value::Null);
    let role = Role::from_conf(&conf);
    let input: Value = match serde_json::from_str(&p[1]) {
        Ok(v) => v,
        Err(e) => return err_sig(e),
    };
    // queue role: the container the job targets, the reserved attributes.
    if let Some(js) = input.get("jobspec") {
        let _ = journal::container(js);
        if let Some(sys) = js.pointer("/attributes/system") {
            for k in pancake_core::dispatch::RESERVED_ATTRIBUTES {
                let _ = sys.get(*k);
            }
        }
    }
    // app role: the R a forwarded job carries, checked as job.validate does.
    let Some(r) = input
        .pointer("/jobspec/attributes/system/alloc-bypass/R")
        .cloned()
    else {
        return format!("noR:{}", role.is_ok());
    };
    let r = match serde_json::from_value::<Rv1>(r) {
        Ok(r) => r,
        Err(e) => return err_sig(e),
    };
    if let Err(e) = r.validate() {
        return err_sig(e);
    }
    let mine = match p.get(2).map(|t| Rv1::parse(t)) {
        Some(Ok(m)) => m,
        Some(Err(e)) => return format!("mine-{}", err_sig(e)),
        None => return "nomine".into(),
    };
    let inside = r.is_subset_of(&mine);
    let mut overlaps = 0;
    for held in &p[3..] {
        if let Ok(h) = serde_json::from_str::<Rv1>(held)
            && h.overlaps(&r).unwrap_or(true)
        {
            overlaps += 1;
        }
    }
    format!("ok:{:?}:{}", inside.ok(), overlaps.min(2))
}

// ---------------------------------------------------------------------------
// dispatch

const CONTAINERS: &[&str] = &["lammps", "ior", "chatterbug"];

fn job_id(rng: &mut Rng) -> u64 {
    if rng.one_in(40) {
        *rng.pick(&[0, u64::MAX, 1 << 53, 9_007_199_254_740_993])
    } else {
        rng.range(1, 6)
    }
}

fn container(rng: &mut Rng) -> String {
    if rng.one_in(40) {
        rng.pick(&["", "ƒ", "nope", "lammps "]).to_string()
    } else {
        rng.pick(CONTAINERS).to_string()
    }
}

fn fluxion_id(rng: &mut Rng) -> i64 {
    if rng.one_in(30) {
        *rng.pick(&[0, -1, i64::MAX, i64::MIN])
    } else {
        rng.range(1, 10) as i64
    }
}

/// An R inside the dispatcher's sample graph (4 nodes x 10 cores, 2 GPUs), or a random one.
fn some_r(rng: &mut Rng) -> Value {
    if rng.one_in(6) {
        let r = seeds::random_rv1(rng);
        return serde_json::to_value(&r).unwrap_or(Value::Null);
    }
    let g = fluxion::conformance::sample_rv1(4, 10, 2);
    let all = g.rank_map().unwrap_or_default();
    let mut m: BTreeMap<u32, RankResources> = BTreeMap::new();
    for (rank, res) in all {
        if rng.one_in(2) {
            let lo = rng.below(10) as u32;
            let hi = (lo + rng.below(4) as u32).min(9);
            let mut res = res.clone();
            res.cores = IdSet::from_ids(lo..=hi);
            if rng.one_in(2) {
                res.gpus = IdSet::new();
            }
            m.insert(rank, res);
        }
    }
    serde_json::to_value(Rv1::from_ranks(&m, 1000.0, 0.0)).unwrap_or(Value::Null)
}

fn random_step(rng: &mut Rng) -> String {
    let js = |rng: &mut Rng, c: &str| {
        let mut r = seeds::random_request(rng);
        r.container = Some(c.to_string());
        seeds::jobspec_text(rng, &r)
    };
    let v = match rng.weighted(&[
        12, 2, 1, 3, 1, 1, 1, 2, 2, 2, 4, 2, 4, 4, 2, 5, 4, 3, 8, 2, 2, 30, 2, 6,
    ]) {
        0 => {
            let c = container(rng);
            json!({"e": "alloc", "id": job_id(rng), "js": js(rng, &c),
                   "prio": *rng.pick(&[16i64, 0, 31, -1, i64::MAX]),
                   "t": *rng.pick(&[1000.0, 0.0, 1e12])})
        }
        1 => {
            let c = container(rng);
            json!({"e": "recovered", "id": job_id(rng), "js": js(rng, &c),
                   "prior": {"fluxion_id": if rng.one_in(3) { Value::Null } else { json!(fluxion_id(rng)) },
                             "r": if rng.one_in(3) { Value::Null } else { some_r(rng) },
                             "app_id": if rng.one_in(2) { Value::Null } else { json!(rng.range(1, 10)) },
                             "at": *rng.pick(&[0.0, 998.0, -1.0, f64::MAX]),
                             "allocated": rng.one_in(2), "started": rng.one_in(2)}})
        }
        2 => json!({"e": "backlog_done",
                    "held": if rng.one_in(2) { json!([]) } else { json!([{"id": job_id(rng), "r": some_r(rng)}]) }}),
        3 => json!({"e": "tick"}),
        4 => json!({"e": "reset"}),
        5 => json!({"e": "recovery_timeout"}),
        6 => json!({"e": "app_backlog_done", "c": container(rng)}),
        7 => json!({"e": "restored", "id": job_id(rng), "f": fluxion_id(rng),
                    "err": if rng.one_in(2) { Value::Null } else { json!(rng.pick(&["busy", "invalid", "other"])) }}),
        8 => json!({"e": "priority", "id": job_id(rng), "p": *rng.pick(&[0i64, 1, 31, i64::MIN])}),
        9 => json!({"e": "cancel", "id": job_id(rng)}),
        10 => {
            json!({"e": "qexc", "id": job_id(rng), "kind": *rng.pick(&["cancel", "timeout", "exec", ""]),
                     "note": "x"})
        }
        11 => json!({"e": "free", "id": job_id(rng), "last": !rng.one_in(4)}),
        12 => json!({"e": "qalloc", "id": job_id(rng)}),
        13 => json!({"e": "qstart", "id": job_id(rng)}),
        14 => json!({"e": "qinactive", "id": job_id(rng)}),
        15 => {
            if rng.one_in(3) {
                json!({"e": "matched", "id": job_id(rng),
                       "err": *rng.pick(&["busy", "unsatisfiable", "ambiguous", "unavailable", "invalid", "notinit"])})
            } else {
                json!({"e": "matched", "id": job_id(rng), "f": fluxion_id(rng), "r": some_r(rng),
                       "reserved": rng.one_in(4)})
            }
        }
        16 => {
            if rng.one_in(3) {
                json!({"e": "submit_done", "id": job_id(rng), "err": "refused"})
            } else {
                json!({"e": "submit_done", "id": job_id(rng), "app": rng.range(1, 10)})
            }
        }
        17 => json!({"e": "app_submitted", "c": container(rng), "app": rng.range(1, 10),
                     "q": job_id(rng),
                     "f": if rng.one_in(3) { Value::Null } else { json!(fluxion_id(rng)) },
                     "r": if rng.one_in(3) { Value::Null } else { some_r(rng) }}),
        18 => {
            let ev = rng.pick(&["start", "finish", "exception", "clean"]);
            json!({"e": "app", "c": container(rng), "app": rng.range(1, 10), "ev": ev,
                   "status": *rng.pick(&[0, 256, 768, 9, 15, -1, i32::MAX, i32::MIN]),
                   "kind": *rng.pick(&["cancel", "timeout", "exec"]),
                   "sev": *rng.pick(&[0, 1, 7, -1]), "note": "n"})
        }
        19 => json!({"e": "up", "c": container(rng)}),
        20 => json!({"e": "lost", "c": container(rng)}),
        21 => json!({"e": "respond", "n": 1 + rng.small(4)}),
        22 => json!({"e": "app_found", "id": job_id(rng), "c": container(rng),
                     "app": if rng.one_in(3) { Value::Null } else { json!(rng.range(1, 10)) },
                     "err": if rng.one_in(4) { json!("job-list: ENOSYS") } else { Value::Null }}),
        _ => {
            json!({"e": "advance", "dt": *rng.pick(&[0.0, 0.001, 1.0, 5.0, 10.5, 61.0, 3600.0, 1e9])})
        }
    };
    v.to_string()
}

/// The steps of a few container jobs in the order flux-core and pancake
/// produce them, interleaved: the mutators then drop, repeat and reorder them.
fn lifecycle(rng: &mut Rng) -> Vec<String> {
    let njobs = 1 + rng.small(5) as usize;
    let mut lanes: Vec<VecDeque<Value>> = Vec::new();
    for k in 0..njobs {
        let id = (k + 1) as u64;
        let c = container(rng);
        let mut r = seeds::random_request(rng);
        if rng.one_in(3) {
            r = Request::slots(1 + rng.small(8) as u32, 1, 0);
        }
        r.container = Some(c.clone());
        let js = seeds::jobspec_text(rng, &r);
        let status = *rng.pick(&[0, 0, 256, 9]);
        let mut lane: VecDeque<Value> = [
            json!({"e": "alloc", "id": id, "js": js, "prio": 16, "t": 1000.0}),
            json!({"e": "respond", "n": 2}),
            json!({"e": "app_submitted_of", "q": id}),
            json!({"e": "app_of", "q": id, "ev": "start"}),
            json!({"e": "qalloc", "id": id}),
            json!({"e": "qstart", "id": id}),
            json!({"e": "advance", "dt": 1.0}),
            json!({"e": "app_of", "q": id, "ev": "finish", "status": status}),
            json!({"e": "app_of", "q": id, "ev": "clean"}),
            json!({"e": "free", "id": id, "last": true}),
            json!({"e": "qinactive", "id": id}),
        ]
        .into_iter()
        .collect();
        if rng.one_in(4) {
            // Cancelled on the queue side at some point.
            let at = rng.below(lane.len());
            lane.insert(
                at,
                json!({"e": "qexc", "id": id, "kind": "cancel", "note": "x"}),
            );
        }
        if rng.one_in(6) {
            let at = rng.below(lane.len());
            lane.insert(at, json!({"e": "lost", "c": c}));
            lane.insert(
                at + 1 + rng.below(lane.len() - at),
                json!({"e": "up", "c": c}),
            );
        }
        lanes.push(lane);
    }
    let mut out = Vec::new();
    while lanes.iter().any(|l| !l.is_empty()) {
        let i = rng.below(lanes.len());
        if let Some(step) = lanes[i].pop_front() {
            out.push(step.to_string());
        }
        if rng.one_in(5) {
            out.push(json!({"e": "respond", "n": 1}).to_string());
        }
    }
    out
}

fn random_setup(rng: &mut Rng) -> String {
    let graph = if rng.one_in(8) {
        let r = seeds::random_rv1(rng);
        seeds::rv1_text(rng, &r)
    } else {
        fluxion::conformance::sample_rv1(4, 10, 2).to_json_string()
    };
    let recovery: Value = if rng.one_in(3) {
        json!(CONTAINERS[..rng.below(4)])
    } else {
        Value::Null
    };
    json!({
        "policy": *rng.pick(&["fcfs", "easy"]),
        "fluxion": *rng.pick(&["first", "lonode", "hinodex"]),
        "graph": graph,
        "capacity": !rng.one_in(6),
        "set_graph": !rng.one_in(6),
        "lost_grace": if rng.one_in(2) { Value::Null } else { json!(*rng.pick(&[0.0, 5.0, 30.0, 1e300])) },
        "recovery": recovery,
        "up": CONTAINERS[..1 + rng.below(3)],
    })
    .to_string()
}

fn seeds_dispatch() -> Vec<Vec<String>> {
    let mut rng = Rng::new(6);
    let mut out: Vec<Vec<String>> = (0..16)
        .map(|_| {
            let mut v = vec![random_setup(&mut rng)];
            let n = 10 + rng.below(40);
            for _ in 0..n {
                v.push(random_step(&mut rng));
            }
            v
        })
        .collect();
    for _ in 0..16 {
        let mut v = vec![random_setup(&mut rng)];
        v.extend(lifecycle(&mut rng));
        out.push(v);
    }
    out
}

fn gen_dispatch(rng: &mut Rng, ctx: &Ctx) -> Vec<String> {
    if rng.one_in(8) {
        let mut v = vec![random_setup(rng)];
        let n = 5 + rng.small(80) as usize;
        for _ in 0..n {
            v.push(random_step(rng));
        }
        return v;
    }
    if rng.one_in(8) {
        let mut v = vec![random_setup(rng)];
        v.extend(lifecycle(rng));
        return v;
    }
    let mut out = ctx.base(rng).clone();
    let k = 1 + rng.small(4);
    for _ in 0..k {
        let len = out.len();
        match rng.below(9) {
            0 => out[0] = random_setup(rng),
            1 | 2 => {
                let at = 1 + rng.below(len);
                out.insert(at.min(out.len()), random_step(rng));
            }
            3 if len > 2 => {
                out.remove(1 + rng.below(len - 1));
            }
            4 if len > 2 => {
                // Duplicate a step (events delivered twice).
                let i = 1 + rng.below(len - 1);
                let s = out[i].clone();
                out.insert(i, s);
            }
            5 if len > 3 => {
                // Swap two steps (events reordered).
                let i = 1 + rng.below(len - 1);
                let j = 1 + rng.below(len - 1);
                out.swap(i, j);
            }
            6 => {
                // Splice the tail of another sequence.
                let other = &ctx.corpus[rng.below(ctx.corpus.len())];
                if other.len() > 1 {
                    let from = 1 + rng.below(other.len() - 1);
                    let at = 1 + rng.below(len);
                    out.truncate(at.min(out.len()));
                    out.extend(other[from..].iter().cloned());
                }
            }
            _ if len > 1 => {
                let i = 1 + rng.below(len - 1);
                out[i] = mutate_op(rng, ctx, i, &out[i]);
            }
            _ => out.push(random_step(rng)),
        }
    }
    out.truncate(200);
    out
}

fn fluxion_error(kind: &str) -> FluxionError {
    match kind {
        "busy" => FluxionError::Busy("b".into()),
        "unsatisfiable" => FluxionError::Unsatisfiable("u".into()),
        "ambiguous" => FluxionError::Ambiguous("a".into()),
        "unavailable" => FluxionError::Unavailable("down".into()),
        "notinit" => FluxionError::NotInitialized,
        "invalid" => FluxionError::Invalid("i".into()),
        _ => FluxionError::Other(kind.into()),
    }
}

fn r_of(v: &Value) -> Option<Rv1> {
    serde_json::from_value(v.clone()).ok()
}

/// A step as a dispatcher event (`None` for a step that is not one).
fn to_event(v: &Value) -> Option<Event> {
    let id = || v["id"].as_u64().unwrap_or(1) as JobId;
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let c = || s("c");
    Some(match v["e"].as_str()? {
        "alloc" => Event::Alloc {
            id: id(),
            jobspec: s("js"),
            priority: v["prio"].as_i64().unwrap_or(16),
            t_submit: v["t"].as_f64().unwrap_or(0.0),
        },
        "cancel" => Event::AllocCancel { id: id() },
        "free" => Event::Free {
            id: id(),
            last: v["last"].as_bool().unwrap_or(true),
        },
        "recovered" => {
            let p = &v["prior"];
            Event::Recovered {
                id: id(),
                jobspec: s("js"),
                prior: Prior {
                    fluxion_id: p["fluxion_id"].as_i64(),
                    r: r_of(&p["r"]),
                    app_id: p["app_id"].as_u64(),
                    dispatched_at: p["at"].as_f64(),
                    allocated: p["allocated"].as_bool().unwrap_or(false),
                    started: p["started"].as_bool().unwrap_or(false),
                },
            }
        }
        "backlog_done" => Event::QueueBacklogDone {
            held: v["held"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|h| Some((h["id"].as_u64()?, r_of(&h["r"]))))
                .collect(),
        },
        "tick" => Event::Tick,
        "reset" => Event::FluxionReset,
        "recovery_timeout" => Event::RecoveryTimeout,
        "app_backlog_done" => Event::AppBacklogDone { container: c() },
        "restored" => Event::Restored {
            id: id(),
            fluxion_id: v["f"].as_i64().unwrap_or(1),
            result: match v["err"].as_str() {
                Some(k) => Err(fluxion_error(k)),
                None => Ok(()),
            },
        },
        "priority" => Event::Priority {
            id: id(),
            priority: v["p"].as_i64().unwrap_or(0),
        },
        "qexc" => Event::QueueException {
            id: id(),
            kind: s("kind"),
            note: s("note"),
        },
        "qalloc" => Event::QueueAlloc { id: id() },
        "qstart" => Event::QueueStart { id: id() },
        "qinactive" => Event::QueueInactive { id: id() },
        "matched" => Event::Matched {
            id: id(),
            result: match v["err"].as_str() {
                Some(k) => Err(fluxion_error(k)),
                None => Ok(Granted {
                    fluxion_id: v["f"].as_i64().unwrap_or(1),
                    r: r_of(&v["r"])?,
                    reserved: v["reserved"].as_bool().unwrap_or(false),
                    at: v["at"].as_f64().unwrap_or(0.0),
                }),
            },
        },
        "submit_done" => Event::SubmitDone {
            id: id(),
            result: match v["err"].as_str() {
                Some(e) => Err(e.to_string()),
                None => Ok(v["app"].as_u64().unwrap_or(1)),
            },
        },
        "app_found" => Event::AppFound {
            id: id(),
            container: c(),
            result: match v["err"].as_str() {
                Some(e) => Err(e.to_string()),
                None => Ok(v["app"].as_u64()),
            },
        },
        "app_submitted" => Event::AppSubmitted {
            container: c(),
            app_id: v["app"].as_u64().unwrap_or(1),
            queue_id: v["q"].as_u64().unwrap_or(1),
            fluxion_id: v["f"].as_i64(),
            r: r_of(&v["r"]),
        },
        "app" => Event::App {
            container: c(),
            app_id: v["app"].as_u64().unwrap_or(1),
            event: match v["ev"].as_str().unwrap_or("") {
                "start" => AppEvent::Start,
                "finish" => AppEvent::Finish {
                    status: v["status"].as_i64().unwrap_or(0) as i32,
                },
                "exception" => AppEvent::Exception {
                    kind: s("kind"),
                    severity: v["sev"].as_i64().unwrap_or(0) as i32,
                    note: s("note"),
                },
                _ => AppEvent::Clean,
            },
        },
        "up" => Event::ContainerUp { container: c() },
        "lost" => Event::ContainerLost { container: c() },
        _ => return None,
    })
}

/// The fake pod around the dispatcher: an embedded Fluxion that answers
/// matches, brokers that accept every submit.
struct World {
    fx: EmbeddedFluxion,
    policy: String,
    jgf: Option<String>,
    pending: VecDeque<Action>,
    next_app: JobId,
    now: f64,
    /// Application jobs the world created: queue id -> (container, app id, jobspec).
    apps: BTreeMap<JobId, (String, JobId, String)>,
}

impl World {
    fn perform(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Cancel { fluxion_id } => {
                    let _ = self.fx.cancel(fluxion_id);
                }
                Action::Match { .. }
                | Action::Submit { .. }
                | Action::Restore { .. }
                | Action::Reinit
                | Action::Wake { .. }
                | Action::FindApp { .. }
                | Action::AppLookup { .. } => self.pending.push_back(a),
                _ => {}
            }
        }
    }

    /// The answer to the oldest request still waiting.
    fn answer(&mut self) -> Option<Event> {
        let a = self.pending.pop_front()?;
        Some(match a {
            Action::Match {
                id,
                jobspec,
                reserve,
            } => Event::Matched {
                id,
                result: self.fx.match_allocate(&jobspec, reserve).and_then(|m| {
                    let dur = Jobspec::parse(&jobspec)
                        .map(|j| j.request.duration as f64)
                        .unwrap_or(0.0);
                    let r = allocation_to_rv1(&m.allocation, self.now, dur)?;
                    Ok(Granted {
                        fluxion_id: m.jobid,
                        r,
                        reserved: m.reserved,
                        at: m.at as f64,
                    })
                }),
            },
            Action::Submit {
                id,
                container,
                jobspec,
            } => {
                self.next_app += 1;
                self.apps.insert(id, (container, self.next_app, jobspec));
                Event::SubmitDone {
                    id,
                    result: Ok(self.next_app),
                }
            }
            Action::Restore { id, fluxion_id, r } => {
                let result = match rv1_to_jgf(&r) {
                    Ok(jgf) => self.fx.restore(fluxion_id, &jgf),
                    Err(e) => Err(e),
                };
                Event::Restored {
                    id,
                    fluxion_id,
                    result,
                }
            }
            Action::Reinit => {
                if let Some(j) = &self.jgf {
                    let _ = self.fx.init(&self.policy, j);
                }
                Event::FluxionReset
            }
            Action::FindApp { id, container, .. } => Event::AppFound {
                result: Ok(self
                    .apps
                    .get(&id)
                    .filter(|(c, ..)| *c == container)
                    .map(|(_, a, _)| *a)),
                id,
                container,
            },
            Action::AppLookup {
                container, app_id, ..
            } => Event::App {
                container,
                app_id,
                event: AppEvent::Clean,
            },
            _ => Event::Tick,
        })
    }
}

/// `PANCAKE_FUZZ_DEBUG=1` with `--replay` prints every event and the actions it gave.
fn handle(d: &mut Dispatcher, now: f64, ev: Event) -> Vec<Action> {
    let debug = std::env::var_os("PANCAKE_FUZZ_DEBUG").is_some();
    if debug {
        eprintln!("t={now} {ev:?}");
    }
    let a = d.handle(now, ev);
    if debug {
        for x in &a {
            eprintln!("    -> {x:?}");
        }
    }
    a
}

fn run_dispatch(p: &[String]) -> String {
    let setup: Value = serde_json::from_str(&p[0]).unwrap_or(Value::Null);
    let policy = QueuePolicy::parse(setup["policy"].as_str().unwrap_or("")).unwrap_or_default();
    let mut d = Dispatcher::new(policy);
    let graph: Option<Rv1> = setup["graph"].as_str().and_then(|g| Rv1::parse(g).ok());
    let mut world = World {
        fx: EmbeddedFluxion::new(),
        policy: setup["fluxion"].as_str().unwrap_or("first").to_string(),
        jgf: None,
        pending: VecDeque::new(),
        next_app: 100,
        now: 1000.0,
        apps: BTreeMap::new(),
    };
    if let Some(g) = &graph {
        if setup["capacity"].as_bool().unwrap_or(true)
            && let Ok(c) = Capacity::of(g)
        {
            d.set_capacity(c);
        }
        if setup["set_graph"].as_bool().unwrap_or(true) {
            d.set_graph(g.clone());
        }
        if let Ok(j) = rv1_to_jgf(g) {
            let _ = world.fx.init(&world.policy, &j);
            world.jgf = Some(j);
        }
    }
    d.set_lost_grace(setup["lost_grace"].as_f64());
    if let Some(list) = setup["recovery"].as_array() {
        let names: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
        d.begin_recovery(&names);
    }
    if let Some(list) = setup["up"].as_array() {
        for c in list.iter().filter_map(Value::as_str) {
            let a = handle(
                &mut d,
                world.now,
                Event::ContainerUp {
                    container: c.to_string(),
                },
            );
            world.perform(a);
        }
    }
    let mut handled = 0usize;
    for step in &p[1..] {
        let Ok(v) = serde_json::from_str::<Value>(step) else {
            continue;
        };
        match v["e"].as_str() {
            Some("respond") => {
                for _ in 0..v["n"].as_u64().unwrap_or(1).min(16) {
                    if let Some(ev) = world.answer() {
                        let a = handle(&mut d, world.now, ev);
                        world.perform(a);
                        handled += 1;
                    }
                }
            }
            Some("app_of") | Some("app_submitted_of") => {
                // An event of the application job the world created for queue job q.
                let q = v["q"].as_u64().unwrap_or(1);
                let Some((c, app, js)) = world.apps.get(&q).cloned() else {
                    continue;
                };
                let ev = if v["e"] == "app_submitted_of" {
                    let js: Value = serde_json::from_str(&js).unwrap_or(Value::Null);
                    Event::AppSubmitted {
                        container: c,
                        app_id: app,
                        queue_id: q,
                        fluxion_id: js
                            .pointer("/attributes/user/pancake/fluxion_id")
                            .and_then(Value::as_i64),
                        r: js
                            .pointer("/attributes/system/alloc-bypass/R")
                            .and_then(r_of),
                    }
                } else {
                    let mut step = v.clone();
                    step["e"] = json!("app");
                    step["c"] = json!(c);
                    step["app"] = json!(app);
                    match to_event(&step) {
                        Some(ev) => ev,
                        None => continue,
                    }
                };
                let a = handle(&mut d, world.now, ev);
                world.perform(a);
                handled += 1;
            }
            Some("advance") => {
                let dt = v["dt"].as_f64().unwrap_or(0.0);
                if dt.is_finite() && dt >= 0.0 {
                    world.now += dt;
                }
            }
            _ => {
                if let Some(ev) = to_event(&v) {
                    let a = handle(&mut d, world.now, ev);
                    world.perform(a);
                    handled += 1;
                }
            }
        }
        if world.pending.len() > 10_000 {
            world.pending.clear();
        }
    }
    let st = d.stats();
    let _ = (d.counts(), d.is_recovering(), d.containers_up());
    let mut phases = std::collections::BTreeSet::new();
    for j in d.jobs() {
        let _ = (j.progress(), j.queue_running(), j.queue_over());
        phases.insert(format!("{:?}", j.phase).chars().take(2).collect::<String>());
    }
    format!(
        "ok:{}:{}{}{}{}:{}",
        handled.min(1),
        u8::from(st.granted > 0),
        u8::from(st.forwarded > 0),
        u8::from(st.completed > 0),
        u8::from(st.failed > 0),
        phases.into_iter().collect::<String>()
    )
}

// ---------------------------------------------------------------------------
// show

fn gen_show(rng: &mut Rng, ctx: &Ctx) -> Vec<String> {
    let base = &ctx.base(rng)[0];
    vec![mutate_part(rng, ctx, 0, base, Kind::Json)]
}

fn run_show(p: &[String]) -> String {
    let v: Value = match serde_json::from_str(&p[0]) {
        Ok(v) => v,
        Err(e) => return err_sig(e),
    };
    let plain = show::Style::plain();
    let color = show::Style {
        color: true,
        id: |id| format!("ƒ{id}"),
    };
    let mut sig = String::from("ok:");
    for style in [&plain, &color] {
        sig.push(if show::status(&v, style).is_ok() {
            'S'
        } else {
            's'
        });
        sig.push(if show::map(&v, style).is_ok() {
            'M'
        } else {
            'm'
        });
        sig.push(if show::jobs(&v, style).is_ok() {
            'J'
        } else {
            'j'
        });
    }
    let _ = show::map_json(&v);
    let _ = show::jobs_json(&v);
    sig
}
