//! The simulated pod itself: layout, resources, GPUs, and cleanup.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use common::pod_or_skip;
use pancake_pod::{PodSpec, parse_counts, pod_processes};

#[test]
fn three_container_pod_has_the_operator_layout_and_same_resources() {
    let Some(pod) = pod_or_skip("pod layout", PodSpec::default()) else {
        return;
    };
    let root = pod.root().to_path_buf();
    for b in pod.brokers() {
        // Every broker believes it owns the same 4 nodes x 10 cores.
        let line = b
            .run(&[
                "resource",
                "list",
                "-s",
                "up",
                "-no",
                "{nnodes} {ncores} {ngpus} {nodelist}",
            ])
            .unwrap();
        assert_eq!(parse_counts(&line), vec![4, 40, 0], "{}: {line}", b.name);
        assert!(line.contains("flux-sample-[0-3]"), "{}: {line}", b.name);
        // Operator view layout: meta marker, socket link, R file.
        assert!(
            root.join(format!("etc/flux/meta/{}-{}", b.index, b.name))
                .exists()
        );
        let link = root.join(format!("run/flux/local-{}", b.index));
        assert!(
            fs::metadata(&link).unwrap().file_type().is_socket_like(),
            "{} is not a socket",
            link.display()
        );
        let r: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(root.join(format!("etc/flux/system/R-{}", b.index))).unwrap(),
        )
        .unwrap();
        assert_eq!(r["version"], 1);
        assert_eq!(r["execution"]["nodelist"][0], "flux-sample-[0-3]");
    }
    assert_eq!(
        pod.apps.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(),
        ["lammps", "ior", "chatterbug"]
    );
    let killed = pod.shutdown().expect("no process may survive");
    assert!(pod_processes(&root).is_empty());
    assert!(!root.exists(), "pod root removed");
    eprintln!("processes killed after grace: {killed:?}");
}

trait SocketLike {
    fn is_socket_like(&self) -> bool;
}
impl SocketLike for fs::FileType {
    fn is_socket_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_socket(self)
    }
}

#[test]
fn fake_gpus_per_container() {
    let spec = PodSpec {
        containers: vec!["gpu".into(), "cpu".into()],
        nodes: 2,
        cores: 4,
        gpus: BTreeMap::from([("gpu".to_string(), 2)]),
        queue_size: 1,
        ..PodSpec::default()
    };
    let Some(pod) = pod_or_skip("fake gpus", spec) else {
        return;
    };
    let counts = |name: &str| {
        parse_counts(
            &pod.app(name)
                .run(&[
                    "resource",
                    "list",
                    "-s",
                    "up",
                    "-no",
                    "{nnodes} {ncores} {ngpus}",
                ])
                .unwrap(),
        )
    };
    assert_eq!(counts("gpu"), vec![2, 8, 4]);
    assert_eq!(counts("cpu"), vec![2, 8, 0]);
    pod.shutdown().unwrap();
}

#[test]
fn a_panicking_test_still_cleans_up() {
    let Some(pod) = pod_or_skip("cleanup on panic", common::small_spec()) else {
        return;
    };
    let root = pod.root().to_path_buf();
    // Leave a job running so cleanup must also reach job shells and tasks.
    pod.app("app").run(&["submit", "sleep", "300"]).unwrap();
    let r = std::thread::spawn(move || {
        let _pod = pod;
        panic!("simulated test failure");
    })
    .join();
    assert!(r.is_err());
    assert!(
        pod_processes(&root).is_empty(),
        "left behind: {:?}",
        pod_processes(&root)
    );
}

#[test]
fn a_killed_harness_process_takes_its_pod_down() {
    if common::skip("harness killed") {
        return;
    }
    // Run the harness in another process (pancake-pod hold), then SIGKILL it:
    // its instances see stdin close and exit on their own.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pancake-pod"))
        .args(["hold", "--containers", "a", "--nodes", "2", "--cores", "2"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let root = std::path::PathBuf::from(line.trim());
    assert!(root.exists(), "pod root {root:?}");
    assert!(!pod_processes(&root).is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pod_processes(&root).is_empty() {
        assert!(
            Instant::now() < deadline,
            "pod outlived its harness: {:?}",
            pod_processes(&root)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = fs::remove_dir_all(&root);
}
