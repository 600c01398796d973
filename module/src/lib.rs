//! The `pancake` broker module.
//!
//! Loaded into the queue broker with `flux module load pancake [options]`
//! (installed as `pancake.so`, so the broker names it `pancake`), in place
//! of the broker's own scheduler: pancake provides the `sched` service. The
//! decisions live in `pancake_core::dispatch`; this crate only connects the
//! dispatcher to Flux: the job-manager's scheduler protocol (`sched`), the
//! queue broker's job journal, the application brokers, Fluxion (on the
//! worker thread), and the `pancake-bypass` plugin.

#![deny(unsafe_code)]

mod apps;
mod effects;
mod fluxion_worker;
mod output;
mod sched;
pub mod worker;

/// Count the module's heap (`heap_bytes` in `pancake.status`).
#[global_allocator]
static HEAP: flux::heap::Counting = flux::heap::Counting;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Instant;

use flux::{Handle, HandleRef, Level, Pending, Role, Table, Timers, Watcher};
use fluxion::Rv1;
use pancake_core::dispatch::{AppEvent, Capacity, Dispatcher, Event, JobId};
use pancake_core::journal;
use pancake_core::options::Options;
use serde_json::json;

use crate::apps::Containers;
use crate::fluxion_worker::FluxionWorker;

flux::module_main!(pancake_main);

/// `flux module debug --set` bit that makes the next `pancake.status` panic.
pub const DEBUG_PANIC: i32 = 0x1;

/// Everything the module holds, on the reactor thread.
pub(crate) struct Pancake {
    pub(crate) h: Handle,
    pub(crate) options: Options,
    pub(crate) started: Instant,
    pub(crate) d: Dispatcher,
    pub(crate) fx: FluxionWorker,
    pub(crate) containers: Containers,
    pub(crate) pending: Pending,
    pub(crate) outputs: output::Outputs,
    /// Queue jobs whose journal events the dispatcher follows (container
    /// jobs, and jobs an earlier pancake started on the queue broker).
    pub(crate) tracked: HashSet<JobId>,
    /// The job-manager's `sched.alloc` requests, until answered.
    pub(crate) allocs: sched::Requests,
    /// The R of every job in the queue journal's backlog, for the
    /// `sched-hello` that follows it (then dropped).
    pub(crate) backlog_r: HashMap<JobId, serde_json::Value>,
    /// The queue broker's own R (jobs without a container run in it).
    pub(crate) local_r: Option<Rv1>,
    /// The end of the queue journal's backlog (its sentinel) was seen.
    backlog_seen: bool,
    pub(crate) requests: u64,
    /// One-shot timers of [`after`].
    pub(crate) timers: Timers,
    /// Connections to close from the reactor, not from their own callbacks.
    pub(crate) graveyard: Vec<Handle>,
    /// One-shot timer that empties the graveyard.
    pub(crate) reaper: Option<Watcher>,
}

impl Pancake {
    /// Drop every timer, future and connection (before the worker thread is
    /// joined: nothing may call back into the module after that).
    fn release(&mut self) {
        self.reaper = None;
        self.graveyard.clear();
        self.timers.clear();
        self.pending.clear();
        self.allocs.clear();
        self.containers.clear();
    }
}

/// Run `f` once, `delay` seconds from now, on the reactor (if the module is
/// still there). The timer is kept with the module until it has fired.
pub(crate) fn after(p: &Shared, delay: f64, f: impl FnOnce(&Shared) + 'static) {
    let weak = Rc::downgrade(p);
    let armed = {
        let st = &mut *p.borrow_mut();
        st.h.reactor().and_then(|r| {
            st.timers.after(r, delay, move || {
                if let Some(p) = weak.upgrade() {
                    f(&p);
                }
            })
        })
    };
    if let Err(e) = armed {
        log(p, Level::Err, &format!("cannot arm a timer: {e}"));
    }
}

/// Close `h` soon, from a fresh reactor callback.
pub(crate) fn bury(p: &Shared, h: Handle) {
    let mut st = p.borrow_mut();
    st.graveyard.push(h);
    if let Some(w) = &st.reaper {
        w.timer_reset(0.0, 0.0);
        w.start();
    }
}

pub(crate) type Shared = Rc<RefCell<Pancake>>;

/// The queue journal, filtered to the events pancake acts on (the
/// job-manager sends nothing else: on a busy queue broker most events are
/// `set-flags`, `depend`, `priority`, `release`...). `submit` names the
/// container jobs (the job-manager attaches the jobspec to `submit`; on
/// flux-core 0.61, to `validate`); `memo`, `alloc`, `free` and `start`
/// rebuild a job after a reload; `exception` and `clean` end it.
const QUEUE_JOURNAL_REQUEST: &str = r#"{"full":false,"allow":{"submit":1,"validate":1,"invalidate":1,"memo":1,"alloc":1,"free":1,"start":1,"exception":1,"clean":1}}"#;

/// How long a (re)loaded module waits for the containers' job journals
/// before it matches without the missing ones.
const RECOVERY_WAIT: f64 = 10.0;

/// Feed an event to the dispatcher and carry out what it asks.
pub(crate) fn feed(p: &Shared, event: Event) {
    // An application job that is clean with no output header never had a
    // job shell (test exec, or a shell that never started): its output
    // copy must not hold the queue job's finish for the grace period.
    let clean = match &event {
        Event::App {
            container,
            app_id,
            event: AppEvent::Clean,
        } => Some((container.clone(), *app_id)),
        _ => None,
    };
    if let Some((container, app_id)) = clean {
        output::app_clean(p, &container, app_id);
    }
    let actions = {
        let mut st = p.borrow_mut();
        let now = st.h.reactor().map(|r| r.now()).unwrap_or(0.0);
        st.d.handle(now, event)
    };
    for a in actions {
        effects::perform(p, a);
    }
}

fn pancake_main(h: &HandleRef, args: Vec<String>) -> flux::Result<()> {
    let mut options =
        Options::parse(&args).map_err(|e| flux::Error::inval(format!("pancake: {e}")))?;
    if let Ok(conf) = h.conf_json() {
        options
            .apply_config(&conf)
            .map_err(|e| flux::Error::inval(format!("pancake: {e}")))?;
    }
    let reactor = h.reactor()?;
    let fx = FluxionWorker::start(reactor, options.fluxion.as_deref())?;
    let p: Shared = Rc::new({
        RefCell::new(Pancake {
            h: h.to_owned(),
            d: {
                let mut d = Dispatcher::with_params(options.sched_params());
                d.set_lost_grace(options.lost_grace);
                d.set_local_refused(options.refuse_local);
                d
            },
            containers: Containers::default(),
            options,
            started: Instant::now(),
            fx,
            pending: Pending::new(),
            outputs: output::Outputs::default(),
            tracked: HashSet::new(),
            allocs: sched::Requests::default(),
            backlog_r: HashMap::new(),
            local_r: None,
            backlog_seen: false,
            requests: 0,
            timers: Timers::new(),
            graveyard: Vec::new(),
            reaper: None,
        })
    });
    let reaper = {
        let weak = Rc::downgrade(&p);
        Watcher::timer(reactor, 0.0, 0.0, move |_, _| {
            if let Some(p) = weak.upgrade() {
                let dead = std::mem::take(&mut p.borrow_mut().graveyard);
                drop(dead);
            }
        })?
    };
    p.borrow_mut().reaper = Some(reaper);

    let handlers = register_handlers(h, &p)?;
    let sched_handlers = sched::handlers(h, &p)?;
    // This broker's scheduler from now on (or the load fails: one per broker).
    sched::register_services(h)?;
    read_own_resources(&p);
    apps::discover(&p);
    // Nothing is matched until what earlier pancakes left is known: the
    // queue's active jobs and every known container's active jobs.
    {
        let mut st = p.borrow_mut();
        let names: Vec<String> = st.containers.iter().map(|c| c.name.clone()).collect();
        st.d.begin_recovery(&names);
    }
    after(&p, RECOVERY_WAIT, |p| feed(p, Event::RecoveryTimeout));
    start_queue_journal(&p)?;
    watch_broker_state(&p)?;
    let rescan = {
        let weak = Rc::downgrade(&p);
        Watcher::timer(reactor, 5.0, 5.0, move |_, _| {
            if let Some(p) = weak.upgrade() {
                apps::discover(&p);
            }
        })?
    };
    rescan.start();
    h.log(
        Level::Info,
        &format!(
            "pancake {} loaded (flux-core {}, fluxion {})",
            env!("CARGO_PKG_VERSION"),
            flux::core_version(),
            p.borrow().options.fluxion.as_deref().unwrap_or("embedded")
        ),
    );

    // A failed application broker connection stops the shared reactor with
    // an error; mark it lost and go on, so one broker never stops the others.
    let result = loop {
        match h.run_reactor() {
            Ok(()) => break Ok(()),
            Err(e) => {
                if !apps::reap_broken(&p) {
                    h.log(Level::Err, &format!("reactor stopped: {e}"));
                    break Ok(());
                }
            }
        }
    };

    // Tear down in dependency order: no new work, then connections, then the
    // worker thread (joined), so nothing outlives the DSO.
    drop(rescan);
    drop(sched_handlers);
    drop(handlers);
    match Rc::try_unwrap(p).map(RefCell::into_inner) {
        Ok(mut st) => {
            st.release();
            st.fx.shutdown();
        }
        Err(p) => {
            // Something still holds the state: stop what we can anyway.
            let mut st = p.borrow_mut();
            st.release();
            st.fx.stop();
            h.log(Level::Err, "pancake state still shared at unload");
        }
    }
    h.log(Level::Info, "pancake unloaded");
    result
}

fn register_handlers(h: &HandleRef, p: &Shared) -> flux::Result<flux::MsgHandlers> {
    let s_status = Rc::clone(p);
    let s_reload = Rc::clone(p);
    let s_stats = Rc::clone(p);
    Table::new()
        // `flux module stats pancake` shows these counters.
        .request("stats-get", Role::User, move |h, msg| {
            let st = s_stats.borrow();
            let reply = json!({
                "stats": st.d.stats(),
                "containers": st.containers.iter().count(),
                "waiting": st.d.waiting(),
                "alloc_requests": st.allocs.len(),
                "heap_bytes": flux::heap::live(),
            });
            let _ = h.respond_json(msg, &reply);
        })
        .request("status", Role::Owner, move |h, msg| {
            // Fault injection for tests: `flux module debug --set 1 pancake`
            // makes the next status request panic inside the handler.
            if h.module_debug_test(DEBUG_PANIC, true) {
                panic!("injected by debug flag {DEBUG_PANIC:#x}");
            }
            let reply = status(&s_status);
            let req = msg.to_owned();
            let h2 = h.to_owned();
            // Answer after a round trip through the worker thread, so status
            // also shows the worker is alive.
            let sent = s_status.borrow_mut().fx.ping(move |name: String| {
                let mut reply = reply;
                reply["worker"] = json!(name);
                if let Err(e) = h2.respond_json(&req, &reply) {
                    h2.log(Level::Err, &format!("status: respond: {e}"));
                }
            });
            if let Err(e) = sent {
                let _ = h.respond_error(msg, &e);
            }
        })
        .request("config-reload", Role::Owner, move |h, msg| {
            let res = h.module_config_reload(msg, |conf| {
                let mut o = s_reload.borrow().options.clone();
                o.apply_config(conf)
                    .map_err(|e| flux::Error::inval(format!("pancake: {e}")))?;
                Ok(o)
            });
            let strict_before = s_reload.borrow().options.strict;
            let res = res.map(|mut o| {
                let mut st = s_reload.borrow_mut();
                // The Fluxion backend and its match policy are fixed while
                // loaded (Fluxion holds live allocations): say so, and keep
                // reporting the ones in use.
                for (key, old, new) in [
                    ("fluxion", &st.options.fluxion, &o.fluxion),
                    ("policy", &Some(st.options.policy.clone()), &Some(o.policy.clone())),
                ] {
                    if old != new {
                        h.log(
                            Level::Warning,
                            &format!(
                                "config reload: {key} takes effect at the next module load (still {})",
                                old.as_deref().unwrap_or("embedded")
                            ),
                        );
                    }
                }
                o.fluxion = st.options.fluxion.clone();
                o.policy = st.options.policy.clone();
                st.d.set_params(o.sched_params());
                st.d.set_lost_grace(o.lost_grace);
                st.d.set_local_refused(o.refuse_local);
                st.options = o;
            });
            match res {
                Ok(()) => {
                    h.log(Level::Info, "config reloaded");
                    let _ = h.respond(msg, None);
                    apps::discover(&s_reload);
                    if s_reload.borrow().options.strict != strict_before {
                        // Every connected application broker takes the
                        // new mode (or says loudly why it cannot).
                        let up = s_reload.borrow().containers.up();
                        for name in up {
                            apps::set_strict(&s_reload, &name, false);
                        }
                    }
                }
                Err(e) => {
                    let _ = h.respond_error(msg, &e);
                }
            }
        })
        .register(h, Some("pancake"))
}

/// The `pancake.status` answer (without the worker's name).
fn status(p: &Shared) -> serde_json::Value {
    // Before this answer's own allocations.
    let heap = flux::heap::live();
    let mut st = p.borrow_mut();
    st.requests += 1;
    let counts = st.d.counts();
    let (local_waiting, local_running) = counts.get("").copied().unwrap_or((0, 0));
    let queue_row = json!({
        "name": pancake_core::show::QUEUE_BROKER,
        "uri": st.h.attr_get("local-uri").unwrap_or_default(),
        // Jobs without a container run here, or are refused.
        "state": if st.options.refuse_local { "refused" } else { "local" },
        "reason": st.options.refuse_local.then_some("local-jobs=refuse: jobs without a container are refused"),
        "strict": false,
        "waiting": local_waiting,
        "running": local_running,
    });
    let containers: Vec<_> = st
        .containers
        .iter()
        .map(|c| {
            let (waiting, running) = counts.get(&c.name).copied().unwrap_or((0, 0));
            json!({
                "name": c.name,
                "uri": c.uri,
                "state": c.state_name(),
                "reason": c.reason,
                "strict": c.strict.unwrap_or(st.options.strict),
                "waiting": waiting,
                "running": running,
            })
        })
        .collect();
    let jobs: Vec<_> =
        st.d.jobs()
            .map(|j| {
                json!({
                    "id": j.id,
                    "container": j.container,
                    "queue": j.queue.as_deref(),
                    "reason": j.reason_pending(),
                    "phase": format!("{:?}", j.phase).to_lowercase(),
                    "fluxion_id": j.fluxion_id,
                    "app_id": j.app_id,
                    "R": j.r,
                    "progress": j.progress(),
                })
            })
            .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "flux-core": flux::core_version(),
        "uptime": st.started.elapsed().as_secs_f64(),
        "options": st.options.to_json(),
        "fluxion": {
            "backend": st.options.fluxion.as_deref().unwrap_or("embedded"),
            "ready": st.fx.ready(),
        },
        "requests": st.requests,
        "scheduler": {
            "waiting": st.d.waiting(),
            "alloc_requests": st.allocs.len(),
            "params": {
                "queue-policy": st.d.params().policy.name(),
                "queue-depth": st.d.params().queue_depth,
                "reservation-depth": st.d.params().reservations(),
            },
        },
        "containers": containers,
        // The queue broker itself, where jobs without a container run.
        "local": queue_row,
        "jobs": jobs,
        // The R Fluxion's graph was built from (every connected container
        // agrees with it): the nodes and cores `flux pancake map` draws.
        "graph": st.containers.iter().find_map(|c| c.r.as_ref()),
        "stats": st.d.stats(),
        // The module's own live heap (flux::heap).
        "heap_bytes": heap,
    })
}

/// Watch the queue broker's job-manager journal: discovery of container
/// jobs and their queue-side events, with no polling.
fn start_queue_journal(p: &Shared) -> flux::Result<()> {
    let f = {
        let st = p.borrow();
        st.h.rpc(
            "job-manager.events-journal",
            Some(QUEUE_JOURNAL_REQUEST),
            flux::NODEID_ANY,
            flux::future::rpc_flags::STREAMING,
        )?
    };
    let weak = Rc::downgrade(p);
    let pending = p.borrow().pending.clone();
    pending.stream(f, move |f| {
        let Some(p) = weak.upgrade() else {
            return false;
        };
        match f.rpc_get_stream() {
            Ok(Some(text)) => {
                match journal::parse(text) {
                    Ok(entry) => on_queue_entry(&p, entry),
                    Err(e) => log(&p, Level::Err, &format!("queue journal: {e}")),
                }
                true
            }
            Ok(None) => false,
            Err(e) => {
                log(&p, Level::Err, &format!("queue journal ended: {e}"));
                false
            }
        }
    })?;
    Ok(())
}

/// Tell the dispatcher when the queue broker starts shutting down (its
/// CLEANUP state: `flux queue stop`, then the cleanup cancels): from then
/// on nothing new may start, or `flux queue idle` waits on it and a clean
/// restart hangs.
fn watch_broker_state(p: &Shared) -> flux::Result<()> {
    let f = p.borrow().h.rpc(
        "state-machine.monitor",
        Some(&format!(
            "{{\"final\":{}}}",
            flux::flux_sys_reexport::BROKER_STATE_CLEANUP
        )),
        flux::NODEID_ANY,
        flux::future::rpc_flags::STREAMING,
    )?;
    let weak = Rc::downgrade(p);
    let pending = p.borrow().pending.clone();
    pending.stream(f, move |f| {
        let Some(p) = weak.upgrade() else {
            return false;
        };
        let cleanup = i64::from(flux::flux_sys_reexport::BROKER_STATE_CLEANUP);
        match f.rpc_get_stream() {
            Ok(Some(text)) => {
                let state = serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| v["state"].as_i64());
                if state.is_some_and(|s| s >= cleanup) {
                    feed(&p, Event::Drain);
                    return false;
                }
                true
            }
            // The stream ends once the broker is past CLEANUP.
            Ok(None) => {
                feed(&p, Event::Drain);
                false
            }
            Err(e) => {
                log(&p, Level::Warning, &format!("broker state monitor: {e}"));
                false
            }
        }
    })?;
    Ok(())
}

pub(crate) fn log(p: &Shared, level: Level, text: &str) {
    p.borrow().h.log(level, text);
}

fn on_queue_entry(p: &Shared, entry: journal::JournalEntry) {
    let Some(id) = entry.id else {
        // The end of the backlog.
        p.borrow_mut().backlog_seen = true;
        backlog_step(p);
        return;
    };
    let backlog = !p.borrow().backlog_seen;
    let container_job = entry
        .jobspec
        .as_ref()
        .is_some_and(|js| journal::container(js).is_some());
    if backlog {
        if let Some(r) = &entry.r {
            p.borrow_mut().backlog_r.insert(id, r.clone());
        }
        // A job an earlier pancake matched: take it up from its record
        // (its allocation is restored before anything else is matched).
        let prior = journal::prior(&entry.events, entry.r.as_ref());
        if prior.matched()
            && let Some(js) = &entry.jobspec
        {
            p.borrow_mut().tracked.insert(id);
            feed(
                p,
                Event::Recovered {
                    id,
                    jobspec: js.to_string(),
                    prior,
                },
            );
        }
    }
    if container_job {
        p.borrow_mut().tracked.insert(id);
    }
    for ev in &entry.events {
        if ev.name == "invalidate" {
            // Refused at submit: never a job.
            p.borrow_mut().tracked.remove(&id);
        }
        if ev.name == "clean" {
            // Its request, if one is still held, will never be answered.
            p.borrow_mut().allocs.forget(id);
        }
        if !p.borrow().tracked.contains(&id) {
            continue;
        }
        let Some(event) = journal::queue_event(id, ev) else {
            continue;
        };
        let inactive = matches!(event, Event::QueueInactive { .. });
        feed(p, event);
        if inactive {
            p.borrow_mut().tracked.remove(&id);
        }
    }
}

/// The queue backlog is in (every job of it fed to the dispatcher as it
/// came): the scheduler handshake follows, then scheduling may start.
fn backlog_step(p: &Shared) {
    let done = p.borrow().backlog_seen;
    if done && p.borrow().d.is_recovering() {
        let n = p.borrow().tracked.len();
        log(
            p,
            Level::Debug,
            &format!("queue journal backlog in ({n} jobs to follow)"),
        );
        sched::hello(p);
        // The backlog's messages and parse trees are all freed now.
        flux::heap::release_free_heap();
    }
}

/// Read the queue broker's own resources: jobs without a container run
/// there, so their grants must lie inside them.
fn read_own_resources(p: &Shared) {
    let weak = Rc::downgrade(p);
    let f = p.borrow().h.kvs_lookup("resource.R");
    let pending = p.borrow().pending.clone();
    let res = f.and_then(|f| {
        pending.spawn(f, -1.0, move |f| {
            let Some(p) = weak.upgrade() else { return };
            match f.kvs_lookup_get().map(Rv1::parse) {
                Ok(Ok(r)) => {
                    {
                        let mut st = p.borrow_mut();
                        st.local_r = Some(r.clone());
                        st.d.set_local_resources(r);
                    }
                    // (A pass may now consider jobs without a container.)
                    feed(&p, Event::Tick);
                }
                Ok(Err(e)) => log(&p, Level::Err, &format!("resource.R: {e}")),
                Err(e) => log(&p, Level::Err, &format!("resource.R: {e}")),
            }
        })
    });
    if let Err(e) = res {
        log(p, Level::Err, &format!("resource.R: {e}"));
    }
}

/// Called once Fluxion holds the graph: impossible requests can now fail at once.
pub(crate) fn fluxion_ready(p: &Shared, cap: Capacity, graph: fluxion::Rv1) {
    {
        let mut st = p.borrow_mut();
        st.d.set_capacity(cap);
        st.d.set_graph(graph);
    }
    let up = p.borrow().containers.up();
    for c in up {
        feed(p, Event::ContainerUp { container: c });
    }
}
