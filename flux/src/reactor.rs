//! C header: flux/core/reactor.h — the event loop.

use std::marker::PhantomData;

use crate::error::{Result, cvt};

/// A borrowed `flux_reactor_t *`.
pub struct ReactorRef {
    _opaque: [u8; 0],
    _marker: PhantomData<*mut ()>,
}

impl std::fmt::Debug for ReactorRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReactorRef({:p})", self.as_ptr())
    }
}

impl ReactorRef {
    /// Borrow a raw reactor.
    ///
    /// # Safety
    /// `p` must be a valid, non-NULL reactor that outlives `'a`.
    pub unsafe fn from_ptr<'a>(p: *mut flux_sys::flux_reactor_t) -> &'a ReactorRef {
        // SAFETY: zero-sized stand-in; validity guaranteed by the caller.
        unsafe { &*p.cast::<ReactorRef>() }
    }

    /// The raw pointer.
    pub fn as_ptr(&self) -> *mut flux_sys::flux_reactor_t {
        (self as *const ReactorRef).cast_mut().cast()
    }

    /// Run until stopped or out of active watchers. `Err` if stopped with an error.
    pub fn run(&self) -> Result<i32> {
        // SAFETY: self is a live reactor, run on its own thread.
        cvt(unsafe { flux_sys::flux_reactor_run(self.as_ptr(), 0) })
    }

    /// Make `run` return 0 after the current callback.
    pub fn stop(&self) {
        // SAFETY: self is a live reactor.
        unsafe { flux_sys::flux_reactor_stop(self.as_ptr()) };
    }

    /// Make `run` return -1 after the current callback.
    pub fn stop_error(&self) {
        // SAFETY: self is a live reactor.
        unsafe { flux_sys::flux_reactor_stop_error(self.as_ptr()) };
    }

    /// The reactor's cached notion of "now" (seconds since the epoch).
    pub fn now(&self) -> f64 {
        // SAFETY: self is a live reactor.
        unsafe { flux_sys::flux_reactor_now(self.as_ptr()) }
    }
}
