//! The server side: any [`Fluxion`] served over the Fluxion gRPC protocol.
//!
//! [`PancakeService`] implements the generated `FluxionService` trait. Every
//! call is run on tokio's blocking pool behind one mutex, so the backend sees
//! strictly serialised calls (like the embedded matcher expects). Failures are
//! answered with the [`reason`](crate::reason) extension. A panicking backend
//! call is answered with `INTERNAL` and the server keeps serving.
//!
//! [`serve`] runs a service on a bound listener until a shutdown future
//! completes; [`ServerHandle::spawn`] runs one on its own thread (tests,
//! benchmarks, embedding); the `pancake-fluxion` binary wraps [`run`].

use std::collections::HashSet;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fluxion::{Fluxion, FluxionError, MatchOutcome};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::proto;
use crate::proto::fluxion_service_server::{FluxionService, FluxionServiceServer};
use crate::reason::status_from_error;

/// The name the server reports in `Info`.
pub const IMPLEMENTATION: &str = "pancake-fluxion";

/// Settings of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// Address to listen on (default `127.0.0.1`).
    pub host: String,
    /// Port to listen on (default 4242; 0 picks a free port).
    pub port: u16,
    /// Policy used when an `Init` names none (empty: the backend's default).
    pub default_policy: String,
    /// Largest message accepted or sent, in bytes (default 64 MiB).
    pub max_message_size: usize,
    /// Write the bound port (decimal, newline) to this file once listening.
    pub port_file: Option<PathBuf>,
    /// Log each call (method, job id, outcome, microseconds) to stderr.
    pub log: bool,
    /// After a shutdown request, how long to wait for connections to close
    /// before dropping them (default 2 s).
    pub shutdown_grace: Duration,
    /// Name of the backend, reported by `Info` (default `"embedded"`).
    pub backend_name: String,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            host: "127.0.0.1".into(),
            port: 4242,
            default_policy: String::new(),
            max_message_size: crate::DEFAULT_MAX_MESSAGE_SIZE,
            port_file: None,
            log: true,
            shutdown_grace: Duration::from_secs(2),
            backend_name: "embedded".into(),
        }
    }
}

/// What the mutex guards.
struct State {
    fluxion: Box<dyn Fluxion>,
    /// Job ids the backend holds (matched or restored, not cancelled).
    live: HashSet<i64>,
}

struct Shared {
    state: Mutex<State>,
    instance_id: String,
    init_generation: AtomicU64,
    live_jobs: AtomicU64,
    default_policy: String,
    backend_name: String,
    log: bool,
}

/// The gRPC service: a [`Fluxion`] behind a mutex.
#[derive(Clone)]
pub struct PancakeService {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PancakeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PancakeService")
            .field("instance_id", &self.shared.instance_id)
            .field("backend", &self.shared.backend_name)
            .finish_non_exhaustive()
    }
}

impl PancakeService {
    /// Serve `fluxion` with `options` (only `default_policy`, `log` and
    /// `backend_name` matter here).
    pub fn new(fluxion: Box<dyn Fluxion>, options: &ServerOptions) -> PancakeService {
        PancakeService {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    fluxion,
                    live: HashSet::new(),
                }),
                instance_id: random_instance_id(),
                init_generation: AtomicU64::new(0),
                live_jobs: AtomicU64::new(0),
                default_policy: options.default_policy.clone(),
                backend_name: options.backend_name.clone(),
                log: options.log,
            }),
        }
    }

    /// This process's instance id, as reported by `Info`.
    pub fn instance_id(&self) -> &str {
        &self.shared.instance_id
    }

    /// The tonic service, with message size limits applied.
    pub fn into_server(self, max_message_size: usize) -> FluxionServiceServer<PancakeService> {
        FluxionServiceServer::new(self)
            .max_decoding_message_size(max_message_size)
            .max_encoding_message_size(max_message_size)
    }

    /// Run `work` on the blocking pool with the backend locked; log it.
    async fn run<T, W>(&self, method: &'static str, subject: String, work: W) -> Result<T, Status>
    where
        T: Send + 'static,
        W: FnOnce(&mut State, &Shared) -> Result<(T, String), FluxionError> + Send + 'static,
    {
        let shared = self.shared.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let mut guard = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                work(&mut guard, &shared)
            }));
            drop(guard);
            let micros = started.elapsed().as_micros();
            let (result, note) = match outcome {
                Ok(Ok((value, note))) => (Ok(value), format!("ok{note}")),
                Ok(Err(err)) => {
                    let status = status_from_error(&err);
                    let note = format!("error {}", status.message());
                    (Err(status), note)
                }
                Err(_) => (
                    Err(Status::internal(format!(
                        "{method}: the Fluxion backend panicked"
                    ))),
                    "error backend panicked".to_string(),
                ),
            };
            if shared.log {
                eprintln!("{IMPLEMENTATION}: {method}{subject} {note} {micros}us");
            }
            result
        })
        .await;
        match joined {
            Ok(result) => result,
            Err(e) => Err(Status::internal(format!("{method}: worker failed: {e}"))),
        }
    }
}

/// A random id per process start (128 bits, hex).
fn random_instance_id() -> String {
    let mut out = String::new();
    for salt in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.write_u32(std::process::id());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

#[tonic::async_trait]
impl FluxionService for PancakeService {
    async fn init(
        &self,
        request: Request<proto::InitRequest>,
    ) -> Result<Response<proto::InitResponse>, Status> {
        let r = request.into_inner();
        let subject = format!(" policy={:?} jgf_bytes={}", r.policy, r.jgf.len());
        self.run("Init", subject, move |state, shared| {
            let policy = if r.policy.is_empty() {
                shared.default_policy.as_str()
            } else {
                r.policy.as_str()
            };
            // Any Init, even a failed one, may drop the old graph and its
            // allocations: count it and forget the live jobs either way.
            state.live.clear();
            shared.live_jobs.store(0, Ordering::SeqCst);
            let generation = shared.init_generation.fetch_add(1, Ordering::SeqCst) + 1;
            state.fluxion.init(policy, &r.jgf)?;
            Ok((
                proto::InitResponse {
                    status: proto::init_response::ResultType::InitSuccess as i32,
                },
                format!(" generation={generation}"),
            ))
        })
        .await
        .map(Response::new)
    }

    async fn r#match(
        &self,
        request: Request<proto::MatchRequest>,
    ) -> Result<Response<proto::MatchResponse>, Status> {
        let r = request.into_inner();
        let subject = format!(" reserve={}", r.reservation);
        self.run("Match", subject, move |state, shared| {
            let MatchOutcome {
                jobid,
                allocation,
                reserved,
                at,
                overhead,
            } = {
                // The server's own clock: reservations are planned from the
                // expected ends of running jobs, in real time.
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                state.fluxion.set_clock(now);
                state.fluxion.match_allocate(&r.jobspec, r.reservation)?
            };
            state.live.insert(jobid);
            shared
                .live_jobs
                .store(state.live.len() as u64, Ordering::SeqCst);
            Ok((
                proto::MatchResponse {
                    allocation,
                    jobid,
                    reserved,
                    at,
                    overhead,
                    status: proto::match_response::ResultType::MatchSuccess as i32,
                },
                format!(" jobid={jobid} reserved={reserved} at={at}"),
            ))
        })
        .await
        .map(Response::new)
    }

    async fn cancel(
        &self,
        request: Request<proto::CancelRequest>,
    ) -> Result<Response<proto::CancelResponse>, Status> {
        let jobid = request.into_inner().job_id;
        self.run("Cancel", format!(" jobid={jobid}"), move |state, shared| {
            state.fluxion.cancel(jobid)?;
            state.live.remove(&jobid);
            shared
                .live_jobs
                .store(state.live.len() as u64, Ordering::SeqCst);
            Ok((
                proto::CancelResponse {
                    job_id: jobid,
                    error: 0,
                    status: proto::cancel_response::ResultType::CancelSuccess as i32,
                },
                String::new(),
            ))
        })
        .await
        .map(Response::new)
    }

    async fn restore(
        &self,
        request: Request<proto::RestoreRequest>,
    ) -> Result<Response<proto::RestoreResponse>, Status> {
        let r = request.into_inner();
        let subject = format!(" jobid={} allocation_bytes={}", r.jobid, r.allocation.len());
        self.run("Restore", subject, move |state, shared| {
            if r.jobid <= 0 {
                return Err(FluxionError::Invalid(format!(
                    "Restore: jobid must be positive, got {}",
                    r.jobid
                )));
            }
            state.fluxion.restore(r.jobid, &r.allocation)?;
            state.live.insert(r.jobid);
            shared
                .live_jobs
                .store(state.live.len() as u64, Ordering::SeqCst);
            Ok((
                proto::RestoreResponse {
                    jobid: r.jobid,
                    status: proto::restore_response::ResultType::RestoreSuccess as i32,
                },
                String::new(),
            ))
        })
        .await
        .map(Response::new)
    }

    async fn info(
        &self,
        _request: Request<proto::InfoRequest>,
    ) -> Result<Response<proto::InfoResponse>, Status> {
        // Lock-free on purpose: Info answers even during a long Init.
        let started = Instant::now();
        let s = &self.shared;
        let info = proto::InfoResponse {
            implementation: IMPLEMENTATION.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            instance_id: s.instance_id.clone(),
            init_generation: s.init_generation.load(Ordering::SeqCst),
            live_jobs: s.live_jobs.load(Ordering::SeqCst),
            backend: s.backend_name.clone(),
        };
        if s.log {
            eprintln!(
                "{IMPLEMENTATION}: Info ok generation={} live_jobs={} {}us",
                info.init_generation,
                info.live_jobs,
                started.elapsed().as_micros()
            );
        }
        Ok(Response::new(info))
    }
}

/// Bind `options.host:options.port` (port 0 picks a free one).
pub fn bind(options: &ServerOptions) -> io::Result<StdTcpListener> {
    let host = options.host.trim_start_matches('[').trim_end_matches(']');
    let listener = StdTcpListener::bind((host, options.port))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serve `fluxion` on `listener` until `shutdown` completes, then stop
/// accepting, let connections close for `options.shutdown_grace` and drop the
/// rest. Must run inside a tokio runtime with I/O and timers enabled.
pub async fn serve<S>(
    fluxion: Box<dyn Fluxion>,
    listener: StdTcpListener,
    options: &ServerOptions,
    shutdown: S,
) -> io::Result<()>
where
    S: Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let service = PancakeService::new(fluxion, options).into_server(options.max_message_size);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut grace_rx = stop_rx.clone();
    let grace = options.shutdown_grace;
    let server = Server::builder()
        .initial_stream_window_size(Some(8 * 1024 * 1024))
        .initial_connection_window_size(Some(16 * 1024 * 1024))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, async move {
            let mut rx = stop_rx;
            let _ = rx.wait_for(|stop| *stop).await;
        });
    let signal = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
        // Keep the sender alive while the server drains.
        std::future::pending::<()>().await;
    };
    let grace_timer = async move {
        let _ = grace_rx.wait_for(|stop| *stop).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = server => served.map_err(|e| io::Error::other(error_text(&e))),
        _ = signal => Ok(()),
        _ = grace_timer => Ok(()),
    }
}

/// Bind as `options` says, write the port file, announce the address on stdout
/// and serve until `shutdown` completes.
pub async fn run<S>(
    fluxion: Box<dyn Fluxion>,
    options: &ServerOptions,
    shutdown: S,
) -> io::Result<()>
where
    S: Future<Output = ()> + Send + 'static,
{
    let listener = bind(options)?;
    let addr = listener.local_addr()?;
    if let Some(path) = &options.port_file {
        write_port_file(path, addr.port())?;
    }
    println!(
        "{IMPLEMENTATION}: listening on {addr} (port {})",
        addr.port()
    );
    serve(fluxion, listener, options, shutdown).await
}

/// Write `port` atomically (temporary file + rename) so readers never see a
/// partial file.
fn write_port_file(path: &std::path::Path, port: u16) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, format!("{port}\n"))?;
    std::fs::rename(&tmp, path)
}

fn error_text(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

/// A server running on its own thread (with its own current-thread runtime),
/// stopped and joined on [`ServerHandle::shutdown`] or drop.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl ServerHandle {
    /// Bind as `options` says (port 0: any free port) and serve `fluxion` on a
    /// new thread. Returns once the socket is bound, so it accepts connections.
    pub fn spawn(fluxion: Box<dyn Fluxion>, options: ServerOptions) -> io::Result<ServerHandle> {
        let listener = bind(&options)?;
        let addr = listener.local_addr()?;
        if let Some(path) = &options.port_file {
            write_port_file(path, addr.port())?;
        }
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("pancake-fluxion-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(serve(fluxion, listener, &options, async move {
                    let _ = stop_rx.await;
                }))
            })?;
        Ok(ServerHandle {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address in the form clients take: `grpc://HOST:PORT`.
    pub fn address(&self) -> String {
        format!("grpc://{}", self.addr)
    }

    /// Stop serving and wait for the server thread.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("server thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// The backend `pancake-fluxion` serves: the embedded matcher,
/// [`fluxion::EmbeddedFluxion`].
pub fn default_backend() -> Box<dyn Fluxion> {
    Box::new(fluxion::EmbeddedFluxion::new())
}
