//! The `pancake-bypass` jobtap plugin.
//!
//! Loaded with `flux jobtap load pancake-bypass.so role=queue` in the queue
//! broker, and (by the pancake module) with `role=app` in each application
//! broker. The plugin must not start threads: the job-manager `dlclose`s it
//! on `flux jobtap remove`.

#![deny(unsafe_code)]

use flux::jobtap::PluginRef;
use serde_json::json;

use pancake_core::role::Role;

flux::jobtap_plugin!(plugin_init);

/// The plugin's name as `flux jobtap list` shows it (also set by the file name).
pub const NAME: &str = "pancake-bypass";

fn plugin_init(p: &PluginRef) -> flux::Result<()> {
    let role =
        Role::from_conf(&p.conf()).map_err(|e| flux::Error::inval(format!("{NAME}: {e}")))?;
    p.set_name(NAME)?;
    p.add_handler("plugin.query", move |_p, _topic, args| {
        args.set_output(&json!({ "role": role.as_str(), "version": env!("CARGO_PKG_VERSION") }))
    })?;
    p.handle()?.log(
        flux::Level::Info,
        &format!("{NAME}: loaded in {} role", role.as_str()),
    );
    Ok(())
}
