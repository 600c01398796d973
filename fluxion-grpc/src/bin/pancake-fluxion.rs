//! `pancake-fluxion`: the embedded Fluxion matcher served over the Fluxion gRPC
//! protocol (wire-compatible with the public Fluxion service, plus pancake's
//! extensions). See `pancake-fluxion --help`.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use fluxion_grpc::ServerOptions;

const USAGE: &str = "\
Usage: pancake-fluxion [OPTIONS]

Serve the embedded Fluxion matcher over the Fluxion gRPC protocol.

Options:
  --host HOST               address to listen on [default: 127.0.0.1]
  --port PORT               port to listen on; 0 picks a free port [default: 4242]
  --policy POLICY           match policy used when Init names none [default: the matcher's]
  --max-message-size BYTES  largest gRPC message, both directions; K/M/G (KiB..) suffixes
                            allowed [default: 64M]
  --port-file PATH          write the bound port to PATH once listening
  --shutdown-grace SECONDS  on SIGINT/SIGTERM, wait this long for clients to go [default: 2]
  --quiet                   do not log each call to stderr
  -h, --help                print this help
  -V, --version             print the version

The bound address is printed on stdout. Each call is logged on stderr as
`pancake-fluxion: METHOD [details] ok|error ... MICROSECONDSus`.";

fn parse_size(text: &str) -> Option<usize> {
    let t = text.trim();
    let (digits, mult) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (t, 1usize),
        Some((i, _)) => {
            let mult = match t[i..].to_ascii_lowercase().as_str() {
                "k" | "kb" | "kib" => 1 << 10,
                "m" | "mb" | "mib" => 1 << 20,
                "g" | "gb" | "gib" => 1 << 30,
                _ => return None,
            };
            (&t[..i], mult)
        }
    };
    digits
        .parse::<usize>()
        .ok()?
        .checked_mul(mult)
        .filter(|n| *n > 0)
}

fn parse_args(args: Vec<String>) -> Result<Option<ServerOptions>, String> {
    let mut options = ServerOptions::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it.next().ok_or_else(|| format!("{name} needs {what}")),
            }
        };
        match name.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "-V" | "--version" => {
                println!("pancake-fluxion {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            "--host" => options.host = value("a host")?,
            "--port" => {
                let v = value("a port")?;
                options.port = v.parse().map_err(|_| format!("--port: bad port {v:?}"))?;
            }
            "--policy" => options.default_policy = value("a policy")?,
            "--max-message-size" => {
                let v = value("a size")?;
                options.max_message_size =
                    parse_size(&v).ok_or_else(|| format!("--max-message-size: bad size {v:?}"))?;
            }
            "--port-file" => options.port_file = Some(PathBuf::from(value("a path")?)),
            "--shutdown-grace" => {
                let v = value("seconds")?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| format!("--shutdown-grace: bad duration {v:?}"))?;
                options.shutdown_grace = Duration::from_secs_f64(secs);
            }
            "--quiet" => options.log = false,
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(Some(options))
}

/// Completes on the first SIGINT or SIGTERM.
async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pancake-fluxion: cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => eprintln!("pancake-fluxion: SIGTERM, shutting down"),
        _ = tokio::signal::ctrl_c() => eprintln!("pancake-fluxion: SIGINT, shutting down"),
    }
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1).collect()) {
        Ok(Some(o)) => o,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pancake-fluxion: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pancake-fluxion: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let backend = fluxion_grpc::server::default_backend();
    match runtime.block_on(fluxion_grpc::server::run(backend, &options, termination())) {
        Ok(()) => {
            eprintln!("pancake-fluxion: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "pancake-fluxion: cannot serve on {}:{}: {e}",
                options.host, options.port
            );
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("12X"), None);
    }

    #[test]
    fn args() {
        let a = |v: &[&str]| parse_args(v.iter().map(|s| s.to_string()).collect());
        let o = a(&["--port", "0", "--policy=lonode", "--quiet"])
            .unwrap()
            .unwrap();
        assert_eq!(o.port, 0);
        assert_eq!(o.default_policy, "lonode");
        assert!(!o.log);
        assert!(a(&["--port"]).is_err());
        assert!(a(&["--bogus"]).is_err());
        assert!(a(&["--port", "70000"]).is_err());
    }
}
