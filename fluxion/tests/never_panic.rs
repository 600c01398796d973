//! Parsers never panic, whatever the input.

use fluxion::jgf::Jgf;
use fluxion::{Jobspec, Rv1, allocation_to_rv1};
use proptest::prelude::*;

/// JSON-ish text: fragments of the real formats glued together at random.
fn jsonish() -> impl Strategy<Value = String> {
    let frag = prop_oneof![
        Just("{".to_string()),
        Just("}".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just(",".to_string()),
        Just(":".to_string()),
        Just("\"graph\"".to_string()),
        Just("\"nodes\"".to_string()),
        Just("\"edges\"".to_string()),
        Just("\"metadata\"".to_string()),
        Just("\"type\"".to_string()),
        Just("\"node\"".to_string()),
        Just("\"core\"".to_string()),
        Just("\"paths\"".to_string()),
        Just("\"containment\"".to_string()),
        Just("\"/c0/n1\"".to_string()),
        Just("\"id\"".to_string()),
        Just("\"source\"".to_string()),
        Just("\"target\"".to_string()),
        Just("\"version\"".to_string()),
        Just("\"resources\"".to_string()),
        Just("\"slot\"".to_string()),
        Just("\"count\"".to_string()),
        Just("\"with\"".to_string()),
        Just("\"execution\"".to_string()),
        Just("\"R_lite\"".to_string()),
        Just("\"rank\"".to_string()),
        Just("\"children\"".to_string()),
        Just("\"0-3\"".to_string()),
        Just("\"n[0-9999999]\"".to_string()),
        Just("\"nodelist\"".to_string()),
        Just("1".to_string()),
        Just("-1".to_string()),
        Just("1e999".to_string()),
        Just("null".to_string()),
        Just("true".to_string()),
        "[ -~]{0,6}".prop_map(|s| s),
    ];
    prop::collection::vec(frag, 0..40).prop_map(|v| v.concat())
}

fn structured() -> impl Strategy<Value = String> {
    // Valid documents with one value replaced by something random.
    let base = [
        fluxion::conformance::sample_jgf(1, 2, 1),
        fluxion::Request::nodes(2, Some(3), true).to_jobspec_json(&["x"]),
        fluxion::conformance::sample_rv1(2, 2, 0).to_json_string(),
    ];
    (0usize..3, any::<prop::sample::Index>(), jsonish()).prop_map(move |(b, idx, junk)| {
        let s = &base[b];
        let mut cut = idx.index(s.len());
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}{}{}", &s[..cut], junk, &s[cut..])
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn parsers_never_panic(text in prop_oneof![jsonish(), structured()]) {
        let _ = Jobspec::parse(&text);
        let _ = Rv1::parse(&text).map(|r| (r.totals(), fluxion::rv1_to_jgf(&r)));
        let _ = Jgf::parse(&text).map(fluxion::Graph::from_jgf);
        let _ = allocation_to_rv1(&text, 0.0, 10.0);
        let _ = fluxion::IdSet::parse(&text);
        let _ = fluxion::hostlist::parse(&text);
    }

    #[test]
    fn embedded_never_panics(jgf in structured(), js in structured()) {
        use fluxion::Fluxion;
        let mut fx = fluxion::EmbeddedFluxion::new();
        let _ = fx.init("first", &jgf);
        let _ = fx.match_allocate(&js, true);
        let _ = fx.restore(3, &js);
        let _ = fx.restore(4, &jgf);
    }
}
