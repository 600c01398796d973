//! Generates bindings to the installed flux-core with bindgen.
//!
//! flux-core is found through `pkg-config flux-core` (plus `flux-idset` and
//! `flux-hostlist`), like any Flux extension. The detected version is checked
//! against the minimum pancake supports, exported to dependent crates as
//! `DEP_FLUX_CORE_VERSION` (thanks to `links = "flux-core"`), and turned into
//! `cfg`s for behaviour that changed in later releases. Functions that came
//! later are not guessed from the version: the generated bindings are probed
//! for them (`have_<function>` cfgs), so a backport or a snapshot between
//! releases gets what its headers really declare.
//!
//! When flux-core's libdir is not a directory the dynamic loader searches by
//! itself, its path is exported as `DEP_FLUX_CORE_RPATH` and this crate's own
//! tests get it as a runtime path; the `flux` crate passes it on to the
//! binaries and test executables built on it.

use std::env;
use std::path::{Path, PathBuf};

/// The oldest flux-core pancake supports, and why: the job-manager
/// `events-journal` only sends its backlog of active jobs followed by a
/// sentinel since v0.61.0, and pancake discovers jobs and rebuilds its state
/// from that backlog (see docs/compatibility.md for what users run). Among
/// what pancake calls, these came later and have fallbacks (`PROBED` below):
/// `flux_watcher_is_active` v0.69, `flux_watcher_unref` v0.70,
/// `flux_module_config_request_decode` and `flux_set_conf_new` v0.80
/// (before: `flux_conf_reload_decode` and `flux_set_conf`). The rest is
/// older than the minimum (`flux_msg_handler_addvec_ex` v0.49,
/// `flux_unwrap_string` v0.52, testexec `override` v0.30, jobtap
/// dependencies/flags/epilog v0.31).
const MIN_VERSION: (u32, u32, u32) = (0, 61, 0);

/// Functions newer than the minimum that the `flux` crate uses when the
/// installed headers declare them (cfg `have_<name>`, exported to
/// dependents as `DEP_FLUX_CORE_HAVE_<NAME>=1`).
const PROBED: &[&str] = &[
    "flux_watcher_is_active",
    "flux_watcher_unref",
    "flux_module_config_request_decode",
    "flux_set_conf_new",
];

/// Behaviour that changed in later releases (nothing in the headers shows
/// it): (cfg name, first version, what it is).
const FEATURES: &[(&str, (u32, u32, u32), &str)] = &[
    // The job-manager posts `free` itself for an alloc-bypass job at CLEANUP
    // (flux-core PR #5981). Before, a jobtap plugin that posted `alloc` had
    // to post `free` too, or the job stayed in CLEANUP.
    (
        "flux_frees_bypass_jobs",
        (0, 63, 0),
        "job-manager frees alloc-bypass jobs",
    ),
    // A module's refused `config-reload` makes `flux config reload` fail
    // and the broker keep its previous config.
    (
        "flux_config_reload_rollback",
        (0, 82, 0),
        "refused config reload rolled back",
    ),
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
    println!("cargo::rerun-if-changed=/etc/ld.so.conf");
    for (name, _, _) in FEATURES {
        println!("cargo::rustc-check-cfg=cfg({name})");
    }
    for name in PROBED {
        println!("cargo::rustc-check-cfg=cfg(have_{name})");
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
    for key in ["fluxmoddir", "fluxlibdir", "fluxcmddir", "prefix", "libdir"] {
        println!("cargo::metadata={key}={}", var(key));
    }
    // A runtime path for binaries and test executables, unless the loader
    // finds libflux-core there by itself (then an rpath would only pin it).
    let rpath = core
        .link_paths
        .first()
        .filter(|dir| !loader_searches(dir))
        .map(|dir| dir.display().to_string())
        .unwrap_or_default();
    println!("cargo::metadata=rpath={rpath}");
    if !rpath.is_empty() {
        println!("cargo::rustc-link-arg-tests=-Wl,-rpath,{rpath}");
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
    let code = bindings.to_string();
    for name in PROBED {
        if declares(&code, name) {
            println!("cargo::rustc-cfg=have_{name}");
            println!("cargo::metadata=have_{name}=1");
        }
    }
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("bindings.rs"), code)
        .unwrap_or_else(|e| fail(&format!("flux-sys: cannot write bindings: {e}")));
}

/// True when the generated bindings declare function `name`.
fn declares(code: &str, name: &str) -> bool {
    code.match_indices(name).any(|(at, _)| {
        code[..at].trim_end().ends_with("pub fn")
            && code[at + name.len()..].trim_start().starts_with('(')
    })
}

/// True when the dynamic loader searches `dir` without being told: the
/// default directories, and those listed in /etc/ld.so.conf (and the files
/// it includes).
fn loader_searches(dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    let mut known: Vec<PathBuf> = ["/lib", "/usr/lib", "/lib64", "/usr/lib64"]
        .iter()
        .map(PathBuf::from)
        .collect();
    if let Ok(arch) = env::var("CARGO_CFG_TARGET_ARCH") {
        for base in ["/lib", "/usr/lib"] {
            known.push(PathBuf::from(format!("{base}/{arch}-linux-gnu")));
        }
    }
    known.extend(ld_so_conf(Path::new("/etc/ld.so.conf"), 0));
    known
        .iter()
        .any(|k| k.canonicalize().is_ok_and(|k| k == dir))
}

fn ld_so_conf(file: &Path, depth: u32) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let Ok(text) = std::fs::read_to_string(file) else {
        return dirs;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pattern) = line.strip_prefix("include") {
            let pattern = pattern.trim();
            // Only the `DIR/*.conf` form Debian and Red Hat use.
            let Some((parent, suffix)) = pattern.rsplit_once("/*") else {
                continue;
            };
            let Ok(entries) = std::fs::read_dir(parent) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.to_string_lossy().ends_with(suffix))
                .collect();
            files.sort();
            if depth < 4 {
                for f in files {
                    dirs.extend(ld_so_conf(&f, depth + 1));
                }
            }
        } else if line.starts_with('/') {
            dirs.push(PathBuf::from(line));
        }
    }
    dirs
}
