//! The application jobs pancake forwards: submitting and cancelling them,
//! and finding them again (by id or by search) after a reload.

use std::rc::Rc;

use flux::Level;
use pancake_core::dispatch::{AppEvent, Event};
use pancake_core::journal;
use serde_json::{Value, json};

use super::journal::feed_app;
use super::{container_pending, with_handle};
use crate::{Shared, feed, log};

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
