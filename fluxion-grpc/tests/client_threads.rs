//! A GrpcFluxion starts no thread that outlives it (the broker module drops
//! it before its DSO is unloaded). Alone in its test binary so that no other
//! test's threads disturb the count.

#[path = "common/bin.rs"]
mod bin;
mod common;

use std::process::Stdio;

use fluxion::Fluxion;
use fluxion_grpc::GrpcFluxion;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn no_thread_survives_the_client() {
    let daemon = bin::Daemon::start(&["--quiet"], Stdio::null());
    let before = threads();
    for _ in 0..3 {
        let mut c = GrpcFluxion::new(&daemon.address()).unwrap();
        assert!(c.info().unwrap().is_some());
        let _ = c.match_allocate(&common::jobspec(1), false);
        let _ = c.cancel(1);
        // A name needs a DNS look-up, done on the runtime's blocking pool.
        let mut named = GrpcFluxion::new(&format!("localhost:{}", daemon.port)).unwrap();
        assert!(named.info().unwrap().is_some());
        drop(named);
        drop(c);
        assert_eq!(threads(), before, "a thread outlived the client");
    }
}
