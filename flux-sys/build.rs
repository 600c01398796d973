//! Generates bindings to the installed flux-core with bindgen.
//!
//! flux-core is found through `pkg-config flux-core` (plus `flux-idset` and
//! `flux-hostlist`), like any Flux extension. The detected version is checked
//! against the minimum pancake supports, exported to dependent crates as
//! `DEP_FLUX_CORE_VERSION` (thanks to `links = "flux-core"`), and turned into
//! `cfg`s for APIs that arrived later.

use std::env;
use std::path::PathBuf;

/// The oldest flux-core pancake supports, and why: the job-manager
/// `events-journal` only sends its backlog of active jobs followed by a
/// sentinel since v0.61.0, and pancake discovers jobs and rebuilds its state
/// from that backlog. Everything else pancake calls is older
/// (`flux_msg_handler_addvec_ex` v0.49, `flux_unwrap_string` v0.52, testexec
/// `override` v0.30, jobtap dependencies/flags/epilog v0.31).
const MIN_VERSION: (u32, u32, u32) = (0, 61, 0);

/// Later APIs pancake uses when present: (cfg name, first version, what it is).
const FEATURES: &[(&str, (u32, u32, u32), &str)] = &[
    // The broker state machine gained LOAD_BUILTINS, CONFIG_SYNC and
    // UNLOAD_BUILTINS, renumbering the states `state-machine.monitor` reports.
    (
        "flux_broker_states_v082",
        (0, 82, 0),
        "broker state numbering",
    ),
    // `job-manager.raise` accepts `wait_status` (dd92a9f6), so a mirrored
    // exception carries the application job's exit code.
    (
        "flux_raise_wait_status",
        (0, 84, 0),
        "job-manager.raise wait_status",
    ),
];

fn parse_version(s: &str) -> Option<(u32, u32, u32)> {
    // pkg-config may report "0.88.0-59-g4a5e79f56" for a build from git.
    let core = s.trim().split(['-', '+', '~']).next()?;
    let mut it = core.split('.').map(|p| p.parse::<u32>().ok());
    Some((it.next()??, it.next()??, it.next().flatten().unwrap_or(0)))
}

fn fail(msg: &str) -> ! {
    // One clear sentence, without a Rust backtrace around it.
    eprintln!("error: {msg}");
    println!("cargo::error={msg}");
    std::process::exit(1);
}

fn main() {
    println!("cargo::rerun-if-changed=wrapper.h");
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");
    for (name, _, _) in FEATURES {
        println!("cargo::rustc-check-cfg=cfg({name})");
    }

    let core = match pkg_config::Config::new()
        .cargo_metadata(true)
        .probe("flux-core")
    {
        Ok(lib) => lib,
        Err(_) => fail(
            "flux-sys: flux-core was not found by `pkg-config flux-core`; install flux-core \
             (>= 0.61.0) with its headers and flux-core.pc, or add the directory holding \
             flux-core.pc to PKG_CONFIG_PATH.",
        ),
    };
    let version = parse_version(&core.version).unwrap_or_else(|| {
        fail(&format!(
            "flux-sys: cannot parse the flux-core version {:?}.",
            core.version
        ))
    });
    if version < MIN_VERSION {
        fail(&format!(
            "flux-sys: flux-core {} is too old; pancake needs flux-core >= {}.{}.{}.",
            core.version, MIN_VERSION.0, MIN_VERSION.1, MIN_VERSION.2
        ));
    }
    let mut includes = core.include_paths.clone();
    for extra in ["flux-idset", "flux-hostlist"] {
        match pkg_config::Config::new().cargo_metadata(true).probe(extra) {
            Ok(lib) => includes.extend(lib.include_paths),
            Err(_) => fail(&format!(
                "flux-sys: `pkg-config {extra}` failed; it ships with flux-core, so reinstall \
                 flux-core with its development files."
            )),
        }
    }

    // Exported to dependents as DEP_FLUX_CORE_<KEY>.
    println!("cargo::metadata=version={}", core.version);
    println!("cargo::rustc-env=FLUX_SYS_CORE_VERSION={}", core.version);
    let var = |name: &str| pkg_config::get_variable("flux-core", name).unwrap_or_default();
    for key in ["fluxmoddir", "fluxlibdir", "fluxcmddir", "prefix"] {
        println!("cargo::metadata={key}={}", var(key));
    }
    for (name, since, _what) in FEATURES {
        if version >= *since {
            println!("cargo::rustc-cfg={name}");
            println!("cargo::metadata={name}=1");
        }
    }

    let mut builder = bindgen::Builder::default()
        .header("wrapper.h")
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .allowlist_function("flux_.*|idset_.*|hostlist_.*")
        .allowlist_type("flux_.*|idset.*|hostlist.*|job_.*|kvs_.*|event_flags")
        .allowlist_var("FLUX_.*|IDSET_.*")
        .allowlist_function("pthread_setcancelstate")
        // The va_list variants cannot be called portably from Rust; the
        // variadic `...` forms and the string-JSON APIs cover every need.
        .blocklist_function(".*_v(pack|unpack)|flux_vlog|flux_log_verror|flux_llog")
        .blocklist_function("flux_(local_exec|rexec)_ex")
        .blocklist_type("subprocess_log_f")
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false);
    for inc in &includes {
        builder = builder.clang_arg(format!("-I{}", inc.display()));
    }
    let bindings = builder.generate().unwrap_or_else(|e| {
        fail(&format!(
            "flux-sys: bindgen failed on the flux-core headers ({e}); install libclang-dev."
        ))
    });
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .unwrap_or_else(|e| fail(&format!("flux-sys: cannot write bindings: {e}")));
}
