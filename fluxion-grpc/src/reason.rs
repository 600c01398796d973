//! The pancake error extension: how a failed call says *why* it failed.
//!
//! The public Fluxion service fails every call with a plain gRPC error (code
//! `UNKNOWN`, message "Error in ReapiCliMatchAllocate"), so a client cannot
//! tell a busy graph from a request that can never fit. The pancake server
//! fails a call with
//!
//! * a distinct gRPC status code (table below),
//! * the status message `"<reason>: <detail>"`, and
//! * the metadata header [`REASON_HEADER`] (`x-pancake-reason`) carrying the
//!   machine-readable reason.
//!
//! | [`Reason`] | header value | gRPC code | [`FluxionError`] |
//! |---|---|---|---|
//! | busy | `busy` | `RESOURCE_EXHAUSTED` | `Busy` |
//! | unsatisfiable | `unsatisfiable` | `FAILED_PRECONDITION` | `Unsatisfiable` |
//! | not initialized | `not-initialized` | `FAILED_PRECONDITION` | `NotInitialized` |
//! | invalid input | `invalid` | `INVALID_ARGUMENT` | `Invalid` |
//! | ambiguous | `ambiguous` | `UNKNOWN` | `Ambiguous` |
//! | unavailable | `unavailable` | `UNAVAILABLE` | `Unavailable` |
//! | other | `other` | `INTERNAL` | `Other` |
//!
//! Clients that know nothing of the extension still see a failed call with a
//! sensible code. [`error_from_status`] reads the header first, then the code
//! plus message prefix (in case a proxy dropped the header), then the code
//! alone; a plain `UNKNOWN` from a `Match` (the public service) becomes
//! [`FluxionError::Ambiguous`].

use fluxion::FluxionError;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// The metadata header carrying the machine-readable failure reason.
pub const REASON_HEADER: &str = "x-pancake-reason";

/// Why a call failed, as carried in [`REASON_HEADER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The request fits the graph but not the resources free now.
    Busy,
    /// The request can never be satisfied by the graph.
    Unsatisfiable,
    /// `Match`, `Cancel` or `Restore` before a successful `Init`.
    NotInitialized,
    /// Malformed input (jobspec, JGF, allocation, policy).
    Invalid,
    /// The match failed and the backend could not tell busy from unsatisfiable.
    Ambiguous,
    /// The backend could not be reached.
    Unavailable,
    /// Anything else.
    Other,
}

impl Reason {
    /// Every reason, for iteration in tests and docs.
    pub const ALL: [Reason; 7] = [
        Reason::Busy,
        Reason::Unsatisfiable,
        Reason::NotInitialized,
        Reason::Invalid,
        Reason::Ambiguous,
        Reason::Unavailable,
        Reason::Other,
    ];

    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Busy => "busy",
            Reason::Unsatisfiable => "unsatisfiable",
            Reason::NotInitialized => "not-initialized",
            Reason::Invalid => "invalid",
            Reason::Ambiguous => "ambiguous",
            Reason::Unavailable => "unavailable",
            Reason::Other => "other",
        }
    }

    /// Parse a header value; unknown values give `None`.
    pub fn parse(value: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == value.trim())
    }

    /// The gRPC code the pancake server uses for this reason.
    pub fn code(self) -> Code {
        match self {
            Reason::Busy => Code::ResourceExhausted,
            Reason::Unsatisfiable | Reason::NotInitialized => Code::FailedPrecondition,
            Reason::Invalid => Code::InvalidArgument,
            Reason::Ambiguous => Code::Unknown,
            Reason::Unavailable => Code::Unavailable,
            Reason::Other => Code::Internal,
        }
    }

    /// The reason of a [`FluxionError`] and its detail text.
    pub fn of(err: &FluxionError) -> (Reason, String) {
        match err {
            FluxionError::Busy(s) => (Reason::Busy, s.clone()),
            FluxionError::Unsatisfiable(s) => (Reason::Unsatisfiable, s.clone()),
            FluxionError::NotInitialized => (Reason::NotInitialized, "call Init first".into()),
            FluxionError::Invalid(s) => (Reason::Invalid, s.clone()),
            FluxionError::Ambiguous(s) => (Reason::Ambiguous, s.clone()),
            FluxionError::Unavailable(s) => (Reason::Unavailable, s.clone()),
            FluxionError::Other(s) => (Reason::Other, s.clone()),
        }
    }

    /// The [`FluxionError`] for this reason with `detail`.
    pub fn to_error(self, detail: String) -> FluxionError {
        match self {
            Reason::Busy => FluxionError::Busy(detail),
            Reason::Unsatisfiable => FluxionError::Unsatisfiable(detail),
            Reason::NotInitialized => FluxionError::NotInitialized,
            Reason::Invalid => FluxionError::Invalid(detail),
            Reason::Ambiguous => FluxionError::Ambiguous(detail),
            Reason::Unavailable => FluxionError::Unavailable(detail),
            Reason::Other => FluxionError::Other(detail),
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status the pancake server answers a failed call with.
pub fn status_from_error(err: &FluxionError) -> Status {
    let (reason, detail) = Reason::of(err);
    let mut status = Status::new(reason.code(), format!("{reason}: {detail}"));
    status
        .metadata_mut()
        .insert(REASON_HEADER, MetadataValue::from_static(reason.as_str()));
    status
}

/// Which call a status answered (the same code means different things).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `Init`.
    Init,
    /// `Match`.
    Match,
    /// `Cancel`.
    Cancel,
    /// `Restore` (extension).
    Restore,
    /// `Info` (extension).
    Info,
}

impl Call {
    /// The RPC method name.
    pub fn name(self) -> &'static str {
        match self {
            Call::Init => "Init",
            Call::Match => "Match",
            Call::Cancel => "Cancel",
            Call::Restore => "Restore",
            Call::Info => "Info",
        }
    }
}

/// True when `status` was produced locally from a transport failure (the
/// connection broke, could not be made, or timed out) rather than sent by the
/// server.
pub fn is_transport_error(status: &Status) -> bool {
    // Statuses decoded from a server's response never carry a source error;
    // the ones tonic builds from hyper/h2/io errors always do.
    std::error::Error::source(status).is_some()
        || matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded)
            && status.metadata().get(REASON_HEADER).is_none()
}

/// Map a failed call's status to the [`FluxionError`] it stands for.
pub fn error_from_status(status: &Status, call: Call) -> FluxionError {
    let message = status.message();
    // 1. The extension header.
    if let Some(reason) = status
        .metadata()
        .get(REASON_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(Reason::parse)
    {
        return reason.to_error(strip_reason(message, reason).to_string());
    }
    // 2. Transport failures.
    if is_transport_error(status) {
        return FluxionError::Unavailable(format!(
            "{} failed: {}: {}",
            call.name(),
            status.code().description(),
            full_message(status)
        ));
    }
    // 3. Code plus message prefix (header dropped on the way).
    for reason in [
        Reason::Busy,
        Reason::Unsatisfiable,
        Reason::NotInitialized,
        Reason::Ambiguous,
    ] {
        if status.code() == reason.code() && message.starts_with(&format!("{reason}: ")) {
            return reason.to_error(strip_reason(message, reason).to_string());
        }
    }
    // 4. The code alone.
    let detail = format!("{} failed: {message}", call.name());
    match status.code() {
        Code::Unknown if call == Call::Match => FluxionError::Ambiguous(message.to_string()),
        Code::Cancelled | Code::Unavailable | Code::DeadlineExceeded => {
            FluxionError::Unavailable(detail)
        }
        Code::InvalidArgument => FluxionError::Invalid(message.to_string()),
        // tonic (OUT_OF_RANGE) and grpc-go (RESOURCE_EXHAUSTED) reject oversize messages.
        Code::OutOfRange | Code::ResourceExhausted => {
            FluxionError::Invalid(format!("{} message too large: {message}", call.name()))
        }
        Code::Unimplemented => FluxionError::Other(format!(
            "the Fluxion service does not implement {}: {message}",
            call.name()
        )),
        code => FluxionError::Other(format!("{detail} (gRPC {})", code.description())),
    }
}

fn strip_reason(message: &str, reason: Reason) -> &str {
    message
        .strip_prefix(reason.as_str())
        .and_then(|m| m.strip_prefix(": "))
        .unwrap_or(message)
}

fn full_message(status: &Status) -> String {
    let mut out = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        let text = err.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = err.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_round_trips() {
        for err in [
            FluxionError::Busy("b".into()),
            FluxionError::Unsatisfiable("u".into()),
            FluxionError::NotInitialized,
            FluxionError::Invalid("i".into()),
            FluxionError::Ambiguous("a".into()),
            FluxionError::Unavailable("down".into()),
            FluxionError::Other("o".into()),
        ] {
            let status = status_from_error(&err);
            assert_eq!(error_from_status(&status, Call::Match), err);
            // Without the header, the code plus prefix still gives the precise
            // error for the three that matter most to the dispatcher.
            let bare = Status::new(status.code(), status.message());
            let got = error_from_status(&bare, Call::Match);
            match err {
                FluxionError::Busy(_)
                | FluxionError::Unsatisfiable(_)
                | FluxionError::NotInitialized
                | FluxionError::Ambiguous(_) => assert_eq!(got, err),
                _ => {}
            }
        }
    }

    #[test]
    fn public_service_errors() {
        let st = Status::unknown("[Fluxion] Error in ReapiCliMatchAllocate");
        assert!(matches!(
            error_from_status(&st, Call::Match),
            FluxionError::Ambiguous(_)
        ));
        assert!(matches!(
            error_from_status(&st, Call::Init),
            FluxionError::Other(_)
        ));
        let st = Status::unimplemented("unknown method Restore");
        assert!(matches!(
            error_from_status(&st, Call::Restore),
            FluxionError::Other(_)
        ));
        let st = Status::unknown("header but garbage");
        let mut st2 = st.clone();
        st2.metadata_mut()
            .insert(REASON_HEADER, MetadataValue::from_static("nonsense"));
        assert!(matches!(
            error_from_status(&st2, Call::Match),
            FluxionError::Ambiguous(_)
        ));
    }
}
