//! A worker thread for blocking work (gRPC calls to Fluxion), with results
//! handed back to the reactor thread.
//!
//! The reactor never blocks: it sends a job to the worker, and the worker's
//! result comes back through a [`flux::channel`], which wakes the reactor with
//! an fd watcher. The thread is joined by [`Worker::shutdown`], which the
//! module calls before `mod_main` returns, because the broker `dlclose`s the
//! module right after.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use flux::{ReactorRef, Sender, Watcher};

type Job = Box<dyn FnOnce() -> Box<dyn std::any::Any + Send> + Send>;
type Completion = Box<dyn FnOnce(Box<dyn std::any::Any + Send>)>;
/// A job's result, type-erased on its way back to the reactor thread.
type Value = Box<dyn std::any::Any + Send>;

/// The worker thread and the reactor side of its result channel.
pub struct Worker {
    jobs: Option<mpsc::Sender<(u64, Job)>>,
    thread: Option<JoinHandle<()>>,
    completions: Rc<RefCell<HashMap<u64, Completion>>>,
    next: u64,
    _watcher: Watcher,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Worker(pending {})", self.completions.borrow().len())
    }
}

impl Worker {
    /// Start the thread; results are delivered on reactor `r`.
    pub fn start(r: &ReactorRef) -> flux::Result<Worker> {
        let completions: Rc<RefCell<HashMap<u64, Completion>>> = Rc::default();
        let c2 = Rc::clone(&completions);
        let (watcher, results): (Watcher, Sender<(u64, Value)>) =
            flux::channel(r, move |(id, value)| {
                let done = c2.borrow_mut().remove(&id);
                if let Some(done) = done {
                    done(value);
                }
            })?;
        let (tx, rx) = mpsc::channel::<(u64, Job)>();
        let thread = std::thread::Builder::new()
            .name("pancake-worker".into())
            .spawn(move || {
                // Ends when the module drops the job sender.
                while let Ok((id, job)) = rx.recv() {
                    let value = job();
                    if results.send((id, value)).is_err() {
                        break;
                    }
                }
            })
            .map_err(flux::Error::from)?;
        Ok(Worker {
            jobs: Some(tx),
            thread: Some(thread),
            completions,
            next: 0,
            _watcher: watcher,
        })
    }

    /// Run `job` on the worker thread, then `done` with its result on the reactor thread.
    pub fn run<T: Send + 'static>(
        &mut self,
        job: impl FnOnce() -> T + Send + 'static,
        done: impl FnOnce(T) + 'static,
    ) -> flux::Result<()> {
        self.next += 1;
        let id = self.next;
        let boxed: Job = Box::new(move || Box::new(job()) as Box<dyn std::any::Any + Send>);
        let completion: Completion = Box::new(move |v| {
            if let Ok(v) = v.downcast::<T>() {
                done(*v);
            }
        });
        self.completions.borrow_mut().insert(id, completion);
        let sent = self
            .jobs
            .as_ref()
            .map(|tx| tx.send((id, boxed)).is_ok())
            .unwrap_or(false);
        if !sent {
            self.completions.borrow_mut().remove(&id);
            return Err(flux::Error::new(
                libc::ESHUTDOWN,
                "pancake worker has stopped",
            ));
        }
        Ok(())
    }

    /// Number of jobs whose results have not come back yet.
    pub fn pending(&self) -> usize {
        self.completions.borrow().len()
    }

    /// Stop accepting work and join the thread. Pending completions are dropped.
    pub fn shutdown(mut self) {
        self.stop();
    }

    pub fn stop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.completions.borrow_mut().clear();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}
