//! Passes on what `flux-sys` found in the installed flux-core.
//!
//! * `cfg(have_<function>)` for each function newer than pancake's minimum
//!   flux-core that the headers declare (`flux-sys` probed the bindings and
//!   exported `DEP_FLUX_CORE_HAVE_<FUNCTION>=1`), so the safe layer calls it
//!   or falls back.
//! * The runtime path to flux-core's libdir, when the dynamic loader does not
//!   search it by itself: used for this crate's tests, and exported again as
//!   `DEP_PANCAKE_FLUX_RPATH` (`links = "pancake-flux"`) for the crates whose
//!   binaries and test executables link libflux-core through this one (each
//!   passes it to its linker in a three-line build script).

const PROBED: &[&str] = &[
    "flux_watcher_is_active",
    "flux_watcher_unref",
    "flux_module_config_request_decode",
    "flux_set_conf_new",
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    for name in PROBED {
        println!("cargo::rustc-check-cfg=cfg(have_{name})");
        let key = format!("DEP_FLUX_CORE_HAVE_{}", name.to_uppercase());
        println!("cargo::rerun-if-env-changed={key}");
        if std::env::var(&key).is_ok_and(|v| v == "1") {
            println!("cargo::rustc-cfg=have_{name}");
        }
    }
    println!("cargo::rerun-if-env-changed=DEP_FLUX_CORE_RPATH");
    let rpath = std::env::var("DEP_FLUX_CORE_RPATH").unwrap_or_default();
    println!("cargo::metadata=rpath={rpath}");
    if !rpath.is_empty() {
        println!("cargo::rustc-link-arg-tests=-Wl,-rpath,{rpath}");
    }
}
