//! What flows in and out of the dispatcher: the [`Event`]s the module feeds
//! it, the [`Action`]s it answers with, and their payloads ([`Granted`],
//! [`AppEvent`], [`Prior`]).

use fluxion::{FluxionError, Rv1};
use serde_json::Value;

use super::JobId;

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
