//! Compatibility with the public Fluxion service (converged-computing/fluxion).
//!
//! `public` is generated from our proto minus the extension RPCs, i.e. the
//! public service's surface. A stand-in of the public server built on it
//! (the embedded matcher behind the Go server's handlers) behaves as the Go
//! server does: failed calls are plain `UNKNOWN` errors,
//! job ids restart at 1 after every Init, Init wipes every allocation,
//! reservations are successes with `reserved` set, cancelling an unknown id
//! succeeds, and the extension RPCs are UNIMPLEMENTED.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::{jgf, jobspec, jobspec_for};
use fluxion::{EmbeddedFluxion, Fluxion, FluxionError};
use fluxion_grpc::{GrpcFluxion, ServerHandle, ServerOptions};
use tonic::{Request, Response, Status};

#[allow(clippy::all, dead_code, missing_docs, missing_debug_implementations)]
mod public {
    include!(concat!(env!("OUT_DIR"), "/public/fluxion.rs"));
}

use public::fluxion_service_server::{FluxionService, FluxionServiceServer};

/// The Go server's behaviour, on the embedded matcher.
#[derive(Default)]
struct GoLike(Mutex<Option<EmbeddedFluxion>>);

#[tonic::async_trait]
impl FluxionService for GoLike {
    async fn init(
        &self,
        request: Request<public::InitRequest>,
    ) -> Result<Response<public::InitResponse>, Status> {
        let r = request.into_inner();
        // Every Init makes a new client: all allocations are gone.
        let mut fresh = EmbeddedFluxion::new();
        let result = fresh.init(&r.policy, &r.jgf);
        *self.0.lock().unwrap() = Some(fresh);
        match result {
            Ok(()) => Ok(Response::new(public::InitResponse { status: 0 })),
            Err(_) => Err(Status::unknown("init context failed")),
        }
    }

    async fn r#match(
        &self,
        request: Request<public::MatchRequest>,
    ) -> Result<Response<public::MatchResponse>, Status> {
        let r = request.into_inner();
        let mut guard = self.0.lock().unwrap();
        let Some(f) = guard.as_mut() else {
            return Err(Status::unknown("nil client"));
        };
        match f.match_allocate(&r.jobspec, r.reservation) {
            Ok(m) => Ok(Response::new(public::MatchResponse {
                allocation: m.allocation,
                jobid: m.jobid,
                reserved: m.reserved,
                at: m.at,
                overhead: m.overhead,
                status: 0,
            })),
            Err(_) => Err(Status::unknown("[Fluxion] Error in ReapiCliMatchAllocate")),
        }
    }

    async fn cancel(
        &self,
        request: Request<public::CancelRequest>,
    ) -> Result<Response<public::CancelResponse>, Status> {
        let id = request.into_inner().job_id;
        let mut guard = self.0.lock().unwrap();
        if let Some(f) = guard.as_mut() {
            let _ = f.cancel(id);
        }
        Ok(Response::new(public::CancelResponse {
            job_id: 0,
            error: 0,
            status: 0,
        }))
    }
}

struct GoServer {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GoServer {
    fn start() -> GoServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                // Go sets TCP_NODELAY on every TCP connection by default.
                let incoming =
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                let serve = tonic::transport::Server::builder()
                    .add_service(FluxionServiceServer::new(GoLike::default()))
                    .serve_with_incoming_shutdown(incoming, async move {
                        let _ = rx.await;
                    });
                // Do not wait for idle clients to go.
                let _ = tokio::time::timeout(Duration::from_secs(30), serve).await;
            });
        });
        GoServer {
            addr,
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for GoServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn go_client(server: &GoServer) -> GrpcFluxion {
    GrpcFluxion::new(&format!("grpc://{}", server.addr)).unwrap()
}

#[test]
fn client_lives_with_the_public_service() {
    let server = GoServer::start();
    let mut c = go_client(&server);

    // Extensions are absent, and the client says so.
    assert_eq!(
        c.info().unwrap(),
        None,
        "Info is unknown on the public service"
    );

    c.init("first", &jgf(4, 10)).unwrap();
    let a = c.match_allocate(&jobspec(10), false).unwrap();
    assert_eq!(a.jobid, 1);
    for id in 2..=4 {
        assert_eq!(c.match_allocate(&jobspec(10), false).unwrap().jobid, id);
    }
    // Busy and unsatisfiable look the same: Ambiguous.
    let busy = c.match_allocate(&jobspec(1), false).unwrap_err();
    assert!(
        matches!(busy, FluxionError::Ambiguous(ref m) if m.contains("ReapiCliMatchAllocate")),
        "{busy:?}"
    );
    let unsat = c.match_allocate(&jobspec(11), false).unwrap_err();
    assert!(matches!(unsat, FluxionError::Ambiguous(_)), "{unsat:?}");
    // Cancelling an unknown id succeeds.
    c.cancel(999).unwrap();
    c.cancel(a.jobid).unwrap();
    assert_eq!(c.match_allocate(&jobspec(10), false).unwrap().jobid, 5);

    // Init wipes everything and ids restart at 1.
    c.init("", &jgf(4, 10)).unwrap();
    for _ in 0..4 {
        c.match_allocate(&jobspec_for(10, 100), false).unwrap();
    }
    // A reservation is a success with reserved = true, at > 0.
    let r = c.match_allocate(&jobspec_for(1, 10), true).unwrap();
    assert!(r.reserved && r.at >= 100, "{r:?}");
    c.init("", &jgf(4, 10)).unwrap();
    assert_eq!(c.match_allocate(&jobspec(10), false).unwrap().jobid, 1);

    let err = c.restore(1, &a.allocation).unwrap_err();
    assert!(
        matches!(err, FluxionError::Other(ref m) if m.contains("not supported")),
        "{err:?}"
    );
    assert!(matches!(c.init("", "nope"), Err(FluxionError::Other(_))));

    // Connection still fine after all those errors.
    assert!(c.is_connected());
}

/// The conformance suite, with what a client of the public service can promise.
#[test]
fn conformance_against_the_public_service_stand_in() {
    struct Go {
        client: GrpcFluxion,
        _server: GoServer,
    }
    impl Fluxion for Go {
        fn init(&mut self, policy: &str, jgf: &str) -> Result<(), FluxionError> {
            self.client.init(policy, jgf)
        }
        fn match_allocate(
            &mut self,
            jobspec: &str,
            reserve: bool,
        ) -> Result<fluxion::MatchOutcome, FluxionError> {
            self.client.match_allocate(jobspec, reserve)
        }
        fn cancel(&mut self, jobid: i64) -> Result<(), FluxionError> {
            self.client.cancel(jobid)
        }
        fn restore(&mut self, jobid: i64, allocation: &str) -> Result<(), FluxionError> {
            self.client.restore(jobid, allocation)
        }
    }
    fluxion::conformance::run_all_with(
        &mut || {
            let server = GoServer::start();
            let client = go_client(&server);
            Box::new(Go {
                client,
                _server: server,
            })
        },
        &fluxion::conformance::Capabilities::public_service(),
    );
}

#[test]
fn public_client_works_against_pancake_server() {
    let server = ServerHandle::spawn(
        fluxion_grpc::server::default_backend(),
        ServerOptions {
            port: 0,
            log: false,
            shutdown_grace: Duration::from_millis(100),
            ..ServerOptions::default()
        },
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = format!("http://{}", server.addr());
    rt.block_on(async move {
        use public::fluxion_service_client::FluxionServiceClient;
        let mut c = FluxionServiceClient::connect(addr).await.unwrap();
        let init = c
            .init(public::InitRequest {
                policy: String::new(),
                jgf: jgf(2, 4),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(init.status, 0);
        for id in 1..=2 {
            let m = c
                .r#match(public::MatchRequest {
                    jobspec: jobspec(4),
                    request: "allocate".into(),
                    reservation: false,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!((m.jobid, m.reserved, m.status), (id, false, 0));
            assert!(m.allocation.contains("core"));
        }
        // An extension-unaware client just sees an error status.
        let st = c
            .r#match(public::MatchRequest {
                jobspec: jobspec(1),
                request: String::new(),
                reservation: false,
            })
            .await
            .unwrap_err();
        assert_eq!(st.code(), tonic::Code::ResourceExhausted);
        assert!(st.message().starts_with("busy: "));
        let cancel = c
            .cancel(public::CancelRequest { job_id: 1 })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((cancel.job_id, cancel.status), (1, 0));
    });
}
