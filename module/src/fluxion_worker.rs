//! Fluxion on the worker thread.
//!
//! Every Fluxion call runs on the module's one worker thread, in order: the
//! gRPC client blocks, and the public service is not safe to call
//! concurrently. The embedded matcher runs there too, so both backends
//! behave the same to the dispatcher. Results come back to the reactor
//! thread through the worker's channel.

use std::sync::{Arc, Mutex};

use flux::ReactorRef;
use fluxion::{Fluxion, FluxionError, allocation_to_rv1};
use pancake_core::dispatch::Granted;

use crate::worker::Worker;

type Backend = Arc<Mutex<Box<dyn Fluxion>>>;

/// The Fluxion backend and the thread that calls it.
pub(crate) struct FluxionWorker {
    worker: Worker,
    backend: Backend,
    ready: bool,
}

impl FluxionWorker {
    /// Start the worker with the embedded matcher, or a gRPC client of `grpc`.
    pub(crate) fn start(r: &ReactorRef, grpc: Option<&str>) -> flux::Result<FluxionWorker> {
        let backend: Box<dyn Fluxion> = match grpc {
            None => Box::new(fluxion::EmbeddedFluxion::new()),
            Some(addr) => Box::new(
                fluxion_grpc::GrpcFluxion::new(addr)
                    .map_err(|e| flux::Error::inval(format!("pancake: fluxion={addr}: {e}")))?,
            ),
        };
        Ok(FluxionWorker {
            worker: Worker::start(r)?,
            backend: Arc::new(Mutex::new(backend)),
            ready: false,
        })
    }

    /// True once `init` succeeded.
    pub(crate) fn ready(&self) -> bool {
        self.ready
    }

    /// Mark the graph loaded.
    pub(crate) fn set_ready(&mut self) {
        self.ready = true;
    }

    fn call<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut dyn Fluxion) -> T + Send + 'static,
        done: impl FnOnce(T) + 'static,
    ) -> flux::Result<()> {
        let backend = Arc::clone(&self.backend);
        self.worker.run(
            move || {
                // A poisoned lock means a backend call panicked on this
                // thread earlier; the backend itself is still usable.
                let mut fx = backend.lock().unwrap_or_else(|e| e.into_inner());
                f(fx.as_mut())
            },
            done,
        )
    }

    /// Load the graph.
    pub(crate) fn init(
        &mut self,
        policy: String,
        jgf: String,
        done: impl FnOnce(Result<(), FluxionError>) + 'static,
    ) -> flux::Result<()> {
        self.call(move |fx| fx.init(&policy, &jgf), done)
    }

    /// Match `jobspec` and build the application R starting at `now`.
    pub(crate) fn match_allocate(
        &mut self,
        jobspec: String,
        reserve: bool,
        now: f64,
        done: impl FnOnce(Result<Granted, FluxionError>) + 'static,
    ) -> flux::Result<()> {
        self.call(
            move |fx| {
                fx.set_clock(now as i64);
                let m = fx.match_allocate(&jobspec, reserve)?;
                let duration = serde_json::from_str::<serde_json::Value>(&jobspec)
                    .ok()
                    .and_then(|v| {
                        v.pointer("/attributes/system/duration")
                            .and_then(|d| d.as_f64())
                    })
                    .unwrap_or(0.0);
                let r = match allocation_to_rv1(&m.allocation, now, duration) {
                    Ok(r) => r,
                    Err(e) => {
                        // Never leak what we cannot use.
                        let _ = fx.cancel(m.jobid);
                        return Err(e);
                    }
                };
                Ok(Granted {
                    fluxion_id: m.jobid,
                    r,
                    reserved: m.reserved,
                    at: m.at as f64,
                })
            },
            done,
        )
    }

    /// Free an allocation.
    pub(crate) fn cancel(
        &mut self,
        fluxion_id: i64,
        done: impl FnOnce(Result<(), FluxionError>) + 'static,
    ) -> flux::Result<()> {
        self.call(move |fx| fx.cancel(fluxion_id), done)
    }

    /// Re-register allocation `fluxion_id` (its resources are in use).
    pub(crate) fn restore(
        &mut self,
        fluxion_id: i64,
        r: fluxion::Rv1,
        done: impl FnOnce(Result<(), FluxionError>) + 'static,
    ) -> flux::Result<()> {
        self.call(
            move |fx| fx.restore(fluxion_id, &fluxion::rv1_to_jgf(&r)?),
            done,
        )
    }

    /// A round trip through the worker thread, answering its name.
    pub(crate) fn ping(&mut self, done: impl FnOnce(String) + 'static) -> flux::Result<()> {
        self.worker.run(
            || std::thread::current().name().unwrap_or("?").to_string(),
            done,
        )
    }

    /// Join the worker thread (pending results are dropped).
    pub(crate) fn shutdown(self) {
        self.worker.shutdown();
    }

    /// Stop the worker without consuming it.
    pub(crate) fn stop(&mut self) {
        self.worker.stop();
    }
}
