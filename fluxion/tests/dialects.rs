//! Every JGF dialect the reference lists, read by the parser, the matcher and
//! the allocation → Rv1 conversion.

use fluxion::jgf::{Jgf, ResourceKind};
use fluxion::matcher::{Graph, Matcher, Policy};
use fluxion::{EmbeddedFluxion, Fluxion, Request, Rv1, allocation_to_rv1};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn verbose_v037_with_in_edges_sockets_gpus_memory() {
    let g = Jgf::parse(&fixture("init-verbose-v037.json")).unwrap();
    // Reverse "in" edges are skipped: exactly one root, every other vertex has a parent.
    assert_eq!(g.roots(), vec![0]);
    let core = g
        .vertices()
        .find(|v| v.kind() == ResourceKind::Core)
        .unwrap();
    assert_eq!(
        g.vertex(core.parent().unwrap()).kind(),
        ResourceKind::Socket
    );
    let graph = Graph::from_jgf(g).unwrap();
    assert_eq!(
        (graph.node_count(), graph.total_cores(), graph.total_gpus()),
        (2, 8, 4)
    );
    assert!(graph.has_memory());
    let mut m = Matcher::new(graph, Policy::Low);
    let a = m.allocate(&Request::slots(2, 2, 1)).unwrap();
    // The allocation keeps the socket ancestors.
    let alloc = Jgf::parse(&a.jgf).unwrap();
    assert!(alloc.vertices().any(|v| v.kind() == ResourceKind::Socket));
    assert!(alloc.vertices().any(|v| v.kind() == ResourceKind::Rack));
    // Ranks are -1 in this graph, so the Rv1 conversion must refuse to guess.
    let e = allocation_to_rv1(&a.jgf, 0.0, 0.0).unwrap_err().to_string();
    assert!(e.contains("rank"), "{e}");
}

#[test]
fn v038_subsystem_edges() {
    let text = fixture("init-v038-subsystem.json");
    let g = Jgf::parse(&text).unwrap();
    assert_eq!(g.roots(), vec![0]);
    let mut fx = EmbeddedFluxion::new();
    fx.init("first", &text).unwrap();
    let out = fx
        .match_allocate(
            &Request::nodes(2, Some(4), false).to_jobspec_json(&["x"]),
            false,
        )
        .unwrap();
    let r = allocation_to_rv1(&out.allocation, 100.0, 60.0).unwrap();
    assert_eq!(r.execution.nodelist, vec!["flux-sample-[0-1]".to_string()]);
    assert_eq!(r.execution.r_lite.len(), 1);
    assert_eq!(r.execution.r_lite[0].rank, "0-1");
    assert_eq!(r.execution.r_lite[0].children["core"], "0-1");
    assert_eq!(
        (r.execution.starttime, r.execution.expiration),
        (100.0, 160.0)
    );
}

#[test]
fn condensed_v039_defaults() {
    let g = Jgf::parse(&fixture("init-condensed-v039.json")).unwrap();
    let n = g.vertex(1);
    assert_eq!(
        (n.type_name(), n.basename(), n.id(), n.rank(), n.uniq_id()),
        ("node", "node", 0, 0, 1)
    );
    assert_eq!(n.name(), "flux-sample-0");
    let graph = Graph::from_jgf(g).unwrap();
    let mut m = Matcher::new(graph, Policy::High);
    let a = m.allocate(&Request::slots(1, 1, 0)).unwrap();
    let r = allocation_to_rv1(&a.jgf, 0.0, 0.0).unwrap();
    assert_eq!(r.execution.nodelist, vec!["flux-sample-2".to_string()]);
    assert_eq!(r.execution.r_lite[0].children["core"], "1");
}

#[test]
fn match_response_verbose() {
    let r = allocation_to_rv1(&fixture("match-verbose.json"), 5.0, 0.0).unwrap();
    let m = r.rank_map().unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[&0].hostname.as_deref(), Some("node0"));
    assert_eq!(m[&0].cores.to_string(), "0-1");
    assert_eq!(r.execution.expiration, 0.0);
}

#[test]
fn match_response_condensed_no_substring_capture() {
    let r = allocation_to_rv1(&fixture("match-condensed.json"), 0.0, 0.0).unwrap();
    let m = r.rank_map().unwrap();
    assert_eq!(m[&1].hostname.as_deref(), Some("kind-worker1"));
    assert_eq!(m[&1].cores.to_string(), "0-1");
    assert_eq!(m[&10].hostname.as_deref(), Some("kind-worker10"));
    assert_eq!(m[&10].cores.to_string(), "5");
    assert_eq!(r.execution.nodelist, vec!["kind-worker[1,10]".to_string()]);
    // The same allocation without edges groups by path prefix, with the same answer.
    let mut v: serde_json::Value = serde_json::from_str(&fixture("match-condensed.json")).unwrap();
    v["graph"].as_object_mut().unwrap().remove("edges");
    let r2 = allocation_to_rv1(&v.to_string(), 0.0, 0.0).unwrap();
    assert_eq!(r2, r);
    // Serialized R passes the Rv1 parser (nodelist length, disjoint ranks).
    Rv1::parse(&r.to_json_string()).unwrap();
}

#[test]
fn jgf_v2_object_nodes() {
    let text = r#"{"graph":{"directed":true,"nodes":{
        "0":{"label":"0","metadata":{"type":"cluster","id":0,"uniq_id":0,"paths":{"containment":"/c0"}}},
        "1":{"label":"1","metadata":{"type":"node","basename":"node","id":"0","name":"node0","rank":0,"paths":{"containment":"/c0/node0"}}},
        "2":{"label":"2","metadata":{"type":"core","id":"3","rank":0,"paths":{"containment":"/c0/node0/core3"}}}},
        "edges":[{"source":"0","target":"1"},{"source":"1","target":"2"}]}}"#;
    let g = Jgf::parse(text).unwrap();
    assert_eq!(g.vertex(2).id(), 3);
    assert_eq!(g.vertex(2).parent(), Some(1));
}

#[test]
fn maximal_writer_output_reads_in_every_form() {
    // What pancake sends at Init: every field explicit, both edge metadata keys.
    let text = fluxion::conformance::sample_jgf(2, 2, 1);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let node = &v["graph"]["nodes"][1]["metadata"];
    for k in [
        "type",
        "basename",
        "name",
        "id",
        "uniq_id",
        "rank",
        "exclusive",
        "unit",
        "size",
        "paths",
    ] {
        assert!(node.get(k).is_some(), "node vertex lacks {k}");
    }
    let edge = &v["graph"]["edges"][0]["metadata"];
    assert_eq!(edge["subsystem"], "containment");
    assert_eq!(edge["name"]["containment"], "contains");
    assert!(
        v["graph"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["id"].is_string())
    );
}
