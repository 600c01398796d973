//! The dispatcher against a simulated pod: the embedded Fluxion for real,
//! and a fake queue job-manager (speaking RFC 27 as flux-core's does:
//! dependencies, holds, queue stop/start, alloc requests re-sent after a
//! cancel, frees after cleanup) and fake application brokers that follow
//! flux-core's event order. Randomized workloads check the invariants of
//! DESIGN.md.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use fluxion::conformance::sample_rv1;
use fluxion::{Fluxion, FluxionError, Request, Rv1, allocation_to_rv1, rv1_to_jgf};
use pancake_core::dispatch::{
    Action, AppEvent, Capacity, Dispatcher, Event, Granted, JobId, Phase, Prior, QueuePolicy,
    SchedParams, check_grant,
};

/// How a queue job ended, as `flux jobs` would report it.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Finished(i32),
    Exception {
        kind: String,
        wait_status: Option<i32>,
    },
}

/// Where a queue job is, as its job-manager sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QState {
    /// Waiting for its dependencies.
    Depend,
    /// Eligible: offered to the scheduler while its queue runs and it is
    /// not held.
    Sched,
    Run,
    /// Over; its R not given back yet.
    Cleanup,
    Inactive,
}

/// What the queue broker keeps about a job (its eventlog and job-manager
/// state), which a reloaded module reads back from the journal backlog.
#[derive(Debug, Clone)]
struct QJob {
    container: String,
    queue: String,
    jobspec: String,
    priority: i64,
    state: QState,
    held: bool,
    /// afterany dependencies still to end.
    deps: Vec<JobId>,
    /// An alloc request is outstanding (not answered, not cancelled).
    pending: bool,
    /// A cancel was sent for the outstanding request.
    cancel_sent: bool,
    /// The job holds an R (answered, until its free).
    has_r: bool,
    r: Option<Rv1>,
    alloc_event: bool,
    started: bool,
    outcome: Option<Outcome>,
    memo_fluxion_id: Option<i64>,
    memo_r: Option<Rv1>,
    memo_app_id: Option<JobId>,
    /// A job without a container: when it runs, and its exit status.
    local_status: i32,
}

#[derive(Debug, Clone)]
struct AppJob {
    queue_id: JobId,
    container: String,
    /// Every event the application broker posted, in order (its eventlog).
    log: Vec<AppEvent>,
    /// Still in the broker's job-ingest: not in its journal yet.
    hidden: bool,
    r: Rv1,
    started: bool,
    /// Finished (or died): no more tasks, but the R is held until clean.
    done: bool,
    cleaned: bool,
    /// What the task will exit with.
    status: i32,
}

const CONTAINERS: [&str; 3] = ["lammps", "ior", "chatterbug"];

struct Sim {
    d: Dispatcher,
    fx: fluxion::EmbeddedFluxion,
    graph: Rv1,
    now: f64,
    events: VecDeque<Event>,
    apps: BTreeMap<JobId, AppJob>,
    next_app: JobId,
    /// (epoch, fluxion id) -> times cancelled; the epoch counts module
    /// reloads and Fluxion restarts (each starts a fresh Fluxion).
    cancelled: HashMap<(u32, i64), u32>,
    granted: Vec<(u32, i64)>,
    epoch: u32,
    reserved: Vec<i64>,
    q: BTreeMap<JobId, QJob>,
    /// Stopped queues (`flux queue stop`).
    stopped: BTreeSet<String>,
    app_outcome: BTreeMap<JobId, Outcome>,
    /// Jobs without a container running now: their R.
    local_live: BTreeMap<JobId, Rv1>,
    /// Application jobs that should fail with this status when they run.
    fail_status: HashMap<JobId, i32>,
    /// Containers that refuse jobs.
    refuse: Vec<String>,
    /// Fluxion cannot restore allocations (the public service).
    no_restore: bool,
    /// The dispatcher asked for a Tick.
    wake: bool,
    rng: u64,
    violations: Vec<String>,
    /// Queue jobs whose override start took effect, and allocs still to come.
    started: std::collections::HashSet<JobId>,
    alloc_later: Vec<JobId>,
    /// Submit answers still to come: (queue id, app id).
    submit_later: Vec<(JobId, JobId)>,
    /// Annotations each job got (last one).
    annotations: BTreeMap<JobId, serde_json::Value>,
}

impl Sim {
    fn new(policy: QueuePolicy, seed: u64) -> Sim {
        Self::with_params(SchedParams::new(policy), seed)
    }

    fn with_params(params: SchedParams, seed: u64) -> Sim {
        let graph = sample_rv1(4, 10, 2);
        let mut fx = fluxion::EmbeddedFluxion::new();
        fx.init("first", &rv1_to_jgf(&graph).unwrap()).unwrap();
        let mut d = Dispatcher::with_params(params);
        d.set_capacity(Capacity::of(&graph).unwrap());
        d.set_graph(graph.clone());
        d.set_local_resources(graph.clone());
        let mut s = Sim {
            d,
            fx,
            graph,
            now: 1000.0,
            events: VecDeque::new(),
            apps: BTreeMap::new(),
            next_app: 1,
            cancelled: HashMap::new(),
            granted: Vec::new(),
            epoch: 0,
            reserved: Vec::new(),
            q: BTreeMap::new(),
            stopped: BTreeSet::new(),
            app_outcome: BTreeMap::new(),
            local_live: BTreeMap::new(),
            fail_status: HashMap::new(),
            refuse: Vec::new(),
            no_restore: false,
            wake: false,
            rng: seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407)
                | 1,
            violations: Vec::new(),
            started: Default::default(),
            alloc_later: Vec::new(),
            submit_later: Vec::new(),
            annotations: BTreeMap::new(),
        };
        for c in CONTAINERS {
            s.feed(Event::ContainerUp {
                container: c.into(),
            });
        }
        s
    }

    fn rand(&mut self, n: u64) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % n.max(1)
    }

    fn qj(&mut self, id: JobId) -> &mut QJob {
        self.q.get_mut(&id).expect("queue job")
    }

    /// `flux submit` on the queue broker: container `""` runs it on the
    /// queue broker itself.
    fn submit(&mut self, id: JobId, container: &str, req: &Request) {
        self.submit_full(id, container, req, "", 16, &[]);
    }

    fn submit_full(
        &mut self,
        id: JobId,
        container: &str,
        req: &Request,
        queue: &str,
        priority: i64,
        deps: &[JobId],
    ) {
        let mut js: serde_json::Value =
            serde_json::from_str(&req.to_jobspec_json(&["true"])).unwrap();
        if !container.is_empty() {
            js["attributes"]["system"]["container"] = container.into();
        }
        if !queue.is_empty() {
            js["attributes"]["system"]["queue"] = queue.into();
        }
        let deps: Vec<JobId> = deps
            .iter()
            .copied()
            .filter(|d| self.q.get(d).is_some_and(|j| j.state != QState::Inactive))
            .collect();
        let status = self.fail_status.get(&id).copied().unwrap_or(0);
        self.q.insert(
            id,
            QJob {
                container: container.into(),
                queue: queue.into(),
                jobspec: js.to_string(),
                priority,
                state: if deps.is_empty() {
                    QState::Sched
                } else {
                    QState::Depend
                },
                held: false,
                deps,
                pending: false,
                cancel_sent: false,
                has_r: false,
                r: None,
                alloc_event: false,
                started: false,
                outcome: None,
                memo_fluxion_id: None,
                memo_r: None,
                memo_app_id: None,
                local_status: status,
            },
        );
        self.offer(id);
        self.drain();
    }

    /// The job-manager sends an alloc request when the job is eligible.
    fn offer(&mut self, id: JobId) {
        let Some(j) = self.q.get(&id) else { return };
        if j.state != QState::Sched || j.pending || j.held || self.stopped.contains(&j.queue) {
            return;
        }
        let (jobspec, priority) = (j.jobspec.clone(), j.priority);
        let j = self.qj(id);
        j.pending = true;
        j.cancel_sent = false;
        self.events.push_back(Event::Alloc {
            id,
            jobspec,
            priority,
            t_submit: 1000.0 + id as f64,
        });
    }

    /// The job-manager withdraws a pending request (not final: the job
    /// stays in SCHED and is offered again when it may).
    fn withdraw(&mut self, id: JobId) {
        if let Some(j) = self.q.get_mut(&id)
            && j.pending
            && !j.cancel_sent
        {
            j.cancel_sent = true;
            self.events.push_back(Event::AllocCancel { id });
        }
    }

    fn stop_queue(&mut self, queue: &str) {
        self.stopped.insert(queue.to_string());
        let ids: Vec<JobId> = self
            .q
            .iter()
            .filter(|(_, j)| j.queue == queue)
            .map(|(k, _)| *k)
            .collect();
        for id in ids {
            self.withdraw(id);
        }
        self.drain();
    }

    fn start_queue(&mut self, queue: &str) {
        self.stopped.remove(queue);
        let ids: Vec<JobId> = self.q.keys().copied().collect();
        for id in ids {
            self.offer(id);
        }
        self.drain();
    }

    fn hold(&mut self, id: JobId, held: bool) {
        let Some(j) = self.q.get_mut(&id) else { return };
        if !matches!(j.state, QState::Sched | QState::Depend) {
            return;
        }
        j.held = held;
        if held {
            self.withdraw(id);
        } else {
            self.offer(id);
        }
        self.drain();
    }

    fn reprioritize(&mut self, id: JobId, priority: i64) {
        let Some(j) = self.q.get_mut(&id) else { return };
        if j.state != QState::Sched {
            return;
        }
        j.priority = priority;
        if j.pending {
            self.events.push_back(Event::Priority { id, priority });
        }
        self.drain();
    }

    /// `flux module reload pancake`: what the old module had in flight dies
    /// with it (its Fluxion too); the job-manager takes back every pending
    /// request; a new dispatcher and a fresh Fluxion learn everything back
    /// from the brokers' records, in the order the module reads them: the
    /// queue journal backlog and sched-hello, then ready (the requests come
    /// again), with each container's backlog racing them.
    fn reload(&mut self) {
        self.events.clear();
        self.submit_later.clear();
        self.epoch += 1;
        let mut fx = fluxion::EmbeddedFluxion::new();
        fx.init("first", &rv1_to_jgf(&self.graph).unwrap()).unwrap();
        self.fx = fx;
        let mut d = Dispatcher::with_params(self.d.params());
        d.set_local_resources(self.graph.clone());
        d.begin_recovery(&CONTAINERS);
        self.d = d;
        for j in self.q.values_mut() {
            j.pending = false;
            j.cancel_sent = false;
        }
        // A submit the old module sent but never heard back about may still
        // be in the container's job-ingest: the backlog misses it, and it
        // shows up live a moment later.
        let unanswered: Vec<JobId> = self
            .apps
            .iter()
            .filter(|(_, a)| {
                !a.started
                    && !a.done
                    && self
                        .q
                        .get(&a.queue_id)
                        .is_some_and(|r| r.memo_app_id.is_none())
            })
            .map(|(k, _)| *k)
            .collect();
        // Or it went through, ran and ended while nobody watched: the
        // backlog misses it too, and only a search of the container's
        // inactive jobs finds it.
        for app_id in unanswered {
            match self.rand(3) {
                0 => self.apps.get_mut(&app_id).unwrap().hidden = true,
                1 => {
                    let a = self.apps.get_mut(&app_id).unwrap();
                    a.started = true;
                    a.done = true;
                    a.cleaned = true;
                    a.log = vec![
                        AppEvent::Start,
                        AppEvent::Finish { status: a.status },
                        AppEvent::Clean,
                    ];
                    let (queue_id, status) = (a.queue_id, a.status);
                    self.app_outcome.insert(queue_id, Outcome::Finished(status));
                }
                _ => {}
            }
        }
        let early: Vec<&str> = CONTAINERS
            .iter()
            .copied()
            .filter(|_| self.rand(3) == 0)
            .collect();
        for c in &early {
            self.app_backlog(c);
        }
        let active: Vec<(JobId, QJob)> = self
            .q
            .iter()
            .filter(|(_, r)| r.state != QState::Inactive)
            .map(|(k, r)| (*k, r.clone()))
            .collect();
        for (id, r) in &active {
            let prior = Prior {
                fluxion_id: r.memo_fluxion_id,
                r: if r.container.is_empty() {
                    r.r.clone()
                } else {
                    r.memo_r.clone()
                },
                app_id: r.memo_app_id,
                dispatched_at: Some(0.0),
                allocated: r.alloc_event && r.has_r,
                started: r.started,
            };
            if prior.matched() {
                self.feed(Event::Recovered {
                    id: *id,
                    jobspec: r.jobspec.clone(),
                    prior,
                });
            }
        }
        // sched-hello: the jobs holding an R.
        let held: Vec<(JobId, Option<Rv1>)> = active
            .iter()
            .filter(|(_, r)| r.has_r)
            .map(|(id, r)| (*id, r.r.clone()))
            .collect();
        self.feed(Event::QueueBacklogDone { held });
        let up_first = self.rand(2) == 0;
        if up_first {
            self.fluxion_ready();
        }
        // sched-ready: every eligible job is offered again.
        let ids: Vec<JobId> = self.q.keys().copied().collect();
        for id in ids {
            self.offer(id);
        }
        self.drain();
        for c in CONTAINERS {
            if !early.contains(&c) {
                self.app_backlog(c);
            }
        }
        if !up_first {
            self.fluxion_ready();
        }
    }

    /// Container `c`'s journal backlog: its active jobs, whole, then the end.
    fn app_backlog(&mut self, c: &str) {
        let apps: Vec<(JobId, AppJob)> = self
            .apps
            .iter()
            .filter(|(_, a)| a.container == c && !a.cleaned && !a.hidden)
            .map(|(k, a)| (*k, a.clone()))
            .collect();
        for (app_id, a) in apps {
            let fluxion_id = self.q.get(&a.queue_id).and_then(|r| r.memo_fluxion_id);
            self.feed(Event::AppSubmitted {
                container: c.into(),
                app_id,
                queue_id: a.queue_id,
                fluxion_id,
                r: Some(a.r.clone()),
            });
            for event in a.log {
                self.feed(Event::App {
                    container: c.into(),
                    app_id,
                    event,
                });
            }
        }
        self.feed(Event::AppBacklogDone {
            container: c.into(),
        });
    }

    /// The Fluxion service restarts: its graph and every allocation are
    /// gone, and it refuses every call until `Init`.
    fn restart_fluxion(&mut self) {
        self.fx = fluxion::EmbeddedFluxion::new();
        self.epoch += 1;
    }

    fn fluxion_ready(&mut self) {
        self.d.set_capacity(Capacity::of(&self.graph).unwrap());
        self.d.set_graph(self.graph.clone());
        for c in CONTAINERS {
            self.feed(Event::ContainerUp {
                container: c.into(),
            });
        }
    }

    /// A fatal exception on queue job `id` (`flux cancel`, or one pancake
    /// raised): it ends, as flux-core ends it in its state.
    fn except(&mut self, id: JobId, kind: &str, wait_status: Option<i32>) {
        let Some(j) = self.q.get(&id) else { return };
        if j.outcome.is_some() || j.state == QState::Inactive {
            return;
        }
        self.events.push_back(Event::QueueException {
            id,
            kind: kind.into(),
            note: "noted".into(),
        });
        let state = j.state;
        let pending = j.pending;
        self.set_outcome(
            id,
            Outcome::Exception {
                kind: kind.into(),
                wait_status,
            },
        );
        match state {
            QState::Depend | QState::Sched => {
                if pending {
                    // Final: the job-manager stops waiting for an answer.
                    let j = self.qj(id);
                    j.pending = false;
                    if !j.cancel_sent {
                        self.events.push_back(Event::AllocCancel { id });
                    }
                }
                self.finish_queue(id);
            }
            QState::Run => {
                // job-exec kills the job (test-exec or real tasks).
                self.local_live.remove(&id);
                self.finish_queue(id);
            }
            QState::Cleanup | QState::Inactive => {}
        }
    }

    /// `flux cancel` of queue job `id`.
    fn cancel(&mut self, id: JobId) {
        self.except(id, "cancel", None);
        self.drain();
    }

    fn set_outcome(&mut self, id: JobId, o: Outcome) {
        let j = self.qj(id);
        match &j.outcome {
            None => j.outcome = Some(o),
            Some(prev) => {
                let msg = format!("job {id} ended twice: {prev:?} then {o:?}");
                self.violations.push(msg);
            }
        }
    }

    /// The queue job's cleanup: its R goes back (`sched.free`), then it is
    /// inactive; jobs depending on it may go.
    fn finish_queue(&mut self, id: JobId) {
        let j = self.qj(id);
        j.state = QState::Cleanup;
        if std::mem::take(&mut j.has_r) {
            self.events.push_back(Event::Free { id, last: true });
        }
        let j = self.qj(id);
        j.state = QState::Inactive;
        self.events.push_back(Event::QueueInactive { id });
        let waiting: Vec<JobId> = self
            .q
            .iter()
            .filter(|(_, j)| j.deps.contains(&id))
            .map(|(k, _)| *k)
            .collect();
        for w in waiting {
            let j = self.qj(w);
            j.deps.retain(|d| *d != id);
            if j.deps.is_empty() && j.state == QState::Depend {
                j.state = QState::Sched;
                self.offer(w);
            }
        }
    }

    fn feed(&mut self, e: Event) {
        self.events.push_back(e);
        self.drain();
    }

    fn drain(&mut self) {
        let trace = std::env::var_os("PANCAKE_SIM_TRACE").is_some();
        while let Some(e) = self.events.pop_front() {
            self.now += 0.001;
            if trace {
                eprintln!("{:.3} event {e:?}", self.now);
            }
            let actions = self.d.handle(self.now, e);
            for a in actions {
                if trace {
                    eprintln!("{:.3}   action {a:?}", self.now);
                }
                self.act(a);
            }
        }
    }

    /// The live holders of cores: application jobs not clean, and jobs
    /// without a container running on the queue broker.
    fn check_no_overlap(&mut self, who: &str, r: &Rv1) {
        for (other, a) in &self.apps {
            if !a.cleaned && a.r.overlaps(r).unwrap() {
                self.violations
                    .push(format!("{who} overlaps app job {other}"));
            }
        }
        for (other, lr) in &self.local_live {
            if lr.overlaps(r).unwrap() {
                self.violations
                    .push(format!("{who} overlaps queue-broker job {other}"));
            }
        }
    }

    fn act(&mut self, a: Action) {
        match a {
            Action::Match {
                id,
                jobspec,
                reserve,
            } => {
                if let Some(m) = self.fx.matcher_mut() {
                    m.set_now(self.now as i64);
                }
                let result = self.fx.match_allocate(&jobspec, reserve).and_then(|m| {
                    let dur =
                        serde_json::from_str::<serde_json::Value>(&jobspec).unwrap()["attributes"]
                            ["system"]["duration"]
                            .as_f64()
                            .unwrap_or(0.0);
                    let r = allocation_to_rv1(&m.allocation, self.now, dur)?;
                    Ok(Granted {
                        fluxion_id: m.jobid,
                        r,
                        reserved: m.reserved,
                        at: m.at as f64,
                    })
                });
                if let Ok(g) = &result {
                    if g.reserved {
                        self.reserved.push(g.fluxion_id);
                    } else {
                        self.granted.push((self.epoch, g.fluxion_id));
                    }
                }
                self.events.push_back(Event::Matched { id, result });
            }
            Action::Cancel { fluxion_id } => {
                // (A restarted Fluxion refuses everything until Init.)
                if self.fx.cancel(fluxion_id).is_ok() {
                    *self.cancelled.entry((self.epoch, fluxion_id)).or_default() += 1;
                }
            }
            Action::Reinit => {
                self.fx
                    .init("first", &rv1_to_jgf(&self.graph).unwrap())
                    .unwrap();
                self.events.push_back(Event::FluxionReset);
            }
            Action::Restore { id, fluxion_id, r } => {
                let result = if self.no_restore {
                    Err(FluxionError::Other("unimplemented: Restore".into()))
                } else {
                    self.fx.restore(fluxion_id, &rv1_to_jgf(&r).unwrap())
                };
                if self.no_restore {
                    // Nothing to check: the dispatcher must cope.
                } else if result.is_ok() {
                    self.granted.push((self.epoch, fluxion_id));
                } else {
                    self.violations
                        .push(format!("job {id}: restore {fluxion_id} failed: {result:?}"));
                }
                self.events.push_back(Event::Restored {
                    id,
                    fluxion_id,
                    result,
                });
            }
            Action::AppLookup {
                id,
                container,
                app_id,
            } => {
                // The application job went inactive while nobody watched:
                // its eventlog, whole.
                match self.apps.get(&app_id) {
                    Some(a) if a.cleaned && a.container == container && a.queue_id == id => {
                        for event in a.log.clone() {
                            self.events.push_back(Event::App {
                                container: container.clone(),
                                app_id,
                                event,
                            });
                        }
                    }
                    _ => self
                        .violations
                        .push(format!("lookup of app job {app_id} that is not inactive")),
                }
            }
            Action::FindApp { id, container, .. } => {
                // job-list lists what left job-ingest, inactive jobs too;
                // now and then it cannot be asked.
                let result = if self.rand(4) == 0 {
                    Err("job-list: Function not implemented".into())
                } else {
                    Ok(self
                        .apps
                        .iter()
                        .find(|(_, a)| a.container == container && a.queue_id == id && !a.hidden)
                        .map(|(k, _)| *k))
                };
                self.events.push_back(Event::AppFound {
                    id,
                    container,
                    result,
                });
            }
            Action::Submit {
                id,
                container,
                jobspec,
            } => self.app_submit(id, container, &jobspec),
            Action::AllocSuccess { id, r, .. } => self.alloc_success(id, r),
            Action::AllocDeny { id, .. } => {
                let Some(j) = self.q.get(&id) else { return };
                if !j.pending {
                    // (A deny for a withdrawn request is ignored.)
                    return;
                }
                self.qj(id).pending = false;
                self.set_outcome(
                    id,
                    Outcome::Exception {
                        kind: "alloc".into(),
                        wait_status: None,
                    },
                );
                self.events.push_back(Event::QueueException {
                    id,
                    kind: "alloc".into(),
                    note: "denied".into(),
                });
                self.finish_queue(id);
            }
            Action::AllocCancel { id } => {
                let Some(j) = self.q.get_mut(&id) else { return };
                if !j.pending {
                    return;
                }
                if !j.cancel_sent {
                    self.violations
                        .push(format!("job {id}: alloc answered 'cancel' unasked"));
                }
                j.pending = false;
                j.cancel_sent = false;
                // Still eligible (e.g. a stop that was undone): offered again.
                self.offer(id);
            }
            Action::Annotate { id, annotations } => {
                if !self.q.get(&id).is_some_and(|j| j.pending) {
                    self.violations
                        .push(format!("job {id}: annotated without a pending request"));
                }
                self.annotations.insert(id, annotations);
            }
            Action::StartOutput { .. } => {}
            Action::OverrideStart { id } => {
                // testexec refuses a second start ("Job already running").
                if !self.started.insert(id) {
                    self.violations
                        .push(format!("job {id}: override start twice"));
                }
                if self.q.get(&id).is_some_and(|j| j.state == QState::Run) {
                    self.qj(id).started = true;
                    self.events.push_back(Event::QueueStart { id })
                }
            }
            Action::OverrideFinish { id, status } => {
                // testexec answers "Job not found"/"not running" otherwise.
                if !self.started.contains(&id)
                    || self.q.get(&id).is_none_or(|j| j.state != QState::Run)
                {
                    self.violations
                        .push(format!("job {id}: override finish while not running"));
                    return;
                }
                self.set_outcome(id, Outcome::Finished(status));
                self.finish_queue(id);
            }
            Action::Raise {
                id,
                kind,
                wait_status,
                ..
            } => self.except(id, &kind, wait_status),
            Action::CancelApp { app_id, .. } => {
                // Cancelling an application job that already finished would
                // turn its COMPLETED/FAILED into CANCELED.
                if self.apps.get(&app_id).is_some_and(|a| a.done) {
                    self.violations
                        .push(format!("cancelled finished app job {app_id}"));
                }
                self.app_exception(app_id, "cancel")
            }
            Action::Memo { id, memo } => {
                let rec = self.qj(id);
                if let Some(f) = memo.get("fluxion_id").and_then(|v| v.as_i64()) {
                    rec.memo_fluxion_id = Some(f);
                }
                if let Some(r) = memo.get("R") {
                    rec.memo_r = Some(serde_json::from_value(r.clone()).unwrap());
                }
                if let Some(a) = memo.get("app_id").and_then(|v| v.as_u64()) {
                    rec.memo_app_id = Some(a);
                }
            }
            Action::Wake { .. } => self.wake = true,
            Action::ResumeOutput { .. } => {}
            Action::Log { .. } => {}
        }
    }

    fn app_submit(&mut self, id: JobId, container: String, jobspec: &str) {
        // Nothing is forwarded unless the job-manager offers the job now
        // (its dependencies met, not held, its queue started).
        match self.q.get(&id) {
            Some(j) if j.pending && !j.cancel_sent && j.deps.is_empty() && !j.held => {
                if self.stopped.contains(&j.queue) {
                    self.violations
                        .push(format!("job {id} forwarded while its queue is stopped"));
                }
            }
            j => self.violations.push(format!(
                "job {id} forwarded without a standing offer: {:?}",
                j.map(|j| (j.state, j.pending, j.cancel_sent, j.held))
            )),
        }
        if self.refuse.contains(&container) {
            self.events.push_back(Event::SubmitDone {
                id,
                result: Err("nope".into()),
            });
            return;
        }
        let js: serde_json::Value = serde_json::from_str(jobspec).unwrap();
        assert!(js["attributes"]["system"].get("container").is_none());
        let r: Rv1 =
            serde_json::from_value(js["attributes"]["system"]["alloc-bypass"]["R"].clone())
                .unwrap();
        let spec = fluxion::Jobspec::from_value(&js).unwrap();
        if let Err(e) = check_grant(&r, &spec.request, &self.graph) {
            self.violations.push(format!("job {id}: bad grant: {e}"));
        }
        // The invariant: no two live jobs share a core or GPU.
        self.check_no_overlap(&format!("job {id}"), &r);
        if let Some((other, _)) = self.apps.iter().find(|(_, a)| a.queue_id == id) {
            self.violations.push(format!(
                "job {id} dispatched twice (app job {other} exists)"
            ));
        }
        let app_id = self.next_app;
        self.next_app += 1;
        let status = self.fail_status.get(&id).copied().unwrap_or(0);
        self.apps.insert(
            app_id,
            AppJob {
                queue_id: id,
                container: container.clone(),
                log: Vec::new(),
                hidden: false,
                r,
                started: false,
                done: false,
                status,
                cleaned: false,
            },
        );
        // The application journal may show the job (and its start) before
        // the submit RPC's answer is processed.
        if self.rand(3) == 0 {
            let r = self.apps[&app_id].r.clone();
            self.events.push_back(Event::AppSubmitted {
                container,
                app_id,
                queue_id: id,
                fluxion_id: js["attributes"]["user"]["pancake"]["fluxion_id"].as_i64(),
                r: Some(r),
            });
            self.submit_later.push((id, app_id));
            return;
        }
        self.events.push_back(Event::SubmitDone {
            id,
            result: Ok(app_id),
        });
    }

    /// The job-manager takes a success answer: the job runs with R.
    fn alloc_success(&mut self, id: JobId, r: Rv1) {
        let Some(j) = self.q.get(&id) else {
            self.violations
                .push(format!("job {id}: alloc answered for an unknown job"));
            return;
        };
        if !j.pending {
            // The job-manager gives back an R it cannot use.
            if j.state != QState::Inactive && j.state != QState::Cleanup {
                self.violations.push(format!(
                    "job {id}: alloc answered with no request pending ({:?})",
                    j.state
                ));
            }
            self.events.push_back(Event::Free { id, last: true });
            return;
        }
        let local = j.container.is_empty();
        if local {
            self.check_no_overlap(&format!("queue-broker job {id}"), &r);
            self.local_live.insert(id, r.clone());
        } else {
            // The queue job runs exactly while its application job does.
            let app = self.apps.values().find(|a| a.queue_id == id);
            if !app.is_some_and(|a| a.started) {
                self.violations.push(format!(
                    "job {id}: queue job allocated before its app job started"
                ));
            }
            assert_eq!(
                r.execution.expiration, 0.0,
                "queue copy of R has no expiration"
            );
        }
        let j = self.qj(id);
        j.pending = false;
        j.cancel_sent = false;
        j.has_r = true;
        j.r = Some(r);
        j.state = QState::Run;
        // The queue job-manager may take a while to post the alloc.
        if !local && self.rand(3) == 0 {
            self.alloc_later.push(id);
            return;
        }
        self.qj(id).alloc_event = true;
        self.events.push_back(Event::QueueAlloc { id });
    }

    /// The application broker posts `event` for `app_id` (kept in its log).
    fn app_event(&mut self, app_id: JobId, event: AppEvent) {
        let a = self.apps.get_mut(&app_id).unwrap();
        a.log.push(event.clone());
        let container = a.container.clone();
        self.events.push_back(Event::App {
            container,
            app_id,
            event,
        });
    }

    /// Run every forwarded application job (and every job on the queue
    /// broker) one step: start, or finish + clean.
    fn step_apps(&mut self, finish_all: bool) {
        // Submit answers held back from the last step arrive first (a
        // reload in between loses them: the submit is then unconfirmed).
        for (id, app_id) in std::mem::take(&mut self.submit_later) {
            self.events.push_back(Event::SubmitDone {
                id,
                result: Ok(app_id),
            });
        }
        let hidden: Vec<JobId> = self
            .apps
            .iter()
            .filter(|(_, a)| a.hidden)
            .map(|(k, _)| *k)
            .collect();
        for app_id in hidden {
            let a = self.apps.get_mut(&app_id).unwrap();
            a.hidden = false;
            let (container, queue_id, r) = (a.container.clone(), a.queue_id, a.r.clone());
            let fluxion_id = self.q.get(&queue_id).and_then(|r| r.memo_fluxion_id);
            self.feed(Event::AppSubmitted {
                container,
                app_id,
                queue_id,
                fluxion_id,
                r: Some(r),
            });
        }
        let ids: Vec<JobId> = self
            .apps
            .iter()
            .filter(|(_, a)| !a.cleaned)
            .map(|(k, _)| *k)
            .collect();
        for app_id in ids {
            if !finish_all && self.rand(3) == 0 {
                continue;
            }
            let a = self.apps[&app_id].clone();
            if !a.started && !a.done {
                self.apps.get_mut(&app_id).unwrap().started = true;
                self.app_event(app_id, AppEvent::Start);
            } else if !a.done {
                // Finish and clean are separate steps, as in flux-core: the
                // queue side may end in between.
                self.apps.get_mut(&app_id).unwrap().done = true;
                self.app_outcome
                    .insert(a.queue_id, Outcome::Finished(a.status));
                self.app_event(app_id, AppEvent::Finish { status: a.status });
            } else {
                self.apps.get_mut(&app_id).unwrap().cleaned = true;
                self.app_event(app_id, AppEvent::Clean);
            }
            self.drain();
        }
        // Jobs on the queue broker end by themselves.
        let locals: Vec<JobId> = self.local_live.keys().copied().collect();
        for id in locals {
            if !finish_all && self.rand(2) == 0 {
                continue;
            }
            self.local_live.remove(&id);
            let status = self.q[&id].local_status;
            self.app_outcome.insert(id, Outcome::Finished(status));
            self.set_outcome(id, Outcome::Finished(status));
            self.finish_queue(id);
            self.drain();
        }
        // Late allocs arrive after this step's events. (An alloc may lag
        // behind the application's finish and clean.)
        for id in std::mem::take(&mut self.alloc_later) {
            if finish_all || self.rand(3) == 0 {
                self.post_alloc(id);
            } else {
                self.alloc_later.push(id);
            }
        }
        self.drain();
        if std::mem::take(&mut self.wake) {
            self.now += pancake_core::dispatch::SUBMIT_GRACE + 1.0;
            self.feed(Event::Tick);
        }
    }

    /// The job-manager posts the `alloc` event of job `id` (late).
    fn post_alloc(&mut self, id: JobId) {
        if self.q.get(&id).is_some_and(|j| j.state == QState::Run) {
            self.qj(id).alloc_event = true;
            self.events.push_back(Event::QueueAlloc { id });
        }
    }

    /// Every late alloc arrives now.
    fn late_allocs(&mut self) {
        for id in std::mem::take(&mut self.alloc_later) {
            self.post_alloc(id);
        }
        self.drain();
    }

    fn app_exception(&mut self, app_id: JobId, kind: &str) {
        let Some(a) = self.apps.get(&app_id).cloned() else {
            return;
        };
        if a.done {
            return;
        }
        self.apps.get_mut(&app_id).unwrap().done = true;
        self.app_event(
            app_id,
            AppEvent::Exception {
                kind: kind.into(),
                severity: 0,
                note: format!("{kind} on app side"),
            },
        );
        if a.started {
            let status = 15; // killed by SIGTERM
            self.app_outcome.insert(
                a.queue_id,
                Outcome::Exception {
                    kind: kind.into(),
                    wait_status: Some(status),
                },
            );
            self.app_event(app_id, AppEvent::Finish { status });
        } else {
            self.app_outcome.insert(
                a.queue_id,
                Outcome::Exception {
                    kind: kind.into(),
                    wait_status: None,
                },
            );
        }
        self.apps.get_mut(&app_id).unwrap().cleaned = true;
        self.app_event(app_id, AppEvent::Clean);
    }

    fn check_end(&mut self) {
        for q in self.stopped.clone() {
            self.start_queue(&q);
        }
        let held: Vec<JobId> = self
            .q
            .iter()
            .filter(|(_, j)| j.held)
            .map(|(k, _)| *k)
            .collect();
        for id in held {
            self.hold(id, false);
        }
        for _ in 0..60 {
            self.step_apps(true);
            self.drain();
        }
        // Allocations of earlier epochs died with their Fluxion (a reload):
        // they were restored, and counted again, in the new one.
        for fid in self.granted.iter().filter(|(e, _)| *e == self.epoch) {
            match self.cancelled.get(fid) {
                Some(1) => {}
                n => self
                    .violations
                    .push(format!("fluxion id {fid:?} cancelled {n:?} times")),
            }
        }
        for (fid, n) in &self.cancelled {
            if *n > 1 {
                self.violations
                    .push(format!("fluxion id {fid:?} cancelled {n} times"));
            }
        }
        // (A Fluxion restarted after the last match was never loaded again.)
        if let Some(m) = self.fx.matcher() {
            assert_eq!(m.free_cores(), 40, "every core is free at the end");
        }
        for (id, j) in &self.q {
            if j.pending {
                self.violations
                    .push(format!("queue job {id}: alloc request never answered"));
            }
            match (&j.outcome, self.app_outcome.get(id)) {
                (None, _) => self
                    .violations
                    .push(format!("queue job {id} never ended ({:?})", j.state)),
                (Some(q), Some(a))
                    if q != a
                    // A queue-side cancel before the app started ends the queue
                    // job first; its app job then dies of the cancel.
                    && !matches!(q, Outcome::Exception { kind, .. } if kind == "cancel") =>
                {
                    self.violations
                        .push(format!("job {id}: queue {q:?} != app {a:?}"))
                }
                _ => {}
            }
        }
        assert!(
            self.d.jobs().next().is_none(),
            "jobs left: {:?}",
            self.d
                .jobs()
                .map(|j| (
                    j.id,
                    j.phase,
                    j.app_id,
                    j.app_id
                        .and_then(|a| self.apps.get(&a))
                        .map(|a| a.log.clone()),
                    self.q.get(&j.id).map(|q| (q.state, q.pending, q.has_r)),
                    j.progress()
                ))
                .collect::<Vec<_>>()
        );
        assert!(self.violations.is_empty(), "{:#?}", self.violations);
    }
}

fn one_core() -> Request {
    Request::slots(1, 1, 0).with_duration(60)
}

fn whole_node() -> Request {
    Request::nodes(1, Some(10), false).with_duration(60)
}

fn reason(s: &Sim, id: JobId) -> String {
    s.annotations
        .get(&id)
        .and_then(|a| a["sched"]["reason_pending"].as_str())
        .unwrap_or("")
        .to_string()
}

#[test]
fn happy_path_mirrors_exit_codes() {
    let mut s = Sim::new(QueuePolicy::Fcfs, 1);
    s.fail_status.insert(2, 3 << 8);
    s.fail_status.insert(3, 9); // killed by SIGKILL
    for id in 1..=3 {
        s.submit(id, "lammps", &one_core());
    }
    s.check_end();
    assert_eq!(s.q[&1].outcome, Some(Outcome::Finished(0)));
    assert_eq!(s.q[&2].outcome, Some(Outcome::Finished(768)));
    assert_eq!(s.q[&3].outcome, Some(Outcome::Finished(9)));
    assert_eq!(s.d.stats().forwarded, 3);
}

#[test]
fn busy_jobs_wait_and_run_when_cores_free() {
    let mut s = Sim::new(QueuePolicy::Fcfs, 2);
    // Four whole nodes, then one more core: the fifth waits.
    for id in 1..=4 {
        s.submit(id, "ior", &whole_node());
    }
    s.submit(5, "ior", &one_core());
    assert_eq!(s.d.job(5).unwrap().phase, Phase::Waiting);
    assert_eq!(reason(&s, 5), "insufficient resources");
    s.step_apps(true); // start all
    s.step_apps(true); // finish all
    s.step_apps(true); // clean all: frees, job 5 goes
    assert!(s.d.job(5).map(|j| j.app_id.is_some()).unwrap_or(true));
    s.check_end();
}

#[test]
fn never_satisfiable_is_denied_at_once() {
    let mut s = Sim::new(QueuePolicy::Fcfs, 3);
    s.submit(1, "lammps", &Request::nodes(5, Some(5), false));
    s.submit(2, "lammps", &Request::slots(1, 11, 0));
    s.submit(3, "", &Request::slots(1, 1, 3));
    for id in 1..=3 {
        assert!(
            matches!(&s.q[&id].outcome, Some(Outcome::Exception { kind, .. }) if kind == "alloc"),
            "job {id}: {:?}",
            s.q[&id].outcome
        );
    }
    assert_eq!(
        s.d.stats().matches,
        0,
        "no Fluxion call for an impossible request"
    );
    s.check_end();
}

#[test]
fn cancel_before_and_after_forwarding() {
    let mut s = Sim::new(QueuePolicy::Fcfs, 4);
    for id in 1..=4 {
        s.submit(id, "lammps", &whole_node());
    }
    s.submit(5, "lammps", &one_core()); // waits
    s.cancel(5);
    // Cancel job 1 after it was forwarded (not started yet).
    s.cancel(1);
    s.check_end();
    assert_eq!(s.d.stats().forwarded, 4);
}

#[test]
fn app_side_timeout_is_mirrored_with_its_status() {
    let mut s = Sim::new(QueuePolicy::Fcfs, 5);
    s.submit(1, "ior", &one_core());
    s.step_apps(true); // start
    s.drain();
    let app_id = *s.apps.keys().next().unwrap();
    s.app_exception(app_id, "timeout");
    s.drain();
    assert_eq!(
        s.q[&1].outcome,
        Some(Outcome::Exception {
            kind: "timeout".into(),
            wait_status: Some(15)
        })
    );
    s.check_end();
}

#[test]
fn refused_submit_fails_the_job_and_frees_once() {
    let mut s = Sim::new(QueuePolicy::Fcfs, 6);
    s.refuse.push("chatterbug".into());
    s.submit(1, "chatterbug", &one_core());
    assert!(matches!(&s.q[&1].outcome, Some(Outcome::Exception { kind, .. }) if kind == "pancake"));
    s.check_end();
}

/// A held job is never offered, so never matched; a job whose container is
/// down waits and says why.
#[test]
fn held_jobs_and_down_containers_wait() {
    let mut s = Sim::new(QueuePolicy::Fcfs, 7);
    s.feed(Event::ContainerLost {
        container: "ior".into(),
    });
    s.submit(1, "ior", &one_core());
    assert_eq!(reason(&s, 1), "container ior is not connected");
    // Hold 3 before it is offered: it never reaches pancake.
    s.submit_full(3, "lammps", &one_core(), "", 16, &[1]);
    s.hold(3, true);
    assert!(
        s.d.job(1).unwrap().app_id.is_none(),
        "container down: waits"
    );
    assert!(s.d.job(3).is_none(), "depends and held: not offered");
    s.feed(Event::ContainerUp {
        container: "ior".into(),
    });
    assert!(s.d.job(1).unwrap().app_id.is_some());
    s.step_apps(true);
    s.step_apps(true);
    s.step_apps(true); // 1 ends: 3's dependency is met, but it is held
    assert!(s.d.job(3).is_none(), "held: not offered");
    s.hold(3, false);
    assert!(s.d.job(3).is_some_and(|j| j.app_id.is_some()));
    s.check_end();
}

/// A hold on a waiting job withdraws the offer: pancake answers "cancel"
/// and forgets it; released, it is offered again and runs.
#[test]
fn a_hold_withdraws_a_waiting_job() {
    let mut s = Sim::new(QueuePolicy::Fcfs, 17);
    for id in 1..=4 {
        s.submit(id, "lammps", &whole_node());
    }
    s.submit(5, "ior", &one_core()); // waits for cores
    assert!(s.d.job(5).is_some());
    s.hold(5, true);
    assert!(s.d.job(5).is_none(), "withdrawn");
    assert!(!s.q[&5].pending);
    s.step_apps(true);
    s.step_apps(true);
    s.step_apps(true); // cores free: 5 is held, nothing asks for it
    assert!(!s.apps.values().any(|a| a.queue_id == 5));
    s.hold(5, false);
    assert!(
        s.apps.values().any(|a| a.queue_id == 5),
        "released: it runs"
    );
    s.check_end();
}

#[test]
fn easy_backfill_never_dispatches_a_reservation() {
    let mut s = Sim::new(QueuePolicy::Easy, 8);
    for id in 1..=3 {
        s.submit(
            id,
            "lammps",
            &Request::nodes(1, Some(10), false).with_duration(100),
        );
    }
    s.submit(
        4,
        "lammps",
        &Request::nodes(2, Some(20), false).with_duration(100),
    ); // must wait: head
    s.submit(5, "lammps", &Request::slots(1, 1, 0).with_duration(10)); // backfills
    assert!(!s.reserved.is_empty(), "the head job got a reservation");
    assert!(
        s.d.job(4).unwrap().app_id.is_none(),
        "a reserved job is never forwarded"
    );
    assert!(
        s.annotations[&4]["sched"]["t_estimate"].as_f64().unwrap() > 0.0,
        "the reservation's time is shown: {:?}",
        s.annotations[&4]
    );
    assert!(
        s.d.job(5).unwrap().app_id.is_some(),
        "a small job backfills"
    );
    s.check_end();
}

/// With conservative backfill every waiting job within the depth holds a
/// reservation: a job may not backfill if it would delay any of them (with
/// easy, only the head's).
#[test]
fn conservative_reserves_for_more_than_the_head() {
    for policy in [QueuePolicy::Conservative, QueuePolicy::Easy] {
        let mut s = Sim::new(policy, 9);
        // Three of four nodes until t+100; the fourth is free.
        s.submit(
            1,
            "lammps",
            &Request::nodes(3, Some(30), false).with_duration(100),
        );
        // Two nodes: reserved at t+100. The whole cluster: at t+200.
        s.submit(
            2,
            "lammps",
            &Request::nodes(2, Some(20), false).with_duration(100),
        );
        s.submit(
            3,
            "lammps",
            &Request::nodes(4, Some(40), false).with_duration(100),
        );
        // One node for 250 s: it would delay job 3, not job 2.
        s.submit(
            4,
            "lammps",
            &Request::nodes(1, Some(10), false).with_duration(250),
        );
        for id in [2, 3] {
            assert!(s.d.job(id).unwrap().app_id.is_none(), "{id} waits");
        }
        let started = s.d.job(4).unwrap().app_id.is_some();
        match policy {
            QueuePolicy::Conservative => {
                assert_eq!(s.reserved.len(), 3, "jobs 2, 3 and 4 hold reservations");
                assert!(!started, "job 4 would delay job 3's reservation");
            }
            _ => {
                assert_eq!(s.reserved.len(), 1, "easy reserves for the head only");
                assert!(started, "easy lets job 4 backfill");
            }
        }
        s.check_end();
    }
}

/// `flux queue stop`: nothing is matched or forwarded while it is stopped;
/// `start` offers the jobs again and they run.
#[test]
fn a_stopped_queue_forwards_nothing() {
    let mut s = Sim::new(QueuePolicy::Fcfs, 10);
    s.stop_queue("");
    for id in 1..=5 {
        s.submit(id, "lammps", &one_core());
    }
    assert_eq!(s.d.stats().matches, 0);
    assert!(s.apps.is_empty());
    s.start_queue("");
    assert_eq!(s.apps.len(), 5);
    // Stopped with jobs waiting: they are withdrawn, answered "cancel".
    for id in 6..=9 {
        s.submit(id, "ior", &whole_node());
    }
    s.submit(10, "ior", &one_core()); // waits for cores
    s.stop_queue("");
    assert!(!s.q[&10].pending, "withdrawn and answered");
    s.step_apps(true);
    s.step_apps(true);
    s.step_apps(true);
    assert!(!s.apps.values().any(|a| a.queue_id == 10), "stopped: waits");
    s.start_queue("");
    assert!(s.apps.values().any(|a| a.queue_id == 10));
    s.check_end();
}

/// Named queues: a stopped queue holds only its own jobs; under fcfs a
/// blocked head blocks only its own queue.
#[test]
fn named_queues_are_independent() {
    let mut s = Sim::new(QueuePolicy::Fcfs, 11);
    s.stop_queue("debug");
    s.submit_full(1, "lammps", &one_core(), "debug", 16, &[]);
    s.submit_full(2, "lammps", &one_core(), "batch", 16, &[]);
    assert!(s.d.job(1).is_none() && s.apps.values().any(|a| a.queue_id == 2));
    s.start_queue("debug");
    for id in 3..=5 {
        s.submit_full(id, "ior", &whole_node(), "batch", 16, &[]);
    }
    // batch's head does not fit: the rest of batch waits, debug goes on.
    s.submit_full(6, "ior", &whole_node(), "batch", 16, &[]);
    s.submit_full(7, "ior", &one_core(), "batch", 16, &[]);
    s.submit_full(8, "ior", &one_core(), "debug", 16, &[]);
    assert!(s.d.job(7).unwrap().app_id.is_none(), "behind batch's head");
    assert!(
        reason(&s, 7).contains("behind a higher-priority job"),
        "{}",
        reason(&s, 7)
    );
    assert!(s.d.job(8).unwrap().app_id.is_some(), "debug is not blocked");
    s.check_end();
}

/// Jobs without a container take cores from the same graph and run on the
/// queue broker: they never overlap a container job (the sim checks every
/// grant against every live holder).
#[test]
fn jobs_without_a_container_share_the_graph() {
    let mut s = Sim::new(QueuePolicy::Fcfs, 12);
    for id in 1..=3 {
        s.submit(id, "lammps", &whole_node());
    }
    s.submit(4, "", &whole_node()); // runs on the queue broker
    s.submit(5, "", &one_core()); // waits: every core is held
    assert!(s.local_live.contains_key(&4));
    assert!(!s.local_live.contains_key(&5));
    assert_eq!(reason(&s, 5), "insufficient resources");
    s.check_end();
    assert_eq!(s.q[&5].outcome, Some(Outcome::Finished(0)));
    assert_eq!(s.d.stats().local, 2);
}

/// `local-jobs=refuse`: jobs without a container are denied with the reason.
#[test]
fn jobs_without_a_container_can_be_refused() {
    let mut s = Sim::new(QueuePolicy::Fcfs, 13);
    s.d.set_local_refused(true);
    s.submit(1, "", &one_core());
    assert!(matches!(&s.q[&1].outcome, Some(Outcome::Exception { kind, .. }) if kind == "alloc"));
    s.check_end();
}

/// Higher priority first: when cores free up, the job-manager's order
/// decides, whatever the submit order.
#[test]
fn priority_decides_who_goes_first() {
    let mut s = Sim::new(QueuePolicy::Fcfs, 14);
    for id in 1..=4 {
        s.submit(id, "lammps", &whole_node());
    }
    s.submit_full(5, "ior", &whole_node(), "", 10, &[]);
    s.submit_full(6, "ior", &whole_node(), "", 20, &[]);
    s.submit_full(7, "ior", &whole_node(), "", 15, &[]);
    s.reprioritize(5, 30); // urgency raised: now first
    // Free exactly one node at a time: the highest priority gets it.
    let order: Vec<JobId> = (0..3)
        .map(|_| {
            let victim = s
                .apps
                .iter()
                .find(|(_, a)| !a.done)
                .map(|(k, _)| *k)
                .unwrap();
            s.app_exception(victim, "cancel");
            s.drain();
            s.apps.values().last().unwrap().queue_id
        })
        .collect();
    assert_eq!(order, vec![5, 6, 7]);
    s.check_end();
}

fn randomized(reloads: bool, no_restore: bool) {
    // More seeds for a long hunt: PANCAKE_SIM_SEEDS=2000 cargo test ...
    let seeds = std::env::var("PANCAKE_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40u64);
    // One seed, to trace it: PANCAKE_SIM_SEED=N PANCAKE_SIM_TRACE=1.
    let one: Option<u64> = std::env::var("PANCAKE_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok());
    for seed in one.map_or(1..=seeds, |s| s..=s) {
        let policy = match seed % 3 {
            0 => QueuePolicy::Easy,
            1 => QueuePolicy::Fcfs,
            _ => QueuePolicy::Conservative,
        };
        let mut params = SchedParams::new(policy);
        if seed % 4 == 0 {
            params.queue_depth = 2; // passes cut short all the time
        }
        let mut s = Sim::with_params(params, seed);
        s.no_restore = no_restore;
        for id in 1..=60u64 {
            let c = match s.rand(8) {
                0 => "",
                n => CONTAINERS[(n % 3) as usize],
            };
            let req = match s.rand(5) {
                0 => Request::nodes(1 + s.rand(4) as u32, Some(4), false),
                1 => Request::slots(1, 1 + s.rand(10) as u32, s.rand(3) as u32),
                2 => Request::nodes(1 + s.rand(2) as u32, None, false),
                _ => Request::slots(1 + s.rand(6) as u32, 1, 0),
            }
            .with_duration(10 + s.rand(100));
            if s.rand(4) == 0 {
                let code = ((1 + s.rand(5)) as i32) << 8;
                s.fail_status.insert(id, code);
            }
            let queue = ["", "debug"][s.rand(2) as usize];
            let priority = 10 + s.rand(10) as i64;
            let deps: Vec<JobId> = if id > 1 && s.rand(5) == 0 {
                vec![1 + s.rand(id - 1)]
            } else {
                vec![]
            };
            s.submit_full(id, c, &req, queue, priority, &deps);
            match s.rand(12) {
                0 => {
                    let victim = 1 + s.rand(id);
                    s.cancel(victim);
                }
                1 => {
                    let live: Vec<JobId> = s
                        .apps
                        .iter()
                        // (A job still in job-ingest cannot get one yet.)
                        .filter(|(_, a)| !a.done && !a.hidden)
                        .map(|(k, _)| *k)
                        .collect();
                    if !live.is_empty() {
                        let v = live[s.rand(live.len() as u64) as usize];
                        s.app_exception(v, "timeout");
                        s.drain();
                    }
                }
                2 => {
                    let q = ["", "debug"][s.rand(2) as usize];
                    if s.stopped.contains(q) {
                        s.start_queue(q);
                    } else {
                        s.stop_queue(q);
                    }
                }
                3 => {
                    let v = 1 + s.rand(id);
                    let held = s.q.get(&v).is_some_and(|j| j.held);
                    s.hold(v, !held);
                }
                4 => {
                    let v = 1 + s.rand(id);
                    let p = 5 + s.rand(20) as i64;
                    s.reprioritize(v, p);
                }
                _ => {}
            }
            s.step_apps(false);
            if reloads && s.rand(8) == 0 {
                s.reload();
            }
            if reloads && s.rand(10) == 0 {
                s.restart_fluxion();
            }
        }
        eprintln!("seed {seed}");
        s.check_end();
        if reloads {
            assert!(s.epoch > 0, "seed {seed}: the run reloaded");
        }
    }
}

#[test]
fn randomized_workloads_keep_the_invariants() {
    randomized(false, false);
}

/// The same workloads with module reloads at random points: nothing is
/// dispatched or started twice, no core is shared, every allocation the
/// last Fluxion holds is freed once, and every queue job still ends as its
/// application job did.
#[test]
fn randomized_workloads_with_reloads_keep_the_invariants() {
    randomized(true, false);
}

/// Reloads against a Fluxion that cannot restore (the public service, or
/// one that restarted): it hands out cores recovered jobs still hold, and
/// the dispatcher must refuse every such grant.
#[test]
fn reloads_against_a_fluxion_without_restore_never_share_a_core() {
    randomized(true, true);
}

/// One job, offered, with its container up: what the dispatcher asks.
fn offered(d: &mut Dispatcher, id: JobId, req: &Request) -> Vec<Action> {
    let mut js: serde_json::Value = serde_json::from_str(&req.to_jobspec_json(&["true"])).unwrap();
    js["attributes"]["system"]["container"] = "c".into();
    d.handle(
        0.0,
        Event::Alloc {
            id,
            jobspec: js.to_string(),
            priority: 1,
            t_submit: 1.0,
        },
    )
}

#[test]
fn matched_errors_other_than_busy_fail_the_job() {
    let mut d = Dispatcher::new(QueuePolicy::Fcfs);
    assert!(
        offered(&mut d, 6, &one_core()).is_empty(),
        "nothing is matched before fluxion holds the graph"
    );
    let a = d.handle(0.0, Event::AllocCancel { id: 6 });
    assert_eq!(a, vec![Action::AllocCancel { id: 6 }]);
    d.set_capacity(Capacity::of(&sample_rv1(4, 10, 2)).unwrap());
    d.handle(
        0.0,
        Event::ContainerUp {
            container: "c".into(),
        },
    );
    let a = offered(&mut d, 7, &one_core());
    assert!(matches!(
        a.as_slice(),
        [Action::Match {
            id: 7,
            reserve: false,
            ..
        }]
    ));
    let a = d.handle(
        0.0,
        Event::Matched {
            id: 7,
            result: Err(FluxionError::Unavailable("down".into())),
        },
    );
    assert!(
        a.iter().all(|a| !matches!(a, Action::Raise { .. })),
        "unavailable: the job waits"
    );
    assert!(a.iter().any(|a| matches!(a, Action::Wake { .. })));
    let a = d.handle(
        0.0,
        Event::ContainerUp {
            container: "c".into(),
        },
    );
    assert!(a.is_empty(), "no call before the wake-up: {a:?}");
    let a = d.handle(1.0, Event::Tick);
    assert!(
        matches!(a.as_slice(), [Action::Match { id: 7, .. }]),
        "retried at the wake-up: {a:?}"
    );
    let a = d.handle(
        0.0,
        Event::Matched {
            id: 7,
            result: Err(FluxionError::Unsatisfiable("too big".into())),
        },
    );
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::AllocDeny { id: 7, .. })),
        "{a:?}"
    );
    assert!(d.job(7).is_none());
}

/// A grant that does not match the request (a Fluxion bug, or a server
/// speaking another dialect) fails the job; it is never forwarded.
#[test]
fn a_grant_that_does_not_fit_the_request_is_never_forwarded() {
    let graph = sample_rv1(4, 10, 2);
    let mut d = Dispatcher::new(QueuePolicy::Fcfs);
    d.set_capacity(Capacity::of(&graph).unwrap());
    d.set_graph(graph.clone());
    d.handle(
        0.0,
        Event::ContainerUp {
            container: "c".into(),
        },
    );
    let a = offered(&mut d, 3, &Request::slots(2, 1, 0));
    assert!(matches!(a.as_slice(), [Action::Match { id: 3, .. }]));
    // One core where two were asked for.
    let r: Rv1 = serde_json::from_value(serde_json::json!({
        "version": 1,
        "execution": {"R_lite": [{"rank": "0", "children": {"core": "0"}}],
                      "starttime": 0.0, "expiration": 0.0, "nodelist": ["flux-sample-0"]}
    }))
    .unwrap();
    let a = d.handle(
        0.0,
        Event::Matched {
            id: 3,
            result: Ok(Granted {
                fluxion_id: 9,
                r,
                reserved: false,
                at: 0.0,
            }),
        },
    );
    assert!(
        a.iter().all(|a| !matches!(a, Action::Submit { .. })),
        "{a:?}"
    );
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::Cancel { fluxion_id: 9 }))
    );
    assert!(
        a.iter().any(
            |a| matches!(a, Action::Raise { id: 3, note, .. } if note.contains("does not fit"))
        )
    );
    assert_eq!(d.stats().granted, d.stats().freed);
}

/// A lost broker's running jobs fail at once, but their cores stay held
/// (the killed broker's tasks may still run them) until the broker is back
/// without them, or until the lost-grace time when one is set; jobs waiting
/// for those cores say so.
#[test]
fn a_lost_brokers_cores_are_held_until_it_returns_or_the_grace_passes() {
    for grace in [None, Some(30.0)] {
        let mut s = Sim::new(QueuePolicy::Fcfs, 11);
        s.d.set_lost_grace(grace);
        for id in 1..=4 {
            s.submit(id, "ior", &whole_node());
        }
        s.submit(5, "lammps", &one_core()); // waits: the cluster is full
        s.step_apps(true); // the ior jobs start
        assert!(s.d.job(5).unwrap().app_id.is_none());
        s.feed(Event::ContainerLost {
            container: "ior".into(),
        });
        for id in 1..=4 {
            assert!(
                matches!(&s.q[&id].outcome, Some(Outcome::Exception { kind, .. }) if kind == "pancake"),
                "job {id} fails when its broker is lost: {:?}",
                s.q[&id].outcome
            );
        }
        s.drain();
        assert!(
            s.d.job(5).unwrap().app_id.is_none(),
            "the lost jobs' cores are still held"
        );
        assert!(
            reason(&s, 5).contains("lost container ior"),
            "{}",
            reason(&s, 5)
        );
        // The ior jobs are gone with their broker (they never clean there).
        for a in s.apps.values_mut() {
            if a.container == "ior" {
                a.done = true;
                a.cleaned = true;
            }
        }
        match grace {
            None => {
                s.feed(Event::ContainerUp {
                    container: "ior".into(),
                });
                assert!(
                    s.d.job(5).unwrap().app_id.is_none(),
                    "not before its backlog"
                );
                s.feed(Event::AppBacklogDone {
                    container: "ior".into(),
                });
            }
            Some(g) => {
                assert!(s.wake, "a wake-up was asked for");
                s.wake = false;
                s.now += g + 1.0;
                s.feed(Event::Tick);
            }
        }
        assert!(
            s.d.job(5).unwrap().app_id.is_some(),
            "grace {grace:?}: the waiting job got the freed cores"
        );
        for id in 1..=4 {
            assert!(s.d.job(id).is_none(), "job {id} is forgotten");
        }
        s.check_end();
    }
}

/// At queue broker shutdown (CLEANUP) nothing new starts: freed cores are
/// not matched, a starting application job's queue job is not started;
/// withdrawn requests are answered at once, so `flux queue idle` is not
/// kept waiting; running jobs are still mirrored to the end.
#[test]
fn a_draining_queue_starts_nothing_new_and_mirrors_the_rest() {
    let mut s = Sim::new(QueuePolicy::Fcfs, 12);
    for id in 1..=4 {
        s.submit(id, "lammps", &whole_node());
    }
    s.submit(5, "ior", &one_core()); // waits: the cluster is full
    s.step_apps(true); // 1-4 start
    s.feed(Event::Drain);
    s.stop_queue(""); // rc1's cleanup
    assert!(!s.q[&5].pending, "answered at once");
    let matches = s.d.stats().matches;
    s.step_apps(true); // 1-4 finish
    s.step_apps(true); // ... and clean: their cores are free
    assert_eq!(
        s.d.stats().matches,
        matches,
        "nothing matched while draining"
    );
    for id in 1..=4 {
        assert_eq!(
            s.q[&id].outcome,
            Some(Outcome::Finished(0)),
            "job {id} mirrored"
        );
    }
    assert_eq!(s.d.stats().granted, s.d.stats().freed);
}

/// A forwarded job whose request is withdrawn while the broker shuts down
/// is answered "cancel" at once; its application job runs on, and the
/// queue job is not started.
#[test]
fn a_draining_queue_answers_forwarded_jobs_at_once() {
    let mut s = Sim::new(QueuePolicy::Fcfs, 15);
    s.submit(1, "lammps", &one_core()); // forwarded, not started
    assert!(s.apps.values().any(|a| a.queue_id == 1));
    s.stop_queue(""); // the cleanup's queue stop may come before the drain
    assert!(
        s.q[&1].pending,
        "outside a drain the forwarded job's request stands"
    );
    s.feed(Event::Drain);
    assert!(!s.q[&1].pending, "answered at the drain");
    s.step_apps(true); // the application job starts
    assert_eq!(s.q[&1].state, QState::Sched, "not started while draining");
}

/// While the cluster is full and the head of the queue was refused, new
/// submissions cost no Fluxion call (nothing was freed: they could only be
/// refused); the next free starts a new pass that tries them all.
#[test]
fn submissions_behind_a_blocked_head_ask_fluxion_nothing() {
    let mut s = Sim::new(QueuePolicy::Fcfs, 13);
    for id in 1..=4 {
        s.submit(id, "lammps", &whole_node());
    }
    s.submit(5, "ior", &one_core()); // refused: the head now waits
    let matches = s.d.stats().matches;
    for id in 6..=30 {
        s.submit(id, "ior", &one_core());
    }
    assert_eq!(s.d.stats().matches, matches, "no futile Fluxion call");
    s.check_end(); // every job still runs, once cores are freed
}

/// The backlog scenario of the issue: one job holds 3 of 4 nodes, many
/// whole-cluster jobs wait behind it, then small jobs that can backfill on
/// the free node. Each small job costs a handful of Fluxion calls, however
/// long the backlog, and the whole-cluster jobs are not asked again and
/// again.
#[test]
fn a_long_backlog_costs_a_bounded_number_of_fluxion_calls_per_job() {
    for backlog in [100u64, 2000] {
        let mut s = Sim::new(QueuePolicy::Easy, 16);
        s.submit(
            1,
            "lammps",
            &Request::nodes(3, Some(30), false).with_duration(3600),
        );
        for id in 2..2 + backlog {
            s.submit(
                id,
                "ior",
                &Request::nodes(4, Some(40), false).with_duration(600),
            );
        }
        s.step_apps(true); // job 1 starts
        let before = s.d.stats().matches;
        let small = 50;
        for k in 0..small {
            let id = 10_000 + k;
            s.submit(id, "chatterbug", &Request::slots(1, 1, 0).with_duration(30));
            assert!(
                s.apps.values().any(|a| a.queue_id == id),
                "backlog {backlog}: small job {k} backfilled at once"
            );
            // It runs and ends: cores are freed, a new pass starts.
            for _ in 0..3 {
                let a = s
                    .apps
                    .iter()
                    .find(|(_, a)| a.queue_id == id)
                    .map(|(k, _)| *k);
                let a = a.unwrap();
                let st = s.apps[&a].clone();
                if !st.started {
                    s.apps.get_mut(&a).unwrap().started = true;
                    s.app_event(a, AppEvent::Start);
                } else if !st.done {
                    s.apps.get_mut(&a).unwrap().done = true;
                    s.app_outcome.insert(id, Outcome::Finished(0));
                    s.app_event(a, AppEvent::Finish { status: 0 });
                } else {
                    s.apps.get_mut(&a).unwrap().cleaned = true;
                    s.app_event(a, AppEvent::Clean);
                }
                s.drain();
                s.late_allocs();
            }
        }
        let per_job = (s.d.stats().matches - before) as f64 / small as f64;
        assert!(
            per_job <= 4.0,
            "backlog {backlog}: {per_job} Fluxion calls per small job"
        );
        assert!(
            s.d.stats().annotations <= backlog + 4 * small + 10,
            "annotations only when a reason changes: {}",
            s.d.stats().annotations
        );
    }
}

/// queue-depth bounds the Fluxion calls of one pass, even when every job
/// has its own shape.
#[test]
fn a_pass_asks_at_most_queue_depth_jobs() {
    let mut params = SchedParams::new(QueuePolicy::Easy);
    params.queue_depth = 8;
    let mut s = Sim::with_params(params, 18);
    s.submit(
        1,
        "lammps",
        &Request::nodes(4, Some(40), false).with_duration(3600),
    );
    s.step_apps(true); // the cluster is full
    // A new pass (a change that could let jobs go), with nothing started.
    s.feed(Event::ContainerUp {
        container: "ior".into(),
    });
    let before = s.d.stats().matches;
    // 40 distinct shapes (durations), none fits.
    for id in 2..42 {
        s.submit(id, "ior", &Request::slots(1, 1, 0).with_duration(id * 7));
    }
    let asked = s.d.stats().matches - before;
    assert_eq!(asked, 8, "{asked} calls for 40 distinct jobs");
    s.check_end();
}
