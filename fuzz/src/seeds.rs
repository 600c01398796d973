//! Valid inputs to start from, built with the crates' own writers (as
//! `flux submit`, flux-core and Fluxion produce them) and from their test
//! fixtures, plus random *valid* instances (a grammar generator) that the
//! mutators then break.

use std::collections::BTreeMap;

use fluxion::conformance::{sample_jgf, sample_rv1};
use fluxion::jgf::{Jgf, JgfWriter, Style};
use fluxion::jobspec::MemoryRequest;
use fluxion::rv1::RankResources;
use fluxion::{EmbeddedFluxion, Fluxion, IdSet, Request, Rv1, rv1_to_jgf};
use serde_json::{Value, json};

use crate::rng::Rng;

pub const FIXTURE_INIT_V037: &str =
    include_str!("../../fluxion/tests/fixtures/init-verbose-v037.json");
pub const FIXTURE_INIT_V038: &str =
    include_str!("../../fluxion/tests/fixtures/init-v038-subsystem.json");
pub const FIXTURE_INIT_V039: &str =
    include_str!("../../fluxion/tests/fixtures/init-condensed-v039.json");
pub const FIXTURE_MATCH_VERBOSE: &str =
    include_str!("../../fluxion/tests/fixtures/match-verbose.json");
pub const FIXTURE_MATCH_CONDENSED: &str =
    include_str!("../../fluxion/tests/fixtures/match-condensed.json");

/// The Rv1 example of the rv1 module docs (RFC 20 shape with a GPU).
pub const RV1_EXAMPLE: &str = r#"{"version":1,"execution":{"R_lite":[{"rank":"0","children":{"core":"0-3"}},
 {"rank":"1","children":{"core":"4-5","gpu":"0"}}],
 "nodelist":["flux-sample-[0-1]"],"starttime":1720000000.0,"expiration":1720003600.0}}"#;

pub const UNITS: &[&str] = &["B", "KB", "MB", "GB", "GiB", "MiB", "TB", "k", ""];

/// A random request shaped like `flux submit` writes them.
pub fn random_request(rng: &mut Rng) -> Request {
    let count = |rng: &mut Rng| -> u32 {
        if rng.one_in(30) {
            *rng.pick(&[0u32, 1 << 24, (1 << 24) + 1, u32::MAX])
        } else {
            1 + rng.small(15) as u32
        }
    };
    let mut r = if rng.one_in(2) {
        let (n, c) = (count(rng), count(rng));
        let g = if rng.one_in(3) { count(rng) } else { 0 };
        Request::slots(n, c, g)
    } else {
        let nn = count(rng);
        let nt = if rng.one_in(3) {
            None
        } else {
            Some(count(rng))
        };
        let mut r = Request::nodes(nn, nt, rng.one_in(3));
        if rng.one_in(3) {
            r.cores_per_slot = count(rng);
        }
        if rng.one_in(4) {
            r.gpus_per_slot = count(rng);
        }
        r
    };
    if rng.one_in(4) {
        r.memory_per_slot = Some(MemoryRequest {
            count: 1 + rng.small(64),
            unit: {
                let u = *rng.pick(UNITS);
                (!u.is_empty()).then(|| u.to_string())
            },
        });
    }
    if rng.one_in(2) {
        r.duration = *rng.pick(&[0, 1, 60, 3600, 1 << 40, u64::MAX / 2]);
    }
    if rng.one_in(2) {
        r.container = Some(rng.pick(&["lammps", "ior", "chatterbug"]).to_string());
    }
    r
}

/// A jobspec as `flux submit` writes it for `req`, with the attributes the
/// CLI adds (environment, cwd, shell options, user attributes).
pub fn jobspec_text(rng: &mut Rng, req: &Request) -> String {
    let text = req.to_jobspec_json(&["lmp", "-in", "in.lj"]);
    if rng.one_in(3) {
        return text;
    }
    let Ok(mut v) = serde_json::from_str::<Value>(&text) else {
        return text;
    };
    let sys = &mut v["attributes"]["system"];
    sys["cwd"] = json!("/home/flux");
    sys["environment"] = json!({"HOME": "/home/flux", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"});
    if rng.one_in(2) {
        sys["shell"] = json!({"options": {"rlimit": {"nofile": 1024}, "cpu-affinity": "per-task"}});
    }
    if rng.one_in(3) {
        sys["duration"] = json!(*rng.pick(&[0.0, 0.5, 59.9, 1e12]));
    }
    if rng.one_in(3) {
        sys["queue"] = json!("batch");
        sys["dependencies"] = json!([{"scheme": "afterok", "value": 12}]);
    }
    if rng.one_in(3) {
        v["attributes"]["user"] = json!({"note": "ƒ", "app_id": 3});
    }
    if rng.one_in(4) {
        v["tasks"][0]["count"] = json!({"total": 1 + rng.small(64)});
    }
    v.to_string()
}

/// Every jobspec seed: a fixed set of CLI shapes and the conformance ones.
pub fn jobspecs() -> Vec<String> {
    let mut out = vec![
        Request::slots(1, 1, 0).to_jobspec_json(&["true"]),
        Request::slots(4, 2, 1).to_jobspec_json(&["hostname"]),
        Request::nodes(2, Some(8), false).to_jobspec_json(&["lmp"]),
        Request::nodes(2, None, true).to_jobspec_json(&["sleep", "1"]),
        Request::nodes(1, Some(1), true)
            .with_duration(60)
            .to_jobspec_json(&["x"]),
    ];
    let mut rng = Rng::new(1);
    for _ in 0..20 {
        let r = random_request(&mut rng);
        out.push(jobspec_text(&mut rng, &r));
    }
    let mut mem = Request::slots(2, 1, 0);
    mem.memory_per_slot = Some(MemoryRequest {
        count: 4,
        unit: Some("GB".into()),
    });
    out.push(mem.to_jobspec_json(&["x"]));
    out
}

fn hostname(rng: &mut Rng, style: usize, rank: u32) -> String {
    match style {
        0 => format!("flux-sample-{rank}"),
        1 => format!("n{rank:03}"),
        2 => format!("node{}", u64::from(rank) * 2),
        3 => format!("h{}x", rank),
        4 => format!("ƒ{rank}"),
        _ => format!("{}{}", rng.pick(&["a", "b", "n", "n0"]), rank),
    }
}

/// A random valid-ish Rv1 (distinct host names; cores and GPUs per rank).
pub fn random_rv1(rng: &mut Rng) -> Rv1 {
    let nodes = match rng.below(10) {
        0 => 0,
        1 => 1 + rng.small(200) as u32,
        _ => 1 + rng.small(6) as u32,
    };
    let base = if rng.one_in(4) {
        rng.range(0, u64::from(u32::MAX - 300)) as u32
    } else {
        0
    };
    let style = rng.below(6);
    let hosts = !rng.one_in(6);
    let mut ranks = BTreeMap::new();
    let mut rank = base;
    for _ in 0..nodes {
        let ncores = rng.small(16) as u32;
        let cores = if rng.one_in(4) {
            IdSet::from_ids((0..ncores).filter(|_| rng.one_in(2)))
        } else {
            let lo = if rng.one_in(5) {
                rng.small(64) as u32
            } else {
                0
            };
            IdSet::from_ids(lo..lo + ncores)
        };
        let gpus = if rng.one_in(3) {
            IdSet::from_ids(0..rng.small(4) as u32)
        } else {
            IdSet::new()
        };
        ranks.insert(
            rank,
            RankResources {
                hostname: hosts.then(|| hostname(rng, style, rank)),
                cores,
                gpus,
            },
        );
        rank = rank.saturating_add(
            1 + if rng.one_in(4) {
                rng.small(5) as u32
            } else {
                0
            },
        );
    }
    let start = *rng.pick(&[0.0, 1.0, 1_720_000_000.0, 1e15]);
    let exp = *rng.pick(&[0.0, start + 60.0, start - 1.0, 1e300]);
    let mut r = Rv1::from_ranks(&ranks, start, exp);
    if rng.one_in(5) && !ranks.is_empty() {
        let first = *ranks.keys().next().unwrap_or(&0);
        let mut p = BTreeMap::new();
        p.insert("amd".to_string(), first.to_string());
        r.execution.properties = Some(p);
    }
    if rng.one_in(6) {
        r.execution.nslots = Some(rng.small(100));
    }
    r
}

/// An Rv1 as text, sometimes with extra members flux-core keeps.
pub fn rv1_text(rng: &mut Rng, r: &Rv1) -> String {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    if rng.one_in(4) {
        v["scheduling"] = json!({"writer": "fluxion", "graph": {"nodes": [], "edges": []}});
    }
    if rng.one_in(5) {
        v["attributes"] = json!({"system": {"scheduler": {"queue": "batch"}}});
    }
    v.to_string()
}

pub fn rv1s() -> Vec<String> {
    let mut out = vec![
        RV1_EXAMPLE.to_string(),
        sample_rv1(1, 1, 0).to_json_string(),
        sample_rv1(4, 10, 2).to_json_string(),
        sample_rv1(2, 4, 0).to_json_string(),
        r#"{"version":1,"execution":{"R_lite":[{"rank":"0-1","children":{"core":"0-3"}},{"rank":"1","children":{"core":"4-7","gpu":"0-1"}}],"nodelist":["n[0-1]"],"properties":{"big":"1"},"starttime":0,"expiration":0}}"#.to_string(),
        r#"{"version":1,"execution":{"R_lite":[{"rank":"0","children":{"core":"0"}}],"starttime":0,"expiration":0}}"#.to_string(),
    ];
    let mut rng = Rng::new(2);
    for _ in 0..20 {
        let r = random_rv1(&mut rng);
        out.push(rv1_text(&mut rng, &r));
    }
    out
}

/// JGF in another dialect: condensed writer, v2 object nodes, old edge
/// labels, reverse edges, no edges, shuffled vertices.
pub fn jgf_dialect(rng: &mut Rng, full: &str) -> String {
    let Ok(g) = Jgf::parse(full) else {
        return full.to_string();
    };
    match rng.below(7) {
        0 => full.to_string(),
        1 => {
            let mut w = JgfWriter::new(Style::Condensed);
            for v in g.vertices() {
                w.vertex(&v, v.exclusive(), v.size());
            }
            for v in g.vertices() {
                if let Some(p) = v.parent() {
                    w.edge(g.vertex(p).uniq_id(), v.uniq_id());
                }
            }
            w.finish()
        }
        k => {
            let Ok(mut v) = serde_json::from_str::<Value>(full) else {
                return full.to_string();
            };
            let graph = &mut v["graph"];
            match k {
                2 => {
                    // JGF v2: nodes keyed by id.
                    let mut m = serde_json::Map::new();
                    if let Some(nodes) = graph["nodes"].as_array() {
                        for n in nodes {
                            let id = n["id"].as_str().unwrap_or("x").to_string();
                            m.insert(id, json!({"metadata": n["metadata"].clone()}));
                        }
                    }
                    graph["nodes"] = Value::Object(m);
                }
                3 => {
                    // v0.37: {"name": {"containment": "contains"}} and reverse "in" edges.
                    let mut extra = Vec::new();
                    if let Some(edges) = graph["edges"].as_array_mut() {
                        for e in edges.iter_mut() {
                            e["metadata"] = json!({"name": {"containment": "contains"}});
                            extra.push(json!({"source": e["target"], "target": e["source"],
                                "metadata": {"name": {"containment": "in"}}}));
                        }
                        edges.extend(extra);
                    }
                }
                4 => {
                    // v0.38 subsystem label, plus an edge of another subsystem.
                    if let Some(edges) = graph["edges"].as_array_mut() {
                        for e in edges.iter_mut() {
                            e["metadata"] = json!({"subsystem": "containment"});
                        }
                        if let Some(first) = edges.first().cloned() {
                            let mut o = first;
                            o["metadata"] = json!({"subsystem": "power"});
                            edges.push(o);
                        }
                    }
                }
                5 => {
                    // No edges: parents by path.
                    if let Some(o) = graph.as_object_mut() {
                        o.remove("edges");
                    }
                }
                _ => {
                    if let Some(nodes) = graph["nodes"].as_array_mut() {
                        for i in (1..nodes.len()).rev() {
                            let j = rng.below(i + 1);
                            nodes.swap(i, j);
                        }
                    }
                }
            }
            v.to_string()
        }
    }
}

/// A random Init graph: a random Rv1 with distinct hosts, as JGF, in a random dialect.
pub fn random_jgf(rng: &mut Rng) -> String {
    for _ in 0..4 {
        let mut r = random_rv1(rng);
        if r.execution.nodelist.is_empty() {
            continue;
        }
        if let Ok(text) = rv1_to_jgf(&r) {
            return jgf_dialect(rng, &text);
        }
        r.execution.properties = None;
    }
    sample_jgf(2, 4, 1)
}

pub fn jgfs() -> Vec<String> {
    let mut out = vec![
        sample_jgf(1, 1, 0),
        sample_jgf(2, 4, 1),
        sample_jgf(4, 10, 2),
        FIXTURE_INIT_V037.to_string(),
        FIXTURE_INIT_V038.to_string(),
        FIXTURE_INIT_V039.to_string(),
    ];
    let mut rng = Rng::new(3);
    for _ in 0..20 {
        out.push(random_jgf(&mut rng));
    }
    out
}

/// Match allocations (condensed JGF, as a match returns them) of random
/// requests on random graphs.
pub fn random_allocations(rng: &mut Rng, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut fx = EmbeddedFluxion::new();
    let policies = ["first", "low", "high", "lonode", "hinodex"];
    if fx.init(rng.pick_str(&policies), &random_jgf(rng)).is_err() {
        return out;
    }
    for _ in 0..n * 3 {
        let req = random_request(rng);
        let js = req.to_jobspec_json(&["x"]);
        if let Ok(m) = fx.match_allocate(&js, rng.one_in(3)) {
            out.push(m.allocation);
            if out.len() >= n {
                break;
            }
        }
    }
    out
}

pub fn allocations() -> Vec<String> {
    let mut out = vec![
        FIXTURE_MATCH_CONDENSED.to_string(),
        FIXTURE_MATCH_VERBOSE.to_string(),
    ];
    let mut rng = Rng::new(4);
    for _ in 0..8 {
        out.extend(random_allocations(&mut rng, 4));
    }
    out
}

/// Journal responses (`job-manager.events-journal`) of queue and application brokers.
pub fn journal_entries() -> Vec<String> {
    let r = sample_rv1(2, 4, 0);
    vec![
        r#"{"id":-1,"events":[]}"#.to_string(),
        r#"{"id":1234,"events":[{"timestamp":1.5,"name":"submit","context":{"userid":0,"urgency":16}}],"jobspec":{"attributes":{"system":{"container":"ior"}}}}"#.to_string(),
        r#"{"id":9,"events":[{"timestamp":1,"name":"submit","context":{}},{"timestamp":2,"name":"dependency-add","context":{"description":"pancake"}},{"timestamp":3,"name":"memo","context":{"container":"ior","fluxion_id":4,"R":{"version":1,"execution":{"R_lite":[{"rank":"1","children":{"core":"2-3"}}],"starttime":0,"expiration":0,"nodelist":["n1"]}}}},{"timestamp":4,"name":"memo","context":{"app_id":123}},{"timestamp":5,"name":"dependency-remove","context":{"description":"pancake"}},{"timestamp":6,"name":"alloc","context":{"bypass":true}},{"timestamp":7,"name":"start","context":{}}]}"#.to_string(),
        json!({"id": 77, "events": [{"timestamp": 1, "name": "submit", "context": {}}],
               "jobspec": {"attributes": {"user": {"pancake": {"queue_id": 5, "fluxion_id": 1}},
                            "system": {"alloc-bypass": {"R": r}}}}}).to_string(),
        r#"{"id":77,"events":[{"timestamp":2,"name":"start","context":{}},{"timestamp":3,"name":"finish","context":{"status":768}},{"timestamp":4,"name":"exception","context":{"type":"cancel","severity":0,"note":"x"}},{"timestamp":5,"name":"clean","context":{}}]}"#.to_string(),
        r#"{"id":5,"events":[{"timestamp":1,"name":"urgency","context":{"urgency":0}},{"timestamp":1,"name":"priority","context":{"priority":4294967295}},{"timestamp":2,"name":"exception","context":{"type":"timeout","severity":0}}]}"#.to_string(),
    ]
}

pub fn eventlog_lines() -> Vec<String> {
    vec![
        r#"{"timestamp":1700000000.25,"name":"submit","context":{"userid":1000,"urgency":16,"flags":0,"version":1}}"#.to_string(),
        r#"{"timestamp":1700000001,"name":"finish","context":{"status":0}}"#.to_string(),
        r#"{"timestamp":1700000001,"name":"exception","context":{"type":"exec","severity":0,"note":"task 0: start failed","userid":1000}}"#.to_string(),
        r#"{"timestamp":1700000002,"name":"clean"}"#.to_string(),
    ]
}

/// Module arguments and `[pancake]` tables.
pub fn options() -> Vec<Vec<String>> {
    let a = |v: &[&str], conf: Value| {
        vec![
            serde_json::to_string(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap_or_default(),
            conf.to_string(),
        ]
    };
    vec![
        a(&[], json!({})),
        a(&["fluxion=grpc://127.0.0.1:4242"], json!({})),
        a(
            &[
                "policy=lonode",
                "queue-policy=easy",
                "view=/mnt/flux/view",
                "broker=lammps=local:///tmp/l",
                "broker=ior=local:///tmp/i",
                "strict=true",
                "plugin=/x/pancake-bypass.so",
                "lost-grace=5m",
            ],
            json!({}),
        ),
        a(
            &["fluxion=grpc://a:1"],
            json!({"pancake": {"fluxion": "grpc://b:2", "brokers": {"a": "local:///a"},
                   "queue_policy": "easy", "lost_grace": 30, "strict": true}}),
        ),
        a(
            &["broker=x=local:///y"],
            json!({"pancake": {"brokers": {"x": "local:///z"}}}),
        ),
        a(
            &["lost-grace=1.5h"],
            json!({"resource": {"noverify": true}, "pancake": {"policy": "hinodex"}}),
        ),
    ]
}

/// `pancake.status` answers for `flux pancake`.
pub fn status_answers() -> Vec<String> {
    let g = sample_rv1(2, 4, 1);
    let r = json!({"version": 1, "execution": {"R_lite": [{"rank": "0", "children": {"core": "0-1"}}],
                   "nodelist": ["flux-sample-0"], "starttime": 0.0, "expiration": 0.0}});
    let container = |name: &str, state: &str| {
        json!({"name": name, "uri": format!("local:///tmp/{name}"), "state": state,
               "reason": null, "strict": false, "waiting": 1, "running": 1})
    };
    let full = json!({
        "version": "0.1.0", "flux-core": "0.88.0", "uptime": 75.0, "worker": "pancake-worker",
        "fluxion": {"backend": "embedded", "ready": true},
        "containers": [container("lammps", "connected"), container("ior", "connected"),
                       container("chatterbug", "lost")],
        "jobs": [
            {"id": 1234, "container": "lammps", "phase": "running", "fluxion_id": 1,
             "app_id": 77, "R": r, "progress": {"queue_started": true}},
            {"id": 1235, "container": "ior", "phase": "waiting", "fluxion_id": null,
             "app_id": null, "R": null, "progress": {}},
            {"id": 1236, "container": "chatterbug", "phase": "running", "fluxion_id": 2,
             "app_id": 78, "R": r, "progress": {}},
        ],
        "graph": g,
        "stats": {"matches": 4, "granted": 3, "freed": 1, "forwarded": 3},
    });
    let mut empty = full.clone();
    empty["jobs"] = json!([]);
    empty["fluxion"] = json!({"backend": "grpc://127.0.0.1:1", "ready": false});
    vec![full.to_string(), empty.to_string()]
}
