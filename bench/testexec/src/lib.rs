//! `bench-testexec`: a jobtap plugin for the benchmark only.
//!
//! Loaded by `pancake-bench` (`flux jobtap load .../libpancake_bench_testexec.so`)
//! into every application broker of a test-exec run, it adds
//! `attributes.system.exec.test = {"run_duration": "0.001s"}` to every job that
//! does not carry an `exec.test` block, so job-exec runs it with its timer
//! driven test implementation (no job shell, no task). The duration is 1 ms,
//! not 0: test exec takes 0 as "no duration" and would wait for an override
//! finish that never comes.
//!
//! Why a plugin: pancake leaves no way to ask for test exec on the
//! application side. The queue plugin refuses a user-set
//! `attributes.system.exec` on container jobs, and the module's
//! `app_jobspec` drops `system.exec` from the application jobspec (the queue
//! copy's own test-exec override must not travel). So the bench puts test
//! exec on the application brokers themselves, for the direct runs as well
//! as the pancake runs, and both pay the same `jobspec-update` event.

#![deny(unsafe_code)]

use flux::jobtap::PluginRef;
use serde_json::json;

flux::jobtap_plugin!(init);

fn init(p: &PluginRef) -> flux::Result<()> {
    p.set_name("bench-testexec")?;
    p.add_handler("job.validate", |p, _topic, args| {
        let input = args.input()?;
        let has_test = input
            .pointer("/jobspec/attributes/system/exec/test")
            .is_some_and(|v| !v.is_null());
        if !has_test {
            p.jobspec_update(&json!({
                "attributes.system.exec.test": { "run_duration": "0.001s" }
            }))?;
        }
        Ok(())
    })?;
    Ok(())
}
