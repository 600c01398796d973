//! A safe Rust layer over flux-core for pancake.
//!
//! # Threading model
//! Every handle, message, future and watcher here belongs to the thread that
//! runs its reactor (a broker module's thread, or the job-manager's thread for
//! a jobtap plugin). The types are `!Send` and `!Sync`. Other threads reach the
//! reactor only through [`channel`], which wakes it with an fd watcher.
//!
//! # Ownership model
//! Each C object has one owned type whose `Drop` releases it ([`Handle`],
//! [`Msg`], [`Future`], [`Watcher`], [`MsgHandlers`]) and, where callbacks
//! receive borrowed pointers, a `Ref` type used by reference ([`HandleRef`],
//! [`MsgRef`], [`FutureRef`]). Closures given to C are boxed once, owned by
//! the Rust object that registered them, and survive their own callback even
//! when it drops that object.
//!
//! # Error model
//! flux-core returns -1/NULL with `errno`; every wrapper turns that into
//! [`Error`] (`errno` plus text) at once. Entry points ([`module_main!`],
//! `jobtap_plugin!`) and every trampoline catch panics, log them to the
//! broker, and fail the call: no panic ever crosses into C.

pub mod compat;
pub mod error;
pub mod ffi;
pub mod future;
pub mod handle;
pub mod heap;
pub mod job;
#[cfg(feature = "jobtap")]
pub mod jobtap;
pub mod json;
pub mod kvs;
pub mod log;
pub mod module;
pub mod msg;
pub mod msg_handler;
pub mod reactor;
pub mod watcher;

pub use error::{Error, Result};
pub use future::{Future, FutureRef, Pending};
pub use handle::{Handle, HandleRef};
pub use log::Level;
pub use msg::{Msg, MsgRef};
pub use msg_handler::{MsgHandlers, Role, Table};
pub use reactor::ReactorRef;
pub use watcher::{Sender, Timers, Watcher, WatcherRef, channel};

/// The flux-core version these bindings were generated from.
pub const FLUX_CORE_BUILD_VERSION: &str = flux_sys::FLUX_CORE_BUILD_VERSION;

/// True when this flux-core's `job-manager.raise` accepts `wait_status` (>= 0.84).
pub const HAS_RAISE_WAIT_STATUS: bool = flux_sys::HAS_RAISE_WAIT_STATUS;

/// True when this flux-core's job-manager posts `free` itself for an
/// alloc-bypass job (>= 0.63); before, the plugin that allocated it must.
pub const JOB_MANAGER_FREES_BYPASS_JOBS: bool = flux_sys::JOB_MANAGER_FREES_BYPASS_JOBS;

/// True when a refused config reload leaves the broker's config as it was
/// (>= 0.82).
pub const CONFIG_RELOAD_ROLLS_BACK: bool = flux_sys::CONFIG_RELOAD_ROLLS_BACK;

/// True when [`WatcherRef::is_active`] exists (flux-core >= 0.69).
pub const HAVE_WATCHER_IS_ACTIVE: bool = flux_sys::HAVE_WATCHER_IS_ACTIVE;

/// True when [`WatcherRef::unref`] exists (flux-core >= 0.70).
pub const HAVE_WATCHER_UNREF: bool = flux_sys::HAVE_WATCHER_UNREF;

/// True when config reloads are decoded with flux-core's current API
/// (>= 0.80); [`HandleRef::module_config_reload`] falls back before that.
pub const HAVE_MODULE_CONFIG_REQUEST_DECODE: bool = flux_sys::HAVE_MODULE_CONFIG_REQUEST_DECODE;

/// Any node: the `nodeid` for an RPC the broker routes to the nearest service.
pub const NODEID_ANY: u32 = flux_sys::FLUX_SYS_NODEID_ANY;

/// The flux-core version linked at run time (`flux_core_version_string()`).
pub fn core_version() -> String {
    // SAFETY: flux_core_version_string returns a pointer to a static string.
    unsafe { ffi::cstr_to_string(flux_sys::flux_core_version_string()) }.unwrap_or_default()
}

/// Adopt the locale of the environment (`setlocale(LC_ALL, "")`), as
/// flux-core's commands do first thing: flux-core then writes job ids in F58
/// with a leading `ƒ` when the locale is UTF-8, exactly as `flux jobs` does.
///
/// For command-line tools, never for a module or plugin (they share the
/// broker's process). `setlocale` must not race with other threads, so this
/// does nothing and returns `false` unless the calling thread is the only
/// one in the process.
pub fn use_environment_locale() -> bool {
    let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count());
    if threads.ok() != Some(1) {
        return false;
    }
    // SAFETY: the argument is a valid NUL-terminated string, and this is the
    // process's only thread (checked above; only it could start another), so
    // nothing reads the locale while setlocale changes it.
    let p = unsafe { libc::setlocale(libc::LC_ALL, c"".as_ptr()) };
    !p.is_null()
}

/// The raw bindings, re-exported for the entry-point macros.
#[doc(hidden)]
pub use flux_sys as flux_sys_reexport;
