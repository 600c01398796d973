//! The dispatcher: the life of every container job, as a state machine.
//!
//! It is driven by [`Event`]s (what the module saw in the queue broker, the
//! application brokers and Fluxion) and answers with [`Action`]s (what the
//! module must do). It performs no I/O and reads no clock (times come in
//! with the events), so every path — including the failure paths — is
//! tested here without a broker.
//!
//! The invariants it keeps:
//! * at most one Fluxion request is in flight (the public service is not safe
//!   to call concurrently, and a scheduling pass must see its own results);
//! * every Fluxion allocation is cancelled exactly once, and only after the
//!   application job that used it is `clean` (or never existed);
//! * a queue job ends with the state and exit status of its application job.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use fluxion::{FluxionError, Request, Rv1};
use serde_json::{Value, json};

/// A Flux job id.
pub type JobId = u64;

/// How waiting jobs are taken from the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueuePolicy {
    /// First come, first served: the first job that does not fit blocks the rest.
    #[default]
    Fcfs,
    /// EASY backfill: the first job that does not fit gets a Fluxion
    /// reservation; later jobs may run if they do not delay it.
    Easy,
}

impl QueuePolicy {
    /// Parse `fcfs` or `easy`.
    pub fn parse(s: &str) -> Option<QueuePolicy> {
        match s {
            "fcfs" => Some(QueuePolicy::Fcfs),
            "easy" => Some(QueuePolicy::Easy),
            _ => None,
        }
    }

    /// The policy's name.
    pub fn name(self) -> &'static str {
        match self {
            QueuePolicy::Fcfs => "fcfs",
            QueuePolicy::Easy => "easy",
        }
    }
}

/// A successful Fluxion match, already turned into the application's R.
#[derive(Debug, Clone, PartialEq)]
pub struct Granted {
    /// Fluxion's id for the allocation.
    pub fluxion_id: i64,
    /// The R for the application job (with `starttime`/`expiration`).
    pub r: Rv1,
    /// True when this is a reservation for later, not an allocation now.
    pub reserved: bool,
}

/// An event in an application job's life, from that broker's journal.
#[derive(Debug, Clone, PartialEq)]
pub enum AppEvent {
    /// The job's tasks started.
    Start,
    /// The tasks finished with a wait(2) status.
    Finish {
        /// Raw wait status.
        status: i32,
    },
    /// An exception was raised on the job.
    Exception {
        /// Exception type (`cancel`, `timeout`, ...).
        kind: String,
        /// 0 is fatal.
        severity: i32,
        /// Free-form note.
        note: String,
    },
    /// The job is inactive and its resources are free.
    Clean,
}

/// What a queue job's own record says an earlier pancake (before a module
/// reload or a broker restart) did with it: its memo events and the
/// queue-side events of the journal backlog. The dispatcher resumes from it
/// instead of matching and forwarding the job a second time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prior {
    /// The Fluxion allocation it was given (memo `fluxion_id`).
    pub fluxion_id: Option<i64>,
    /// The application R of that allocation (memo `R`).
    pub r: Option<Rv1>,
    /// The application job it was forwarded as (memo `app_id`).
    pub app_id: Option<JobId>,
    /// When its `fluxion_id` memo was written (the journal's timestamp): its
    /// application job, if the submit got through, was submitted after.
    pub dispatched_at: Option<f64>,
    /// The queue job's `pancake` dependency was already removed.
    pub released: bool,
    /// The queue job already started (override start took effect).
    pub started: bool,
}

impl Prior {
    /// True when there is anything to resume (the job was matched).
    pub fn matched(&self) -> bool {
        self.fluxion_id.is_some()
    }
}

/// What the module tells the dispatcher.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A container job appeared on the queue broker.
    Submitted {
        /// Queue job id.
        id: JobId,
        /// Target container.
        container: String,
        /// The jobspec as submitted (JSON text; its environment, if any, is
        /// not kept).
        jobspec: String,
        /// Job priority (higher first).
        priority: i64,
        /// Submit time.
        t_submit: f64,
        /// Urgency (0 = held).
        urgency: i32,
    },
    /// A container job found in the queue journal's backlog after a reload
    /// or restart, with what an earlier pancake did with it.
    Recovered {
        /// Queue job id.
        id: JobId,
        /// Target container.
        container: String,
        /// The jobspec as submitted (JSON text; its environment, if any, is
        /// not kept).
        jobspec: String,
        /// Job priority (higher first).
        priority: i64,
        /// Submit time.
        t_submit: f64,
        /// Urgency (0 = held).
        urgency: i32,
        /// Its memo and queue-side history.
        prior: Prior,
    },
    /// Every job of the queue journal's backlog was fed (as `Submitted` or
    /// `Recovered`): scheduling may begin.
    QueueBacklogDone,
    /// The answer to [`Action::Restore`].
    Restored {
        /// Queue job id.
        id: JobId,
        /// The Fluxion id restored.
        fluxion_id: i64,
        /// Ok, or why Fluxion did not take the allocation back.
        result: Result<(), FluxionError>,
    },
    /// The time asked for with [`Action::Wake`] has come.
    Tick,
    /// The queue broker is shutting down (CLEANUP: `flux queue stop`, then
    /// its cleanup cancels running jobs): start nothing new (no match, no
    /// submit, no release) and keep mirroring what already runs. A module
    /// loaded after the restart takes up the rest.
    Drain,
    /// Fluxion holds the graph again after [`Action::Reinit`], with no
    /// allocation: every live one is restored before the next match.
    FluxionReset,
    /// Recovery waited long enough for the containers' journal backlogs:
    /// match without the ones still missing (unreachable brokers).
    RecoveryTimeout,
    /// A container's journal backlog is complete (every active application
    /// job was replayed): recovered jobs not seen there are resolved.
    AppBacklogDone {
        /// Container.
        container: String,
    },
    /// A queue job's priority changed.
    Priority {
        /// Queue job id.
        id: JobId,
        /// New priority.
        priority: i64,
    },
    /// A queue job's urgency changed.
    Urgency {
        /// Queue job id.
        id: JobId,
        /// New urgency (0 = held).
        urgency: i32,
    },
    /// A fatal exception was raised on a queue job (e.g. `flux cancel`).
    QueueException {
        /// Queue job id.
        id: JobId,
        /// Exception type.
        kind: String,
        /// Note.
        note: String,
    },
    /// The queue job holds pancake's dependency (its `dependency-add` was
    /// posted): only now may it be released.
    QueueHeld {
        /// Queue job id.
        id: JobId,
    },
    /// The queue job got its `alloc` (it is RUN; testexec is starting).
    QueueAlloc {
        /// Queue job id.
        id: JobId,
    },
    /// The queue job's `start` event (the override start took effect).
    QueueStart {
        /// Queue job id.
        id: JobId,
    },
    /// The queue job is inactive.
    QueueInactive {
        /// Queue job id.
        id: JobId,
    },
    /// The answer to [`Action::Match`].
    Matched {
        /// Queue job id.
        id: JobId,
        /// The grant, or why not.
        result: Result<Granted, FluxionError>,
    },
    /// The answer to [`Action::Submit`].
    SubmitDone {
        /// Queue job id.
        id: JobId,
        /// The application job id, or the reason the broker refused it.
        result: Result<JobId, String>,
    },
    /// A job pancake forwarded appeared in an application broker's journal
    /// (its jobspec names the queue job): maps the two before the submit
    /// answer, which may arrive after the job already started.
    AppSubmitted {
        /// Container.
        container: String,
        /// Application job id.
        app_id: JobId,
        /// The queue job it mirrors (`attributes.user.pancake.queue_id`).
        queue_id: JobId,
        /// Its Fluxion id (`attributes.user.pancake.fluxion_id`).
        fluxion_id: Option<i64>,
        /// Its R (`attributes.system.alloc-bypass.R`).
        r: Option<Rv1>,
    },
    /// The answer to [`Action::FindApp`].
    AppFound {
        /// Queue job id.
        id: JobId,
        /// Container.
        container: String,
        /// The application job whose jobspec names the queue job, none, or
        /// why the container could not be searched.
        result: Result<Option<JobId>, String>,
    },
    /// An event of an application job.
    App {
        /// Container.
        container: String,
        /// Application job id.
        app_id: JobId,
        /// What happened.
        event: AppEvent,
    },
    /// A container's broker is connected and its R agrees with the graph.
    ContainerUp {
        /// Container.
        container: String,
    },
    /// A container's broker was lost.
    ContainerLost {
        /// Container.
        container: String,
    },
}

/// What the dispatcher asks the module to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Ask Fluxion to match `jobspec` (environment stripped); answer with [`Event::Matched`].
    Match {
        /// Queue job id.
        id: JobId,
        /// Jobspec for Fluxion.
        jobspec: String,
        /// Allow a reservation.
        reserve: bool,
    },
    /// Free a Fluxion allocation (or reservation).
    Cancel {
        /// Fluxion id.
        fluxion_id: i64,
    },
    /// Record facts on the queue job (`memo` event; `flux jobs -o {user.KEY}`).
    Memo {
        /// Queue job id.
        id: JobId,
        /// Keys and values.
        memo: Value,
    },
    /// Submit the forwarded job to a container; answer with [`Event::SubmitDone`].
    Submit {
        /// Queue job id.
        id: JobId,
        /// Container.
        container: String,
        /// Cleaned jobspec carrying `attributes.system.alloc-bypass.R` (JSON
        /// text), without the environment: the module adds the queue job's
        /// (from its signed J) before submitting.
        jobspec: String,
    },
    /// Re-register a recovered allocation with Fluxion under its old id (its
    /// cores are in use); answer with [`Event::Restored`].
    Restore {
        /// Queue job id.
        id: JobId,
        /// Fluxion id it had.
        fluxion_id: i64,
        /// Its R.
        r: Rv1,
    },
    /// Read an application job's whole eventlog from its broker (it went
    /// inactive while pancake was away) and feed its events as [`Event::App`].
    AppLookup {
        /// The queue job it should mirror (the application job's jobspec
        /// must name it: a memo is only a claim).
        id: JobId,
        /// Container.
        container: String,
        /// Application job id.
        app_id: JobId,
    },
    /// Search a container's jobs submitted since `since` (inactive ones
    /// included) for the application job of queue job `id`: a recovered
    /// submit that is not active there may have run and ended while pancake
    /// was away. Answer with [`Event::AppFound`].
    FindApp {
        /// Queue job id (the application job's jobspec names it).
        id: JobId,
        /// Container.
        container: String,
        /// The earliest submit time to look at (Unix seconds).
        since: f64,
    },
    /// Copy the output of a resumed, already released job again, after what
    /// its queue job already holds (the copy died with the earlier module).
    ResumeOutput {
        /// Queue job id.
        id: JobId,
        /// Container.
        container: String,
        /// Application job id.
        app_id: JobId,
        /// The queue job already started (its output log can be written).
        started: bool,
    },
    /// Release the held queue job with the same R (queue copy: no expiration).
    Release {
        /// Queue job id.
        id: JobId,
        /// R for the queue job.
        r: Rv1,
    },
    /// `job-exec.override` start on the queue job.
    OverrideStart {
        /// Queue job id.
        id: JobId,
    },
    /// `job-exec.override` finish on the queue job.
    OverrideFinish {
        /// Queue job id.
        id: JobId,
        /// Raw wait status.
        status: i32,
    },
    /// Raise a fatal exception on the queue job.
    Raise {
        /// Queue job id.
        id: JobId,
        /// Exception type.
        kind: String,
        /// Note (names the container).
        note: String,
        /// The application's wait status, when there was one.
        wait_status: Option<i32>,
    },
    /// Cancel the application job.
    CancelApp {
        /// Container.
        container: String,
        /// Application job id.
        app_id: JobId,
        /// Reason.
        note: String,
    },
    /// Load the graph into Fluxion again (it lost it); answer with
    /// [`Event::FluxionReset`] once it holds it.
    Reinit,
    /// Feed [`Event::Tick`] after `after` seconds.
    Wake {
        /// Seconds from now.
        after: f64,
    },
    /// Something worth a line in the broker log.
    Log {
        /// Queue job id, when about one job.
        id: Option<JobId>,
        /// The line.
        text: String,
    },
}

/// Where a queue job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for resources (or held, or its container is down).
    Waiting,
    /// A Match for it is in flight.
    Matching,
    /// Matched; the application submit is in flight.
    Submitting,
    /// Submitted; waiting for the application job to start.
    Submitted,
    /// The application job started; the queue job mirrors it.
    Running,
    /// The queue job is over; waiting for the application job's clean.
    Draining,
    /// Done with everything.
    Done,
}

/// One container job.
#[derive(Debug, Clone)]
pub struct Job {
    /// Queue job id.
    pub id: JobId,
    /// Target container.
    pub container: String,
    /// What it asks for.
    pub request: Request,
    /// Priority (higher first).
    pub priority: i64,
    /// Submit time.
    pub t_submit: f64,
    /// Urgency (0 = held).
    pub urgency: i32,
    /// Where it is.
    pub phase: Phase,
    /// Fluxion allocation, while held.
    pub fluxion_id: Option<i64>,
    /// Application job id, once submitted.
    pub app_id: Option<JobId>,
    /// The application R.
    pub r: Option<Box<Rv1>>,
    /// The jobspec without its environment, as compact JSON text: what
    /// Fluxion matches, and what the application job is built from (the
    /// module adds the environment back from J when it submits). Kept as
    /// text, not a parsed tree, so a waiting job costs little memory.
    jobspec: Box<str>,
    /// The queue job is in RUN (its `alloc` was seen).
    queue_alloc: bool,
    /// The queue job's override `start` took effect.
    queue_started: bool,
    /// The application job's finish status, waiting to be mirrored.
    pending_finish: Option<i32>,
    /// A fatal application exception (type, note), waiting for its finish.
    app_exception: Option<Box<(String, String)>>,
    /// The queue job already ended (exception or inactive).
    queue_ended: bool,
    /// The application job is clean.
    app_clean: bool,
    /// The application job finished (or died before starting): cancelling
    /// it now would turn its result into CANCELED.
    app_finished: bool,
    /// The queue job's `dependency-add` was seen (release is allowed).
    queue_held: bool,
    /// The application job started before the queue job was held.
    release_pending: bool,
    /// The queue job's dependency was removed (release sent or seen).
    released: bool,
    /// Recovered from an earlier pancake: what happened to its application
    /// side while nobody watched is not known yet.
    recovering: bool,
    /// An event of its application job was seen since the recovery.
    app_seen: bool,
    /// The Fluxion id an earlier pancake had for it, until Fluxion took the
    /// allocation back ([`Event::Restored`]); only then is it `fluxion_id`
    /// (cancelling an id Fluxion never restored could free someone else's).
    prior_fluxion_id: Option<i64>,
    /// Its allocation must be restored in Fluxion before any match.
    restore_due: bool,
    /// A recovered job whose earlier submit is not confirmed yet.
    unconfirmed: Option<Unconfirmed>,
    /// Its container's broker was lost while the application job held
    /// cores: they stay held until the broker is back without it (or the
    /// lost-grace time, if set, passes: then, the deadline).
    lost: Option<Option<f64>>,
}

/// Where the search for a recovered job's unconfirmed submit has got to.
/// Its container's journal backlog lists only active jobs, so a submit that
/// went through and ended while pancake was away shows up in none of the
/// live feeds; it must be looked for before the job is matched again (it
/// would run twice).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Unconfirmed {
    /// When the earlier pancake dispatched the job ([`Prior::dispatched_at`]).
    since: f64,
    /// What the dispatcher waits for.
    step: ConfirmStep,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ConfirmStep {
    /// The container's journal backlog.
    Backlog,
    /// The submit to show up live (it may still be in job-ingest), until
    /// this time; then its inactive jobs are searched.
    Live(f64),
    /// The answer to [`Action::FindApp`].
    Search,
}

impl Job {
    /// True once the queue job is RUN and its override start took effect.
    pub fn queue_running(&self) -> bool {
        self.queue_started
    }

    /// True once the queue job ended (exception or inactive).
    pub fn queue_over(&self) -> bool {
        self.queue_ended
    }

    /// Where each side of the job has got to, for `pancake.status`.
    pub fn progress(&self) -> Progress {
        Progress {
            queue_held: self.queue_held,
            queue_alloc: self.queue_alloc,
            queue_started: self.queue_started,
            queue_ended: self.queue_ended,
            app_finished: self.app_finished,
            app_clean: self.app_clean,
            finish_pending: self.pending_finish.is_some(),
        }
    }
}

/// The milestones both sides of a job have passed (see [`Job::progress`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    /// The queue job's `pancake` dependency was seen.
    pub queue_held: bool,
    /// The queue job's `alloc` was seen.
    pub queue_alloc: bool,
    /// The queue job's `start` was seen.
    pub queue_started: bool,
    /// The queue job ended (exception or inactive).
    pub queue_ended: bool,
    /// The application job finished (or died before starting).
    pub app_finished: bool,
    /// The application job is clean.
    pub app_clean: bool,
    /// An application finish waits for the queue job's start.
    pub finish_pending: bool,
}

/// Counters for `flux module stats pancake` and `pancake.status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Matches asked of Fluxion.
    pub matches: u64,
    /// Allocations granted.
    pub granted: u64,
    /// Allocations freed.
    pub freed: u64,
    /// Jobs forwarded to a container.
    pub forwarded: u64,
    /// Jobs whose application side completed (any outcome).
    pub completed: u64,
    /// Jobs failed by pancake itself (unsatisfiable, refused, lost).
    pub failed: u64,
}

/// The dispatcher.
#[derive(Debug)]
pub struct Dispatcher {
    policy: QueuePolicy,
    jobs: HashMap<JobId, Job>,
    by_app: HashMap<(String, JobId), JobId>,
    containers_up: BTreeSet<String>,
    /// A Fluxion call is in flight.
    busy: bool,
    /// Run another scheduling pass when the current call returns.
    dirty: bool,
    /// Jobs already tried in this pass (they did not fit).
    tried: BTreeSet<JobId>,
    /// This pass's queue order, where it has got to, and whether a job
    /// before the cursor holds (or failed to get) the EASY reservation.
    pass: Vec<JobId>,
    cursor: usize,
    reserve_used: bool,
    /// Jobs submitted since the last scheduling call, to join the pass.
    arrivals: Vec<JobId>,
    /// The EASY reservation of this pass, cancelled before the next pass.
    reservation: Option<i64>,
    /// Graph capacity, to fail never-satisfiable requests at once.
    capacity: Option<Capacity>,
    /// The R the graph was built from: every grant is checked against it
    /// and against its request before anything is submitted.
    graph: Option<Rv1>,
    /// No match until the queue backlog is in (see [`Dispatcher::begin_recovery`]).
    recovering: bool,
    /// Application events that arrived before the queue backlog was in.
    held_app_events: Vec<Event>,
    /// See [`Dispatcher::set_lost_grace`].
    lost_grace: Option<f64>,
    /// Fluxion is being loaded again ([`Action::Reinit`]): no match until
    /// [`Event::FluxionReset`].
    reinit: bool,
    /// See [`Event::Drain`].
    draining: bool,
    /// Some job may have an allocation to restore (see `restore_due`).
    restores_due: bool,
    /// ... nor until these containers' journal backlogs are in: an
    /// application job whose queue job ended while pancake was away is only
    /// found there, and its cores must be held before anything is matched.
    awaiting: BTreeSet<String>,
    stats: Stats,
    now: f64,
}

/// What the whole graph holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Nodes.
    pub nodes: u64,
    /// Cores per node (the smallest node).
    pub cores_per_node: u64,
    /// GPUs per node (the smallest node).
    pub gpus_per_node: u64,
}

impl Capacity {
    /// Capacity of an R (assumes the smallest node when nodes differ).
    pub fn of(r: &Rv1) -> Result<Capacity, FluxionError> {
        let ranks = r.rank_map()?;
        Ok(Capacity {
            nodes: ranks.len() as u64,
            cores_per_node: ranks.values().map(|n| n.cores.len()).min().unwrap_or(0),
            gpus_per_node: ranks.values().map(|n| n.gpus.len()).min().unwrap_or(0),
        })
    }

    /// Why `req` can never fit, or `None` when it might.
    pub fn why_never(&self, req: &Request) -> Option<String> {
        let slot_cores = u64::from(req.cores_per_slot);
        let slot_gpus = u64::from(req.gpus_per_slot);
        if slot_cores > self.cores_per_node {
            return Some(format!(
                "a task slot needs {slot_cores} cores, nodes have {}",
                self.cores_per_node
            ));
        }
        if slot_gpus > self.gpus_per_node {
            return Some(format!(
                "a task slot needs {slot_gpus} GPUs, nodes have {}",
                self.gpus_per_node
            ));
        }
        match req.nnodes {
            Some(n) => {
                let n = u64::from(n);
                if n > self.nodes {
                    return Some(format!(
                        "requested {n} nodes, the cluster has {}",
                        self.nodes
                    ));
                }
                let per = u64::from(req.slots);
                if per * slot_cores > self.cores_per_node || per * slot_gpus > self.gpus_per_node {
                    return Some(format!(
                        "{per} slots per node do not fit a node of {} cores and {} GPUs",
                        self.cores_per_node, self.gpus_per_node
                    ));
                }
            }
            None => {
                // Slots may spread over nodes, but each slot fits on one node.
                let by_cores = self.cores_per_node / slot_cores.max(1);
                let per_node = match self.gpus_per_node.checked_div(slot_gpus) {
                    Some(by_gpus) => by_cores.min(by_gpus),
                    None => by_cores, // no GPUs asked for
                };
                let fit = per_node * self.nodes;
                if req.total_slots() > fit {
                    return Some(format!(
                        "requested {} slots of {slot_cores} cores/{slot_gpus} GPUs, the cluster holds at most {fit}",
                        req.total_slots()
                    ));
                }
            }
        }
        None
    }
}

/// How long a recovered job's unconfirmed submit may take to show up in its
/// container's journal (it may still be in job-ingest) before pancake
/// decides it never got there.
pub const SUBMIT_GRACE: f64 = 10.0;

/// The dependency the queue plugin holds container jobs with.
pub const DEPENDENCY: &str = "pancake";

/// Attribute keys a user may not set on a container job (pancake owns them).
pub const RESERVED_ATTRIBUTES: &[&str] = &["alloc-bypass", "exec"];

/// Turn the queue job's jobspec into the application job's: drop what only
/// makes sense on the queue broker, add the R, and tag it for traceability.
pub fn app_jobspec(jobspec: &Value, r: &Rv1, queue_id: JobId, fluxion_id: i64) -> Value {
    let mut js = jobspec.clone();
    if let Some(sys) = js
        .pointer_mut("/attributes/system")
        .and_then(Value::as_object_mut)
    {
        for k in [
            "container",
            "exec",
            "dependencies",
            "alloc-bypass",
            "queue",
            "bank",
            "project",
        ] {
            sys.remove(k);
        }
        sys.insert("alloc-bypass".into(), json!({ "R": r }));
    }
    if let Some(attrs) = js.get_mut("attributes").and_then(Value::as_object_mut) {
        let user = attrs.entry("user").or_insert_with(|| json!({}));
        if let Some(u) = user.as_object_mut() {
            u.insert(
                "pancake".into(),
                json!({ "queue_id": queue_id, "fluxion_id": fluxion_id }),
            );
        }
    }
    js
}

/// The jobspec Fluxion sees: no environment (it is large and unused).
pub fn fluxion_jobspec(jobspec: &Value) -> String {
    let mut js = jobspec.clone();
    if let Some(sys) = js
        .pointer_mut("/attributes/system")
        .and_then(Value::as_object_mut)
    {
        sys.remove("environment");
    }
    js.to_string()
}

/// Check an R built from a Fluxion allocation against the request and the
/// container's resources. Returns the reason it is wrong.
pub fn check_grant(r: &Rv1, req: &Request, container_r: &Rv1) -> Result<(), String> {
    match r.is_subset_of(container_r) {
        Ok(true) => {}
        Ok(false) => return Err("the allocation is not inside the container's resources".into()),
        Err(e) => return Err(format!("the allocation is malformed: {e}")),
    }
    let t = r.totals().map_err(|e| e.to_string())?;
    if let Some(n) = req.nnodes
        && t.nodes != u64::from(n)
    {
        return Err(format!(
            "allocation has {} nodes, the job asked for {n}",
            t.nodes
        ));
    }
    let want_cores = req.total_cores();
    let exclusive_whole = req.node_exclusive && req.nnodes.is_some();
    if exclusive_whole {
        if t.cores < want_cores {
            return Err(format!(
                "allocation has {} cores, the job asked for {want_cores}",
                t.cores
            ));
        }
    } else if t.cores != want_cores {
        return Err(format!(
            "allocation has {} cores, the job asked for {want_cores}",
            t.cores
        ));
    }
    let want_gpus = req.total_gpus();
    if (exclusive_whole && t.gpus < want_gpus) || (!exclusive_whole && t.gpus != want_gpus) {
        return Err(format!(
            "allocation has {} GPUs, the job asked for {want_gpus}",
            t.gpus
        ));
    }
    Ok(())
}

/// A human name for a wait status, for notes.
fn describe_status(status: i32) -> String {
    if status & 0x7f == 0 {
        format!("exit {}", (status >> 8) & 0xff)
    } else {
        format!("signal {}", status & 0x7f)
    }
}

impl Dispatcher {
    /// A dispatcher with queue policy `policy`.
    pub fn new(policy: QueuePolicy) -> Self {
        Dispatcher {
            policy,
            jobs: HashMap::new(),
            by_app: HashMap::new(),
            containers_up: BTreeSet::new(),
            busy: false,
            dirty: false,
            tried: BTreeSet::new(),
            pass: Vec::new(),
            cursor: 0,
            reserve_used: false,
            arrivals: Vec::new(),
            reservation: None,
            capacity: None,
            graph: None,
            recovering: false,
            awaiting: BTreeSet::new(),
            held_app_events: Vec::new(),
            lost_grace: None,
            reinit: false,
            draining: false,
            restores_due: false,
            stats: Stats::default(),
            now: 0.0,
        }
    }

    /// Change the queue policy (takes effect at the next pass).
    pub fn set_policy(&mut self, policy: QueuePolicy) {
        self.policy = policy;
    }

    /// The queue policy.
    pub fn policy(&self) -> QueuePolicy {
        self.policy
    }

    /// Set what the graph holds, so impossible requests fail at once. It also
    /// means Fluxion is ready: recovered allocations are restored at the next
    /// event, before any match.
    pub fn set_capacity(&mut self, cap: Capacity) {
        self.capacity = Some(cap);
    }

    /// Free the cores of a lost broker's jobs after `grace` seconds even if
    /// the broker has not come back (`None`: only once it is back without
    /// them — a killed broker leaves its job shells and tasks running).
    pub fn set_lost_grace(&mut self, grace: Option<f64>) {
        self.lost_grace = grace;
    }

    /// The R Fluxion's graph was built from (the containers' shared R).
    pub fn set_graph(&mut self, graph: Rv1) {
        self.graph = Some(graph);
    }

    /// Hold every match until [`Event::QueueBacklogDone`]: the module was
    /// (re)loaded and the queue's active jobs may carry allocations an
    /// earlier pancake made, which must be restored first.
    /// The application journals of `containers` are awaited too
    /// ([`Event::AppBacklogDone`], or [`Event::ContainerLost`] for one that
    /// cannot be reached; [`Event::RecoveryTimeout`] gives up on the rest).
    pub fn begin_recovery<S: AsRef<str>>(&mut self, containers: &[S]) {
        self.recovering = true;
        self.awaiting = containers.iter().map(|c| c.as_ref().to_string()).collect();
    }

    /// Stop waiting for the journal backlogs still missing (containers that
    /// stay unreachable); returns their names.
    fn stop_awaiting(&mut self) -> Vec<String> {
        self.dirty = true;
        let gone: Vec<String> = std::mem::take(&mut self.awaiting).into_iter().collect();
        for c in &gone {
            self.unknown_app_state(c);
        }
        gone
    }

    /// Container `c`'s journal will not come: its recovered jobs keep their
    /// cores (restored in Fluxion) as if their application jobs still ran.
    fn unknown_app_state(&mut self, c: &str) {
        self.restores_due = true;
        for j in self.jobs.values_mut() {
            if j.container == c && j.recovering && j.app_id.is_some() {
                j.recovering = false;
            }
        }
    }

    /// True while matching waits for recovery to complete.
    pub fn is_recovering(&self) -> bool {
        self.recovering || !self.awaiting.is_empty()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Every tracked job.
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values()
    }

    /// One job.
    pub fn job(&self, id: JobId) -> Option<&Job> {
        self.jobs.get(&id)
    }

    /// Containers currently up.
    pub fn containers_up(&self) -> &BTreeSet<String> {
        &self.containers_up
    }

    /// Feed one event at time `now`; returns what to do, in order.
    pub fn handle(&mut self, now: f64, event: Event) -> Vec<Action> {
        self.now = now;
        let mut out = Vec::new();
        self.apply(event, &mut out);
        self.schedule(&mut out);
        out
    }

    fn apply(&mut self, event: Event, out: &mut Vec<Action>) {
        // Until the queue backlog is in, application-side news waits: an
        // application job must meet the queue job it mirrors (recovered from
        // the queue's record), not be taken for an orphan.
        if self.recovering
            && matches!(
                event,
                Event::AppSubmitted { .. } | Event::App { .. } | Event::AppBacklogDone { .. }
            )
        {
            self.held_app_events.push(event);
            return;
        }
        match event {
            Event::Submitted {
                id,
                container,
                jobspec,
                priority,
                t_submit,
                urgency,
            } => self.on_submitted(id, container, &jobspec, priority, t_submit, urgency, out),
            Event::Recovered {
                id,
                container,
                jobspec,
                priority,
                t_submit,
                urgency,
                prior,
            } => {
                self.on_submitted(id, container, &jobspec, priority, t_submit, urgency, out);
                self.resume(id, prior, out);
            }
            Event::QueueBacklogDone => {
                if std::mem::take(&mut self.recovering) {
                    self.dirty = true;
                    for e in std::mem::take(&mut self.held_app_events) {
                        self.apply(e, out);
                    }
                }
            }
            Event::Tick => self.on_tick(out),
            Event::Drain => {
                if !std::mem::replace(&mut self.draining, true) {
                    out.push(Action::Log {
                        id: None,
                        text: "the queue broker is shutting down: nothing new is matched, forwarded or released".into(),
                    });
                }
            }
            Event::FluxionReset => self.on_fluxion_reset(out),
            Event::RecoveryTimeout => {
                let gone = self.stop_awaiting();
                if !gone.is_empty() {
                    out.push(Action::Log {
                        id: None,
                        text: format!(
                            "recovery: no job journal from {}; matching without it (its jobs keep their cores)",
                            gone.join(", ")
                        ),
                    });
                }
            }
            Event::Restored {
                id,
                fluxion_id,
                result,
            } => self.on_restored(id, fluxion_id, result, out),
            Event::AppBacklogDone { container } => {
                if self.awaiting.remove(&container) {
                    self.dirty = true;
                }
                self.on_app_backlog_done(&container, out)
            }
            Event::Priority { id, priority } => {
                if let Some(j) = self.jobs.get_mut(&id) {
                    j.priority = priority;
                    self.dirty = true;
                }
            }
            Event::Urgency { id, urgency } => {
                if let Some(j) = self.jobs.get_mut(&id) {
                    j.urgency = urgency;
                    self.dirty = true;
                }
            }
            Event::QueueException { id, kind, note } => {
                self.on_queue_exception(id, &kind, &note, out)
            }
            Event::QueueHeld { id } => {
                let draining = self.draining;
                if let Some(j) = self.jobs.get_mut(&id) {
                    j.queue_held = true;
                    if !draining && std::mem::take(&mut j.release_pending) && !j.queue_ended {
                        Self::release(j, out);
                    }
                }
            }
            Event::QueueAlloc { id } => {
                if let Some(j) = self.jobs.get_mut(&id) {
                    j.queue_alloc = true;
                    // (A recovered job may have started already.)
                    if !j.queue_ended && !j.queue_started {
                        out.push(Action::OverrideStart { id });
                    }
                }
            }
            Event::QueueStart { id } => {
                if let Some(j) = self.jobs.get_mut(&id) {
                    j.queue_started = true;
                    if let Some(status) = j.pending_finish.take() {
                        Self::mirror_finish(j, status, out);
                    }
                }
            }
            Event::QueueInactive { id } => self.on_queue_inactive(id, out),
            Event::Matched { id, result } => self.on_matched(id, result, out),
            Event::SubmitDone { id, result } => self.on_submit_done(id, result, out),
            Event::AppFound {
                id,
                container,
                result,
            } => self.on_app_found(id, container, result, out),
            Event::AppSubmitted {
                container,
                app_id,
                queue_id,
                fluxion_id,
                r,
            } => {
                if !self.jobs.contains_key(&queue_id) {
                    self.adopt(container, app_id, queue_id, fluxion_id, r, out);
                } else if let Some(j) = self.jobs.get_mut(&queue_id)
                    && j.container == container
                    && j.app_id == Some(app_id)
                {
                    // Known already (a recovered job's memo, or the submit
                    // answer): it is still active in its broker.
                    j.app_seen = true;
                } else if let Some(j) = self.jobs.get_mut(&queue_id)
                    && j.container == container
                    && j.app_id.is_none()
                    && j.phase == Phase::Submitting
                {
                    j.app_id = Some(app_id);
                    j.app_seen = true;
                    // (Both cleared: `|`, not `||`.)
                    if std::mem::take(&mut j.recovering) | j.unconfirmed.take().is_some() {
                        // The earlier pancake's submit went through; its
                        // answer (and the app_id memo) were lost.
                        self.stats.forwarded += 1;
                        out.push(Action::Memo {
                            id: queue_id,
                            memo: json!({ "app_id": app_id }),
                        });
                        if j.queue_ended {
                            j.phase = Phase::Draining;
                            out.push(Action::CancelApp {
                                container: container.clone(),
                                app_id,
                                note: "queue job ended before forwarding completed".into(),
                            });
                        } else {
                            j.phase = Phase::Submitted;
                        }
                    }
                    self.by_app.insert((container, app_id), queue_id);
                }
            }
            Event::App {
                container,
                app_id,
                event,
            } => self.on_app(&container, app_id, event, out),
            Event::ContainerUp { container } => {
                self.containers_up.insert(container);
                self.dirty = true;
            }
            Event::ContainerLost { container } => {
                if self.awaiting.remove(&container) {
                    self.dirty = true;
                    self.unknown_app_state(&container);
                }
                self.on_container_lost(&container, out)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_submitted(
        &mut self,
        id: JobId,
        container: String,
        jobspec: &str,
        priority: i64,
        t_submit: f64,
        urgency: i32,
        out: &mut Vec<Action>,
    ) {
        if self.jobs.contains_key(&id) {
            return;
        }
        let parsed: Result<Value, String> =
            serde_json::from_str(jobspec).map_err(|e| e.to_string());
        let spec = parsed
            .clone()
            .and_then(|v| fluxion::Jobspec::from_value(&v).map_err(|e| e.to_string()));
        let (value, spec) = match (parsed, spec) {
            (Ok(v), Ok(s)) => (v, s),
            (_, Err(e)) | (Err(e), _) => {
                out.push(Action::Raise {
                    id,
                    kind: "pancake".into(),
                    note: format!("container {container}: invalid jobspec: {e}"),
                    wait_status: None,
                });
                self.stats.failed += 1;
                return;
            }
        };
        if let Some(why) = self.capacity.and_then(|c| c.why_never(&spec.request)) {
            out.push(Action::Raise {
                id,
                kind: "alloc".into(),
                note: format!("container {container}: unsatisfiable request: {why}"),
                wait_status: None,
            });
            self.stats.failed += 1;
            return;
        }
        self.jobs.insert(
            id,
            Job {
                id,
                container,
                request: spec.request,
                priority,
                t_submit,
                urgency,
                phase: Phase::Waiting,
                fluxion_id: None,
                app_id: None,
                r: None,
                jobspec: fluxion_jobspec(&value).into_boxed_str(),
                queue_alloc: false,
                queue_started: false,
                pending_finish: None,
                app_exception: None,
                queue_ended: false,
                app_clean: false,
                app_finished: false,
                queue_held: false,
                release_pending: false,
                released: false,
                recovering: false,
                app_seen: false,
                prior_fluxion_id: None,
                restore_due: false,
                unconfirmed: None,
                lost: None,
            },
        );
        // Not a new pass: nothing was freed, so the jobs this pass already
        // tried would only be refused again (a futile Fluxion call per
        // submission while the cluster is full). The new job joins the
        // pass in its place.
        self.arrivals.push(id);
    }

    /// Take up a job an earlier pancake matched (and maybe forwarded),
    /// from what its queue record says, instead of matching it again.
    fn resume(&mut self, id: JobId, prior: Prior, out: &mut Vec<Action>) {
        let Some(fid) = prior.fluxion_id else {
            // Never matched: an ordinary waiting job.
            return;
        };
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        if j.phase != Phase::Waiting || j.prior_fluxion_id.is_some() {
            return;
        }
        j.prior_fluxion_id = Some(fid);
        j.restore_due = prior.r.is_some();
        self.restores_due = true;
        j.r = prior.r.map(Box::new);
        j.released = prior.released;
        j.queue_started = prior.started;
        j.recovering = true;
        let state = match prior.app_id {
            Some(app_id) => {
                j.app_id = Some(app_id);
                if prior.released {
                    out.push(Action::ResumeOutput {
                        id,
                        container: j.container.clone(),
                        app_id,
                        started: prior.started,
                    });
                }
                j.phase = if prior.released {
                    Phase::Running
                } else {
                    Phase::Submitted
                };
                self.by_app.insert((j.container.clone(), app_id), id);
                format!("{} job {app_id}", j.container)
            }
            None => {
                // The submit may or may not have reached the container: its
                // journal backlog tells (AppSubmitted, or AppBacklogDone).
                j.phase = Phase::Submitting;
                j.unconfirmed = Some(Unconfirmed {
                    since: prior.dispatched_at.unwrap_or(0.0),
                    step: ConfirmStep::Backlog,
                });
                format!("{} submit unconfirmed", j.container)
            }
        };
        let note = if j.r.is_some() {
            ""
        } else {
            " (no R on record: its cores cannot be restored in fluxion)"
        };
        out.push(Action::Log {
            id: Some(id),
            text: format!("resumed: fluxion id {fid}, {state}{note}"),
        });
    }

    /// Ask Fluxion to take back every recovered allocation not restored yet.
    fn restore_due(&mut self, out: &mut Vec<Action>) {
        // Runs before every pass: scan the jobs only when a recovery or a
        // Fluxion reset left some allocation to restore.
        if !std::mem::take(&mut self.restores_due) {
            return;
        }
        let mut left = false;
        for j in self.jobs.values_mut() {
            if j.recovering && j.restore_due {
                left = true;
            }
            // A recovered job's application state must be known first: if
            // its application job is no longer active, its cores are free
            // and may already be someone else's.
            if j.recovering || !std::mem::take(&mut j.restore_due) {
                continue;
            }
            if let (Some(fluxion_id), Some(r)) = (j.prior_fluxion_id, &j.r) {
                out.push(Action::Restore {
                    id: j.id,
                    fluxion_id,
                    r: Rv1::clone(r),
                });
            }
        }
        self.restores_due = left;
    }

    fn on_restored(
        &mut self,
        id: JobId,
        fluxion_id: i64,
        result: Result<(), FluxionError>,
        out: &mut Vec<Action>,
    ) {
        let j = self.jobs.get_mut(&id);
        match result {
            Ok(()) => {
                self.stats.granted += 1;
                match j {
                    Some(j) if !j.app_clean && j.phase != Phase::Done => {
                        j.fluxion_id = Some(fluxion_id);
                    }
                    // It ended while Fluxion was restoring it.
                    _ => self.free(Some(fluxion_id), out),
                }
            }
            Err(e) => out.push(Action::Log {
                id: Some(id),
                text: format!(
                    "fluxion did not restore allocation {fluxion_id}: {e}; matches that overlap it are refused until the job ends"
                ),
            }),
        }
    }

    /// A container's journal backlog is in: recovered jobs whose submit was
    /// never confirmed start over; forwarded ones whose application job was
    /// not in the backlog ended while pancake was away.
    fn on_app_backlog_done(&mut self, container: &str, out: &mut Vec<Action>) {
        self.restores_due = true;
        let lost: Vec<(JobId, bool)> = self
            .jobs
            .values()
            .filter(|j| j.container == container && j.lost.is_some())
            .map(|j| (j.id, j.app_seen))
            .collect();
        for (id, seen) in lost {
            if seen {
                // Back, and the job is still there: it ends normally.
                if let Some(j) = self.jobs.get_mut(&id) {
                    j.lost = None;
                }
            } else {
                self.release_lost(
                    id,
                    &format!("container {container} is back without it"),
                    out,
                );
            }
        }
        let ids: Vec<JobId> = self
            .jobs
            .values()
            .filter(|j| j.recovering && j.container == container)
            .map(|j| j.id)
            .collect();
        for id in ids {
            let Some(j) = self.jobs.get_mut(&id) else {
                continue;
            };
            j.recovering = false;
            out.push(Action::Log {
                id: Some(id),
                text: format!(
                    "{container} backlog: application job {} {}",
                    j.app_id.map_or("unconfirmed".into(), |a| a.to_string()),
                    if j.app_seen { "active" } else { "not active" }
                ),
            });
            match j.app_id {
                None => {
                    // Not in the backlog, but the submit may still be in the
                    // container's job-ingest: hold the cores (restore them)
                    // and give it SUBMIT_GRACE to show up live.
                    let since = j.unconfirmed.map_or(0.0, |u| u.since);
                    j.unconfirmed = Some(Unconfirmed {
                        since,
                        step: ConfirmStep::Live(self.now + SUBMIT_GRACE),
                    });
                    out.push(Action::Wake {
                        after: SUBMIT_GRACE,
                    });
                }
                Some(app_id) if !j.app_seen => {
                    // Not active: it is clean, its cores free; learn how it
                    // ended from its eventlog.
                    j.restore_due = false;
                    out.push(Action::AppLookup {
                        id,
                        container: container.to_string(),
                        app_id,
                    })
                }
                Some(app_id) if j.queue_ended && !j.app_finished && !j.app_clean => {
                    out.push(Action::CancelApp {
                        container: container.to_string(),
                        app_id,
                        note: "queue job ended".into(),
                    })
                }
                Some(_) => {}
            }
        }
    }

    /// Fluxion was loaded again and holds nothing: every allocation still in
    /// use goes back under its id before anything else is matched (a
    /// reservation of the last pass is simply gone).
    fn on_fluxion_reset(&mut self, out: &mut Vec<Action>) {
        self.reinit = false;
        self.restores_due = true;
        self.dirty = true;
        self.reservation = None;
        for j in self.jobs.values_mut() {
            if let Some(fid) = j.fluxion_id.take() {
                j.prior_fluxion_id = Some(fid);
                j.restore_due = j.r.is_some();
                // Restored counts it again; its old grant will not be freed.
                self.stats.freed += 1;
            }
        }
        out.push(Action::Log {
            id: None,
            text: "fluxion holds the graph again".into(),
        });
    }

    /// Lost brokers whose grace time passed, and recovered jobs whose
    /// earlier submit did not show up live in time: search the container's
    /// ended jobs for it.
    fn on_tick(&mut self, out: &mut Vec<Action>) {
        let now = self.now;
        let expired: Vec<JobId> = self
            .jobs
            .values()
            .filter(|j| matches!(j.lost, Some(Some(t)) if t <= now))
            .map(|j| j.id)
            .collect();
        for id in expired {
            self.release_lost(id, "its lost broker's grace time passed", out);
        }
        for j in self.jobs.values_mut() {
            let Some(u) = j.unconfirmed.as_mut() else {
                continue;
            };
            if j.app_id.is_some() || !matches!(u.step, ConfirmStep::Live(t) if t <= now) {
                continue;
            }
            u.step = ConfirmStep::Search;
            out.push(Action::FindApp {
                id: j.id,
                container: j.container.clone(),
                since: u.since,
            });
        }
    }

    /// The search for a recovered job's earlier submit is over: adopt the
    /// application job it found, or match the job again if there is none.
    fn on_app_found(
        &mut self,
        id: JobId,
        container: String,
        result: Result<Option<JobId>, String>,
        out: &mut Vec<Action>,
    ) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        if j.container != container
            || j.app_id.is_some()
            || !j.unconfirmed.is_some_and(|u| u.step == ConfirmStep::Search)
        {
            return; // confirmed meanwhile (live), or no longer ours
        }
        match result {
            Err(e) => {
                // Not knowing, matching again could run it twice: hold the
                // cores and ask again later.
                if let Some(u) = j.unconfirmed.as_mut() {
                    u.step = ConfirmStep::Live(self.now + SUBMIT_GRACE);
                }
                out.push(Action::Log {
                    id: Some(id),
                    text: format!(
                        "cannot search {container} for the earlier submit (retrying in {SUBMIT_GRACE} s): {e}"
                    ),
                });
                out.push(Action::Wake {
                    after: SUBMIT_GRACE,
                });
            }
            Ok(Some(app_id)) => {
                // It went through (and most likely ended while pancake was
                // away): its eventlog, followed to clean, tells how, and its
                // cores are free once it is clean.
                j.unconfirmed = None;
                j.recovering = false;
                j.app_id = Some(app_id);
                j.phase = Phase::Submitted;
                j.restore_due = false;
                self.stats.forwarded += 1;
                out.push(Action::Log {
                    id: Some(id),
                    text: format!("the earlier submit reached {container} as job {app_id}"),
                });
                out.push(Action::Memo {
                    id,
                    memo: json!({ "app_id": app_id }),
                });
                out.push(Action::AppLookup {
                    id,
                    container: container.clone(),
                    app_id,
                });
                self.by_app.insert((container, app_id), id);
            }
            Ok(None) => {
                j.unconfirmed = None;
                let fid = j.fluxion_id.take();
                j.prior_fluxion_id = None;
                j.restore_due = false;
                j.r = None;
                j.phase = if j.queue_ended {
                    Phase::Done
                } else {
                    Phase::Waiting
                };
                out.push(Action::Log {
                    id: Some(id),
                    text: format!(
                        "the earlier submit never reached {container}: the job is matched again"
                    ),
                });
                self.dirty = true;
                self.free(fid, out);
                self.reap(id);
            }
        }
    }

    /// An application job pancake forwarded whose queue job is not tracked:
    /// the queue job ended while a reload or restart kept pancake away, but
    /// the application job still holds its cores. Hold them in Fluxion until
    /// it is clean, and cancel it unless it already finished (at the end of
    /// its container's backlog, which says whether it did).
    fn adopt(
        &mut self,
        container: String,
        app_id: JobId,
        queue_id: JobId,
        fluxion_id: Option<i64>,
        r: Option<Rv1>,
        out: &mut Vec<Action>,
    ) {
        let Some(fid) = fluxion_id else { return };
        out.push(Action::Log {
            id: Some(queue_id),
            text: format!(
                "{container} job {app_id} outlived its queue job: its cores stay held until it is clean"
            ),
        });
        self.by_app.insert((container.clone(), app_id), queue_id);
        self.restores_due = true;
        self.jobs.insert(
            queue_id,
            Job {
                id: queue_id,
                container,
                request: Request::slots(1, 1, 0),
                priority: 0,
                t_submit: 0.0,
                urgency: 0,
                phase: Phase::Draining,
                fluxion_id: None,
                app_id: Some(app_id),
                restore_due: r.is_some(),
                r: r.map(Box::new),
                jobspec: "null".into(),
                queue_alloc: false,
                queue_started: false,
                pending_finish: None,
                app_exception: None,
                queue_ended: true,
                app_clean: false,
                app_finished: false,
                queue_held: false,
                release_pending: false,
                released: true,
                recovering: true,
                app_seen: true,
                prior_fluxion_id: Some(fid),
                unconfirmed: None,
                lost: None,
            },
        );
    }

    /// A live job (other than `id`) whose cores or GPUs `r` would share.
    fn holder_of(&self, r: &Rv1, id: JobId) -> Option<JobId> {
        self.jobs
            .values()
            .filter(|j| {
                j.id != id
                    && !j.app_clean
                    && matches!(
                        j.phase,
                        Phase::Submitting | Phase::Submitted | Phase::Running | Phase::Draining
                    )
            })
            .find(|j| {
                j.r.as_ref()
                    .is_some_and(|held| held.overlaps(r).unwrap_or(true))
            })
            .map(|j| j.id)
    }

    fn free(&mut self, fluxion_id: Option<i64>, out: &mut Vec<Action>) {
        if let Some(fid) = fluxion_id {
            self.stats.freed += 1;
            out.push(Action::Cancel { fluxion_id: fid });
            self.dirty = true;
        }
    }

    fn on_queue_exception(&mut self, id: JobId, kind: &str, note: &str, out: &mut Vec<Action>) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        if j.queue_ended {
            return;
        }
        j.queue_ended = true;
        match j.phase {
            Phase::Waiting => {
                // Never matched: nothing to free.
                j.phase = Phase::Done;
            }
            Phase::Matching | Phase::Submitting => {
                // The answer in flight decides what to undo.
            }
            Phase::Submitted | Phase::Running => {
                if let Some(app_id) = j.app_id
                    && !j.app_clean
                    && !j.app_finished
                {
                    out.push(Action::CancelApp {
                        container: j.container.clone(),
                        app_id,
                        note: format!("queue job {kind}: {note}"),
                    });
                }
                j.phase = Phase::Draining;
            }
            Phase::Draining | Phase::Done => {}
        }
        self.reap(id);
    }

    fn on_queue_inactive(&mut self, id: JobId, out: &mut Vec<Action>) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        j.queue_ended = true;
        if j.phase == Phase::Waiting {
            j.phase = Phase::Done;
        }
        if matches!(j.phase, Phase::Submitted | Phase::Running) && !j.app_clean && !j.app_finished {
            if let Some(app_id) = j.app_id {
                out.push(Action::CancelApp {
                    container: j.container.clone(),
                    app_id,
                    note: "queue job ended".into(),
                });
            }
            j.phase = Phase::Draining;
        }
        self.reap(id);
    }

    /// Forget a job once both sides are over.
    fn reap(&mut self, id: JobId) {
        let done = self.jobs.get(&id).is_some_and(|j| {
            j.phase == Phase::Done
                || (j.queue_ended
                    && (j.app_clean || j.app_id.is_none())
                    && j.phase != Phase::Matching
                    && j.phase != Phase::Submitting)
        });
        if done
            && let Some(j) = self.jobs.remove(&id)
            && let Some(app) = j.app_id
        {
            self.by_app.remove(&(j.container, app));
        }
    }

    fn on_matched(
        &mut self,
        id: JobId,
        result: Result<Granted, FluxionError>,
        out: &mut Vec<Action>,
    ) {
        self.busy = false;
        let conflict = match &result {
            Ok(g) if !g.reserved => self.holder_of(&g.r, id),
            _ => None,
        };
        let bad_grant = match (&result, &self.graph, self.jobs.get(&id)) {
            (Ok(g), Some(graph), Some(j)) if !g.reserved => {
                Some(check_grant(&g.r, &j.request, graph))
            }
            _ => None,
        };
        let Some(j) = self.jobs.get_mut(&id) else {
            // The job vanished while matching: give back what we got.
            if let Ok(g) = result {
                self.free(Some(g.fluxion_id), out);
            }
            return;
        };
        match result {
            Ok(g) if g.reserved => {
                // A reservation must never be dispatched; it only holds the
                // head job's place until the next pass.
                j.phase = Phase::Waiting;
                self.reservation = Some(g.fluxion_id);
                self.tried.insert(id);
                out.push(Action::Log {
                    id: Some(id),
                    text: format!("reserved for later (fluxion id {})", g.fluxion_id),
                });
            }
            Ok(g) => {
                self.stats.granted += 1;
                if j.queue_ended {
                    j.phase = Phase::Done;
                    let fid = g.fluxion_id;
                    self.free(Some(fid), out);
                    self.reap(id);
                    return;
                }
                if let Some(holder) = conflict {
                    // Fluxion handed out cores a live job still holds: it lost
                    // that allocation (a restart, or a restore it refused).
                    // Never dispatch it; the job waits for the holder to end.
                    j.phase = Phase::Waiting;
                    self.tried.insert(id);
                    out.push(Action::Log {
                        id: Some(id),
                        text: format!(
                            "fluxion granted cores that job {} still holds (fluxion id {}): not dispatched, the job waits",
                            holder, g.fluxion_id
                        ),
                    });
                    // Not free(): that starts a new pass, which would match
                    // the same cores again at once.
                    self.stats.freed += 1;
                    out.push(Action::Cancel {
                        fluxion_id: g.fluxion_id,
                    });
                    return;
                }
                if self.draining {
                    // A match answered after the drain began: give it back;
                    // the job waits for the restarted instance.
                    j.phase = Phase::Waiting;
                    self.stats.freed += 1;
                    out.push(Action::Cancel {
                        fluxion_id: g.fluxion_id,
                    });
                    return;
                }
                if let Some(Err(why)) = bad_grant {
                    // Never forward what Fluxion got wrong.
                    j.phase = Phase::Done;
                    j.queue_ended = true;
                    self.stats.failed += 1;
                    out.push(Action::Raise {
                        id,
                        kind: "pancake".into(),
                        note: format!(
                            "container {}: fluxion returned an allocation that does not fit the request: {why}",
                            j.container
                        ),
                        wait_status: None,
                    });
                    self.free(Some(g.fluxion_id), out);
                    self.reap(id);
                    return;
                }
                j.fluxion_id = Some(g.fluxion_id);
                j.phase = Phase::Submitting;
                let js = app_jobspec(
                    &serde_json::from_str(&j.jobspec).unwrap_or(Value::Null),
                    &g.r,
                    id,
                    g.fluxion_id,
                );
                // The R goes on the record too: a reloaded pancake restores
                // the allocation from it before matching anything else.
                out.push(Action::Memo {
                    id,
                    memo: json!({ "container": j.container, "fluxion_id": g.fluxion_id, "R": g.r }),
                });
                j.r = Some(Box::new(g.r));
                out.push(Action::Submit {
                    id,
                    container: j.container.clone(),
                    jobspec: js.to_string(),
                });
            }
            Err(FluxionError::Busy(_)) | Err(FluxionError::Ambiguous(_)) => {
                j.phase = Phase::Waiting;
                self.tried.insert(id);
            }
            Err(FluxionError::NotInitialized) => {
                // The service restarted and lost its graph (and every
                // allocation): load it again, then restore what is live.
                j.phase = Phase::Waiting;
                self.tried.insert(id);
                if !std::mem::replace(&mut self.reinit, true) {
                    out.push(Action::Log {
                        id: None,
                        text: "fluxion lost its graph (restarted?): loading it again and restoring every live allocation".into(),
                    });
                    out.push(Action::Reinit);
                }
            }
            Err(FluxionError::Unavailable(e)) => {
                // Nothing lost: the job waits, the next event retries.
                j.phase = Phase::Waiting;
                self.tried.insert(id);
                out.push(Action::Log {
                    id: Some(id),
                    text: format!("fluxion unavailable, job waits: {e}"),
                });
            }
            Err(e) => {
                let kind = if matches!(e, FluxionError::Unsatisfiable(_)) {
                    "alloc"
                } else {
                    "pancake"
                };
                j.phase = Phase::Done;
                j.queue_ended = true;
                self.stats.failed += 1;
                out.push(Action::Raise {
                    id,
                    kind: kind.into(),
                    note: format!("container {}: {e}", j.container),
                    wait_status: None,
                });
                self.reap(id);
            }
        }
        // No new pass: this pass goes on with the next untried job. (A new
        // pass here would retry busy jobs forever.)
    }

    fn on_submit_done(&mut self, id: JobId, result: Result<JobId, String>, out: &mut Vec<Action>) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        match result {
            Ok(app_id) => {
                self.stats.forwarded += 1;
                j.app_id = Some(app_id);
                self.by_app.insert((j.container.clone(), app_id), id);
                out.push(Action::Memo {
                    id,
                    memo: json!({ "app_id": app_id }),
                });
                if j.phase != Phase::Submitting {
                    // The application journal got there first (AppSubmitted,
                    // then maybe start or more): nothing to change.
                    out.push(Action::Log {
                        id: Some(id),
                        text: format!("forwarded to {} as job {app_id}", j.container),
                    });
                } else if j.queue_ended && !j.app_finished && !j.app_clean {
                    // Cancelled while the submit was in flight.
                    out.push(Action::CancelApp {
                        container: j.container.clone(),
                        app_id,
                        note: "queue job ended before forwarding completed".into(),
                    });
                    j.phase = Phase::Draining;
                } else if j.queue_ended {
                    j.phase = Phase::Draining;
                } else {
                    j.phase = Phase::Submitted;
                    out.push(Action::Log {
                        id: Some(id),
                        text: format!("forwarded to {} as job {app_id}", j.container),
                    });
                }
            }
            Err(reason) => {
                let fid = j.fluxion_id.take();
                j.phase = Phase::Done;
                let raise = !j.queue_ended;
                j.queue_ended = true;
                let container = j.container.clone();
                self.stats.failed += 1;
                if raise {
                    out.push(Action::Raise {
                        id,
                        kind: "pancake".into(),
                        note: format!("container {container} refused the job: {reason}"),
                        wait_status: None,
                    });
                }
                self.free(fid, out);
                self.reap(id);
            }
        }
    }

    fn release(j: &mut Job, out: &mut Vec<Action>) {
        if std::mem::replace(&mut j.released, true) {
            return;
        }
        if let Some(r) = &j.r {
            let mut qr = r.clone();
            qr.execution.expiration = 0.0;
            out.push(Action::Release { id: j.id, r: *qr });
        }
    }

    fn mirror_finish(j: &mut Job, status: i32, out: &mut Vec<Action>) {
        match j.app_exception.take() {
            Some(exc) => out.push(Action::Raise {
                id: j.id,
                kind: exc.0,
                note: format!("container {}: {}", j.container, exc.1),
                wait_status: Some(status),
            }),
            None => out.push(Action::OverrideFinish { id: j.id, status }),
        }
    }

    fn on_app(&mut self, container: &str, app_id: JobId, ev: AppEvent, out: &mut Vec<Action>) {
        let Some(&id) = self.by_app.get(&(container.to_string(), app_id)) else {
            return;
        };
        let draining = self.draining;
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        j.app_seen = true;
        match ev {
            AppEvent::Start if draining => {
                // Not released now (the queue is stopping): the module loaded
                // after the restart finds the queue job still held and the
                // application job running, and releases it then.
                if matches!(j.phase, Phase::Submitting | Phase::Submitted) && !j.queue_ended {
                    j.phase = Phase::Running;
                }
            }
            AppEvent::Start => {
                if matches!(j.phase, Phase::Submitting | Phase::Submitted) && !j.queue_ended {
                    j.phase = Phase::Running;
                    // Releasing before the queue job holds the dependency
                    // would remove a dependency that is not there yet.
                    if j.queue_held {
                        Self::release(j, out);
                    } else {
                        j.release_pending = true;
                    }
                }
            }
            AppEvent::Finish { status } => {
                j.app_finished = true;
                if j.queue_ended {
                    return;
                }
                if j.queue_started {
                    Self::mirror_finish(j, status, out);
                } else {
                    j.pending_finish = Some(status);
                }
                out.push(Action::Log {
                    id: Some(id),
                    text: format!(
                        "{container} job {app_id} finished ({})",
                        describe_status(status)
                    ),
                });
            }
            AppEvent::Exception {
                kind,
                severity,
                note,
            } => {
                if severity != 0 || j.queue_ended {
                    return;
                }
                if j.phase == Phase::Running {
                    // Mirrored with the finish status, which follows.
                    j.app_exception = Some(Box::new((kind, note)));
                } else {
                    // Before start: there will be no finish.
                    j.app_finished = true;
                    j.queue_ended = true;
                    out.push(Action::Raise {
                        id,
                        kind,
                        note: format!("container {container}: {note}"),
                        wait_status: None,
                    });
                    j.phase = Phase::Draining;
                }
            }
            AppEvent::Clean => {
                j.app_clean = true;
                self.stats.completed += 1;
                // A finish not mirrored yet waits for the queue job's start
                // (QueueStart), even when the application job is already clean.
                let fid = j.fluxion_id.take();
                if j.queue_ended {
                    j.phase = Phase::Done;
                } else {
                    j.phase = Phase::Draining;
                }
                // Its cores are free even when Fluxion never held them (a
                // recovered job it could not restore): jobs refused for
                // overlapping them may go now.
                self.dirty = true;
                self.free(fid, out);
                self.reap(id);
            }
        }
    }

    fn on_container_lost(&mut self, container: &str, out: &mut Vec<Action>) {
        self.containers_up.remove(container);
        let deadline = self.lost_grace.map(|g| self.now + g);
        let ids: Vec<JobId> = self
            .jobs
            .values()
            .filter(|j| {
                j.container == container
                    && !j.app_clean
                    && j.lost.is_none()
                    && matches!(
                        j.phase,
                        Phase::Submitted | Phase::Running | Phase::Submitting | Phase::Draining
                    )
            })
            .map(|j| j.id)
            .collect();
        for id in ids {
            let Some(j) = self.jobs.get_mut(&id) else {
                continue;
            };
            if !j.queue_ended {
                j.queue_ended = true;
                out.push(Action::Raise {
                    id,
                    kind: "pancake".into(),
                    note: format!("container {container}: its broker was lost"),
                    wait_status: None,
                });
            }
            // The cores stay held in Fluxion: the lost broker's job shells
            // may still run them (flux-core leaves them behind).
            j.phase = Phase::Draining;
            j.lost = Some(deadline);
            j.app_seen = false;
            let until = match self.lost_grace {
                Some(g) => format!("until the broker returns without it, or {g} s"),
                None => "until the broker returns without it".into(),
            };
            out.push(Action::Log {
                id: Some(id),
                text: format!(
                    "container {container} lost: its cores (fluxion allocation {:?}) stay held {until}",
                    j.fluxion_id
                ),
            });
        }
        if let Some(g) = self.lost_grace {
            out.push(Action::Wake { after: g });
        }
    }

    /// Give back the cores of lost job `id` (its broker came back without
    /// it, or the grace time passed).
    fn release_lost(&mut self, id: JobId, why: &str, out: &mut Vec<Action>) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        j.lost = None;
        j.app_clean = true;
        j.phase = Phase::Done;
        let fid = j.fluxion_id.take();
        out.push(Action::Log {
            id: Some(id),
            text: format!("{why}: its cores are free again"),
        });
        self.dirty = true;
        self.free(fid, out);
        self.reap(id);
    }

    /// Where a job stands in the queue (smaller first).
    fn queue_key(j: &Job) -> (std::cmp::Reverse<i64>, f64, JobId) {
        (std::cmp::Reverse(j.priority), j.t_submit, j.id)
    }

    /// Put newly submitted job `id` into the current pass, in queue order
    /// among the jobs not visited yet.
    fn join_pass(&mut self, id: JobId) {
        let Some(key) = self.jobs.get(&id).map(Self::queue_key) else {
            return;
        };
        let after = |other: &JobId| {
            self.jobs.get(other).map(Self::queue_key).is_some_and(|k| {
                k.0.cmp(&key.0)
                    .then(k.1.total_cmp(&key.1))
                    .then(k.2.cmp(&key.2))
                    .is_gt()
            })
        };
        let at = (self.cursor..self.pass.len())
            .find(|&i| after(&self.pass[i]))
            .unwrap_or(self.pass.len());
        self.pass.insert(at, id);
    }

    /// The waiting jobs in queue order: priority, then submit time, then id.
    fn queue_order(&self) -> Vec<JobId> {
        let mut v: Vec<&Job> = self
            .jobs
            .values()
            .filter(|j| j.phase == Phase::Waiting && !j.queue_ended)
            .collect();
        v.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(a.t_submit.total_cmp(&b.t_submit))
                .then(a.id.cmp(&b.id))
        });
        v.into_iter().map(|j| j.id).collect()
    }

    /// Start the next Fluxion call if none is in flight.
    fn schedule(&mut self, out: &mut Vec<Action>) {
        if self.capacity.is_some() {
            self.restore_due(out);
        }
        if self.busy || self.is_recovering() || self.reinit || self.draining {
            return;
        }
        if self.dirty {
            // A new pass: everything may be retried; drop last pass's
            // reservation. The queue is sorted once per pass, not once per
            // match: with thousands waiting under EASY a pass tries them
            // all, one Fluxion answer at a time.
            self.dirty = false;
            self.tried.clear();
            if let Some(fid) = self.reservation.take() {
                out.push(Action::Cancel { fluxion_id: fid });
            }
            self.pass = self.queue_order();
            self.cursor = 0;
            self.reserve_used = false;
            self.arrivals.clear();
        }
        for id in std::mem::take(&mut self.arrivals) {
            self.join_pass(id);
        }
        while let Some(&id) = self.pass.get(self.cursor) {
            if self.tried.contains(&id) {
                match self.policy {
                    // FCFS: a job that did not fit blocks everything after it.
                    QueuePolicy::Fcfs => return,
                    // EASY: it holds the reservation (or could not get one);
                    // later jobs may only fill in around it.
                    QueuePolicy::Easy => {
                        self.reserve_used = true;
                        self.cursor += 1;
                        continue;
                    }
                }
            }
            let Some(j) = self.jobs.get(&id) else {
                self.cursor += 1;
                continue;
            };
            if j.phase != Phase::Waiting
                || j.queue_ended
                || j.urgency == 0
                || !self.containers_up.contains(&j.container)
            {
                self.cursor += 1;
                continue;
            }
            // The cursor stays on this job: its answer either moves it on
            // (matched) or marks it tried.
            let reserve = self.policy == QueuePolicy::Easy
                && !self.reserve_used
                && self.reservation.is_none();
            let jobspec = j.jobspec.to_string();
            if let Some(j) = self.jobs.get_mut(&id) {
                j.phase = Phase::Matching;
            }
            self.busy = true;
            self.stats.matches += 1;
            out.push(Action::Match {
                id,
                jobspec,
                reserve,
            });
            return;
        }
    }

    /// Per container: (jobs waiting, jobs running or forwarded).
    pub fn counts(&self) -> BTreeMap<String, (u64, u64)> {
        let mut m: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for j in self.jobs.values() {
            let e = m.entry(j.container.clone()).or_default();
            match j.phase {
                Phase::Waiting | Phase::Matching => e.0 += 1,
                Phase::Submitting | Phase::Submitted | Phase::Running | Phase::Draining => e.1 += 1,
                Phase::Done => {}
            }
        }
        m
    }
}
