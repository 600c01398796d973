//! Probes flux-core for the tier-2 tests in `t/`.
//!
//! The root package (the simulated pod and its tests) does not link
//! flux-core: it drives real `flux start` instances through the `flux`
//! command. This script finds that command and flux-core's directories with
//! `pkg-config flux-core`, and tells the tests whether they can run:
//!
//! * `cfg(have_flux)` when flux-core is installed and `PANCAKE_SKIP_FLUX` is
//!   unset (or `0`);
//! * `PANCAKE_FLUX_VERSION`, `PANCAKE_FLUX_BIN`, `PANCAKE_FLUX_MODDIR`,
//!   `PANCAKE_FLUX_PLUGINDIR` for the harness;
//! * `PANCAKE_FLUX_SKIP_REASON` otherwise, so a skipped tier says why.

use std::process::Command;

fn pkg_config(args: &[&str]) -> Option<String> {
    let out = Command::new("pkg-config").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=PANCAKE_SKIP_FLUX");
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo::rustc-check-cfg=cfg(have_flux)");

    let skip = std::env::var("PANCAKE_SKIP_FLUX").is_ok_and(|v| !v.is_empty() && v != "0");
    let version = pkg_config(&["--modversion", "flux-core"]);
    let reason = match (&version, skip) {
        (_, true) => Some("PANCAKE_SKIP_FLUX is set".to_string()),
        (None, _) => Some("flux-core is not installed (`pkg-config flux-core` failed)".to_string()),
        (Some(_), false) => None,
    };
    if let Some(reason) = reason {
        println!("cargo::rustc-env=PANCAKE_FLUX_SKIP_REASON={reason}");
        return;
    }
    let var =
        |name: &str| pkg_config(&[&format!("--variable={name}"), "flux-core"]).unwrap_or_default();
    let prefix = var("prefix");
    // pkg-config's bindir is not exported by flux-core.pc; flux lives in $prefix/bin.
    println!("cargo::rustc-cfg=have_flux");
    println!(
        "cargo::rustc-env=PANCAKE_FLUX_VERSION={}",
        version.unwrap_or_default()
    );
    println!("cargo::rustc-env=PANCAKE_FLUX_BIN={prefix}/bin/flux");
    println!("cargo::rustc-env=PANCAKE_FLUX_MODDIR={}", var("fluxmoddir"));
    println!(
        "cargo::rustc-env=PANCAKE_FLUX_PLUGINDIR={}/job-manager/plugins",
        var("fluxlibdir")
    );
}
