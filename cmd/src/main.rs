//! `flux pancake`: what the pancake module in this broker is doing.
//!
//! A thin client: it asks the module for `pancake.status` over the broker
//! connection in `FLUX_URI` and prints it with `pancake_core::show`, where
//! all the formatting lives (and is tested without a broker). Installed in
//! flux-core's command directory, so `flux pancake status|map|jobs` runs it.
//!
//! Exit codes follow flux-core's commands: 0 ok, 1 error, 2 usage.

#![forbid(unsafe_code)]

mod args;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use args::{Args, Command, PROG, Parsed};
use pancake_core::show::{self, Style};
use serde_json::Value;

fn main() -> ExitCode {
    // Like flux-core's commands: job ids then print as `ƒ...` on a UTF-8
    // locale and as `f...` otherwise, matching `flux jobs` in the same shell.
    flux::use_environment_locale();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match args::parse(&argv) {
        Parsed::Help(text) => emit(&text),
        Parsed::Usage(msg) => {
            eprintln!("{PROG}: {msg}");
            eprintln!("Try `{PROG} --help' for more information.");
            ExitCode::from(2)
        }
        Parsed::Run(a) => match run(&a) {
            Ok(text) => emit(&text),
            Err(msg) => {
                eprintln!("{PROG}: {msg}");
                ExitCode::from(1)
            }
        },
    }
}

/// Write `text` to stdout. A closed pipe (`flux pancake jobs | head`) is not
/// an error worth a message; any other write failure is.
fn emit(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{PROG}: writing output: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(a: &Args) -> Result<String, String> {
    let status = fetch_status(a.timeout)?;
    let style = Style {
        color: a.color.resolve(
            std::io::stdout().is_terminal(),
            std::env::var("NO_COLOR").ok().as_deref(),
        ),
        id: flux::job::id_f58,
    };
    let json = |v: &Value| format!("{v}\n");
    let text = match (a.command, a.json) {
        (Command::Status, true) => Ok(json(&status)),
        (Command::Status, false) => show::status(&status, &style),
        (Command::Map, true) => show::map_json(&status).map(|v| json(&v)),
        (Command::Map, false) => show::map(&status, &style),
        (Command::Jobs, true) => show::jobs_json(&status).map(|v| json(&v)),
        (Command::Jobs, false) => show::jobs(&status, &style),
    };
    text.map_err(|e| e.to_string())
}

/// Ask the module in the broker at `FLUX_URI` for its status.
fn fetch_status(timeout: f64) -> Result<Value, String> {
    let h = flux::Handle::open(None, 0).map_err(|e| format!("cannot connect to Flux: {e}"))?;
    let f = h
        .rpc("pancake.status", Some("{}"), flux::NODEID_ANY, 0)
        .map_err(|e| format!("pancake.status: {e}"))?;
    // A command has no reactor to return to: wait here, but not forever
    // (the module answers at once unless its broker is stuck).
    let waited = if timeout > 0.0 {
        f.wait_for(timeout)
    } else {
        Ok(())
    };
    if let Err(e) = waited {
        return Err(if e.errno == libc::ETIMEDOUT {
            format!("pancake.status: no answer from the pancake module in {timeout} s")
        } else {
            format!("pancake.status: {e}")
        });
    }
    let text = match f.rpc_get() {
        Ok(t) => t.unwrap_or("{}").to_string(),
        // The broker answers ENOSYS for a service nobody registered.
        Err(e) if e.errno == libc::ENOSYS => {
            return Err(
                "the pancake module is not loaded on this broker (flux module load pancake)".into(),
            );
        }
        Err(e) if e.errno == libc::EPERM => {
            return Err(format!(
                "pancake.status is for the instance owner only: {}",
                e.message()
            ));
        }
        Err(e) => return Err(format!("pancake.status: {e}")),
    };
    serde_json::from_str(&text).map_err(|e| format!("pancake.status: bad answer: {e}"))
}
