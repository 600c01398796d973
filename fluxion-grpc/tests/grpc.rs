//! GrpcFluxion ↔ pancake server (in process) with a fake backend: error
//! mapping, extensions, reconnection, large messages, bad input.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{FakeFluxion, jgf, jobspec};
use fluxion::{Fluxion, FluxionError, MatchOutcome};
use fluxion_grpc::{ClientOptions, GrpcFluxion, ServerHandle, ServerOptions};

fn options() -> ServerOptions {
    ServerOptions {
        port: 0,
        log: false,
        shutdown_grace: Duration::from_millis(200),
        ..ServerOptions::default()
    }
}

fn server() -> ServerHandle {
    ServerHandle::spawn(Box::new(FakeFluxion::default()), options()).expect("spawn server")
}

fn client(server: &ServerHandle) -> GrpcFluxion {
    GrpcFluxion::new(&server.address()).expect("client")
}

#[test]
fn errors_are_precise() {
    let server = server();
    let mut c = client(&server);
    assert_eq!(
        c.match_allocate(&jobspec(1), false),
        Err(FluxionError::NotInitialized)
    );
    assert_eq!(c.cancel(1), Err(FluxionError::NotInitialized));
    assert!(matches!(
        c.init("", "not json"),
        Err(FluxionError::Invalid(_))
    ));
    assert!(matches!(
        c.init("bogus", &jgf(4, 10)),
        Err(FluxionError::Invalid(_))
    ));
    c.init("first", &jgf(4, 10)).unwrap();

    let unsat = c.match_allocate(&jobspec(41), false);
    assert!(
        matches!(unsat, Err(FluxionError::Unsatisfiable(ref m)) if m.contains("41 cores")),
        "{unsat:?}"
    );
    let all = c.match_allocate(&jobspec(40), false).unwrap();
    assert_eq!(all.jobid, 1);
    assert!(!all.reserved);
    assert!(all.allocation.contains("\"graph\""));
    let busy = c.match_allocate(&jobspec(1), false);
    assert!(
        matches!(busy, Err(FluxionError::Busy(ref m)) if m.contains("free")),
        "{busy:?}"
    );
    let reserved = c.match_allocate(&jobspec(1), true).unwrap();
    assert!(reserved.reserved && reserved.at > 0);
    assert!(matches!(
        c.match_allocate("{", false),
        Err(FluxionError::Invalid(_))
    ));
    c.cancel(all.jobid).unwrap();
    c.cancel(12345).unwrap();
    let again = c.match_allocate(&jobspec(40), false).unwrap();
    assert_eq!(again.jobid, 3);
}

#[test]
fn info_tracks_inits_and_restarts() {
    let server = server();
    let mut c = client(&server);
    let before = c.info().unwrap().expect("pancake server implements Info");
    assert_eq!(before.implementation, "pancake-fluxion");
    assert_eq!(before.backend, "embedded");
    assert_eq!(before.init_generation, 0);
    assert_eq!(before.instance_id.len(), 32);
    c.init("", &jgf(4, 10)).unwrap();
    let m = c.match_allocate(&jobspec(2), false).unwrap();
    let after = c.info().unwrap().unwrap();
    assert_eq!(after.init_generation, 1);
    assert_eq!(after.live_jobs, 1);
    assert!(!after.same_state_as(&before));
    c.cancel(m.jobid).unwrap();
    let cancelled = c.info().unwrap().unwrap();
    assert_eq!(cancelled.live_jobs, 0);
    assert!(cancelled.same_state_as(&after));

    // A failed Init counts too: it may have dropped the graph.
    assert!(c.init("", "{").is_err());
    let failed = c.info().unwrap().unwrap();
    assert_eq!((failed.init_generation, failed.live_jobs), (2, 0));

    let other = self::server();
    let mut c2 = client(&other);
    let info2 = c2.info().unwrap().unwrap();
    assert_ne!(info2.instance_id, after.instance_id);
}

#[test]
fn restore_reregisters_an_allocation() {
    let first = server();
    let mut c = client(&first);
    c.init("", &jgf(4, 10)).unwrap();
    let MatchOutcome {
        jobid, allocation, ..
    } = c.match_allocate(&jobspec(30), false).unwrap();
    drop(c);
    drop(first);

    // "The service restarted": a new one knows nothing until told.
    let second = server();
    let mut c = client(&second);
    c.init("", &jgf(4, 10)).unwrap();
    c.restore(jobid, &allocation).unwrap();
    assert_eq!(c.info().unwrap().unwrap().live_jobs, 1);
    assert!(matches!(
        c.match_allocate(&jobspec(11), false),
        Err(FluxionError::Busy(_))
    ));
    let m = c.match_allocate(&jobspec(10), false).unwrap();
    assert!(m.jobid > jobid);
    assert!(matches!(
        c.restore(0, &allocation),
        Err(FluxionError::Invalid(_))
    ));
    assert!(matches!(
        c.restore(99, "garbage"),
        Err(FluxionError::Invalid(_))
    ));
}

#[test]
fn large_init_256_nodes_128_cores() {
    let server = server();
    let mut c = client(&server);
    let graph = jgf(256, 128);
    assert!(graph.len() > 8_000_000, "JGF is {} bytes", graph.len());
    let t = Instant::now();
    c.init("", &graph).unwrap();
    let took = t.elapsed();
    eprintln!("Init of {} bytes took {took:?}", graph.len());
    // (Generous: this is a sanity bound on a loaded machine, not a benchmark;
    // `cargo bench -p fluxion-grpc` measures it.)
    assert!(took < Duration::from_secs(60));
    let m = c.match_allocate(&jobspec(256 * 128), false).unwrap();
    // The allocation comes back big too (server → client direction).
    assert!(m.allocation.len() > 1_000_000);
}

#[test]
fn large_init_embedded_matcher() {
    let server = ServerHandle::spawn(fluxion_grpc::server::default_backend(), options()).unwrap();
    let mut c = client(&server);
    let graph = jgf(256, 128);
    let t = Instant::now();
    c.init("lonode", &graph).unwrap();
    eprintln!(
        "embedded: Init of {} bytes took {:?}",
        graph.len(),
        t.elapsed()
    );
    let t = Instant::now();
    let m = c.match_allocate(&jobspec(128), false).unwrap();
    eprintln!("embedded: Match of a whole node took {:?}", t.elapsed());
    assert!(m.allocation.contains("node0"));
    assert!(matches!(
        c.match_allocate(&jobspec(129), false),
        Err(FluxionError::Unsatisfiable(_))
    ));
}

#[test]
fn oversize_message_is_rejected_cleanly() {
    let small = ServerOptions {
        max_message_size: 1 << 20,
        ..options()
    };
    let server = ServerHandle::spawn(Box::new(FakeFluxion::default()), small).unwrap();
    let mut c = client(&server);
    let big = jgf(40, 128); // > 1 MiB
    assert!(big.len() > 1 << 20);
    let err = c.init("", &big).unwrap_err();
    assert!(
        matches!(err, FluxionError::Invalid(ref m) if m.contains("too large")),
        "{err:?}"
    );
    // The server and the connection keep working.
    c.init("", &jgf(1, 4)).unwrap();
    c.match_allocate(&jobspec(1), false).unwrap();

    // The client refuses to send more than its own limit.
    let mut tiny = GrpcFluxion::with_options(
        &server.address(),
        ClientOptions {
            max_message_size: 1000,
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let err = tiny.init("", &jgf(2, 4)).unwrap_err();
    assert!(matches!(err, FluxionError::Invalid(_)), "{err:?}");
    assert!(tiny.info().unwrap().is_some());
}

#[test]
fn server_survives_garbage() {
    let server = server();
    // Not HTTP/2 at all.
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0u8; 100][..],
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff"[..],
    ] {
        let mut s = std::net::TcpStream::connect(server.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.write_all(junk);
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf);
    }
    // A half-open connection that says nothing.
    let _idle = std::net::TcpStream::connect(server.addr()).unwrap();

    // gRPC with bytes that are not the expected protobuf.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = format!("http://{}", server.addr());
    rt.block_on(async move {
        #[derive(Clone, PartialEq, prost::Message)]
        struct Evil {
            #[prost(bytes = "vec", tag = "1")]
            jobspec: Vec<u8>,
            #[prost(fixed64, tag = "2")]
            request: u64,
        }
        let channel = tonic::transport::Endpoint::from_shared(addr)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        for (evil, path) in [
            (
                Evil {
                    jobspec: vec![0xff, 0xfe, 0x00],
                    request: 0,
                },
                "/fluxion.FluxionService/Match",
            ),
            (
                Evil {
                    jobspec: b"x".to_vec(),
                    request: 7,
                },
                "/fluxion.FluxionService/Match",
            ),
            (
                Evil {
                    jobspec: vec![0xc3],
                    request: 1,
                },
                "/fluxion.FluxionService/Init",
            ),
            (
                Evil {
                    jobspec: vec![],
                    request: 1,
                },
                "/fluxion.FluxionService/Nope",
            ),
            (
                Evil {
                    jobspec: vec![],
                    request: 1,
                },
                "/other.Service/Match",
            ),
        ] {
            grpc.ready().await.unwrap();
            let codec =
                tonic_prost::ProstCodec::<Evil, fluxion_grpc::proto::MatchResponse>::default();
            let status = grpc
                .unary(tonic::Request::new(evil), path.parse().unwrap(), codec)
                .await
                .unwrap_err();
            assert_ne!(status.code(), tonic::Code::Ok);
        }
    });

    let mut c = client(&server);
    c.init("", &jgf(1, 2)).unwrap();
    c.match_allocate(&jobspec(1), false).unwrap();
}

/// How long the backend takes over a "slow" match.
const SLOW: Duration = Duration::from_secs(3);

/// A backend that is slow or panics on demand.
#[derive(Debug, Default)]
struct Moody(FakeFluxion);

impl Fluxion for Moody {
    fn init(&mut self, policy: &str, jgf: &str) -> Result<(), FluxionError> {
        self.0.init(policy, jgf)
    }
    fn match_allocate(
        &mut self,
        jobspec: &str,
        reserve: bool,
    ) -> Result<MatchOutcome, FluxionError> {
        if jobspec == "slow" {
            std::thread::sleep(SLOW);
            return Err(FluxionError::Busy("slow".into()));
        }
        if jobspec == "panic" {
            panic!("backend bug");
        }
        self.0.match_allocate(jobspec, reserve)
    }
    fn cancel(&mut self, jobid: i64) -> Result<(), FluxionError> {
        self.0.cancel(jobid)
    }
}

#[test]
fn timeouts_and_backend_panics() {
    let server = ServerHandle::spawn(Box::new(Moody::default()), options()).unwrap();
    // Only the timeout itself depends on time, with a wide margin (a 3 s
    // call against a 300 ms limit) so a loaded machine cannot flip it; the
    // rest goes through a client with the default (long) limit.
    let mut quick = GrpcFluxion::with_options(
        &server.address(),
        ClientOptions {
            call_timeout: Duration::from_millis(300),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    quick.init("", &jgf(1, 4)).unwrap();
    let t = Instant::now();
    let err = quick.match_allocate("slow", false).unwrap_err();
    assert!(
        matches!(err, FluxionError::Unavailable(ref m) if m.contains("timed out")),
        "{err:?}"
    );
    assert!(
        t.elapsed() < SLOW,
        "the call gave up before the backend answered"
    );
    // The next call waits its turn behind the slow one, then succeeds.
    let mut c = client(&server);
    c.match_allocate(&jobspec(1), false).unwrap();
    let err = c.match_allocate("panic", false).unwrap_err();
    assert!(
        matches!(err, FluxionError::Other(ref m) if m.contains("panicked")),
        "{err:?}"
    );
    c.match_allocate(&jobspec(1), false).unwrap();
}

#[test]
fn reconnects_with_backoff_after_restart() {
    let first = server();
    let addr = first.addr();
    let mut c = GrpcFluxion::with_options(
        &first.address(),
        ClientOptions {
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_millis(800),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    c.init("", &jgf(1, 4)).unwrap();
    let id1 = c.info().unwrap().unwrap().instance_id;
    first.shutdown().unwrap();

    // The broken connection, then refused connections, all Unavailable.
    for _ in 0..3 {
        let t = Instant::now();
        let err = c.match_allocate(&jobspec(1), false).unwrap_err();
        assert!(matches!(err, FluxionError::Unavailable(_)), "{err:?}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }
    assert!(!c.is_connected());
    // In backoff: answers without trying (the error says when it will).
    let err = c.cancel(1).unwrap_err();
    assert!(
        matches!(err, FluxionError::Unavailable(ref m) if m.contains("next attempt")),
        "{err:?}"
    );

    // A new server on the same port.
    let second = ServerHandle::spawn(
        Box::new(FakeFluxion::default()),
        ServerOptions {
            port: addr.port(),
            ..options()
        },
    )
    .unwrap();
    let t = Instant::now();
    let info = loop {
        match c.info() {
            Ok(info) => break info.unwrap(),
            Err(FluxionError::Unavailable(_)) if t.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    assert_ne!(info.instance_id, id1, "a restart is visible");
    assert_eq!(info.init_generation, 0);
    assert_eq!(
        c.match_allocate(&jobspec(1), false),
        Err(FluxionError::NotInitialized)
    );
    drop(second);
}

#[test]
fn unreachable_address_is_unavailable() {
    // A port nothing listens on (bound then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = GrpcFluxion::new(&format!("127.0.0.1:{port}")).unwrap();
    assert!(matches!(
        c.init("", "{}"),
        Err(FluxionError::Unavailable(_))
    ));
    assert!(matches!(c.info(), Err(FluxionError::Unavailable(_))));
    assert!(GrpcFluxion::new("https://x:1").is_err());
}

#[test]
fn quick_restart_is_transparent() {
    let first = server();
    let port = first.addr().port();
    let mut c = client(&first);
    let id1 = c.info().unwrap().unwrap().instance_id;
    first.shutdown().unwrap();
    let _second = ServerHandle::spawn(
        Box::new(FakeFluxion::default()),
        ServerOptions { port, ..options() },
    )
    .unwrap();
    // The old connection is gone; the client notices before sending and
    // uses a new one.
    let info = c.info().unwrap().unwrap();
    assert_ne!(info.instance_id, id1);
}

#[test]
fn concurrent_clients_are_serialised() {
    let server = ServerHandle::spawn(fluxion_grpc::server::default_backend(), options()).unwrap();
    client(&server).init("", &jgf(4, 10)).unwrap();
    let address = server.address();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let address = address.clone();
            std::thread::spawn(move || {
                let mut c = GrpcFluxion::new(&address).unwrap();
                (0..10)
                    .map(|_| c.match_allocate(&jobspec(1), false).unwrap().jobid)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ids: Vec<i64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, (1..=40).collect::<Vec<_>>());
    let mut c = client(&server);
    assert!(matches!(
        c.match_allocate(&jobspec(1), false),
        Err(FluxionError::Busy(_))
    ));
    assert_eq!(c.info().unwrap().unwrap().live_jobs, 40);
}
