//! The application brokers: discovery, connection, and their job journals.
//!
//! Brokers are found the Flux Operator way (`<view>/etc/flux/meta/<i>-<name>`
//! and `<view>/run/flux/local-<i>`) or named explicitly. Connecting never
//! blocks module load: a broker that is not up yet is retried with backoff,
//! and the directory is rescanned so containers that appear later join.
//! On connect the module loads `pancake-bypass` (role=app) there unless it
//! is already loaded, reads `resource.R` (it must agree with the graph
//! Fluxion holds), and follows the broker's job-manager journal.
//!
//! This file holds the connection state ([`Container`], [`Containers`]),
//! the connection's life (connect, retry, lost, refused) and the helpers
//! that send requests on it. The rest is split by concern: `discovery`
//! (finding brokers), `setup` (pancake-bypass and `resource.R` on a new
//! connection), `graph` (loading Fluxion's graph from a container's R),
//! `journal` (following a broker's job journal) and `jobs` (submitting,
//! cancelling and finding application jobs).

mod discovery;
mod graph;
mod jobs;
mod journal;
mod setup;

use std::collections::BTreeMap;
use std::rc::Rc;

use flux::{Handle, Level, Watcher};
use fluxion::Rv1;
use pancake_core::dispatch::Event;

use crate::{Shared, feed, log};

pub(crate) use discovery::discover;
pub(crate) use graph::reinit_fluxion;
pub(crate) use jobs::{cancel_job, find_app, lookup_app, submit};
use setup::ensure_plugin;
pub(crate) use setup::set_strict;

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
