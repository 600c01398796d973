//! Conversions between Rv1 and Fluxion's JGF.
//!
//! * [`rv1_to_jgf`]: the resource graph pancake gives Fluxion at `Init`, built
//!   the way flux-sched's `FluxionResourceGraphV1` builds it (root
//!   `/cluster0`, one `node` per rank named by its host, `core`/`gpu` children
//!   with their logical ids) but written in the maximally compatible JGF form
//!   and with `rank` on every vertex, so that a match allocation carries ranks.
//! * [`allocation_to_rv1`]: a match allocation (any writer form) back to one
//!   Rv1 for the target broker.

use std::collections::{BTreeMap, HashMap};

use crate::FluxionError;
use crate::idset::{IdSet, MAX_ID};
use crate::jgf::{Jgf, JgfBuilder, ResourceKind, VertexSpec};
use crate::rv1::{RankResources, Rv1};

/// Most vertices [`rv1_to_jgf`] will create.
pub const MAX_VERTICES: u64 = 1 << 25;

fn invalid(path: &str, reason: impl std::fmt::Display) -> FluxionError {
    FluxionError::Invalid(format!("{path}: {reason}"))
}

/// Splits a host name into (prefix, numeric suffix) the way flux-sched derives
/// a node's basename and id.
fn host_basename_id(host: &str) -> (&str, Option<i64>) {
    let digits = host.bytes().rev().take_while(u8::is_ascii_digit).count();
    let (prefix, num) = host.split_at(host.len() - digits);
    match num.parse::<i64>() {
        Ok(n) if !num.is_empty() => (prefix, Some(n)),
        _ => (host, None),
    }
}

/// Builds the resource graph of `rv1` (see the module docs). Host names must be
/// present and distinct, since they name the nodes and their paths.
pub fn rv1_to_graph(rv1: &Rv1) -> Result<Jgf, FluxionError> {
    let ranks = rv1.rank_map()?;
    if rv1.execution.nodelist.is_empty() && !ranks.is_empty() {
        return Err(invalid(
            "execution.nodelist",
            "missing; node vertices are named by host",
        ));
    }
    let total: u64 = ranks
        .values()
        .map(|r| 1 + r.cores.len() + r.gpus.len())
        .sum::<u64>()
        + 1;
    if total > MAX_VERTICES {
        return Err(invalid(
            "execution.R_lite",
            format!("{total} vertices is more than the limit of {MAX_VERTICES}"),
        ));
    }
    let mut props_by_rank: BTreeMap<u32, BTreeMap<String, String>> = BTreeMap::new();
    if let Some(props) = &rv1.execution.properties {
        for (name, set) in props {
            let set = IdSet::parse(set)
                .map_err(|e| invalid(&format!("execution.properties.{name}"), e))?;
            for r in set.iter() {
                props_by_rank
                    .entry(r)
                    .or_default()
                    .insert(name.clone(), String::new());
            }
        }
    }
    let mut seen_hosts: HashMap<&str, u32> = HashMap::new();
    let mut b = JgfBuilder::new();
    let mut uniq = 0i64;
    let root = b.add_vertex(&VertexSpec::new("cluster", 0, uniq, "/cluster0"))?;
    let mut path = String::new();
    for (&rank, res) in &ranks {
        let host = res.hostname.as_deref().unwrap_or_default();
        if let Some(other) = seen_hosts.insert(host, rank) {
            return Err(invalid(
                "execution.nodelist",
                format!(
                    "host {host:?} names both rank {other} and rank {rank}; Fluxion needs distinct host names"
                ),
            ));
        }
        let (basename, suffix) = host_basename_id(host);
        uniq += 1;
        path.clear();
        path.push_str("/cluster0/");
        path.push_str(host);
        let mut node = VertexSpec::new("node", suffix.unwrap_or(i64::from(rank)), uniq, &path);
        node.basename = Some(basename);
        node.name = Some(host);
        node.rank = i64::from(rank);
        node.properties = props_by_rank.remove(&rank);
        let nidx = b.add_vertex(&node)?;
        b.add_edge(root, nidx)?;
        let node_path_len = path.len();
        for (ty, set) in [("core", &res.cores), ("gpu", &res.gpus)] {
            for id in set.iter() {
                uniq += 1;
                path.truncate(node_path_len);
                path.push('/');
                path.push_str(ty);
                path.push_str(&id.to_string());
                let mut v = VertexSpec::new(ty, i64::from(id), uniq, &path);
                v.rank = i64::from(rank);
                let idx = b.add_vertex(&v)?;
                b.add_edge(nidx, idx)?;
            }
        }
    }
    b.build()
}

/// [`rv1_to_graph`] written as JGF text in the maximally compatible form, ready for `Init`.
pub fn rv1_to_jgf(rv1: &Rv1) -> Result<String, FluxionError> {
    Ok(rv1_to_graph(rv1)?.to_json_string())
}

/// Turns a match allocation (JGF text in the condensed ≥ v0.39 form or the
/// verbose older form) into one Rv1.
///
/// Cores and GPUs are grouped by their `node` ancestor, found through
/// containment edges or, without edges, through `/`-bounded path prefixes (so
/// `flux-sample-1` never captures `flux-sample-10`'s cores). Ranks come from
/// the graph (the node's rank, else its cores'); a node without a rank is an
/// error, since guessing would hand out the wrong cores. `nodelist` lists the
/// node names in rank order. `expiration` is `starttime + duration`, or 0 when
/// `duration` is 0 (unlimited).
pub fn allocation_to_rv1(jgf: &str, starttime: f64, duration: f64) -> Result<Rv1, FluxionError> {
    let g = Jgf::parse(jgf)?;
    graph_allocation_to_rv1(&g, starttime, duration)
}

/// [`allocation_to_rv1`] for an already parsed allocation.
pub fn graph_allocation_to_rv1(
    g: &Jgf,
    starttime: f64,
    duration: f64,
) -> Result<Rv1, FluxionError> {
    let mut ranks: BTreeMap<u32, RankResources> = BTreeMap::new();
    let mut node_rank: HashMap<usize, u32> = HashMap::new();
    let mut ids_of: BTreeMap<u32, (Vec<u32>, Vec<u32>)> = BTreeMap::new();
    for v in g.vertices() {
        let kind = v.kind();
        if kind != ResourceKind::Core && kind != ResourceKind::Gpu {
            continue;
        }
        let at = format!("graph.nodes[{}]", v.index());
        let mut cur = v.parent();
        let mut node = None;
        let mut guard = 0;
        while let Some(p) = cur {
            if g.vertex(p).kind() == ResourceKind::Node {
                node = Some(p);
                break;
            }
            cur = g.vertex(p).parent();
            guard += 1;
            if guard > g.len() {
                break;
            }
        }
        let node = node.ok_or_else(|| {
            invalid(
                &at,
                format!("{} {} is not inside a node", v.type_name(), v.path()),
            )
        })?;
        let nv = g.vertex(node);
        let rank = match node_rank.get(&node) {
            Some(&r) => r,
            None => {
                let r = if nv.rank() >= 0 { nv.rank() } else { v.rank() };
                if r < 0 || r > i64::from(MAX_ID) {
                    return Err(invalid(
                        &format!("graph.nodes[{node}].metadata.rank"),
                        format!(
                            "node {} has no broker rank ({r}); the Init graph must carry ranks",
                            nv.name()
                        ),
                    ));
                }
                let r = r as u32;
                node_rank.insert(node, r);
                r
            }
        };
        let id = v.id();
        if id < 0 || id > i64::from(MAX_ID) {
            return Err(invalid(
                &format!("{at}.metadata.id"),
                format!("{id} is not a valid logical id"),
            ));
        }
        let entry = ranks.entry(rank).or_default();
        let name = nv.name();
        match &entry.hostname {
            Some(h) if *h != name => {
                return Err(invalid(
                    &format!("graph.nodes[{node}].metadata.rank"),
                    format!("rank {rank} belongs to both {h} and {name}"),
                ));
            }
            Some(_) => {}
            None => entry.hostname = Some(name.into_owned()),
        }
        let ids = ids_of.entry(rank).or_default();
        if kind == ResourceKind::Core {
            ids.0.push(id as u32);
        } else {
            ids.1.push(id as u32);
        }
    }
    // Sets are built from sorted lists: inserting ids one by one in arbitrary
    // order would be quadratic.
    for (rank, (cores, gpus)) in ids_of {
        if let Some(e) = ranks.get_mut(&rank) {
            e.cores = IdSet::from_ids(cores);
            e.gpus = IdSet::from_ids(gpus);
        }
    }
    // Two node vertices with one name but different ranks would give a
    // nodelist with a repeated host; flux-core would accept it, but it means
    // the allocation is inconsistent.
    let mut by_name: HashMap<&str, u32> = HashMap::new();
    for (&r, res) in &ranks {
        if let Some(h) = res.hostname.as_deref()
            && let Some(other) = by_name.insert(h, r)
        {
            return Err(invalid(
                "graph.nodes",
                format!("host {h} has two ranks ({other} and {r})"),
            ));
        }
    }
    let expiration = if duration > 0.0 {
        starttime + duration
    } else {
        0.0
    };
    let r = Rv1::from_ranks(&ranks, starttime, expiration);
    // Node names become the nodelist: one that is not a host name (a
    // comma, a bracket, blanks, empty) would make an R flux-core refuses.
    r.validate().map_err(|e| {
        invalid(
            "graph.nodes",
            format!("the node names do not make a valid R ({e})"),
        )
    })?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rv1_graph_roundtrip() {
        let r = Rv1::parse(
            r#"{"version":1,"execution":{"R_lite":[{"rank":"0-1","children":{"core":"0-3"}},
            {"rank":"2","children":{"core":"0-3","gpu":"0-1"}}],"nodelist":["flux-sample-[0-2]"],
            "properties":{"amd":"2"}}}"#,
        )
        .unwrap();
        let g = rv1_to_graph(&r).unwrap();
        assert_eq!(g.len(), 1 + 3 + 12 + 2);
        let n = g.vertex(1);
        assert_eq!(
            (n.name().as_ref(), n.basename(), n.id(), n.rank()),
            ("flux-sample-0", "flux-sample-", 0, 0)
        );
        assert_eq!(g.vertex(2).path(), "/cluster0/flux-sample-0/core0");
        let text = g.to_json_string();
        // The whole graph read back as an "allocation" is the original R.
        let back = allocation_to_rv1(&text, 10.0, 0.0).unwrap();
        assert_eq!(back.rank_map().unwrap(), r.rank_map().unwrap());
        assert_eq!(back.execution.expiration, 0.0);
        let back = allocation_to_rv1(&text, 10.0, 5.0).unwrap();
        assert_eq!(
            (back.execution.starttime, back.execution.expiration),
            (10.0, 15.0)
        );
    }

    #[test]
    fn duplicate_hosts_rejected() {
        let r = Rv1::parse(r#"{"version":1,"execution":{"R_lite":[{"rank":"0-1","children":{"core":"0"}}],"nodelist":["a,a"]}}"#)
            .unwrap();
        assert!(
            rv1_to_jgf(&r)
                .unwrap_err()
                .to_string()
                .contains("distinct host names")
        );
    }

    #[test]
    fn path_prefix_is_slash_bounded() {
        // No edges: grouping must use paths, and n1 must not capture n10's core.
        let text = r#"{"graph":{"nodes":[
          {"id":"0","metadata":{"type":"cluster","id":0,"rank":-1,"paths":{"containment":"/cluster0"}}},
          {"id":"1","metadata":{"type":"node","basename":"n","id":1,"rank":1,"paths":{"containment":"/cluster0/n1"}}},
          {"id":"2","metadata":{"type":"node","basename":"n","id":10,"rank":10,"paths":{"containment":"/cluster0/n10"}}},
          {"id":"3","metadata":{"type":"core","id":7,"rank":10,"exclusive":true,"paths":{"containment":"/cluster0/n10/core7"}}},
          {"id":"4","metadata":{"type":"core","id":2,"rank":1,"exclusive":true,"paths":{"containment":"/cluster0/n1/core2"}}}]}}"#;
        let r = allocation_to_rv1(text, 0.0, 0.0).unwrap();
        let m = r.rank_map().unwrap();
        assert_eq!(m[&1].cores.to_string(), "2");
        assert_eq!(m[&10].cores.to_string(), "7");
        assert_eq!(r.execution.nodelist, vec!["n[1,10]".to_string()]);
    }

    #[test]
    fn node_names_that_are_not_host_names_are_an_error() {
        // Found by pancake-fuzz: a node named "a,b" (or "n[0-1]", or "")
        // gave an Ok R whose nodelist counts two hosts for one rank.
        for name in ["a,b", "n[0-1]", "", "a b"] {
            let text = format!(
                r#"{{"graph":{{"nodes":[
              {{"id":"1","metadata":{{"type":"node","name":{name:?},"id":0,"rank":0,"paths":{{"containment":"/c0/n0"}}}}}},
              {{"id":"2","metadata":{{"type":"core","id":0,"rank":0,"paths":{{"containment":"/c0/n0/core0"}}}}}}],
              "edges":[{{"source":"1","target":"2"}}]}}}}"#
            );
            let e = allocation_to_rv1(&text, 0.0, 0.0).unwrap_err().to_string();
            assert!(e.contains("node names"), "{name:?}: {e}");
        }
    }

    #[test]
    fn missing_rank_is_an_error() {
        let text = r#"{"graph":{"nodes":[
          {"id":"2","metadata":{"type":"node","basename":"kind-worker","id":1,"rank":-1,"paths":{"containment":"/cluster0/0/kind-worker1"}}},
          {"id":"3","metadata":{"type":"core","id":0,"rank":-1,"exclusive":true,"paths":{"containment":"/cluster0/0/kind-worker1/core0"}}}],
          "edges":[{"source":"2","target":"3"}]}}"#;
        let e = allocation_to_rv1(text, 0.0, 0.0).unwrap_err().to_string();
        assert!(e.contains("no broker rank"), "{e}");
    }
}
