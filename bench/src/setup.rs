//! Getting a pod ready for a run: loading pancake and waiting until it is
//! connected, its status, the test exec plugin, and the jobspecs and Rs the
//! runs submit.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fluxion::Rv1;
use pancake_pod::{FluxionServer, Pod, PodSpec};
use serde_json::Value;

use crate::client::Client;
use crate::opts::Mode;

/// The pancake module's load arguments for `mode`.
/// A scratch directory (with the `var/log` a `pancake-fluxion` writes to)
/// and, in gRPC mode, a `pancake-fluxion` serving from it. Keep both until
/// the run is over (dropping the server stops it).
pub(crate) fn fluxion_server(
    mode: Mode,
) -> Result<(tempfile::TempDir, Option<FluxionServer>), String> {
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::create_dir_all(scratch.path().join("var/log")).map_err(|e| e.to_string())?;
    let server = if mode == Mode::Grpc {
        Some(FluxionServer::start(scratch.path())?)
    } else {
        None
    };
    Ok((scratch, server))
}

pub(crate) fn load_pancake(pod: &Pod, fluxion: Option<&str>) -> Result<(), String> {
    load_pancake_with(pod, fluxion, &[])
}

/// [`load_pancake`] with more module options.
pub(crate) fn load_pancake_with(
    pod: &Pod,
    fluxion: Option<&str>,
    more: &[&str],
) -> Result<(), String> {
    let (module, plugin) = pod.install_pancake()?;
    let q = &pod.queue;
    q.run(&["jobtap", "load", &plugin.to_string_lossy(), "role=queue"])?;
    let view = format!("view={}", pod.root().display());
    let plugin_arg = format!("plugin={}", plugin.display());
    let module = module.to_string_lossy().into_owned();
    let mut args = vec!["module", "load", &module, &view, &plugin_arg];
    let fx;
    if let Some(uri) = fluxion {
        fx = format!("fluxion={uri}");
        args.push(&fx);
    }
    args.extend_from_slice(more);
    q.run(&args).map(|_| ())
}

/// Wait until pancake reports every container connected and Fluxion ready.
pub(crate) fn wait_connected(c: &Client, apps: usize) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st: Value = status(c);
        let up = st["containers"]
            .as_array()
            .map(|a| a.iter().filter(|c| c["state"] == "connected").count())
            .unwrap_or(0);
        if up == apps && st["fluxion"]["ready"] == true {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("pancake not ready after 60 s: {st}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `bench-testexec` plugin built next to this binary.
pub(crate) fn testexec_plugin() -> Result<PathBuf, String> {
    let p = pancake_pod::lib_dir().join("libpancake_bench_testexec.so");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} is missing: cargo build --release -p pancake-bench-testexec (make bench does)",
            p.display()
        ))
    }
}

/// A jobspec for `true` as `flux submit` makes it (environment included),
/// with `extra` options.
pub(crate) fn dry_run(pod: &Pod, extra: &[&str]) -> Result<String, String> {
    let mut args = vec!["submit", "--dry-run", "-n1"];
    args.extend_from_slice(extra);
    args.push("true");
    let js = pod.queue.run(&args)?;
    // Normalise (one line, no trailing newline).
    let v: Value = serde_json::from_str(&js).map_err(|e| format!("dry-run jobspec: {e}"))?;
    Ok(v.to_string())
}

/// The R of slot `s`: one core of one node, as an alloc-bypass R.
pub(crate) fn slot_r(spec: &PodSpec, s: usize) -> Result<Rv1, String> {
    let rank = s as u32 / spec.cores;
    let core = s as u32 % spec.cores;
    let text = serde_json::json!({
        "version": 1,
        "execution": {
            "R_lite": [{ "rank": rank.to_string(), "children": { "core": core.to_string() } }],
            "starttime": 0.0,
            "expiration": 0.0,
            "nodelist": [format!("{}-{rank}", spec.hostname)],
        }
    })
    .to_string();
    Rv1::parse(&text).map_err(|e| e.to_string())
}

pub(crate) fn status(c: &Client) -> Value {
    c.rpc(0, "pancake.status", "{}")
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        .unwrap_or(Value::Null)
}
