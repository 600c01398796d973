//! The blocking gRPC client: [`GrpcFluxion`].

use std::future::Future;
use std::time::{Duration, Instant};

use fluxion::{Fluxion, FluxionError, MatchOutcome};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::proto;
use crate::proto::fluxion_service_client::FluxionServiceClient;
use crate::reason::{Call, error_from_status, is_transport_error};

/// Settings of a [`GrpcFluxion`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Deadline of an `Init` call, connecting included (default 10 s).
    pub init_timeout: Duration,
    /// Deadline of a `Match`, `Cancel`, `Restore` or `Info` call, connecting
    /// included (default 5 s).
    pub call_timeout: Duration,
    /// Deadline for opening the connection (default 2 s; never more than the
    /// call's own deadline).
    pub connect_timeout: Duration,
    /// Largest message sent or accepted, in bytes (default
    /// [`DEFAULT_MAX_MESSAGE_SIZE`](crate::DEFAULT_MAX_MESSAGE_SIZE), 64 MiB).
    pub max_message_size: usize,
    /// First reconnect delay after a failed connection attempt (default 100 ms).
    pub backoff_initial: Duration,
    /// Longest reconnect delay; the delay doubles up to it (default 5 s).
    pub backoff_max: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            init_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            max_message_size: crate::DEFAULT_MAX_MESSAGE_SIZE,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// Identity of the server, from the `Info` extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// Implementation name, `"pancake-fluxion"` for ours.
    pub implementation: String,
    /// Implementation version.
    pub version: String,
    /// Random per process start: a change means the service restarted and
    /// lost every allocation.
    pub instance_id: String,
    /// `Init` calls processed since the process started, failed ones
    /// included (0: never called). A change means allocations may have been
    /// wiped.
    pub init_generation: u64,
    /// Allocations and reservations the server currently holds.
    pub live_jobs: u64,
    /// Name of the Fluxion behind the server (e.g. `"embedded"`).
    pub backend: String,
}

impl ServerInfo {
    /// True when `self` and `earlier` describe the same service state lineage:
    /// same process, no `Init` in between. False means allocations made under
    /// `earlier` are gone.
    pub fn same_state_as(&self, earlier: &ServerInfo) -> bool {
        self.instance_id == earlier.instance_id && self.init_generation == earlier.init_generation
    }
}

/// Reconnection state.
#[derive(Debug)]
struct Backoff {
    /// Delay to wait after the next failed connection attempt.
    delay: Duration,
    /// No connection attempt before this instant.
    retry_at: Option<Instant>,
    /// Why the last attempt failed.
    last_error: String,
}

/// A [`Fluxion`] reached over gRPC: the public Fluxion service or `pancake-fluxion`.
///
/// The client owns a current-thread tokio runtime (no threads of its own) and
/// one HTTP/2 connection, opened on the first call and reused. Each call blocks
/// until it answers or its deadline ([`ClientOptions`]) passes; calls are
/// serialised by `&mut self`, as the public service requires.
///
/// When the connection breaks (or a call times out) it is dropped; the next
/// call reconnects. A failed reconnection starts an exponential backoff
/// (100 ms doubling to 5 s by default, reset by a successful call) during which
/// every call fails at once with [`FluxionError::Unavailable`] instead of
/// sleeping: the caller retries on its own events or timers.
///
/// Caveat: a call that times out may still have been carried out by the
/// server (for example a `Match` whose answer was lost), as with any RPC.
///
/// Must not be used (or dropped) from inside an async runtime: it blocks.
/// Dropping it closes the connection and stops everything it started; no
/// thread or task outlives it.
#[derive(Debug)]
pub struct GrpcFluxion {
    uri: String,
    endpoint: Endpoint,
    options: ClientOptions,
    client: Option<FluxionServiceClient<Channel>>,
    backoff: Backoff,
    // Declared last so that it is dropped after the channel.
    runtime: tokio::runtime::Runtime,
}

// The broker module moves the client to its worker thread.
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<GrpcFluxion>();
};

impl GrpcFluxion {
    /// A client of the service at `address` (`grpc://HOST:PORT`,
    /// `http://HOST:PORT` or `HOST:PORT`) with default options. Does not
    /// connect yet.
    pub fn new(address: &str) -> Result<GrpcFluxion, FluxionError> {
        GrpcFluxion::with_options(address, ClientOptions::default())
    }

    /// A client of the service at `address` with `options`. Does not connect yet.
    pub fn with_options(
        address: &str,
        options: ClientOptions,
    ) -> Result<GrpcFluxion, FluxionError> {
        let uri = crate::parse_address(address)?;
        let endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| FluxionError::Invalid(format!("fluxion address {address:?}: {e}")))?
            .connect_timeout(options.connect_timeout.min(options.call_timeout))
            .tcp_nodelay(true)
            // Large windows: an Init carries megabytes of JGF.
            .initial_stream_window_size(Some(8 * 1024 * 1024))
            .initial_connection_window_size(Some(16 * 1024 * 1024));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                FluxionError::Other(format!("cannot create the gRPC client runtime: {e}"))
            })?;
        Ok(GrpcFluxion {
            uri,
            endpoint,
            backoff: Backoff {
                delay: options.backoff_initial,
                retry_at: None,
                last_error: String::new(),
            },
            options,
            client: None,
            runtime,
        })
    }

    /// The URI the client connects to (`http://HOST:PORT`).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The client's options.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// True while the client holds a connection it believes healthy.
    pub fn is_connected(&self) -> bool {
        self.client.is_some()
    }

    /// Connect now rather than on the first call (same backoff rules).
    pub fn connect(&mut self) -> Result<(), FluxionError> {
        self.ensure_connected(self.options.call_timeout).map(|_| ())
    }

    /// Identity of the server (`Info` extension): implementation, instance id
    /// and init generation. `Ok(None)` means the service does not implement
    /// `Info` (the public Fluxion service), so whether it restarted is unknown.
    pub fn info(&mut self) -> Result<Option<ServerInfo>, FluxionError> {
        let timeout = self.options.call_timeout;
        let answer = self.call(Call::Info, timeout, |mut c| async move {
            c.info(proto::InfoRequest {}).await
        })?;
        match answer {
            Ok(r) => Ok(Some(ServerInfo {
                implementation: r.implementation,
                version: r.version,
                instance_id: r.instance_id,
                init_generation: r.init_generation,
                live_jobs: r.live_jobs,
                backend: r.backend,
            })),
            Err(status) if status.code() == Code::Unimplemented => Ok(None),
            Err(status) => Err(error_from_status(&status, Call::Info)),
        }
    }

    /// Refuse locally a request larger than the message limit (tonic would
    /// fail it as a transport error).
    fn check_size(&self, call: Call, request: &impl prost::Message) -> Result<(), FluxionError> {
        let len = request.encoded_len();
        if len > self.options.max_message_size {
            return Err(FluxionError::Invalid(format!(
                "{} message too large: {len} bytes, the limit is {} bytes",
                call.name(),
                self.options.max_message_size
            )));
        }
        Ok(())
    }

    /// Open the connection if there is none, honouring the backoff.
    fn ensure_connected(
        &mut self,
        deadline: Duration,
    ) -> Result<FluxionServiceClient<Channel>, FluxionError> {
        if let Some(client) = &self.client {
            // The connection's tasks only run inside `block_on`. Let them
            // catch up with what happened since the last call (the server
            // closed the connection, sent GOAWAY...), so that the channel
            // reconnects before sending rather than failing the call.
            self.runtime.block_on(async {
                for _ in 0..4 {
                    tokio::task::yield_now().await;
                }
            });
            return Ok(client.clone());
        }
        let now = Instant::now();
        if let Some(at) = self.backoff.retry_at
            && at > now
        {
            return Err(FluxionError::Unavailable(format!(
                "{}: not connected, next attempt in {} ms (last error: {})",
                self.uri,
                (at - now).as_millis().max(1),
                self.backoff.last_error
            )));
        }
        let connect_deadline = self.options.connect_timeout.min(deadline);
        let endpoint = self.endpoint.clone();
        let result = self.runtime.block_on(async move {
            tokio::time::timeout(connect_deadline, endpoint.connect()).await
        });
        let error = match result {
            Ok(Ok(channel)) => {
                let client = FluxionServiceClient::new(channel)
                    .max_decoding_message_size(self.options.max_message_size)
                    .max_encoding_message_size(self.options.max_message_size);
                self.backoff.retry_at = None;
                self.client = Some(client.clone());
                return Ok(client);
            }
            Ok(Err(e)) => error_chain(&e),
            Err(_) => format!(
                "connect timed out after {} ms",
                connect_deadline.as_millis()
            ),
        };
        let delay = self.backoff.delay;
        self.backoff.retry_at = Some(Instant::now() + delay);
        self.backoff.delay = (delay * 2).min(self.options.backoff_max);
        self.backoff.last_error = error.clone();
        Err(FluxionError::Unavailable(format!(
            "{}: cannot connect: {error} (retry in {} ms)",
            self.uri,
            delay.as_millis()
        )))
    }

    /// The connection broke: drop it; the next call reconnects at once, and
    /// backs off only if that fails.
    fn mark_broken(&mut self, why: &str) {
        self.client = None;
        self.backoff.retry_at = None;
        self.backoff.last_error = why.to_string();
    }

    /// Run one RPC. The outer error is a local failure (no connection,
    /// transport error, timeout), already mapped; the inner one is the status
    /// the server answered.
    fn call<T, F, Fut>(
        &mut self,
        call: Call,
        deadline: Duration,
        rpc: F,
    ) -> Result<Result<T, Status>, FluxionError>
    where
        F: FnOnce(FluxionServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let client = self.ensure_connected(deadline)?;
        let left = deadline.saturating_sub(started.elapsed());
        let result = self
            .runtime
            .block_on(async move { tokio::time::timeout(left, rpc(client)).await });
        match result {
            Err(_) => {
                let why = format!(
                    "{} timed out after {} ms",
                    call.name(),
                    deadline.as_millis()
                );
                self.mark_broken(&why);
                Err(FluxionError::Unavailable(format!("{}: {why}", self.uri)))
            }
            Ok(Err(status)) if is_transport_error(&status) => {
                let err = error_from_status(&status, call);
                self.mark_broken(&err.to_string());
                Err(err)
            }
            Ok(Err(status)) => {
                self.backoff.delay = self.options.backoff_initial;
                Ok(Err(status))
            }
            Ok(Ok(response)) => {
                self.backoff.delay = self.options.backoff_initial;
                Ok(Ok(response.into_inner()))
            }
        }
    }
}

impl Fluxion for GrpcFluxion {
    fn init(&mut self, policy: &str, jgf: &str) -> Result<(), FluxionError> {
        let request = proto::InitRequest {
            policy: policy.to_string(),
            jgf: jgf.to_string(),
        };
        self.check_size(Call::Init, &request)?;
        let timeout = self.options.init_timeout;
        let response = self
            .call(
                Call::Init,
                timeout,
                |mut c| async move { c.init(request).await },
            )?
            .map_err(|s| error_from_status(&s, Call::Init))?;
        match response.status() {
            proto::init_response::ResultType::InitSuccess => Ok(()),
            other => Err(FluxionError::Other(format!(
                "Init answered status {}",
                other.as_str_name()
            ))),
        }
    }

    fn match_allocate(
        &mut self,
        jobspec: &str,
        reserve: bool,
    ) -> Result<MatchOutcome, FluxionError> {
        let request = proto::MatchRequest {
            jobspec: jobspec.to_string(),
            request: String::new(),
            reservation: reserve,
        };
        self.check_size(Call::Match, &request)?;
        let timeout = self.options.call_timeout;
        let r = self
            .call(Call::Match, timeout, |mut c| async move {
                c.r#match(request).await
            })?
            .map_err(|s| error_from_status(&s, Call::Match))?;
        if r.status() != proto::match_response::ResultType::MatchSuccess {
            return Err(FluxionError::Ambiguous(format!(
                "Match answered status {}",
                r.status().as_str_name()
            )));
        }
        if r.allocation.is_empty() {
            return Err(FluxionError::Other(format!(
                "Match succeeded without an allocation (jobid {})",
                r.jobid
            )));
        }
        Ok(MatchOutcome {
            jobid: r.jobid,
            allocation: r.allocation,
            reserved: r.reserved,
            at: r.at,
            overhead: r.overhead,
        })
    }

    fn cancel(&mut self, jobid: i64) -> Result<(), FluxionError> {
        let request = proto::CancelRequest { job_id: jobid };
        let timeout = self.options.call_timeout;
        let r = self
            .call(Call::Cancel, timeout, |mut c| async move {
                c.cancel(request).await
            })?
            .map_err(|s| error_from_status(&s, Call::Cancel))?;
        match r.status() {
            proto::cancel_response::ResultType::CancelSuccess => Ok(()),
            other => Err(FluxionError::Other(format!(
                "Cancel of {jobid} answered status {} (error {})",
                other.as_str_name(),
                r.error
            ))),
        }
    }

    fn restore(&mut self, jobid: i64, allocation: &str) -> Result<(), FluxionError> {
        let request = proto::RestoreRequest {
            jobid,
            allocation: allocation.to_string(),
        };
        self.check_size(Call::Restore, &request)?;
        let timeout = self.options.init_timeout;
        let r = match self.call(Call::Restore, timeout, |mut c| async move {
            c.restore(request).await
        })? {
            Ok(r) => r,
            Err(status) if status.code() == Code::Unimplemented => {
                return Err(FluxionError::Other(format!(
                    "restore is not supported by the Fluxion service at {} (it does not \
                     implement the pancake Restore extension; the public service never does): {}",
                    self.uri,
                    status.message()
                )));
            }
            Err(status) => return Err(error_from_status(&status, Call::Restore)),
        };
        match r.status() {
            proto::restore_response::ResultType::RestoreSuccess => Ok(()),
            other => Err(FluxionError::Other(format!(
                "Restore of {jobid} answered status {}",
                other.as_str_name()
            ))),
        }
    }
}

impl Drop for GrpcFluxion {
    fn drop(&mut self) {
        // Close the connection first; dropping the runtime afterwards drops
        // every task it still holds (the connection drivers). A
        // current-thread runtime has no worker threads, and its blocking pool
        // (used only for DNS look-ups) is joined by the runtime's own drop.
        self.client = None;
    }
}

/// An error and its sources on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}
