//! The pancake-bypass jobtap plugin in a real job-manager.

mod common;

use common::{dmesg, pod_or_skip, small_spec};

#[test]
fn plugin_loads_in_both_roles_lists_and_unloads() {
    let Some(pod) = pod_or_skip("jobtap load", small_spec()) else {
        return;
    };
    let (_, plugin) = pod.install_pancake().unwrap();
    let p = plugin.to_str().unwrap();
    for (broker, role) in [(&pod.queue, "queue"), (pod.app("app"), "app")] {
        broker
            .run(&["jobtap", "load", p, &format!("role={role}")])
            .unwrap();
        let list = broker.run(&["jobtap", "list"]).unwrap();
        // flux-core lists a DSO plugin by its file name; Flux derives the
        // plugin name (and its service job-manager.pancake-bypass) from it.
        assert!(list.lines().any(|l| l == "pancake-bypass.so"), "{list}");
        let q: serde_json::Value = serde_json::from_str(
            &broker
                .run(&["jobtap", "query", "pancake-bypass.so"])
                .unwrap(),
        )
        .unwrap();
        assert_eq!(q["role"], role);
        assert!(dmesg(broker).contains(&format!("pancake-bypass: loaded in {role} role")));
        broker
            .run(&["jobtap", "remove", "pancake-bypass.so"])
            .unwrap();
        assert!(
            !broker
                .run(&["jobtap", "list"])
                .unwrap()
                .contains("pancake-bypass")
        );
    }
    pod.shutdown().unwrap();
}

#[test]
fn bad_role_is_refused_and_reload_cycles_are_safe() {
    let Some(pod) = pod_or_skip("jobtap role", small_spec()) else {
        return;
    };
    let (_, plugin) = pod.install_pancake().unwrap();
    let p = plugin.to_str().unwrap();
    let q = &pod.queue;
    let out = q.output(&["jobtap", "load", p, "role=bogus"]).unwrap();
    assert!(!out.status.success());
    assert!(
        dmesg(q).contains("role=\"bogus\": expected role=queue or role=app"),
        "{}",
        dmesg(q)
    );
    let pid = q.broker_pid().unwrap();
    for _ in 0..20 {
        q.run(&["jobtap", "load", p, "role=queue"]).unwrap();
        q.run(&["jobtap", "remove", "pancake-bypass.so"]).unwrap();
    }
    assert_eq!(q.broker_pid().unwrap(), pid);
    // Jobs still flow through the job-manager afterwards (the queue broker
    // starts without a scheduler: pancake is its scheduler, not loaded here).
    q.run(&["module", "load", "sched-simple"]).unwrap();
    q.run(&["run", "true"]).unwrap();
    pod.shutdown().unwrap();
}
