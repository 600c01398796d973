//! Link flux-core with a runtime path when its libdir is not one the loader
//! searches by itself (a flux-core in its own prefix), so binaries and test
//! executables run with nothing else set. The path comes from the `flux`
//! crate (`DEP_PANCAKE_FLUX_RPATH`, empty for a system libdir).
fn main() {
    println!("cargo::rerun-if-env-changed=DEP_PANCAKE_FLUX_RPATH");
    match std::env::var("DEP_PANCAKE_FLUX_RPATH") {
        Ok(dir) if !dir.is_empty() => println!("cargo::rustc-link-arg=-Wl,-rpath,{dir}"),
        _ => {}
    }
}
