//! Queue broker restart (issue #5, fault 2): the queue instance is stopped
//! and started again on the same state directory while container jobs run
//! on their application brokers and others wait behind them; pancake is
//! then loaded again (the jobtap plugin too: the new instance has neither).
//!
//! What flux-core 0.88 does with the queue's jobs, found with these tests
//! (see `QueueState` and `QueueStop` in `t/pod/lib.rs`):
//!
//! * **Clean stop, flux-core's default.** When the initial program ends,
//!   the broker runs the `cleanup` commands rc1 pushed (`etc/modprobe/rc1.py`,
//!   task `push-cleanup`): `flux queue stop --all --nocheckpoint`, `flux
//!   resource acquire-mute`, `flux cancel --user=all --states RUN`, `flux
//!   queue idle`. Every running queue job gets a `cancel` exception, and
//!   test-exec finishes it with status 15 (`CANCELED`); pancake, still
//!   loaded, cancels its application job (`CANCELED` there too; if the
//!   module is gone first, the reloaded module does it). Waiting jobs
//!   (SCHED: the queue stop withdrew their requests, pancake answered at
//!   once) survive the restart; the restarted queue broker has no
//!   scheduler until pancake is loaded again (`FLUX_SCHED_MODULE=none`). Pinned by
//!   `clean_restart_with_flux_core_cleanup_cancels_running_jobs`.
//! * **Clean stop with `FLUX_DISABLE_JOB_CLEANUP` set** (as flux-core's own
//!   t3202-instance-restart-testexec.t does): no cleanup; rc3 unloads the
//!   modules, job-exec grafts each running job's guest namespace into the
//!   KVS, the KVS checkpoints. After the restart the job-manager sends
//!   job-exec a start with `reattach` for every started job; test-exec
//!   finds the RFC 50 `recoverable` event it posted at the override start
//!   and reattaches with the time left of `run_duration` (3650d, set by the
//!   queue plugin: with 0 it would finish the job at once with status 0),
//!   so the queue job stays RUN and answers `job-exec.override finish`
//!   again. This is the **truthful** restart: every queue job ends with its
//!   application job's status, whether that job ended while the queue
//!   broker was down (the reloaded module reads its end from the
//!   application broker) or after; waiting jobs are forwarded once, after
//!   the restart, and nothing overlaps. Checked by
//!   `clean_restart_keeping_running_jobs_mirrors_every_job`.
//! * **Crash** (SIGKILL): the instance restarts from the last KVS
//!   checkpoint (`kvs.checkpoint-period`, 1 s in the harness; without it
//!   only a clean shutdown checkpoints and a crash loses every job), but a
//!   running job's guest namespace is lost with the broker: job-exec
//!   cannot recover it (`job.<id>.guest` is still a symlink) and fails the
//!   job at reattach, before pancake is loaded, with an `exec` exception
//!   `failed to create guest ns: No such file or directory` (`FAILED`, exit
//!   code 1). pancake cannot mirror a queue job that has ended: once
//!   reloaded it cancels the application jobs still running (their cores
//!   stay held until they are clean), and an application job that ended
//!   while the broker was down keeps its own status, which the queue job
//!   does not show. Waiting jobs (submitted before the last checkpoint) are
//!   forwarded once after the restart. Pinned by
//!   `crash_fails_running_jobs_at_reattach`.
//!
//! pancake stops starting work when the queue broker enters CLEANUP (a
//! test checks nothing is forwarded during the shutdown), and a resumed job's
//! output copy picks up after what its queue job already holds.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{app_records, check_no_overlap, dmesg, job_field, submit};
use pancake_pod::{Broker, Pod, PodSpec, QueueState, QueueStop};
use serde_json::Value;

/// Two containers on 2 nodes x 4 cores: 8 cores for everyone.
fn spec(state: QueueState) -> PodSpec {
    PodSpec {
        containers: vec!["lammps".into(), "ior".into()],
        nodes: 2,
        cores: 4,
        queue_size: 1,
        queue_state: state,
        ..PodSpec::default()
    }
}

/// A command that prints `hello`, waits until `gate` exists, prints `bye`
/// and exits with `code`: the test decides when each job ends.
fn gated(gate: &Path, code: i32) -> String {
    format!(
        "echo hello; while [ ! -e {} ]; do sleep 0.1; done; echo bye; exit {code}",
        gate.display()
    )
}

fn open(gate: &Path) {
    std::fs::write(gate, "").unwrap();
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn wait_until(what: &str, q: &Broker, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not after 60 s\n{}",
            dmesg(q)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_event(q: &Broker, id: &str, event: &str) {
    q.run(&["job", "wait-event", "-t", "60", id, event])
        .unwrap_or_else(|e| panic!("{id}: no {event}: {e}\n{}", dmesg(q)));
}

/// The queue jobs of the scenario.
struct Jobs {
    /// ior, `exit 2`, ended before the restart.
    done: String,
    /// ior, 4 cores, gated, `exit 3`.
    a: String,
    /// lammps, 3 cores, gated, `exit 5`.
    b: String,
    /// lammps, both nodes exclusive, waits behind a and b.
    c: String,
    /// ior, 1 core, `exit 0`, waits behind c (fcfs).
    d: String,
    gate_a: PathBuf,
    gate_b: PathBuf,
    gate_c: PathBuf,
}

impl Jobs {
    fn all(&self) -> [&String; 5] {
        [&self.done, &self.a, &self.b, &self.c, &self.d]
    }
}

/// Submit the scenario and wait until a and b run (on the queue too) and
/// pancake holds c and d waiting. With `long_c`, c waits for `gate-c`.
fn before_restart(pod: &Pod, long_c: bool) -> Jobs {
    let q = &pod.queue;
    let root = pod.root();
    let gate = |g: &str| root.join(format!("gate-{g}"));
    let done = submit(pod, &["--setattr=container=ior", "sh", "-c", "exit 2"]);
    common::wait_clean(pod, &done);
    let a = submit(
        pod,
        &[
            "--setattr=container=ior",
            "-n4",
            "sh",
            "-c",
            &gated(&gate("a"), 3),
        ],
    );
    let b = submit(
        pod,
        &[
            "--setattr=container=lammps",
            "-n3",
            "sh",
            "-c",
            &gated(&gate("b"), 5),
        ],
    );
    wait_event(q, &a, "start");
    wait_event(q, &b, "start");
    let c_cmd = if long_c {
        gated(&gate("c"), 7)
    } else {
        "exit 7".to_string()
    };
    let c = submit(
        pod,
        &[
            "--setattr=container=lammps",
            "-N2",
            "-n2",
            "--exclusive",
            "sh",
            "-c",
            &c_cmd,
        ],
    );
    let d = submit(pod, &["--setattr=container=ior", "true"]);
    wait_until("c and d waiting in pancake", q, || {
        let st = common::status(q);
        let waiting = st["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["phase"] == "waiting" && j["progress"]["alloc_pending"] == true)
            .count();
        waiting == 2
    });
    // Both are in the KVS checkpoint (every second) before any crash.
    std::thread::sleep(Duration::from_secs(2));
    for id in [&c, &d] {
        assert_eq!(job_field(q, id, "{state}"), "SCHED");
    }
    Jobs {
        done,
        a,
        b,
        c,
        d,
        gate_a: gate("a"),
        gate_b: gate("b"),
        gate_c: gate("c"),
    }
}

/// One application job, by the queue job it mirrors.
#[derive(Debug)]
struct AppJob {
    container: String,
    id: String,
    queue_id: u64,
    t_submit: f64,
}

fn app_jobs(pod: &Pod) -> Vec<AppJob> {
    let mut out = Vec::new();
    for app in &pod.apps {
        let list = app.run(&["jobs", "-a", "-no", "{id} {t_submit}"]).unwrap();
        for line in list.lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            let js: Value =
                serde_json::from_str(&app.run(&["job", "info", w[0], "jobspec"]).unwrap()).unwrap();
            out.push(AppJob {
                container: app.name.clone(),
                id: w[0].to_string(),
                queue_id: js
                    .pointer("/attributes/user/pancake/queue_id")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                t_submit: w[1].parse().unwrap(),
            });
        }
    }
    out
}

fn queue_dec(q: &Broker, id: &str) -> u64 {
    job_field(q, id, "{id.dec}").parse().unwrap()
}

/// The one application job of queue job `id` (none, or two, fails).
fn app_of<'a>(pod: &Pod, apps: &'a [AppJob], id: &str) -> &'a AppJob {
    let dec = queue_dec(&pod.queue, id);
    let mine: Vec<&AppJob> = apps.iter().filter(|a| a.queue_id == dec).collect();
    assert_eq!(
        mine.len(),
        1,
        "{id}: one application job, not {mine:?}\n{}",
        dmesg(&pod.queue)
    );
    mine[0]
}

fn app_broker<'a>(pod: &'a Pod, a: &AppJob) -> &'a Broker {
    pod.app(&a.container)
}

const OUTCOME: &str = "{result} {returncode} {waitstatus}";

/// The queue job ended exactly as its (one) application job did.
fn assert_mirrored(pod: &Pod, apps: &[AppJob], id: &str, expect: &str) {
    let a = app_of(pod, apps, id);
    let app_view = job_field(app_broker(pod, a), &a.id, OUTCOME);
    assert!(app_view.starts_with(expect), "{id}: app {app_view}");
    assert_eq!(
        job_field(&pod.queue, id, OUTCOME),
        app_view,
        "{id} mirrors its application job\n{}",
        dmesg(&pod.queue)
    );
}

/// Every job ended, every allocation was freed once, every application
/// job mirrors one queue job, and no two held a core at the same time.
fn check_end(pod: &Pod, jobs: &Jobs) -> Vec<AppJob> {
    let q = &pod.queue;
    for id in jobs.all() {
        common::wait_clean(pod, id);
    }
    wait_until("pancake tracks no job", q, || {
        common::status(q)["jobs"]
            .as_array()
            .is_some_and(|a| a.is_empty())
    });
    let st = common::status(q);
    assert_eq!(
        st["stats"]["granted"], st["stats"]["freed"],
        "every allocation freed once: {st}"
    );
    let apps = app_jobs(pod);
    assert_eq!(apps.len(), 5, "one application job per queue job: {apps:?}");
    for id in jobs.all() {
        app_of(pod, &apps, id);
    }
    let records: Vec<_> = pod.apps.iter().flat_map(app_records).collect();
    let bad = check_no_overlap(&records);
    assert!(bad.is_empty(), "overlap: {bad:?}");
    apps
}

fn restart_pod(test: &str, state: QueueState) -> Option<Pod> {
    common::pancake_pod(test, spec(state), &[])
}

/// Stop the queue instance as `how` says, let job a's application job end
/// while it is down, and start it again; returns when it was started.
fn restart_after_a_ends(pod: &mut Pod, jobs: &Jobs, how: QueueStop) -> f64 {
    pod.stop_queue(how).unwrap();
    open(&jobs.gate_a);
    let ior = pod.app("ior");
    wait_until("a's application job ends", ior, || {
        ior.run(&["jobs", "-no", "{id}"]).unwrap().trim().is_empty()
    });
    let t_restart = now();
    pod.start_queue().unwrap();
    t_restart
}

fn reload(pod: &Pod) {
    common::load_pancake(pod, &[]);
    common::wait_connected(pod);
}

#[test]
fn clean_restart_keeping_running_jobs_mirrors_every_job() {
    let Some(mut pod) = restart_pod("queue restart (keep running)", QueueState::KeepRunning) else {
        return;
    };
    let jobs = before_restart(&pod, false);
    let t_restart = restart_after_a_ends(&mut pod, &jobs, QueueStop::Clean);
    let q = &pod.queue;
    // flux-core reattached the running jobs (a still runs on the queue: no
    // one told it yet) and kept the waiting ones, before pancake is back.
    for (id, state) in [
        (&jobs.a, "RUN"),
        (&jobs.b, "RUN"),
        (&jobs.c, "SCHED"),
        (&jobs.d, "SCHED"),
    ] {
        assert_eq!(job_field(q, id, "{state}"), state, "{id} after restart");
    }
    assert_eq!(job_field(q, &jobs.done, "{result}"), "FAILED");
    reload(&pod);
    // a's end, which happened while the broker was down, is mirrored.
    common::wait_clean(&pod, &jobs.a);
    assert_eq!(job_field(q, &jobs.a, "{state}"), "INACTIVE");
    assert_eq!(job_field(q, &jobs.b, "{state}"), "RUN");
    open(&jobs.gate_b);
    let apps = check_end(&pod, &jobs);
    for (id, expect) in [
        (&jobs.done, "FAILED 2"),
        (&jobs.a, "FAILED 3"),
        (&jobs.b, "FAILED 5"),
        (&jobs.c, "FAILED 7"),
        (&jobs.d, "COMPLETED 0"),
    ] {
        assert_mirrored(&pod, &apps, id, expect);
    }
    for id in [&jobs.c, &jobs.d] {
        let a = app_of(&pod, &apps, id);
        assert!(
            a.t_submit > t_restart,
            "{id} was forwarded after the restart, not before: {a:?}"
        );
    }
    for id in [&jobs.a, &jobs.b] {
        let log = q.run(&["job", "eventlog", id]).unwrap();
        assert!(!log.contains("exception"), "{id}: {log}");
    }
    pod.shutdown().unwrap();
}

#[test]
fn clean_restart_with_flux_core_cleanup_cancels_running_jobs() {
    let Some(mut pod) = restart_pod("queue restart (flux-core cleanup)", QueueState::Persistent)
    else {
        return;
    };
    let jobs = before_restart(&pod, false);
    pod.stop_queue(QueueStop::Clean).unwrap();
    pod.start_queue().unwrap();
    let q = &pod.queue;
    // flux-core's shutdown cleanup cancelled the running queue jobs.
    for id in [&jobs.a, &jobs.b] {
        assert_eq!(
            job_field(q, id, "{state} {result} {waitstatus}"),
            "INACTIVE CANCELED 15",
            "{id}"
        );
        let log = q.run(&["job", "eventlog", id]).unwrap();
        assert!(
            log.contains("exception type=\"cancel\"") && log.contains("finish status=15"),
            "{id}: {log}"
        );
    }
    reload(&pod);
    let apps = check_end(&pod, &jobs);
    // ... and their application jobs were cancelled too (the gates never
    // opened: nothing else could end them).
    for id in [&jobs.a, &jobs.b] {
        let a = app_of(&pod, &apps, id);
        let broker = app_broker(&pod, a);
        wait_until("the application job is cancelled", broker, || {
            job_field(broker, &a.id, "{state}") == "INACTIVE"
        });
        assert_eq!(job_field(broker, &a.id, "{result}"), "CANCELED", "{id}");
    }
    // The waiting jobs ran once and are mirrored (when they were forwarded
    // is racy without a module fix: see the ignored test below).
    for (id, expect) in [
        (&jobs.done, "FAILED 2"),
        (&jobs.c, "FAILED 7"),
        (&jobs.d, "COMPLETED 0"),
    ] {
        assert_mirrored(&pod, &apps, id, expect);
    }
    pod.shutdown().unwrap();
}

#[test]
fn crash_fails_running_jobs_at_reattach() {
    let Some(mut pod) = restart_pod("queue restart (crash)", QueueState::KeepRunning) else {
        return;
    };
    let jobs = before_restart(&pod, false);
    let t_restart = restart_after_a_ends(&mut pod, &jobs, QueueStop::Crash);
    let q = &pod.queue;
    // job-exec failed the running jobs at reattach, before pancake is back.
    let failed_at_reattach = |q: &pancake_pod::Broker| {
        for id in [&jobs.a, &jobs.b] {
            wait_event(q, id, "clean");
            assert_eq!(job_field(q, id, "{result} {returncode}"), "FAILED 1");
            let log = q.run(&["job", "eventlog", id]).unwrap();
            assert!(
                log.contains("exception type=\"exec\"")
                    && log.contains("failed to create guest ns: No such file or directory")
                    && !log.contains("finish"),
                "{id}: {log}"
            );
        }
    };
    failed_at_reattach(q);
    for id in [&jobs.c, &jobs.d] {
        assert_eq!(job_field(q, id, "{state}"), "SCHED", "{id} survived");
    }
    reload(&pod);
    let apps = check_end(&pod, &jobs);
    // a ended on its own while the broker was down: its queue job does not
    // show it. b was still running: pancake cancelled it.
    let app_a = app_of(&pod, &apps, &jobs.a);
    assert_eq!(
        job_field(pod.app("ior"), &app_a.id, "{result} {returncode}"),
        "FAILED 3"
    );
    let app_b = app_of(&pod, &apps, &jobs.b);
    let lammps = pod.app("lammps");
    assert_eq!(job_field(lammps, &app_b.id, "{result}"), "CANCELED");
    for (id, expect) in [
        (&jobs.done, "FAILED 2"),
        (&jobs.c, "FAILED 7"),
        (&jobs.d, "COMPLETED 0"),
    ] {
        assert_mirrored(&pod, &apps, id, expect);
    }
    for id in [&jobs.c, &jobs.d] {
        assert!(app_of(&pod, &apps, id).t_submit > t_restart, "{id}");
    }
    pod.shutdown().unwrap();
}

/// With flux-core's default cleanup the queue is stopped (`flux queue
/// stop`) before the running jobs are cancelled, so nothing new may start
/// while the instance shuts down: the cancels free cores, but pancake (which
/// watches the broker enter CLEANUP) matches and forwards nothing more, or
/// `flux queue idle` would wait on it and the restart hang. The waiting jobs
/// are forwarded after the restart, once.
#[test]
fn nothing_is_forwarded_while_the_queue_shuts_down() {
    let Some(mut pod) = restart_pod("queue restart (drain)", QueueState::Persistent) else {
        return;
    };
    let jobs = before_restart(&pod, true);
    let t_stop = now();
    pod.stop_queue(QueueStop::Clean).unwrap();
    let t_restart = now();
    pod.start_queue().unwrap();
    reload(&pod);
    open(&jobs.gate_c);
    let apps = check_end(&pod, &jobs);
    for id in [&jobs.c, &jobs.d] {
        let a = app_of(&pod, &apps, id);
        assert!(
            a.t_submit > t_restart,
            "{id} forwarded while the queue shut down ({t_stop:.2}..{t_restart:.2}): {a:?}"
        );
    }
    for (id, expect) in [(&jobs.c, "FAILED 7"), (&jobs.d, "COMPLETED 0")] {
        assert_mirrored(&pod, &apps, id, expect);
    }
    pod.shutdown().unwrap();
}

/// A job that keeps running across the restart prints `bye` after it:
/// `flux job attach` on the queue job should show it, as on the
/// application broker.
#[test]
fn output_written_after_a_restart_reaches_the_queue_job() {
    let Some(mut pod) = restart_pod("queue restart (output)", QueueState::KeepRunning) else {
        return;
    };
    let jobs = before_restart(&pod, false);
    pod.stop_queue(QueueStop::Clean).unwrap();
    pod.start_queue().unwrap();
    reload(&pod);
    open(&jobs.gate_a);
    open(&jobs.gate_b);
    let apps = check_end(&pod, &jobs);
    for id in [&jobs.a, &jobs.b] {
        let a = app_of(&pod, &apps, id);
        let attach = |b: &Broker, id: &str| {
            let out = b
                .flux()
                .args(["job", "attach", id])
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let app_out = attach(app_broker(&pod, a), &a.id);
        assert!(app_out.contains("bye"), "{app_out}");
        assert_eq!(attach(&pod.queue, id), app_out, "{id}");
    }
    pod.shutdown().unwrap();
}
