//! The `fluxion::conformance` suite against GrpcFluxion → pancake server →
//! EmbeddedFluxion: the gRPC layer must not change any answer.

use std::time::Duration;

use fluxion::Fluxion;
use fluxion::conformance::{self, Capabilities};
use fluxion_grpc::{GrpcFluxion, ServerHandle, ServerOptions};

/// A client plus the server it talks to (stopped when dropped).
struct Remote {
    client: GrpcFluxion,
    _server: ServerHandle,
}

impl Fluxion for Remote {
    fn init(&mut self, policy: &str, jgf: &str) -> Result<(), fluxion::FluxionError> {
        self.client.init(policy, jgf)
    }
    fn match_allocate(
        &mut self,
        jobspec: &str,
        reserve: bool,
    ) -> Result<fluxion::MatchOutcome, fluxion::FluxionError> {
        self.client.match_allocate(jobspec, reserve)
    }
    fn cancel(&mut self, jobid: i64) -> Result<(), fluxion::FluxionError> {
        self.client.cancel(jobid)
    }
    fn restore(&mut self, jobid: i64, allocation: &str) -> Result<(), fluxion::FluxionError> {
        self.client.restore(jobid, allocation)
    }
}

fn remote() -> Box<dyn Fluxion> {
    let server = ServerHandle::spawn(
        fluxion_grpc::server::default_backend(),
        ServerOptions {
            port: 0,
            log: false,
            shutdown_grace: Duration::from_millis(100),
            ..ServerOptions::default()
        },
    )
    .expect("spawn server");
    let client = GrpcFluxion::new(&server.address()).expect("client");
    Box::new(Remote {
        client,
        _server: server,
    })
}

/// Every check, each on a fresh server, all reported together.
#[test]
fn conformance_over_grpc() {
    let caps = Capabilities::full();
    let mut failures = Vec::new();
    let checks = conformance::checks();
    assert!(!checks.is_empty());
    for (name, check) in checks {
        let mut fx = remote();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(fx.as_mut(), &caps)));
        if let Err(panic) = outcome {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{name}: {msg}"));
        }
    }
    assert!(
        failures.is_empty(),
        "conformance failures over gRPC:\n{}",
        failures.join("\n")
    );
}

/// The suite's own driver, too.
#[test]
fn run_all_over_grpc() {
    conformance::run_all(&mut remote);
}
