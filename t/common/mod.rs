//! Shared helpers for the tier-2 tests.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fluxion::{IdSet, Rv1};
use pancake_pod::{Broker, Pod, PodSpec, skip_reason};

/// True when the flux-core the tests run against is `major.minor` or newer
/// (version fallbacks in the tests; see docs/compatibility.md).
pub fn flux_at_least(major: u32, minor: u32) -> bool {
    let v = pancake_pod::flux_version();
    let mut it = v.split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0)) >= (major, minor)
}

/// `flux queue VERB` for `queue` (None: the default or anonymous queue)
/// with reason `message`, spelled as this flux-core's command wants it:
/// 0.61 takes the queue as `-q NAME` and the reason as the positional
/// argument; later releases the other way round (`-m REASON`, `[QUEUE]`).
/// Probed from the command's help, not guessed from the version.
pub fn queue_cmd(b: &Broker, verb: &str, queue: Option<&str>, message: Option<&str>) {
    let help = b.run(&["queue", "stop", "--help"]).unwrap_or_default();
    let new_style = help.contains("--message");
    let mut args = vec!["queue".to_string(), verb.to_string()];
    if new_style {
        if let Some(m) = message {
            args.extend(["-m".to_string(), m.to_string()]);
        }
        args.extend(queue.map(str::to_string));
    } else {
        if let Some(q) = queue {
            args.extend(["-q".to_string(), q.to_string()]);
        }
        args.extend(message.map(str::to_string));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    b.run(&args).unwrap();
}

/// True (after saying so loudly) when tier 2 cannot run here.
pub fn skip(test: &str) -> bool {
    match skip_reason() {
        Some(reason) => {
            eprintln!("SKIP {test}: tier 2 needs flux-core ({reason})");
            true
        }
        None => false,
    }
}

/// Start a pod, or return `None` (after saying so loudly) when flux-core is
/// not available, so the test passes as skipped.
pub fn pod_or_skip(test: &str, spec: PodSpec) -> Option<Pod> {
    if skip(test) {
        return None;
    }
    Some(Pod::start(spec).unwrap_or_else(|e| panic!("{test}: starting the pod: {e}")))
}

/// A pod with just the queue broker and one application container.
pub fn small_spec() -> PodSpec {
    PodSpec {
        containers: vec!["app".into()],
        nodes: 2,
        cores: 4,
        queue_size: 1,
        ..PodSpec::default()
    }
}

/// `flux python -c CODE` against a broker, for RPCs the CLI has no command for.
pub fn rpc(b: &pancake_pod::Broker, topic: &str, payload: &str) -> Result<String, String> {
    let code = format!(
        "import flux, json, sys\ntry:\n    print(json.dumps(flux.Flux().rpc({topic:?}, json.loads({payload:?})).get()))\nexcept OSError as e:\n    print(f'ERROR {{e.errno}} {{e.strerror}}')\n    sys.exit(1)"
    );
    let out = b.output(&["python", "-c", &code])?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// The module's `pancake.status` answer (the test fails if there is none).
pub fn status(b: &Broker) -> serde_json::Value {
    let text = rpc(b, "pancake.status", "{}").unwrap_or_else(|e| panic!("pancake.status: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// Number of threads of process `pid`.
pub fn threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The broker log of `b` (`flux dmesg`).
pub fn dmesg(b: &pancake_pod::Broker) -> String {
    b.run(&["dmesg"]).unwrap_or_default()
}

/// Load the queue plugin and the module (from this build) into `pod`'s
/// queue broker, with the pod's view and `module_args`.
pub fn load_pancake(pod: &Pod, module_args: &[&str]) {
    let (_, plugin) = pod.install_pancake().unwrap();
    pod.queue
        .run(&["jobtap", "load", plugin.to_str().unwrap(), "role=queue"])
        .unwrap();
    load_module(pod, module_args);
}

/// `flux module load` of this build's pancake in `pod`'s queue broker, with
/// the pod's view, the plugin path and `module_args`.
fn load_module(pod: &Pod, module_args: &[&str]) {
    let (module, plugin) = pod.install_pancake().unwrap();
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
    pod.queue
        .run(&args)
        .unwrap_or_else(|e| panic!("module load: {e}\n{}", dmesg(&pod.queue)));
}

/// `flux module reload` of pancake in `pod`'s queue broker with the same
/// arguments as [`load_pancake`]: a fresh module that must recover every job
/// from what Flux keeps.
pub fn reload_pancake(pod: &Pod, module_args: &[&str]) {
    // (`flux module reload PATH` removes by PATH, which names no module.)
    pod.queue
        .run(&["module", "remove", "pancake"])
        .unwrap_or_else(|e| panic!("module remove: {e}\n{}", dmesg(&pod.queue)));
    load_module(pod, module_args);
}

/// A pod with pancake loaded in the queue broker, every container connected.
pub fn pancake_pod(test: &str, spec: PodSpec, module_args: &[&str]) -> Option<Pod> {
    let pod = pod_or_skip(test, spec)?;
    load_pancake(&pod, module_args);
    wait_connected(&pod);
    Some(pod)
}

/// Wait until pancake in `pod`'s queue broker has connected every
/// application broker and Fluxion holds the graph (30 s at most).
pub fn wait_connected(pod: &Pod) {
    let q = &pod.queue;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let st: serde_json::Value =
            serde_json::from_str(&rpc(q, "pancake.status", "{}").unwrap()).unwrap();
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
}

pub fn submit(pod: &Pod, args: &[&str]) -> String {
    let mut a = vec!["submit"];
    a.extend_from_slice(args);
    pod.queue
        .run(&a)
        .unwrap_or_else(|e| panic!("{e}\n{}", dmesg(&pod.queue)))
        .trim()
        .to_string()
}

/// Submit a container job that holds `nodes` whole nodes of `container`
/// for `secs` seconds, and wait until it runs: what other jobs then wait
/// behind.
pub fn hold_nodes(pod: &Pod, container: &str, nodes: u32, secs: u32) -> String {
    let id = submit(
        pod,
        &[
            &format!("--setattr=container={container}"),
            &format!("-N{nodes}"),
            "--exclusive",
            "sleep",
            &secs.to_string(),
        ],
    );
    pod.queue
        .run(&["job", "wait-event", "-t", "60", &id, "start"])
        .unwrap_or_else(|e| panic!("{id} never started: {e}\n{}", dmesg(&pod.queue)));
    id
}

pub fn wait_clean(pod: &Pod, id: &str) {
    pod.queue
        .run(&["job", "wait-event", "-t", "60", id, "clean"])
        .unwrap_or_else(|e| {
            let log = pod.queue.run(&["job", "eventlog", id]).unwrap_or_default();
            panic!("{id} never finished: {e}\n{log}\n{}", dmesg(&pod.queue))
        });
}

pub fn job_field(b: &pancake_pod::Broker, id: &str, fmt: &str) -> String {
    b.run(&["jobs", "-no", fmt, id]).unwrap().trim().to_string()
}

/// One application job's record: its R by rank, and when it held it.
#[derive(Debug, Clone)]
pub struct AppRecord {
    pub container: String,
    pub id: String,
    pub held: Vec<(u32, IdSet, IdSet)>,
    /// When it was submitted to its broker (forwarded, for a container job).
    pub t_submit: f64,
    pub t_run: f64,
    pub t_end: f64,
    pub outcome: String,
    /// The queue job this one was forwarded for (`user.pancake.queue_id`
    /// in its jobspec), if any. Pair queue and application jobs by this,
    /// not by application job id: a restarted (stateless) application
    /// broker hands out the same ids again.
    pub queue_id: Option<u64>,
    /// Its `attributes.system.container` (on the queue broker: a container
    /// job's mirror, which holds no cores there).
    pub container_attr: Option<String>,
}

/// Every job an application broker ran, with the cores and GPUs it held.
pub fn app_records(b: &Broker) -> Vec<AppRecord> {
    let list = b
        .run(&[
            "jobs",
            "-a",
            // Every job, not flux jobs' default 1000 (the soak runs more).
            "--count=0",
            "-no",
            "{id}|{t_run}|{t_cleanup}|{result}|{returncode}|{waitstatus}|{t_submit}",
        ])
        .unwrap();
    let mut out = Vec::new();
    for line in list.lines() {
        let w: Vec<&str> = line.split('|').map(str::trim).collect();
        let (id, t_run, t_end) = (
            w[0],
            w[1].parse().unwrap_or(0.0),
            w[2].parse().unwrap_or(f64::MAX),
        );
        if t_run == 0.0 {
            continue; // never ran: never held anything
        }
        let r = Rv1::parse(&b.run(&["job", "info", id, "R"]).unwrap()).unwrap();
        let js = serde_json::from_str::<serde_json::Value>(
            &b.run(&["job", "info", id, "jobspec"]).unwrap_or_default(),
        )
        .ok();
        let queue_id = js
            .as_ref()
            .and_then(|js| js.pointer("/attributes/user/pancake/queue_id")?.as_u64());
        let container_attr = js
            .as_ref()
            .and_then(|js| js.pointer("/attributes/system/container")?.as_str())
            .map(str::to_string);
        let held = r
            .rank_map()
            .unwrap()
            .into_iter()
            .map(|(rank, res)| (rank, res.cores, res.gpus))
            .collect();
        out.push(AppRecord {
            container: b.name.clone(),
            id: id.to_string(),
            held,
            t_run,
            t_end,
            t_submit: w[6].parse().unwrap_or(0.0),
            outcome: w[3..6].join("|"),
            queue_id,
            container_attr,
        });
    }
    out
}

/// The jobs the queue broker ran itself (jobs without a container), with
/// the cores they held: a container job's queue-side copy of its R is only
/// a mirror, and is left out.
pub fn local_records(q: &Broker) -> Vec<AppRecord> {
    app_records(q)
        .into_iter()
        .filter(|r| r.container_attr.is_none())
        .collect()
}

/// Poll `done` every 100 ms until it holds, for `secs` at most (the test
/// fails then, with `b`'s log).
pub fn wait_until(b: &Broker, what: &str, secs: f64, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not after {secs} s\n{}",
            dmesg(b)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Pairs of jobs (any brokers) that held one core or GPU at the same time.
pub fn check_no_overlap(records: &[AppRecord]) -> Vec<String> {
    let mut bad = Vec::new();
    for (i, a) in records.iter().enumerate() {
        for b in &records[i + 1..] {
            if a.t_run >= b.t_end || b.t_run >= a.t_end {
                continue;
            }
            for (ra, ca, ga) in &a.held {
                for (rb, cb, gb) in &b.held {
                    if ra == rb && (ca.intersects(cb) || ga.intersects(gb)) {
                        bad.push(format!(
                            "{}:{} and {}:{} share rank {ra} while both run",
                            a.container, a.id, b.container, b.id
                        ));
                    }
                }
            }
        }
    }
    bad
}

/// Submit `args` (a `flux run` command line) to broker `b` as guest user
/// `uid`: the owner's connection may act as another user
/// (`FLUX_HANDLE_USERID`, user role only), and a flux-core built without
/// flux-security accepts a J signed with its "none" mechanism for that user
/// (`sign_none_wrap` in flux-core's libjob). Returns the command's output.
pub fn submit_as_guest(b: &Broker, uid: u32, args: &[&str]) -> std::process::Output {
    let mut dry = vec!["run", "--dry-run"];
    dry.extend_from_slice(args);
    let jobspec = b.run(&dry).unwrap();
    let header = format!("version\0i1\0userid\0i{uid}\0mechanism\0snone\0");
    let signed = format!(
        "{}.{}.none",
        base64(header.as_bytes()),
        base64(jobspec.trim().as_bytes())
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), signed).unwrap();
    let mut cmd = b.flux();
    cmd.env("FLUX_HANDLE_USERID", uid.to_string())
        .env("FLUX_HANDLE_ROLEMASK", "0x2")
        .args(["job", "submit", "--flags=signed"])
        .arg(file.path());
    cmd.output().unwrap()
}

/// Standard base64 with padding (what flux-core's ccan base64 writes).
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A CPU hog on every core of the machine, until dropped: a pod's brokers
/// share their cores with the work (issue #11's contention tests).
pub struct Hog {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Hog {
    /// Start one spinning thread per core.
    pub fn start() -> Hog {
        let stop = Arc::new(AtomicBool::new(false));
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..n)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        Hog { stop, threads }
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
