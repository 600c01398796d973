//! Load and hostile input on the simulated pod: many submitters at once,
//! absurd and huge jobspecs, bad container names, refused jobs and a forged
//! pancake record. Each must end in a clear outcome, with nothing forwarded
//! that should not be, and every allocation freed once.

mod common;

use common::{dmesg, job_field, pancake_pod, submit, wait_clean};
use pancake_pod::{Pod, PodSpec};

/// Jobs the application brokers have ever seen, all together.
fn app_job_count(pod: &Pod) -> usize {
    pod.apps
        .iter()
        .map(|b| {
            b.run(&["jobs", "-a", "-no", "{id}"])
                .unwrap()
                .lines()
                .count()
        })
        .sum()
}

/// The original controller crashed with 8 concurrent clients: 64 `flux
/// submit` processes at once must all be accepted, forwarded and mirrored,
/// with no error in the broker log.
#[test]
fn sixty_four_submitters_at_once() {
    let Some(pod) = pancake_pod("64 submitters", PodSpec::default(), &[]) else {
        return;
    };
    let containers = ["lammps", "ior", "chatterbug"];
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|i| {
                let pod = &pod;
                s.spawn(move || {
                    let c = format!("--setattr=container={}", containers[i % 3]);
                    let code = format!("exit {}", i % 4);
                    submit(pod, &[&c, "-n1", "sh", "-c", &code])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(ids.len(), 64);
    for id in &ids {
        wait_clean(&pod, id);
    }
    let q = &pod.queue;
    let mut codes = Vec::new();
    for id in &ids {
        codes.push(job_field(q, id, "{returncode}"));
    }
    for code in ["0", "1", "2", "3"] {
        assert_eq!(
            codes.iter().filter(|c| *c == code).count(),
            16,
            "exit codes mirrored: {codes:?}"
        );
    }
    let st = common::status(&pod.queue);
    assert_eq!(st["stats"]["forwarded"], 64, "{st}");
    assert_eq!(st["stats"]["granted"], st["stats"]["freed"], "{st}");
    assert_eq!(app_job_count(&pod), 64, "each forwarded exactly once");
    let log = dmesg(q);
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("pancake.err") || l.contains("pancake.crit"))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    pod.shutdown().unwrap();
}

#[test]
fn hostile_input_ends_clearly_and_forwards_nothing_it_should_not() {
    let Some(pod) = pancake_pod("hostile input", PodSpec::default(), &[]) else {
        return;
    };
    let q = &pod.queue;

    // Absurd counts fail at once, without a Fluxion call.
    let matches_before = common::status(&pod.queue)["stats"]["matches"].clone();
    for shape in [["-n", "1000000000"], ["-c", "100000"]] {
        let id = submit(
            &pod,
            &["--setattr=container=ior", shape[0], shape[1], "true"],
        );
        wait_clean(&pod, &id);
        assert_eq!(job_field(q, &id, "{result}"), "FAILED", "{shape:?}");
        let log = q.run(&["job", "eventlog", &id]).unwrap();
        // Past the jobspec's own limits it is invalid; within them, larger
        // than the cluster: either way the note says which.
        assert!(
            log.contains("container ior: unsatisfiable request")
                || log.contains("container ior: invalid jobspec"),
            "{log}"
        );
    }
    assert_eq!(
        common::status(&pod.queue)["stats"]["matches"],
        matches_before
    );

    // Container names with path characters are refused with the known list.
    for bad in ["../../etc", "a/b", ".hidden"] {
        let out = q
            .output(&["submit", &format!("--setattr=container={bad}"), "true"])
            .unwrap();
        assert!(!out.status.success(), "{bad} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("lammps"), "{bad}: {err}");
    }
    // A refused container job is never forwarded, not even later.
    let out = q
        .output(&[
            "submit",
            "--setattr=container=ior",
            "--setattr=system.exec.test={}",
            "true",
        ])
        .unwrap();
    assert!(!out.status.success());
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(app_job_count(&pod), 0, "{}", dmesg(q));

    // A megabyte of environment travels with the job (each variable under
    // the kernel's 128 KiB limit for one string).
    let chunk = "x".repeat(120_000);
    let mut cmd = q.flux();
    cmd.args([
        "run",
        "--setattr=container=lammps",
        "-n1",
        "sh",
        "-c",
        "echo ${#BIG0} ${#BIG8}",
    ]);
    for i in 0..9 {
        cmd.env(format!("BIG{i}"), &chunk);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        dmesg(q)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "120000 120000");

    let st = common::status(&pod.queue);
    assert_eq!(st["stats"]["granted"], st["stats"]["freed"], "{st}");
    pod.shutdown().unwrap();
}

/// A pancake record forged with `flux job memo` (an app_id that belongs to
/// another job) is not believed after a reload: the job fails with a note
/// saying why, the job the id belongs to is untouched, and nothing runs
/// twice.
#[test]
fn a_forged_record_is_not_believed_after_a_reload() {
    let Some(pod) = pancake_pod("forged memo", PodSpec::default(), &[]) else {
        return;
    };
    let q = &pod.queue;
    let real = submit(&pod, &["--setattr=container=lammps", "-n1", "true"]);
    wait_clean(&pod, &real);
    let real_app = job_field(q, &real, "{user.app_id}");
    // Hold the whole cluster so the next job waits, then forge its record.
    let hog = submit(
        &pod,
        &[
            "--setattr=container=ior",
            "-N4",
            "--exclusive",
            "sleep",
            "3",
        ],
    );
    q.run(&["job", "wait-event", "-t", "30", &hog, "start"])
        .unwrap();
    let victim = submit(&pod, &["--setattr=container=lammps", "-n1", "true"]);
    q.run(&[
        "job",
        "memo",
        &victim,
        "fluxion_id=77",
        &format!("app_id={real_app}"),
    ])
    .unwrap();
    common::reload_pancake(&pod, &[]);
    wait_clean(&pod, &hog);
    assert_eq!(job_field(q, &hog, "{result}"), "COMPLETED", "{}", dmesg(q));
    wait_clean(&pod, &victim);
    assert_eq!(job_field(q, &victim, "{result}"), "FAILED", "{}", dmesg(q));
    let log = q.run(&["job", "eventlog", &victim]).unwrap();
    assert!(log.contains("is not the application job of"), "{log}");
    assert_eq!(job_field(q, &real, "{result}"), "COMPLETED");
    assert_eq!(app_job_count(&pod), 2, "nothing ran twice");
    let st = common::status(&pod.queue);
    assert_eq!(st["stats"]["granted"], st["stats"]["freed"], "{st}");
    assert_eq!(st["jobs"], serde_json::json!([]), "{st}");
    pod.shutdown().unwrap();
}
