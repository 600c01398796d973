//! Helpers for the FFI boundary: panic guards, strings, and closure cells.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use crate::error::{Error, Result};

/// Run `f`, catching any panic; on panic return `Err` with the panic message.
///
/// Every `extern "C"` function in this crate runs its body through `guard`,
/// because since Rust 1.81 an unwind out of `extern "C"` aborts the process:
/// here that would be the whole broker.
pub fn guard<R>(f: impl FnOnce() -> R) -> std::result::Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "unknown panic payload".to_string()
        }
    })
}

/// A `CString` from Rust text, failing with `EINVAL` on an interior NUL.
pub fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(Error::from)
}

/// Copy a C string into a `String` (lossy UTF-8). `None` for NULL.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string valid for this call.
pub unsafe fn cstr_to_string(p: *const c_char) -> Option<String> {
    if p.is_null() {
        None
    } else {
        // SAFETY: the caller guarantees p is a valid C string.
        Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }
}

/// Borrow a C string as `&str`. `None` for NULL or invalid UTF-8.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string that outlives `'a`.
pub unsafe fn cstr_ref<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        None
    } else {
        // SAFETY: the caller guarantees p is valid for 'a.
        unsafe { CStr::from_ptr(p) }.to_str().ok()
    }
}

/// A closure shared between its Rust owner and a C callback.
///
/// The owner holds an `Rc<CbCell<F>>`; C holds `Rc::as_ptr` of it. The
/// trampoline clones the `Rc` before calling, and takes the closure out of
/// the cell while it runs, so the closure may drop its own owner (destroying
/// the C object) without freeing the memory it is executing from.
pub struct CbCell<F: ?Sized> {
    cb: RefCell<Option<Box<F>>>,
}

impl<F: ?Sized> std::fmt::Debug for CbCell<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CbCell")
    }
}

impl<F: ?Sized> CbCell<F> {
    /// Wrap a boxed closure.
    pub fn new(cb: Box<F>) -> Rc<Self> {
        Rc::new(Self {
            cb: RefCell::new(Some(cb)),
        })
    }

    /// Call the closure through `call`, from a C callback, catching panics.
    ///
    /// The closure is put back afterwards even if it panicked, so one bad
    /// call never silently disables a handler. A re-entrant call (the closure
    /// triggering its own callback) is ignored.
    ///
    /// # Safety
    /// `ptr` must come from `Rc::as_ptr` of an `Rc<CbCell<F>>` that is still
    /// alive when the callback starts.
    pub unsafe fn invoke(
        ptr: *const Self,
        call: impl FnOnce(&mut F),
    ) -> std::result::Result<(), String> {
        // Taking an extra strong count keeps the cell alive while the closure
        // runs, even if the closure drops the owner's Rc.
        // SAFETY: the caller guarantees ptr is a live Rc allocation.
        let rc = unsafe {
            Rc::increment_strong_count(ptr);
            Rc::from_raw(ptr)
        };
        let taken = rc.cb.borrow_mut().take();
        let Some(mut cb) = taken else { return Ok(()) };
        let result = guard(|| call(&mut cb));
        let mut slot = rc.cb.borrow_mut();
        if slot.is_none() {
            *slot = Some(cb);
        }
        result
    }
}
