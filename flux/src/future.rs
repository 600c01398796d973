//! C header: flux/core/future.h, rpc.h — futures, RPCs and continuations.

use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::rc::{Rc, Weak};

use crate::error::{Error, Result, cvt, cvt_p};
use crate::ffi::{CbCell, cstr_ref, cstring, guard};
use crate::handle::HandleRef;
use crate::log::report_panic;
use crate::msg::Msg;

/// A borrowed `flux_future_t *`, as continuations receive it.
pub struct FutureRef {
    _opaque: [u8; 0],
    _marker: PhantomData<*mut ()>,
}

impl std::fmt::Debug for FutureRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FutureRef({:p})", self.as_ptr())
    }
}

/// Flags for RPCs.
pub mod rpc_flags {
    /// No response expected.
    pub const NORESPONSE: i32 = flux_sys::FLUX_RPC_NORESPONSE as i32;
    /// Many responses, ended by an error (often ENODATA).
    pub const STREAMING: i32 = flux_sys::FLUX_RPC_STREAMING as i32;
}

impl FutureRef {
    /// Borrow a raw future.
    ///
    /// # Safety
    /// `p` must be a valid, non-NULL future that outlives `'a`.
    pub unsafe fn from_ptr<'a>(p: *mut flux_sys::flux_future_t) -> &'a FutureRef {
        // SAFETY: zero-sized stand-in; validity guaranteed by the caller.
        unsafe { &*p.cast::<FutureRef>() }
    }

    /// The raw pointer.
    pub fn as_ptr(&self) -> *mut flux_sys::flux_future_t {
        (self as *const FutureRef).cast_mut().cast()
    }

    /// The error of a failed future: errno plus the error string, if any.
    fn error(&self) -> Error {
        let mut e = Error::last_os();
        // SAFETY: self is live; the returned string (or NULL) is owned by the future.
        if let Some(s) = unsafe { cstr_ref(flux_sys::flux_future_error_string(self.as_ptr())) } {
            e.text = s.to_string();
        }
        e
    }

    /// The JSON payload of an RPC response; `Ok(None)` for an empty payload.
    ///
    /// For streaming RPCs, the end of the stream is an error (usually ENODATA);
    /// see [`FutureRef::rpc_get_stream`].
    pub fn rpc_get(&self) -> Result<Option<&str>> {
        let mut s = std::ptr::null();
        // SAFETY: self is live; s receives a string owned by the future until reset/destroy.
        if unsafe { flux_sys::flux_rpc_get(self.as_ptr(), &mut s) } < 0 {
            return Err(self.error());
        }
        // SAFETY: as above.
        Ok(unsafe { cstr_ref(s) })
    }

    /// Decode an RPC response as JSON.
    pub fn rpc_get_json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_str(self.rpc_get()?.unwrap_or("{}"))?)
    }

    /// One response of a streaming RPC: `Ok(Some(payload))`, or `Ok(None)` at
    /// the normal end of the stream (ENODATA).
    pub fn rpc_get_stream(&self) -> Result<Option<&str>> {
        match self.rpc_get() {
            Ok(s) => Ok(Some(s.unwrap_or("{}"))),
            Err(e) if e.errno == libc::ENODATA => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Wait (blocking the thread) for the future to be fulfilled.
    ///
    /// Only for code that owns its own handle outside a reactor callback
    /// (tests, command-line tools): never call it in a module callback.
    pub fn wait_for(&self, timeout: f64) -> Result<()> {
        // SAFETY: self is live.
        cvt(unsafe { flux_sys::flux_future_wait_for(self.as_ptr(), timeout) }).map(|_| ())
    }

    /// Reset the future for the next response of a streaming RPC.
    pub fn reset(&self) {
        // SAFETY: self is live.
        unsafe { flux_sys::flux_future_reset(self.as_ptr()) };
    }

    /// The handle this future is attached to.
    pub fn handle(&self) -> Option<&HandleRef> {
        // SAFETY: self is live; the handle outlives its futures.
        let h = unsafe { flux_sys::flux_future_get_flux(self.as_ptr()) };
        // SAFETY: non-NULL handle pointer valid while the future is.
        (!h.is_null()).then(|| unsafe { HandleRef::from_ptr(h) })
    }
}

type Continuation = dyn FnMut(&FutureRef);

/// An owned future, destroyed on drop (which also cancels its continuation).
pub struct Future {
    ptr: NonNull<flux_sys::flux_future_t>,
    cb: Option<Rc<CbCell<Continuation>>>,
}

impl std::fmt::Debug for Future {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Future({:p})", self.ptr)
    }
}

extern "C" fn continuation_trampoline(f: *mut flux_sys::flux_future_t, arg: *mut libc::c_void) {
    // The continuation may destroy its own future (a one-shot RPC usually
    // does), so nothing below may touch `f` after it ran: take the handle,
    // which outlives its futures, first.
    // SAFETY: f is live on entry to its continuation.
    let h = unsafe { FutureRef::from_ptr(f) }
        .handle()
        .map(HandleRef::as_ptr);
    let r = guard(|| {
        // SAFETY: arg is Rc::as_ptr of the CbCell owned by the Future, which is
        // alive because C only calls the continuation of an undestroyed future.
        unsafe {
            CbCell::<Continuation>::invoke(arg as *const CbCell<Continuation>, |cb| {
                cb(FutureRef::from_ptr(f))
            })
        }
    })
    .and_then(|inner| inner);
    if let Err(p) = r {
        // SAFETY: the handle outlives the futures attached to it.
        let h = h.map(|h| unsafe { HandleRef::from_ptr(h) });
        report_panic(h, "future continuation", &p);
    }
}

impl Future {
    /// Take ownership of a raw future.
    ///
    /// # Safety
    /// `p` must be a valid future that nothing else will destroy.
    pub unsafe fn from_raw(p: NonNull<flux_sys::flux_future_t>) -> Future {
        Future { ptr: p, cb: None }
    }

    /// Call `cb` on the reactor each time the future is fulfilled (after each
    /// response of a streaming RPC, once `reset` was called), or after
    /// `timeout` seconds (< 0: never) with an ETIMEDOUT error.
    pub fn then(&mut self, timeout: f64, cb: impl FnMut(&FutureRef) + 'static) -> Result<()> {
        let cell = CbCell::<Continuation>::new(Box::new(cb));
        // SAFETY: self.ptr is live; the arg points into `cell`, which self keeps
        // alive for as long as the future exists.
        cvt(unsafe {
            flux_sys::flux_future_then(
                self.ptr.as_ptr(),
                timeout,
                Some(continuation_trampoline),
                Rc::as_ptr(&cell) as *mut libc::c_void,
            )
        })?;
        self.cb = Some(cell);
        Ok(())
    }
}

impl std::ops::Deref for Future {
    type Target = FutureRef;
    fn deref(&self) -> &FutureRef {
        // SAFETY: ptr is live until drop.
        unsafe { FutureRef::from_ptr(self.ptr.as_ptr()) }
    }
}

impl Drop for Future {
    fn drop(&mut self) {
        // SAFETY: we own the future. Destroying it first means C will not call
        // the continuation again; then the closure cell is released.
        unsafe { flux_sys::flux_future_destroy(self.ptr.as_ptr()) };
    }
}

/// A set of in-flight futures owned by the reactor thread.
///
/// [`Pending::spawn`] attaches a one-shot continuation and keeps the future
/// alive until it has run; [`Pending::stream`] keeps a streaming future
/// until its continuation returns `false`. Dropping the set destroys every
/// future in it, so nothing outlives a module's unload.
#[derive(Debug, Default, Clone)]
pub struct Pending {
    inner: Rc<RefCell<PendingInner>>,
}

#[derive(Debug, Default)]
struct PendingInner {
    next: u64,
    futures: HashMap<u64, Future>,
}

impl Pending {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of futures still in flight.
    pub fn len(&self) -> usize {
        self.inner.borrow().futures.len()
    }

    /// True when no future is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&self, f: Future) -> u64 {
        let mut inner = self.inner.borrow_mut();
        inner.next += 1;
        let id = inner.next;
        inner.futures.insert(id, f);
        id
    }

    fn remove(weak: &Weak<RefCell<PendingInner>>, id: u64) {
        if let Some(inner) = weak.upgrade() {
            // Drop outside the borrow: destroying a future may run code.
            let f = inner.borrow_mut().futures.remove(&id);
            drop(f);
        }
    }

    /// Run `cb` once when `f` is fulfilled (or times out), then destroy `f`.
    pub fn spawn(
        &self,
        mut f: Future,
        timeout: f64,
        cb: impl FnOnce(&FutureRef) + 'static,
    ) -> Result<()> {
        let weak = Rc::downgrade(&self.inner);
        let slot = Rc::new(RefCell::new(None::<u64>));
        let slot2 = Rc::clone(&slot);
        let mut cb = Some(cb);
        f.then(timeout, move |fr| {
            // Remove the future even if `cb` panics (the guard runs while
            // unwinding), so a bad callback cannot leak it.
            let _remove = RemoveOnDrop(&weak, *slot2.borrow());
            if let Some(cb) = cb.take() {
                cb(fr);
            }
        })?;
        *slot.borrow_mut() = Some(self.insert(f));
        Ok(())
    }

    /// Call `cb` for each response of streaming future `f` (resetting it after
    /// each); when `cb` returns `false` the future is destroyed.
    /// Returns an id usable with [`Pending::cancel`].
    pub fn stream(
        &self,
        mut f: Future,
        cb: impl FnMut(&FutureRef) -> bool + 'static,
    ) -> Result<u64> {
        let weak = Rc::downgrade(&self.inner);
        let slot = Rc::new(RefCell::new(None::<u64>));
        let slot2 = Rc::clone(&slot);
        let mut cb = cb;
        f.then(-1.0, move |fr| {
            if cb(fr) {
                fr.reset();
            } else if let Some(id) = *slot2.borrow() {
                Pending::remove(&weak, id);
            }
        })?;
        let id = self.insert(f);
        *slot.borrow_mut() = Some(id);
        Ok(id)
    }

    /// Destroy the future `id` (a stream that is no longer wanted).
    pub fn cancel(&self, id: u64) {
        Pending::remove(&Rc::downgrade(&self.inner), id);
    }

    /// Destroy every future in flight.
    pub fn clear(&self) {
        let all: Vec<Future> = self
            .inner
            .borrow_mut()
            .futures
            .drain()
            .map(|(_, f)| f)
            .collect();
        drop(all);
    }
}

/// Removes future `id` from its [`Pending`] set when dropped.
struct RemoveOnDrop<'a>(&'a Weak<RefCell<PendingInner>>, Option<u64>);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.1 {
            Pending::remove(self.0, id);
        }
    }
}

impl HandleRef {
    /// Ask the broker to route requests for `service` (`service.*`) to this
    /// handle (`flux_service_register`). The future fails with `EEXIST`
    /// when another module provides the service.
    pub fn service_register(&self, service: &str) -> Result<Future> {
        let s = cstring(service)?;
        // SAFETY: live handle, valid C string.
        let f = unsafe { flux_sys::flux_service_register(self.as_ptr(), s.as_ptr()) };
        // SAFETY: a new future we own.
        Ok(unsafe { Future::from_raw(cvt_p(f)?) })
    }

    /// Send an RPC to `topic` with a JSON payload (or none).
    pub fn rpc(
        &self,
        topic: &str,
        payload: Option<&str>,
        nodeid: u32,
        flags: i32,
    ) -> Result<Future> {
        let t = cstring(topic)?;
        let p = payload.map(cstring).transpose()?;
        // SAFETY: live handle, valid C strings.
        let f = unsafe {
            flux_sys::flux_rpc(
                self.as_ptr(),
                t.as_ptr(),
                p.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
                nodeid,
                flags,
            )
        };
        // SAFETY: a new future we own.
        Ok(unsafe { Future::from_raw(cvt_p(f)?) })
    }

    /// Send an RPC with a serializable payload to the nearest `topic` service.
    pub fn rpc_json<T: serde::Serialize>(
        &self,
        topic: &str,
        payload: &T,
        flags: i32,
    ) -> Result<Future> {
        let s = serde_json::to_string(payload)?;
        self.rpc(topic, Some(&s), crate::NODEID_ANY, flags)
    }

    /// Send a prepared request message (e.g. with credentials set).
    pub fn rpc_message(&self, msg: &Msg, nodeid: u32, flags: i32) -> Result<Future> {
        // SAFETY: live handle and message.
        let f = unsafe { flux_sys::flux_rpc_message(self.as_ptr(), msg.as_ptr(), nodeid, flags) };
        // SAFETY: a new future we own.
        Ok(unsafe { Future::from_raw(cvt_p(f)?) })
    }
}
