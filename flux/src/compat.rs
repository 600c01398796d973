//! What this build can and cannot do on the flux-core it was built against.
//!
//! pancake supports flux-core 0.61.0 and later from one source tree: newer
//! functions are called when the headers declare them (and fallen back from
//! otherwise), newer behaviour is relied on when the version has it. A few
//! things cannot work on an older release; [`limitations`] lists them and
//! [`module_main!`](crate::module_main) logs each one to the broker
//! (`flux dmesg`) when a module loads, so an operator learns it at load time
//! rather than from a surprise. docs/compatibility.md has the full table.

/// One thing that does not work on this flux-core, and since when it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limitation {
    /// The first flux-core release where it works.
    pub since: &'static str,
    /// What the user sees on this release.
    pub what: &'static str,
}

/// Every limitation of the flux-core these bindings were built against
/// (empty on a current release).
pub fn limitations() -> Vec<Limitation> {
    let mut out = Vec::new();
    if !crate::HAS_RAISE_WAIT_STATUS {
        out.push(Limitation {
            since: "0.84.0",
            what: "job-manager.raise takes no wait_status: a queue job that mirrors an \
                   application job's exception (e.g. a timeout) ends with the exception's \
                   default status (TIMEOUT -15), not the application job's exit code",
        });
    }
    if !crate::CONFIG_RELOAD_ROLLS_BACK {
        out.push(Limitation {
            since: "0.82.0",
            what: "a config reload this module refuses still becomes the broker's config \
                   (`flux config get` shows it; the module keeps using the previous one \
                   until the next reload it accepts)",
        });
    }
    out
}

/// One line per limitation, as logged at module load.
pub fn limitation_lines() -> Vec<String> {
    limitations()
        .iter()
        .map(|l| {
            format!(
                "flux-core {}: {} (fixed in flux-core {})",
                crate::FLUX_CORE_BUILD_VERSION,
                l.what,
                l.since
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version() -> (u32, u32) {
        let mut it = crate::FLUX_CORE_BUILD_VERSION
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    }

    #[test]
    fn limitations_follow_the_version_built_against() {
        let (major, minor) = version();
        assert_eq!(major, 0, "{}", crate::FLUX_CORE_BUILD_VERSION);
        let since: Vec<&str> = limitations().iter().map(|l| l.since).collect();
        assert_eq!(since.contains(&"0.84.0"), minor < 84, "{since:?}");
        assert_eq!(since.contains(&"0.82.0"), minor < 82, "{since:?}");
        for line in limitation_lines() {
            assert!(line.starts_with("flux-core "), "{line}");
        }
    }

    #[test]
    fn probed_functions_follow_the_version_built_against() {
        let (_, minor) = version();
        assert_eq!(crate::HAVE_WATCHER_IS_ACTIVE, minor >= 69);
        assert_eq!(crate::HAVE_WATCHER_UNREF, minor >= 70);
        assert_eq!(crate::HAVE_MODULE_CONFIG_REQUEST_DECODE, minor >= 80);
        assert_eq!(crate::JOB_MANAGER_FREES_BYPASS_JOBS, minor >= 63);
    }
}
