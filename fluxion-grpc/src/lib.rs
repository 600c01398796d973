//! The Fluxion gRPC protocol for pancake.
//!
//! This crate speaks the protocol of the public Fluxion service
//! (`converged-computing/fluxion`, package `fluxion`, service
//! `FluxionService` with `Init`, `Match` and `Cancel`) and adds a few
//! compatible extensions (see `README.md` beside this crate and [`reason`]):
//!
//! * [`GrpcFluxion`]: a blocking client implementing [`fluxion::Fluxion`],
//!   usable against the public service or against `pancake-fluxion`;
//! * [`server`]: a tonic service that serves any [`fluxion::Fluxion`] (by default the
//!   embedded matcher) over the protocol, used by the `pancake-fluxion` binary;
//! * [`proto`]: the generated messages and stubs.
//!
//! # Extensions, in short
//!
//! * **Precise errors**: the pancake server fails a call with a distinct gRPC
//!   code *and* the metadata header `x-pancake-reason` (`busy`,
//!   `unsatisfiable`, `not-initialized`, `invalid`, ...). [`GrpcFluxion`] maps
//!   them back to the exact [`fluxion::FluxionError`]; against the public
//!   service (plain `UNKNOWN` errors) a failed match is
//!   [`fluxion::FluxionError::Ambiguous`].
//! * **`Restore`** RPC backing [`fluxion::Fluxion::restore`]; the public service
//!   answers `UNIMPLEMENTED` and the client reports that restore is unsupported.
//! * **`Info`** RPC ([`GrpcFluxion::info`]): implementation name, a random
//!   instance id per process start and an init generation counter, so a client
//!   can tell the service restarted or was re-initialised and lost its state.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod address;
mod client;
pub mod reason;
pub mod server;

/// Messages and tonic stubs generated from `proto/fluxion.proto`.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod proto {
    tonic::include_proto!("fluxion");
}

pub use address::parse_address;
pub use client::{ClientOptions, GrpcFluxion, ServerInfo};
pub use server::{ServerHandle, ServerOptions};

/// Default largest gRPC message, in bytes, both directions (64 MiB): an `Init`
/// with the JGF of 256 nodes × 128 cores (~10 MB) fits with room to spare.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;
