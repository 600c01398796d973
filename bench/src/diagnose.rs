//! What the brokers know of a run's jobs, for a failed run's report and
//! `--trace`: eventlogs on both sides, dmesg, `pancake.status`.

use std::fmt::Write as _;

use pancake_pod::{Broker, Pod};
use serde_json::Value;

use crate::client::{self, Client, RunResult};
use crate::setup::status;

/// The broker a job of the run was submitted to.
fn broker_of<'a>(pod: &'a Pod, c: &Client, j: &client::Job) -> &'a Broker {
    if j.conn == 0 {
        &pod.queue
    } else {
        pod.app(c.name(j.conn))
    }
}

/// The eventlogs of one job, queue side and application side.
pub(crate) fn trace(pod: &Pod, c: &Client, j: &client::Job, pancake: bool) -> String {
    let mut s = String::new();
    let b = broker_of(pod, c, j);
    let id = j.id.to_string();
    let _ = writeln!(
        s,
        "   trace: {} job {}:\n{}",
        b.name,
        flux::job::id_f58(j.id),
        b.run(&["job", "eventlog", &id]).unwrap_or_else(|e| e)
    );
    if pancake {
        let seen = c.seen.borrow();
        for (conn, jobs) in seen.iter().enumerate().skip(1) {
            for (app_id, a) in jobs {
                if a.queue_id == Some(j.id) {
                    let _ = writeln!(
                        s,
                        "   its {} job:\n{}",
                        c.name(conn),
                        pod.app(c.name(conn))
                            .run(&["job", "eventlog", &app_id.to_string()])
                            .unwrap_or_else(|e| e)
                    );
                }
            }
        }
    }
    s
}

/// What the brokers know of the first few jobs that never completed.
pub(crate) fn stuck_report(pod: &Pod, c: &Client, r: &RunResult, pancake: bool) -> String {
    let mut s = String::new();
    let seen = c.seen.borrow();
    let status: Value = if pancake { status(c) } else { Value::Null };
    for j in r.jobs.iter().filter(|j| j.done.is_none()).take(3) {
        let b = broker_of(pod, c, j);
        let id = j.id.to_string();
        let _ = writeln!(
            s,
            "   stuck: {} job {} (submitted {:.3}):\n{}",
            b.name,
            flux::job::id_f58(j.id),
            j.sent,
            b.run(&["job", "eventlog", &id]).unwrap_or_else(|e| e)
        );
        let exec = b
            .run(&["job", "eventlog", "-p", "guest.exec.eventlog", &id])
            .unwrap_or_else(|e| e);
        // Flux prints `ƒ` or `f` before an F58 id depending on the locale.
        let f58 = flux::job::encode(j.id, "f58plain").unwrap_or_default();
        let f58 = f58.get(1..).unwrap_or_default().to_string();
        let log = pod.queue.run(&["dmesg"]).unwrap_or_default();
        let mentions: Vec<&str> = log.lines().filter(|l| l.contains(&f58)).collect();
        let _ = writeln!(
            s,
            "   its exec eventlog:\n{exec}\n   dmesg lines naming it:\n{}",
            mentions.join("\n")
        );
        if pancake {
            let entry = status["jobs"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["id"].as_u64() == Some(j.id)))
                .cloned()
                .unwrap_or(Value::Null);
            let _ = writeln!(s, "   pancake.status: {entry}");
            for (conn, jobs) in seen.iter().enumerate().skip(1) {
                for (app_id, a) in jobs {
                    if a.queue_id == Some(j.id) {
                        let _ = writeln!(
                            s,
                            "   its {} job {}:\n{}",
                            c.name(conn),
                            flux::job::id_f58(*app_id),
                            pod.app(c.name(conn))
                                .run(&["job", "eventlog", &app_id.to_string()])
                                .unwrap_or_else(|e| e)
                        );
                    }
                }
            }
        }
    }
    if pancake {
        let log = pod.queue.run(&["dmesg"]).unwrap_or_default();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                [
                    ".err[",
                    ".crit[",
                    ".warning[",
                    ".alert[",
                    ".emerg[",
                    "panic",
                ]
                .iter()
                .any(|k| l.contains(k))
            })
            .collect();
        let panics: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("panic"))
            .take(10)
            .collect();
        let _ = writeln!(
            s,
            "   queue broker warnings and errors in dmesg (last 20):\n{}\n   panics (first 10):\n{}",
            lines[lines.len().saturating_sub(20)..].join("\n"),
            panics.join("\n")
        );
    }
    s
}
