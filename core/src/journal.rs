//! `job-manager.events-journal` responses, parsed, and turned into
//! dispatcher events.
//!
//! Each response is `{"id":I, "events":[...], "jobspec"?o, "R"?o}`; the
//! backlog of active jobs comes first (all their events at once), then a
//! sentinel with id -1, then one event per response.

use serde_json::Value;

use crate::dispatch::{AppEvent, Event, JobId, Prior};

/// One eventlog entry.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEvent {
    /// Seconds since the epoch.
    pub timestamp: f64,
    /// Event name.
    pub name: String,
    /// Event context (`{}` when absent).
    pub context: Value,
}

/// One journal response.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    /// The job, or `None` for the end-of-backlog sentinel.
    pub id: Option<JobId>,
    /// Its events.
    pub events: Vec<JournalEvent>,
    /// The redacted jobspec (with the `submit` event or in the backlog).
    pub jobspec: Option<Value>,
    /// The job's R (with the `alloc` event or in the backlog).
    pub r: Option<Value>,
}

/// Parse one journal response.
pub fn parse(text: &str) -> Result<JournalEntry, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("journal: {e}"))?;
    let id = match v.get("id") {
        Some(Value::Number(n)) if n.as_i64() == Some(-1) => None,
        Some(Value::Number(n)) => Some(n.as_u64().ok_or("journal: bad id")?),
        _ => return Err("journal: missing id".into()),
    };
    let events = v
        .get("events")
        .and_then(Value::as_array)
        .ok_or("journal: missing events")?
        .iter()
        .map(|e| JournalEvent {
            timestamp: e.get("timestamp").and_then(Value::as_f64).unwrap_or(0.0),
            name: e
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            context: e
                .get("context")
                .cloned()
                .unwrap_or(Value::Object(Default::default())),
        })
        .collect();
    Ok(JournalEntry {
        id,
        events,
        jobspec: v.get("jobspec").cloned(),
        r: v.get("R").cloned(),
    })
}

/// One line of an eventlog as stored in the KVS (RFC 18: one JSON object
/// per line), or `None` for a line that is not one.
pub fn parse_eventlog_entry(line: &str) -> Option<JournalEvent> {
    let e: Value = serde_json::from_str(line).ok()?;
    Some(JournalEvent {
        timestamp: e.get("timestamp").and_then(Value::as_f64).unwrap_or(0.0),
        name: e.get("name")?.as_str()?.to_string(),
        context: e
            .get("context")
            .cloned()
            .unwrap_or(Value::Object(Default::default())),
    })
}

/// The container a (redacted) jobspec targets.
pub fn container(jobspec: &Value) -> Option<&str> {
    jobspec
        .pointer("/attributes/system/container")
        .and_then(Value::as_str)
}

/// A queue-broker event of tracked job `id`, as a dispatcher event. (The
/// job's place in the queue — urgency, priority, holds — reaches pancake
/// through the job-manager's scheduler protocol, not the journal.)
pub fn queue_event(id: JobId, ev: &JournalEvent) -> Option<Event> {
    let ctx = &ev.context;
    match ev.name.as_str() {
        "exception" if ctx.get("severity").and_then(Value::as_i64) == Some(0) => {
            Some(Event::QueueException {
                id,
                kind: ctx
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("exception")
                    .to_string(),
                note: ctx
                    .get("note")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            })
        }
        "alloc" => Some(Event::QueueAlloc { id }),
        "start" => Some(Event::QueueStart { id }),
        "clean" => Some(Event::QueueInactive { id }),
        _ => None,
    }
}

/// What an earlier pancake did with a queue job, from the job's events in
/// the journal backlog: its memos (`fluxion_id`, `R`, `app_id`), whether it
/// was allocated (it holds its R) and whether it started. `r` is the job's
/// own R from the backlog entry, used for a job without a container (whose
/// memo carries no R).
pub fn prior(events: &[JournalEvent], r: Option<&Value>) -> Prior {
    let mut p = Prior::default();
    for ev in events {
        let ctx = &ev.context;
        match ev.name.as_str() {
            "memo" => {
                if let Some(f) = ctx.get("fluxion_id").and_then(Value::as_i64) {
                    p.fluxion_id = Some(f);
                    p.dispatched_at = Some(ev.timestamp);
                }
                if let Some(r) = ctx.get("R") {
                    p.r = serde_json::from_value(r.clone()).ok();
                }
                if let Some(a) = ctx.get("app_id").and_then(Value::as_u64) {
                    p.app_id = Some(a);
                }
            }
            "alloc" => p.allocated = true,
            // Its R went back (to housekeeping, then the scheduler).
            "free" => p.allocated = false,
            "start" => p.started = true,
            _ => {}
        }
    }
    if p.r.is_none() && p.allocated {
        p.r = r.and_then(|r| serde_json::from_value(r.clone()).ok());
    }
    p
}

/// The queue job a forwarded application job mirrors, from the `submit`
/// entry of the application broker's journal (its jobspec carries
/// `attributes.user.pancake.queue_id`).
pub fn app_submitted(container: &str, entry: &JournalEntry) -> Option<Event> {
    let app_id = entry.id?;
    entry.events.iter().find(|e| e.name == "submit")?;
    let js = entry.jobspec.as_ref()?;
    let queue_id = js.pointer("/attributes/user/pancake/queue_id")?.as_u64()?;
    Some(Event::AppSubmitted {
        container: container.to_string(),
        app_id,
        queue_id,
        fluxion_id: js
            .pointer("/attributes/user/pancake/fluxion_id")
            .and_then(Value::as_i64),
        r: js
            .pointer("/attributes/system/alloc-bypass/R")
            .and_then(|r| serde_json::from_value(r.clone()).ok()),
    })
}

/// An application-broker event, as a dispatcher [`AppEvent`].
pub fn app_event(ev: &JournalEvent) -> Option<AppEvent> {
    let ctx = &ev.context;
    match ev.name.as_str() {
        "start" => Some(AppEvent::Start),
        "finish" => Some(AppEvent::Finish {
            status: ctx.get("status")?.as_i64()? as i32,
        }),
        "exception" => Some(AppEvent::Exception {
            kind: ctx
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("exception")
                .to_string(),
            severity: ctx.get("severity").and_then(Value::as_i64).unwrap_or(0) as i32,
            note: ctx
                .get("note")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        }),
        "clean" => Some(AppEvent::Clean),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_backlog_sentinel_and_live_entries() {
        let e = parse(r#"{"id":-1,"events":[]}"#).unwrap();
        assert_eq!(e.id, None);
        let e = parse(
            r#"{"id":1234,"events":[{"timestamp":1.5,"name":"submit","context":{"userid":0,"urgency":16}}],
                "jobspec":{"attributes":{"system":{"container":"ior"}}}}"#,
        )
        .unwrap();
        assert_eq!(e.id, Some(1234));
        assert_eq!(e.events[0].name, "submit");
        assert_eq!(container(e.jobspec.as_ref().unwrap()), Some("ior"));
        assert!(parse("{}").is_err());
        assert!(parse("[").is_err());
        assert!(parse(r#"{"id":"x","events":[]}"#).is_err());
    }

    #[test]
    fn prior_reads_memos_and_progress() {
        let e = parse(
            r#"{"id":9,"events":[
                {"timestamp":1,"name":"submit","context":{}},
                {"timestamp":3,"name":"memo","context":{"container":"ior","fluxion_id":4,
                  "R":{"version":1,"execution":{"R_lite":[{"rank":"1","children":{"core":"2-3"}}],
                  "starttime":0,"expiration":0,"nodelist":["n1"]}}}},
                {"timestamp":4,"name":"memo","context":{"app_id":123}}]}"#,
        )
        .unwrap();
        let p = prior(&e.events, None);
        assert_eq!(p.fluxion_id, Some(4));
        assert_eq!(p.dispatched_at, Some(3.0));
        assert_eq!(p.app_id, Some(123));
        assert_eq!(
            p.r.as_ref().map(|r| r.execution.r_lite[0].rank.as_str()),
            Some("1")
        );
        assert!(!p.allocated);
        assert!(!p.started);
        let ev = |t: f64, name: &str| JournalEvent {
            timestamp: t,
            name: name.into(),
            context: serde_json::json!({}),
        };
        let mut more = e.events.clone();
        more.push(ev(6.0, "alloc"));
        more.push(ev(7.0, "start"));
        let p = prior(&more, None);
        assert!(p.allocated && p.started);
        more.push(ev(8.0, "free"));
        assert!(!prior(&more, None).allocated, "a freed job holds no R");
        assert_eq!(
            prior(&e.events[..1], None),
            Prior::default(),
            "never matched"
        );
        // A job without a container: its memo has no R, the backlog's R is used.
        let local = parse(
            r#"{"id":10,"events":[{"timestamp":1,"name":"memo","context":{"fluxion_id":2}},
                {"timestamp":2,"name":"alloc","context":{}}],
                "R":{"version":1,"execution":{"R_lite":[{"rank":"0","children":{"core":"0"}}],
                  "starttime":0,"expiration":0}}}"#,
        )
        .unwrap();
        let p = prior(&local.events, local.r.as_ref());
        assert_eq!(p.fluxion_id, Some(2));
        assert!(p.allocated);
        assert_eq!(
            p.r.map(|r| r.execution.r_lite[0].children["core"].clone()),
            Some("0".to_string())
        );
    }

    #[test]
    fn app_submit_names_the_queue_job() {
        let e = parse(
            r#"{"id":77,"events":[{"timestamp":1,"name":"submit","context":{}}],
                "jobspec":{"attributes":{"user":{"pancake":{"queue_id":5,"fluxion_id":1}}}}}"#,
        )
        .unwrap();
        assert_eq!(
            app_submitted("ior", &e),
            Some(Event::AppSubmitted {
                container: "ior".into(),
                app_id: 77,
                queue_id: 5,
                fluxion_id: Some(1),
                r: None,
            })
        );
        let other = parse(
            r#"{"id":78,"events":[{"timestamp":1,"name":"submit","context":{}}],"jobspec":{}}"#,
        )
        .unwrap();
        assert_eq!(app_submitted("ior", &other), None);
    }

    #[test]
    fn maps_events() {
        let ev = |name: &str, ctx: Value| JournalEvent {
            timestamp: 0.0,
            name: name.into(),
            context: ctx,
        };
        assert_eq!(
            app_event(&ev("finish", serde_json::json!({"status": 768}))),
            Some(AppEvent::Finish { status: 768 })
        );
        assert_eq!(app_event(&ev("finish", serde_json::json!({}))), None);
        assert!(matches!(
            queue_event(
                5,
                &ev(
                    "exception",
                    serde_json::json!({"type":"cancel","severity":0,"note":"x"})
                )
            ),
            Some(Event::QueueException { id: 5, .. })
        ));
        assert_eq!(
            queue_event(
                5,
                &ev("exception", serde_json::json!({"type":"x","severity":1}))
            ),
            None
        );
        assert_eq!(
            queue_event(5, &ev("clean", serde_json::json!({}))),
            Some(Event::QueueInactive { id: 5 })
        );
        assert_eq!(queue_event(5, &ev("memo", serde_json::json!({}))), None);
        assert_eq!(
            queue_event(5, &ev("urgency", serde_json::json!({"urgency": 0}))),
            None,
            "holds reach pancake as sched.cancel, not from the journal"
        );
        assert_eq!(
            queue_event(5, &ev("alloc", serde_json::json!({}))),
            Some(Event::QueueAlloc { id: 5 })
        );
    }
}
