//! A simulated Flux Operator MiniCluster pod, for tier-2 tests and the demo.
//!
//! A pod is one **queue** broker plus K **application** brokers. Each is a
//! real `flux start --test-size=N` instance whose N brokers all pretend to be
//! the same fake hosts (`flux-sample-[0..N-1]`) with C cores (and optionally
//! G GPUs) per node, exactly as every container's broker in an operator pod
//! believes it owns the whole node. The harness lays out what the operator
//! lays out in its view:
//!
//! ```text
//! <root>/run/flux/local-<i>           socket of container i (a symlink)
//! <root>/etc/flux/meta/<i>-<name>     marker naming container i
//! <root>/etc/flux/system/R-<i>        container i's resource set (Rv1)
//! <root>/etc/flux/config-<i>/         container i's broker config
//! <root>/var/lib/flux-0/              a persistent queue's state (QueueState)
//! ```
//!
//! Index 0 is the queue container; applications are 1..=K.
//!
//! Cleanup is not optional: every `flux start` runs in its own process
//! group with the harness holding its initial program's stdin. Dropping the
//! pod (also on panic) closes those pipes, which ends the instances; anything
//! still alive after a grace period is killed, including job shells that left
//! the process group, found by the pod's unique root path in their
//! environment. [`Pod::shutdown`] does the same and reports any process that
//! survived, so a test can fail on it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Why tier 2 cannot run here, or `None` when flux-core is available.
pub fn skip_reason() -> Option<&'static str> {
    option_env!("PANCAKE_FLUX_SKIP_REASON")
}

/// The `flux` command found at build time.
pub fn flux_bin() -> &'static str {
    option_env!("PANCAKE_FLUX_BIN").unwrap_or("flux")
}

/// The flux-core version found at build time.
pub fn flux_version() -> &'static str {
    option_env!("PANCAKE_FLUX_VERSION").unwrap_or("none")
}

/// Errors from the harness: what failed and its output.
pub type Error = String;

/// The shape of a pod.
#[derive(Debug, Clone)]
pub struct PodSpec {
    /// Application container names (index 1..=K).
    pub containers: Vec<String>,
    /// Fake nodes per instance (brokers per `flux start`).
    pub nodes: u32,
    /// Cores per node.
    pub cores: u32,
    /// Fake GPUs per node, per container name (missing = 0).
    pub gpus: BTreeMap<String, u32>,
    /// Brokers in the queue instance (the operator runs one per node; a
    /// smaller queue saves CPU in tests: its jobs never execute).
    pub queue_size: u32,
    /// Host name prefix (`flux-sample` gives `flux-sample-0` ...).
    pub hostname: String,
    /// What the queue instance keeps across [`Pod::stop_queue`] and
    /// [`Pod::start_queue`] (opt-in; by default it keeps nothing).
    pub queue_state: QueueState,
    /// More TOML for the queue broker's config (e.g. named `[queues.*]`).
    pub queue_config: String,
}

/// What the queue instance (index 0) keeps when it is stopped and started
/// again, as a queue container restarted on a persistent volume.
///
/// A persistent queue instance runs with `-Sstatedir=<root>/var/lib/flux-0`
/// (created by the harness, so the broker never removes it), where its
/// content backing store (`content-sqlite`, the default) keeps the KVS, and
/// with `kvs.checkpoint-period = "1s"`, so that even a crash loses at most
/// the last second (without it, the KVS checkpoints only at a clean
/// shutdown and a crash loses everything since the start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueState {
    /// Nothing: a throwaway instance (state in a temporary directory that
    /// the broker removes). [`Pod::start_queue`] refuses to start it again.
    #[default]
    Ephemeral,
    /// Its jobs, with flux-core's default shutdown: a clean stop first runs
    /// the `cleanup` commands rc1 pushes (`flux queue stop`, `flux cancel
    /// --user=all --states RUN`, `flux queue idle`), which cancels every
    /// running job; only jobs not yet running survive the restart.
    Persistent,
    /// Its jobs, running ones included: as [`QueueState::Persistent`], with
    /// `FLUX_DISABLE_JOB_CLEANUP` set in the instance's environment, so rc1
    /// pushes no cleanup and running jobs stay in RUN for job-exec to
    /// reattach after the restart (RFC 50: test-exec posts `recoverable`).
    KeepRunning,
}

/// How [`Pod::stop_queue`] stops the queue instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueStop {
    /// As a container that is stopped: the initial program ends (the
    /// harness closes its stdin), the instance runs its shutdown (cleanup,
    /// rc3: modules unloaded, running jobs' guest namespaces grafted into
    /// the KVS, final checkpoint) and `flux start` must exit 0.
    Clean,
    /// As a crash: SIGKILL to every broker of the instance. Only what the
    /// KVS checkpointed survives, and running jobs' guest namespaces are lost.
    Crash,
}

impl Default for PodSpec {
    fn default() -> Self {
        PodSpec {
            containers: vec!["lammps".into(), "ior".into(), "chatterbug".into()],
            nodes: 4,
            cores: 10,
            gpus: BTreeMap::new(),
            queue_size: 4,
            hostname: "flux-sample".into(),
            queue_state: QueueState::Ephemeral,
            queue_config: String::new(),
        }
    }
}

impl PodSpec {
    /// The fake hosts as an RFC 29 hostlist.
    pub fn hostlist(&self) -> String {
        if self.nodes == 1 {
            format!("{}-0", self.hostname)
        } else {
            format!("{}-[0-{}]", self.hostname, self.nodes - 1)
        }
    }
}

/// One `flux start` instance of the pod.
#[derive(Debug)]
pub struct Broker {
    /// Container name (`queue` for index 0).
    pub name: String,
    /// Container index in the view layout.
    pub index: usize,
    /// `local://` URI of its rank 0 broker.
    pub uri: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    log: PathBuf,
}

impl Broker {
    /// A `flux` command aimed at this broker.
    pub fn flux(&self) -> Command {
        let mut c = Command::new(flux_bin());
        c.env("FLUX_URI", &self.uri);
        c
    }

    /// Run `flux <args>` on this broker; `Err` with its output unless it exits 0.
    pub fn run(&self, args: &[&str]) -> Result<String, Error> {
        let out = self.output(args)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "[{}] flux {} failed ({}): {}{}",
                self.name,
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Run `flux <args>` on this broker and return its whole output.
    pub fn output(&self, args: &[&str]) -> Result<Output, Error> {
        self.flux()
            .args(args)
            .output()
            .map_err(|e| format!("running flux {}: {e}", args.join(" ")))
    }

    /// The pid of this instance's rank 0 broker.
    pub fn broker_pid(&self) -> Result<i32, Error> {
        self.run(&["getattr", "broker.pid"])?
            .trim()
            .parse()
            .map_err(|e| format!("broker.pid: {e}"))
    }

    /// The broker's resident memory in KiB (VmRSS of rank 0).
    pub fn rss_kib(&self) -> Result<u64, Error> {
        let pid = self.broker_pid()?;
        let status =
            fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| "no VmRSS".to_string())
    }

    /// The tail of this instance's own log (stderr of `flux start`).
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// Per instance: the `flux start` exit code (`None` if killed) and its log tail.
type Exits = BTreeMap<String, (Option<i32>, String)>;

/// A running pod; see the crate docs.
#[derive(Debug)]
pub struct Pod {
    /// The spec it was started with.
    pub spec: PodSpec,
    root: PathBuf,
    keep: bool,
    /// The queue broker (index 0).
    pub queue: Broker,
    /// Application brokers, index 1..=K, in spec order.
    pub apps: Vec<Broker>,
}

impl Pod {
    /// Start a pod and wait until every broker of every instance is online.
    pub fn start(spec: PodSpec) -> Result<Pod, Error> {
        if let Some(reason) = skip_reason() {
            return Err(format!("flux-core unavailable: {reason}"));
        }
        let base = std::env::var_os("PANCAKE_POD_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        fs::create_dir_all(&base).map_err(|e| e.to_string())?;
        let root = tempfile::Builder::new()
            .prefix("pancake-pod.")
            .tempdir_in(&base)
            .map_err(|e| e.to_string())?
            .keep();
        for d in ["run/flux", "etc/flux/meta", "etc/flux/system", "var/log"] {
            fs::create_dir_all(root.join(d)).map_err(|e| e.to_string())?;
        }
        let mut pod = Pod {
            queue: Broker::placeholder("queue", 0),
            apps: Vec::new(),
            keep: std::env::var_os("PANCAKE_POD_KEEP").is_some(),
            root,
            spec,
        };
        // Start everything first, then wait: the instances boot in parallel.
        pod.queue = pod.launch("queue", 0, pod.spec.queue_size)?;
        for (i, name) in pod.spec.containers.clone().iter().enumerate() {
            let b = pod.launch(name, i + 1, pod.spec.nodes)?;
            pod.apps.push(b);
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        let names: Vec<String> = std::iter::once(&pod.queue)
            .chain(&pod.apps)
            .map(|b| b.name.clone())
            .collect();
        for name in names {
            pod.wait_ready(&name, deadline)?;
        }
        for i in 0..pod.apps.len() {
            let r = pod.apps[i].run(&["kvs", "get", "resource.R"])?;
            fs::write(pod.root.join(format!("etc/flux/system/R-{}", i + 1)), r)
                .map_err(|e| e.to_string())?;
        }
        let r = pod.queue.run(&["kvs", "get", "resource.R"])?;
        fs::write(pod.root.join("etc/flux/system/R-0"), r).map_err(|e| e.to_string())?;
        Ok(pod)
    }

    /// The view root (`/mnt/flux/view` in an operator pod).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The application broker named `name`.
    pub fn app(&self, name: &str) -> &Broker {
        self.apps
            .iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("no container {name:?} in this pod"))
    }

    /// Every broker, queue first.
    pub fn brokers(&self) -> impl Iterator<Item = &Broker> {
        std::iter::once(&self.queue).chain(self.apps.iter())
    }

    fn launch(&self, name: &str, index: usize, size: u32) -> Result<Broker, Error> {
        let conf_dir = self.root.join(format!("etc/flux/config-{index}"));
        fs::create_dir_all(&conf_dir).map_err(|e| e.to_string())?;
        let gpus = self.spec.gpus.get(name).copied().unwrap_or(0);
        let mut toml = format!(
            "# written by the pancake test harness\n[resource]\nnoverify = true\n\n[[resource.config]]\nhosts = \"{}\"\ncores = \"0-{}\"\n",
            self.spec.hostlist(),
            self.spec.cores - 1
        );
        if gpus > 0 {
            toml.push_str(&format!("gpus = \"0-{}\"\n", gpus - 1));
        }
        let state = if index == 0 {
            self.spec.queue_state
        } else {
            QueueState::Ephemeral
        };
        if state != QueueState::Ephemeral {
            toml.push_str("\n[kvs]\ncheckpoint-period = \"1s\"\n");
        }
        if index == 0 {
            // The queue broker commits each submitted job at once instead of
            // batching for 10 ms, as examples/minicluster/pancake-queue.sh
            // sets it: a container job reaches pancake one batch sooner.
            toml.push_str("\n[ingest]\nbatch-count = 1\n");
            toml.push_str(&self.spec.queue_config);
        }
        fs::write(conf_dir.join("broker.toml"), toml).map_err(|e| e.to_string())?;
        fs::write(self.root.join(format!("etc/flux/meta/{index}-{name}")), "")
            .map_err(|e| e.to_string())?;

        let rundir = self.root.join(format!("run/flux-{index}"));
        let ready = self.root.join(format!("run/ready-{index}"));
        let log = self.root.join(format!("var/log/flux-{index}.log"));
        let logf = fs::File::create(&log).map_err(|e| e.to_string())?;
        let hosts = if size == 1 {
            format!("{}-0", self.spec.hostname)
        } else {
            format!("{}-[0-{}]", self.spec.hostname, size - 1)
        };
        // The initial program waits for every broker, says so, then blocks
        // on stdin: the instance lives exactly as long as the harness holds
        // the pipe (also if the test process dies).
        let script = format!(
            "{flux} overlay status --wait=full --timeout=0 >/dev/null 2>&1; echo ready > {ready}; exec cat >/dev/null",
            flux = flux_bin(),
            ready = ready.display()
        );
        let mut cmd = Command::new(flux_bin());
        cmd.arg("start")
            .arg(format!("--test-size={size}"))
            .arg(format!("--test-hosts={hosts}"))
            .arg(format!("--test-rundir={}", rundir.display()))
            // Generous: a loaded 2-core machine (CI, benchmarks alongside)
            // can take more than 10 s between the first and last broker's
            // exit (rc3), and a kill here fails the test for no fault of
            // pancake's.
            .arg("--test-exit-timeout=60s")
            .arg(format!("-o,--config-path={}", conf_dir.display()))
            .arg("-o,-Slog-stderr-level=6")
            // Long randomized runs need the whole log in `flux dmesg`.
            .arg("-o,-Slog-ring-size=100000");
        if state != QueueState::Ephemeral {
            let statedir = self.queue_statedir();
            fs::create_dir_all(&statedir).map_err(|e| e.to_string())?;
            cmd.arg(format!("-o,-Sstatedir={}", statedir.display()))
                .arg("-o,-Sstatedir-cleanup=0");
        }
        if state == QueueState::KeepRunning {
            cmd.env("FLUX_DISABLE_JOB_CLEANUP", "t");
        }
        if index == 0 {
            // pancake is the queue broker's scheduler: rc1 loads none, so
            // nothing schedules the queue's jobs before pancake is loaded
            // (also after a restart), as examples/minicluster sets it up.
            cmd.env("FLUX_SCHED_MODULE", "none");
        } else {
            cmd.env_remove("FLUX_SCHED_MODULE");
        }
        cmd.args(["sh", "-c", &script])
            .env("PANCAKE_POD_ROOT", &self.root)
            // Inherited by the brokers, job shells and tasks of this
            // container: kill_app takes them all down, as Kubernetes does
            // when it restarts a container whose broker died.
            .env("PANCAKE_POD_CONTAINER", name)
            .env_remove("FLUX_URI")
            .stdin(Stdio::piped())
            .stdout(logf.try_clone().map_err(|e| e.to_string())?)
            .stderr(logf);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        fs::create_dir_all(&rundir).map_err(|e| e.to_string())?;
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting flux start for {name}: {e}"))?;
        let stdin = child.stdin.take();
        let socket = rundir.join("local-0");
        let link = self.root.join(format!("run/flux/local-{index}"));
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&socket, &link).map_err(|e| e.to_string())?;
        Ok(Broker {
            name: name.to_string(),
            index,
            uri: format!("local://{}", link.display()),
            child: Some(child),
            stdin,
            log,
        })
    }

    fn wait_ready(&mut self, name: &str, deadline: Instant) -> Result<(), Error> {
        let b = if name == "queue" && self.queue.name == "queue" {
            &mut self.queue
        } else {
            self.apps
                .iter_mut()
                .find(|b| b.name == name)
                .ok_or("no such broker")?
        };
        let ready = self.root.join(format!("run/ready-{}", b.index));
        while !ready.exists() {
            if let Some(status) = b.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(format!(
                    "{name}: flux start exited early ({status}):\n{}",
                    b.log_tail()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("{name}: not ready after 120 s:\n{}", b.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Stop one application container as a crash of its broker does in a
    /// Flux Operator pod: SIGKILL to its whole process group (brokers),
    /// then to every process of that container (job shells and tasks: the
    /// broker is the container's main process, and Kubernetes restarts the
    /// container without them).
    pub fn kill_app(&mut self, name: &str) -> Result<(), Error> {
        self.kill_broker_only(name)?;
        for _ in 0..20 {
            let left = container_processes(&self.root, name);
            if left.is_empty() {
                break;
            }
            for (pid, _) in left {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Stop one application broker's instance only: SIGKILL to its process
    /// group, leaving its job shells and tasks running (a broker crash on a
    /// bare node, not a container restart).
    pub fn kill_broker_only(&mut self, name: &str) -> Result<(), Error> {
        let b = self
            .apps
            .iter_mut()
            .find(|b| b.name == name)
            .ok_or("no such container")?;
        if let Some(child) = b.child.as_mut() {
            let pgid = Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, Signal::SIGKILL);
            let _ = child.wait();
        }
        b.child = None;
        b.stdin = None;
        Ok(())
    }

    /// Start application container `name` again after [`Pod::kill_app`]
    /// (same index, socket, config and fake hosts: a container restart).
    pub fn restart_app(&mut self, name: &str) -> Result<(), Error> {
        let i = self
            .apps
            .iter()
            .position(|b| b.name == name)
            .ok_or("no such container")?;
        let index = self.apps[i].index;
        let _ = fs::remove_file(self.root.join(format!("run/ready-{index}")));
        let _ = fs::remove_file(self.root.join(format!("run/flux-{index}/local-0")));
        let b = self.launch(name, index, self.spec.nodes)?;
        self.apps[i] = b;
        self.wait_ready(name, Instant::now() + Duration::from_secs(120))
    }

    /// Where a persistent queue instance keeps its state (see [`QueueState`]).
    pub fn queue_statedir(&self) -> PathBuf {
        self.root.join("var/lib/flux-0")
    }

    /// Stop the queue instance (index 0) as `how` says, leaving the
    /// application brokers running; [`Pod::start_queue`] starts it again.
    /// A clean stop that does not end within 90 s (as in [`Pod::shutdown`]),
    /// or whose `flux start` exits with an error, is an error (the instance
    /// is then killed).
    pub fn stop_queue(&mut self, how: QueueStop) -> Result<(), Error> {
        let b = &mut self.queue;
        let Some(mut child) = b.child.take() else {
            return Err("the queue instance is not running".into());
        };
        let pgid = Pid::from_raw(child.id() as i32);
        let result = match how {
            QueueStop::Crash => {
                let _ = nix::sys::signal::killpg(pgid, Signal::SIGKILL);
                let _ = child.wait();
                Ok(())
            }
            QueueStop::Clean => {
                drop(b.stdin.take());
                let deadline = Instant::now() + Duration::from_secs(90);
                loop {
                    match child.try_wait() {
                        Ok(Some(status)) if status.success() => break Ok(()),
                        Ok(Some(status)) => {
                            break Err(format!(
                                "queue: flux start exited with {status} on a clean stop:\n{}",
                                b.log_tail()
                            ));
                        }
                        Ok(None) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(50))
                        }
                        other => {
                            let _ = nix::sys::signal::killpg(pgid, Signal::SIGKILL);
                            let _ = child.wait();
                            break Err(format!(
                                "queue: no clean stop within 90 s ({other:?}):\n{}",
                                b.log_tail()
                            ));
                        }
                    }
                }
            }
        };
        b.stdin = None;
        result
    }

    /// Start the queue instance again after [`Pod::stop_queue`], on the
    /// same state directory, socket, config and fake hosts (a queue
    /// container restart), and wait until it is ready. Only a persistent
    /// queue ([`PodSpec::queue_state`]) can be started again. The stopped
    /// instance's log is kept as `var/log/flux-0.<n>.log`.
    pub fn start_queue(&mut self) -> Result<(), Error> {
        if self.spec.queue_state == QueueState::Ephemeral {
            return Err("the queue instance keeps no state: set PodSpec::queue_state".into());
        }
        if self.queue.child.is_some() {
            return Err("the queue instance is running: stop_queue first".into());
        }
        let log = self.root.join("var/log/flux-0.log");
        let kept = (1..)
            .map(|n| self.root.join(format!("var/log/flux-0.{n}.log")))
            .find(|p| !p.exists())
            .unwrap_or_default();
        let _ = fs::rename(&log, kept);
        let _ = fs::remove_file(self.root.join("run/ready-0"));
        let _ = fs::remove_file(self.root.join("run/flux-0/local-0"));
        self.queue = self.launch("queue", 0, self.spec.queue_size)?;
        self.wait_ready("queue", Instant::now() + Duration::from_secs(120))
    }

    /// Stop every instance and check that it went well: every `flux start`
    /// exited 0 (a broker that aborted, e.g. on a module that would not shut
    /// down, makes it fail), and no process of the pod survived. Returns the
    /// processes that had to be killed after the grace period (job shells
    /// and tasks left running, as a crash leaves them).
    pub fn shutdown(mut self) -> Result<Vec<String>, Error> {
        let (killed, exits) = self.stop_all();
        let survivors = pod_processes(&self.root);
        let mut problems = Vec::new();
        for (name, (code, log)) in &exits {
            if *code != Some(0) {
                problems.push(format!("{name}: flux start exited with {code:?}:\n{log}"));
            }
        }
        if !survivors.is_empty() {
            problems.push(format!("processes survived pod shutdown: {survivors:?}"));
        }
        if !self.keep {
            let _ = fs::remove_dir_all(&self.root);
        }
        self.root = PathBuf::new();
        if problems.is_empty() {
            Ok(killed)
        } else {
            Err(problems.join("\n"))
        }
    }

    /// Stop every instance: returns the processes killed after the grace
    /// period, and per instance its exit code (`None` if it had to be
    /// killed) with the tail of its log.
    fn stop_all(&mut self) -> (Vec<String>, Exits) {
        // Closing stdin ends each initial program; the instances then shut
        // down on their own, in parallel.
        for b in std::iter::once(&mut self.queue).chain(self.apps.iter_mut()) {
            drop(b.stdin.take());
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut exits = BTreeMap::new();
        for b in std::iter::once(&mut self.queue).chain(self.apps.iter_mut()) {
            if let Some(child) = b.child.as_mut() {
                let code = loop {
                    match child.try_wait() {
                        Ok(Some(status)) => break status.code(),
                        Err(_) => break None,
                        Ok(None) if Instant::now() > deadline => {
                            let _ = nix::sys::signal::killpg(
                                Pid::from_raw(child.id() as i32),
                                Signal::SIGKILL,
                            );
                            let _ = child.wait();
                            break None;
                        }
                        Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                    }
                };
                exits.insert(b.name.clone(), (code, b.log_tail()));
            }
            b.child = None;
        }
        // Whatever is left (job shells and tasks in their own process
        // groups) is killed.
        let mut killed = Vec::new();
        for _ in 0..50 {
            let left = pod_processes(&self.root);
            if left.is_empty() {
                break;
            }
            for (pid, cmd) in left {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                killed.push(format!("{pid} {cmd}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        killed.sort();
        killed.dedup();
        (killed, exits)
    }
}

impl Broker {
    fn placeholder(name: &str, index: usize) -> Broker {
        Broker {
            name: name.into(),
            index,
            uri: String::new(),
            child: None,
            stdin: None,
            log: PathBuf::new(),
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if self.root.as_os_str().is_empty() {
            return;
        }
        self.stop_all();
        if !self.keep {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

/// Processes (pid, command line) that belong to the pod rooted at `root`:
/// their environment names it in `PANCAKE_POD_ROOT` (set on every `flux
/// start`, inherited by brokers, job shells and tasks) or their command line
/// mentions it.
pub fn pod_processes(root: &Path) -> Vec<(i32, String)> {
    let needle = root.as_os_str().as_encoded_bytes();
    if needle.is_empty() {
        return Vec::new();
    }
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let env = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let hit = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        if hit(&env) || hit(&cmd) {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Zombies are already dead; their parent reaps them.
            if stat
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'))
            {
                continue;
            }
            let text = String::from_utf8_lossy(&cmd).replace('\0', " ");
            out.push((pid, text.trim().to_string()));
        }
    }
    out
}

/// The processes of container `name` of the pod rooted at `root` (their
/// environment names both).
pub fn container_processes(root: &Path, name: &str) -> Vec<(i32, String)> {
    let tag = format!("PANCAKE_POD_CONTAINER={name}\0");
    pod_processes(root)
        .into_iter()
        .filter(|(pid, _)| {
            let env = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let t = tag.as_bytes();
            env.windows(t.len()).any(|w| w == t)
        })
        .collect()
}

/// Parse `flux resource list -no '{nnodes} {ncores} {ngpus}'`-style output
/// of one line into numbers.
pub fn parse_counts(line: &str) -> Vec<u64> {
    line.split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// Where the built `pancake` cdylibs are: `$PANCAKE_LIB_DIR`, else the
/// cargo target directory this test binary was built into.
pub fn lib_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PANCAKE_LIB_DIR") {
        return PathBuf::from(d);
    }
    // target/<profile>/deps/<test-binary> or target/<profile>/<bin>
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

impl Pod {
    /// Copy the built module and plugin into the pod under the names Flux
    /// needs (`pancake.so` → module `pancake`; `pancake-bypass.so` → plugin
    /// `pancake-bypass`), returning their paths.
    pub fn install_pancake(&self) -> Result<(PathBuf, PathBuf), Error> {
        let src = lib_dir();
        let dst = self.root.join("lib");
        fs::create_dir_all(&dst).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for (from, to) in [
            ("libpancake.so", "pancake.so"),
            ("libpancake_bypass.so", "pancake-bypass.so"),
        ] {
            let f = src.join(from);
            if !f.exists() {
                return Err(format!(
                    "{} is missing: build it first (make build, or cargo build -p pancake-module -p pancake-bypass)",
                    f.display()
                ));
            }
            // Copy, then rename over: a broker may have the old file mapped
            // (a reload installs again), and writing into a mapped DSO
            // crashes it (SIGBUS/SIGSEGV). The old inode lives on.
            let tmp = dst.join(format!(".{to}.tmp"));
            fs::copy(&f, &tmp).map_err(|e| format!("copying {}: {e}", f.display()))?;
            fs::rename(&tmp, dst.join(to)).map_err(|e| format!("installing {to}: {e}"))?;
            out.push(dst.join(to));
        }
        Ok((out[0].clone(), out[1].clone()))
    }
}

/// A `pancake-fluxion` server on a loopback port, killed on drop.
#[derive(Debug)]
pub struct FluxionServer {
    child: Child,
    /// `grpc://127.0.0.1:PORT`
    pub uri: String,
}

impl FluxionServer {
    /// Start the `pancake-fluxion` built next to the tests, on a free port.
    pub fn start(dir: &Path) -> Result<FluxionServer, Error> {
        Self::start_on(dir, 0)
    }

    /// A loopback port that is free right now (for a server started later).
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0)
    }

    /// Start `pancake-fluxion` on `port` (0 = any free port).
    pub fn start_on(dir: &Path, port: u16) -> Result<FluxionServer, Error> {
        let bin = lib_dir().join("pancake-fluxion");
        if !bin.exists() {
            return Err(format!(
                "{} is missing: cargo build -p fluxion-grpc --bin pancake-fluxion",
                bin.display()
            ));
        }
        let port_file = dir.join(format!("fluxion-port-{}", std::process::id()));
        let _ = fs::remove_file(&port_file);
        let log =
            fs::File::create(dir.join("var/log/pancake-fluxion.log")).map_err(|e| e.to_string())?;
        let child = Command::new(&bin)
            .args([
                "--port",
                &port.to_string(),
                "--quiet",
                "--shutdown-grace",
                "0",
                "--port-file",
            ])
            .arg(&port_file)
            .env("PANCAKE_POD_ROOT", dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(p) = fs::read_to_string(&port_file)
                && let Ok(port) = p.trim().parse::<u16>()
            {
                {
                    return Ok(FluxionServer {
                        child,
                        uri: format!("grpc://127.0.0.1:{port}"),
                    });
                }
            }
            if Instant::now() > deadline {
                return Err("pancake-fluxion did not report its port".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FluxionServer {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
    }
}
