//! Following an application broker's job-manager journal: its backlog and
//! live events, fed to the dispatcher.

use std::rc::Rc;

use flux::Level;
use pancake_core::dispatch::{AppEvent, Event};
use pancake_core::journal;

use super::{State, container_pending, lost, with_handle};
use crate::{Shared, feed, log};

pub(super) fn start_journal(p: &Shared, name: &str) {
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

/// Feed an event of application job `app_id` on `container`.
pub(super) fn feed_app(p: &Shared, container: &str, app_id: u64, event: AppEvent) {
    feed(
        p,
        Event::App {
            container: container.to_string(),
            app_id,
            event,
        },
    );
}
