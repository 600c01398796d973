//! Forwarding: ordinary `flux submit --setattr=container=X` on the queue
//! broker runs on X's broker with the exact R Fluxion chose, and the queue
//! job tells the truth about it.

mod common;

use common::{dmesg, job_field, pancake_pod, submit, wait_clean};
use pancake_pod::PodSpec;

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
    assert_eq!(job_field(q, &waiter, "{state}"), "SCHED", "{}", dmesg(q));
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

/// `-N2`/`-N4` jobs land on the right ranks with the right cores per node,
/// GPU jobs get GPUs, and the whole thing works through `pancake-fluxion`
/// over gRPC as well as with the embedded matcher.
fn shapes(test: &str, grpc: bool) {
    let spec = PodSpec {
        gpus: [("lammps".to_string(), 2)].into_iter().collect(),
        ..PodSpec::default()
    };
    // All containers must agree on the graph: give every one the GPUs.
    let spec = PodSpec {
        gpus: spec.containers.iter().map(|c| (c.clone(), 2)).collect(),
        ..spec
    };
    if common::skip(test) {
        return;
    }
    let server_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(server_dir.path().join("var/log")).unwrap();
    let server = grpc.then(|| pancake_pod::FluxionServer::start(server_dir.path()).unwrap());
    let arg = server.as_ref().map(|s| format!("fluxion={}", s.uri));
    let args: Vec<&str> = arg.iter().map(String::as_str).collect();
    let Some(pod) = pancake_pod(test, spec, &args) else {
        return;
    };
    let n2 = submit(
        &pod,
        &["--setattr=container=lammps", "-N2", "-n8", "sleep", "0.2"],
    );
    let n4 = submit(
        &pod,
        &["--setattr=container=ior", "-N4", "-n4", "-c2", "true"],
    );
    let gpu = submit(
        &pod,
        &["--setattr=container=chatterbug", "-n1", "-g2", "true"],
    );
    for id in [&n2, &n4, &gpu] {
        wait_clean(&pod, id);
        assert_eq!(
            job_field(&pod.queue, id, "{result}"),
            "COMPLETED",
            "{id}: {}",
            dmesg(&pod.queue)
        );
    }
    let r = |id: &str| -> serde_json::Value {
        serde_json::from_str(&pod.queue.run(&["job", "info", id, "R"]).unwrap()).unwrap()
    };
    let per_rank = |v: &serde_json::Value, kind: &str| -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for e in v["execution"]["R_lite"].as_array().unwrap() {
            let ids = fluxion::IdSet::parse(e["children"][kind].as_str().unwrap_or("")).unwrap();
            for rank in fluxion::IdSet::parse(e["rank"].as_str().unwrap())
                .unwrap()
                .iter()
            {
                out.push((rank.to_string(), ids.len() as usize));
            }
        }
        out.sort();
        out
    };
    let r2 = r(&n2);
    let cores = per_rank(&r2, "core");
    assert_eq!(cores.len(), 2, "-N2 uses two ranks: {r2}");
    assert!(
        cores.iter().all(|(_, n)| *n == 4),
        "4 cores per node: {cores:?}"
    );
    assert_eq!(job_field(&pod.queue, &n2, "{nnodes} {ncores}"), "2 8");
    let r4 = per_rank(&r(&n4), "core");
    assert_eq!(
        r4,
        vec![
            ("0".into(), 2),
            ("1".into(), 2),
            ("2".into(), 2),
            ("3".into(), 2)
        ]
    );
    // nodelist follows rank order, with the pod's host names.
    assert_eq!(r(&n4)["execution"]["nodelist"][0], "flux-sample-[0-3]");
    let g = per_rank(&r(&gpu), "gpu");
    assert_eq!(
        g.iter().map(|(_, n)| n).sum::<usize>(),
        2,
        "two GPUs: {g:?}"
    );

    let st: serde_json::Value = common::status(&pod.queue);
    assert_eq!(
        st["fluxion"]["backend"],
        if grpc {
            serde_json::json!(server.as_ref().unwrap().uri)
        } else {
            serde_json::json!("embedded")
        }
    );
    assert_eq!(
        st["stats"]["granted"], st["stats"]["freed"],
        "every allocation freed: {st}"
    );
    pod.shutdown().unwrap();
}

#[test]
fn node_and_gpu_shapes_embedded() {
    shapes("shapes (embedded)", false);
}

#[test]
fn node_and_gpu_shapes_over_grpc() {
    shapes("shapes (pancake-fluxion over gRPC)", true);
}

#[test]
fn application_side_timeout_is_mirrored() {
    let Some(pod) = pancake_pod("forward timeout", PodSpec::default(), &[]) else {
        return;
    };
    let id = submit(
        &pod,
        &["--setattr=container=ior", "-t", "1s", "sleep", "30"],
    );
    wait_clean(&pod, &id);
    let app = pod.app("ior");
    let app_id = app
        .run(&["jobs", "-a", "-no", "{id}"])
        .unwrap()
        .trim()
        .to_string();
    let app_view = job_field(app, &app_id, "{result} {returncode}");
    assert!(app_view.starts_with("TIMEOUT"), "{app_view}");
    // Version fallback: before flux-core 0.84 job-manager.raise takes no
    // wait_status, so the queue job ends with the timeout exception's own
    // status (-15), whatever the application job's exit code was.
    let expected = if common::flux_at_least(0, 84) {
        app_view.clone()
    } else {
        "TIMEOUT -15".to_string()
    };
    assert_eq!(
        job_field(&pod.queue, &id, "{result} {returncode}"),
        expected,
        "{}",
        dmesg(&pod.queue)
    );
    let log = pod.queue.run(&["job", "eventlog", &id]).unwrap();
    assert!(
        log.contains("type=\"timeout\"") && log.contains("ior"),
        "{log}"
    );
    pod.shutdown().unwrap();
}

#[test]
fn strict_application_brokers_refuse_direct_and_forged_jobs() {
    let Some(pod) = pancake_pod("forward strict", PodSpec::default(), &["strict=true"]) else {
        return;
    };
    let app = pod.app("lammps");
    // A plain job submitted straight to the application broker is refused,
    // telling the user where to go.
    let out = app.output(&["submit", "true"]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--setattr=container=lammps"), "{err}");
    // So is a guest's, with or without an R of its own. (A flux-core built
    // without flux-security refuses a guest's J in job-ingest already, as
    // here; with it, the plugin does: `app_admission` in the plugin's unit
    // tests covers that refusal.)
    for extra in [&[][..], &["--setattr=system.alloc-bypass.R={}"][..]] {
        let mut args = extra.to_vec();
        args.push("true");
        let out = common::submit_as_guest(app, 4242, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && (err.contains("only instance owner can use sign-type=none")
                    || err.contains("pancake: only the instance owner")
                    || err.contains("--setattr=container=lammps")),
            "a guest's job: {err}"
        );
    }
    // A pancake job runs; an owner job whose R overlaps it is refused (the
    // defence in depth against a buggy module), one outside the broker too.
    let id = submit(
        &pod,
        &[
            "--setattr=container=lammps",
            "-N4",
            "--exclusive",
            "sleep",
            "30",
        ],
    );
    pod.queue
        .run(&["job", "wait-event", "-t", "30", &id, "start"])
        .unwrap();
    let r = app.run(&["kvs", "get", "resource.R"]).unwrap();
    let out = app
        .output(&[
            "submit",
            &format!("--setattr=system.alloc-bypass.R={}", r.trim()),
            "true",
        ])
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("overlaps running job"),
        "{err}"
    );
    let mut outside: serde_json::Value = serde_json::from_str(&r).unwrap();
    outside["execution"]["R_lite"][0]["children"]["core"] = "0-99".into();
    let out = app
        .output(&[
            "submit",
            &format!("--setattr=system.alloc-bypass.R={outside}"),
            "true",
        ])
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not inside this broker's resources"),
        "{err}"
    );
    pod.queue.run(&["cancel", &id]).unwrap();
    wait_clean(&pod, &id);
    let stats = pod.queue.run(&["module", "stats", "pancake"]).unwrap();
    assert!(
        stats.contains("\"forwarded\":1") || stats.contains("\"forwarded\": 1"),
        "{stats}"
    );
    pod.shutdown().unwrap();
}

#[test]
fn a_dying_application_broker_fails_its_jobs_and_spares_the_others() {
    let Some(mut pod) = pancake_pod("forward broker lost", PodSpec::default(), &[]) else {
        return;
    };
    let doomed = submit(&pod, &["--setattr=container=ior", "-n2", "sleep", "300"]);
    pod.queue
        .run(&["job", "wait-event", "-t", "30", &doomed, "start"])
        .unwrap();
    pod.kill_app("ior").unwrap();
    wait_clean(&pod, &doomed);
    let log = pod.queue.run(&["job", "eventlog", &doomed]).unwrap();
    assert!(
        log.contains("exception") && log.contains("container ior"),
        "{log}"
    );
    // The module keeps working for the other containers.
    let ok = submit(&pod, &["--setattr=container=lammps", "-n1", "true"]);
    wait_clean(&pod, &ok);
    assert_eq!(
        job_field(&pod.queue, &ok, "{result}"),
        "COMPLETED",
        "{}",
        dmesg(&pod.queue)
    );
    let st: serde_json::Value = common::status(&pod.queue);
    let ior = st["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ior")
        .unwrap()
        .clone();
    assert_eq!(ior["state"], "lost", "{st}");
    // The killed broker's job shell may still run: its cores stay held.
    assert_eq!(
        st["stats"]["granted"].as_u64().unwrap(),
        st["stats"]["freed"].as_u64().unwrap() + 1,
        "{st}"
    );
    let killed = pod.shutdown().unwrap();
    eprintln!("left behind by the killed broker and cleaned up: {killed:?}");
}

#[test]
fn jobs_wait_while_fluxion_is_unreachable() {
    if common::skip("fluxion unreachable") {
        return;
    }
    let port = pancake_pod::FluxionServer::free_port();
    let arg = format!("fluxion=grpc://127.0.0.1:{port}");
    // No server yet: the module loads anyway (nothing blocks), and the
    // container jobs wait.
    let pod = common::pod_or_skip("fluxion unreachable", PodSpec::default()).unwrap();
    common::load_pancake(&pod, &[&arg]);
    let q = &pod.queue;
    std::thread::sleep(std::time::Duration::from_secs(1));
    let ids: Vec<String> = (0..3)
        .map(|_| submit(&pod, &["--setattr=container=ior", "-n1", "true"]))
        .collect();
    std::thread::sleep(std::time::Duration::from_secs(2));
    for id in &ids {
        assert_eq!(job_field(q, id, "{state}"), "SCHED", "{}", dmesg(q));
    }
    assert!(dmesg(q).contains("fluxion init failed"), "{}", dmesg(q));
    // The service comes up: nothing was lost, every job runs.
    std::fs::create_dir_all(pod.root().join("var/log")).unwrap();
    let _server = pancake_pod::FluxionServer::start_on(pod.root(), port).unwrap();
    for id in &ids {
        wait_clean(&pod, id);
        assert_eq!(job_field(q, id, "{result}"), "COMPLETED", "{}", dmesg(q));
    }
    pod.shutdown().unwrap();
}

/// The Fluxion service restarts (losing its graph and every allocation)
/// while a job runs: the module loads the graph again, restores the running
/// job's allocation under its id, and only then matches: the waiting jobs
/// never get the running job's node.
#[test]
fn a_restarted_fluxion_gets_live_allocations_back() {
    if common::skip("fluxion restart") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("var/log")).unwrap();
    let port = pancake_pod::FluxionServer::free_port();
    let server = pancake_pod::FluxionServer::start_on(dir.path(), port).unwrap();
    let arg = format!("fluxion={}", server.uri);
    let Some(pod) = pancake_pod("fluxion restart", PodSpec::default(), &[&arg]) else {
        return;
    };
    let q = &pod.queue;
    let long = submit(
        &pod,
        &[
            "--setattr=container=ior",
            "-N1",
            "--exclusive",
            "sleep",
            "6",
        ],
    );
    q.run(&["job", "wait-event", "-t", "30", &long, "start"])
        .unwrap();
    drop(server);
    let _server = pancake_pod::FluxionServer::start_on(dir.path(), port).unwrap();
    let ids: Vec<String> = (0..4)
        .map(|_| {
            submit(
                &pod,
                &["--setattr=container=lammps", "-N1", "--exclusive", "true"],
            )
        })
        .collect();
    wait_clean(&pod, &long);
    for id in &ids {
        wait_clean(&pod, id);
        assert_eq!(job_field(q, id, "{result}"), "COMPLETED", "{}", dmesg(q));
    }
    let records: Vec<_> = pod.apps.iter().flat_map(common::app_records).collect();
    let bad = common::check_no_overlap(&records);
    assert!(bad.is_empty(), "{bad:#?}\n{}", dmesg(q));
    let log = dmesg(q);
    assert!(log.contains("fluxion holds the graph again"), "{log}");
    let st: serde_json::Value = common::status(q);
    assert_eq!(st["stats"]["granted"], st["stats"]["freed"], "{st}");
    pod.shutdown().unwrap();
}

#[test]
fn flux_run_prints_the_application_output_and_returns_its_code() {
    let Some(pod) = pancake_pod("forward output", PodSpec::default(), &[]) else {
        return;
    };
    let out = pod
        .queue
        .output(&[
            "run",
            "--setattr=container=lammps",
            "-n2",
            "sh",
            "-c",
            "echo hello from $(flux getattr rank 2>/dev/null || echo task); echo oops >&2; exit 4",
        ])
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(4),
        "stdout {stdout} stderr {stderr}\n{}",
        dmesg(&pod.queue)
    );
    assert_eq!(
        stdout.matches("hello from").count(),
        2,
        "both tasks' output: {stdout}"
    );
    assert!(stderr.contains("oops"), "{stderr}");
    // flux job attach replays it too.
    let id = pod
        .queue
        .run(&["jobs", "-a", "-no", "{id}"])
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let attach = pod.queue.output(&["job", "attach", &id]).unwrap();
    assert!(String::from_utf8_lossy(&attach.stdout).contains("hello from"));
    pod.shutdown().unwrap();
}

#[test]
fn a_returning_application_broker_is_reconnected() {
    let Some(mut pod) = pancake_pod("forward broker returns", PodSpec::default(), &[]) else {
        return;
    };
    // A job holding the whole cluster when its broker dies: the queue job
    // fails at once, but its cores stay held (a killed broker's tasks may
    // still run) until the broker is back without it.
    let big = submit(
        &pod,
        &[
            "--setattr=container=chatterbug",
            "-N4",
            "--exclusive",
            "sleep",
            "15",
        ],
    );
    pod.queue
        .run(&["job", "wait-event", "-t", "30", &big, "start"])
        .unwrap();
    pod.kill_app("chatterbug").unwrap();
    wait_clean(&pod, &big);
    assert_eq!(job_field(&pod.queue, &big, "{result}"), "FAILED");
    let other = submit(
        &pod,
        &["--setattr=container=lammps", "-N1", "--exclusive", "true"],
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(
        job_field(&pod.queue, &other, "{state}"),
        "SCHED",
        "the lost job's cores are still held"
    );
    // Jobs for it wait while it is gone...
    let waiting = submit(&pod, &["--setattr=container=chatterbug", "-n1", "true"]);
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(job_field(&pod.queue, &waiting, "{state}"), "SCHED");
    // ... and run once it is back: pancake reconnects by itself.
    pod.restart_app("chatterbug").unwrap();
    wait_clean(&pod, &waiting);
    assert_eq!(
        job_field(&pod.queue, &waiting, "{result}"),
        "COMPLETED",
        "{}",
        dmesg(&pod.queue)
    );
    // Back without the big job: its cores went back, the lammps job ran.
    wait_clean(&pod, &other);
    assert_eq!(job_field(&pod.queue, &other, "{result}"), "COMPLETED");
    let log = dmesg(&pod.queue);
    assert!(log.contains("container chatterbug: lost"), "{log}");
    assert!(
        log.contains("container chatterbug is back without it: its cores are free again"),
        "{log}"
    );
    let st: serde_json::Value = common::status(&pod.queue);
    assert_eq!(st["stats"]["granted"], st["stats"]["freed"], "{st}");
    assert_eq!(st["jobs"], serde_json::json!([]), "{st}");
    pod.shutdown().unwrap();
}
