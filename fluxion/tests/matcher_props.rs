//! Property tests of the matcher against a brute-force oracle on small random graphs.

use std::collections::{BTreeMap, HashMap, HashSet};

use fluxion::matcher::{Graph, Matcher, Policy};
use fluxion::rv1::{RankResources, Rv1};
use fluxion::{FluxionError, IdSet, Request, rv1_to_jgf};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Alloc(Request),
    Cancel(usize),
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (1u32..5, 1u32..4, 0u32..3).prop_map(|(n, c, g)| Request::slots(n, c, g)),
        (1u32..4, prop::option::of(1u32..7), any::<bool>(), 1u32..3).prop_map(|(nn, nt, x, c)| {
            let mut r = Request::nodes(nn, nt, x);
            r.cores_per_slot = c;
            r
        }),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![3 => request().prop_map(Op::Alloc), 1 => (0usize..16).prop_map(Op::Cancel)],
        1..24,
    )
}

fn graph_shape() -> impl Strategy<Value = Vec<(u32, u32)>> {
    prop::collection::vec((1u32..7, 0u32..3), 1..5)
}

fn build(shape: &[(u32, u32)]) -> Graph {
    let mut m = BTreeMap::new();
    for (r, &(c, g)) in shape.iter().enumerate() {
        m.insert(
            r as u32,
            RankResources {
                hostname: Some(format!("n{r}")),
                cores: (0..c).collect::<IdSet>(),
                gpus: (0..g).collect::<IdSet>(),
            },
        );
    }
    Graph::parse(&rv1_to_jgf(&Rv1::from_ranks(&m, 0.0, 0.0)).unwrap()).unwrap()
}

/// Free resources of one node in the model.
#[derive(Debug, Clone, Copy)]
struct Free {
    cores: u32,
    gpus: u32,
    idle: bool,
}

fn cap(f: &Free, c: u32, g: u32) -> u32 {
    let mut k = f.cores.checked_div(c).unwrap_or(u32::MAX);
    if let Some(x) = f.gpus.checked_div(g) {
        k = k.min(x);
    }
    k
}

/// Naive search: can `req` be placed on nodes with `free` resources?
fn oracle(free: &[Free], req: &Request, policy_excl: bool) -> bool {
    let (c, g) = (req.cores_per_slot, req.gpus_per_slot);
    match req.nnodes {
        None => {
            // Try every split of the slots over the nodes.
            fn place(free: &[Free], i: usize, left: u32, c: u32, g: u32, excl: bool) -> bool {
                if left == 0 {
                    return true;
                }
                if i == free.len() {
                    return false;
                }
                let usable = !excl || free[i].idle;
                let most = if usable {
                    cap(&free[i], c, g).min(left)
                } else {
                    0
                };
                (0..=most).any(|k| place(free, i + 1, left - k, c, g, excl))
            }
            place(free, 0, req.slots, c, g, policy_excl)
        }
        Some(n) => {
            let excl = req.node_exclusive || policy_excl;
            (0u32..(1 << free.len())).any(|mask| {
                mask.count_ones() == n
                    && (0..free.len())
                        .filter(|i| mask & (1 << i) != 0)
                        .all(|i| (!excl || free[i].idle) && cap(&free[i], c, g) >= req.slots)
            })
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn matcher_agrees_with_oracle(shape in graph_shape(), ops in ops(), pol in 0usize..8) {
        let policy = Policy::ALL[pol];
        let graph = build(&shape);
        let mut m = Matcher::new(graph, policy);
        let totals: Vec<Free> = shape.iter().map(|&(c, g)| Free { cores: c, gpus: g, idle: true }).collect();
        // Model: (node, kind, id) -> jobid.
        let mut owner: HashMap<(usize, u8, i64), i64> = HashMap::new();
        let mut users: Vec<HashSet<i64>> = vec![HashSet::new(); shape.len()];
        let mut live: Vec<i64> = Vec::new();
        for op in ops {
            match op {
                Op::Cancel(i) => {
                    if live.is_empty() { continue; }
                    let id = live.remove(i % live.len());
                    prop_assert!(m.cancel(id));
                    prop_assert!(!m.cancel(id), "second cancel of {} must report unknown", id);
                    owner.retain(|_, j| *j != id);
                    for u in &mut users { u.remove(&id); }
                }
                Op::Alloc(req) => {
                    let free: Vec<Free> = (0..shape.len()).map(|n| {
                        let used_c = owner.keys().filter(|k| k.0 == n && k.1 == 0).count() as u32;
                        let used_g = owner.keys().filter(|k| k.0 == n && k.1 == 1).count() as u32;
                        Free { cores: shape[n].0 - used_c, gpus: shape[n].1 - used_g, idle: users[n].is_empty() }
                    }).collect();
                    let fits_now = oracle(&free, &req, policy.node_exclusive());
                    let fits_empty = oracle(&totals, &req, policy.node_exclusive());
                    match m.allocate(&req) {
                        Ok(a) => {
                            prop_assert!(fits_now, "matched {:?} but the oracle finds no room in {:?}", req, free);
                            let shares = m.shares(a.jobid).unwrap();
                            if let Some(n) = req.nnodes {
                                prop_assert_eq!(shares.len() as u32, n);
                            }
                            let mut slots = 0u64;
                            for s in &shares {
                                let excl = s.exclusive;
                                prop_assert!(users[s.node].is_empty() || !excl, "exclusive on a used node");
                                if excl {
                                    prop_assert_eq!(s.cores.len() as u32, shape[s.node].0);
                                    prop_assert_eq!(s.gpus.len() as u32, shape[s.node].1);
                                    slots += req.total_slots() / u64::from(req.nnodes.unwrap_or(1)).max(1);
                                } else {
                                    prop_assert_eq!(s.cores.len() as u32 % req.cores_per_slot, 0);
                                    slots += s.cores.len() as u64 / u64::from(req.cores_per_slot);
                                    prop_assert_eq!(
                                        s.gpus.len() as u64,
                                        s.cores.len() as u64 / u64::from(req.cores_per_slot) * u64::from(req.gpus_per_slot)
                                    );
                                }
                                for (kind, ids) in [(0u8, &s.cores), (1u8, &s.gpus)] {
                                    for &id in ids {
                                        prop_assert!(owner.insert((s.node, kind, id), a.jobid).is_none(), "overlap on node {} id {}", s.node, id);
                                    }
                                }
                                users[s.node].insert(a.jobid);
                            }
                            if !shares.iter().any(|s| s.exclusive) {
                                prop_assert_eq!(slots, req.total_slots());
                            }
                            // Nodes already held exclusively by someone else were not touched.
                            live.push(a.jobid);
                        }
                        Err(FluxionError::Busy(_)) => {
                            prop_assert!(!fits_now, "busy for {:?} but the oracle finds room in {:?}", req, free);
                            prop_assert!(fits_empty, "busy but the request can never fit");
                        }
                        Err(FluxionError::Unsatisfiable(why)) => {
                            prop_assert!(!fits_empty, "unsatisfiable ({}) but fits the empty graph", why);
                        }
                        Err(e) => prop_assert!(false, "unexpected error {}", e),
                    }
                }
            }
            let model_free: u64 = shape.iter().map(|s| u64::from(s.0)).sum::<u64>() - owner.keys().filter(|k| k.1 == 0).count() as u64;
            prop_assert_eq!(m.free_cores(), model_free);
            let model_gfree: u64 = shape.iter().map(|s| u64::from(s.1)).sum::<u64>() - owner.keys().filter(|k| k.1 == 1).count() as u64;
            prop_assert_eq!(m.free_gpus(), model_gfree);
        }
        // Cancelling everything restores the empty graph.
        for id in live { m.cancel(id); }
        prop_assert_eq!(m.free_cores(), shape.iter().map(|s| u64::from(s.0)).sum::<u64>());
    }
}
