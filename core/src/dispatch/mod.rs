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
//! The concerns live in submodules: `events` (the [`Event`] and [`Action`]
//! types), `job` (the per-job record, [`Job`]), [`grant`] (what an
//! allocation must satisfy, the jobspecs built around it), `queue` (the
//! alloc protocol and the scheduling passes), `mirror` (application jobs
//! mirrored on their queue jobs, lost containers) and `recovery` (what a
//! reloaded module takes up from an earlier one). This file keeps the
//! [`Dispatcher`] itself: its state, its settings and the event loop.
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

mod events;
pub mod grant;
mod job;
mod mirror;
pub mod queue;
mod recovery;

use std::collections::{BTreeMap, BTreeSet};

use fluxion::Rv1;

pub use events::{Action, AppEvent, Event, Granted, Prior};
pub use grant::{
    Capacity, RESERVED_ATTRIBUTES, app_jobspec, check_grant, fluxion_jobspec, union_of,
    unsupported_constraints,
};
pub(crate) use job::{AllocState, Reason};
pub use job::{Job, Phase, Progress};
pub use queue::{QueuePolicy, SchedParams};

/// A Flux job id.
pub type JobId = u64;

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
