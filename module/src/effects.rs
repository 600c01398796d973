//! Carrying out the dispatcher's actions with Flux and Fluxion.

use std::rc::Rc;

use flux::Level;
use pancake_core::dispatch::{Action, Event, JobId};
use serde_json::{Value, json};

use crate::{Shared, apps, feed, log};

/// How often to retry `job-exec.override start` while testexec is still
/// setting the job up (it answers ENOENT until then), and how many times.
const OVERRIDE_RETRY: f64 = 0.01;
const OVERRIDE_TRIES: u32 = 500;

pub(crate) fn perform(p: &Shared, action: Action) {
    match action {
        Action::Match {
            id,
            jobspec,
            reserve,
        } => {
            let now = p.borrow().h.reactor().map(|r| r.now()).unwrap_or(0.0);
            let weak = Rc::downgrade(p);
            let res = p
                .borrow_mut()
                .fx
                .match_allocate(jobspec, reserve, now, move |result| {
                    if let Some(p) = weak.upgrade() {
                        feed(&p, Event::Matched { id, result });
                    }
                });
            if let Err(e) = res {
                log(
                    p,
                    Level::Err,
                    &format!("{}: match: {e}", flux::job::id_f58(id)),
                );
            }
        }
        Action::Restore { id, fluxion_id, r } => {
            log(
                p,
                Level::Debug,
                &format!(
                    "{}: restoring fluxion allocation {fluxion_id}",
                    flux::job::id_f58(id)
                ),
            );
            let weak = Rc::downgrade(p);
            let res = p.borrow_mut().fx.restore(fluxion_id, r, move |result| {
                if let Some(p) = weak.upgrade() {
                    feed(
                        &p,
                        Event::Restored {
                            id,
                            fluxion_id,
                            result,
                        },
                    );
                }
            });
            if let Err(e) = res {
                log(
                    p,
                    Level::Err,
                    &format!("{}: restore: {e}", flux::job::id_f58(id)),
                );
            }
        }
        Action::AppLookup {
            id,
            container,
            app_id,
        } => apps::lookup_app(p, id, &container, app_id),
        Action::FindApp {
            id,
            container,
            since,
        } => apps::find_app(p, id, &container, since),
        Action::Wake { after } => crate::after(p, after, |p| feed(p, Event::Tick)),
        Action::Reinit => apps::reinit_fluxion(p),
        Action::ResumeOutput {
            id,
            container,
            app_id,
            started,
        } => crate::output::resume(p, id, &container, app_id, started),
        Action::Cancel { fluxion_id } => {
            let weak = Rc::downgrade(p);
            let res = p.borrow_mut().fx.cancel(fluxion_id, move |r| {
                if let (Err(e), Some(p)) = (r, weak.upgrade()) {
                    log(&p, Level::Err, &format!("fluxion cancel {fluxion_id}: {e}"));
                }
            });
            if let Err(e) = res {
                log(p, Level::Err, &format!("fluxion cancel {fluxion_id}: {e}"));
            }
        }
        Action::Memo { id, memo } => {
            rpc(p, id, "job-manager.memo", json!({ "id": id, "memo": memo }));
        }
        Action::Submit {
            id,
            container,
            jobspec,
        } => {
            with_environment(p, id, jobspec, move |p, jobspec| {
                let weak = Rc::downgrade(p);
                apps::submit(p, &container, &jobspec, move |result| {
                    if let Some(p) = weak.upgrade() {
                        feed(&p, Event::SubmitDone { id, result });
                    }
                });
            });
        }
        Action::AllocSuccess { id, r, annotations } => {
            crate::sched::alloc_success(p, id, r, annotations)
        }
        Action::AllocDeny { id, note } => crate::sched::alloc_deny(p, id, &note),
        Action::AllocCancel { id } => crate::sched::alloc_cancel(p, id),
        Action::Annotate { id, annotations } => crate::sched::annotate(p, id, annotations),
        Action::StartOutput {
            id,
            container,
            app_id,
        } => {
            // The application job started: copy its output as it comes.
            crate::output::start(p, id, &container, app_id);
        }
        Action::OverrideStart { id } => {
            override_start(p, id, OVERRIDE_TRIES);
        }
        Action::OverrideFinish { id, status } => {
            // The finish grafts the queue job's namespace: output goes first.
            crate::output::after_output(p, id, move |p| {
                rpc(
                    p,
                    id,
                    "job-exec.override",
                    json!({ "jobid": id, "event": "finish", "status": status }),
                );
            });
        }
        Action::Raise {
            id,
            kind,
            note,
            wait_status: Some(ws),
        } => {
            crate::output::after_output(p, id, move |p| raise(p, id, &kind, &note, Some(ws)));
        }
        Action::Raise {
            id,
            kind,
            note,
            wait_status: None,
        } => raise(p, id, &kind, &note, None),
        Action::CancelApp {
            container,
            app_id,
            note,
        } => apps::cancel_job(p, &container, app_id, &note),
        Action::Log { id, text } => {
            let line = match id {
                Some(id) => format!("{}: {text}", flux::job::id_f58(id)),
                None => text,
            };
            log(p, Level::Info, &line);
        }
    }
}

/// Fire an RPC about queue job `id`; log a failure.
fn rpc(p: &Shared, id: JobId, topic: &'static str, payload: Value) {
    let f = p
        .borrow()
        .h
        .rpc(topic, Some(&payload.to_string()), flux::NODEID_ANY, 0);
    let weak = Rc::downgrade(p);
    let pending = p.borrow().pending.clone();
    match f {
        Ok(f) => {
            let _ = pending.spawn(f, 30.0, move |f| {
                if let (Err(e), Some(p)) = (f.rpc_get(), weak.upgrade()) {
                    log(
                        &p,
                        Level::Err,
                        &format!("{}: {topic}: {e}", flux::job::id_f58(id)),
                    );
                }
            });
        }
        Err(e) => log(
            p,
            Level::Err,
            &format!("{}: {topic}: {e}", flux::job::id_f58(id)),
        ),
    }
}

/// Raise a fatal exception on queue job `id`, carrying the application's
/// wait status where flux-core accepts it (>= 0.84).
fn raise(p: &Shared, id: JobId, kind: &str, note: &str, wait_status: Option<i32>) {
    let mut req = json!({ "id": id, "type": kind, "severity": 0, "note": note });
    if let (Some(ws), true) = (wait_status, flux_raise_has_wait_status()) {
        req["wait_status"] = json!(ws);
    }
    log(
        p,
        Level::Info,
        &format!("{}: exception {kind}: {note}", flux::job::id_f58(id)),
    );
    rpc(p, id, "job-manager.raise", req);
}

fn flux_raise_has_wait_status() -> bool {
    flux::HAS_RAISE_WAIT_STATUS
}

/// `job-exec.override start`, retried while testexec is not ready (ENOENT).
fn override_start(p: &Shared, id: JobId, tries: u32) {
    let req = json!({ "jobid": id, "event": "start" });
    let f = p.borrow().h.rpc(
        "job-exec.override",
        Some(&req.to_string()),
        flux::NODEID_ANY,
        0,
    );
    let weak = Rc::downgrade(p);
    let pending = p.borrow().pending.clone();
    let f = match f {
        Ok(f) => f,
        Err(e) => {
            return log(
                p,
                Level::Err,
                &format!("{}: override start: {e}", flux::job::id_f58(id)),
            );
        }
    };
    if tries == OVERRIDE_TRIES {
        log(
            p,
            Level::Debug,
            &format!("{}: override start sent", flux::job::id_f58(id)),
        );
    }
    let _ = pending.spawn(f, 30.0, move |f| {
        let Some(p) = weak.upgrade() else { return };
        match f.rpc_get() {
            Ok(_) => {
                log(
                    &p,
                    Level::Debug,
                    &format!(
                        "{}: override start taken after {} retries",
                        flux::job::id_f58(id),
                        OVERRIDE_TRIES - tries
                    ),
                );
                crate::output::queue_started(&p, id)
            }
            Err(e) if e.errno == libc::ENOENT && tries > 0 => {
                // testexec registers the job a moment after RUN: try again soon.
                crate::after(&p, OVERRIDE_RETRY, move |p| {
                    override_start(p, id, tries - 1)
                });
            }
            Err(e) => log(
                &p,
                Level::Err,
                &format!("{}: override start: {e}", flux::job::id_f58(id)),
            ),
        }
    });
}

/// Add queue job `id`'s environment (from its signed J: the journal's
/// jobspec is redacted, and the dispatcher keeps none to stay small) to the
/// application jobspec, then call `then`. A J that cannot be read fails the
/// submit with the reason.
fn with_environment(
    p: &Shared,
    id: JobId,
    jobspec: String,
    then: impl FnOnce(&Shared, String) + 'static,
) {
    let f = flux::job::kvs_key(id, "J").and_then(|key| p.borrow().h.kvs_lookup(&key));
    let weak = Rc::downgrade(p);
    let done = move |p: &Shared, j: flux::Result<String>| {
        let merged = j
            .and_then(|j| flux::job::unwrap_j(&j))
            .map_err(|e| format!("reading its J: {e}"))
            .and_then(|(full, _uid)| {
                let full: Value = serde_json::from_str(&full).map_err(|e| e.to_string())?;
                let mut js: Value = serde_json::from_str(&jobspec).map_err(|e| e.to_string())?;
                if let (Some(env), Some(sys)) = (
                    full.pointer("/attributes/system/environment"),
                    js.pointer_mut("/attributes/system")
                        .and_then(Value::as_object_mut),
                ) {
                    sys.insert("environment".into(), env.clone());
                }
                Ok(js.to_string())
            });
        match merged {
            Ok(js) => then(p, js),
            Err(e) => feed(p, Event::SubmitDone { id, result: Err(e) }),
        }
    };
    match f {
        Ok(f) => {
            let pending = p.borrow().pending.clone();
            let _ = pending.spawn(f, 30.0, move |f| {
                if let Some(p) = weak.upgrade() {
                    done(&p, f.kvs_lookup_get().map(str::to_string));
                }
            });
        }
        Err(e) => done(p, Err(e)),
    }
}
