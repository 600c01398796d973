//! The MiniCluster example's walkthrough, run in the simulated pod.
//!
//! `examples/minicluster/README.md` is what a user follows in a real Flux
//! Operator pod, which cannot run here. Its user commands (the `$ flux ...`
//! lines of its `console` blocks) are run here instead, in order, in the
//! queue broker of the simulated pod, after the example's own
//! `pancake-queue.sh` loaded pancake there; each must succeed (or fail with
//! the message the walkthrough shows), and the outcomes the walkthrough
//! states are checked. `ior` and `lmp` are stand-in scripts on the
//! submitter's `PATH`, which the forwarded jobs inherit.
//!
//! `flux pancake` commands need the `flux-pancake` program: they run only
//! when it was built into the cargo target directory next to the cdylibs,
//! and are skipped loudly otherwise.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{dmesg, job_field, pod_or_skip, wait_clean, wait_connected};
use pancake_pod::{PodSpec, flux_bin, lib_dir};

const README: &str = include_str!("../examples/minicluster/README.md");
const WALKTHROUGH: &str = "examples/minicluster/README.md";
const SCRIPT: &str = "examples/minicluster/pancake-queue.sh";

/// One user command of the walkthrough and the output shown under it.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    /// Line number in the README (1-based).
    line: usize,
    /// The command, without the `$ ` prompt.
    command: String,
    /// The lines shown under it, up to the next prompt or the block's end.
    shown: Vec<String>,
}

/// The `$ flux ...` commands of the `console` blocks of `text`, in order.
fn walkthrough(text: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_console = false;
    let mut in_block = false;
    // Output lines belong to the last command of the current block.
    let mut collecting = false;
    for (i, line) in text.lines().enumerate() {
        if let Some(info) = line.trim_start().strip_prefix("```") {
            if in_block {
                in_block = false;
                in_console = false;
            } else {
                in_block = true;
                in_console = info.trim() == "console";
            }
            collecting = false;
            continue;
        }
        if !in_console {
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ ") {
            collecting = cmd.starts_with("flux ");
            if collecting {
                steps.push(Step {
                    line: i + 1,
                    command: cmd.trim().to_string(),
                    shown: Vec::new(),
                });
            }
        } else if collecting && let Some(s) = steps.last_mut() {
            s.shown.push(line.to_string());
        }
    }
    steps
}

#[test]
fn the_walkthrough_has_the_commands_users_need() {
    let steps = walkthrough(README);
    let commands: Vec<&str> = steps.iter().map(|s| s.command.as_str()).collect();
    for needed in [
        "flux submit --setattr=container=ior ",
        "flux pancake map",
        "flux pancake jobs",
        "flux jobs ",
    ] {
        assert!(
            commands.iter().any(|c| c.starts_with(needed)),
            "{WALKTHROUGH} has no `$ {needed}...` in a console block: {commands:#?}"
        );
    }
    // Only console blocks count, and only flux commands.
    assert!(commands.iter().all(|c| c.starts_with("flux ")));
    assert!(!README.contains("```console\n$ kubectl"));
    // Output lines stay with their command.
    let refused = steps
        .iter()
        .find(|s| s.command.contains("container=nope"))
        .expect("the walkthrough shows a refused submission");
    assert_eq!(
        refused.shown,
        vec![r#"[Errno 22] pancake: unknown container "nope" (known: chatterbug, ior, lammps)"#]
    );
    // The parser itself: blocks of other kinds, prompts of other programs,
    // output lines.
    let text = "```bash\n$ flux no\n```\n```console\n$ flux a\nout\n$ ls\nnot mine\n$ flux b\n```\n$ flux outside\n";
    let parsed = walkthrough(text);
    assert_eq!(
        parsed
            .iter()
            .map(|s| (s.command.as_str(), s.shown.clone()))
            .collect::<Vec<_>>(),
        vec![("flux a", vec!["out".to_string()]), ("flux b", vec![])]
    );
    assert_eq!(parsed[0].line, 5);
}

/// Stand-ins for the applications of the example's images.
fn stand_ins(dir: &Path) -> PathBuf {
    let bin = dir.join("stand-ins");
    std::fs::create_dir_all(&bin).unwrap();
    for (name, body) in [
        ("ior", "echo \"ior stand-in: $*\""),
        ("lmp", "echo \"lmp stand-in in $(pwd): $*\""),
    ] {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&path, perms).unwrap();
    }
    bin
}

/// `PATH` with `first` and the directory of the `flux` the pod uses in front.
fn path_with(first: &Path) -> String {
    let flux_dir = Path::new(flux_bin())
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| format!("{}:", d.display()))
        .unwrap_or_default();
    format!(
        "{}:{flux_dir}{}",
        first.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn shell(command: &str, env: &BTreeMap<&str, String>) -> Output {
    let mut c = Command::new("sh");
    c.arg("-c").arg(command).envs(env);
    c.output()
        .unwrap_or_else(|e| panic!("running {command}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn walkthrough_commands_run_in_the_simulated_pod() {
    let Some(pod) = pod_or_skip("minicluster example walkthrough", PodSpec::default()) else {
        return;
    };
    let q = &pod.queue;
    let root = pod.root().to_path_buf();
    // What the image holds in /opt/pancake: the module, the plugin and
    // flux-pancake when it was built.
    let (module, _plugin) = pod.install_pancake().unwrap();
    let src = module.parent().unwrap().to_path_buf();
    let cmd = lib_dir().join("flux-pancake");
    let have_cmd = cmd.exists();
    if have_cmd {
        std::fs::copy(&cmd, src.join("flux-pancake")).unwrap();
    } else {
        eprintln!(
            "SKIP flux pancake commands: flux-pancake not built ({} is missing)",
            cmd.display()
        );
    }
    let bin = stand_ins(&root);
    let env: BTreeMap<&str, String> = [
        ("FLUX_URI", q.uri.clone()),
        ("PATH", path_with(&bin)),
        // What the walkthrough exports: the view's pancake directory.
        ("FLUX_EXEC_PATH", root.join("pancake").display().to_string()),
    ]
    .into_iter()
    .collect();

    // The queue container's program, as minicluster.yaml runs it, but with
    // this pod's view and the embedded matcher, and `true` instead of
    // sleeping forever.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(SCRIPT);
    let mut script_env = env.clone();
    script_env.insert("PANCAKE_VIEW", root.display().to_string());
    script_env.insert("PANCAKE_SRC", src.display().to_string());
    script_env.insert("PANCAKE_FLUXION", "embedded".into());
    let out = shell(&format!("sh {} true", script.display()), &script_env);
    assert!(
        out.status.success(),
        "{SCRIPT} failed: {}{}\n{}",
        text(&out.stdout),
        text(&out.stderr),
        dmesg(q)
    );
    assert!(text(&out.stdout).contains("pancake-queue: pancake loaded"));
    wait_connected(&pod);

    let steps = walkthrough(README);
    let mut submitted: Vec<(String, String)> = Vec::new();
    let mut skipped = 0;
    for step in &steps {
        let where_ = format!("{WALKTHROUGH}:{}: $ {}", step.line, step.command);
        if step.command.starts_with("flux pancake") && !have_cmd {
            eprintln!("SKIP {where_}: flux-pancake not built");
            skipped += 1;
            continue;
        }
        eprintln!("RUN {where_}");
        let out = shell(&step.command, &env);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        let report = format!(
            "{where_}\nexit: {}\nstdout:\n{stdout}\nstderr:\n{stderr}\nbroker log:\n{}",
            out.status,
            dmesg(q)
        );
        // A refusal is shown as the error line users see.
        if let Some(error) = step.shown.first().filter(|l| l.starts_with("[Errno")) {
            assert!(!out.status.success(), "expected a refusal: {report}");
            assert!(stderr.contains(error.as_str()), "{report}");
            continue;
        }
        assert!(out.status.success(), "{report}");
        let c = step.command.as_str();
        if c.starts_with("flux submit ") {
            submitted.push((stdout.trim().to_string(), c.to_string()));
        }
        if c.starts_with("flux jobtap list") {
            assert!(stdout.contains("pancake-bypass"), "{report}");
        }
        if c.starts_with("flux job status") {
            // "both jobs completed": the shell's echo ran after status 0.
            assert_eq!(stdout.trim(), step.shown.join("\n").trim(), "{report}");
        }
        if c.starts_with("flux run ") {
            // One line per task, as shown.
            assert_eq!(stdout.lines().count(), step.shown.len(), "{report}");
        }
        if c.starts_with("flux pancake map") {
            for name in ["lammps", "ior", "chatterbug", "free"] {
                assert!(stdout.contains(name), "legend names {name}: {report}");
            }
        }
        if c.starts_with("flux pancake jobs") {
            assert!(stdout.contains("CONTAINER"), "{report}");
        }
        if c.starts_with("flux jobs") {
            assert!(stdout.contains("USER.CONTAINER"), "{report}");
        }
    }
    assert!(
        steps.len() - skipped >= 8,
        "too few commands ran: {steps:#?}"
    );

    // The outcomes the walkthrough states, once every job is over.
    for (id, _) in &submitted {
        wait_clean(&pod, id);
    }
    let expect = |needle: &str| -> &str {
        &submitted
            .iter()
            .find(|(_, c)| c.contains(needle))
            .unwrap_or_else(|| panic!("no submission with {needle}: {submitted:?}"))
            .0
    };
    let ior = expect("container=ior");
    assert_eq!(
        job_field(q, ior, "{result} {user.container} {ncores}"),
        "COMPLETED ior 4",
        "{}",
        dmesg(q)
    );
    // It ran on the ior broker, as an ior job, and its output is on the queue.
    let app_id = job_field(q, ior, "{user.app_id}");
    assert_eq!(job_field(pod.app("ior"), &app_id, "{result}"), "COMPLETED");
    let attach = q.run(&["job", "attach", ior]).unwrap();
    assert_eq!(attach.matches("ior stand-in:").count(), 4, "{attach}");
    let lammps = expect("lmp ");
    assert_eq!(
        job_field(q, lammps, "{result} {user.container} {nnodes} {ncores}"),
        "COMPLETED lammps 2 8"
    );
    let hog = expect("sleep 600");
    assert_eq!(
        job_field(q, hog, "{result} {user.container}"),
        "CANCELED lammps"
    );
    // The `flux run` job (not in `submitted`: flux run prints no id).
    let all = q
        .run(&["jobs", "-a", "-no", "{name} {user.container} {result}"])
        .unwrap();
    assert!(
        all.lines().any(|l| l == "hostname chatterbug COMPLETED"),
        "{all}"
    );
    // Cancelling the queue job cancelled the application job, and every
    // allocation is freed ("granted equals freed when no job is active"):
    // both follow the application brokers' clean events, so allow them a
    // moment.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let active = pod.app("lammps").run(&["jobs", "-no", "{id}"]).unwrap();
        let stats: serde_json::Value =
            serde_json::from_str(&q.run(&["module", "stats", "pancake"]).unwrap()).unwrap();
        let s = &stats["stats"];
        if active.trim().is_empty() && s["granted"] == s["freed"] {
            assert_eq!(s["forwarded"], 4, "{stats}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lammps jobs still active: {active:?}, or allocations not freed: {stats}\n{}",
            dmesg(q)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    pod.shutdown().unwrap();
}
