//! The dispatcher: pancake as the queue broker's scheduler, as a state
//! machine.
//!
//! The queue broker's job-manager decides *when* a job may start (its
//! dependencies, begin-time, urgency, queue state and priority order): it
//! offers the job to its scheduler with an RFC 27 `sched.alloc` request.
//! The dispatcher is that scheduler's brain and decides *where*: it asks
//! Fluxion for an exact allocation, then either answers the request at once
//! (a job without a container runs on the queue broker itself) or forwards
//! the job to its container's broker and answers when the application job
//! starts, so the queue job runs exactly while its application job does.
//!
//! It is driven by [`Event`]s (what the module saw in the queue broker, the
//! application brokers and Fluxion) and answers with [`Action`]s (what the
//! module must do). It performs no I/O and reads no clock (times come in
//! with the events), so every path — including the failure paths — is
//! tested here without a broker.
//!
//! The concerns live in submodules: [`grant`] (what an allocation must
//! satisfy, the jobspecs built around it), `queue` (the alloc protocol and
//! the scheduling passes), `mirror` (application jobs mirrored on their
//! queue jobs, lost containers) and `recovery` (what a reloaded module
//! takes up from an earlier one).
//!
//! The invariants it keeps:
//! * at most one Fluxion request is in flight (the public service is not safe
//!   to call concurrently, and a scheduling pass must see its own results);
//! * every Fluxion allocation is cancelled exactly once, and only after both
//!   the application job that used it is `clean` (or never existed) and the
//!   queue job released its copy of the R (`sched.free`);
//! * a queue job ends with the state and exit status of its application job;
//! * a pass asks Fluxion about at most `queue-depth` jobs, and a job whose
//!   shape already failed to fit in this pass is not asked again.

pub mod grant;
mod mirror;
pub mod queue;
mod recovery;

use std::collections::{BTreeMap, BTreeSet};

use fluxion::{FluxionError, Request, Rv1};
use serde_json::Value;

pub use grant::{
    Capacity, RESERVED_ATTRIBUTES, app_jobspec, check_grant, fluxion_jobspec, union_of,
    unsupported_constraints,
};
pub use queue::{QueuePolicy, SchedParams};

/// A Flux job id.
pub type JobId = u64;

/// A successful Fluxion match, already turned into the job's R.
#[derive(Debug, Clone, PartialEq)]
pub struct Granted {
    /// Fluxion's id for the allocation.
    pub fluxion_id: i64,
    /// The R for the job (with `starttime`/`expiration`).
    pub r: Rv1,
    /// True when this is a reservation for later, not an allocation now.
    pub reserved: bool,
    /// For a reservation, when it starts (seconds since the epoch).
    pub at: f64,
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
    /// The R of that allocation (memo `R` of a container job; a job
    /// without a container: its own R, once allocated).
    pub r: Option<Rv1>,
    /// The application job it was forwarded as (memo `app_id`).
    pub app_id: Option<JobId>,
    /// When its `fluxion_id` memo was written (the journal's timestamp): its
    /// application job, if the submit got through, was submitted after.
    pub dispatched_at: Option<f64>,
    /// The queue job was allocated (its `alloc` event): it holds its R.
    pub allocated: bool,
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
    /// The job-manager offers a job (`sched.alloc`): its dependencies,
    /// begin-time, urgency and queue allow it to start now.
    Alloc {
        /// Queue job id.
        id: JobId,
        /// The redacted jobspec (JSON text, no environment).
        jobspec: String,
        /// Job priority (higher first).
        priority: i64,
        /// Submit time.
        t_submit: f64,
    },
    /// The job-manager withdraws its offer (`sched.cancel`: the job was
    /// cancelled, held, its queue stopped, or it went back to PRIORITY).
    AllocCancel {
        /// Queue job id.
        id: JobId,
    },
    /// The queue job gave its resources back (`sched.free`).
    Free {
        /// Queue job id.
        id: JobId,
        /// The last free of the job (a free may be partial).
        last: bool,
    },
    /// A waiting job's priority changed (`sched.prioritize`).
    Priority {
        /// Queue job id.
        id: JobId,
        /// New priority.
        priority: i64,
    },
    /// A job an earlier pancake matched, found in the queue journal's
    /// backlog after a reload or restart, with what it did with it.
    Recovered {
        /// Queue job id.
        id: JobId,
        /// The redacted jobspec (JSON text).
        jobspec: String,
        /// Its memo and queue-side history.
        prior: Prior,
    },
    /// The queue journal's backlog is in, and so is the job-manager's
    /// `sched-hello`: the queue jobs that hold resources now, with their R.
    /// Scheduling may begin (once the containers' backlogs are in too).
    QueueBacklogDone {
        /// Every queue job holding resources (from `sched-hello`).
        held: Vec<(JobId, Option<Rv1>)>,
    },
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
    /// submit, no answer) and keep mirroring what already runs. A module
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
    /// A fatal exception was raised on a queue job (e.g. `flux cancel`).
    QueueException {
        /// Queue job id.
        id: JobId,
        /// Exception type.
        kind: String,
        /// Note.
        note: String,
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
    /// Answer the job's `sched.alloc` with success: commit R to the job's
    /// KVS directory, then respond with it (and `annotations`, if any).
    AllocSuccess {
        /// Queue job id.
        id: JobId,
        /// The job's R.
        r: Rv1,
        /// Annotations to set (or clear, with nulls) with the answer.
        annotations: Option<Value>,
    },
    /// Answer the job's `sched.alloc` with a denial: the job-manager raises
    /// a fatal `alloc` exception with `note`.
    AllocDeny {
        /// Queue job id.
        id: JobId,
        /// Why.
        note: String,
    },
    /// Answer the job's `sched.alloc` with "cancelled" (after a
    /// `sched.cancel`): the job goes back to waiting in its queue.
    AllocCancel {
        /// Queue job id.
        id: JobId,
    },
    /// Annotate a waiting job (an `annotate` answer to its `sched.alloc`;
    /// `flux jobs -o '{annotations.sched.reason_pending}'` shows it).
    Annotate {
        /// Queue job id.
        id: JobId,
        /// The annotations (`{"sched": {...}}`; nulls clear keys).
        annotations: Value,
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
    /// Copy the output of a resumed, already allocated job again, after what
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
    /// The application job started: copy its output into the queue job.
    StartOutput {
        /// Queue job id.
        id: JobId,
        /// Container.
        container: String,
        /// Application job id.
        app_id: JobId,
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
    /// Waiting for resources (or its container is down).
    Waiting,
    /// A Match for it is in flight.
    Matching,
    /// Matched; the application submit is in flight.
    Submitting,
    /// Submitted; waiting for the application job to start.
    Submitted,
    /// Running: the application job started and the queue job mirrors it,
    /// or (without a container) the job runs on the queue broker.
    Running,
    /// The queue job is over; waiting for the application job's clean.
    Draining,
    /// Done with everything.
    Done,
}

/// Where the queue job's `sched.alloc` request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AllocState {
    /// None is held (not offered yet, withdrawn, or a recovered job whose
    /// offer has not come again yet).
    None,
    /// Held, not answered yet.
    Pending,
    /// Answered with success.
    Answered,
}

/// Why a waiting job waits, as last told to the job-manager
/// (`sched.reason_pending`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reason {
    /// Not enough free resources now.
    Insufficient(Option<String>),
    /// A job ahead of it in its queue does not fit (fcfs).
    Behind,
    /// Its container's broker is not connected.
    ContainerDown(String),
    /// It holds a reservation starting at this time.
    Reserved(f64),
}

impl Reason {
    /// The `sched` annotations for this reason.
    fn annotations(&self) -> Value {
        use serde_json::json;
        let (reason, estimate) = match self {
            Reason::Insufficient(None) => ("insufficient resources".to_string(), None),
            Reason::Insufficient(Some(why)) => (format!("insufficient resources ({why})"), None),
            Reason::Behind => (
                "waiting behind a higher-priority job (queue-policy=fcfs)".to_string(),
                None,
            ),
            Reason::ContainerDown(c) => (format!("container {c} is not connected"), None),
            Reason::Reserved(at) => (
                "insufficient resources (reserved for later)".to_string(),
                Some(*at),
            ),
        };
        json!({ "sched": { "reason_pending": reason, "t_estimate": estimate } })
    }
}

/// One queue job pancake schedules (with or without a container).
#[derive(Debug, Clone)]
pub struct Job {
    /// Queue job id.
    pub id: JobId,
    /// Target container; empty for a job that runs on the queue broker.
    pub container: String,
    /// Its named queue (`attributes.system.queue`), if any.
    pub queue: Option<Box<str>>,
    /// What it asks for.
    pub request: Request,
    /// Priority (higher first).
    pub priority: i64,
    /// Submit time.
    pub t_submit: f64,
    /// Where it is.
    pub phase: Phase,
    /// Fluxion allocation, while held.
    pub fluxion_id: Option<i64>,
    /// Application job id, once submitted.
    pub app_id: Option<JobId>,
    /// The job's R (the application R of a container job).
    pub r: Option<Box<Rv1>>,
    /// The jobspec without its environment, as compact JSON text: what
    /// Fluxion matches, and what the application job is built from (the
    /// module adds the environment back from J when it submits). Kept as
    /// text, not a parsed tree, so a waiting job costs little memory.
    jobspec: Box<str>,
    /// The queue job's `sched.alloc` request.
    alloc: AllocState,
    /// The job-manager asked to withdraw the pending request.
    cancel_asked: bool,
    /// The queue job holds its copy of the R (answered, or found holding it
    /// at recovery) until `sched.free`.
    queue_r: bool,
    /// The application job started while no request was held: answer the
    /// next one at once.
    start_due: bool,
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
    unconfirmed: Option<recovery::Unconfirmed>,
    /// Its container's broker was lost while the application job held
    /// cores: they stay held until the broker is back without it (or the
    /// lost-grace time, if set, passes: then, the deadline).
    lost: Option<Option<f64>>,
    /// What its annotations last said (waiting jobs).
    reason: Option<Reason>,
}

impl Job {
    fn new(id: JobId, container: String, request: Request, jobspec: Box<str>) -> Job {
        Job {
            id,
            container,
            queue: None,
            request,
            priority: 0,
            t_submit: 0.0,
            phase: Phase::Waiting,
            fluxion_id: None,
            app_id: None,
            r: None,
            jobspec,
            alloc: AllocState::None,
            cancel_asked: false,
            queue_r: false,
            start_due: false,
            queue_alloc: false,
            queue_started: false,
            pending_finish: None,
            app_exception: None,
            queue_ended: false,
            app_clean: false,
            app_finished: false,
            recovering: false,
            app_seen: false,
            prior_fluxion_id: None,
            restore_due: false,
            unconfirmed: None,
            lost: None,
            reason: None,
        }
    }

    /// A job for `request`, built from its (redacted) jobspec `value`: its
    /// container and named queue, and the jobspec Fluxion will match.
    fn from_jobspec(id: JobId, value: &Value, request: Request) -> Job {
        let container = request.container.clone().unwrap_or_default();
        let mut j = Job::new(
            id,
            container,
            request,
            fluxion_jobspec(value).into_boxed_str(),
        );
        j.queue = value
            .pointer("/attributes/system/queue")
            .and_then(Value::as_str)
            .map(Into::into);
        j
    }

    /// Running on the queue broker with `r` and Fluxion allocation `fid`
    /// still to be restored (a recovered job), its request answered.
    fn resume_running(&mut self, fid: i64, r: Rv1) {
        self.prior_fluxion_id = Some(fid);
        self.restore_due = true;
        self.r = Some(Box::new(r));
        self.phase = Phase::Running;
        self.alloc = AllocState::Answered;
        self.queue_r = true;
    }

    /// True for a job without a container: it runs on the queue broker.
    pub fn is_local(&self) -> bool {
        self.container.is_empty()
    }

    /// Where it runs, for messages: its container, or the queue broker.
    pub fn target(&self) -> String {
        if self.is_local() {
            "the queue broker".into()
        } else {
            format!("container {}", self.container)
        }
    }

    /// True once the queue job is RUN and its override start took effect.
    pub fn queue_running(&self) -> bool {
        self.queue_started
    }

    /// True once the queue job ended (exception or inactive).
    pub fn queue_over(&self) -> bool {
        self.queue_ended
    }

    /// Why it waits, as last told to the job-manager.
    pub fn reason_pending(&self) -> Option<String> {
        self.reason.as_ref().map(|r| {
            r.annotations()["sched"]["reason_pending"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
    }

    /// Where each side of the job has got to, for `pancake.status`.
    pub fn progress(&self) -> Progress {
        Progress {
            alloc_pending: self.alloc == AllocState::Pending,
            queue_r: self.queue_r,
            queue_alloc: self.queue_alloc,
            queue_started: self.queue_started,
            queue_ended: self.queue_ended,
            app_finished: self.app_finished,
            app_clean: self.app_clean,
            finish_pending: self.pending_finish.is_some(),
        }
    }

    /// The application side is over: its job is clean, or there never was
    /// one (never forwarded, or refused).
    fn app_done(&self) -> bool {
        self.app_clean || (self.app_id.is_none() && self.unconfirmed.is_none())
    }
}

/// The milestones both sides of a job have passed (see [`Job::progress`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    /// The job-manager's `sched.alloc` waits for an answer.
    pub alloc_pending: bool,
    /// The queue job holds its R (until `sched.free`).
    pub queue_r: bool,
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
    /// Jobs without a container started on the queue broker.
    pub local: u64,
    /// Jobs whose application side completed (any outcome).
    pub completed: u64,
    /// Jobs failed or denied by pancake itself (unsatisfiable, refused, lost).
    pub failed: u64,
    /// Scheduling passes started.
    pub passes: u64,
    /// Annotations sent (reason_pending changes).
    pub annotations: u64,
}

/// How long a recovered job's unconfirmed submit may take to show up in its
/// container's journal (it may still be in job-ingest) before pancake
/// decides it never got there.
pub const SUBMIT_GRACE: f64 = 10.0;

/// The dispatcher.
#[derive(Debug)]
pub struct Dispatcher {
    params: SchedParams,
    // Ordered maps: every pass and scan sees the jobs in the same order,
    // so a run (and a simulation seed) is reproducible.
    jobs: BTreeMap<JobId, Job>,
    by_app: BTreeMap<(String, JobId), JobId>,
    containers_up: BTreeSet<String>,
    /// A Fluxion call is in flight.
    busy: bool,
    /// The scheduling passes: waiting jobs in order and where the pass is.
    q: queue::Queue,
    /// Graph capacity, to deny never-satisfiable requests at once.
    capacity: Option<Capacity>,
    /// The R the graph was built from: every grant is checked against it
    /// and against its request before anything is submitted.
    graph: Option<Rv1>,
    /// The queue broker's own R: a job without a container runs there, so
    /// its grant must lie inside it (`None`: not read yet; such jobs wait).
    local_r: Option<Rv1>,
    /// Jobs without a container are refused (`local-jobs=refuse`).
    local_refused: bool,
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
    /// Fluxion ids for allocations found at recovery that no earlier
    /// pancake made (jobs another scheduler started): restored under these.
    next_foreign_id: i64,
    stats: Stats,
    now: f64,
}

/// The first Fluxion id given to an allocation pancake did not make (see
/// `next_foreign_id`): far above the ids Fluxion hands out after an `Init`.
const FOREIGN_ID_BASE: i64 = 1 << 40;

impl Dispatcher {
    /// A dispatcher with queue policy `policy` (queue-depth and
    /// reservation-depth at their defaults).
    pub fn new(policy: QueuePolicy) -> Self {
        Self::with_params(SchedParams::new(policy))
    }

    /// A dispatcher with scheduling parameters `params`.
    pub fn with_params(params: SchedParams) -> Self {
        Dispatcher {
            params,
            jobs: BTreeMap::new(),
            by_app: BTreeMap::new(),
            containers_up: BTreeSet::new(),
            busy: false,
            q: queue::Queue::default(),
            capacity: None,
            graph: None,
            local_r: None,
            local_refused: false,
            recovering: false,
            awaiting: BTreeSet::new(),
            held_app_events: Vec::new(),
            lost_grace: None,
            reinit: false,
            draining: false,
            restores_due: false,
            next_foreign_id: FOREIGN_ID_BASE,
            stats: Stats::default(),
            now: 0.0,
        }
    }

    /// Change the scheduling parameters (they take effect at the next pass).
    pub fn set_params(&mut self, params: SchedParams) {
        if params != self.params {
            self.params = params;
            self.q.dirty = true;
        }
    }

    /// The scheduling parameters.
    pub fn params(&self) -> SchedParams {
        self.params
    }

    /// The queue policy.
    pub fn policy(&self) -> QueuePolicy {
        self.params.policy
    }

    /// Set what the graph holds, so impossible requests are denied at once.
    /// It also means Fluxion is ready: recovered allocations are restored at
    /// the next event, before any match.
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

    /// The queue broker's own R: jobs without a container run inside it.
    pub fn set_local_resources(&mut self, r: Rv1) {
        self.local_r = Some(r);
        self.q.dirty = true;
    }

    /// Refuse (`true`) or run (`false`, the default) jobs without a container.
    pub fn set_local_refused(&mut self, refused: bool) {
        self.local_refused = refused;
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

    /// What pancake holds now: the R of every job holding a Fluxion
    /// allocation (or about to: matched, forwarded, running, draining),
    /// for `sched.resource-status`.
    pub fn allocated(&self) -> Rv1 {
        union_of(
            self.jobs
                .values()
                .filter(|j| {
                    j.fluxion_id.is_some() || j.prior_fluxion_id.is_some() || j.lost.is_some()
                })
                .filter_map(|j| j.r.as_deref()),
        )
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
            Event::Alloc {
                id,
                jobspec,
                priority,
                t_submit,
            } => self.on_alloc(id, &jobspec, priority, t_submit, out),
            Event::AllocCancel { id } => self.on_alloc_cancel(id, out),
            Event::Free { id, last } => self.on_free(id, last, out),
            Event::Priority { id, priority } => self.on_priority(id, priority),
            Event::Recovered { id, jobspec, prior } => self.on_recovered(id, &jobspec, prior, out),
            Event::QueueBacklogDone { held } => self.on_queue_backlog_done(held, out),
            Event::Tick => self.on_tick(out),
            Event::Drain => self.on_drain(out),
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
                    self.q.dirty = true;
                }
                self.on_app_backlog_done(&container, out)
            }
            Event::QueueException { id, kind, note } => {
                self.on_queue_exception(id, &kind, &note, out)
            }
            Event::QueueAlloc { id } => {
                if let Some(j) = self.jobs.get_mut(&id) {
                    j.queue_alloc = true;
                    // (A recovered job may have started already.)
                    if !j.is_local() && !j.queue_ended && !j.queue_started {
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
            } => self.on_app_submitted(container, app_id, queue_id, fluxion_id, r, out),
            Event::App {
                container,
                app_id,
                event,
            } => self.on_app(&container, app_id, event, out),
            Event::ContainerUp { container } => {
                self.containers_up.insert(container);
                self.q.dirty = true;
            }
            Event::ContainerLost { container } => {
                if self.awaiting.remove(&container) {
                    self.q.dirty = true;
                    self.unknown_app_state(&container);
                }
                self.on_container_lost(&container, out)
            }
        }
    }

    /// Give a Fluxion allocation back (once), and start a new pass: its
    /// resources may let waiting jobs go.
    fn free(&mut self, fluxion_id: Option<i64>, out: &mut Vec<Action>) {
        if let Some(fid) = fluxion_id {
            self.stats.freed += 1;
            out.push(Action::Cancel { fluxion_id: fid });
            self.q.dirty = true;
        }
    }

    /// Free job `id`'s allocation once both sides are done with it: the
    /// application job is clean (or never was) and the queue job released
    /// its copy of the R. Then forget the job if nothing else waits.
    fn settle(&mut self, id: JobId, out: &mut Vec<Action>) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        if j.lost.is_none() && !j.queue_r && j.app_done() {
            let fid = j.fluxion_id.take();
            if j.r.is_some() {
                // Its cores are free even when Fluxion never held them (a
                // recovered job it could not restore): jobs refused for
                // overlapping them may go now.
                self.q.dirty = true;
            }
            self.free(fid, out);
        }
        self.reap(id);
    }

    /// Forget a job once both sides are over.
    fn reap(&mut self, id: JobId) {
        let done = self.jobs.get(&id).is_some_and(|j| {
            j.queue_ended
                && j.app_done()
                && !j.queue_r
                && j.fluxion_id.is_none()
                && j.lost.is_none()
                && j.phase != Phase::Matching
                && j.phase != Phase::Submitting
        });
        if done && let Some(j) = self.jobs.remove(&id) {
            self.q.remove(&j);
            if let Some(app) = j.app_id {
                self.by_app.remove(&(j.container, app));
            }
        }
    }

    /// A live job (other than `id`) whose cores or GPUs `r` would share.
    fn holder_of(&self, r: &Rv1, id: JobId) -> Option<JobId> {
        self.jobs
            .values()
            .filter(|j| {
                j.id != id
                    && (j.queue_r
                        || (!j.app_clean
                            && matches!(
                                j.phase,
                                Phase::Submitting
                                    | Phase::Submitted
                                    | Phase::Running
                                    | Phase::Draining
                            )))
            })
            .find(|j| {
                j.r.as_ref()
                    .is_some_and(|held| held.overlaps(r).unwrap_or(true))
            })
            .map(|j| j.id)
    }

    /// Per container (`""` for the queue broker's own jobs): (jobs waiting,
    /// jobs running or forwarded).
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
