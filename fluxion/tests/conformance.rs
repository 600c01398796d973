//! The public conformance suite, run against the embedded matcher.

use fluxion::conformance::{self, Capabilities};
use fluxion::{EmbeddedFluxion, Fluxion};

fn run(check: fn(&mut dyn Fluxion, &Capabilities)) {
    let mut fx = EmbeddedFluxion::new();
    check(&mut fx, &Capabilities::full());
}

#[test]
fn run_all_embedded() {
    conformance::run_all(&mut || Box::new(EmbeddedFluxion::new()) as Box<dyn Fluxion>);
}

#[test]
fn run_all_embedded_public_service_profile() {
    conformance::run_all_with(
        &mut || Box::new(EmbeddedFluxion::new()) as Box<dyn Fluxion>,
        &Capabilities::public_service(),
    );
}

#[test]
fn each_check_by_name() {
    for (name, check) in conformance::checks() {
        eprintln!("check {name}");
        run(check);
    }
}

#[test]
fn failed_init_keeps_previous_graph() {
    let mut fx = EmbeddedFluxion::new();
    fx.init("first", &conformance::sample_jgf(1, 2, 0)).unwrap();
    let js = fluxion::Request::slots(1, 1, 0).to_jobspec_json(&["true"]);
    fx.match_allocate(&js, false).unwrap();
    assert!(fx.init("first", "{}").is_err());
    let out = fx.match_allocate(&js, false).unwrap();
    assert_eq!(out.jobid, 2);
}
