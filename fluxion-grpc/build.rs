//! Compiles `proto/fluxion.proto` with tonic-prost-build into `OUT_DIR`
//! (generated code never enters the source tree).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=proto/fluxion.proto");
    println!("cargo:rerun-if-env-changed=PROTOC");

    let protoc = std::env::var_os("PROTOC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("protoc"));
    let found = Command::new(&protoc)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        eprintln!(
            "error: fluxion-grpc needs the protobuf compiler `protoc` ({} not runnable): \
             install the Debian package protobuf-compiler (apt-get install protobuf-compiler) \
             or set PROTOC to its path.",
            protoc.display()
        );
        std::process::exit(1);
    }

    if let Err(e) = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/fluxion.proto"], &["proto"])
    {
        eprintln!("error: fluxion-grpc: compiling proto/fluxion.proto failed: {e}");
        std::process::exit(1);
    }

    // For the tests: the same protocol without pancake's extension RPCs, i.e.
    // what the public Fluxion service serves. Tests build a stand-in of the
    // public service and an extension-unaware client from it
    // (`OUT_DIR/public/fluxion.rs`).
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let public_dir = out.join("public");
    let proto = std::fs::read_to_string("proto/fluxion.proto").expect("read proto/fluxion.proto");
    let public: String = proto
        .lines()
        .filter(|l| !l.contains("rpc Restore(") && !l.contains("rpc Info("))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::create_dir_all(&public_dir).expect("create OUT_DIR/public");
    std::fs::write(public_dir.join("fluxion.proto"), public).expect("write public proto");
    if let Err(e) = tonic_prost_build::configure()
        .out_dir(&public_dir)
        .compile_protos(
            &[public_dir.join("fluxion.proto")],
            std::slice::from_ref(&public_dir),
        )
    {
        eprintln!("error: fluxion-grpc: compiling the public subset of the proto failed: {e}");
        std::process::exit(1);
    }
}
