//! `flux pancake`: the command, run through `flux` itself against a pod's
//! queue broker, tells the truth about the module; and `make install` /
//! `make uninstall` place and remove exactly pancake's four files.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{dmesg, job_field, pancake_pod, submit, wait_clean};
use fluxion::IdSet;
use pancake_pod::{Broker, Pod, PodSpec, lib_dir};
use serde_json::Value;

/// The `flux-pancake` built next to the cdylibs the pod loads.
fn command_dir() -> PathBuf {
    let dir = lib_dir();
    let exe = dir.join("flux-pancake");
    assert!(
        exe.exists(),
        "{} is missing: build it first (cargo build -p flux-pancake)",
        exe.display()
    );
    dir
}

/// `flux pancake ARGS` on broker `b`: `flux` finds the built command first
/// on its exec path, as it finds the installed one in its command directory.
fn pancake_on(b: &Broker, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = b.flux();
    c.env("FLUX_EXEC_PATH_PREPEND", command_dir())
        .env_remove("NO_COLOR")
        .arg("pancake")
        .args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running flux pancake")
}

/// `flux pancake ARGS` on the queue broker; stdout, after checking it exited 0.
fn pancake(pod: &Pod, args: &[&str]) -> String {
    let out = pancake_on(&pod.queue, &[], args);
    assert!(
        out.status.success(),
        "flux pancake {}: {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr),
        dmesg(&pod.queue)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// `{(rank, core)}` of an Rv1 value.
fn cores_of(r: &Value) -> BTreeSet<(u32, u32)> {
    let mut out = BTreeSet::new();
    for e in r["execution"]["R_lite"].as_array().expect("R_lite") {
        let cores = IdSet::parse(e["children"]["core"].as_str().unwrap_or("")).unwrap();
        for rank in IdSet::parse(e["rank"].as_str().unwrap()).unwrap().iter() {
            out.extend(cores.iter().map(|c| (rank, c)));
        }
    }
    out
}

/// The text map, parsed back: rank → marks in core order, mark → container.
fn parse_map(text: &str) -> (BTreeMap<u32, Vec<char>>, BTreeMap<char, String>) {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["RANK", "HOSTNAME", "CORES"], "{text}");
    let mut rows = BTreeMap::new();
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        let mut w = line.split_whitespace();
        let rank: u32 = w.next().unwrap().parse().unwrap();
        let host = w.next().unwrap();
        assert_eq!(host, format!("flux-sample-{rank}"), "{text}");
        rows.insert(rank, w.flat_map(str::chars).collect());
    }
    let mut legend = BTreeMap::new();
    for line in lines {
        let mut w = line.split_whitespace();
        let m = w.next().unwrap();
        if m.chars().count() == 1 {
            legend.insert(m.chars().next().unwrap(), w.next().unwrap().to_string());
        }
    }
    (rows, legend)
}

/// F58 form of a numeric job id, as flux-core writes it.
fn f58(b: &Broker, id: u64) -> String {
    b.run(&["job", "id", "--to=f58", &id.to_string()])
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn status_map_jobs_and_errors() {
    let Some(pod) = pancake_pod("flux pancake", PodSpec::default(), &[]) else {
        return;
    };
    let q = &pod.queue;

    // Help and usage, through `flux`.
    let out = pancake_on(q, &[], &["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(help.starts_with("Usage: flux-pancake COMMAND"), "{help}");
    for c in ["status", "map", "jobs"] {
        assert!(help.contains(&format!("   {c} ")), "{help}");
    }
    let out = pancake_on(q, &[], &["jobs", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--json"));
    let out = pancake_on(q, &[], &["bogus"]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
    assert!(String::from_utf8_lossy(&out.stderr).contains("flux-pancake: Unknown subcommand"));

    // status: the backend and the three containers, connected.
    let text = pancake(&pod, &["status"]);
    assert!(text.starts_with("fluxion: embedded (ready)"), "{text}");
    let sj: Value = serde_json::from_str(&pancake(&pod, &["status", "--json"])).unwrap();
    assert_eq!(sj["containers"].as_array().unwrap().len(), pod.apps.len());
    assert!(
        sj["containers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["state"] == "connected")
    );
    for app in &pod.apps {
        let row: Vec<&str> = text
            .lines()
            .find(|l| l.starts_with(&format!("{} ", app.name)))
            .unwrap_or_else(|| panic!("no row for {}:\n{text}", app.name))
            .split_whitespace()
            .collect();
        assert_eq!(row[1], "connected", "{text}");
        let c = sj["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == app.name.as_str());
        assert_eq!(row[5], c.unwrap()["uri"], "{text}");
    }

    // Jobs that hold cores in each container, one that waits, one that ends.
    let lammps = submit(
        &pod,
        &["--setattr=container=lammps", "-N2", "-n8", "sleep", "300"],
    );
    let ior = submit(&pod, &["--setattr=container=ior", "-n3", "sleep", "300"]);
    let chatter = submit(
        &pod,
        &[
            "--setattr=container=chatterbug",
            "-n1",
            "-c2",
            "sleep",
            "300",
        ],
    );
    let short = submit(&pod, &["--setattr=container=lammps", "-n1", "true"]);
    for id in [&lammps, &ior, &chatter] {
        q.run(&["job", "wait-event", "-t", "60", id, "start"])
            .unwrap_or_else(|e| panic!("{e}\n{}", dmesg(q)));
    }
    wait_clean(&pod, &short);
    // 13 of 40 cores are held: 30 more cannot fit, so this one waits.
    let waiter = submit(&pod, &["--setattr=container=ior", "-n30", "true"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let st = loop {
        let st = common::status(&pod.queue);
        let jobs = st["jobs"].as_array().unwrap();
        let held = jobs.iter().filter(|j| !j["fluxion_id"].is_null()).count();
        let waiting = jobs.iter().filter(|j| j["phase"] == "waiting").count();
        // The short job is gone (its clean was seen), three hold, one waits.
        if jobs.len() == 4 && held == 3 && waiting == 1 {
            break st;
        }
        assert!(Instant::now() < deadline, "jobs never settled: {st}");
        std::thread::sleep(Duration::from_millis(100));
    };

    // The R each container's broker gave its application job.
    let mut want: BTreeMap<(u32, u32), String> = BTreeMap::new();
    let mut held_jobs = 0;
    for j in st["jobs"].as_array().unwrap() {
        // What Fluxion counts as busy: an allocation and an application job.
        let (Some(app_id), false) = (j["app_id"].as_u64(), j["fluxion_id"].is_null()) else {
            continue;
        };
        let container = j["container"].as_str().unwrap();
        let app = pod.app(container);
        let r: Value =
            serde_json::from_str(&app.run(&["job", "info", &app_id.to_string(), "R"]).unwrap())
                .unwrap();
        assert_eq!(
            cores_of(&r),
            cores_of(&j["R"]),
            "status R is the app job's R"
        );
        for core in cores_of(&r) {
            let prev = want.insert(core, container.to_string());
            assert!(prev.is_none(), "core {core:?} held twice: {st}");
        }
        held_jobs += 1;
    }
    assert_eq!(held_jobs, 3);
    assert_eq!(want.len(), 8 + 3 + 2);

    // map: exactly those cores carry their container's mark; all else free.
    let text = pancake(&pod, &["map"]);
    assert!(!text.contains('\x1b'), "no colour on a pipe: {text:?}");
    let (rows, legend) = parse_map(&text);
    let names: BTreeSet<&str> = legend.values().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(["lammps", "ior", "chatterbug", "free"]),
        "{text}"
    );
    let mark: BTreeMap<&str, char> = legend.iter().map(|(m, n)| (n.as_str(), *m)).collect();
    assert_eq!(rows.len(), pod.spec.nodes as usize, "{text}");
    for (rank, marks) in &rows {
        assert_eq!(marks.len(), pod.spec.cores as usize, "{text}");
        for (core, m) in marks.iter().enumerate() {
            let expect = want
                .get(&(*rank, core as u32))
                .map_or('.', |c| mark[c.as_str()]);
            assert_eq!(*m, expect, "rank {rank} core {core}:\n{text}");
        }
    }
    let colored = pancake(&pod, &["map", "--color=always"]);
    assert!(colored.contains("\x1b["), "--color=always colours");

    // map --json: the same holdings as idsets per rank.
    let mj: Value = serde_json::from_str(&pancake(&pod, &["map", "--json"])).unwrap();
    for r in mj["ranks"].as_array().unwrap() {
        let rank = r["rank"].as_u64().unwrap() as u32;
        for c in ["lammps", "ior", "chatterbug"] {
            let got = IdSet::parse(r["cores"]["held"][c].as_str().unwrap_or("")).unwrap();
            let exp: IdSet = want
                .iter()
                .filter(|((rk, _), n)| *rk == rank && n.as_str() == c)
                .map(|((_, core), _)| *core)
                .collect();
            assert_eq!(got, exp, "rank {rank} {c}: {mj}");
        }
    }

    // jobs --json is pancake.status's jobs; the table shows them in F58.
    let jj: Value = serde_json::from_str(&pancake(&pod, &["jobs", "--json"])).unwrap();
    let key = |v: &Value| -> BTreeMap<u64, Value> {
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| {
                let id = j["id"].as_u64().unwrap();
                let fields =
                    ["container", "phase", "fluxion_id", "app_id", "R"].map(|k| j[k].clone());
                (id, Value::from(fields.to_vec()))
            })
            .collect()
    };
    assert_eq!(
        key(&jj),
        key(&common::status(&pod.queue)),
        "jobs --json matches pancake.status"
    );
    let text = pancake(&pod, &["jobs"]);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "JOBID",
            "CONTAINER",
            "APPID",
            "FLUXID",
            "STATE",
            "NCORES",
            "NODELIST",
            "REASON"
        ]
    );
    assert_eq!(lines.len(), 5, "{text}");
    for j in st["jobs"].as_array().unwrap() {
        let id = f58(q, j["id"].as_u64().unwrap());
        let row = lines
            .iter()
            .find(|l| l[0] == id)
            .unwrap_or_else(|| panic!("no row for {id}:\n{text}"));
        assert_eq!(row[1], j["container"], "{text}");
        match j["app_id"].as_u64() {
            Some(a) => assert_eq!(row[2], f58(pod.app(row[1]), a), "{text}"),
            None => assert_eq!(row[2], "-", "{text}"),
        }
        assert_eq!(
            row[3],
            j["fluxion_id"]
                .as_i64()
                .map_or("-".into(), |f| f.to_string())
        );
        assert_eq!(row[4], j["phase"].as_str().unwrap().to_uppercase());
    }
    let row = |id: &str| lines.iter().find(|l| l[0] == id).unwrap().clone();
    assert_eq!(row(&lammps)[5], "8");
    assert_eq!(row(&chatter)[5], "2");
    assert_eq!(row(&waiter)[4], "WAITING");
    // ... and says why, as its queue job's sched.reason_pending does.
    assert_eq!(
        row(&waiter)[7..].join(" "),
        job_field(q, &waiter, "{annotations.sched.reason_pending}"),
        "{text}"
    );
    assert_eq!(row(&waiter)[7..].join(" "), "insufficient resources");

    // status counts them per container.
    let text = pancake(&pod, &["status"]);
    let counts = |name: &str| -> (String, String) {
        let w: Vec<&str> = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap()
            .split_whitespace()
            .collect();
        (w[3].to_string(), w[4].to_string())
    };
    assert_eq!(counts("lammps"), ("0".into(), "1".into()), "{text}");
    assert_eq!(counts("ior"), ("1".into(), "1".into()), "{text}");
    assert_eq!(counts("chatterbug"), ("0".into(), "1".into()), "{text}");

    // Only the instance owner may ask (a guest connection gets EPERM).
    let out = pancake_on(
        q,
        &[
            ("FLUX_HANDLE_ROLEMASK", "0x2"),
            ("FLUX_HANDLE_USERID", "4242"),
        ],
        &["status"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("flux-pancake: ") && err.contains("instance owner"),
        "{err}"
    );

    // Free everything, then unload: the command says what is wrong.
    q.run(&["cancel", &lammps, &ior, &chatter, &waiter])
        .unwrap();
    for id in [&lammps, &ior, &chatter, &waiter] {
        wait_clean(&pod, id);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while common::status(&pod.queue)["jobs"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "jobs never drained: {}",
            common::status(&pod.queue)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    q.run(&["module", "remove", "pancake"]).unwrap();
    for cmd in ["status", "map", "jobs"] {
        let out = pancake_on(q, &[], &[cmd]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        assert!(
            err.contains(
                "pancake: the pancake module is not loaded on this broker (flux module load pancake)"
            ),
            "{cmd}: {err}"
        );
        assert!(out.stdout.is_empty());
    }
    pod.shutdown().unwrap();
}

fn pkg_var(name: &str) -> String {
    let out = Command::new("pkg-config")
        .args([&format!("--variable={name}"), "flux-core"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Every file (not directory) under `root`, relative to it.
fn files(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out
}

fn make(args: &[&str]) {
    let out = Command::new("make")
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("running make");
    assert!(
        out.status.success(),
        "make {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn make_install_and_uninstall_place_exactly_four_files() {
    if common::skip("make install") {
        return;
    }
    let target = command_dir();
    let server = target.join("pancake-fluxion");
    assert!(
        server.exists(),
        "{} is missing: build it first (cargo build -p fluxion-grpc --bin pancake-fluxion)",
        server.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let destdir = format!("DESTDIR={}", tmp.path().display());
    let target_arg = format!("TARGET={}", target.display());
    let vars = [
        destdir.as_str(),
        "PREFIX=/opt/pancake-test",
        "NOBUILD=1",
        target_arg.as_str(),
    ];
    let mut args = vec!["install"];
    args.extend(vars);
    make(&args);
    let rel =
        |dir: String, name: &str| -> PathBuf { Path::new(dir.trim_start_matches('/')).join(name) };
    let want: BTreeSet<PathBuf> = [
        (rel(pkg_var("fluxmoddir"), "pancake.so"), "libpancake.so"),
        (
            rel(
                format!("{}/job-manager/plugins", pkg_var("fluxlibdir")),
                "pancake-bypass.so",
            ),
            "libpancake_bypass.so",
        ),
        (rel(pkg_var("fluxcmddir"), "flux-pancake"), "flux-pancake"),
        (
            rel("/opt/pancake-test/bin".into(), "pancake-fluxion"),
            "pancake-fluxion",
        ),
    ]
    .into_iter()
    .map(|(installed, built)| {
        let got = std::fs::read(tmp.path().join(&installed))
            .unwrap_or_else(|e| panic!("{}: {e}", installed.display()));
        assert!(
            got == std::fs::read(target.join(built)).unwrap(),
            "{} is not a copy of {built}",
            installed.display()
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tmp.path().join(&installed))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "{}", installed.display());
        installed
    })
    .collect();
    assert_eq!(
        files(tmp.path()),
        want,
        "install places exactly these files"
    );
    // The installed command runs with nothing else set, also outside a
    // `flux` command's environment: it finds the libflux-core pkg-config
    // named (through a runtime path when that libdir is not a system one).
    let installed = tmp.path().join(rel(pkg_var("fluxcmddir"), "flux-pancake"));
    let out = std::process::Command::new(&installed)
        .arg("--help")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        installed.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut args = vec!["uninstall"];
    args.extend(vars);
    make(&args);
    assert_eq!(
        files(tmp.path()),
        BTreeSet::new(),
        "uninstall removes them all"
    );
}
