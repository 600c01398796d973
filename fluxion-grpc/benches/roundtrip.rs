//! Loopback round trip of a small match: 1 core on a 4 nodes × 10 cores
//! graph, directly on the embedded matcher and through GrpcFluxion → pancake
//! server (127.0.0.1) → the embedded matcher. Prints p50/p99/mean; the target is a gRPC
//! p50 ≤ 0.5 ms.
//!
//! `cargo bench -p fluxion-grpc --bench roundtrip [-- --iters N]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use fluxion::Fluxion;
use fluxion_grpc::{GrpcFluxion, ServerHandle, ServerOptions};

fn backend() -> Box<dyn Fluxion> {
    fluxion_grpc::server::default_backend()
}

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let n = samples.len();
    Stats {
        p50: samples[n / 2],
        p99: samples[(n * 99 / 100).min(n - 1)],
        mean: samples.iter().sum::<Duration>() / n as u32,
    }
}

fn print(name: &str, s: &Stats) {
    println!(
        "{name:<28} p50 {:>8.1} us   p99 {:>8.1} us   mean {:>8.1} us",
        s.p50.as_secs_f64() * 1e6,
        s.p99.as_secs_f64() * 1e6,
        s.mean.as_secs_f64() * 1e6
    );
}

/// Time `iters` match round trips (each followed by an untimed cancel).
fn run(f: &mut dyn Fluxion, iters: usize) -> (Stats, Stats) {
    f.init("first", &common::jgf(4, 10)).expect("init");
    let jobspec = common::jobspec(1);
    let mut matches = Vec::with_capacity(iters);
    let mut cancels = Vec::with_capacity(iters);
    for i in 0..iters + iters / 10 {
        let t = Instant::now();
        let m = f.match_allocate(&jobspec, false).expect("match");
        let matched = t.elapsed();
        let t = Instant::now();
        f.cancel(m.jobid).expect("cancel");
        let cancelled = t.elapsed();
        if i >= iters / 10 {
            // The first tenth warms up.
            matches.push(matched);
            cancels.push(cancelled);
        }
    }
    (stats(matches), stats(cancels))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let iters = args
        .iter()
        .position(|a| a == "--iters")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(5000);
    println!("match 1 core on 4x10, {iters} iterations");

    let mut direct = backend();
    let (m, c) = run(direct.as_mut(), iters);
    print("direct   Match", &m);
    print("direct   Cancel", &c);

    let server = ServerHandle::spawn(
        backend(),
        ServerOptions {
            port: 0,
            log: false,
            ..ServerOptions::default()
        },
    )
    .expect("server");
    let mut client = GrpcFluxion::new(&server.address()).expect("client");
    let (m, c) = run(&mut client, iters);
    print("gRPC     Match", &m);
    print("gRPC     Cancel", &c);
    let mut infos = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        client.info().expect("info");
        infos.push(t.elapsed());
    }
    print("gRPC     Info (no backend)", &stats(infos));
    println!(
        "target: gRPC Match p50 <= 500 us: {}",
        if m.p50 <= Duration::from_micros(500) {
            "met"
        } else {
            "MISSED"
        }
    );
}
