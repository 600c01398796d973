//! Fluxion for pancake.
//!
//! pancake asks "a Fluxion" for every allocation. This crate holds everything
//! about that conversation that needs no I/O:
//!
//! * models of the formats involved: Flux jobspec V1, Rv1 (RFC 20) with RFC 22
//!   idsets and RFC 29 hostlists, and the JSON Graph Format (JGF) dialects that
//!   the public Fluxion service reads and writes;
//! * conversions between them (Rv1 → JGF for `Init`, a match allocation → Rv1
//!   per target broker);
//! * an embedded graph matcher;
//! * the [`Fluxion`] trait, implemented here by the embedded matcher and in
//!   `fluxion-grpc` by a client of the public service's protocol.
//!
//! Modules: [`idset`] (RFC 22), [`hostlist`] (RFC 29), [`jobspec`] (V1 →
//! [`Request`]), [`rv1`] (RFC 20), [`jgf`] (every JGF dialect, compact graph),
//! [`convert`] (Rv1 → Init JGF, match allocation → Rv1), [`matcher`] (the
//! embedded [`Graph`] and [`Matcher`], policies documented there),
//! [`embedded`] ([`EmbeddedFluxion`]) and [`conformance`] (checks any
//! [`Fluxion`] must pass).

#![forbid(unsafe_code)]

pub mod conformance;
pub mod convert;
pub mod embedded;
pub mod hostlist;
pub mod idset;
pub mod jgf;
pub mod jobspec;
pub mod matcher;
pub mod rv1;

pub use convert::{allocation_to_rv1, rv1_to_jgf};
pub use embedded::EmbeddedFluxion;
pub use idset::IdSet;
pub use jgf::Jgf;
pub use jobspec::{Jobspec, Request};
pub use matcher::{Graph, Matcher, Policy};
pub use rv1::Rv1;

/// Errors a Fluxion can answer with.
///
/// `Busy` and `Unsatisfiable` are kept apart because the dispatcher treats them
/// differently: a busy job waits, an unsatisfiable job fails at once. The public
/// service cannot tell them apart; a client of it reports `Ambiguous`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FluxionError {
    /// The request fits the graph but not the resources free now.
    #[error("resources are busy: {0}")]
    Busy(String),
    /// The request can never be satisfied by this graph.
    #[error("unsatisfiable: {0}")]
    Unsatisfiable(String),
    /// The match failed and the service did not say whether it is busy or unsatisfiable.
    #[error("match failed (busy or unsatisfiable): {0}")]
    Ambiguous(String),
    /// `Match` or `Cancel` was called before a successful `Init`.
    #[error("not initialized: call Init first")]
    NotInitialized,
    /// The input (jobspec, JGF, ...) is malformed; the text names the field and the reason.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The service could not be reached or the call timed out.
    #[error("fluxion unavailable: {0}")]
    Unavailable(String),
    /// Any other failure reported by the service.
    #[error("fluxion error: {0}")]
    Other(String),
}

/// The result of a successful match.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchOutcome {
    /// Fluxion's own id for this allocation (restarts at 1 after every `Init`).
    pub jobid: i64,
    /// The allocation as JGF text (only the allocated vertices and their ancestors).
    pub allocation: String,
    /// True when this is a reservation for the future, not an allocation now.
    /// Dispatching a reserved match would oversubscribe.
    pub reserved: bool,
    /// For a reservation, the time (seconds, Fluxion's clock) at which it starts.
    pub at: i64,
    /// Seconds Fluxion spent on the match.
    pub overhead: f32,
}

/// A Fluxion: something that holds one resource graph and hands out exact allocations.
///
/// Calls are blocking and must not run concurrently (the public service is not
/// safe to call concurrently); the pancake module calls it from one worker thread.
pub trait Fluxion: Send {
    /// Load `jgf` as the resource graph with match policy `policy`, wiping every allocation.
    fn init(&mut self, policy: &str, jgf: &str) -> Result<(), FluxionError>;
    /// Match `jobspec` (JSON text). With `reserve`, a request that does not fit now
    /// may come back as a reservation (`reserved == true`).
    fn match_allocate(
        &mut self,
        jobspec: &str,
        reserve: bool,
    ) -> Result<MatchOutcome, FluxionError>;
    /// The time now, in seconds since the epoch, before a match: a
    /// Fluxion whose clock is its own (an embedded matcher) plans
    /// reservations from it. The default ignores it (a service keeps its
    /// own clock).
    fn set_clock(&mut self, now: i64) {
        let _ = now;
    }
    /// Free allocation `jobid`. Cancelling an unknown id succeeds.
    fn cancel(&mut self, jobid: i64) -> Result<(), FluxionError>;
    /// Re-register an allocation that already exists (for example after the
    /// service restarted and lost its state) under `jobid`, so its resources are
    /// never handed out again. `allocation` is JGF as returned by a match.
    ///
    /// This is a pancake extension; the public service does not have it, and the
    /// default answers `Other("unsupported")`.
    fn restore(&mut self, jobid: i64, allocation: &str) -> Result<(), FluxionError> {
        let _ = (jobid, allocation);
        Err(FluxionError::Other(
            "restore is not supported by this Fluxion".into(),
        ))
    }
}
