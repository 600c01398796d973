//! Shared test helpers: a small fake Fluxion and JGF/jobspec generators.
#![allow(dead_code)]

use std::collections::HashMap;

use fluxion::{Fluxion, FluxionError, MatchOutcome};
use serde_json::{Value, json};

/// A tiny stand-in Fluxion counting cores: enough to exercise the transport.
/// A jobspec asks for `resources[0].count` cores.
#[derive(Debug, Default)]
pub struct FakeFluxion {
    total: Option<u64>,
    used: HashMap<i64, u64>,
    next_id: i64,
}

fn count_cores(jgf: &Value) -> Result<u64, FluxionError> {
    let nodes = jgf
        .pointer("/graph/nodes")
        .and_then(Value::as_array)
        .ok_or_else(|| FluxionError::Invalid("JGF: graph.nodes missing".into()))?;
    Ok(nodes
        .iter()
        .filter(|n| n.pointer("/metadata/type").and_then(Value::as_str) == Some("core"))
        .count() as u64)
}

/// Cores a jobspec `resources` list asks for: counts multiplied down to `core`.
fn cores_wanted(resources: &Value) -> u64 {
    resources
        .as_array()
        .map(|list| {
            list.iter()
                .map(|r| {
                    let count = r.get("count").and_then(Value::as_u64).unwrap_or(0);
                    if r.get("type").and_then(Value::as_str) == Some("core") {
                        count
                    } else {
                        count * r.get("with").map(cores_wanted).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

impl FakeFluxion {
    pub fn free(&self) -> u64 {
        self.total.unwrap_or(0) - self.used.values().sum::<u64>()
    }
}

impl Fluxion for FakeFluxion {
    fn init(&mut self, policy: &str, jgf: &str) -> Result<(), FluxionError> {
        if !matches!(policy, "" | "first" | "low" | "high" | "lonode" | "hinode") {
            return Err(FluxionError::Invalid(format!("unknown policy {policy:?}")));
        }
        let v: Value =
            serde_json::from_str(jgf).map_err(|e| FluxionError::Invalid(format!("JGF: {e}")))?;
        let total = count_cores(&v)?;
        self.total = Some(total);
        self.used.clear();
        self.next_id = 1;
        Ok(())
    }

    fn match_allocate(
        &mut self,
        jobspec: &str,
        reserve: bool,
    ) -> Result<MatchOutcome, FluxionError> {
        let total = self.total.ok_or(FluxionError::NotInitialized)?;
        let v: Value = serde_json::from_str(jobspec)
            .map_err(|e| FluxionError::Invalid(format!("jobspec: {e}")))?;
        let n = v
            .get("resources")
            .map(cores_wanted)
            .filter(|n| *n > 0)
            .ok_or_else(|| FluxionError::Invalid("jobspec: no cores requested".into()))?;
        if n > total {
            return Err(FluxionError::Unsatisfiable(format!("{n} cores > {total}")));
        }
        let busy = n > self.free();
        if busy && !reserve {
            return Err(FluxionError::Busy(format!(
                "{n} cores > {} free",
                self.free()
            )));
        }
        let jobid = self.next_id;
        self.next_id += 1;
        if !busy {
            self.used.insert(jobid, n);
        }
        let nodes: Vec<Value> = (0..n)
            .map(|i| json!({"id": i.to_string(), "metadata": {"type": "core", "id": i}}))
            .collect();
        Ok(MatchOutcome {
            jobid,
            allocation: json!({"graph": {"nodes": nodes, "edges": []}}).to_string(),
            reserved: busy,
            at: if busy { 3600 } else { 0 },
            overhead: 0.0001,
        })
    }

    fn cancel(&mut self, jobid: i64) -> Result<(), FluxionError> {
        self.total.ok_or(FluxionError::NotInitialized)?;
        self.used.remove(&jobid);
        Ok(())
    }

    fn restore(&mut self, jobid: i64, allocation: &str) -> Result<(), FluxionError> {
        self.total.ok_or(FluxionError::NotInitialized)?;
        let v: Value = serde_json::from_str(allocation)
            .map_err(|e| FluxionError::Invalid(format!("allocation: {e}")))?;
        let n = count_cores(&v)?;
        if n > self.free() {
            return Err(FluxionError::Busy("restore: resources taken".into()));
        }
        self.used.insert(jobid, n);
        self.next_id = self.next_id.max(jobid + 1);
        Ok(())
    }
}

/// An RFC 25 V1 jobspec asking for one slot of `cores` cores (the shape
/// `flux submit -c N` produces).
pub fn jobspec(cores: u64) -> String {
    json!({
        "version": 1,
        "resources": [{"type": "slot", "count": 1, "label": "task",
                       "with": [{"type": "core", "count": cores}]}],
        "tasks": [{"command": ["true"], "slot": "task", "count": {"per_slot": 1}}],
        "attributes": {"system": {"duration": 0}}
    })
    .to_string()
}

/// Like [`jobspec`], with `attributes.system.duration` = `seconds`.
pub fn jobspec_for(cores: u64, seconds: u64) -> String {
    let mut v: Value = serde_json::from_str(&jobspec(cores)).unwrap();
    v["attributes"]["system"]["duration"] = json!(seconds);
    v.to_string()
}

/// A verbose ("maximal") JGF of one cluster with `nodes` nodes of `cores`
/// cores each, written by hand (every vertex field, parent→child edges).
pub fn jgf(nodes: usize, cores: usize) -> String {
    let mut out = String::with_capacity(nodes * cores * 330 + 1024);
    let mut edges = String::with_capacity(nodes * cores * 120);
    out.push_str("{\"graph\":{\"nodes\":[");
    let vertex = |out: &mut String, uniq: usize, ty: &str, id: usize, rank: i64, path: &str| {
        if uniq > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            "{{\"id\":\"{uniq}\",\"metadata\":{{\"type\":\"{ty}\",\"basename\":\"{ty}\",\
             \"name\":\"{ty}{id}\",\"id\":{id},\"uniq_id\":{uniq},\"rank\":{rank},\
             \"exclusive\":false,\"unit\":\"\",\"size\":1,\
             \"paths\":{{\"containment\":\"{path}\"}}}}}}"
        ));
    };
    let edge = |edges: &mut String, src: usize, dst: usize| {
        if !edges.is_empty() {
            edges.push(',');
        }
        edges.push_str(&format!(
            "{{\"source\":\"{src}\",\"target\":\"{dst}\",\"metadata\":{{\"name\":\
             {{\"containment\":\"contains\"}},\"subsystem\":\"containment\"}}}}"
        ));
    };
    vertex(&mut out, 0, "cluster", 0, -1, "/cluster0");
    let mut uniq = 1;
    for n in 0..nodes {
        let node_uniq = uniq;
        uniq += 1;
        vertex(
            &mut out,
            node_uniq,
            "node",
            n,
            n as i64,
            &format!("/cluster0/node{n}"),
        );
        edge(&mut edges, 0, node_uniq);
        for c in 0..cores {
            vertex(
                &mut out,
                uniq,
                "core",
                c,
                n as i64,
                &format!("/cluster0/node{n}/core{c}"),
            );
            edge(&mut edges, node_uniq, uniq);
            uniq += 1;
        }
    }
    out.push_str("],\"edges\":[");
    out.push_str(&edges);
    out.push_str("]}}");
    out
}
