//! pancake's core, with no FFI and no I/O.
//!
//! Everything that decides something lives here, driven by plain values and
//! tested without a broker: the module's options, the plugin's role, and the
//! dispatcher. The `module/` and `jobtap/` cdylibs only translate between
//! Flux and these types.

#![forbid(unsafe_code)]

pub mod dispatch;
pub mod journal;
pub mod options;
pub mod role;
pub mod show;
