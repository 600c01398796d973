//! Shared helpers for the tier-2 tests.

#![allow(dead_code)]

use pancake_pod::{Pod, PodSpec, skip_reason};

/// True (after saying so loudly) when tier 2 cannot run here.
pub fn skip(test: &str) -> bool {
    match skip_reason() {
        Some(reason) => {
            eprintln!("SKIP {test}: tier 2 needs flux-core ({reason})");
            true
        }
        None => false,
    }
}

/// Start a pod, or return `None` (after saying so loudly) when flux-core is
/// not available, so the test passes as skipped.
pub fn pod_or_skip(test: &str, spec: PodSpec) -> Option<Pod> {
    if skip(test) {
        return None;
    }
    Some(Pod::start(spec).unwrap_or_else(|e| panic!("{test}: starting the pod: {e}")))
}

/// A pod with just the queue broker and one application container.
pub fn small_spec() -> PodSpec {
    PodSpec {
        containers: vec!["app".into()],
        nodes: 2,
        cores: 4,
        queue_size: 1,
        ..PodSpec::default()
    }
}

/// `flux python -c CODE` against a broker, for RPCs the CLI has no command for.
pub fn rpc(b: &pancake_pod::Broker, topic: &str, payload: &str) -> Result<String, String> {
    let code = format!(
        "import flux, json, sys\ntry:\n    print(json.dumps(flux.Flux().rpc({topic:?}, json.loads({payload:?})).get()))\nexcept OSError as e:\n    print(f'ERROR {{e.errno}} {{e.strerror}}')\n    sys.exit(1)"
    );
    let out = b.output(&["python", "-c", &code])?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// Number of threads of process `pid`.
pub fn threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The broker log of `b` (`flux dmesg`).
pub fn dmesg(b: &pancake_pod::Broker) -> String {
    b.run(&["dmesg"]).unwrap_or_default()
}
