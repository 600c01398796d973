//! The `pancake-fluxion` binary: startup, serving, signals.

#[path = "common/bin.rs"]
mod bin;
mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bin::Daemon;
use fluxion::Fluxion;
use fluxion_grpc::GrpcFluxion;
use nix::sys::signal::Signal;

#[test]
fn serves_and_stops_gracefully_on_sigterm() {
    let mut d = Daemon::start(&["--shutdown-grace", "1"], Stdio::piped());
    let mut c = GrpcFluxion::new(&d.address()).unwrap();
    let info = c.info().unwrap().unwrap();
    assert_eq!(info.implementation, "pancake-fluxion");
    assert_eq!(info.backend, "embedded");
    assert!(matches!(
        c.match_allocate(&common::jobspec(1), false),
        Err(fluxion::FluxionError::NotInitialized)
    ));
    // The embedded matcher behind it, with precise errors.
    c.init("", &common::jgf(4, 10)).unwrap();
    let m = c.match_allocate(&common::jobspec(5), false).unwrap();
    assert_eq!(m.jobid, 1);
    assert!(m.allocation.contains("core"));
    assert!(matches!(
        c.match_allocate(&common::jobspec(11), false),
        Err(fluxion::FluxionError::Unsatisfiable(_))
    ));
    for _ in 0..7 {
        c.match_allocate(&common::jobspec(5), false).unwrap();
    }
    assert!(matches!(
        c.match_allocate(&common::jobspec(1), false),
        Err(fluxion::FluxionError::Busy(_))
    ));
    c.cancel(m.jobid).unwrap();
    c.match_allocate(&common::jobspec(5), false).unwrap();

    // SIGTERM with a client connected (and idle): exits within the grace.
    let t = Instant::now();
    d.signal(Signal::SIGTERM);
    let status = d
        .wait(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let mut stderr = String::new();
    d.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(stderr.contains("pancake-fluxion: Info"), "{stderr}");
    assert!(stderr.contains("pancake-fluxion: Match"), "{stderr}");
    assert!(stderr.contains("us\n"), "{stderr}");

    // The client notices.
    assert!(matches!(
        c.info(),
        Err(fluxion::FluxionError::Unavailable(_))
    ));
}

#[test]
fn stops_on_sigint() {
    let mut d = Daemon::start(&["--quiet"], Stdio::null());
    d.signal(Signal::SIGINT);
    let status = d.wait(Duration::from_secs(10)).expect("exits after SIGINT");
    assert!(status.success(), "{status:?}");
}

#[test]
fn bad_arguments_and_busy_port() {
    let bin = env!("CARGO_BIN_EXE_pancake-fluxion");
    let out = Command::new(bin).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bogus"));
    let out = Command::new(bin).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--max-message-size"));

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = Command::new(bin).args(["--port", &port]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot serve"));
}
