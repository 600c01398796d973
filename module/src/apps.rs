//! The application brokers: discovery, connection, and their job journals.
//!
//! Brokers are found the Flux Operator way (`<view>/etc/flux/meta/<i>-<name>`
//! and `<view>/run/flux/local-<i>`) or named explicitly. Connecting never
//! blocks module load: a broker that is not up yet is retried with backoff,
//! and the directory is rescanned so containers that appear later join.
//! On connect the module loads `pancake-bypass` (role=app) there unless it
//! is already loaded, reads `resource.R` (it must agree with the graph
//! Fluxion holds), and follows the broker's job-manager journal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use flux::{Handle, Level, Watcher};
use fluxion::Rv1;
use pancake_core::dispatch::{AppEvent, Capacity, Event};
use pancake_core::journal;
use serde_json::{Value, json};

use crate::{Shared, feed, log};

/// Connection state of one application broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Not connected; a retry is scheduled.
    Down,
    /// Connected, setting up (plugin, resources, journal).
    Connecting,
    /// Forwarding to it.
    Up,
    /// Connected but refused (its resources disagree with the graph).
    Refused,
}

/// One application broker.
pub(crate) struct Container {
    pub(crate) name: String,
    pub(crate) uri: String,
    pub(crate) state: State,
    pub(crate) reason: Option<String>,
    /// Futures on `handle`. Declared before it: fields drop in order, and a
    /// future must be destroyed before the handle it was sent on.
    pub(crate) pending: flux::Pending,
    pub(crate) handle: Option<Handle>,
    pub(crate) r: Option<Rv1>,
    /// Whether its pancake-bypass runs in strict mode (as the plugin says,
    /// which may differ from the module option when it was already loaded).
    pub(crate) strict: Option<bool>,
    backoff: f64,
    retry: Option<Watcher>,
    broken: Rc<std::cell::Cell<bool>>,
}

impl Container {
    pub(crate) fn is_up(&self) -> bool {
        self.state == State::Up
    }

    pub(crate) fn state_name(&self) -> &'static str {
        match self.state {
            State::Down => "lost",
            State::Connecting => "connecting",
            State::Up => "connected",
            State::Refused => "refused",
        }
    }
}

/// Every known application broker, by name.
#[derive(Default)]
pub(crate) struct Containers {
    by_name: BTreeMap<String, Container>,
}

impl Containers {
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Container> {
        self.by_name.values()
    }

    /// The names of the containers connected now.
    pub(crate) fn up(&self) -> Vec<String> {
        self.iter()
            .filter(|c| c.is_up())
            .map(|c| c.name.clone())
            .collect()
    }

    /// Drop every connection and timer (module unload).
    pub(crate) fn clear(&mut self) {
        self.by_name.clear();
    }
}

/// Application brokers under an operator view root: (name, uri).
pub(crate) fn scan_view(view: &Path, own_socket: Option<&Path>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(view.join("etc/flux/meta")) else {
        return out;
    };
    for e in dir.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some((index, name)) = file.split_once('-') else {
            continue;
        };
        if index.parse::<u32>().is_err() || name.is_empty() {
            continue;
        }
        let socket = view.join(format!("run/flux/local-{index}"));
        // Skip the queue broker's own entry.
        if let (Some(own), Ok(this)) = (own_socket, std::fs::canonicalize(&socket))
            && this == own
        {
            continue;
        }
        out.push((name.to_string(), format!("local://{}", socket.display())));
    }
    out.sort();
    out
}

fn own_socket(p: &Shared) -> Option<PathBuf> {
    let uri = p.borrow().h.attr_get("local-uri").ok()?;
    std::fs::canonicalize(uri.strip_prefix("local://")?).ok()
}

/// Find application brokers and connect to new ones.
pub(crate) fn discover(p: &Shared) {
    let (view, explicit) = {
        let st = p.borrow();
        (st.options.view.clone(), st.options.brokers.clone())
    };
    let mut found = explicit;
    if let Some(view) = view {
        let own = own_socket(p);
        for (name, uri) in scan_view(Path::new(&view), own.as_deref()) {
            if !found.iter().any(|(n, _)| *n == name) {
                found.push((name, uri));
            }
        }
    }
    let mut added = Vec::new();
    {
        let mut st = p.borrow_mut();
        for (name, uri) in found {
            if !st.containers.by_name.contains_key(&name) {
                st.containers.by_name.insert(
                    name.clone(),
                    Container {
                        name: name.clone(),
                        uri,
                        state: State::Down,
                        reason: None,
                        pending: flux::Pending::new(),
                        handle: None,
                        r: None,
                        strict: None,
                        backoff: 0.1,
                        retry: None,
                        broken: Rc::new(std::cell::Cell::new(false)),
                    },
                );
                added.push(name);
            }
        }
    }
    // Also republished on every rescan: the queue plugin may have been
    // (re)loaded after the module.
    publish_containers(p);
    if !added.is_empty() {
        for name in added {
            log(p, Level::Info, &format!("container {name}: found"));
            connect(p, &name);
        }
    }
}

/// Tell the queue plugin which containers exist (it refuses unknown ones).
pub(crate) fn publish_containers(p: &Shared) {
    let (names, f) = {
        let st = p.borrow();
        let names: Vec<String> = st.containers.by_name.keys().cloned().collect();
        let local = if st.options.refuse_local {
            "refuse"
        } else {
            "run"
        };
        let f = st.h.rpc(
            "job-manager.pancake-bypass.containers",
            Some(&json!({ "names": names, "local": local }).to_string()),
            flux::NODEID_ANY,
            0,
        );
        (names, f)
    };
    let weak = Rc::downgrade(p);
    let pending = p.borrow().pending.clone();
    if let Ok(f) = f {
        let _ = pending.spawn(f, 10.0, move |f| {
            if let (Err(e), Some(p)) = (f.rpc_get(), weak.upgrade()) {
                log(
                    &p,
                    Level::Warning,
                    &format!(
                        "cannot tell pancake-bypass the containers {names:?} (is `flux jobtap load pancake-bypass.so` done?): {e}"
                    ),
                );
            }
        });
    }
}

fn schedule_retry(p: &Shared, name: &str) {
    let weak = Rc::downgrade(p);
    let n = name.to_string();
    let mut st = p.borrow_mut();
    let st = &mut *st;
    let Some(c) = st.containers.by_name.get_mut(name) else {
        return;
    };
    let delay = c.backoff;
    c.backoff = (c.backoff * 2.0).min(5.0);
    // Re-arm the container's one retry timer: a new one would mean
    // destroying the old from inside its own callback.
    if let Some(w) = &c.retry {
        w.timer_reset(delay, 0.0);
        w.start();
        return;
    }
    let Ok(reactor) = st.h.reactor() else { return };
    let w = Watcher::timer(reactor, delay, 0.0, move |_, _| {
        if let Some(p) = weak.upgrade() {
            connect(&p, &n);
        }
    });
    if let Ok(w) = w {
        w.start();
        c.retry = Some(w);
    }
}

/// Try to connect to container `name` (no-op unless it is down).
fn connect(p: &Shared, name: &str) {
    let uri = {
        let st = p.borrow();
        match st.containers.by_name.get(name) {
            Some(c) if c.state == State::Down => c.uri.clone(),
            _ => return,
        }
    };
    let opened = Handle::open(Some(&uri), flux::handle::flags::RPCTRACK).and_then(|mut h| {
        let st = p.borrow();
        h.set_reactor(st.h.reactor()?)?;
        let broken = st
            .containers
            .by_name
            .get(name)
            .map(|c| Rc::clone(&c.broken));
        if let Some(broken) = broken {
            broken.set(false);
            h.on_comms_error(move |_errno| broken.set(true));
        }
        Ok(h)
    });
    match opened {
        Ok(h) => {
            {
                let mut st = p.borrow_mut();
                if let Some(c) = st.containers.by_name.get_mut(name) {
                    c.handle = Some(h);
                    c.state = State::Connecting;
                    c.reason = None;
                }
            }
            ensure_plugin(p, name);
        }
        Err(e) => {
            {
                let mut st = p.borrow_mut();
                if let Some(c) = st.containers.by_name.get_mut(name) {
                    c.reason = Some(e.message());
                }
            }
            schedule_retry(p, name);
        }
    }
}

/// The futures of container `name`'s connection (a detached set if unknown).
pub(crate) fn container_pending(p: &Shared, name: &str) -> flux::Pending {
    p.borrow()
        .containers
        .by_name
        .get(name)
        .map(|c| c.pending.clone())
        .unwrap_or_default()
}

/// Run `f` with container `name`'s handle.
fn with_handle<T>(
    p: &Shared,
    name: &str,
    f: impl FnOnce(&Handle) -> flux::Result<T>,
) -> flux::Result<T> {
    let st = p.borrow();
    let h = st
        .containers
        .by_name
        .get(name)
        .and_then(|c| c.handle.as_ref())
        .ok_or_else(|| {
            flux::Error::new(libc::ENOTCONN, format!("container {name} is not connected"))
        })?;
    f(h)
}

/// Send a request on container `name`'s connection and run `then` with the
/// answer on the reactor (a failed send means the container is lost).
fn ask(
    p: &Shared,
    name: &str,
    send: impl FnOnce(&Handle) -> flux::Result<flux::Future>,
    then: impl FnOnce(&Shared, &str, &flux::FutureRef) + 'static,
) {
    let f = with_handle(p, name, send);
    let weak = Rc::downgrade(p);
    let n = name.to_string();
    match f {
        Ok(f) => {
            let _ = container_pending(p, name).spawn(f, 10.0, move |f| {
                if let Some(p) = weak.upgrade() {
                    then(&p, &n, f);
                }
            });
        }
        Err(e) => lost(p, name, &e.message()),
    }
}

/// Load `pancake-bypass` (role=app) on the broker unless it is there. It is
/// recognised by what it says it is (`plugin.query`), not by its file name:
/// flux-core lists a plugin by its file's name, which may be anything
/// (`libpancake_bypass.so` straight from a build, say).
fn ensure_plugin(p: &Shared, name: &str) {
    let list = |h: &Handle| {
        h.rpc(
            "job-manager.jobtap",
            Some(r#"{"query_only":true}"#),
            flux::NODEID_ANY,
            0,
        )
    };
    ask(p, name, list, |p, n, f| {
        let listed = f
            .rpc_get_json::<Value>()
            .ok()
            .and_then(|v| v.get("plugins").cloned())
            .and_then(|v| v.as_array().cloned())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    // flux-core's own builtins start with a dot.
                    .filter(|s| !s.starts_with('.'))
                    .collect::<Vec<String>>()
            });
        match listed {
            Some(candidates) => find_plugin(p, n, candidates),
            None => lost(p, n, "cannot list its jobtap plugins"),
        }
    });
}

/// Ask each of `candidates` what it is, until one is pancake-bypass; load
/// it if none is.
fn find_plugin(p: &Shared, name: &str, mut candidates: Vec<String>) {
    let Some(candidate) = candidates.pop() else {
        return load_plugin(p, name);
    };
    let req = json!({ "name": candidate }).to_string();
    let query =
        move |h: &Handle| h.rpc("job-manager.jobtap-query", Some(&req), flux::NODEID_ANY, 0);
    ask(p, name, query, move |p, n, f| {
        let reply = f.rpc_get_json::<Value>().ok();
        match reply {
            // (Older pancake-bypass builds answered without a name: the
            // role and admitted set are theirs.)
            Some(v)
                if v.get("name").and_then(Value::as_str) == Some("pancake-bypass")
                    || (v.get("name").is_none()
                        && v.get("role").is_some()
                        && v.get("admitted").is_some()) =>
            {
                plugin_found(p, n, &candidate, &v)
            }
            _ => find_plugin(p, n, candidates),
        }
    });
}

/// The plugin is already there (loaded as `file`): it keeps what it
/// admitted; its strict mode is set to the module's.
fn plugin_found(p: &Shared, name: &str, file: &str, reply: &Value) {
    let strict = reply.get("strict").and_then(Value::as_bool);
    log(
        p,
        Level::Debug,
        &format!("container {name}: pancake-bypass is loaded there ({file}, strict={strict:?})"),
    );
    if let Some(c) = p.borrow_mut().containers.by_name.get_mut(name) {
        c.strict = strict;
    }
    let wanted = p.borrow().options.strict;
    if strict == Some(wanted) {
        read_resources(p, name);
    } else {
        set_strict(p, name, true);
    }
}

/// Set pancake-bypass's strict mode on container `name` to the module's
/// option; the container's status then reports the mode the plugin
/// answered. A plugin that cannot change it (an older build) is reported
/// loudly. With `then_resources`, go on connecting afterwards.
pub(crate) fn set_strict(p: &Shared, name: &str, then_resources: bool) {
    let wanted = p.borrow().options.strict;
    let req = json!({ "strict": wanted }).to_string();
    let call = move |h: &Handle| {
        h.rpc(
            "job-manager.pancake-bypass.set-strict",
            Some(&req),
            flux::NODEID_ANY,
            0,
        )
    };
    ask(p, name, call, move |p, n, f| {
        match f.rpc_get_json::<Value>() {
            Ok(v) => {
                let now = v.get("strict").and_then(Value::as_bool);
                if let Some(c) = p.borrow_mut().containers.by_name.get_mut(n) {
                    c.strict = now;
                }
                log(
                    p,
                    Level::Info,
                    &format!("container {n}: pancake-bypass strict mode set to {wanted}"),
                );
            }
            Err(e) => {
                let was = p.borrow().containers.by_name.get(n).and_then(|c| c.strict);
                log(
                    p,
                    Level::Err,
                    &format!(
                        "container {n}: pancake-bypass there runs with strict={} and cannot be set to strict={wanted} ({e}); reload that plugin there",
                        was.map_or("unknown".into(), |s| s.to_string())
                    ),
                );
            }
        }
        if then_resources {
            read_resources(p, n);
        }
    });
}

fn load_plugin(p: &Shared, name: &str) {
    let (plugin, strict) = {
        let st = p.borrow();
        (st.options.plugin.clone(), st.options.strict)
    };
    let req = json!({
        "load": plugin,
        "conf": { "role": "app", "container": name, "strict": strict },
    });
    let load = move |h: &Handle| {
        h.rpc(
            "job-manager.jobtap",
            Some(&req.to_string()),
            flux::NODEID_ANY,
            0,
        )
    };
    ask(p, name, load, move |p, n, f| match f.rpc_get() {
        Ok(_) => {
            if let Some(c) = p.borrow_mut().containers.by_name.get_mut(n) {
                c.strict = Some(strict);
            }
            log(
                p,
                Level::Info,
                &format!("container {n}: loaded {plugin} role=app"),
            );
            read_resources(p, n);
        }
        Err(e) => refuse(p, n, &format!("cannot load {plugin} there: {e}")),
    });
}

fn read_resources(p: &Shared, name: &str) {
    ask(
        p,
        name,
        |h| h.kvs_lookup("resource.R"),
        |p, n, f| {
            let r = f
                .kvs_lookup_get()
                .map_err(|e| e.message())
                .and_then(|s| Rv1::parse(s).map_err(|e| e.to_string()));
            match r {
                Ok(r) => got_resources(p, n, r),
                Err(e) => refuse(p, n, &format!("resource.R: {e}")),
            }
        },
    );
}

/// The graph is the first container's R; every other container must agree.
fn got_resources(p: &Shared, name: &str, r: Rv1) {
    let graph = p
        .borrow()
        .containers
        .iter()
        .find_map(|c| if c.name != name { c.r.clone() } else { None });
    if let Some(g) = &graph {
        let same = match (g.rank_map(), r.rank_map()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if !same {
            refuse(
                p,
                name,
                "its resources disagree with the graph the other containers share",
            );
            return;
        }
    }
    {
        let mut st = p.borrow_mut();
        if let Some(c) = st.containers.by_name.get_mut(name) {
            c.r = Some(r.clone());
        }
    }
    if graph.is_none() && !p.borrow().fx.ready() {
        init_fluxion(p, &r);
    }
    start_journal(p, name);
}

fn init_fluxion(p: &Shared, r: &Rv1) {
    let jgf = match fluxion::rv1_to_jgf(r) {
        Ok(j) => j,
        Err(e) => {
            log(p, Level::Err, &format!("cannot build the graph: {e}"));
            return;
        }
    };
    let cap = Capacity::of(r);
    let r2 = r.clone();
    let graph = r.clone();
    let policy = p.borrow().options.policy.clone();
    let weak = Rc::downgrade(p);
    let res = p.borrow_mut().fx.init(policy.clone(), jgf, move |res| {
        let Some(p) = weak.upgrade() else { return };
        match (res, cap) {
            (Ok(()), Ok(cap)) => {
                p.borrow_mut().fx.set_ready();
                log(
                    &p,
                    Level::Info,
                    &format!(
                        "fluxion: graph loaded ({} nodes x {} cores, {} GPUs per node), policy {policy}",
                        cap.nodes, cap.cores_per_node, cap.gpus_per_node
                    ),
                );
                crate::fluxion_ready(&p, cap, graph);
            }
            (Err(e), _) => {
                // Nothing is lost: jobs wait until Fluxion holds the graph.
                log(&p, Level::Err, &format!("fluxion init failed (retrying in 1 s): {e}"));
                retry_init(&p, r2);
            }
            (_, Err(e)) => log(&p, Level::Err, &format!("graph capacity: {e}")),
        }
    });
    if let Err(e) = res {
        log(p, Level::Err, &format!("fluxion init: {e}"));
    }
}

/// Try `init` again in a second (the service may not be up yet).
fn retry_init(p: &Shared, r: Rv1) {
    crate::after(p, 1.0, move |p| {
        if !p.borrow().fx.ready() {
            init_fluxion(p, &r);
        }
    });
}

fn start_journal(p: &Shared, name: &str) {
    let f = with_handle(p, name, |h| {
        h.rpc(
            "job-manager.events-journal",
            Some(r#"{"full":false,"allow":{"submit":1,"start":1,"finish":1,"exception":1,"clean":1}}"#),
            flux::NODEID_ANY,
            flux::future::rpc_flags::STREAMING,
        )
    });
    let weak = Rc::downgrade(p);
    let n = name.to_string();
    let pending = container_pending(p, name);
    let f = match f {
        Ok(f) => f,
        Err(e) => return lost(p, name, &e.message()),
    };
    let id = pending.stream(f, move |f| {
        let Some(p) = weak.upgrade() else {
            return false;
        };
        match f.rpc_get_stream() {
            Ok(Some(text)) => {
                match journal::parse(text) {
                    Ok(entry) if entry.id.is_none() => {
                        // Every active job was replayed: recovered jobs not
                        // seen there ended while pancake was away.
                        log(
                            &p,
                            Level::Debug,
                            &format!("container {n}: journal backlog in"),
                        );
                        feed(
                            &p,
                            Event::AppBacklogDone {
                                container: n.clone(),
                            },
                        );
                    }
                    Ok(entry) => {
                        // The submit entry maps the job to its queue job even
                        // before our submit RPC's answer is processed.
                        if let Some(ev) = journal::app_submitted(&n, &entry) {
                            feed(&p, ev);
                        }
                        if let Some(app_id) = entry.id {
                            for ev in &entry.events {
                                if let Some(event) = journal::app_event(ev) {
                                    feed_app(&p, &n, app_id, event);
                                }
                            }
                        }
                    }
                    Err(e) => log(&p, Level::Err, &format!("container {n}: journal: {e}")),
                }
                true
            }
            Ok(None) => {
                lost(&p, &n, "its job journal ended");
                false
            }
            Err(e) => {
                lost(&p, &n, &format!("its job journal failed: {e}"));
                false
            }
        }
    });
    let up = {
        let mut st = p.borrow_mut();
        let ready = st.fx.ready();
        match (id, st.containers.by_name.get_mut(name)) {
            (Ok(_), Some(c)) => {
                c.state = State::Up;
                c.backoff = 0.1;
                Some(ready)
            }
            _ => None,
        }
    };
    match up {
        Some(ready) => {
            log(p, Level::Info, &format!("container {name}: connected"));
            if ready {
                feed(
                    p,
                    Event::ContainerUp {
                        container: name.to_string(),
                    },
                );
            }
        }
        None => lost(p, name, "cannot follow its job journal"),
    }
}

fn refuse(p: &Shared, name: &str, why: &str) {
    log(p, Level::Err, &format!("container {name}: refused: {why}"));
    let mut st = p.borrow_mut();
    if let Some(c) = st.containers.by_name.get_mut(name) {
        c.state = State::Refused;
        c.reason = Some(why.to_string());
    }
    let h = st
        .containers
        .by_name
        .get_mut(name)
        .and_then(|c| c.handle.take());
    drop(st);
    if let Some(h) = h {
        crate::bury(p, h);
    }
}

/// Container `name` failed: close its connection, tell the dispatcher, retry.
pub(crate) fn lost(p: &Shared, name: &str, why: &str) {
    let was_up = {
        let mut st = p.borrow_mut();
        let Some(c) = st.containers.by_name.get_mut(name) else {
            return;
        };
        if c.state == State::Down {
            return;
        }
        let was_up = c.state == State::Up;
        c.state = State::Down;
        c.reason = Some(why.to_string());
        was_up
    };
    // Destroy every future on the connection (journal, output watches,
    // submits in flight) before the connection itself goes: the dispatcher
    // already treats those jobs as lost.
    container_pending(p, name).clear();
    crate::output::container_lost(p, name);
    // Close the connection later, from the reactor: this may run inside a
    // callback of that very connection.
    let h = p
        .borrow_mut()
        .containers
        .by_name
        .get_mut(name)
        .and_then(|c| c.handle.take());
    if let Some(h) = h {
        crate::bury(p, h);
    }
    log(p, Level::Err, &format!("container {name}: lost: {why}"));
    if was_up {
        feed(
            p,
            Event::ContainerLost {
                container: name.to_string(),
            },
        );
    }
    schedule_retry(p, name);
}

/// After the reactor stopped with an error: find the broken connections and
/// handle them. Returns false when none was broken (a real error).
pub(crate) fn reap_broken(p: &Shared) -> bool {
    let broken: Vec<String> = p
        .borrow()
        .containers
        .iter()
        .filter(|c| c.broken.get() || c.handle.as_ref().is_some_and(|h| h.is_broken()))
        .map(|c| {
            // Handled once: a connection lost before must not make every
            // later reactor error look like a broken connection.
            c.broken.set(false);
            c.name.clone()
        })
        .collect();
    for name in &broken {
        lost(p, name, "connection failed");
    }
    !broken.is_empty()
}

/// Submit `jobspec` to container `name`; `done` gets the application job id.
pub(crate) fn submit(
    p: &Shared,
    name: &str,
    jobspec: &str,
    done: impl FnOnce(Result<u64, String>) + 'static,
) {
    // Without the application broker's ingest validators: the queue
    // broker's validated the user's jobspec, and this broker's
    // pancake-bypass checks what pancake added (the R). Their python round
    // trip cost ~1 ms per job, and queued jobs under load.
    let flags = flux::job::submit_flags::NOVALIDATE;
    let f = with_handle(p, name, |h| h.job_submit(jobspec, 16, flags));
    match f {
        Ok(f) => {
            let pending = container_pending(p, name);
            let _ = pending.spawn(f, 30.0, move |f| {
                done(f.job_submit_get_id().map_err(|e| e.message()))
            });
        }
        Err(e) => done(Err(e.message())),
    }
}

/// Cancel application job `app_id` on container `name`.
pub(crate) fn cancel_job(p: &Shared, name: &str, app_id: u64, note: &str) {
    let f = with_handle(p, name, |h| h.job_cancel(app_id, note));
    let weak = Rc::downgrade(p);
    let n = name.to_string();
    match f {
        Ok(f) => {
            let pending = container_pending(p, name);
            let _ = pending.spawn(f, 30.0, move |f| {
                if let (Err(e), Some(p)) = (f.rpc_get(), weak.upgrade()) {
                    log(
                        &p,
                        Level::Warning,
                        &format!("container {n}: cancel {}: {e}", flux::job::id_f58(app_id)),
                    );
                }
            });
        }
        Err(e) => log(
            p,
            Level::Warning,
            &format!(
                "container {name}: cancel {}: {e}",
                flux::job::id_f58(app_id)
            ),
        ),
    }
}

/// Read inactive application job `app_id`'s whole eventlog on container
/// `name` and feed its events: it ended while pancake was away. Its jobspec
/// must name queue job `queue_id` (the `app_id` memo is only a claim). An
/// unreadable or foreign record ends it with an exception, so its queue job
/// and its cores are not held forever.
pub(crate) fn lookup_app(p: &Shared, queue_id: u64, name: &str, app_id: u64) {
    let n = name.to_string();
    read_queue_id(p, name, app_id, move |p, owner| match owner {
        Ok(Some(q)) if q == queue_id => read_app_eventlog(p, &n, app_id),
        Ok(_) => app_unreadable(
            p,
            &n,
            app_id,
            &format!(
                "it is not the application job of {}",
                flux::job::id_f58(queue_id)
            ),
        ),
        Err(e) => app_unreadable(p, &n, app_id, &e),
    });
}

/// Read which queue job application job `app_id` of container `name`
/// mirrors (`attributes.user.pancake.queue_id` of its jobspec; none for a
/// job pancake did not submit) and pass it to `then`.
fn read_queue_id(
    p: &Shared,
    name: &str,
    app_id: u64,
    then: impl FnOnce(&Shared, Result<Option<u64>, String>) + 'static,
) {
    let f = flux::job::kvs_key(app_id, "jobspec")
        .and_then(|key| with_handle(p, name, |h| h.kvs_lookup(&key)));
    let f = match f {
        Ok(f) => f,
        Err(e) => return then(p, Err(e.message())),
    };
    // Called exactly once: by the continuation, or here if it cannot be set.
    let then = Rc::new(std::cell::RefCell::new(Some(then)));
    let once = Rc::clone(&then);
    let weak = Rc::downgrade(p);
    let res = container_pending(p, name).spawn(f, 30.0, move |f| {
        let Some(p) = weak.upgrade() else { return };
        let owner = f
            .kvs_lookup_get()
            .map_err(|e| e.message())
            .and_then(|t| serde_json::from_str::<Value>(t).map_err(|e| e.to_string()))
            .map(|js| {
                js.pointer("/attributes/user/pancake/queue_id")
                    .and_then(Value::as_u64)
            });
        let cb = once.borrow_mut().take();
        if let Some(cb) = cb {
            cb(&p, owner)
        }
    });
    if let Err(e) = res {
        let cb = then.borrow_mut().take();
        if let Some(cb) = cb {
            cb(p, Err(e.message()))
        }
    }
}

/// Search container `name`'s jobs submitted since `since`, inactive ones
/// included, for the application job of queue job `queue_id`, and answer
/// with [`Event::AppFound`]. The journal backlog lists only active jobs, so
/// this is how a submit that went through and ended while pancake was away
/// is found (job-list keeps inactive jobs; each candidate's jobspec says
/// whose it is).
pub(crate) fn find_app(p: &Shared, queue_id: u64, name: &str, since: f64) {
    // A second of slack: the memo's and the job's clocks are one node's,
    // but both are rounded.
    let payload = json!({
        "max_entries": 0,
        "attrs": ["t_submit"],
        "constraint": { "t_submit": [format!(">={}", (since - 1.0).max(0.0))] },
    })
    .to_string();
    let found = move |p: &Shared, name: &str, result| app_found(p, queue_id, name, result);
    let f = with_handle(p, name, |h| {
        h.rpc("job-list.list", Some(&payload), flux::NODEID_ANY, 0)
    });
    let f = match f {
        Ok(f) => f,
        Err(e) => return found(p, name, Err(e.message())),
    };
    let weak = Rc::downgrade(p);
    let n = name.to_string();
    let res = container_pending(p, name).spawn(f, 30.0, move |f| {
        let Some(p) = weak.upgrade() else { return };
        let listed = f
            .rpc_get()
            .map_err(|e| e.message())
            .and_then(|t| {
                serde_json::from_str::<Value>(t.unwrap_or("{}")).map_err(|e| e.to_string())
            })
            .map(|v| {
                v["jobs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|j| j["id"].as_u64())
                    .collect::<Vec<u64>>()
            });
        match listed {
            Ok(ids) => check_candidates(&p, n, queue_id, ids),
            Err(e) => found(&p, &n, Err(format!("job-list: {e}"))),
        }
    });
    if let Err(e) = res {
        found(p, name, Err(e.message()));
    }
}

/// Tell the dispatcher how the search for `queue_id`'s job on `name` ended.
fn app_found(p: &Shared, queue_id: u64, name: &str, result: Result<Option<u64>, String>) {
    feed(
        p,
        Event::AppFound {
            id: queue_id,
            container: name.to_string(),
            result,
        },
    )
}

/// Read the jobspecs of `ids` one by one until one names `queue_id`.
fn check_candidates(p: &Shared, name: String, queue_id: u64, mut ids: Vec<u64>) {
    let answer = move |p: &Shared, name: String, result| app_found(p, queue_id, &name, result);
    let Some(app_id) = ids.pop() else {
        return answer(p, name, Ok(None));
    };
    let n = name.clone();
    read_queue_id(p, &name, app_id, move |p, owner| match owner {
        Ok(Some(q)) if q == queue_id => answer(p, n, Ok(Some(app_id))),
        Ok(_) => check_candidates(p, n, queue_id, ids),
        Err(e) => answer(p, n, Err(format!("job {}: {e}", flux::job::id_f58(app_id)))),
    });
}

/// Follow inactive application job `app_id`'s eventlog to its `clean` and
/// feed its events. A watch, not a lookup: the job leaves the job-manager's
/// active set when it is clean, but the eventlog's last entries may not be
/// committed to the KVS yet, and a lookup then would miss the `clean` (the
/// job would never be released).
fn read_app_eventlog(p: &Shared, name: &str, app_id: u64) {
    let f = with_handle(p, name, |h| h.job_event_watch(app_id, "eventlog", 0));
    let weak = Rc::downgrade(p);
    let n = name.to_string();
    let f = match f {
        Ok(f) => f,
        Err(e) => return app_unreadable(p, name, app_id, &e.message()),
    };
    let res = container_pending(p, name).stream(f, move |f| {
        let Some(p) = weak.upgrade() else {
            return false;
        };
        match f.job_event_watch_get() {
            Ok(Some(text)) => {
                let ev = journal::parse_eventlog_entry(text);
                let clean = ev.as_ref().is_some_and(|e| e.name == "clean");
                if let Some(event) = ev.as_ref().and_then(journal::app_event) {
                    feed_app(&p, &n, app_id, event);
                }
                !clean
            }
            Ok(None) => false,
            Err(e) => {
                app_unreadable(&p, &n, app_id, &e.message());
                false
            }
        }
    });
    if let Err(e) = res {
        app_unreadable(p, name, app_id, &e.message());
    }
}

fn app_unreadable(p: &Shared, name: &str, app_id: u64, why: &str) {
    log(
        p,
        Level::Err,
        &format!(
            "container {name}: job {}: cannot use its record: {why}",
            flux::job::id_f58(app_id)
        ),
    );
    for event in [
        AppEvent::Exception {
            kind: "pancake".into(),
            severity: 0,
            note: format!(
                "application job {} on {name}: cannot use its record: {why}",
                flux::job::id_f58(app_id)
            ),
        },
        AppEvent::Clean,
    ] {
        feed_app(p, name, app_id, event);
    }
}

/// Load the graph into Fluxion again (the service restarted and lost it),
/// retrying every second; then tell the dispatcher, which restores every
/// live allocation before matching again.
pub(crate) fn reinit_fluxion(p: &Shared) {
    let graph = p.borrow().containers.iter().find_map(|c| c.r.clone());
    let Some(r) = graph else {
        return log(
            p,
            Level::Err,
            "fluxion: no container's R to reload the graph from",
        );
    };
    let jgf = match fluxion::rv1_to_jgf(&r) {
        Ok(j) => j,
        Err(e) => return log(p, Level::Err, &format!("cannot build the graph: {e}")),
    };
    let policy = p.borrow().options.policy.clone();
    let weak = Rc::downgrade(p);
    let res = p.borrow_mut().fx.init(policy, jgf, move |res| {
        let Some(p) = weak.upgrade() else { return };
        match res {
            Ok(()) => feed(&p, Event::FluxionReset),
            Err(e) => {
                log(
                    &p,
                    Level::Err,
                    &format!("fluxion init failed (retrying in 1 s): {e}"),
                );
                crate::after(&p, 1.0, reinit_fluxion);
            }
        }
    });
    if let Err(e) = res {
        log(p, Level::Err, &format!("fluxion init: {e}"));
    }
}

/// Feed an event of application job `app_id` on `container`.
fn feed_app(p: &Shared, container: &str, app_id: u64, event: AppEvent) {
    feed(
        p,
        Event::App {
            container: container.to_string(),
            app_id,
            event,
        },
    );
}
