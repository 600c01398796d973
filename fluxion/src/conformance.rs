//! A conformance suite for any [`Fluxion`]: the embedded matcher, and the gRPC
//! client talking to a server, run the same checks.
//!
//! Each `check_*` function takes a fresh (uninitialised) instance and panics
//! with a message on the first violation, so it can be called from `#[test]`
//! functions. [`run_all`] runs every check, each on a new instance from the
//! given factory. [`Capabilities`] relaxes the checks for implementations that
//! cannot tell some answers apart (the public service reports every failed
//! match as one gRPC error).
//!
//! ```no_run
//! use fluxion::{EmbeddedFluxion, Fluxion, conformance};
//! conformance::run_all(&mut || Box::new(EmbeddedFluxion::new()) as Box<dyn Fluxion>);
//! ```

use std::collections::BTreeMap;

use crate::convert::{allocation_to_rv1, rv1_to_jgf};
use crate::idset::IdSet;
use crate::jobspec::Request;
use crate::rv1::{RankResources, Rv1};
use crate::{Fluxion, FluxionError};

/// What an implementation under test can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Busy and unsatisfiable answers come back as `Busy` / `Unsatisfiable`
    /// (else `Ambiguous` is accepted for both).
    pub distinguishes_busy: bool,
    /// Calls before `init` answer `NotInitialized` (else any error is accepted).
    pub reports_not_initialized: bool,
    /// Malformed input answers `Invalid` (else any error is accepted).
    pub reports_invalid: bool,
    /// `restore` is implemented.
    pub restore: bool,
    /// Reservations (`reserve == true`) are implemented.
    pub reservations: bool,
}

impl Capabilities {
    /// Everything: what [`EmbeddedFluxion`](crate::EmbeddedFluxion) offers.
    pub fn full() -> Self {
        Capabilities {
            distinguishes_busy: true,
            reports_not_initialized: true,
            reports_invalid: true,
            restore: true,
            reservations: true,
        }
    }

    /// What a client of the unmodified public service can promise.
    pub fn public_service() -> Self {
        Capabilities {
            distinguishes_busy: false,
            reports_not_initialized: false,
            reports_invalid: false,
            restore: false,
            reservations: true,
        }
    }
}

/// Builds an Rv1 of `nodes` ranks named `flux-sample-<rank>`, each with
/// `cores` cores and `gpus` GPUs.
pub fn sample_rv1(nodes: u32, cores: u32, gpus: u32) -> Rv1 {
    let mut m = BTreeMap::new();
    for r in 0..nodes {
        m.insert(
            r,
            RankResources {
                hostname: Some(format!("flux-sample-{r}")),
                cores: (0..cores).collect::<IdSet>(),
                gpus: (0..gpus).collect::<IdSet>(),
            },
        );
    }
    Rv1::from_ranks(&m, 0.0, 0.0)
}

/// The Init JGF of [`sample_rv1`].
pub fn sample_jgf(nodes: u32, cores: u32, gpus: u32) -> String {
    rv1_to_jgf(&sample_rv1(nodes, cores, gpus)).unwrap_or_default()
}

fn jobspec(req: &Request) -> String {
    req.to_jobspec_json(&["true"])
}

fn init(fx: &mut dyn Fluxion, policy: &str, nodes: u32, cores: u32, gpus: u32) -> Rv1 {
    let r = sample_rv1(nodes, cores, gpus);
    let jgf = rv1_to_jgf(&r).unwrap_or_else(|e| panic!("building the test graph: {e}"));
    fx.init(policy, &jgf)
        .unwrap_or_else(|e| panic!("init({policy:?}) failed: {e}"));
    r
}

/// Matches `req` now and returns (jobid, its Rv1), checking the basic promises.
fn must_match(fx: &mut dyn Fluxion, whole: &Rv1, req: &Request) -> (i64, Rv1) {
    let out = fx
        .match_allocate(&jobspec(req), false)
        .unwrap_or_else(|e| panic!("match of {req:?} failed: {e}"));
    assert!(
        !out.reserved,
        "an allocation made without reserve must not be reserved"
    );
    let r = allocation_to_rv1(&out.allocation, 0.0, 0.0).unwrap_or_else(|e| {
        panic!(
            "allocation of job {} does not convert to Rv1: {e}\n{}",
            out.jobid, out.allocation
        )
    });
    assert!(
        r.is_subset_of(whole).unwrap_or(false),
        "allocation {} is not inside the graph",
        r.to_json_string()
    );
    let t = r.totals().unwrap_or_default();
    assert!(
        t.cores >= req.total_cores(),
        "job {} got {} cores, asked {}",
        out.jobid,
        t.cores,
        req.total_cores()
    );
    assert!(
        t.gpus >= req.total_gpus(),
        "job {} got {} gpus, asked {}",
        out.jobid,
        t.gpus,
        req.total_gpus()
    );
    if let Some(n) = req.nnodes {
        assert_eq!(
            t.nodes,
            u64::from(n),
            "job {} got {} nodes, asked {n}",
            out.jobid,
            t.nodes
        );
    }
    if !req.node_exclusive {
        assert_eq!(
            t.cores,
            req.total_cores(),
            "non-exclusive job {} got extra cores",
            out.jobid
        );
    }
    (out.jobid, r)
}

fn expect_busy(caps: &Capabilities, r: Result<crate::MatchOutcome, FluxionError>, what: &str) {
    match r {
        Err(FluxionError::Busy(_)) => {}
        Err(FluxionError::Ambiguous(_)) if !caps.distinguishes_busy => {}
        Err(e) => panic!("{what}: expected Busy, got {e}"),
        Ok(o) => panic!(
            "{what}: expected Busy, got a match (job {}, reserved {})",
            o.jobid, o.reserved
        ),
    }
}

fn expect_unsatisfiable(
    caps: &Capabilities,
    r: Result<crate::MatchOutcome, FluxionError>,
    what: &str,
) {
    match r {
        Err(FluxionError::Unsatisfiable(_)) => {}
        Err(FluxionError::Ambiguous(_)) if !caps.distinguishes_busy => {}
        Err(e) => panic!("{what}: expected Unsatisfiable, got {e}"),
        Ok(o) => panic!(
            "{what}: expected Unsatisfiable, got a match (job {})",
            o.jobid
        ),
    }
}

fn expect_invalid<T: std::fmt::Debug>(caps: &Capabilities, r: Result<T, FluxionError>, what: &str) {
    match r {
        Err(FluxionError::Invalid(_)) => {}
        Err(_) if !caps.reports_invalid => {}
        other => panic!("{what}: expected Invalid, got {other:?}"),
    }
}

/// Match, cancel and restore before `init` fail (`NotInitialized`).
pub fn check_not_initialized(fx: &mut dyn Fluxion, caps: &Capabilities) {
    let js = jobspec(&Request::slots(1, 1, 0));
    let m = fx.match_allocate(&js, false);
    let c = fx.cancel(1);
    if caps.reports_not_initialized {
        assert_eq!(
            m.err(),
            Some(FluxionError::NotInitialized),
            "match before init"
        );
        assert_eq!(
            c.err(),
            Some(FluxionError::NotInitialized),
            "cancel before init"
        );
    } else {
        assert!(m.is_err(), "match before init must fail");
    }
}

/// `init` refuses malformed JGF and unknown policies.
pub fn check_init_rejects_garbage(fx: &mut dyn Fluxion, caps: &Capabilities) {
    expect_invalid(
        caps,
        fx.init("first", "not json"),
        "init with text that is not JSON",
    );
    expect_invalid(caps, fx.init("first", "{}"), "init without graph");
    expect_invalid(
        caps,
        fx.init("first", r#"{"graph":{"nodes":[{"id":1,"metadata":{}}]}}"#),
        "init with a numeric vertex id",
    );
    expect_invalid(
        caps,
        fx.init("no-such-policy", &sample_jgf(1, 1, 0)),
        "init with an unknown policy",
    );
}

/// A first match gets job id 1, one core inside the graph, and converts to Rv1.
pub fn check_first_match(fx: &mut dyn Fluxion, _caps: &Capabilities) {
    let whole = init(fx, "first", 2, 4, 0);
    let (id, r) = must_match(fx, &whole, &Request::slots(1, 1, 0));
    assert_eq!(id, 1, "the first job id after init is 1");
    assert_eq!(r.totals().unwrap_or_default().cores, 1);
    let (id2, _) = must_match(fx, &whole, &Request::slots(2, 1, 0));
    assert_eq!(id2, 2, "job ids count up");
}

/// Job ids restart at 1 after every `init`, which also frees everything.
pub fn check_jobids_restart_after_init(fx: &mut dyn Fluxion, _caps: &Capabilities) {
    let whole = init(fx, "first", 1, 2, 0);
    must_match(fx, &whole, &Request::slots(2, 1, 0));
    init(fx, "first", 1, 2, 0);
    let (id, _) = must_match(fx, &whole, &Request::slots(2, 1, 0));
    assert_eq!(
        id, 1,
        "job ids restart at 1 after init, and init frees all cores"
    );
}

/// Filling the graph one core at a time never overlaps; the next match is
/// busy; cancel frees exactly what was held; cancelling unknown ids succeeds.
pub fn check_fill_busy_cancel(fx: &mut dyn Fluxion, caps: &Capabilities) {
    let whole = init(fx, "first", 2, 4, 0);
    let mut held: Vec<(i64, Rv1)> = Vec::new();
    for _ in 0..8 {
        let (id, r) = must_match(fx, &whole, &Request::slots(1, 1, 0));
        for (other, o) in &held {
            assert!(
                !r.overlaps(o).unwrap_or(true),
                "job {id} overlaps job {other}"
            );
        }
        held.push((id, r));
    }
    expect_busy(
        caps,
        fx.match_allocate(&jobspec(&Request::slots(1, 1, 0)), false),
        "match on a full graph",
    );
    let (freed_id, freed) = held.remove(3);
    fx.cancel(freed_id)
        .unwrap_or_else(|e| panic!("cancel({freed_id}): {e}"));
    fx.cancel(freed_id)
        .unwrap_or_else(|e| panic!("second cancel({freed_id}) must succeed: {e}"));
    fx.cancel(9999)
        .unwrap_or_else(|e| panic!("cancel of an unknown id must succeed: {e}"));
    let (_, again) = must_match(fx, &whole, &Request::slots(1, 1, 0));
    assert_eq!(
        again.rank_map().ok(),
        freed.rank_map().ok(),
        "after cancel, the only free core is the one cancelled"
    );
    expect_busy(
        caps,
        fx.match_allocate(&jobspec(&Request::slots(1, 1, 0)), false),
        "match on a full graph again",
    );
}

/// Requests that can never fit are unsatisfiable, not busy.
pub fn check_unsatisfiable(fx: &mut dyn Fluxion, caps: &Capabilities) {
    init(fx, "first", 4, 8, 0);
    let cases = [
        (Request::nodes(5, None, true), "5 nodes on a 4-node graph"),
        (Request::slots(1, 9, 0), "a 9-core slot on 8-core nodes"),
        (Request::slots(33, 1, 0), "33 cores on a 32-core graph"),
        (Request::slots(1, 1, 1), "a GPU on a graph without GPUs"),
    ];
    for (req, what) in cases {
        expect_unsatisfiable(caps, fx.match_allocate(&jobspec(&req), false), what);
        expect_unsatisfiable(
            caps,
            fx.match_allocate(&jobspec(&req), true),
            &format!("{what} (reserve)"),
        );
    }
    // Unsatisfiable even when the graph is busy.
    let whole = sample_rv1(4, 8, 0);
    must_match(fx, &whole, &Request::slots(32, 1, 0));
    expect_unsatisfiable(
        caps,
        fx.match_allocate(&jobspec(&Request::nodes(5, None, false)), false),
        "5 nodes, busy graph",
    );
}

/// A malformed jobspec is refused and leaves the instance usable.
pub fn check_invalid_jobspec(fx: &mut dyn Fluxion, caps: &Capabilities) {
    let whole = init(fx, "first", 1, 2, 0);
    expect_invalid(
        caps,
        fx.match_allocate("{", false),
        "jobspec that is not JSON",
    );
    expect_invalid(
        caps,
        fx.match_allocate(r#"{"version":1}"#, false),
        "jobspec without resources",
    );
    let zero = jobspec(&Request::slots(1, 1, 0)).replace("\"count\":1,", "\"count\":0,");
    expect_invalid(
        caps,
        fx.match_allocate(&zero, false),
        "jobspec with a zero count",
    );
    let (id, _) = must_match(fx, &whole, &Request::slots(1, 1, 0));
    assert_eq!(id, 1, "failed matches consume no job id");
}

/// Node-level requests: `-N2 -n4` spreads over two ranks; `-N1` alone takes a
/// whole node, which nothing else may share.
pub fn check_node_requests(fx: &mut dyn Fluxion, caps: &Capabilities) {
    let whole = init(fx, "first", 3, 4, 0);
    let (_, r) = must_match(fx, &whole, &Request::nodes(2, Some(4), false));
    let m = r.rank_map().unwrap_or_default();
    assert!(
        m.values().all(|x| x.cores.len() == 2),
        "-N2 -n4 puts 2 cores on each node: {}",
        r.to_json_string()
    );
    let (excl_id, excl) = must_match(fx, &whole, &Request::nodes(1, None, true));
    let t = excl.totals().unwrap_or_default();
    assert_eq!((t.nodes, t.cores), (1, 4), "an exclusive node comes whole");
    let excl_rank = excl.rank_map().unwrap_or_default().keys().next().copied();
    for _ in 0..4 {
        let (_, small) = must_match(fx, &whole, &Request::slots(1, 1, 0));
        assert!(
            !small.overlaps(&excl).unwrap_or(true),
            "a job landed on an exclusive node"
        );
        assert_ne!(
            small.rank_map().unwrap_or_default().keys().next().copied(),
            excl_rank
        );
    }
    expect_busy(
        caps,
        fx.match_allocate(&jobspec(&Request::nodes(1, None, true)), false),
        "exclusive node while all are used",
    );
    fx.cancel(excl_id).unwrap_or_else(|e| panic!("cancel: {e}"));
    must_match(fx, &whole, &Request::nodes(1, None, true));
}

/// GPUs are allocated per slot and reported in R.
pub fn check_gpus(fx: &mut dyn Fluxion, caps: &Capabilities) {
    let whole = init(fx, "first", 2, 4, 2);
    let (_, r) = must_match(fx, &whole, &Request::slots(3, 1, 1));
    assert_eq!(r.totals().unwrap_or_default().gpus, 3);
    must_match(fx, &whole, &Request::slots(1, 1, 1));
    expect_busy(
        caps,
        fx.match_allocate(&jobspec(&Request::slots(1, 1, 1)), false),
        "a GPU when all are used",
    );
    must_match(fx, &whole, &Request::slots(4, 1, 0));
}

/// `low` starts at the lowest rank, `high` at the highest.
pub fn check_policies(fx: &mut dyn Fluxion, _caps: &Capabilities) {
    for (policy, want) in [
        ("low", 0u32),
        ("lonode", 0),
        ("first", 0),
        ("high", 3),
        ("hinode", 3),
    ] {
        let whole = init(fx, policy, 4, 2, 0);
        let (_, r) = must_match(fx, &whole, &Request::slots(1, 1, 0));
        let rank = r.rank_map().unwrap_or_default().keys().next().copied();
        assert_eq!(
            rank,
            Some(want),
            "policy {policy} puts the first job on rank {want}"
        );
    }
}

/// With `reserve`, a job that does not fit now is reserved when running jobs
/// will end; unlimited jobs in the way make it busy.
pub fn check_reservation(fx: &mut dyn Fluxion, caps: &Capabilities) {
    if !caps.reservations {
        return;
    }
    let whole = init(fx, "first", 1, 2, 0);
    let running = fx
        .match_allocate(&jobspec(&Request::slots(2, 1, 0).with_duration(100)), true)
        .unwrap_or_else(|e| panic!("match with reserve on an empty graph: {e}"));
    assert!(
        !running.reserved,
        "a job that fits now is allocated, not reserved"
    );
    let res = fx
        .match_allocate(&jobspec(&Request::slots(1, 1, 0).with_duration(10)), true)
        .unwrap_or_else(|e| panic!("reservation: {e}"));
    assert!(res.reserved, "a job that does not fit now is reserved");
    assert!(
        res.at >= 100,
        "the reservation starts when the running job ends (at {})",
        res.at
    );
    expect_busy(
        caps,
        fx.match_allocate(&jobspec(&Request::slots(1, 1, 0)), false),
        "reserve=false on a full graph",
    );
    fx.cancel(res.jobid)
        .unwrap_or_else(|e| panic!("cancel reservation: {e}"));
    fx.cancel(running.jobid)
        .unwrap_or_else(|e| panic!("cancel: {e}"));
    must_match(fx, &whole, &Request::slots(2, 1, 0));
    expect_busy(
        caps,
        fx.match_allocate(&jobspec(&Request::slots(1, 1, 0)), true),
        "reserve behind unlimited jobs",
    );
}

/// `restore` re-marks an allocation after the state was lost; new ids do not
/// collide and conflicting restores fail.
pub fn check_restore(fx: &mut dyn Fluxion, caps: &Capabilities) {
    if !caps.restore {
        return;
    }
    let whole = init(fx, "first", 2, 2, 0);
    let out = fx
        .match_allocate(&jobspec(&Request::slots(3, 1, 0)), false)
        .unwrap_or_else(|e| panic!("match: {e}"));
    let held = allocation_to_rv1(&out.allocation, 0.0, 0.0).unwrap_or_else(|e| panic!("rv1: {e}"));
    init(fx, "first", 2, 2, 0);
    fx.restore(5, &out.allocation)
        .unwrap_or_else(|e| panic!("restore: {e}"));
    let (id, r) = must_match(fx, &whole, &Request::slots(1, 1, 0));
    assert!(
        id > 5,
        "a job id after restore({}) must be larger, got {id}",
        5
    );
    assert!(
        !r.overlaps(&held).unwrap_or(true),
        "a new job overlaps a restored one"
    );
    assert!(
        fx.restore(6, &out.allocation).is_err(),
        "a restore that conflicts with live allocations must fail"
    );
    fx.cancel(5)
        .unwrap_or_else(|e| panic!("cancel restored: {e}"));
    must_match(fx, &whole, &Request::slots(3, 1, 0));
}

/// A fixed pseudo-random sequence of mixed requests and cancels: live
/// allocations never overlap and all lie inside the graph.
pub fn check_no_overlap_sequence(fx: &mut dyn Fluxion, caps: &Capabilities) {
    let whole = init(fx, "lonode", 3, 4, 1);
    let mut live: Vec<(i64, Rv1)> = Vec::new();
    let mut seed = 0x2545_f491_u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for step in 0..60 {
        let roll = next() % 10;
        if roll < 3 && !live.is_empty() {
            let i = (next() % live.len() as u64) as usize;
            let (id, _) = live.swap_remove(i);
            fx.cancel(id)
                .unwrap_or_else(|e| panic!("step {step}: cancel: {e}"));
            continue;
        }
        let req = match roll {
            3 => Request::nodes(1 + (next() % 2) as u32, None, true),
            4 => Request::nodes(2, Some(1 + (next() % 4) as u32), false),
            5 => Request::slots(1, 1, 1),
            _ => Request::slots(1 + (next() % 3) as u32, 1 + (next() % 2) as u32, 0),
        };
        match fx.match_allocate(&jobspec(&req), false) {
            Ok(out) => {
                let r = allocation_to_rv1(&out.allocation, 0.0, 0.0)
                    .unwrap_or_else(|e| panic!("step {step}: {e}"));
                assert!(
                    r.is_subset_of(&whole).unwrap_or(false),
                    "step {step}: outside the graph"
                );
                for (other, o) in &live {
                    assert!(
                        !r.overlaps(o).unwrap_or(true),
                        "step {step}: job {} overlaps job {other}",
                        out.jobid
                    );
                }
                live.push((out.jobid, r));
            }
            Err(FluxionError::Busy(_)) => {}
            Err(FluxionError::Ambiguous(_)) if !caps.distinguishes_busy => {}
            Err(e) => panic!("step {step}: {req:?}: unexpected {e}"),
        }
    }
}

/// A conformance check: takes a fresh instance and the capabilities to expect.
pub type Check = fn(&mut dyn Fluxion, &Capabilities);

/// Every check with its name, each to be given a fresh instance.
pub fn checks() -> Vec<(&'static str, Check)> {
    vec![
        ("not_initialized", check_not_initialized),
        ("init_rejects_garbage", check_init_rejects_garbage),
        ("first_match", check_first_match),
        ("jobids_restart_after_init", check_jobids_restart_after_init),
        ("fill_busy_cancel", check_fill_busy_cancel),
        ("unsatisfiable", check_unsatisfiable),
        ("invalid_jobspec", check_invalid_jobspec),
        ("node_requests", check_node_requests),
        ("gpus", check_gpus),
        ("policies", check_policies),
        ("reservation", check_reservation),
        ("restore", check_restore),
        ("no_overlap_sequence", check_no_overlap_sequence),
    ]
}

/// Runs every check with [`Capabilities::full`], each on a new instance from `make`.
pub fn run_all(make: &mut dyn FnMut() -> Box<dyn Fluxion>) {
    run_all_with(make, &Capabilities::full());
}

/// Runs every check with `caps`, each on a new instance from `make`.
pub fn run_all_with(make: &mut dyn FnMut() -> Box<dyn Fluxion>, caps: &Capabilities) {
    for (_name, check) in checks() {
        let mut fx = make();
        check(fx.as_mut(), caps);
    }
}
