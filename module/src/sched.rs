//! pancake as the queue broker's scheduler: the `sched` and `feasibility`
//! services (RFC 27), spoken with the broker's job-manager.
//!
//! The job-manager offers a job (`sched.alloc`) once its dependencies,
//! begin-time, urgency and queue allow it to start; the request is held
//! (as a payload-less copy: a waiting job costs little) until the
//! dispatcher answers it. The handshake is the one flux-core's schedulers
//! do: `job-manager.sched-hello` (the jobs holding resources), then
//! `job-manager.sched-ready` (mode `unlimited`: every eligible job is
//! offered, and pancake bounds its own passes with `queue-depth`).

use std::collections::HashMap;
use std::rc::Rc;

use flux::{HandleRef, Level, MsgRef, Role, Table};
use fluxion::Rv1;
use pancake_core::dispatch::{Event, JobId};
use serde_json::{Value, json};

use crate::{Shared, feed, log};

/// RFC 27 alloc response types.
const ALLOC_SUCCESS: i32 = 0;
const ALLOC_ANNOTATE: i32 = 1;
const ALLOC_DENY: i32 = 2;
const ALLOC_CANCEL: i32 = 3;

/// The job-manager's pending `sched.alloc` requests, by job.
#[derive(Default)]
pub(crate) struct Requests {
    by_id: HashMap<JobId, flux::Msg>,
}

impl Requests {
    /// Requests held.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Forget job `id`'s request without answering it (the job is gone:
    /// the job-manager no longer waits for an answer).
    pub(crate) fn forget(&mut self, id: JobId) {
        self.by_id.remove(&id);
    }

    /// Drop every request (module unload: the job-manager takes them back
    /// and offers them again to the next scheduler).
    pub(crate) fn clear(&mut self) {
        self.by_id.clear();
    }
}

/// Take the `sched` and `feasibility` services. Fails (the module does not
/// load) when another scheduler holds them: a broker has one scheduler.
pub(crate) fn register_services(h: &HandleRef) -> flux::Result<()> {
    for service in ["sched", "feasibility"] {
        let f = h.service_register(service)?;
        f.wait_for(30.0)?;
        if let Err(e) = f.rpc_get() {
            let why = if e.errno == libc::EEXIST {
                format!(
                    "pancake: another scheduler provides the {service} service on this broker: \
                     pancake is the queue broker's scheduler, so remove that one first \
                     (flux module remove sched-simple), or start the broker with \
                     FLUX_SCHED_MODULE=none in its environment"
                )
            } else {
                format!(
                    "pancake: cannot register the {service} service: {}",
                    e.message()
                )
            };
            return Err(flux::Error::new(e.errno, why));
        }
    }
    Ok(())
}

/// The RFC 27 request handlers.
pub(crate) fn handlers(h: &HandleRef, p: &Shared) -> flux::Result<flux::MsgHandlers> {
    let (alloc, cancel, free, prio) = (Rc::clone(p), Rc::clone(p), Rc::clone(p), Rc::clone(p));
    let (expiration, status, feasible) = (Rc::clone(p), Rc::clone(p), Rc::clone(p));
    Table::new()
        .request("sched.alloc", Role::Owner, move |h, msg| {
            on_alloc(&alloc, h, msg)
        })
        .request("sched.cancel", Role::Owner, move |_h, msg| {
            if let Some(id) = job_id(msg) {
                feed(&cancel, Event::AllocCancel { id });
            }
        })
        .request("sched.free", Role::Owner, move |_h, msg| {
            let Ok(v) = msg.request_json::<Value>() else {
                return;
            };
            if let Some(id) = v.get("id").and_then(Value::as_u64) {
                // Without `final` (older flux-core), a free is the job's last.
                let last = v.get("final").and_then(Value::as_bool).unwrap_or(true);
                feed(&free, Event::Free { id, last });
            }
        })
        .request("sched.prioritize", Role::Owner, move |_h, msg| {
            let Ok(v) = msg.request_json::<Value>() else {
                return;
            };
            for pair in v["jobs"].as_array().into_iter().flatten() {
                if let (Some(id), Some(priority)) = (pair[0].as_u64(), pair[1].as_i64()) {
                    feed(&prio, Event::Priority { id, priority });
                }
            }
        })
        .request("sched.expiration", Role::Owner, move |h, msg| {
            on_expiration(&expiration, h, msg)
        })
        .request("sched.resource-status", Role::User, move |h, msg| {
            let reply = resource_status(&status);
            if let Err(e) = h.respond_json(msg, &reply) {
                h.log(Level::Err, &format!("sched.resource-status: respond: {e}"));
            }
        })
        .request("feasibility.check", Role::Owner, {
            let p = Rc::clone(&feasible);
            move |h, msg| on_feasibility(&p, h, msg)
        })
        // (flux-core before 0.73 asks the scheduler itself.)
        .request("sched.feasibility", Role::Owner, move |h, msg| {
            on_feasibility(&feasible, h, msg)
        })
        .register(h, None)
}

fn job_id(msg: &MsgRef) -> Option<JobId> {
    msg.request_json::<Value>()
        .ok()
        .and_then(|v| v.get("id").and_then(Value::as_u64))
}

fn on_alloc(p: &Shared, h: &HandleRef, msg: &MsgRef) {
    let v = match msg.request_json::<Value>() {
        Ok(v) => v,
        Err(e) => return log(p, Level::Err, &format!("sched.alloc: {e}")),
    };
    let Some(id) = v.get("id").and_then(Value::as_u64) else {
        return log(p, Level::Err, "sched.alloc without an id");
    };
    let held = match msg.copy_header() {
        Ok(m) => m,
        Err(e) => {
            // Cannot hold it: deny rather than leave the job waiting forever.
            let note = format!("pancake: cannot hold the request: {e}");
            let _ = h.respond_json(msg, &json!({"id": id, "type": ALLOC_DENY, "note": note}));
            return;
        }
    };
    p.borrow_mut().allocs.by_id.insert(id, held);
    feed(
        p,
        Event::Alloc {
            id,
            jobspec: v.get("jobspec").map(Value::to_string).unwrap_or_default(),
            priority: v.get("priority").and_then(Value::as_i64).unwrap_or(16),
            t_submit: v.get("t_submit").and_then(Value::as_f64).unwrap_or(0.0),
        },
    );
}

/// A running job's time limit changed (`flux update ID duration=...`).
fn on_expiration(p: &Shared, h: &HandleRef, msg: &MsgRef) {
    let id = job_id(msg);
    let local = id.and_then(|id| p.borrow().d.job(id).map(|j| j.is_local()));
    let res = match local {
        // The queue broker runs it: its time limit is job-exec's business
        // there; pancake's plan only assumes the old one.
        Some(true) | None => h.respond(msg, None),
        Some(false) => h.respond_error(
            msg,
            &flux::Error::inval(
                "pancake: a container job's time limit is its application job's: update it on the container's broker",
            ),
        ),
    };
    if let Err(e) = res {
        log(p, Level::Err, &format!("sched.expiration: respond: {e}"));
    }
}

/// What `flux resource list` shows as all, allocated and down (older
/// flux-core asks the scheduler; newer asks the job-manager, which sums
/// the R of the jobs pancake allocated).
fn resource_status(p: &Shared) -> Value {
    let st = p.borrow();
    let all = st
        .containers
        .iter()
        .find_map(|c| c.r.clone())
        .or_else(|| st.local_r.clone());
    let empty = Rv1::from_ranks(&Default::default(), 0.0, 0.0);
    json!({
        "all": all.unwrap_or_else(|| empty.clone()),
        "allocated": st.d.allocated(),
        "down": empty,
    })
}

fn on_feasibility(p: &Shared, h: &HandleRef, msg: &MsgRef) {
    let jobspec = msg
        .request_json::<Value>()
        .ok()
        .and_then(|v| v.get("jobspec").cloned());
    let verdict = match jobspec {
        Some(js) => p.borrow().d.check_request(&js.to_string()).map(|_| ()),
        None => Err("pancake: feasibility.check without a jobspec".into()),
    };
    let res = match verdict {
        Ok(()) => h.respond(msg, None),
        Err(why) => h.respond_error(msg, &flux::Error::inval(why)),
    };
    if let Err(e) = res {
        log(p, Level::Err, &format!("feasibility.check: respond: {e}"));
    }
}

/// Answer job `id`'s request with `payload` (once, unless it is an
/// annotation: the request stays open).
fn answer(p: &Shared, id: JobId, payload: Value) {
    let keep = payload["type"] == ALLOC_ANNOTATE;
    let res = {
        let mut st = p.borrow_mut();
        let st = &mut *st;
        let msg = if keep {
            st.allocs.by_id.get(&id).map(|m| flux::MsgRef::to_owned(m))
        } else {
            st.allocs.by_id.remove(&id)
        };
        // None: the job-manager withdrew it (the job ended).
        msg.map(|m| st.h.respond_json(&m, &payload))
    };
    if let Some(Err(e)) = res {
        log(
            p,
            Level::Err,
            &format!("{}: sched.alloc: respond: {e}", flux::job::id_f58(id)),
        );
    }
}

/// Allocate job `id` with `r`: commit R to its KVS directory (job-exec and
/// `flux job info` read it there), then answer the request with it.
pub(crate) fn alloc_success(p: &Shared, id: JobId, r: Rv1, annotations: Option<Value>) {
    let committed = flux::job::kvs_key(id, "R").and_then(|key| {
        let mut txn = flux::kvs::KvsTxn::new()?;
        txn.put(&key, &r.to_json_string())?;
        p.borrow().h.kvs_commit(&txn)
    });
    let weak = Rc::downgrade(p);
    let done = move |p: &Shared, res: flux::Result<()>| match res {
        Ok(()) => {
            // Always an object: flux-core 0.61 and 0.73 log EINVAL for a
            // success without annotations (0.88 accepts none).
            let annotations = annotations.unwrap_or_else(|| json!({}));
            let payload =
                json!({ "id": id, "type": ALLOC_SUCCESS, "R": r, "annotations": annotations });
            answer(p, id, payload);
        }
        Err(e) => {
            log(
                p,
                Level::Err,
                &format!("{}: cannot commit R: {e}", flux::job::id_f58(id)),
            );
            alloc_deny(p, id, &format!("pancake: cannot commit R: {}", e.message()));
            // The queue job never holds it: the dispatcher may let it go.
            feed(p, Event::Free { id, last: true });
        }
    };
    match committed {
        Ok(f) => {
            let pending = p.borrow().pending.clone();
            let spawned = pending.spawn(f, 30.0, move |f| {
                if let Some(p) = weak.upgrade() {
                    done(&p, f.kvs_commit_get());
                }
            });
            if let Err(e) = spawned {
                log(
                    p,
                    Level::Err,
                    &format!("{}: R commit: {e}", flux::job::id_f58(id)),
                );
            }
        }
        Err(e) => done(p, Err(e)),
    }
}

/// Deny job `id`'s request: the job-manager raises an `alloc` exception
/// with `note`.
pub(crate) fn alloc_deny(p: &Shared, id: JobId, note: &str) {
    log(
        p,
        Level::Info,
        &format!("{}: alloc denied: {note}", flux::job::id_f58(id)),
    );
    answer(p, id, json!({ "id": id, "type": ALLOC_DENY, "note": note }));
}

/// Answer job `id`'s withdrawn request: it goes back to its queue.
pub(crate) fn alloc_cancel(p: &Shared, id: JobId) {
    answer(p, id, json!({ "id": id, "type": ALLOC_CANCEL }));
}

/// Annotate job `id` (why it waits).
pub(crate) fn annotate(p: &Shared, id: JobId, annotations: Value) {
    answer(
        p,
        id,
        json!({ "id": id, "type": ALLOC_ANNOTATE, "annotations": annotations }),
    );
}

/// The handshake, once the queue journal's backlog is in: learn the jobs
/// that hold resources (`sched-hello`), let the dispatcher take them into
/// account, then tell the job-manager pancake is ready for requests.
pub(crate) fn hello(p: &Shared) {
    let f = p.borrow().h.rpc(
        "job-manager.sched-hello",
        None,
        flux::NODEID_ANY,
        flux::future::rpc_flags::STREAMING,
    );
    let f = match f {
        Ok(f) => f,
        Err(e) => {
            log(p, Level::Err, &format!("sched-hello: {e}"));
            return hello_done(p, Vec::new());
        }
    };
    let held: Rc<std::cell::RefCell<Vec<JobId>>> = Default::default();
    let weak = Rc::downgrade(p);
    let pending = p.borrow().pending.clone();
    let res = pending.stream(f, move |f| {
        let Some(p) = weak.upgrade() else {
            return false;
        };
        match f.rpc_get_stream() {
            Ok(Some(text)) => {
                if let Some(id) = serde_json::from_str::<Value>(text)
                    .ok()
                    .and_then(|v| v.get("id").and_then(Value::as_u64))
                {
                    held.borrow_mut().push(id);
                }
                true
            }
            Ok(None) => {
                hello_done(&p, std::mem::take(&mut held.borrow_mut()));
                false
            }
            Err(e) => {
                log(&p, Level::Err, &format!("sched-hello: {e}"));
                hello_done(&p, std::mem::take(&mut held.borrow_mut()));
                false
            }
        }
    });
    if let Err(e) = res {
        log(p, Level::Err, &format!("sched-hello: {e}"));
    }
}

fn hello_done(p: &Shared, ids: Vec<JobId>) {
    let held: Vec<(JobId, Option<Rv1>)> = {
        let mut st = p.borrow_mut();
        let mut rs = std::mem::take(&mut st.backlog_r);
        ids.into_iter()
            .map(|id| {
                let r = rs
                    .remove(&id)
                    .and_then(|v| serde_json::from_value::<Rv1>(v).ok());
                (id, r)
            })
            .collect()
    };
    log(
        p,
        Level::Debug,
        &format!("scheduler: hello ({} jobs hold resources)", held.len()),
    );
    feed(p, Event::QueueBacklogDone { held });
    ready(p);
}

fn ready(p: &Shared) {
    let f = p.borrow().h.rpc(
        "job-manager.sched-ready",
        Some(r#"{"mode":"unlimited"}"#),
        flux::NODEID_ANY,
        0,
    );
    let weak = Rc::downgrade(p);
    let pending = p.borrow().pending.clone();
    let res = f.and_then(|f| {
        pending.spawn(f, 30.0, move |f| {
            let Some(p) = weak.upgrade() else { return };
            match f.rpc_get_json::<Value>() {
                Ok(v) => log(
                    &p,
                    Level::Info,
                    &format!(
                        "scheduler: ready ({} jobs waiting in the queue)",
                        v.get("count").and_then(Value::as_i64).unwrap_or(0)
                    ),
                ),
                Err(e) => log(&p, Level::Err, &format!("sched-ready: {e}")),
            }
        })
    });
    if let Err(e) = res {
        log(p, Level::Err, &format!("sched-ready: {e}"));
    }
}
