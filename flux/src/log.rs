//! Logging to the broker log (`flux dmesg`) with `flux_log`.

use std::cell::Cell;

use crate::ffi::cstring;
use crate::handle::HandleRef;

/// syslog(3) levels, as `flux_log` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(i32)]
pub enum Level {
    /// System is unusable.
    Emerg = libc::LOG_EMERG,
    /// Action must be taken immediately.
    Alert = libc::LOG_ALERT,
    /// Critical conditions.
    Crit = libc::LOG_CRIT,
    /// Error conditions.
    Err = libc::LOG_ERR,
    /// Warning conditions.
    Warning = libc::LOG_WARNING,
    /// Normal but significant.
    Notice = libc::LOG_NOTICE,
    /// Informational.
    Info = libc::LOG_INFO,
    /// Debug-level messages.
    Debug = libc::LOG_DEBUG,
}

thread_local! {
    // The handle panics are reported to when a trampoline has none at hand
    // (watchers). Set by the entry-point macros for their thread.
    static PANIC_LOG: Cell<*mut flux_sys::flux_t> = const { Cell::new(std::ptr::null_mut()) };
}

impl HandleRef {
    /// Log `msg` at `level` to the broker log.
    pub fn log(&self, level: Level, msg: &str) {
        // printf-style: always pass "%s" and one argument, never user text as format.
        let Ok(text) = cstring(&msg.replace('\0', "\\0")) else {
            return;
        };
        // SAFETY: self is a live handle; format and argument are valid C strings.
        unsafe { flux_sys::flux_log(self.as_ptr(), level as i32, c"%s".as_ptr(), text.as_ptr()) };
    }
}

/// Make `h` the handle panics on this thread are logged to (`None` clears it).
pub fn set_panic_handle(h: Option<&HandleRef>) {
    PANIC_LOG.with(|c| c.set(h.map_or(std::ptr::null_mut(), HandleRef::as_ptr)));
}

/// Report a caught panic: to the broker log if this thread has a handle, else stderr.
pub fn report_panic(h: Option<&HandleRef>, what: &str, payload: &str) {
    let text = format!("panic in {what}: {payload} (caught; the call failed)");
    if let Some(h) = h {
        h.log(Level::Crit, &text);
        return;
    }
    let p = PANIC_LOG.with(Cell::get);
    if p.is_null() {
        eprintln!("{text}");
    } else {
        // SAFETY: the pointer was set from a live handle by the entry point of
        // this thread, and is cleared before that handle goes away.
        unsafe { HandleRef::from_ptr(p) }.log(Level::Crit, &text);
    }
}
