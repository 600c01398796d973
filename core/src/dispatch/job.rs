//! One queue job as the dispatcher tracks it: [`Job`], where it is in its
//! life ([`Phase`], [`Progress`]), where its `sched.alloc` request stands
//! and why it waits.

use fluxion::{Request, Rv1};
use serde_json::Value;

use super::JobId;
use super::grant::fluxion_jobspec;
use super::recovery::Unconfirmed;
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
    pub(super) fn annotations(&self) -> Value {
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
    pub(super) jobspec: Box<str>,
    /// The queue job's `sched.alloc` request.
    pub(super) alloc: AllocState,
    /// The job-manager asked to withdraw the pending request.
    pub(super) cancel_asked: bool,
    /// The queue job holds its copy of the R (answered, or found holding it
    /// at recovery) until `sched.free`.
    pub(super) queue_r: bool,
    /// The application job started while no request was held: answer the
    /// next one at once.
    pub(super) start_due: bool,
    /// The queue job is in RUN (its `alloc` was seen).
    pub(super) queue_alloc: bool,
    /// The queue job's override `start` took effect.
    pub(super) queue_started: bool,
    /// The application job's finish status, waiting to be mirrored.
    pub(super) pending_finish: Option<i32>,
    /// A fatal application exception (type, note), waiting for its finish.
    pub(super) app_exception: Option<Box<(String, String)>>,
    /// The queue job already ended (exception or inactive).
    pub(super) queue_ended: bool,
    /// The application job is clean.
    pub(super) app_clean: bool,
    /// The application job finished (or died before starting): cancelling
    /// it now would turn its result into CANCELED.
    pub(super) app_finished: bool,
    /// Recovered from an earlier pancake: what happened to its application
    /// side while nobody watched is not known yet.
    pub(super) recovering: bool,
    /// An event of its application job was seen since the recovery.
    pub(super) app_seen: bool,
    /// The Fluxion id an earlier pancake had for it, until Fluxion took the
    /// allocation back ([`Event::Restored`](super::Event::Restored)); only then is it `fluxion_id`
    /// (cancelling an id Fluxion never restored could free someone else's).
    pub(super) prior_fluxion_id: Option<i64>,
    /// Its allocation must be restored in Fluxion before any match.
    pub(super) restore_due: bool,
    /// A recovered job whose earlier submit is not confirmed yet.
    pub(super) unconfirmed: Option<Unconfirmed>,
    /// Its container's broker was lost while the application job held
    /// cores: they stay held until the broker is back without it (or the
    /// lost-grace time, if set, passes: then, the deadline).
    pub(super) lost: Option<Option<f64>>,
    /// What its annotations last said (waiting jobs).
    pub(super) reason: Option<Reason>,
}

impl Job {
    pub(super) fn new(id: JobId, container: String, request: Request, jobspec: Box<str>) -> Job {
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
    pub(super) fn from_jobspec(id: JobId, value: &Value, request: Request) -> Job {
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
    pub(super) fn resume_running(&mut self, fid: i64, r: Rv1) {
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
    pub(super) fn app_done(&self) -> bool {
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
