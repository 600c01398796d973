//! Copy an application job's output to its queue job, so `flux run` and
//! `flux job attach` on the queue broker print the task output.
//!
//! The application job's `guest.output` eventlog (header, data, eof events)
//! is watched on its broker and appended, event by event, to the `output`
//! eventlog in the queue job's guest namespace (`job-<id>`), which job-exec
//! creates for the test-exec job and grafts into the job's KVS directory
//! when it finishes. Events that arrive before the queue job started are
//! buffered. The queue job's finish waits until every stream reached `eof`
//! (or the watch ended) and every append is committed, so nothing is lost.

use std::collections::HashMap;
use std::rc::Rc;

use flux::Level;
use pancake_core::dispatch::JobId;
use serde_json::Value;

use crate::{Shared, log};

/// How long a finish waits for output at most.
const FINISH_GRACE: f64 = 5.0;

type Deferred = Box<dyn FnOnce(&Shared)>;

/// The copy of one job's output.
#[derive(Default)]
pub(crate) struct Copy {
    /// Events waiting for the queue job's namespace.
    buffer: Vec<String>,
    /// The queue job started: its guest namespace exists.
    started: bool,
    /// Streams expected to end (from the header) and ended so far.
    expected_eofs: Option<u64>,
    eofs: u64,
    /// The watch ended (or all streams ended).
    ended: bool,
    /// An append is being committed (one at a time per job).
    committing: bool,
    /// Actions (the finish) waiting for the copy to complete.
    waiters: Vec<Deferred>,
    /// The watch: container and id in that container's futures.
    stream: Option<(String, u64)>,
    /// The queue job's namespace is gone (the job ended, e.g. cancelled):
    /// nothing more can be written.
    gone: bool,
    /// Events of the application's log the queue job already holds (an
    /// earlier module copied them): counted, not copied again.
    skip: usize,
    /// The application job copied from: container and id.
    app: Option<(String, u64)>,
}

impl Copy {
    fn complete(&self) -> bool {
        self.ended && !self.committing && (self.started || self.buffer.is_empty())
    }
}

/// Copies by queue job id.
#[derive(Default)]
pub(crate) struct Outputs {
    copies: HashMap<JobId, Copy>,
}

/// Start copying `app_id`'s output on `container` to queue job `id`.
pub(crate) fn start(p: &Shared, id: JobId, container: &str, app_id: u64) {
    p.borrow_mut().outputs.copies.entry(id).or_default().app =
        Some((container.to_string(), app_id));
    let f = {
        let st = p.borrow();
        let Some(c) = st.containers.iter().find(|c| c.name == container) else {
            return;
        };
        let Some(h) = c.handle.as_ref() else { return };
        h.job_event_watch(app_id, "guest.output", flux::job::watch_flags::WAITCREATE)
    };
    let f = match f {
        Ok(f) => f,
        Err(e) => {
            log(
                p,
                Level::Warning,
                &format!("{}: cannot watch output: {e}", flux::job::id_f58(id)),
            );
            return ended(p, id);
        }
    };
    let weak = Rc::downgrade(p);
    let pending = crate::apps::container_pending(p, container);
    let container_name = container.to_string();
    let sid = pending.stream(f, move |f| {
        let Some(p) = weak.upgrade() else {
            return false;
        };
        match f.job_event_watch_get() {
            Ok(Some(text)) => {
                on_event(&p, id, text);
                true
            }
            Ok(None) | Err(_) => {
                ended(&p, id);
                false
            }
        }
    });
    if let Ok(sid) = sid
        && let Some(c) = p.borrow_mut().outputs.copies.get_mut(&id)
    {
        c.stream = Some((container_name, sid));
    }
}

/// Application job `app_id` on `container` is clean: if its output log
/// never showed a header, it has none (no job shell ran), so the copy is
/// over.
pub(crate) fn app_clean(p: &Shared, container: &str, app_id: u64) {
    let id = p.borrow().outputs.copies.iter().find_map(|(id, c)| {
        let ours = c
            .app
            .as_ref()
            .is_some_and(|(n, a)| n == container && *a == app_id);
        (ours && c.expected_eofs.is_none()).then_some(*id)
    });
    if let Some(id) = id {
        ended(p, id);
    }
}

/// Copy again the output of a job resumed after a reload or restart: read
/// how many events its queue job's output log holds, skip as many of the
/// application's, and copy the rest as [`start`] does.
pub(crate) fn resume(p: &Shared, id: JobId, container: &str, app_id: u64, started: bool) {
    {
        let mut st = p.borrow_mut();
        let c = st.outputs.copies.entry(id).or_default();
        c.started = started;
    }
    let key = match flux::job::kvs_key(id, "guest.output") {
        Ok(k) => k,
        Err(_) => return start(p, id, container, app_id),
    };
    let f = p.borrow().h.kvs_lookup(&key);
    let weak = Rc::downgrade(p);
    let container = container.to_string();
    let res = f.and_then(|f| {
        let pending = p.borrow().pending.clone();
        pending.spawn(f, 30.0, move |f| {
            let Some(p) = weak.upgrade() else { return };
            // Nothing there yet (ENOENT) means nothing to skip.
            let held = f.kvs_lookup_get().map(|t| t.lines().count()).unwrap_or(0);
            if let Some(c) = p.borrow_mut().outputs.copies.get_mut(&id) {
                c.skip = held;
            }
            start(&p, id, &container, app_id);
        })
    });
    if let Err(e) = res {
        log(
            p,
            Level::Warning,
            &format!(
                "{}: cannot resume the output copy: {e}",
                flux::job::id_f58(id)
            ),
        );
    }
}

fn on_event(p: &Shared, id: JobId, text: &str) {
    let ev: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let mut flush = false;
    {
        let mut st = p.borrow_mut();
        let Some(c) = st.outputs.copies.get_mut(&id) else {
            return;
        };
        match ev.get("name").and_then(Value::as_str) {
            Some("header") => {
                let count = |k: &str| {
                    ev.pointer(&format!("/context/count/{k}"))
                        .and_then(Value::as_u64)
                        .unwrap_or(0)
                };
                c.expected_eofs = Some(count("stdout") + count("stderr"));
            }
            Some("eof") => c.eofs += 1,
            _ => {}
        }
        if c.skip > 0 {
            c.skip -= 1;
        } else {
            c.buffer.push(text.trim_end().to_string());
        }
        if c.expected_eofs.is_some_and(|n| c.eofs >= n) {
            c.ended = true;
        }
        if c.started {
            flush = true;
        }
    }
    if flush {
        commit(p, id);
    }
    check(p, id);
}

fn ended(p: &Shared, id: JobId) {
    if let Some(c) = p.borrow_mut().outputs.copies.get_mut(&id) {
        c.ended = true;
    }
    check(p, id);
}

/// The queue job started (its guest namespace exists): write what we have.
pub(crate) fn queue_started(p: &Shared, id: JobId) {
    let has = match p.borrow_mut().outputs.copies.get_mut(&id) {
        Some(c) => {
            c.started = true;
            true
        }
        None => false,
    };
    if has {
        commit(p, id);
        check(p, id);
    }
}

fn commit(p: &Shared, id: JobId) {
    let lines = match p.borrow_mut().outputs.copies.get_mut(&id) {
        Some(c) if c.gone => {
            c.buffer.clear();
            return;
        }
        // One append in flight per job: what arrives meanwhile goes out
        // with the next one (a job's header and eofs often come together:
        // fewer KVS commits in the queue broker, and the order is kept).
        Some(c) if c.committing => return,
        Some(c) if !c.buffer.is_empty() => std::mem::take(&mut c.buffer),
        _ => return,
    };
    let mut text = lines.join("\n");
    text.push('\n');
    let f = flux::kvs::KvsTxn::new().and_then(|mut txn| {
        txn.append("output", &text)?;
        let ns = flux::job::kvs_namespace(id)?;
        p.borrow().h.kvs_commit_ns(&ns, &txn)
    });
    match f {
        Ok(f) => {
            if let Some(c) = p.borrow_mut().outputs.copies.get_mut(&id) {
                c.committing = true;
            }
            let weak = Rc::downgrade(p);
            let pending = p.borrow().pending.clone();
            let _ = pending.spawn(f, 30.0, move |f| {
                let Some(p) = weak.upgrade() else { return };
                match f.kvs_commit_get() {
                    Ok(()) => {}
                    // job-exec removed the namespace: the queue job ended
                    // (cancelled, or an exception) before its output was in.
                    Err(e) if e.errno == libc::EOPNOTSUPP || e.errno == libc::ENOENT => {
                        let first = p
                            .borrow_mut()
                            .outputs
                            .copies
                            .get_mut(&id)
                            .is_some_and(|c| !std::mem::replace(&mut c.gone, true));
                        if first {
                            log(
                                &p,
                                Level::Debug,
                                &format!(
                                    "{}: queue job ended before its output was copied: {e}",
                                    flux::job::id_f58(id)
                                ),
                            );
                        }
                    }
                    Err(e) => log(
                        &p,
                        Level::Warning,
                        &format!("{}: copying output: {e}", flux::job::id_f58(id)),
                    ),
                }
                if let Some(c) = p.borrow_mut().outputs.copies.get_mut(&id) {
                    c.committing = false;
                }
                // What arrived while this append was in flight.
                commit(&p, id);
                check(&p, id);
            });
        }
        Err(e) => log(
            p,
            Level::Warning,
            &format!("{}: copying output: {e}", flux::job::id_f58(id)),
        ),
    }
}

/// Run the waiters of a complete copy, and forget it.
fn check(p: &Shared, id: JobId) {
    let done = p
        .borrow()
        .outputs
        .copies
        .get(&id)
        .is_some_and(Copy::complete);
    if !done {
        return;
    }
    let c = p.borrow_mut().outputs.copies.remove(&id);
    if let Some(c) = c {
        if let Some((container, sid)) = c.stream {
            crate::apps::container_pending(p, &container).cancel(sid);
        }
        for w in c.waiters {
            w(p);
        }
    }
}

/// Run `action` once job `id`'s output is copied (at once if there is no
/// copy), or after a grace period at the latest.
pub(crate) fn after_output(p: &Shared, id: JobId, action: impl FnOnce(&Shared) + 'static) {
    let action: Deferred = Box::new(action);
    let not_copying = {
        let mut st = p.borrow_mut();
        match st.outputs.copies.get_mut(&id) {
            Some(c) => {
                c.waiters.push(action);
                None
            }
            None => Some(action),
        }
    };
    if let Some(action) = not_copying {
        return action(p);
    }
    check(p, id);
    // Never hold a finish forever on output.
    crate::after(p, FINISH_GRACE, move |p| {
        let stuck = match p.borrow_mut().outputs.copies.get_mut(&id) {
            Some(c) => {
                c.ended = true;
                c.committing = false;
                c.started = true;
                true
            }
            None => false,
        };
        if stuck {
            let id58 = flux::job::id_f58(id);
            log(
                p,
                Level::Warning,
                &format!("{id58}: output copy incomplete after {FINISH_GRACE} s"),
            );
            check(p, id);
        }
    });
}

/// Container `name` was lost: its output watches are gone; finish what waits.
pub(crate) fn container_lost(p: &Shared, name: &str) {
    let ids: Vec<JobId> = {
        let mut st = p.borrow_mut();
        st.outputs
            .copies
            .iter_mut()
            .filter(|(_, c)| c.stream.as_ref().is_some_and(|(n, _)| n == name))
            .map(|(id, c)| {
                c.stream = None;
                c.ended = true;
                *id
            })
            .collect()
    };
    for id in ids {
        check(p, id);
    }
}
