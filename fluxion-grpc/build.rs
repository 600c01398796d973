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
}
