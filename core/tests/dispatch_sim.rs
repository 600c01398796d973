//! The dispatcher against a simulated pod: the embedded Fluxion for real,
//! and fake application brokers and queue job-manager that follow flux-core's
//! event order. Randomized workloads check the invariants of DESIGN.md.

use std::collections::{BTreeMap, HashMap, VecDeque};

use fluxion::conformance::sample_rv1;
use fluxion::{Fluxion, FluxionError, Request, Rv1, allocation_to_rv1, rv1_to_jgf};
use pancake_core::dispatch::{
    Action, AppEvent, Capacity, Dispatcher, Event, Granted, JobId, Prior, QueuePolicy, check_grant,
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

/// What the queue broker keeps about a job (its eventlog), which a reloaded
/// module reads back from the journal backlog.
#[derive(Debug, Clone, Default)]
struct QueueRecord {
    container: String,
    jobspec: String,
    held: bool,
    released: bool,
    alloc: bool,
    started: bool,
    ended: bool,
    memo_fluxion_id: Option<i64>,
    memo_r: Option<Rv1>,
    memo_app_id: Option<JobId>,
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

struct Sim {
    d: Dispatcher,
    fx: fluxion::EmbeddedFluxion,
    graph: Rv1,
    now: f64,
    events: VecDeque<Event>,
    apps: BTreeMap<JobId, AppJob>,
    next_app: JobId,
    /// (epoch, fluxion id) -> times cancelled; the epoch counts module
    /// reloads (each starts a fresh Fluxion, whose ids restart).
    cancelled: HashMap<(u32, i64), u32>,
    granted: Vec<(u32, i64)>,
    epoch: u32,
    records: BTreeMap<JobId, QueueRecord>,
    reserved: Vec<i64>,
    queue: BTreeMap<JobId, Option<Outcome>>,
    app_outcome: BTreeMap<JobId, Outcome>,
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
    /// Queue jobs whose dependency-add was seen, and ones still to come.
    held: std::collections::HashSet<JobId>,
    held_later: Vec<JobId>,
    /// Queue jobs whose override start took effect, and allocs still to come.
    started: std::collections::HashSet<JobId>,
    alloc_later: Vec<JobId>,
    /// Submit answers still to come: (queue id, app id).
    submit_later: Vec<(JobId, JobId)>,
}

impl Sim {
    fn new(policy: QueuePolicy, seed: u64) -> Sim {
        let graph = sample_rv1(4, 10, 2);
        let mut fx = fluxion::EmbeddedFluxion::new();
        fx.init("first", &rv1_to_jgf(&graph).unwrap()).unwrap();
        let mut d = Dispatcher::new(policy);
        d.set_capacity(Capacity::of(&graph).unwrap());
        d.set_graph(graph.clone());
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
            records: BTreeMap::new(),
            reserved: Vec::new(),
            queue: BTreeMap::new(),
            app_outcome: BTreeMap::new(),
            fail_status: HashMap::new(),
            refuse: Vec::new(),
            no_restore: false,
            wake: false,
            rng: seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407)
                | 1,
            violations: Vec::new(),
            held: Default::default(),
            held_later: Vec::new(),
            started: Default::default(),
            alloc_later: Vec::new(),
            submit_later: Vec::new(),
        };
        for c in ["lammps", "ior", "chatterbug"] {
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

    fn submit(&mut self, id: JobId, container: &str, req: &Request) {
        let mut js: serde_json::Value =
            serde_json::from_str(&req.to_jobspec_json(&["true"])).unwrap();
        js["attributes"]["system"]["container"] = container.into();
        js["attributes"]["system"]["environment"] = serde_json::json!({"HOME": "/root"});
        self.queue.insert(id, None);
        self.records.insert(
            id,
            QueueRecord {
                container: container.into(),
                jobspec: js.to_string(),
                ..Default::default()
            },
        );
        self.feed(Event::Submitted {
            id,
            container: container.into(),
            jobspec: js.to_string(),
            priority: 16,
            t_submit: self.now + id as f64,
            urgency: 16,
        });
        // The queue plugin's dependency-add usually shows up at once, but
        // under load it may come after the application job has started.
        if self.rand(3) == 0 {
            self.held_later.push(id);
        } else {
            self.held.insert(id);
            self.rec(id).held = true;
            self.feed(Event::QueueHeld { id });
        }
    }

    /// `flux module reload pancake`: what the old module had in flight dies
    /// with it (its Fluxion too); a new dispatcher and a fresh Fluxion learn
    /// everything back from the brokers' records, in the order the module
    /// reads them: the queue journal backlog, then each container's.
    fn reload(&mut self) {
        self.events.clear();
        self.submit_later.clear();
        self.epoch += 1;
        let mut fx = fluxion::EmbeddedFluxion::new();
        fx.init("first", &rv1_to_jgf(&self.graph).unwrap()).unwrap();
        self.fx = fx;
        let mut d = Dispatcher::new(self.d.policy());
        d.begin_recovery(&["lammps", "ior", "chatterbug"]);
        self.d = d;
        // The queue's and the containers' journals race: any container's
        // backlog may come before the queue's (the dispatcher must hold it).
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
                        .records
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
        let containers = ["lammps", "ior", "chatterbug"];
        let early: Vec<&str> = containers
            .iter()
            .copied()
            .filter(|_| self.rand(3) == 0)
            .collect();
        for c in &early {
            self.app_backlog(c);
        }
        let active: Vec<(JobId, QueueRecord)> = self
            .records
            .iter()
            .filter(|(_, r)| !r.ended)
            .map(|(k, r)| (*k, r.clone()))
            .collect();
        for (id, r) in active {
            self.feed(Event::Recovered {
                id,
                container: r.container.clone(),
                jobspec: r.jobspec.clone(),
                priority: 16,
                t_submit: 1000.0 + id as f64,
                urgency: 16,
                prior: Prior {
                    fluxion_id: r.memo_fluxion_id,
                    r: r.memo_r.clone(),
                    app_id: r.memo_app_id,
                    dispatched_at: Some(0.0),
                    released: r.released,
                    started: r.started,
                },
            });
            if r.held {
                self.feed(Event::QueueHeld { id });
            }
            if r.alloc {
                self.feed(Event::QueueAlloc { id });
            }
            if r.started {
                self.feed(Event::QueueStart { id });
            }
        }
        self.feed(Event::QueueBacklogDone);
        let up_first = self.rand(2) == 0;
        if up_first {
            self.fluxion_ready(&containers);
        }
        for c in containers {
            if !early.contains(&c) {
                self.app_backlog(c);
            }
        }
        if !up_first {
            self.fluxion_ready(&containers);
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
            let fluxion_id = self
                .records
                .get(&a.queue_id)
                .and_then(|r| r.memo_fluxion_id);
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

    fn fluxion_ready(&mut self, containers: &[&str]) {
        self.d.set_capacity(Capacity::of(&self.graph).unwrap());
        self.d.set_graph(self.graph.clone());
        for c in containers {
            self.feed(Event::ContainerUp {
                container: (*c).into(),
            });
        }
    }

    fn rec(&mut self, id: JobId) -> &mut QueueRecord {
        self.records.entry(id).or_default()
    }

    /// `flux cancel` of queue job `id`: the exception, then the job ends.
    fn cancel(&mut self, id: JobId) {
        self.feed(Event::QueueException {
            id,
            kind: "cancel".into(),
            note: "by user".into(),
        });
        self.end_queue(
            id,
            Outcome::Exception {
                kind: "cancel".into(),
                wait_status: None,
            },
        );
        self.drain();
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

    fn end_queue(&mut self, id: JobId, o: Outcome) {
        match self.queue.get_mut(&id) {
            Some(slot @ None) => *slot = Some(o),
            Some(Some(prev)) => self
                .violations
                .push(format!("job {id} ended twice: {prev:?} then {o:?}")),
            None => self
                .violations
                .push(format!("unknown queue job {id} ended")),
        }
        self.rec(id).ended = true;
        self.events.push_back(Event::QueueInactive { id });
    }

    fn act(&mut self, a: Action) {
        match a {
            Action::Match {
                id,
                jobspec,
                reserve,
            } => {
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
            } => {
                if self.refuse.contains(&container) {
                    self.events.push_back(Event::SubmitDone {
                        id,
                        result: Err("nope".into()),
                    });
                    return;
                }
                let js: serde_json::Value = serde_json::from_str(&jobspec).unwrap();
                assert!(js["attributes"]["system"].get("container").is_none());
                let r: Rv1 =
                    serde_json::from_value(js["attributes"]["system"]["alloc-bypass"]["R"].clone())
                        .unwrap();
                let spec = fluxion::Jobspec::from_value(&js).unwrap();
                if let Err(e) = check_grant(&r, &spec.request, &self.graph) {
                    self.violations.push(format!("job {id}: bad grant: {e}"));
                }
                // The invariant: no two live application jobs share a core or GPU.
                for (other, a) in &self.apps {
                    if !a.cleaned && a.r.overlaps(&r).unwrap() {
                        self.violations
                            .push(format!("job {id} overlaps app job {other}"));
                    }
                }
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
                // The application journal may show the job (and its start)
                // before the submit RPC's answer is processed.
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
                let _ = container;
                self.events.push_back(Event::SubmitDone {
                    id,
                    result: Ok(app_id),
                });
            }
            Action::Release { id, r } => {
                if !self.held.contains(&id) {
                    self.violations
                        .push(format!("job {id} released before it was held"));
                }
                assert_eq!(
                    r.execution.expiration, 0.0,
                    "queue copy of R has no expiration"
                );
                if std::mem::replace(&mut self.rec(id).released, true) {
                    self.violations.push(format!("job {id} released twice"));
                }
                // The queue job-manager may take a while to allocate it.
                if self.rand(3) == 0 {
                    self.alloc_later.push(id);
                    return;
                }
                self.rec(id).alloc = true;
                self.events.push_back(Event::QueueAlloc { id });
            }
            Action::OverrideStart { id } => {
                // testexec refuses a second start ("Job already running").
                if !self.started.insert(id) {
                    self.violations
                        .push(format!("job {id}: override start twice"));
                }
                self.rec(id).started = true;
                self.events.push_back(Event::QueueStart { id })
            }
            Action::OverrideFinish { id, status } => {
                // testexec answers "Job not found"/"not running" otherwise.
                if !self.started.contains(&id) {
                    self.violations
                        .push(format!("job {id}: override finish before its start"));
                }
                self.end_queue(id, Outcome::Finished(status))
            }
            Action::Raise {
                id,
                kind,
                wait_status,
                ..
            } => self.end_queue(id, Outcome::Exception { kind, wait_status }),
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
                let rec = self.rec(id);
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

    /// Run every forwarded application job one step: start, or finish + clean.
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
            let fluxion_id = self.records.get(&queue_id).and_then(|r| r.memo_fluxion_id);
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
        // Late allocs and dependency-adds arrive after this step's events.
        // (An alloc may lag behind the application's finish and clean.)
        for id in std::mem::take(&mut self.alloc_later) {
            if finish_all || self.rand(3) == 0 {
                self.rec(id).alloc = true;
                self.events.push_back(Event::QueueAlloc { id });
            } else {
                self.alloc_later.push(id);
            }
        }
        for id in std::mem::take(&mut self.held_later) {
            self.held.insert(id);
            self.rec(id).held = true;
            self.events.push_back(Event::QueueHeld { id });
        }
        self.drain();
        if std::mem::take(&mut self.wake) {
            self.now += pancake_core::dispatch::SUBMIT_GRACE + 1.0;
            self.feed(Event::Tick);
        }
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
        for _ in 0..50 {
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
        for (id, o) in &self.queue {
            match (o, self.app_outcome.get(id)) {
                (None, _) => self.violations.push(format!("queue job {id} never ended")),
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
                    self.records.get(&j.id).cloned(),
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

#[test]
fn happy_path_mirrors_exit_codes() {
    let mut s = Sim::new(QueuePolicy::Fcfs, 1);
    s.fail_status.insert(2, 3 << 8);
    s.fail_status.insert(3, 9); // killed by SIGKILL
    for id in 1..=3 {
        s.submit(id, "lammps", &one_core());
    }
    s.check_end();
    assert_eq!(s.queue[&1], Some(Outcome::Finished(0)));
    assert_eq!(s.queue[&2], Some(Outcome::Finished(768)));
    assert_eq!(s.queue[&3], Some(Outcome::Finished(9)));
    assert_eq!(s.d.stats().forwarded, 3);
}

#[test]
fn busy_jobs_wait_and_run_when_cores_free() {
    let mut s = Sim::new(QueuePolicy::Fcfs, 2);
    // Four whole nodes, then one more core: the fifth waits.
    for id in 1..=4 {
        s.submit(
            id,
            "ior",
            &Request::nodes(1, Some(10), false).with_duration(60),
        );
    }
    s.submit(5, "ior", &one_core());
    assert_eq!(
        s.d.job(5).unwrap().phase,
        pancake_core::dispatch::Phase::Waiting
    );
    s.step_apps(true); // start all
    s.step_apps(true); // finish all
    s.step_apps(true); // clean all: frees, job 5 goes
    assert!(s.d.job(5).map(|j| j.app_id.is_some()).unwrap_or(true));
    s.check_end();
}

#[test]
fn never_satisfiable_fails_at_once() {
    let mut s = Sim::new(QueuePolicy::Fcfs, 3);
    s.submit(1, "lammps", &Request::nodes(5, Some(5), false));
    s.submit(2, "lammps", &Request::slots(1, 11, 0));
    s.submit(3, "lammps", &Request::slots(1, 1, 3));
    for id in 1..=3 {
        assert!(
            matches!(&s.queue[&id], Some(Outcome::Exception { kind, .. }) if kind == "alloc"),
            "job {id}: {:?}",
            s.queue[&id]
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
        s.submit(
            id,
            "lammps",
            &Request::nodes(1, Some(10), false).with_duration(60),
        );
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
        s.queue[&1],
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
    assert!(matches!(&s.queue[&1], Some(Outcome::Exception { kind, .. }) if kind == "pancake"));
    s.check_end();
}

#[test]
fn held_jobs_and_down_containers_wait() {
    let mut s = Sim::new(QueuePolicy::Fcfs, 7);
    s.feed(Event::ContainerLost {
        container: "ior".into(),
    });
    s.submit(1, "ior", &one_core());
    s.submit(2, "lammps", &one_core());
    s.feed(Event::Urgency { id: 2, urgency: 0 });
    // Job 2 was already matched before the hold arrived? It was submitted first,
    // so hold a third one before it can be matched.
    s.queue.insert(3, None);
    let mut js: serde_json::Value =
        serde_json::from_str(&one_core().to_jobspec_json(&["true"])).unwrap();
    js["attributes"]["system"]["container"] = "lammps".into();
    s.feed(Event::Submitted {
        id: 3,
        container: "lammps".into(),
        jobspec: js.to_string(),
        priority: 16,
        t_submit: 1.0,
        urgency: 0,
    });
    s.held.insert(3);
    s.feed(Event::QueueHeld { id: 3 });
    assert!(
        s.d.job(1).unwrap().app_id.is_none(),
        "container down: job waits"
    );
    assert!(s.d.job(3).unwrap().app_id.is_none(), "held: job waits");
    s.feed(Event::ContainerUp {
        container: "ior".into(),
    });
    s.feed(Event::Urgency { id: 3, urgency: 16 });
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
        s.d.job(5).unwrap().app_id.is_some(),
        "a small job backfills"
    );
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
        let policy = if seed % 2 == 0 {
            QueuePolicy::Easy
        } else {
            QueuePolicy::Fcfs
        };
        let mut s = Sim::new(policy, seed);
        s.no_restore = no_restore;
        let containers = ["lammps", "ior", "chatterbug"];
        for id in 1..=60u64 {
            let c = containers[s.rand(3) as usize];
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
            s.submit(id, c, &req);
            match s.rand(10) {
                0 => {
                    let victim = 1 + s.rand(id);
                    if s.queue.get(&victim) == Some(&None) {
                        s.cancel(victim);
                    }
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

#[test]
fn matched_errors_other_than_busy_fail_the_job() {
    let mut d = Dispatcher::new(QueuePolicy::Fcfs);
    d.handle(
        0.0,
        Event::ContainerUp {
            container: "c".into(),
        },
    );
    let mut js: serde_json::Value =
        serde_json::from_str(&one_core().to_jobspec_json(&["true"])).unwrap();
    js["attributes"]["system"]["container"] = "c".into();
    let a = d.handle(
        0.0,
        Event::Submitted {
            id: 7,
            container: "c".into(),
            jobspec: js.to_string(),
            priority: 1,
            t_submit: 0.0,
            urgency: 16,
        },
    );
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
    let a = d.handle(
        0.0,
        Event::ContainerUp {
            container: "c".into(),
        },
    );
    assert!(
        matches!(a.as_slice(), [Action::Match { id: 7, .. }]),
        "retried on the next event"
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
            .any(|a| matches!(a, Action::Raise { id: 7, kind, .. } if kind == "alloc"))
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
    let mut js: serde_json::Value =
        serde_json::from_str(&Request::slots(2, 1, 0).to_jobspec_json(&["true"])).unwrap();
    js["attributes"]["system"]["container"] = "c".into();
    let a = d.handle(
        0.0,
        Event::Submitted {
            id: 3,
            container: "c".into(),
            jobspec: js.to_string(),
            priority: 1,
            t_submit: 0.0,
            urgency: 16,
        },
    );
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
/// without them, or until the lost-grace time when one is set.
#[test]
fn a_lost_brokers_cores_are_held_until_it_returns_or_the_grace_passes() {
    for grace in [None, Some(30.0)] {
        let mut s = Sim::new(QueuePolicy::Fcfs, 11);
        s.d.set_lost_grace(grace);
        for id in 1..=4 {
            s.submit(
                id,
                "ior",
                &Request::nodes(1, Some(10), false).with_duration(60),
            );
        }
        s.submit(5, "lammps", &one_core()); // waits: the cluster is full
        s.step_apps(true); // the ior jobs start
        assert!(s.d.job(5).unwrap().app_id.is_none());
        s.feed(Event::ContainerLost {
            container: "ior".into(),
        });
        for id in 1..=4 {
            assert!(
                matches!(&s.queue[&id], Some(Outcome::Exception { kind, .. }) if kind == "pancake"),
                "job {id} fails when its broker is lost: {:?}",
                s.queue[&id]
            );
        }
        s.drain();
        assert!(
            s.d.job(5).unwrap().app_id.is_none(),
            "the lost jobs' cores are still held"
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
        // Only job 5's allocation is still to be freed; the ior jobs' were.
        s.check_end();
    }
}

/// At queue broker shutdown (CLEANUP) nothing new starts: freed cores are
/// not matched, a match in flight is given back, a starting application job
/// is not released; running jobs are still mirrored to the end.
#[test]
fn a_draining_queue_starts_nothing_new_and_mirrors_the_rest() {
    let mut s = Sim::new(QueuePolicy::Fcfs, 12);
    for id in 1..=4 {
        s.submit(
            id,
            "lammps",
            &Request::nodes(1, Some(10), false).with_duration(60),
        );
    }
    s.submit(5, "ior", &one_core()); // waits: the cluster is full
    s.step_apps(true); // 1-4 start
    let released_before = s.records.values().filter(|r| r.released).count();
    s.feed(Event::Drain);
    let matches = s.d.stats().matches;
    s.step_apps(true); // 1-4 finish
    s.step_apps(true); // ... and clean: their cores are free
    assert_eq!(
        s.d.stats().matches,
        matches,
        "nothing matched while draining"
    );
    assert!(s.d.job(5).unwrap().app_id.is_none(), "job 5 still waits");
    for id in 1..=4 {
        assert_eq!(
            s.queue[&id],
            Some(Outcome::Finished(0)),
            "job {id} mirrored"
        );
    }
    assert_eq!(
        s.records.values().filter(|r| r.released).count(),
        released_before,
        "nothing released while draining"
    );
    assert_eq!(s.d.stats().granted, s.d.stats().freed);
}

/// While the cluster is full and the head of the queue was refused, new
/// submissions cost no Fluxion call (nothing was freed: they could only be
/// refused); the next free starts a new pass that tries them all.
#[test]
fn submissions_behind_a_blocked_head_ask_fluxion_nothing() {
    let mut s = Sim::new(QueuePolicy::Fcfs, 13);
    for id in 1..=4 {
        s.submit(
            id,
            "lammps",
            &Request::nodes(1, Some(10), false).with_duration(60),
        );
    }
    s.submit(5, "ior", &one_core()); // refused: the head now waits
    let matches = s.d.stats().matches;
    for id in 6..=30 {
        s.submit(id, "ior", &one_core());
    }
    assert_eq!(s.d.stats().matches, matches, "no futile Fluxion call");
    s.check_end(); // every job still runs, once cores are freed
}
