//! What a grant must satisfy, and the jobspecs built around it: pure
//! functions the dispatcher (and the simulation) call.

use fluxion::{FluxionError, Request, Rv1};
use serde_json::{Value, json};

use super::JobId;

/// What the whole graph holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Nodes.
    pub nodes: u64,
    /// Cores per node (the smallest node).
    pub cores_per_node: u64,
    /// GPUs per node (the smallest node).
    pub gpus_per_node: u64,
}

impl Capacity {
    /// Capacity of an R (assumes the smallest node when nodes differ).
    pub fn of(r: &Rv1) -> Result<Capacity, FluxionError> {
        let ranks = r.rank_map()?;
        Ok(Capacity {
            nodes: ranks.len() as u64,
            cores_per_node: ranks.values().map(|n| n.cores.len()).min().unwrap_or(0),
            gpus_per_node: ranks.values().map(|n| n.gpus.len()).min().unwrap_or(0),
        })
    }

    /// Why `req` can never fit, or `None` when it might.
    pub fn why_never(&self, req: &Request) -> Option<String> {
        let slot_cores = u64::from(req.cores_per_slot);
        let slot_gpus = u64::from(req.gpus_per_slot);
        if slot_cores > self.cores_per_node {
            return Some(format!(
                "a task slot needs {slot_cores} cores, nodes have {}",
                self.cores_per_node
            ));
        }
        if slot_gpus > self.gpus_per_node {
            return Some(format!(
                "a task slot needs {slot_gpus} GPUs, nodes have {}",
                self.gpus_per_node
            ));
        }
        match req.nnodes {
            Some(n) => {
                let n = u64::from(n);
                if n > self.nodes {
                    return Some(format!(
                        "requested {n} nodes, the cluster has {}",
                        self.nodes
                    ));
                }
                let per = u64::from(req.slots);
                if per * slot_cores > self.cores_per_node || per * slot_gpus > self.gpus_per_node {
                    return Some(format!(
                        "{per} slots per node do not fit a node of {} cores and {} GPUs",
                        self.cores_per_node, self.gpus_per_node
                    ));
                }
            }
            None => {
                // Slots may spread over nodes, but each slot fits on one node.
                let by_cores = self.cores_per_node / slot_cores.max(1);
                let per_node = match self.gpus_per_node.checked_div(slot_gpus) {
                    Some(by_gpus) => by_cores.min(by_gpus),
                    None => by_cores, // no GPUs asked for
                };
                let fit = per_node * self.nodes;
                if req.total_slots() > fit {
                    return Some(format!(
                        "requested {} slots of {slot_cores} cores/{slot_gpus} GPUs, the cluster holds at most {fit}",
                        req.total_slots()
                    ));
                }
            }
        }
        None
    }
}

/// Attribute keys a user may not set on a container job (pancake owns them).
pub const RESERVED_ATTRIBUTES: &[&str] = &["alloc-bypass", "exec"];

/// Turn the queue job's jobspec into the application job's: drop what only
/// makes sense on the queue broker, add the R, and tag it for traceability.
pub fn app_jobspec(jobspec: &Value, r: &Rv1, queue_id: JobId, fluxion_id: i64) -> Value {
    let mut js = jobspec.clone();
    if let Some(sys) = js
        .pointer_mut("/attributes/system")
        .and_then(Value::as_object_mut)
    {
        for k in [
            "container",
            "exec",
            "dependencies",
            "alloc-bypass",
            "queue",
            "bank",
            "project",
        ] {
            sys.remove(k);
        }
        sys.insert("alloc-bypass".into(), json!({ "R": r }));
    }
    if let Some(attrs) = js.get_mut("attributes").and_then(Value::as_object_mut) {
        let user = attrs.entry("user").or_insert_with(|| json!({}));
        if let Some(u) = user.as_object_mut() {
            u.insert(
                "pancake".into(),
                json!({ "queue_id": queue_id, "fluxion_id": fluxion_id }),
            );
        }
    }
    js
}

/// The jobspec Fluxion sees: no environment (it is large and unused).
pub fn fluxion_jobspec(jobspec: &Value) -> String {
    let mut js = jobspec.clone();
    if let Some(sys) = js
        .pointer_mut("/attributes/system")
        .and_then(Value::as_object_mut)
    {
        sys.remove("environment");
    }
    js.to_string()
}

/// Check an R built from a Fluxion allocation against the request and the
/// container's resources. Returns the reason it is wrong.
pub fn check_grant(r: &Rv1, req: &Request, container_r: &Rv1) -> Result<(), String> {
    match r.is_subset_of(container_r) {
        Ok(true) => {}
        Ok(false) => return Err("the allocation is not inside the container's resources".into()),
        Err(e) => return Err(format!("the allocation is malformed: {e}")),
    }
    let t = r.totals().map_err(|e| e.to_string())?;
    if let Some(n) = req.nnodes
        && t.nodes != u64::from(n)
    {
        return Err(format!(
            "allocation has {} nodes, the job asked for {n}",
            t.nodes
        ));
    }
    let want_cores = req.total_cores();
    let exclusive_whole = req.node_exclusive && req.nnodes.is_some();
    if exclusive_whole {
        if t.cores < want_cores {
            return Err(format!(
                "allocation has {} cores, the job asked for {want_cores}",
                t.cores
            ));
        }
    } else if t.cores != want_cores {
        return Err(format!(
            "allocation has {} cores, the job asked for {want_cores}",
            t.cores
        ));
    }
    let want_gpus = req.total_gpus();
    if (exclusive_whole && t.gpus < want_gpus) || (!exclusive_whole && t.gpus != want_gpus) {
        return Err(format!(
            "allocation has {} GPUs, the job asked for {want_gpus}",
            t.gpus
        ));
    }
    Ok(())
}

/// A human name for a wait status, for notes.
pub(crate) fn describe_status(status: i32) -> String {
    if status & 0x7f == 0 {
        format!("exit {}", (status >> 8) & 0xff)
    } else {
        format!("signal {}", status & 0x7f)
    }
}

/// The union of several Rs (ranks merged, cores and GPUs united), for what
/// `sched.resource-status` reports as allocated. Rs that do not parse are
/// skipped.
pub fn union_of<'a>(rs: impl IntoIterator<Item = &'a Rv1>) -> Rv1 {
    let mut ranks: std::collections::BTreeMap<u32, fluxion::rv1::RankResources> =
        std::collections::BTreeMap::new();
    for r in rs {
        let Ok(m) = r.rank_map() else { continue };
        for (rank, res) in m {
            let e = ranks.entry(rank).or_default();
            e.cores = e.cores.union(&res.cores);
            e.gpus = e.gpus.union(&res.gpus);
            if e.hostname.is_none() {
                e.hostname = res.hostname;
            }
        }
    }
    // A nodelist only when every rank has a host name (from_ranks checks).
    Rv1::from_ranks(&ranks, 0.0, 0.0)
}

/// Why a jobspec's extra resource constraints cannot be honoured: pancake's
/// graph has no node properties, so a constraint (a named queue's
/// `requires`, or `--requires`) could only ever match nothing.
pub fn unsupported_constraints(jobspec: &Value) -> Option<String> {
    let c = jobspec.pointer("/attributes/system/constraints")?;
    let empty = match c {
        Value::Null => true,
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    (!empty).then(|| {
        format!(
            "resource constraints are not supported by pancake (the containers' resources have no properties): {c}"
        )
    })
}
