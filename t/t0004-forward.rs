//! Forwarding: ordinary `flux submit --setattr=container=X` on the queue
//! broker runs on X's broker with the exact R Fluxion chose, and the queue
//! job tells the truth about it.

mod common;

use common::{dmesg, pod_or_skip};
use pancake_pod::{Pod, PodSpec};

/// A pod with pancake loaded in the queue broker.
fn pancake_pod(test: &str, spec: PodSpec, module_args: &[&str]) -> Option<Pod> {
    let pod = pod_or_skip(test, spec)?;
    let (module, plugin) = pod.install_pancake().unwrap();
    let q = &pod.queue;
    q.run(&["jobtap", "load", plugin.to_str().unwrap(), "role=queue"])
        .unwrap();
    let view = format!("view={}", pod.root().display());
    let plugin_arg = format!("plugin={}", plugin.display());
    let mut args = vec![
        "module",
        "load",
        module.to_str().unwrap(),
        &view,
        &plugin_arg,
    ];
    args.extend_from_slice(module_args);
    q.run(&args).unwrap();
    // Wait until every container is connected.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let st: serde_json::Value =
            serde_json::from_str(&common::rpc(q, "pancake.status", "{}").unwrap()).unwrap();
        let up = st["containers"]
            .as_array()
            .map(|a| a.iter().filter(|c| c["state"] == "connected").count())
            .unwrap_or(0);
        if up == pod.apps.len() && st["fluxion"]["ready"] == true {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "containers not connected: {st}\n{}",
            dmesg(q)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Some(pod)
}

fn submit(pod: &Pod, args: &[&str]) -> String {
    let mut a = vec!["submit"];
    a.extend_from_slice(args);
    pod.queue
        .run(&a)
        .unwrap_or_else(|e| panic!("{e}\n{}", dmesg(&pod.queue)))
        .trim()
        .to_string()
}

fn wait_clean(pod: &Pod, id: &str) {
    pod.queue
        .run(&["job", "wait-event", "-t", "60", id, "clean"])
        .unwrap_or_else(|e| panic!("{id} never finished: {e}\n{}", dmesg(&pod.queue)));
}

fn job_field(b: &pancake_pod::Broker, id: &str, fmt: &str) -> String {
    b.run(&["jobs", "-no", fmt, id]).unwrap().trim().to_string()
}

#[test]
fn container_jobs_run_on_their_broker_and_mirror_exit_codes() {
    let Some(pod) = pancake_pod("forward happy path", PodSpec::default(), &[]) else {
        return;
    };
    let ok = submit(&pod, &["--setattr=container=lammps", "-n2", "true"]);
    let three = submit(&pod, &["--setattr=container=ior", "sh", "-c", "exit 3"]);
    let sig = submit(
        &pod,
        &["--setattr=container=chatterbug", "sh", "-c", "kill -9 $$"],
    );
    for id in [&ok, &three, &sig] {
        wait_clean(&pod, id);
    }
    assert_eq!(
        job_field(&pod.queue, &ok, "{result}"),
        "COMPLETED",
        "{}",
        dmesg(&pod.queue)
    );
    assert_eq!(
        job_field(&pod.queue, &three, "{result} {returncode}"),
        "FAILED 3"
    );
    // Death by signal: whatever the application broker reports, the queue
    // reports too (checked against the app job below).
    assert!(job_field(&pod.queue, &sig, "{result}") == "FAILED");
    let st = pod.queue.output(&["job", "status", &three]).unwrap();
    assert_eq!(
        st.status.code(),
        Some(3),
        "flux job status returns the app's exit code"
    );

    // Each ran on its own container's broker, with the same R as the queue job.
    for (id, container) in [(&ok, "lammps"), (&three, "ior"), (&sig, "chatterbug")] {
        let app = pod.app(container);
        let app_ids = app.run(&["jobs", "-a", "-no", "{id}"]).unwrap();
        assert_eq!(app_ids.lines().count(), 1, "{container}: {app_ids}");
        let app_id = app_ids.trim();
        assert_eq!(
            job_field(&pod.queue, id, "{result} {returncode} {waitstatus}"),
            job_field(app, app_id, "{result} {returncode} {waitstatus}"),
            "{container}: the queue job mirrors the application job"
        );
        let qr: serde_json::Value =
            serde_json::from_str(&pod.queue.run(&["job", "info", id, "R"]).unwrap()).unwrap();
        let ar: serde_json::Value =
            serde_json::from_str(&app.run(&["job", "info", app_id, "R"]).unwrap()).unwrap();
        assert_eq!(
            qr["execution"]["R_lite"], ar["execution"]["R_lite"],
            "{container}"
        );
        assert_eq!(
            qr["execution"]["expiration"], 0.0,
            "the queue copy has no time limit"
        );
        // The memo tells which container and which application job.
        let memo = job_field(&pod.queue, id, "{user.container} {user.app_id}");
        assert!(memo.starts_with(container), "{memo}");
    }
    assert_eq!(job_field(&pod.queue, &ok, "{ncores} {nnodes}"), "2 1");
    pod.shutdown().unwrap();
}

#[test]
fn bad_submissions_are_refused_with_reasons() {
    let Some(pod) = pancake_pod("forward refusals", PodSpec::default(), &[]) else {
        return;
    };
    let q = &pod.queue;
    let out = q
        .output(&["submit", "--setattr=container=nope", "true"])
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("unknown container \"nope\"") && err.contains("lammps"),
        "{err}"
    );
    let out = q
        .output(&[
            "submit",
            "--setattr=container=ior",
            "--setattr=system.exec.test={}",
            "true",
        ])
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("attributes.system.exec is set by pancake")
    );
    // Jobs without the attribute are untouched.
    q.run(&["run", "true"]).unwrap();
    // A request larger than the cluster fails at once with a clear exception.
    let big = submit(&pod, &["--setattr=container=ior", "-N5", "true"]);
    wait_clean(&pod, &big);
    let r = job_field(q, &big, "{result}");
    assert_eq!(r, "FAILED");
    let log = q.run(&["job", "eventlog", &big]).unwrap();
    assert!(
        log.contains("unsatisfiable") && log.contains("ior"),
        "{log}"
    );
    pod.shutdown().unwrap();
}

#[test]
fn cancel_before_and_after_forwarding_frees_everything() {
    let Some(pod) = pancake_pod("forward cancel", PodSpec::default(), &[]) else {
        return;
    };
    let q = &pod.queue;
    // Fill all 40 cores with one long job, so the next one waits.
    let hog = submit(
        &pod,
        &[
            "--setattr=container=lammps",
            "-N4",
            "--exclusive",
            "sleep",
            "300",
        ],
    );
    q.run(&["job", "wait-event", "-t", "30", &hog, "start"])
        .unwrap();
    let waiter = submit(&pod, &["--setattr=container=ior", "-n1", "true"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(job_field(q, &waiter, "{state}"), "DEPEND", "{}", dmesg(q));
    q.run(&["cancel", &waiter]).unwrap();
    wait_clean(&pod, &waiter);
    assert_eq!(job_field(q, &waiter, "{result}"), "CANCELED");
    q.run(&["cancel", &hog]).unwrap();
    wait_clean(&pod, &hog);
    assert_eq!(job_field(q, &hog, "{result}"), "CANCELED");
    // The application job was cancelled too, and every core is free again:
    // a whole-cluster job runs now.
    let app = pod.app("lammps");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while app.run(&["jobs", "-no", "{id}"]).unwrap().trim() != "" {
        assert!(std::time::Instant::now() < deadline, "app job still active");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let all = submit(
        &pod,
        &[
            "--setattr=container=chatterbug",
            "-N4",
            "--exclusive",
            "true",
        ],
    );
    wait_clean(&pod, &all);
    assert_eq!(job_field(q, &all, "{result}"), "COMPLETED", "{}", dmesg(q));
    pod.shutdown().unwrap();
}
