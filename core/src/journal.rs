//! `job-manager.events-journal` responses, parsed, and turned into
//! dispatcher events.
//!
//! Each response is `{"id":I, "events":[...], "jobspec"?o, "R"?o}`; the
//! backlog of active jobs comes first (all their events at once), then a
//! sentinel with id -1, then one event per response.

use serde_json::Value;

use crate::dispatch::{AppEvent, Event, JobId};

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
    })
}

/// The container a (redacted) jobspec targets.
pub fn container(jobspec: &Value) -> Option<&str> {
    jobspec
        .pointer("/attributes/system/container")
        .and_then(Value::as_str)
}

/// A queue-broker event of tracked job `id`, as a dispatcher event.
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
        "urgency" => Some(Event::Urgency {
            id,
            urgency: ctx.get("urgency")?.as_i64()? as i32,
        }),
        "priority" => Some(Event::Priority {
            id,
            priority: ctx.get("priority")?.as_i64()?,
        }),
        "dependency-add"
            if ctx.get("description").and_then(Value::as_str)
                == Some(crate::dispatch::DEPENDENCY) =>
        {
            Some(Event::QueueHeld { id })
        }
        "alloc" => Some(Event::QueueAlloc { id }),
        "start" => Some(Event::QueueStart { id }),
        "clean" => Some(Event::QueueInactive { id }),
        _ => None,
    }
}

/// The queue job a forwarded application job mirrors, from the `submit`
/// entry of the application broker's journal (its jobspec carries
/// `attributes.user.pancake.queue_id`).
pub fn app_submitted(container: &str, entry: &JournalEntry) -> Option<Event> {
    let app_id = entry.id?;
    entry.events.iter().find(|e| e.name == "submit")?;
    let queue_id = entry
        .jobspec
        .as_ref()?
        .pointer("/attributes/user/pancake/queue_id")?
        .as_u64()?;
    Some(Event::AppSubmitted {
        container: container.to_string(),
        app_id,
        queue_id,
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
                queue_id: 5
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
            queue_event(
                5,
                &ev(
                    "dependency-add",
                    serde_json::json!({"description": "pancake"})
                )
            ),
            Some(Event::QueueHeld { id: 5 })
        );
        assert_eq!(
            queue_event(
                5,
                &ev(
                    "dependency-add",
                    serde_json::json!({"description": "after"})
                )
            ),
            None
        );
    }
}
