//! The queue broker is a real Flux queue (issue #10): its job-manager
//! decides *when* a job may start — dependencies, begin-time, holds,
//! `flux queue` control, named queues, priority order — and pancake, its
//! scheduler, decides *where*, for container jobs and jobs without a
//! container alike, from one graph.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    AppRecord, app_records, check_no_overlap, dmesg, hold_nodes, job_field, local_records,
    pancake_pod, queue_cmd, reload_pancake, submit, wait_clean, wait_until,
};
use pancake_pod::{Pod, PodSpec};

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The application job of queue job `id` (by the queue id its jobspec
/// carries), if one ran.
fn app_of<'a>(
    records: &'a [AppRecord],
    q: &pancake_pod::Broker,
    id: &str,
) -> Option<&'a AppRecord> {
    let num = job_field(q, id, "{id.dec}").parse::<u64>().ok()?;
    records.iter().find(|r| r.queue_id == Some(num))
}

fn all_app_records(pod: &Pod) -> Vec<AppRecord> {
    pod.apps.iter().flat_map(app_records).collect()
}

fn time(q: &pancake_pod::Broker, id: &str, field: &str) -> f64 {
    job_field(q, id, &format!("{{{field}}}"))
        .parse()
        .unwrap_or_else(|_| panic!("{id}: {field} is not a time"))
}

/// `--dependency=afterok|afterany|afternotok|after`, `--begin-time` and a
/// hold: each application job starts only when its queue job may start,
/// and the queue job's `t_run` is its application job's start (the
/// mirror's latency later, never earlier).
#[test]
fn dependencies_begin_time_and_holds_hold_the_application_job() {
    let Some(pod) = pancake_pod("queue dependencies", PodSpec::default(), &[]) else {
        return;
    };
    let q = &pod.queue;
    // a runs until the test opens its gate (a loaded machine may take
    // seconds over the submissions below).
    let gate = pod.root().join("gate-a");
    let a_cmd = format!("while [ ! -e {} ]; do sleep 0.1; done", gate.display());
    let a = submit(
        &pod,
        &["--setattr=container=lammps", "-n1", "sh", "-c", &a_cmd],
    );
    let dep = |kind: &str, container: &str| {
        submit(
            &pod,
            &[
                &format!("--setattr=container={container}"),
                &format!("--dependency={kind}:{a}"),
                "-n1",
                "true",
            ],
        )
    };
    let ok = dep("afterok", "ior");
    let any = dep("afterany", "chatterbug");
    let notok = dep("afternotok", "ior");
    let started = dep("after", "chatterbug");
    let t_begin = now() + 5.0;
    let begin = submit(
        &pod,
        &[
            "--setattr=container=chatterbug",
            "--begin-time=+5s",
            "-n1",
            "true",
        ],
    );
    let held = submit(
        &pod,
        &["--setattr=container=lammps", "--urgency=0", "-n1", "true"],
    );
    // Nothing of those runs yet: the job-manager holds them back.
    std::thread::sleep(Duration::from_millis(1500));
    let check_begin = now() < t_begin - 0.5;
    for id in [&ok, &any, &notok, &begin, &held] {
        if id == &begin && !check_begin {
            continue;
        }
        let st = job_field(q, id, "{state}");
        assert!(
            st == "DEPEND" || (st == "SCHED" && id == &held) || (st == "PRIORITY" && id == &held),
            "{id} is {st}"
        );
        assert!(
            app_of(&all_app_records(&pod), q, id).is_none(),
            "{id} was forwarded"
        );
    }
    // A dependency on a job that does not exist is refused as Flux
    // refuses it, with the reason.
    let out = q
        .output(&[
            "submit",
            "--setattr=container=ior",
            "--dependency=afterok:123456789",
            "true",
        ])
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("dependency"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t_release = now();
    q.run(&["job", "urgency", &held, "default"]).unwrap();
    std::fs::write(&gate, "").unwrap();
    for id in [&a, &ok, &any, &notok, &started, &begin, &held] {
        wait_clean(&pod, id);
    }
    let records = all_app_records(&pod);
    let app_a = app_of(&records, q, &a).expect("a ran");
    // afterok/afterany release a job when its dependency is inactive.
    let a_ended = time(q, &a, "t_inactive");
    assert!(app_a.t_end <= a_ended + 0.01);
    for id in [&ok, &any] {
        let app = app_of(&records, q, id).unwrap_or_else(|| panic!("{id} ran\n{}", dmesg(q)));
        assert!(
            app.t_run >= a_ended,
            "{id}: its application job started at {} before its dependency ended at {a_ended}",
            app.t_run
        );
    }
    // afternotok on a job that succeeded: never runs anywhere.
    assert!(app_of(&records, q, &notok).is_none());
    assert_ne!(job_field(q, &notok, "{result}"), "COMPLETED");
    let app = app_of(&records, q, &started).unwrap();
    assert!(app.t_run >= time(q, &a, "t_run"), "after: once a started");
    let app = app_of(&records, q, &begin).unwrap();
    assert!(
        app.t_run >= t_begin - 0.5,
        "begin-time: {} < {t_begin}",
        app.t_run
    );
    let app = app_of(&records, q, &held).unwrap();
    assert!(app.t_run >= t_release, "held until released");
    // The queue job runs from its application job's start.
    for id in [&a, &ok, &any, &started, &begin, &held] {
        let app = app_of(&records, q, id).unwrap();
        let t_run = time(q, id, "t_run");
        assert!(
            t_run >= app.t_run && t_run - app.t_run < 3.0,
            "{id}: queue t_run {t_run}, application t_run {}",
            app.t_run
        );
        assert_eq!(job_field(q, id, "{result}"), "COMPLETED");
    }
    pod.shutdown().unwrap();
}

/// `flux queue stop/start`, `disable/enable`, `idle` and `drain` on the
/// default queue: nothing is forwarded while it is stopped, and idle and
/// drain wait for container jobs.
#[test]
fn queue_control_works_as_with_any_scheduler() {
    let Some(pod) = pancake_pod("queue control", PodSpec::default(), &[]) else {
        return;
    };
    let q = &pod.queue;
    q.run(&["queue", "stop"]).unwrap();
    let x = submit(&pod, &["--setattr=container=lammps", "-n1", "true"]);
    let local = submit(&pod, &["-n1", "true"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(job_field(q, &x, "{state}"), "SCHED");
    assert_eq!(job_field(q, &local, "{state}"), "SCHED");
    assert!(
        app_of(&all_app_records(&pod), q, &x).is_none(),
        "nothing is forwarded while the queue is stopped"
    );
    q.run(&["queue", "start"]).unwrap();
    wait_clean(&pod, &x);
    wait_clean(&pod, &local);
    assert_eq!(job_field(q, &x, "{result}"), "COMPLETED");

    queue_cmd(q, "disable", None, Some("maintenance window"));
    let out = q
        .output(&["submit", "--setattr=container=ior", "true"])
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("maintenance window"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    q.run(&["queue", "enable"]).unwrap();

    // idle and drain wait for the container jobs.
    let y = submit(&pod, &["--setattr=container=ior", "-n1", "sleep", "2"]);
    wait_until(q, "y runs", 60.0, || job_field(q, &y, "{state}") == "RUN");
    q.run(&["queue", "idle"]).unwrap();
    let st = job_field(q, &y, "{state}");
    assert!(st == "INACTIVE", "idle returned with y {st}");
    let z = submit(
        &pod,
        &["--setattr=container=chatterbug", "-n1", "sleep", "2"],
    );
    q.run(&["queue", "drain"]).unwrap();
    assert_eq!(job_field(q, &z, "{state}"), "INACTIVE");
    assert_eq!(job_field(q, &z, "{result}"), "COMPLETED");
    pod.shutdown().unwrap();
}

/// Named queues (`[queues.NAME]`, `flux submit -q NAME`): each stops,
/// starts and refuses on its own; an unknown queue is refused with the
/// reason; the application brokers never see the queue name.
#[test]
fn named_queues() {
    let spec = PodSpec {
        queue_config: "\n[queues.debug]\n[queues.batch]\n\n[policy.jobspec.defaults.system]\nqueue = \"batch\"\n"
            .into(),
        ..PodSpec::default()
    };
    let Some(pod) = pancake_pod("named queues", spec, &[]) else {
        return;
    };
    let q = &pod.queue;
    // Named queues begin stopped (flux-core): start them, as an admin does.
    q.run(&["queue", "start", "--all"]).unwrap();
    queue_cmd(q, "stop", Some("debug"), None);
    let x = submit(&pod, &["-q", "debug", "--setattr=container=lammps", "true"]);
    let y = submit(&pod, &["-q", "batch", "--setattr=container=ior", "true"]);
    let dflt = submit(&pod, &["--setattr=container=chatterbug", "true"]);
    wait_clean(&pod, &y);
    wait_clean(&pod, &dflt);
    assert_eq!(job_field(q, &y, "{result}"), "COMPLETED");
    assert_eq!(job_field(q, &dflt, "{queue}"), "batch");
    assert_eq!(job_field(q, &x, "{state}"), "SCHED");
    assert!(app_of(&all_app_records(&pod), q, &x).is_none());
    queue_cmd(q, "start", Some("debug"), None);
    wait_clean(&pod, &x);
    assert_eq!(job_field(q, &x, "{result}"), "COMPLETED");
    let out = q
        .output(&["submit", "-q", "nope", "--setattr=container=ior", "true"])
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope"), "{err}");
    queue_cmd(q, "disable", Some("debug"), Some("closed"));
    let out = q
        .output(&["submit", "-q", "debug", "--setattr=container=ior", "true"])
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("closed"));
    pod.shutdown().unwrap();
}

/// A job without a container takes cores from the same graph and runs on
/// the queue broker with its exact R: never on cores a container job holds.
/// With `local-jobs=refuse` it is refused at submit, naming the containers.
#[test]
fn jobs_without_a_container_run_on_the_queue_broker_from_the_same_graph() {
    let Some(pod) = pancake_pod("local jobs", PodSpec::default(), &[]) else {
        return;
    };
    let q = &pod.queue;
    let hog = hold_nodes(&pod, "lammps", 4, 3);
    let local = submit(&pod, &["-N4", "--exclusive", "true"]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(job_field(q, &local, "{state}"), "SCHED");
    assert_eq!(
        job_field(q, &local, "{annotations.sched.reason_pending}"),
        "insufficient resources"
    );
    let small = submit(&pod, &["-n2", "sleep", "1"]);
    wait_clean(&pod, &hog);
    wait_clean(&pod, &local);
    wait_clean(&pod, &small);
    for id in [&local, &small] {
        assert_eq!(job_field(q, id, "{result}"), "COMPLETED", "{}", dmesg(q));
    }
    assert_eq!(job_field(q, &local, "{nnodes} {ncores}"), "4 40");
    assert!(time(q, &local, "t_run") >= time(q, &hog, "t_cleanup") - 0.01);
    let out = q.run(&["run", "-n1", "echo", "from-the-queue"]).unwrap();
    assert!(out.contains("from-the-queue"));
    let mut records = all_app_records(&pod);
    records.extend(local_records(q));
    assert!(records.iter().any(|r| r.container == "queue"));
    let bad = check_no_overlap(&records);
    assert!(bad.is_empty(), "{bad:?}");

    reload_pancake(&pod, &["local-jobs=refuse"]);
    common::wait_connected(&pod);
    let out = q.output(&["submit", "-n1", "true"]).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("only container jobs") && err.contains("lammps") && err.contains("ior"),
        "{err}"
    );
    pod.shutdown().unwrap();
}

/// A waiting job is in SCHED and says why; `flux resource list` shows what
/// pancake holds, as `flux pancake map` does.
#[test]
fn pending_state_and_resources_are_truthful() {
    let Some(mut pod) = pancake_pod("pending state", PodSpec::default(), &[]) else {
        return;
    };
    let hog = hold_nodes(&pod, "lammps", 3, 300);
    let q = &pod.queue;
    let big = submit(&pod, &["--setattr=container=ior", "-N2", "true"]);
    wait_until(q, "big says why it waits", 30.0, || {
        job_field(q, &big, "{annotations.sched.reason_pending}") == "insufficient resources"
    });
    assert_eq!(job_field(q, &big, "{state}"), "SCHED");
    let counts = q
        .run(&[
            "resource",
            "list",
            "-s",
            "allocated",
            "-no",
            "{nnodes} {ncores}",
        ])
        .unwrap();
    assert_eq!(counts.trim(), "3 30", "{counts}");
    let map = common::rpc(q, "pancake.status", "{}").unwrap();
    let held: u64 = serde_json::from_str::<serde_json::Value>(&map).unwrap()["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["fluxion_id"].is_number())
        .filter_map(|j| fluxion::Rv1::parse(&j["R"].to_string()).ok())
        .map(|r| r.totals().unwrap().cores)
        .sum();
    assert_eq!(held, 30, "pancake holds what flux resource list shows");
    // A container whose broker is gone: its waiting jobs say so.
    pod.kill_app("chatterbug").unwrap();
    let q = &pod.queue;
    let orphan = submit(&pod, &["--setattr=container=chatterbug", "-n1", "true"]);
    wait_until(q, "orphan says why it waits", 30.0, || {
        job_field(q, &orphan, "{annotations.sched.reason_pending}")
            == "container chatterbug is not connected"
    });
    q.run(&["cancel", &hog, &big, &orphan]).unwrap();
    for id in [&hog, &big, &orphan] {
        wait_clean(&pod, id);
    }
    let _ = pod.shutdown();
}

/// Jobs are matched in the job-manager's priority order: `flux job
/// urgency` decides who gets the cores first.
#[test]
fn priority_order_decides_who_goes_first() {
    let Some(pod) = pancake_pod("priority order", PodSpec::default(), &[]) else {
        return;
    };
    let q = &pod.queue;
    let hog = hold_nodes(&pod, "lammps", 4, 3);
    let first = submit(
        &pod,
        &["--setattr=container=ior", "-N4", "--exclusive", "true"],
    );
    let second = submit(
        &pod,
        &[
            "--setattr=container=chatterbug",
            "-N4",
            "--exclusive",
            "true",
        ],
    );
    q.run(&["job", "urgency", &second, "24"]).unwrap();
    for id in [&hog, &first, &second] {
        wait_clean(&pod, id);
    }
    let records = all_app_records(&pod);
    let t_first = app_of(&records, q, &first).unwrap().t_run;
    let t_second = app_of(&records, q, &second).unwrap().t_run;
    assert!(
        t_second < t_first,
        "the more urgent job ran first ({t_second} vs {t_first})"
    );
    pod.shutdown().unwrap();
}
