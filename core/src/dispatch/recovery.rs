//! What a (re)loaded module takes up from an earlier one: jobs it matched
//! (their allocations restored in Fluxion before anything else is matched),
//! application jobs that ran on while nobody watched, submits whose answer
//! was lost, and a Fluxion that lost its graph.

use fluxion::{FluxionError, Request, Rv1};
use serde_json::json;

use super::{Action, AllocState, Dispatcher, Job, JobId, Phase, Prior, SUBMIT_GRACE};

/// Where the search for a recovered job's unconfirmed submit has got to.
/// Its container's journal backlog lists only active jobs, so a submit that
/// went through and ended while pancake was away shows up in none of the
/// live feeds; it must be looked for before the job is matched again (it
/// would run twice).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Unconfirmed {
    /// When the earlier pancake dispatched the job ([`Prior::dispatched_at`]).
    since: f64,
    /// What the dispatcher waits for.
    step: ConfirmStep,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ConfirmStep {
    /// The container's journal backlog.
    Backlog,
    /// The submit to show up live (it may still be in job-ingest), until
    /// this time; then its inactive jobs are searched.
    Live(f64),
    /// The answer to [`Action::FindApp`].
    Search,
}

impl Dispatcher {
    /// A job an earlier pancake matched (and maybe forwarded or started),
    /// from what its queue record says: take it up instead of matching it
    /// again.
    pub(super) fn on_recovered(
        &mut self,
        id: JobId,
        jobspec: &str,
        prior: Prior,
        out: &mut Vec<Action>,
    ) {
        let Some(fid) = prior.fluxion_id else {
            // Never matched: an ordinary job, offered again after ready.
            return;
        };
        if self.jobs.contains_key(&id) {
            return;
        }
        let value: serde_json::Value = serde_json::from_str(jobspec).unwrap_or_default();
        let request = fluxion::Jobspec::from_value(&value)
            .map(|s| s.request)
            .unwrap_or_else(|_| Request::slots(1, 1, 0));
        let mut j = Job::from_jobspec(id, &value, request);
        if j.is_local() {
            if !prior.allocated {
                // Matched, but the answer never reached the job-manager: it
                // offers the job again and it is matched again (a module
                // load starts a fresh Fluxion, without the old allocation).
                return;
            }
            let Some(r) = prior.r else {
                out.push(Action::Log {
                    id: Some(id),
                    text: format!(
                        "resumed: fluxion id {fid}, no R on record: its cores cannot be restored in fluxion"
                    ),
                });
                return;
            };
            j.resume_running(fid, r);
            self.restores_due = true;
            out.push(Action::Log {
                id: Some(id),
                text: format!("resumed: fluxion id {fid}, running on the queue broker"),
            });
            self.jobs.insert(id, j);
            return;
        }
        j.prior_fluxion_id = Some(fid);
        j.restore_due = prior.r.is_some();
        self.restores_due = true;
        j.r = prior.r.map(Box::new);
        if prior.allocated {
            j.alloc = AllocState::Answered;
            j.queue_r = true;
        }
        j.queue_alloc = prior.allocated;
        j.queue_started = prior.started;
        j.recovering = true;
        let state = match prior.app_id {
            Some(app_id) => {
                j.app_id = Some(app_id);
                if prior.allocated {
                    out.push(Action::ResumeOutput {
                        id,
                        container: j.container.clone(),
                        app_id,
                        started: prior.started,
                    });
                }
                j.phase = if prior.allocated {
                    Phase::Running
                } else {
                    Phase::Submitted
                };
                self.by_app.insert((j.container.clone(), app_id), id);
                format!("{} job {app_id}", j.container)
            }
            None => {
                // The submit may or may not have reached the container: its
                // journal backlog tells (AppSubmitted, or AppBacklogDone).
                j.phase = Phase::Submitting;
                j.unconfirmed = Some(Unconfirmed {
                    since: prior.dispatched_at.unwrap_or(0.0),
                    step: ConfirmStep::Backlog,
                });
                format!("{} submit unconfirmed", j.container)
            }
        };
        let note = if j.r.is_some() {
            ""
        } else {
            " (no R on record: its cores cannot be restored in fluxion)"
        };
        out.push(Action::Log {
            id: Some(id),
            text: format!("resumed: fluxion id {fid}, {state}{note}"),
        });
        self.jobs.insert(id, j);
    }

    /// The queue's backlog and `sched-hello` are in: every queue job holding
    /// resources is known. Recovered jobs whose queue side let go of its R
    /// while pancake was away no longer hold it; a job holding R that no
    /// pancake allocated (another scheduler ran before) keeps its cores.
    pub(super) fn on_queue_backlog_done(
        &mut self,
        held: Vec<(JobId, Option<Rv1>)>,
        out: &mut Vec<Action>,
    ) {
        let holding: std::collections::HashSet<JobId> = held.iter().map(|(id, _)| *id).collect();
        let released: Vec<JobId> = self
            .jobs
            .values()
            .filter(|j| j.queue_r && !holding.contains(&j.id))
            .map(|j| j.id)
            .collect();
        for id in released {
            if let Some(j) = self.jobs.get_mut(&id) {
                j.queue_r = false;
                if j.is_local() {
                    // Ended while pancake was away: its cores are free.
                    j.queue_ended = true;
                    j.phase = Phase::Done;
                    j.restore_due = false;
                    j.prior_fluxion_id = None;
                }
            }
            self.reap(id);
        }
        for (id, r) in held {
            if let Some(j) = self.jobs.get_mut(&id) {
                j.queue_r = true;
                continue;
            }
            let Some(r) = r else { continue };
            let fid = self.next_foreign_id;
            self.next_foreign_id += 1;
            let mut j = Job::new(id, String::new(), Request::slots(1, 1, 0), "null".into());
            j.resume_running(fid, r);
            self.restores_due = true;
            self.jobs.insert(id, j);
            out.push(Action::Log {
                id: Some(id),
                text: format!(
                    "holds resources pancake did not allocate (another scheduler started it): they stay held until it ends (fluxion id {fid})"
                ),
            });
        }
        if std::mem::take(&mut self.recovering) {
            self.q.dirty = true;
            for e in std::mem::take(&mut self.held_app_events) {
                self.apply(e, out);
            }
        }
    }

    /// Stop waiting for the journal backlogs still missing (containers that
    /// stay unreachable); returns their names.
    pub(super) fn stop_awaiting(&mut self) -> Vec<String> {
        self.q.dirty = true;
        let gone: Vec<String> = std::mem::take(&mut self.awaiting).into_iter().collect();
        for c in &gone {
            self.unknown_app_state(c);
        }
        gone
    }

    /// Container `c`'s journal will not come: its recovered jobs keep their
    /// cores (restored in Fluxion) as if their application jobs still ran.
    pub(super) fn unknown_app_state(&mut self, c: &str) {
        self.restores_due = true;
        for j in self.jobs.values_mut() {
            if j.container == c && j.recovering && j.app_id.is_some() {
                j.recovering = false;
            }
        }
    }

    /// Ask Fluxion to take back every recovered allocation not restored yet.
    pub(super) fn restore_due(&mut self, out: &mut Vec<Action>) {
        // Runs before every pass: scan the jobs only when a recovery or a
        // Fluxion reset left some allocation to restore.
        if !std::mem::take(&mut self.restores_due) {
            return;
        }
        let mut left = false;
        for j in self.jobs.values_mut() {
            if j.recovering && j.restore_due {
                left = true;
            }
            // A recovered job's application state must be known first: if
            // its application job is no longer active, its cores are free
            // and may already be someone else's.
            if j.recovering || !std::mem::take(&mut j.restore_due) {
                continue;
            }
            if let (Some(fluxion_id), Some(r)) = (j.prior_fluxion_id, &j.r) {
                out.push(Action::Restore {
                    id: j.id,
                    fluxion_id,
                    r: Rv1::clone(r),
                });
            }
        }
        self.restores_due = left;
    }

    pub(super) fn on_restored(
        &mut self,
        id: JobId,
        fluxion_id: i64,
        result: Result<(), FluxionError>,
        out: &mut Vec<Action>,
    ) {
        let j = self.jobs.get_mut(&id);
        match result {
            Ok(()) => {
                self.stats.granted += 1;
                match j {
                    Some(j) if j.prior_fluxion_id == Some(fluxion_id) => {
                        j.prior_fluxion_id = None;
                        j.fluxion_id = Some(fluxion_id);
                        // It may have ended while Fluxion was restoring it.
                        self.settle(id, out);
                    }
                    _ => self.free(Some(fluxion_id), out),
                }
            }
            Err(e) => out.push(Action::Log {
                id: Some(id),
                text: format!(
                    "fluxion did not restore allocation {fluxion_id}: {e}; matches that overlap it are refused until the job ends"
                ),
            }),
        }
    }

    /// A container's journal backlog is in: recovered jobs whose submit was
    /// never confirmed start over; forwarded ones whose application job was
    /// not in the backlog ended while pancake was away.
    pub(super) fn on_app_backlog_done(&mut self, container: &str, out: &mut Vec<Action>) {
        self.restores_due = true;
        let lost: Vec<(JobId, bool)> = self
            .jobs
            .values()
            .filter(|j| j.container == container && j.lost.is_some())
            .map(|j| (j.id, j.app_seen))
            .collect();
        for (id, seen) in lost {
            if seen {
                // Back, and the job is still there: it ends normally.
                if let Some(j) = self.jobs.get_mut(&id) {
                    j.lost = None;
                }
            } else {
                self.release_lost(
                    id,
                    &format!("container {container} is back without it"),
                    out,
                );
            }
        }
        let ids: Vec<JobId> = self
            .jobs
            .values()
            .filter(|j| j.recovering && j.container == container)
            .map(|j| j.id)
            .collect();
        for id in ids {
            let Some(j) = self.jobs.get_mut(&id) else {
                continue;
            };
            j.recovering = false;
            out.push(Action::Log {
                id: Some(id),
                text: format!(
                    "{container} backlog: application job {} {}",
                    j.app_id.map_or("unconfirmed".into(), |a| a.to_string()),
                    if j.app_seen { "active" } else { "not active" }
                ),
            });
            match j.app_id {
                None => {
                    // Not in the backlog, but the submit may still be in the
                    // container's job-ingest: hold the cores (restore them)
                    // and give it SUBMIT_GRACE to show up live.
                    let since = j.unconfirmed.map_or(0.0, |u| u.since);
                    j.unconfirmed = Some(Unconfirmed {
                        since,
                        step: ConfirmStep::Live(self.now + SUBMIT_GRACE),
                    });
                    out.push(Action::Wake {
                        after: SUBMIT_GRACE,
                    });
                }
                Some(app_id) if !j.app_seen => {
                    // Not active: it is clean, its cores free; learn how it
                    // ended from its eventlog.
                    j.restore_due = false;
                    out.push(Action::AppLookup {
                        id,
                        container: container.to_string(),
                        app_id,
                    })
                }
                Some(app_id) if j.queue_ended && !j.app_finished && !j.app_clean => {
                    out.push(Action::CancelApp {
                        container: container.to_string(),
                        app_id,
                        note: "queue job ended".into(),
                    })
                }
                Some(_) => {}
            }
        }
    }

    /// Fluxion was loaded again and holds nothing: every allocation still in
    /// use goes back under its id before anything else is matched (the
    /// reservations of the last pass are simply gone).
    pub(super) fn on_fluxion_reset(&mut self, out: &mut Vec<Action>) {
        self.reinit = false;
        self.restores_due = true;
        self.q.dirty = true;
        self.q.forget_reservations();
        for j in self.jobs.values_mut() {
            if let Some(fid) = j.fluxion_id.take() {
                j.prior_fluxion_id = Some(fid);
                j.restore_due = j.r.is_some();
                // Restored counts it again; its old grant will not be freed.
                self.stats.freed += 1;
            }
        }
        out.push(Action::Log {
            id: None,
            text: "fluxion holds the graph again".into(),
        });
    }

    /// Lost brokers whose grace time passed, recovered jobs whose earlier
    /// submit did not show up live in time (search the container's ended
    /// jobs for it), and a Fluxion that was unreachable (try again).
    pub(super) fn on_tick(&mut self, out: &mut Vec<Action>) {
        let now = self.now;
        if std::mem::take(&mut self.q.stalled) {
            self.q.dirty = true;
        }
        let expired: Vec<JobId> = self
            .jobs
            .values()
            .filter(|j| matches!(j.lost, Some(Some(t)) if t <= now))
            .map(|j| j.id)
            .collect();
        for id in expired {
            self.release_lost(id, "its lost broker's grace time passed", out);
        }
        for j in self.jobs.values_mut() {
            let Some(u) = j.unconfirmed.as_mut() else {
                continue;
            };
            if j.app_id.is_some() || !matches!(u.step, ConfirmStep::Live(t) if t <= now) {
                continue;
            }
            u.step = ConfirmStep::Search;
            out.push(Action::FindApp {
                id: j.id,
                container: j.container.clone(),
                since: u.since,
            });
        }
    }

    /// The search for a recovered job's earlier submit is over: adopt the
    /// application job it found, or match the job again if there is none.
    pub(super) fn on_app_found(
        &mut self,
        id: JobId,
        container: String,
        result: Result<Option<JobId>, String>,
        out: &mut Vec<Action>,
    ) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        if j.container != container
            || j.app_id.is_some()
            || !j.unconfirmed.is_some_and(|u| u.step == ConfirmStep::Search)
        {
            return; // confirmed meanwhile (live), or no longer ours
        }
        match result {
            Err(e) => {
                // Not knowing, matching again could run it twice: hold the
                // cores and ask again later.
                if let Some(u) = j.unconfirmed.as_mut() {
                    u.step = ConfirmStep::Live(self.now + SUBMIT_GRACE);
                }
                out.push(Action::Log {
                    id: Some(id),
                    text: format!(
                        "cannot search {container} for the earlier submit (retrying in {SUBMIT_GRACE} s): {e}"
                    ),
                });
                out.push(Action::Wake {
                    after: SUBMIT_GRACE,
                });
            }
            Ok(Some(app_id)) => {
                // It went through (and most likely ended while pancake was
                // away): its eventlog, followed to clean, tells how, and its
                // cores are free once it is clean.
                j.unconfirmed = None;
                j.recovering = false;
                j.app_id = Some(app_id);
                j.phase = Phase::Submitted;
                j.restore_due = false;
                self.stats.forwarded += 1;
                out.push(Action::Log {
                    id: Some(id),
                    text: format!("the earlier submit reached {container} as job {app_id}"),
                });
                out.push(Action::Memo {
                    id,
                    memo: json!({ "app_id": app_id }),
                });
                out.push(Action::AppLookup {
                    id,
                    container: container.clone(),
                    app_id,
                });
                self.by_app.insert((container, app_id), id);
            }
            Ok(None) => {
                j.unconfirmed = None;
                let fid = j.fluxion_id.take();
                j.prior_fluxion_id = None;
                j.restore_due = false;
                j.r = None;
                j.phase = if j.queue_ended {
                    Phase::Done
                } else {
                    Phase::Waiting
                };
                out.push(Action::Log {
                    id: Some(id),
                    text: format!(
                        "the earlier submit never reached {container}: the job is matched again"
                    ),
                });
                self.q.dirty = true;
                self.free(fid, out);
                self.enqueue(id);
                self.reap(id);
            }
        }
    }

    /// An application job pancake forwarded whose queue job is not tracked:
    /// the queue job ended while a reload or restart kept pancake away, but
    /// the application job still holds its cores. Hold them in Fluxion until
    /// it is clean, and cancel it unless it already finished (at the end of
    /// its container's backlog, which says whether it did).
    pub(super) fn adopt(
        &mut self,
        container: String,
        app_id: JobId,
        queue_id: JobId,
        fluxion_id: Option<i64>,
        r: Option<Rv1>,
        out: &mut Vec<Action>,
    ) {
        let Some(fid) = fluxion_id else { return };
        out.push(Action::Log {
            id: Some(queue_id),
            text: format!(
                "{container} job {app_id} outlived its queue job: its cores stay held until it is clean"
            ),
        });
        self.by_app.insert((container.clone(), app_id), queue_id);
        self.restores_due = true;
        let mut j = Job::new(queue_id, container, Request::slots(1, 1, 0), "null".into());
        j.phase = Phase::Draining;
        j.app_id = Some(app_id);
        j.restore_due = r.is_some();
        j.r = r.map(Box::new);
        j.queue_ended = true;
        j.recovering = true;
        j.app_seen = true;
        j.prior_fluxion_id = Some(fid);
        self.jobs.insert(queue_id, j);
    }
}
