//! C header: flux/core/handle.h — broker connections.

use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::error::{Error, Result, cvt, cvt_p};
use crate::ffi::{cstr_to_string, cstring};
use crate::reactor::ReactorRef;

/// A borrowed `flux_t *`, used by reference (`&HandleRef`).
///
/// Callbacks and `mod_main` receive handles they do not own; they see them
/// as `&HandleRef`. Owned connections are [`Handle`], which derefs to this.
pub struct HandleRef {
    _opaque: [u8; 0],
    // !Send + !Sync: a flux_t belongs to its reactor thread.
    _marker: PhantomData<*mut ()>,
}

impl std::fmt::Debug for HandleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HandleRef({:p})", self.as_ptr())
    }
}

impl HandleRef {
    /// Borrow a raw handle.
    ///
    /// # Safety
    /// `p` must be a valid, non-NULL `flux_t *` that outlives `'a`.
    pub unsafe fn from_ptr<'a>(p: *mut flux_sys::flux_t) -> &'a HandleRef {
        // SAFETY: HandleRef is a zero-sized stand-in for flux_t; the caller
        // guarantees validity for 'a.
        unsafe { &*p.cast::<HandleRef>() }
    }

    /// The raw pointer.
    pub fn as_ptr(&self) -> *mut flux_sys::flux_t {
        (self as *const HandleRef).cast_mut().cast()
    }

    /// The reactor this handle's watchers and futures run on.
    pub fn reactor(&self) -> Result<&ReactorRef> {
        // SAFETY: self is a live handle.
        let r = cvt_p(unsafe { flux_sys::flux_get_reactor(self.as_ptr()) })?;
        // SAFETY: the reactor lives as long as the handle holds it.
        Ok(unsafe { ReactorRef::from_ptr(r.as_ptr()) })
    }

    /// Use `r` as this handle's reactor; must precede any use of the reactor.
    pub fn set_reactor(&self, r: &ReactorRef) -> Result<()> {
        // SAFETY: both pointers are live.
        cvt(unsafe { flux_sys::flux_set_reactor(self.as_ptr(), r.as_ptr()) }).map(|_| ())
    }

    /// A broker attribute, e.g. `rank`, `local-uri`, `broker.pid`.
    pub fn attr_get(&self, name: &str) -> Result<String> {
        let n = cstring(name)?;
        // SAFETY: self is live, n is a valid C string; the result is owned by the handle.
        let p = unsafe { flux_sys::flux_attr_get(self.as_ptr(), n.as_ptr()) };
        if p.is_null() {
            return Err(Error::last_os());
        }
        // SAFETY: non-NULL C string owned by the handle's attribute cache.
        Ok(unsafe { cstr_to_string(p) }.unwrap_or_default())
    }

    /// The rank of the broker this handle is connected to.
    pub fn rank(&self) -> Result<u32> {
        let mut rank = 0u32;
        // SAFETY: self is live and rank is a valid out pointer.
        cvt(unsafe { flux_sys::flux_get_rank(self.as_ptr(), &mut rank) })?;
        Ok(rank)
    }

    /// The instance's configuration as JSON (the module's cached copy).
    pub fn conf_json(&self) -> Result<serde_json::Value> {
        // SAFETY: self is live; the returned conf is owned by the handle.
        let conf = unsafe { flux_sys::flux_get_conf(self.as_ptr()) };
        if conf.is_null() {
            return Err(Error::last_os());
        }
        crate::json::conf_to_value(conf)
    }

    /// A new owned reference to this handle (`flux_incref`), e.g. to move
    /// into a closure that outlives the callback it was created in.
    pub fn to_owned(&self) -> Handle {
        // SAFETY: self is live; flux_incref returns the same handle with one
        // more reference, released by Handle's drop (flux_close = decref).
        let p = unsafe { flux_sys::flux_incref(self.as_ptr()) };
        Handle {
            ptr: NonNull::new(p).unwrap_or_else(|| NonNull::from(self).cast()),
            comms_error: None,
        }
    }

    /// `FLUX_POLL*` bits of the connection; `FLUX_POLLERR` means it failed.
    pub fn pollevents(&self) -> i32 {
        // SAFETY: live handle.
        unsafe { flux_sys::flux_pollevents(self.as_ptr()) }
    }

    /// True when the connection has failed.
    pub fn is_broken(&self) -> bool {
        let ev = self.pollevents();
        ev < 0 || ev & flux_sys::FLUX_POLLERR as i32 != 0
    }

    /// Subscribe to events whose topic starts with `topic`.
    pub fn subscribe_event(&self, topic: &str) -> Result<()> {
        let t = cstring(topic)?;
        // SAFETY: self is live; t is a valid C string.
        cvt(unsafe { flux_sys::flux_event_subscribe(self.as_ptr(), t.as_ptr()) }).map(|_| ())
    }
}

/// An owned connection to a broker (`flux_open_ex`), closed on drop.
pub struct Handle {
    ptr: NonNull<flux_sys::flux_t>,
    comms_error: Option<std::rc::Rc<crate::ffi::CbCell<CommsErrorFn>>>,
}

type CommsErrorFn = dyn FnMut(i32);

extern "C" fn comms_error_trampoline(
    _h: *mut flux_sys::flux_t,
    arg: *mut libc::c_void,
) -> libc::c_int {
    let errno = std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::ECONNRESET);
    let r = crate::ffi::guard(|| {
        // SAFETY: arg is Rc::as_ptr of the cell owned by the Handle, which
        // outlives its own comms errors.
        unsafe {
            crate::ffi::CbCell::<CommsErrorFn>::invoke(
                arg as *const crate::ffi::CbCell<CommsErrorFn>,
                |cb| cb(errno),
            )
        }
    })
    .and_then(|inner| inner);
    if let Err(p) = r {
        crate::log::report_panic(None, "comms error callback", &p);
    }
    // Never retry: the caller closes and reconnects this handle itself.
    -1
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Handle({:p})", self.ptr)
    }
}

/// Flags for [`Handle::open`].
pub mod flags {
    /// Track RPCs so they fail (instead of hanging) when the connection is lost.
    pub const RPCTRACK: i32 = flux_sys::FLUX_O_RPCTRACK as i32;
    /// Non-blocking send/recv.
    pub const NONBLOCK: i32 = flux_sys::FLUX_O_NONBLOCK as i32;
}

impl Handle {
    /// Connect to the broker at `uri` (`local:///path`, or `None` for `FLUX_URI`).
    pub fn open(uri: Option<&str>, flags: i32) -> Result<Handle> {
        let u = uri.map(cstring).transpose()?;
        let mut err = flux_sys::flux_error_t::default();
        // SAFETY: uri is NULL or a valid C string; err is a valid out pointer.
        let p = unsafe {
            flux_sys::flux_open_ex(
                u.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
                flags,
                &mut err,
            )
        };
        match NonNull::new(p) {
            Some(ptr) => Ok(Handle {
                ptr,
                comms_error: None,
            }),
            None => {
                let errno = Error::last_os().errno;
                // SAFETY: flux_open_ex fills err.text with a NUL-terminated string.
                let text = unsafe { cstr_to_string(err.text.as_ptr()) }.unwrap_or_default();
                Err(Error::new(
                    errno,
                    format!("{}: {}", uri.unwrap_or("$FLUX_URI"), text),
                ))
            }
        }
    }
}

impl Handle {
    /// Call `cb` (with the errno) when this connection fails. The handle
    /// then stays failed: the failure also stops the reactor it is attached
    /// to with an error, so the owner must drop this handle and reconnect.
    pub fn on_comms_error(&mut self, cb: impl FnMut(i32) + 'static) {
        let cell = crate::ffi::CbCell::<CommsErrorFn>::new(Box::new(cb));
        // SAFETY: live handle; arg points into `cell`, owned by self for as
        // long as the handle exists.
        unsafe {
            flux_sys::flux_comms_error_set(
                self.ptr.as_ptr(),
                Some(comms_error_trampoline),
                std::rc::Rc::as_ptr(&cell) as *mut libc::c_void,
            )
        };
        self.comms_error = Some(cell);
    }
}

impl std::ops::Deref for Handle {
    type Target = HandleRef;
    fn deref(&self) -> &HandleRef {
        // SAFETY: ptr is owned by self and valid until drop.
        unsafe { HandleRef::from_ptr(self.ptr.as_ptr()) }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: we own the handle; nothing uses it after drop.
        unsafe { flux_sys::flux_close(self.ptr.as_ptr()) };
    }
}
