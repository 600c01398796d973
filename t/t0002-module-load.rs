//! The pancake broker module in a real broker: load, status, panic safety,
//! bad options, unload with every thread joined, and 50 reloads.

mod common;

use common::{dmesg, pod_or_skip, rpc, small_spec, threads};

#[test]
fn module_loads_answers_and_unloads_cleanly() {
    let Some(pod) = pod_or_skip("module load", small_spec()) else {
        return;
    };
    let (module, _) = pod.install_pancake().unwrap();
    let q = &pod.queue;
    let pid = q.broker_pid().unwrap();
    let before = threads(pid);

    q.run(&["module", "load", module.to_str().unwrap()])
        .unwrap();
    let list = q.run(&["module", "list"]).unwrap();
    assert!(
        list.lines().any(|l| l.starts_with("pancake ")),
        "module list: {list}"
    );
    // Flux named the module after the file: its service is pancake.*.
    q.run(&["ping", "-c", "1", "pancake"]).unwrap();
    let status: serde_json::Value = common::status(q);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        status["worker"], "pancake-worker",
        "status went through the worker thread: {status}"
    );
    assert_eq!(status["options"]["fluxion"], "embedded");
    // The module thread and its worker thread are both running.
    assert!(
        threads(pid) >= before + 2,
        "threads before {before}, now {}",
        threads(pid)
    );

    q.run(&["module", "remove", "pancake"]).unwrap();
    assert!(
        !q.run(&["module", "list"])
            .unwrap()
            .lines()
            .any(|l| l.starts_with("pancake "))
    );
    assert_eq!(
        threads(pid),
        before,
        "every thread the module started was joined"
    );
    let log = dmesg(q);
    assert!(
        log.contains("pancake 0.1.0 loaded") && log.contains("pancake unloaded"),
        "{log}"
    );
    pod.shutdown().unwrap();
}

#[test]
fn bad_options_fail_the_load_with_a_reason() {
    let Some(pod) = pod_or_skip("module bad options", small_spec()) else {
        return;
    };
    let (module, _) = pod.install_pancake().unwrap();
    let q = &pod.queue;
    let out = q
        .output(&[
            "module",
            "load",
            module.to_str().unwrap(),
            "flxuion=grpc://x:1",
        ])
        .unwrap();
    assert!(!out.status.success());
    assert!(
        dmesg(q).contains("unknown option \"flxuion\""),
        "{}",
        dmesg(q)
    );
    let out = q
        .output(&[
            "module",
            "load",
            module.to_str().unwrap(),
            "fluxion=http://x",
        ])
        .unwrap();
    assert!(!out.status.success());
    // The broker is fine and the module can still load with good options.
    q.run(&[
        "module",
        "load",
        module.to_str().unwrap(),
        "fluxion=grpc://127.0.0.1:1",
    ])
    .unwrap();
    let status = rpc(q, "pancake.status", "{}").unwrap();
    assert!(status.contains("grpc://127.0.0.1:1"), "{status}");
    q.run(&["module", "remove", "pancake"]).unwrap();
    pod.shutdown().unwrap();
}

#[test]
fn config_table_and_reload() {
    let Some(pod) = pod_or_skip("module config", small_spec()) else {
        return;
    };
    let (module, _) = pod.install_pancake().unwrap();
    let q = &pod.queue;
    q.run(&["module", "load", module.to_str().unwrap()])
        .unwrap();
    // Add a [pancake] table to the queue broker's config and reload it:
    // the queue policy changes at once; the Fluxion backend (which holds
    // live allocations) only at the next load, and status keeps telling
    // the one in use.
    let conf = pod.root().join("etc/flux/config-0/broker.toml");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\n[pancake]\nfluxion = \"grpc://127.0.0.1:4242\"\nqueue-policy = \"easy\"\n");
    std::fs::write(&conf, &text).unwrap();
    q.run(&["config", "reload"]).unwrap();
    let status: serde_json::Value = common::status(q);
    assert_eq!(status["options"]["queue-policy"], "easy", "{status}");
    assert_eq!(status["fluxion"]["backend"], "embedded", "{status}");
    assert!(
        dmesg(q).contains("fluxion takes effect at the next module load"),
        "{}",
        dmesg(q)
    );
    // A bad table is refused by the module, so `flux config reload` fails.
    std::fs::write(&conf, text.replace("[pancake]\n", "[pancake]\nnope = 1\n")).unwrap();
    let out = q.output(&["config", "reload"]).unwrap();
    assert!(
        !out.status.success(),
        "reload with a bad [pancake] table must fail"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nope"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ... and the refused config was not installed: the broker still has
    // the one pancake accepted.
    let installed = q.run(&["config", "get", "pancake"]).unwrap();
    if common::flux_at_least(0, 82) {
        assert!(!installed.contains("nope"), "{installed}");
    } else {
        // Version fallback: before flux-core 0.82 the broker keeps a config
        // a module refused; the module said so when it loaded, and goes on
        // with the one it accepted.
        assert!(installed.contains("nope"), "{installed}");
        assert!(
            dmesg(q).contains("a config reload this module refuses"),
            "{}",
            dmesg(q)
        );
    }
    let status: serde_json::Value = common::status(q);
    assert_eq!(status["options"]["queue-policy"], "easy", "{status}");
    pod.shutdown().unwrap();
}

#[test]
fn a_panic_in_a_handler_never_reaches_the_broker() {
    let Some(pod) = pod_or_skip("module panic", small_spec()) else {
        return;
    };
    let (module, _) = pod.install_pancake().unwrap();
    let q = &pod.queue;
    q.run(&["module", "load", module.to_str().unwrap()])
        .unwrap();
    q.run(&[
        "module",
        "debug",
        "--set",
        &pancake_debug_panic(),
        "pancake",
    ])
    .unwrap();
    let err = rpc(q, "pancake.status", "{}").unwrap_err();
    assert!(err.contains("internal error in pancake.status"), "{err}");
    let log = dmesg(q);
    assert!(
        log.contains("panic in handler for pancake.status: injected"),
        "{log}"
    );
    // Broker and module are both still alive and serving.
    let status = rpc(q, "pancake.status", "{}").unwrap();
    assert!(status.contains("pancake-worker"));
    q.run(&["module", "remove", "pancake"]).unwrap();
    pod.shutdown().unwrap();
}

fn pancake_debug_panic() -> String {
    // module/src/lib.rs DEBUG_PANIC
    "1".to_string()
}

#[test]
fn fifty_reloads_no_crash_no_memory_growth() {
    let Some(pod) = pod_or_skip("module reload x50", small_spec()) else {
        return;
    };
    let (module, _) = pod.install_pancake().unwrap();
    let q = &pod.queue;
    let m = module.to_str().unwrap();
    let pid = q.broker_pid().unwrap();
    q.run(&["module", "load", m]).unwrap();
    // Warm up: the first cycles map the DSO's dependencies and grow allocator arenas.
    for _ in 0..5 {
        q.run(&["module", "reload", m]).unwrap();
    }
    let rss0 = q.rss_kib().unwrap();
    let threads0 = threads(pid);
    for i in 0..50 {
        q.run(&["module", "reload", m])
            .unwrap_or_else(|e| panic!("reload {i}: {e}"));
        rpc(q, "pancake.status", "{}").unwrap_or_else(|e| panic!("status after reload {i}: {e}"));
    }
    let rss1 = q.rss_kib().unwrap();
    assert_eq!(threads(pid), threads0, "no thread leaked across reloads");
    assert_eq!(q.broker_pid().unwrap(), pid, "the broker never restarted");
    let growth = rss1 as i64 - rss0 as i64;
    eprintln!("MEASURE broker RSS over 50 reloads: {rss0} KiB -> {rss1} KiB ({growth:+} KiB)");
    // A leak of the DSO or of the worker's stack would cost megabytes per cycle.
    assert!(
        growth < 4096,
        "broker RSS grew by {growth} KiB over 50 reloads"
    );
    q.run(&["module", "remove", "pancake"]).unwrap();
    pod.shutdown().unwrap();
}

#[test]
fn a_module_left_loaded_exits_cleanly_at_instance_shutdown() {
    // flux-core cancels (pthread_cancel) modules still running when the
    // broker exits; pancake must leave by itself before that, or the forced
    // unwind through Rust frames aborts the broker.
    let Some(pod) = pod_or_skip("module at shutdown", small_spec()) else {
        return;
    };
    let (module, _) = pod.install_pancake().unwrap();
    pod.queue
        .run(&["module", "load", module.to_str().unwrap()])
        .unwrap();
    // shutdown() fails if any flux start exits non-zero (an abort would).
    pod.shutdown().unwrap();
}
