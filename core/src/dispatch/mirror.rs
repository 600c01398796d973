//! Application jobs mirrored on their queue jobs: the application side's
//! events (start, finish, exceptions, clean), the queue side's end, and
//! what a lost container's jobs become.

use serde_json::json;

use super::grant::describe_status;
use super::{Action, AllocState, AppEvent, Dispatcher, Job, JobId, Phase};
use fluxion::Rv1;

impl Dispatcher {
    /// A job pancake forwarded showed up in its container's journal.
    pub(super) fn on_app_submitted(
        &mut self,
        container: String,
        app_id: JobId,
        queue_id: JobId,
        fluxion_id: Option<i64>,
        r: Option<Rv1>,
        out: &mut Vec<Action>,
    ) {
        let Some(j) = self.jobs.get_mut(&queue_id) else {
            self.adopt(container, app_id, queue_id, fluxion_id, r, out);
            return;
        };
        if j.container != container {
            return;
        }
        if j.app_id == Some(app_id) {
            // Known already (a recovered job's memo, or the submit answer):
            // it is still active in its broker.
            j.app_seen = true;
            return;
        }
        if j.app_id.is_some() || j.phase != Phase::Submitting {
            return;
        }
        j.app_id = Some(app_id);
        j.app_seen = true;
        // (Both cleared: `|`, not `||`.)
        if std::mem::take(&mut j.recovering) | j.unconfirmed.take().is_some() {
            // The earlier pancake's submit went through; its answer (and
            // the app_id memo) were lost.
            self.stats.forwarded += 1;
            out.push(Action::Memo {
                id: queue_id,
                memo: json!({ "app_id": app_id }),
            });
            if j.queue_ended {
                j.phase = Phase::Draining;
                out.push(Action::CancelApp {
                    container: container.clone(),
                    app_id,
                    note: "queue job ended before forwarding completed".into(),
                });
            } else {
                j.phase = Phase::Submitted;
            }
        }
        self.by_app.insert((container, app_id), queue_id);
    }

    /// The queue job can now run: answer its request with the R (or, with
    /// none held, as soon as the job-manager offers it again).
    fn start_queue_job(j: &mut Job, draining: bool, out: &mut Vec<Action>) {
        if draining {
            // Not now (the queue is stopping): the module loaded after the
            // restart finds the queue job waiting and the application job
            // running, and answers then.
            return;
        }
        if j.alloc == AllocState::Pending {
            Self::answer(j, out);
        } else {
            j.start_due = true;
        }
    }

    pub(super) fn mirror_finish(j: &mut Job, status: i32, out: &mut Vec<Action>) {
        match j.app_exception.take() {
            Some(exc) => out.push(Action::Raise {
                id: j.id,
                kind: exc.0,
                note: format!("container {}: {}", j.container, exc.1),
                wait_status: Some(status),
            }),
            None => out.push(Action::OverrideFinish { id: j.id, status }),
        }
    }

    /// An event of a forwarded application job.
    pub(super) fn on_app(
        &mut self,
        container: &str,
        app_id: JobId,
        ev: AppEvent,
        out: &mut Vec<Action>,
    ) {
        let Some(&id) = self.by_app.get(&(container.to_string(), app_id)) else {
            return;
        };
        let draining = self.draining;
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        j.app_seen = true;
        match ev {
            AppEvent::Start => {
                if matches!(j.phase, Phase::Submitting | Phase::Submitted) && !j.queue_ended {
                    j.phase = Phase::Running;
                    out.push(Action::StartOutput {
                        id,
                        container: container.to_string(),
                        app_id,
                    });
                    Self::start_queue_job(j, draining, out);
                }
            }
            AppEvent::Finish { status } => {
                j.app_finished = true;
                if j.queue_ended {
                    return;
                }
                if j.queue_started {
                    Self::mirror_finish(j, status, out);
                } else if j.app_exception.is_some() && j.alloc != AllocState::Answered {
                    // The queue job never ran (its request was withdrawn
                    // meanwhile): end it now as the application job ended.
                    j.queue_ended = true;
                    j.start_due = false;
                    Self::mirror_finish(j, status, out);
                } else {
                    j.pending_finish = Some(status);
                }
                out.push(Action::Log {
                    id: Some(id),
                    text: format!(
                        "{container} job {app_id} finished ({})",
                        describe_status(status)
                    ),
                });
            }
            AppEvent::Exception {
                kind,
                severity,
                note,
            } => {
                if severity != 0 || j.queue_ended {
                    return;
                }
                if j.phase == Phase::Running {
                    // Mirrored with the finish status, which follows.
                    j.app_exception = Some(Box::new((kind, note)));
                } else {
                    // Before the queue job runs: there will be no finish
                    // to mirror. The exception ends it as it ended the
                    // application job (the job-manager then withdraws its
                    // request).
                    j.app_finished = true;
                    j.queue_ended = true;
                    j.start_due = false;
                    out.push(Action::Raise {
                        id,
                        kind,
                        note: format!("container {container}: {note}"),
                        wait_status: None,
                    });
                    j.phase = Phase::Draining;
                }
            }
            AppEvent::Clean => {
                j.app_clean = true;
                self.stats.completed += 1;
                // A finish not mirrored yet waits for the queue job's start
                // (QueueStart), even when the application job is already clean.
                j.phase = if j.queue_ended {
                    Phase::Done
                } else {
                    Phase::Draining
                };
                self.settle(id, out);
            }
        }
    }

    /// A fatal exception on the queue job (`flux cancel`, a timeout, ...).
    pub(super) fn on_queue_exception(
        &mut self,
        id: JobId,
        kind: &str,
        note: &str,
        out: &mut Vec<Action>,
    ) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        if j.queue_ended {
            return;
        }
        j.queue_ended = true;
        j.start_due = false;
        if j.alloc == AllocState::Pending && j.cancel_asked {
            // The job-manager already withdrew its request.
            j.alloc = AllocState::None;
            out.push(Action::AllocCancel { id });
        }
        match j.phase {
            Phase::Waiting => {
                // Never matched: nothing to free.
                j.phase = Phase::Done;
                let k = j.clone();
                self.q.remove(&k);
            }
            Phase::Matching | Phase::Submitting => {
                // The answer in flight decides what to undo.
            }
            Phase::Submitted | Phase::Running => {
                if let Some(app_id) = j.app_id
                    && !j.app_clean
                    && !j.app_finished
                {
                    out.push(Action::CancelApp {
                        container: j.container.clone(),
                        app_id,
                        note: format!("queue job {kind}: {note}"),
                    });
                }
                if !j.is_local() {
                    j.phase = Phase::Draining;
                }
            }
            Phase::Draining | Phase::Done => {}
        }
        self.reap(id);
    }

    /// The queue job is inactive.
    pub(super) fn on_queue_inactive(&mut self, id: JobId, out: &mut Vec<Action>) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        j.queue_ended = true;
        j.start_due = false;
        if j.phase == Phase::Waiting {
            j.phase = Phase::Done;
        }
        if matches!(j.phase, Phase::Submitted | Phase::Running) && !j.is_local() {
            if !j.app_clean
                && !j.app_finished
                && let Some(app_id) = j.app_id
            {
                out.push(Action::CancelApp {
                    container: j.container.clone(),
                    app_id,
                    note: "queue job ended".into(),
                });
            }
            j.phase = Phase::Draining;
        }
        let job = j.clone();
        self.q.remove(&job);
        self.reap(id);
    }

    /// A container's broker went away.
    pub(super) fn on_container_lost(&mut self, container: &str, out: &mut Vec<Action>) {
        self.containers_up.remove(container);
        let deadline = self.lost_grace.map(|g| self.now + g);
        let ids: Vec<JobId> = self
            .jobs
            .values()
            .filter(|j| {
                j.container == container
                    && !j.is_local()
                    && !j.app_clean
                    && j.lost.is_none()
                    && matches!(
                        j.phase,
                        Phase::Submitted | Phase::Running | Phase::Submitting | Phase::Draining
                    )
            })
            .map(|j| j.id)
            .collect();
        for id in &ids {
            let Some(j) = self.jobs.get_mut(id) else {
                continue;
            };
            if !j.queue_ended {
                j.queue_ended = true;
                j.start_due = false;
                out.push(Action::Raise {
                    id: *id,
                    kind: "pancake".into(),
                    note: format!("container {container}: its broker was lost"),
                    wait_status: None,
                });
            }
            // The cores stay held in Fluxion: the lost broker's job shells
            // may still run them (flux-core leaves them behind).
            j.phase = Phase::Draining;
            j.lost = Some(deadline);
            j.app_seen = false;
            let until = match self.lost_grace {
                Some(g) => format!("until the broker returns without it, or {g} s"),
                None => "until the broker returns without it".into(),
            };
            out.push(Action::Log {
                id: Some(*id),
                text: format!(
                    "container {container} lost: its cores (fluxion allocation {:?}) stay held {until}",
                    j.fluxion_id
                ),
            });
        }
        if !ids.is_empty()
            && let Some(g) = self.lost_grace
        {
            out.push(Action::Wake { after: g });
        }
        // Jobs waiting for it say so at the next pass.
        self.q.dirty = true;
    }

    /// Give back the cores of lost job `id` (its broker came back without
    /// it, or the grace time passed).
    pub(super) fn release_lost(&mut self, id: JobId, why: &str, out: &mut Vec<Action>) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        j.lost = None;
        j.app_clean = true;
        j.phase = Phase::Done;
        out.push(Action::Log {
            id: Some(id),
            text: format!("{why}: its cores are free again"),
        });
        self.q.dirty = true;
        self.settle(id, out);
    }
}
