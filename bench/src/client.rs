//! The benchmark's Flux client: submits jobs and follows the brokers' job
//! journals on one reactor, in this process.
//!
//! Submitting with `flux_job_submit()` RPCs from here (pipelined, no process
//! per job) keeps the submission tool from being the bottleneck, and the
//! `job-manager.events-journal` streams give every event's own timestamp
//! (the broker's eventlog time) with no polling and no per-job `flux job
//! eventlog` afterwards.
//!
//! Two ways to feed jobs:
//! * **queue** (pancake): every job goes to the queue broker as soon as the
//!   submit pipeline has room; pancake decides when each runs. A job is done
//!   when its queue job is `clean`.
//! * **direct**: the benchmark is the ideal forwarder. It keeps the pod's
//!   cores (nodes × cores) as slots, submits a job to an application broker
//!   only when a slot is free, with that slot as its alloc-bypass R, and
//!   frees the slot when the application job is `clean` (when pancake frees
//!   the Fluxion allocation too). No matching, no queue job, no mirror.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use flux::{FutureRef, Handle, Pending, Watcher};
use pancake_core::journal;
use serde_json::Value;

/// Seconds since the epoch, on the same clock as eventlog timestamps.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What a broker's journal said about one job.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// `submit` event time.
    pub submit: Option<f64>,
    /// `start` event time (tasks started, or test exec started).
    pub start: Option<f64>,
    /// `finish` event time.
    pub finish: Option<f64>,
    /// `finish` wait status.
    pub status: Option<i64>,
    /// `clean` event time (inactive).
    pub clean: Option<f64>,
    /// First fatal exception's type.
    pub exception: Option<String>,
    /// Application jobs forwarded by pancake: the queue job they mirror.
    pub queue_id: Option<u64>,
}

/// One connected broker.
struct Conn {
    name: String,
    h: Handle,
}

/// How jobs are fed.
#[derive(Clone)]
pub enum Feed {
    /// Everything to the queue broker (connection 0): `jobspecs[i % len]`.
    Queue {
        /// Pre-made jobspecs (one per container), used round robin.
        jobspecs: Vec<String>,
    },
    /// Straight to application brokers, each job with a free slot's R.
    Direct {
        /// Connection indexes of the target brokers, used round robin.
        targets: Vec<usize>,
        /// Number of slots (cores of the pod).
        slots: usize,
        /// The jobspec of a job holding slot `s`.
        jobspec: Rc<dyn Fn(usize) -> String>,
    },
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Feed::Queue { jobspecs } => write!(f, "Queue({} jobspecs)", jobspecs.len()),
            Feed::Direct { targets, slots, .. } => write!(f, "Direct({targets:?}, {slots} slots)"),
        }
    }
}

/// One run's parameters.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Jobs to run.
    pub jobs: usize,
    /// How.
    pub feed: Feed,
    /// Jobs in flight at most (1: one job at a time, the latency mode).
    pub max_in_flight: usize,
    /// Submit RPCs in flight at most.
    pub pipeline: usize,
    /// Urgency of every job (0 holds it).
    pub urgency: i32,
    /// Give up after this many seconds without any progress.
    pub stall_timeout: f64,
    /// A job is done when its submit answers (held jobs never end).
    pub done_on_submit: bool,
}

/// One job of a run, as the benchmark saw it.
#[derive(Debug, Clone, Default)]
pub struct Job {
    /// Connection it was submitted to.
    pub conn: usize,
    /// Its id there (0 if the submit failed).
    pub id: u64,
    /// When the submit RPC was sent (bench clock).
    pub sent: f64,
    /// When the submit RPC answered.
    pub answered: f64,
    /// When the bench counted it done (its `clean` time).
    pub done: Option<f64>,
}

/// A finished run.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    /// Every job, in submit order.
    pub jobs: Vec<Job>,
    /// First submit sent.
    pub first_sent: f64,
    /// Last submit answered.
    pub last_answered: f64,
    /// When the last job completed: its `clean` event time (or, with
    /// `done_on_submit`, when the last submit answered).
    pub last_done: f64,
    /// Set when the run failed or stalled.
    pub error: Option<String>,
}

/// A run in progress, shared by the reactor callbacks.
struct Run {
    handles: Vec<Handle>,
    pending: Pending,
    spec: RunSpec,
    targets: Vec<usize>,
    st: RefCell<Driver>,
}

#[derive(Default)]
struct Driver {
    jobs: Vec<Job>,
    in_flight_submits: usize,
    /// Jobs submitted and not done yet.
    in_flight: usize,
    done: usize,
    /// (conn, id) → index in `jobs`.
    index: HashMap<(usize, u64), usize>,
    /// `clean` seen before the submit answered.
    cleaned_early: HashSet<(usize, u64)>,
    free_slots: Vec<usize>,
    slot_of: HashMap<usize, usize>,
    last_done: f64,
    last_progress: f64,
    error: Option<String>,
    finished: bool,
}

type Active = Rc<RefCell<Option<Rc<Run>>>>;

/// The connections, the journal streams and everything they recorded.
pub struct Client {
    conns: Vec<Conn>,
    pending: Pending,
    /// Per connection (same index): job id → what its journal said.
    pub seen: Rc<RefCell<Vec<HashMap<u64, Seen>>>>,
    /// The run in progress (its jobs end on `clean` journal events).
    active: Active,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.conns.iter().map(|c| c.name.as_str()).collect();
        write!(f, "Client({names:?})")
    }
}

impl Client {
    /// Connect to `(name, uri)` brokers, all on the first one's reactor.
    pub fn connect(brokers: &[(String, String)]) -> Result<Client, String> {
        let mut conns: Vec<Conn> = Vec::new();
        for (name, uri) in brokers {
            let h = Handle::open(Some(uri), 0).map_err(|e| format!("{name}: {e}"))?;
            if let Some(first) = conns.first() {
                let r = first.h.reactor().map_err(|e| e.to_string())?;
                h.set_reactor(r).map_err(|e| e.to_string())?;
            }
            conns.push(Conn {
                name: name.clone(),
                h,
            });
        }
        let n = conns.len();
        Ok(Client {
            conns,
            pending: Pending::new(),
            seen: Rc::new(RefCell::new(vec![HashMap::new(); n])),
            active: Rc::new(RefCell::new(None)),
        })
    }

    /// Index of the connection named `name`.
    pub fn conn(&self, name: &str) -> Option<usize> {
        self.conns.iter().position(|c| c.name == name)
    }

    /// Name of connection `i`.
    pub fn name(&self, i: usize) -> &str {
        &self.conns[i].name
    }

    /// A synchronous RPC on connection `i` (outside a run).
    pub fn rpc(&self, i: usize, topic: &str, payload: &str) -> Result<String, String> {
        let f = self.conns[i]
            .h
            .rpc(topic, Some(payload), flux::NODEID_ANY, 0)
            .map_err(|e| e.to_string())?;
        f.wait_for(60.0).map_err(|e| format!("{topic}: {e}"))?;
        f.rpc_get()
            .map(|s| s.unwrap_or("").to_string())
            .map_err(|e| format!("{topic}: {e}"))
    }

    /// Follow every connection's job journal; returns once each has sent
    /// its end-of-backlog sentinel, so no later event is missed.
    pub fn follow_journals(&self) -> Result<(), String> {
        let synced = Rc::new(std::cell::Cell::new(0usize));
        let total = self.conns.len();
        for (i, c) in self.conns.iter().enumerate() {
            // Only the events the benchmark reads: a smaller stream costs
            // the job-manager less.
            let f = c
                .h
                .rpc(
                    "job-manager.events-journal",
                    Some(
                        r#"{"full":false,"allow":{"submit":1,"start":1,"finish":1,"exception":1,"clean":1}}"#,
                    ),
                    flux::NODEID_ANY,
                    flux::future::rpc_flags::STREAMING,
                )
                .map_err(|e| format!("{}: journal: {e}", c.name))?;
            let seen = Rc::clone(&self.seen);
            let synced = Rc::clone(&synced);
            let active = Rc::clone(&self.active);
            self.pending
                .stream(f, move |f| match f.rpc_get_stream() {
                    Ok(Some(text)) => {
                        let Ok(entry) = journal::parse(text) else {
                            return true;
                        };
                        match entry.id {
                            None => {
                                synced.set(synced.get() + 1);
                                if synced.get() == total {
                                    stop(f);
                                }
                            }
                            Some(id) => {
                                let clean = record(&mut seen.borrow_mut()[i], id, &entry);
                                if let Some(t) = clean {
                                    let run = active.borrow().clone();
                                    if let Some(run) = run {
                                        on_clean(&run, i, id, t);
                                    }
                                }
                            }
                        }
                        true
                    }
                    _ => false,
                })
                .map_err(|e| e.to_string())?;
        }
        let r = self.conns[0].h.reactor().map_err(|e| e.to_string())?;
        let hp = self.conns[0].h.to_owned();
        let timer = Watcher::timer(r, 60.0, 0.0, move |_, _| {
            if let Ok(r) = hp.reactor() {
                r.stop();
            }
        })
        .map_err(|e| e.to_string())?;
        timer.start();
        r.run().map_err(|e| format!("reactor: {e}"))?;
        if synced.get() != total {
            return Err("the job journals did not answer within 60 s".into());
        }
        Ok(())
    }

    /// Run `spec` to the end (or until it stalls) and return what happened.
    pub fn run(&self, spec: &RunSpec) -> RunResult {
        let (targets, free_slots) = match &spec.feed {
            Feed::Queue { .. } => (vec![0], Vec::new()),
            Feed::Direct { targets, slots, .. } => (targets.clone(), (0..*slots).rev().collect()),
        };
        let run = Rc::new(Run {
            handles: self.conns.iter().map(|c| c.h.to_owned()).collect(),
            pending: Pending::new(),
            spec: spec.clone(),
            targets,
            st: RefCell::new(Driver {
                free_slots,
                finished: spec.jobs == 0,
                last_progress: now(),
                ..Driver::default()
            }),
        });
        *self.active.borrow_mut() = Some(Rc::clone(&run));
        // A watchdog: give up when nothing completes for `stall_timeout`.
        let r = match self.conns[0].h.reactor() {
            Ok(r) => r,
            Err(e) => {
                return RunResult {
                    error: Some(e.to_string()),
                    ..RunResult::default()
                };
            }
        };
        let watchdog = {
            let run = Rc::downgrade(&run);
            let hp = self.conns[0].h.to_owned();
            Watcher::timer(r, 1.0, 1.0, move |_, _| {
                let Some(run) = run.upgrade() else { return };
                let mut st = run.st.borrow_mut();
                if now() - st.last_progress > run.spec.stall_timeout {
                    st.error = Some(format!(
                        "stalled: {} of {} done, nothing for {} s",
                        st.done, run.spec.jobs, run.spec.stall_timeout
                    ));
                    if let Ok(r) = hp.reactor() {
                        r.stop();
                    }
                }
            })
        };
        if let Ok(w) = &watchdog {
            w.start();
        }
        pump(&run);
        let mut reactor_error = None;
        if !run.st.borrow().finished
            && run.st.borrow().error.is_none()
            && let Err(e) = r.run()
        {
            reactor_error = Some(format!("reactor: {e}"));
        }
        drop(watchdog);
        *self.active.borrow_mut() = None;
        // Submits still in flight (a failed run) die with their futures here.
        run.pending.clear();
        let st = run.st.borrow();
        let first_sent = st.jobs.first().map(|j| j.sent).unwrap_or(0.0);
        let last_answered = st.jobs.iter().map(|j| j.answered).fold(0.0, f64::max);
        RunResult {
            jobs: st.jobs.clone(),
            first_sent,
            last_answered,
            last_done: if spec.done_on_submit {
                last_answered
            } else {
                st.last_done
            },
            error: st.error.clone().or(reactor_error),
        }
    }
}

/// Send as many submits as the feed, the window and the pipeline allow.
fn pump(run: &Rc<Run>) {
    loop {
        let (seq, conn, jobspec) = {
            let mut st = run.st.borrow_mut();
            if st.jobs.len() >= run.spec.jobs
                || st.in_flight_submits >= run.spec.pipeline
                || st.in_flight >= run.spec.max_in_flight
                || st.error.is_some()
            {
                return;
            }
            let seq = st.jobs.len();
            let (conn, jobspec) = match &run.spec.feed {
                Feed::Queue { jobspecs } => (0, jobspecs[seq % jobspecs.len()].clone()),
                Feed::Direct {
                    targets, jobspec, ..
                } => {
                    let Some(slot) = st.free_slots.pop() else {
                        return;
                    };
                    st.slot_of.insert(seq, slot);
                    (targets[seq % targets.len()], jobspec(slot))
                }
            };
            st.in_flight_submits += 1;
            st.in_flight += 1;
            st.jobs.push(Job {
                conn,
                sent: now(),
                ..Job::default()
            });
            (seq, conn, jobspec)
        };
        let f = match run.handles[conn].job_submit(&jobspec, run.spec.urgency, 0) {
            Ok(f) => f,
            Err(e) => return fail(run, format!("submit: {e}")),
        };
        let weak = Rc::downgrade(run);
        let res = run.pending.spawn(f, 120.0, move |f| {
            let Some(run) = weak.upgrade() else { return };
            let answer = f.job_submit_get_id();
            {
                let mut st = run.st.borrow_mut();
                st.in_flight_submits -= 1;
                st.jobs[seq].answered = now();
                st.last_progress = now();
                match answer {
                    Ok(id) => {
                        st.jobs[seq].id = id;
                        st.index.insert((conn, id), seq);
                        // Held jobs are done once submitted; others may
                        // have ended before their submit answered.
                        if run.spec.done_on_submit || st.cleaned_early.remove(&(conn, id)) {
                            complete(&run, &mut st, seq, now());
                        }
                    }
                    Err(e) => {
                        drop(st);
                        return fail(&run, format!("submit {seq}: {e}"));
                    }
                }
            }
            pump(&run);
        });
        if let Err(e) = res {
            return fail(run, format!("submit: {e}"));
        }
    }
}

fn fail(run: &Run, why: String) {
    run.st.borrow_mut().error.get_or_insert(why);
    if let Ok(r) = run.handles[0].reactor() {
        r.stop();
    }
}

/// A `clean` event of job `id` on connection `conn` at time `t`.
fn on_clean(run: &Rc<Run>, conn: usize, id: u64, t: f64) {
    if run.spec.done_on_submit || !run.targets.contains(&conn) {
        return;
    }
    {
        let mut st = run.st.borrow_mut();
        match st.index.get(&(conn, id)).copied() {
            Some(seq) => complete(run, &mut st, seq, t),
            None => {
                st.cleaned_early.insert((conn, id));
                return;
            }
        }
    }
    pump(run);
}

fn complete(run: &Run, st: &mut Driver, seq: usize, t: f64) {
    st.done += 1;
    st.in_flight -= 1;
    st.last_progress = now();
    st.last_done = st.last_done.max(t);
    st.jobs[seq].done = Some(t);
    if let Some(slot) = st.slot_of.remove(&seq) {
        st.free_slots.push(slot);
    }
    if st.done == run.spec.jobs {
        st.finished = true;
        if let Ok(r) = run.handles[0].reactor() {
            r.stop();
        }
    }
}

fn stop(f: &FutureRef) {
    if let Some(r) = f.handle().and_then(|h| h.reactor().ok()) {
        r.stop();
    }
}

/// Record one journal entry of job `id`; returns its `clean` time if the
/// entry holds one.
fn record(seen: &mut HashMap<u64, Seen>, id: u64, entry: &journal::JournalEntry) -> Option<f64> {
    let s = seen.entry(id).or_default();
    if let Some(js) = &entry.jobspec
        && let Some(q) = js
            .pointer("/attributes/user/pancake/queue_id")
            .and_then(Value::as_u64)
    {
        s.queue_id = Some(q);
    }
    let mut clean = None;
    for ev in &entry.events {
        let t = ev.timestamp;
        match ev.name.as_str() {
            "submit" => s.submit = Some(t),
            "start" => s.start = Some(t),
            "finish" => {
                s.finish = Some(t);
                s.status = ev.context.get("status").and_then(Value::as_i64);
            }
            "exception"
                if ev.context.get("severity").and_then(Value::as_i64) == Some(0)
                    && s.exception.is_none() =>
            {
                s.exception = ev
                    .context
                    .get("type")
                    .and_then(Value::as_str)
                    .map(str::to_string);
            }
            "clean" => {
                s.clean = Some(t);
                clean = Some(t);
            }
            _ => {}
        }
    }
    clean
}
