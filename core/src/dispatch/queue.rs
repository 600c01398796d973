//! The RFC 27 side of the dispatcher: the job-manager's alloc requests,
//! cancels, frees and priorities, and the scheduling passes that answer
//! them.
//!
//! A pass walks the waiting jobs in the job-manager's order (priority, then
//! submit time, then id) and asks Fluxion, one job at a time, for those
//! that may start. Three rules bound its cost, whatever the backlog:
//!
//! * it asks Fluxion about at most `queue-depth` jobs (as Fluxion's
//!   qmanager), and starts again from the head only when something changed
//!   that could let a waiting job go (resources freed, a container up, a
//!   priority change); a job submitted meanwhile joins the pass in place;
//! * a job whose shape (its request and duration) already failed to fit in
//!   this pass is not asked again unless it would get a reservation:
//!   nothing was freed since, so Fluxion could only refuse it again;
//! * with `fcfs`, a job that does not fit blocks the rest of its queue
//!   (named queues block independently); with `easy` it gets a reservation
//!   and later jobs may only fill in around it; with `conservative` the
//!   first `reservation-depth` jobs that do not fit get one each.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use fluxion::{FluxionError, Request};
use serde_json::{Value, json};

use super::{
    Action, AllocState, Dispatcher, Granted, Job, JobId, Phase, Reason, app_jobspec, check_grant,
    unsupported_constraints,
};

/// How waiting jobs are taken from the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueuePolicy {
    /// First come, first served: the first job that does not fit blocks the
    /// rest of its queue.
    #[default]
    Fcfs,
    /// EASY backfill: the first job that does not fit gets a Fluxion
    /// reservation; later jobs may run if they do not delay it.
    Easy,
    /// Conservative backfill: each of the first `reservation-depth` jobs
    /// that do not fit gets a reservation; later jobs may run if they delay
    /// none of them.
    Conservative,
}

impl QueuePolicy {
    /// Parse `fcfs`, `easy` or `conservative`.
    pub fn parse(s: &str) -> Option<QueuePolicy> {
        match s {
            "fcfs" => Some(QueuePolicy::Fcfs),
            "easy" => Some(QueuePolicy::Easy),
            "conservative" => Some(QueuePolicy::Conservative),
            _ => None,
        }
    }

    /// The policy's name.
    pub fn name(self) -> &'static str {
        match self {
            QueuePolicy::Fcfs => "fcfs",
            QueuePolicy::Easy => "easy",
            QueuePolicy::Conservative => "conservative",
        }
    }
}

/// How a pass is bounded (module options `queue-policy`, `queue-depth`,
/// `reservation-depth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedParams {
    /// The queue policy.
    pub policy: QueuePolicy,
    /// Most jobs a pass asks Fluxion about (Fluxion's `queue-depth`).
    pub queue_depth: u32,
    /// With `conservative`, most reservations a pass makes per queue
    /// (`None`: as many as `queue_depth`, as Fluxion's conservative policy).
    pub reservation_depth: Option<u32>,
}

/// Fluxion qmanager's default `queue-depth`.
pub const DEFAULT_QUEUE_DEPTH: u32 = 32;

impl SchedParams {
    /// `policy` with the default depths.
    pub fn new(policy: QueuePolicy) -> SchedParams {
        SchedParams {
            policy,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            reservation_depth: None,
        }
    }

    /// Reservations a pass may make per queue under this policy.
    pub fn reservations(&self) -> u32 {
        match self.policy {
            QueuePolicy::Fcfs => 0,
            QueuePolicy::Easy => 1,
            QueuePolicy::Conservative => self
                .reservation_depth
                .unwrap_or(self.queue_depth)
                .min(self.queue_depth),
        }
    }
}

/// A waiting job's place: priority (higher first), submit time, id.
type Key = (std::cmp::Reverse<i64>, u64, JobId);

fn key_of(j: &Job) -> Key {
    // Submit times are positive: their bit patterns order as the numbers do.
    (
        std::cmp::Reverse(j.priority),
        j.t_submit.max(0.0).to_bits(),
        j.id,
    )
}

/// What a job's request looks like to Fluxion: two jobs of the same shape
/// get the same answer while nothing is freed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Shape {
    nnodes: Option<u32>,
    node_exclusive: bool,
    slots: u32,
    cores_per_slot: u32,
    gpus_per_slot: u32,
    memory: Option<(u64, Option<String>)>,
    duration: u64,
}

impl Shape {
    fn of(r: &Request) -> Shape {
        Shape {
            nnodes: r.nnodes,
            node_exclusive: r.node_exclusive,
            slots: r.slots,
            cores_per_slot: r.cores_per_slot,
            gpus_per_slot: r.gpus_per_slot,
            memory: r
                .memory_per_slot
                .as_ref()
                .map(|m| (m.count, m.unit.clone())),
            duration: r.duration,
        }
    }
}

/// The waiting jobs and the pass over them.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    /// Jobs with a pending request, waiting to be matched, in queue order.
    waiting: BTreeSet<Key>,
    /// Start a new pass from the head at the next chance.
    pub(crate) dirty: bool,
    /// The current pass.
    pass: Pass,
    /// The Fluxion call in flight: the job and whether it may reserve.
    in_flight: Option<(JobId, bool)>,
    /// Reservations of the current pass (cancelled when the next begins).
    reservations: Vec<i64>,
    /// Fluxion was unreachable: no call until the next tick.
    pub(crate) stalled: bool,
}

#[derive(Debug, Default)]
struct Pass {
    /// The last job visited (jobs after it come next).
    cursor: Option<Key>,
    /// Jobs that arrived ahead of the cursor: visited before it moves on.
    front: BTreeSet<Key>,
    /// Fluxion calls made.
    asked: u32,
    /// Reservations made, per queue.
    reserved: BTreeMap<String, u32>,
    /// fcfs: queues whose head did not fit.
    blocked: BTreeSet<String>,
    /// Shapes that did not fit now.
    failed: HashSet<Shape>,
    /// Something was allocated.
    progressed: bool,
    /// `queue-depth` calls made: the pass waits for the next change.
    paused: bool,
    /// Why jobs that do not fit wait, in this pass.
    insufficient: Option<Reason>,
}

impl Queue {
    fn insert(&mut self, j: &Job) {
        let k = key_of(j);
        if self.waiting.insert(k) && self.pass.cursor.is_some_and(|c| k < c) {
            // Ahead of where the pass is: visit it before going on.
            self.pass.front.insert(k);
        }
    }

    pub(crate) fn remove(&mut self, j: &Job) {
        let k = key_of(j);
        self.waiting.remove(&k);
        self.pass.front.remove(&k);
    }

    /// The next job to visit in this pass.
    fn next(&mut self) -> Option<Key> {
        if let Some(k) = self.pass.front.pop_first() {
            return Some(k);
        }
        let after = match self.pass.cursor {
            Some(c) => self
                .waiting
                .range((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded))
                .next()
                .copied(),
            None => self.waiting.first().copied(),
        };
        if let Some(k) = after {
            self.pass.cursor = Some(k);
        }
        after
    }

    /// The reservations are gone with the Fluxion that held them.
    pub(crate) fn forget_reservations(&mut self) {
        self.reservations.clear();
    }

    /// Jobs waiting to be matched.
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }
}

fn queue_name(j: &Job) -> String {
    j.queue.as_deref().unwrap_or("").to_string()
}

impl Dispatcher {
    /// Put job `id` among the waiting jobs if it is one.
    pub(super) fn enqueue(&mut self, id: JobId) {
        if let Some(j) = self.jobs.get(&id)
            && j.phase == Phase::Waiting
            && j.alloc == AllocState::Pending
            && !j.queue_ended
        {
            self.q.insert(j);
        }
    }

    /// Put job `id` back among the waiting jobs after its answer: it was
    /// visited in this pass already, so it is not visited again before the
    /// next one.
    fn requeue(&mut self, id: JobId) {
        if let Some(j) = self.jobs.get(&id)
            && j.phase == Phase::Waiting
            && j.alloc == AllocState::Pending
            && !j.queue_ended
        {
            self.q.waiting.insert(key_of(j));
        }
    }

    fn dequeue(&mut self, id: JobId) {
        if let Some(j) = self.jobs.get(&id) {
            self.q.remove(j);
        }
    }

    /// Waiting jobs (with a pending request, not matched yet).
    pub fn waiting(&self) -> usize {
        self.q.len()
    }

    /// `sched.alloc`: the job-manager offers job `id`.
    pub(super) fn on_alloc(
        &mut self,
        id: JobId,
        jobspec: &str,
        priority: i64,
        t_submit: f64,
        out: &mut Vec<Action>,
    ) {
        if let Some(j) = self.jobs.get_mut(&id) {
            // Known: recovered from an earlier pancake, or offered again
            // after a cancel it survived (forwarded already).
            self.q.remove(j);
            j.alloc = AllocState::Pending;
            j.cancel_asked = false;
            j.priority = priority;
            j.t_submit = t_submit;
            if j.queue_ended {
                // (It ended meanwhile: the job-manager is withdrawing it.)
                return;
            }
            if std::mem::take(&mut j.start_due) {
                Self::answer(j, out);
            } else if j.phase == Phase::Waiting {
                self.enqueue(id);
            }
            return;
        }
        let (value, request) = match self.check_request(jobspec) {
            Ok(v) => v,
            Err(note) => return self.deny(id, note, out),
        };
        let mut j = Job::from_jobspec(id, &value, request);
        j.priority = priority;
        j.t_submit = t_submit;
        j.alloc = AllocState::Pending;
        self.jobs.insert(id, j);
        self.enqueue(id);
    }

    /// Whether a jobspec could ever run here: parsed, no constraints, jobs
    /// without a container accepted, not larger than the graph. The error
    /// is the note of a denial (or a `feasibility.check` refusal).
    pub fn check_request(&self, jobspec: &str) -> Result<(Value, Request), String> {
        let value: Value =
            serde_json::from_str(jobspec).map_err(|e| format!("pancake: invalid jobspec: {e}"))?;
        let target = match value
            .pointer("/attributes/system/container")
            .and_then(Value::as_str)
        {
            Some(c) => format!("container {c}"),
            None => "the queue broker".to_string(),
        };
        let request = fluxion::Jobspec::from_value(&value)
            .map_err(|e| format!("{target}: invalid jobspec: {e}"))?
            .request;
        let container = request.container.as_deref().unwrap_or_default();
        if container.is_empty() && self.local_refused {
            return Err("pancake: this queue runs only container jobs (local-jobs=refuse); submit with --setattr=container=NAME".into());
        }
        if let Some(why) = unsupported_constraints(&value) {
            return Err(format!("pancake: {why}"));
        }
        if let Some(why) = self.capacity.and_then(|c| c.why_never(&request)) {
            return Err(format!("{target}: unsatisfiable request: {why}"));
        }
        Ok((value, request))
    }

    fn deny(&mut self, id: JobId, note: String, out: &mut Vec<Action>) {
        self.stats.failed += 1;
        out.push(Action::AllocDeny { id, note });
    }

    /// `sched.cancel`: the job-manager withdraws its offer of job `id`.
    pub(super) fn on_alloc_cancel(&mut self, id: JobId, out: &mut Vec<Action>) {
        let draining = self.draining;
        let Some(j) = self.jobs.get_mut(&id) else {
            // Not ours (any more): say so, the request may still be held.
            out.push(Action::AllocCancel { id });
            return;
        };
        if j.alloc != AllocState::Pending {
            return;
        }
        j.cancel_asked = true;
        match j.phase {
            Phase::Waiting => {
                self.dequeue(id);
                self.withdraw(id, out);
            }
            // The answer in flight decides (see `on_matched`).
            Phase::Matching => {}
            // Forwarded already: the allocation stands and the request is
            // answered when the application job starts (RFC 27 lets a
            // scheduler answer a cancelled request with success) — unless
            // the queue job is over, or the broker is shutting down (then a
            // module loaded after the restart takes it up).
            Phase::Submitting | Phase::Submitted if !draining && !j.queue_ended => {}
            _ => {
                j.alloc = AllocState::None;
                j.cancel_asked = false;
                out.push(Action::AllocCancel { id });
            }
        }
    }

    /// Answer a waiting job's withdrawn request with "cancelled" and forget
    /// the job: if it is offered again, it starts over.
    fn withdraw(&mut self, id: JobId, out: &mut Vec<Action>) {
        if let Some(j) = self.jobs.remove(&id) {
            self.q.remove(&j);
            if matches!(j.reason, Some(Reason::Reserved(_))) {
                // Its reservation holds back jobs behind it: drop it.
                self.q.dirty = true;
            }
        }
        out.push(Action::AllocCancel { id });
    }

    /// `sched.free`: the queue job gave its R back.
    pub(super) fn on_free(&mut self, id: JobId, last: bool, out: &mut Vec<Action>) {
        if !last {
            // A partial free (housekeeping done on some ranks): the rest
            // follows; pancake frees Fluxion allocations whole.
            return;
        }
        let Some(j) = self.jobs.get_mut(&id) else {
            out.push(Action::Log {
                id: Some(id),
                text: "sched.free of a job pancake does not hold".into(),
            });
            return;
        };
        j.queue_r = false;
        if j.is_local() {
            // Its tasks are gone: the job is done with its cores.
            j.queue_ended = true;
            j.phase = Phase::Done;
        }
        self.settle(id, out);
    }

    /// `sched.prioritize`: a waiting job's priority changed.
    pub(super) fn on_priority(&mut self, id: JobId, priority: i64) {
        let Some(j) = self.jobs.get(&id) else { return };
        if j.priority == priority {
            return;
        }
        self.q.remove(j);
        if let Some(j) = self.jobs.get_mut(&id) {
            j.priority = priority;
        }
        self.enqueue(id);
        // The order changed: the pass starts over from the head.
        self.q.dirty = true;
    }

    /// The queue broker is shutting down: withdrawn requests are answered at
    /// once from now on, the ones already withdrawn too.
    pub(super) fn on_drain(&mut self, out: &mut Vec<Action>) {
        if std::mem::replace(&mut self.draining, true) {
            return;
        }
        out.push(Action::Log {
            id: None,
            text: "the queue broker is shutting down: nothing new is matched, forwarded or started"
                .into(),
        });
        let withdrawn: Vec<JobId> = self
            .jobs
            .values()
            .filter(|j| {
                j.alloc == AllocState::Pending && j.cancel_asked && j.phase != Phase::Matching
            })
            .map(|j| j.id)
            .collect();
        for id in withdrawn {
            self.on_alloc_cancel_again(id, out);
        }
    }

    fn on_alloc_cancel_again(&mut self, id: JobId, out: &mut Vec<Action>) {
        if let Some(j) = self.jobs.get_mut(&id) {
            j.alloc = AllocState::Pending;
            j.cancel_asked = false;
        }
        self.on_alloc_cancel(id, out);
    }

    /// Answer job `j`'s request with its R: a container job's queue copy
    /// has no expiration (the application job's own limit applies there).
    pub(super) fn answer(j: &mut Job, out: &mut Vec<Action>) {
        let Some(r) = &j.r else { return };
        let mut qr = fluxion::Rv1::clone(r);
        if !j.is_local() {
            qr.execution.expiration = 0.0;
        }
        let annotations = j
            .reason
            .take()
            .map(|_| json!({ "sched": { "reason_pending": null, "t_estimate": null } }));
        j.alloc = AllocState::Answered;
        j.queue_r = true;
        out.push(Action::AllocSuccess {
            id: j.id,
            r: qr,
            annotations,
        });
    }

    /// Tell the job-manager why job `id` waits, if that changed.
    fn annotate(&mut self, id: JobId, reason: Reason, out: &mut Vec<Action>) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        if j.reason.as_ref() == Some(&reason) || j.alloc != AllocState::Pending {
            return;
        }
        out.push(Action::Annotate {
            id,
            annotations: reason.annotations(),
        });
        j.reason = Some(reason);
        self.stats.annotations += 1;
    }

    /// Why a job that did not fit waits: cores held by a lost container's
    /// jobs are named (they come back only with it, or after `lost-grace`).
    /// Worked out once per pass (a container lost or back starts a new one).
    fn insufficient(&mut self) -> Reason {
        if let Some(r) = &self.q.pass.insufficient {
            return r.clone();
        }
        let r = self.insufficient_now();
        self.q.pass.insufficient = Some(r.clone());
        r
    }

    fn insufficient_now(&self) -> Reason {
        let lost: BTreeSet<&str> = self
            .jobs
            .values()
            .filter(|j| j.lost.is_some())
            .map(|j| j.container.as_str())
            .collect();
        if lost.is_empty() {
            Reason::Insufficient(None)
        } else {
            let names: Vec<&str> = lost.into_iter().collect();
            Reason::Insufficient(Some(format!(
                "lost container {} still holds cores",
                names.join(", ")
            )))
        }
    }

    /// Start the next Fluxion call if none is in flight.
    pub(super) fn schedule(&mut self, out: &mut Vec<Action>) {
        if self.capacity.is_none() {
            // Fluxion does not hold the graph yet: nothing to restore into,
            // nothing to match against.
            return;
        }
        self.restore_due(out);
        if self.busy || self.q.stalled || self.is_recovering() || self.reinit || self.draining {
            return;
        }
        if self.q.dirty {
            self.new_pass(out);
        }
        let depth = self.params.queue_depth.max(1);
        let reservations = self.params.reservations();
        while let Some(key) = self.q.next() {
            let id = key.2;
            let Some(j) = self.jobs.get(&id) else {
                self.q.waiting.remove(&key);
                continue;
            };
            let queue = queue_name(j);
            let shape = Shape::of(&j.request);
            // (The most specific reason first: a job whose container is
            // down waits for it, whatever is ahead of it.)
            if !j.is_local() && !self.containers_up.contains(&j.container) {
                let c = j.container.clone();
                self.annotate(id, Reason::ContainerDown(c), out);
                continue;
            }
            if self.q.pass.blocked.contains(&queue) {
                self.annotate(id, Reason::Behind, out);
                continue;
            }
            if j.is_local() && self.local_r.is_none() {
                continue;
            }
            let reserve = self.q.pass.reserved.get(&queue).copied().unwrap_or(0) < reservations;
            if !reserve && self.q.pass.failed.contains(&shape) {
                // Nothing was freed since a job of this shape did not fit.
                if self.params.policy == QueuePolicy::Fcfs {
                    self.q.pass.blocked.insert(queue);
                }
                let why = self.insufficient();
                self.annotate(id, why, out);
                continue;
            }
            if self.q.pass.asked >= depth {
                if std::mem::take(&mut self.q.pass.progressed) {
                    // Something started within the budget: the pass goes on
                    // with a fresh one (as Fluxion's qmanager loops again
                    // after a productive one). What did not fit still does
                    // not: nothing was freed.
                    self.q.pass.asked = 0;
                } else {
                    // queue-depth futile calls: wait for a change, and visit
                    // this job first then.
                    self.q.pass.paused = true;
                    self.q.pass.front.insert(key);
                    return;
                }
            }
            // The cursor stays on this job: its answer moves the pass on.
            let jobspec = j.jobspec.to_string();
            self.q.waiting.remove(&key);
            if let Some(j) = self.jobs.get_mut(&id) {
                j.phase = Phase::Matching;
            }
            self.q.pass.asked += 1;
            self.q.in_flight = Some((id, reserve));
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

    /// Begin a pass from the head: drop the last pass's reservations.
    fn new_pass(&mut self, out: &mut Vec<Action>) {
        self.q.dirty = false;
        for fid in std::mem::take(&mut self.q.reservations) {
            out.push(Action::Cancel { fluxion_id: fid });
        }
        self.q.pass = Pass::default();
        self.stats.passes += 1;
    }

    /// Fluxion answered the match of job `id`.
    pub(super) fn on_matched(
        &mut self,
        id: JobId,
        result: Result<Granted, FluxionError>,
        out: &mut Vec<Action>,
    ) {
        self.busy = false;
        let reserve = match self.q.in_flight.take() {
            Some((i, r)) if i == id => r,
            _ => false,
        };
        let conflict = match &result {
            Ok(g) if !g.reserved => self.holder_of(&g.r, id),
            _ => None,
        };
        let bad_grant = match (&result, self.jobs.get(&id)) {
            (Ok(g), Some(j)) if !g.reserved => {
                let within = if j.is_local() {
                    self.local_r.as_ref()
                } else {
                    self.graph.as_ref()
                };
                within.map(|r| check_grant(&g.r, &j.request, r))
            }
            _ => None,
        };
        let Some(j) = self.jobs.get_mut(&id) else {
            // The job vanished while matching: give back what we got.
            if let Ok(g) = result {
                if g.reserved {
                    self.q.reservations.push(g.fluxion_id);
                } else {
                    self.stats.granted += 1;
                    self.free(Some(g.fluxion_id), out);
                }
            }
            return;
        };
        let queue = queue_name(j);
        let shape = Shape::of(&j.request);
        j.phase = Phase::Waiting;
        if j.queue_ended || j.cancel_asked || self.draining {
            // Withdrawn (cancelled, held, queue stopped, shutting down)
            // while Fluxion was asked: nothing is started.
            if let Ok(g) = result {
                if g.reserved {
                    self.q.reservations.push(g.fluxion_id);
                } else {
                    self.stats.granted += 1;
                    // Not free(): no new pass for cores nobody used.
                    self.stats.freed += 1;
                    out.push(Action::Cancel {
                        fluxion_id: g.fluxion_id,
                    });
                }
            }
            if j.queue_ended || j.cancel_asked {
                self.withdraw(id, out);
            } else {
                self.requeue(id);
            }
            return;
        }
        match result {
            Ok(g) if g.reserved => {
                // A reservation is never started; it holds the job's place
                // until the next pass.
                self.q.reservations.push(g.fluxion_id);
                *self.q.pass.reserved.entry(queue).or_default() += 1;
                self.q.pass.failed.insert(shape);
                self.requeue(id);
                self.annotate(id, Reason::Reserved(g.at), out);
            }
            Ok(g) => {
                self.stats.granted += 1;
                if let Some(holder) = conflict {
                    // Fluxion handed out cores a live job still holds: it lost
                    // that allocation (a restart, or a restore it refused).
                    // Never use it; the job waits for the holder to end.
                    self.q.pass.failed.insert(shape);
                    self.requeue(id);
                    out.push(Action::Log {
                        id: Some(id),
                        text: format!(
                            "fluxion granted cores that job {} still holds (fluxion id {}): not used, the job waits",
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
                if let Some(Err(why)) = bad_grant {
                    // Never start what Fluxion got wrong.
                    let target = j.target();
                    j.phase = Phase::Done;
                    j.queue_ended = true;
                    self.stats.failed += 1;
                    out.push(Action::Raise {
                        id,
                        kind: "pancake".into(),
                        note: format!(
                            "{target}: fluxion returned an allocation that does not fit the request: {why}"
                        ),
                        wait_status: None,
                    });
                    self.free(Some(g.fluxion_id), out);
                    self.reap(id);
                    return;
                }
                self.q.pass.progressed = true;
                self.start(id, g, out);
            }
            Err(FluxionError::Busy(_)) | Err(FluxionError::Ambiguous(_)) => {
                if self.params.policy == QueuePolicy::Fcfs {
                    self.q.pass.blocked.insert(queue);
                }
                // (Tried with a reservation and still busy: it cannot even
                // be reserved now; skip it like any job that does not fit.)
                let _ = reserve;
                self.q.pass.failed.insert(shape);
                self.requeue(id);
                let why = self.insufficient();
                self.annotate(id, why, out);
            }
            Err(FluxionError::NotInitialized) => {
                // The service restarted and lost its graph (and every
                // allocation): load it again, then restore what is live.
                self.requeue(id);
                self.q.dirty = true;
                if !std::mem::replace(&mut self.reinit, true) {
                    out.push(Action::Log {
                        id: None,
                        text: "fluxion lost its graph (restarted?): loading it again and restoring every live allocation".into(),
                    });
                    out.push(Action::Reinit);
                }
            }
            Err(FluxionError::Unavailable(e)) => {
                // Nothing lost: the job waits; the pass starts over in a
                // second (or at the next change).
                self.requeue(id);
                self.q.dirty = true;
                self.q.stalled = true; // until the wake-up: no call meanwhile
                out.push(Action::Log {
                    id: Some(id),
                    text: format!("fluxion unavailable, job waits: {e}"),
                });
                out.push(Action::Wake { after: 1.0 });
            }
            Err(e) => {
                let kind = if matches!(e, FluxionError::Unsatisfiable(_)) {
                    "alloc"
                } else {
                    "pancake"
                };
                let note = format!("{}: {e}", j.target());
                j.phase = Phase::Done;
                j.queue_ended = true;
                self.stats.failed += 1;
                if kind == "alloc" {
                    j.alloc = AllocState::None;
                    out.push(Action::AllocDeny { id, note });
                } else {
                    out.push(Action::Raise {
                        id,
                        kind: kind.into(),
                        note,
                        wait_status: None,
                    });
                }
                self.reap(id);
            }
        }
        // No new pass: this pass goes on with the next job.
    }

    /// A grant for job `id`: run it on the queue broker, or forward it.
    fn start(&mut self, id: JobId, g: Granted, out: &mut Vec<Action>) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        j.fluxion_id = Some(g.fluxion_id);
        if j.is_local() {
            // The record first, so a reloaded pancake finds the allocation.
            out.push(Action::Memo {
                id,
                memo: json!({ "fluxion_id": g.fluxion_id }),
            });
            j.r = Some(Box::new(g.r));
            j.phase = Phase::Running;
            self.stats.local += 1;
            Self::answer(j, out);
            return;
        }
        j.phase = Phase::Submitting;
        let js = app_jobspec(
            &serde_json::from_str(&j.jobspec).unwrap_or(Value::Null),
            &g.r,
            id,
            g.fluxion_id,
        );
        // The R goes on the record too: a reloaded pancake restores the
        // allocation from it before matching anything else.
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

    /// The container answered the forwarded submit.
    pub(super) fn on_submit_done(
        &mut self,
        id: JobId,
        result: Result<JobId, String>,
        out: &mut Vec<Action>,
    ) {
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
                }
                out.push(Action::Log {
                    id: Some(id),
                    text: format!("forwarded to {} as job {app_id}", j.container),
                });
            }
            Err(reason) => {
                let container = j.container.clone();
                j.phase = Phase::Done;
                let raise = !j.queue_ended;
                j.queue_ended = true;
                j.unconfirmed = None;
                self.stats.failed += 1;
                if raise {
                    out.push(Action::Raise {
                        id,
                        kind: "pancake".into(),
                        note: format!("container {container} refused the job: {reason}"),
                        wait_status: None,
                    });
                }
                self.settle(id, out);
            }
        }
    }
}
