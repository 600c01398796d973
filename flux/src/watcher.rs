//! C header: flux/core/watcher.h — fd and timer watchers, and a channel that
//! wakes the reactor from other threads.

use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::{Arc, mpsc};

use crate::error::{Error, Result, cvt_p};
use crate::ffi::{CbCell, guard};
use crate::log::report_panic;
use crate::reactor::ReactorRef;

type WatchFn = dyn FnMut(&WatcherRef, i32);

/// A borrowed `flux_watcher_t *`, as watcher callbacks receive it.
pub struct WatcherRef {
    _opaque: [u8; 0],
    _marker: std::marker::PhantomData<*mut ()>,
}

impl std::fmt::Debug for WatcherRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WatcherRef({:p})", self.as_ptr())
    }
}

/// An owned watcher (stopped and destroyed on drop) with its callback.
pub struct Watcher {
    ptr: NonNull<flux_sys::flux_watcher_t>,
    _cb: Rc<CbCell<WatchFn>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Watcher({:p})", self.ptr)
    }
}

/// `revents` bits.
pub mod events {
    /// Readable.
    pub const IN: i32 = flux_sys::FLUX_POLLIN as i32;
    /// Error.
    pub const ERR: i32 = flux_sys::FLUX_POLLERR as i32;
}

extern "C" fn watcher_trampoline(
    _r: *mut flux_sys::flux_reactor_t,
    w: *mut flux_sys::flux_watcher_t,
    revents: libc::c_int,
    arg: *mut libc::c_void,
) {
    let r = guard(|| {
        // SAFETY: arg is Rc::as_ptr of the cell owned by the Watcher that owns
        // w, alive while C can still call this watcher; w is live for the call.
        unsafe {
            CbCell::<WatchFn>::invoke(arg as *const CbCell<WatchFn>, |cb| {
                cb(WatcherRef::from_ptr(w), revents)
            })
        }
    })
    .and_then(|inner| inner);
    if let Err(p) = r {
        report_panic(None, "watcher callback", &p);
    }
}

impl WatcherRef {
    /// Borrow a raw watcher.
    ///
    /// # Safety
    /// `p` must be a valid, non-NULL watcher that outlives `'a`.
    pub unsafe fn from_ptr<'a>(p: *mut flux_sys::flux_watcher_t) -> &'a WatcherRef {
        // SAFETY: zero-sized stand-in; validity guaranteed by the caller.
        unsafe { &*p.cast::<WatcherRef>() }
    }

    /// The raw pointer.
    pub fn as_ptr(&self) -> *mut flux_sys::flux_watcher_t {
        (self as *const WatcherRef).cast_mut().cast()
    }

    /// Start watching.
    pub fn start(&self) {
        // SAFETY: a live watcher.
        unsafe { flux_sys::flux_watcher_start(self.as_ptr()) };
    }

    /// Stop watching.
    pub fn stop(&self) {
        // SAFETY: a live watcher.
        unsafe { flux_sys::flux_watcher_stop(self.as_ptr()) };
    }

    /// Re-arm a timer watcher (it must be started again).
    pub fn timer_reset(&self, after: f64, repeat: f64) {
        // SAFETY: a live timer watcher.
        unsafe { flux_sys::flux_timer_watcher_reset(self.as_ptr(), after, repeat) };
    }

    /// True while the watcher is started (a one-shot timer stops after firing).
    ///
    /// Only where flux-core has `flux_watcher_is_active` (>= 0.69; see
    /// [`crate::HAVE_WATCHER_IS_ACTIVE`]): older releases keep that state
    /// private, so there is nothing to fall back on.
    #[cfg(have_flux_watcher_is_active)]
    pub fn is_active(&self) -> bool {
        // SAFETY: a live watcher.
        unsafe { flux_sys::flux_watcher_is_active(self.as_ptr()) }
    }

    /// Let the reactor exit even while this watcher is active (`flux_watcher_unref`).
    ///
    /// Only where flux-core has `flux_watcher_unref` (>= 0.70; see
    /// [`crate::HAVE_WATCHER_UNREF`]): older reactors count every active
    /// watcher, so code that needs this must stop the watcher instead.
    #[cfg(have_flux_watcher_unref)]
    pub fn unref(&self) {
        // SAFETY: a live watcher.
        unsafe { flux_sys::flux_watcher_unref(self.as_ptr()) };
    }
}

impl Watcher {
    fn create(
        make: impl FnOnce(flux_sys::flux_watcher_f, *mut libc::c_void) -> *mut flux_sys::flux_watcher_t,
        cb: Box<WatchFn>,
    ) -> Result<Watcher> {
        let cell = CbCell::<WatchFn>::new(cb);
        let p = make(
            Some(watcher_trampoline),
            Rc::as_ptr(&cell) as *mut libc::c_void,
        );
        Ok(Watcher {
            ptr: cvt_p(p)?,
            _cb: cell,
        })
    }

    /// Watch `fd` for readability (and errors) on reactor `r`. Not started.
    pub fn fd(
        r: &ReactorRef,
        fd: i32,
        cb: impl FnMut(&WatcherRef, i32) + 'static,
    ) -> Result<Watcher> {
        Self::create(
            // SAFETY: r is live; the callback arg is kept alive by the Watcher.
            |f, arg| unsafe {
                flux_sys::flux_fd_watcher_create(r.as_ptr(), fd, events::IN, f, arg)
            },
            Box::new(cb),
        )
    }

    /// A timer firing after `after` seconds, then every `repeat` seconds (0 = once). Not started.
    pub fn timer(
        r: &ReactorRef,
        after: f64,
        repeat: f64,
        cb: impl FnMut(&WatcherRef, i32) + 'static,
    ) -> Result<Watcher> {
        Self::create(
            // SAFETY: r is live; the callback arg is kept alive by the Watcher.
            |f, arg| unsafe {
                flux_sys::flux_timer_watcher_create(r.as_ptr(), after, repeat, f, arg)
            },
            Box::new(cb),
        )
    }
}

impl std::ops::Deref for Watcher {
    type Target = WatcherRef;
    fn deref(&self) -> &WatcherRef {
        // SAFETY: ptr is live until drop.
        unsafe { WatcherRef::from_ptr(self.ptr.as_ptr()) }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // SAFETY: we own the watcher; destroy stops it first, then the closure
        // cell is released.
        unsafe { flux_sys::flux_watcher_destroy(self.ptr.as_ptr()) };
    }
}

/// One-shot timers owned by the reactor thread, each kept until its callback
/// has run (and dropped with the set, so nothing fires after an unload).
///
/// A timer is released only once its callback has *run*, never merely once
/// it is inactive: libev stops a one-shot timer when it expires but calls it
/// later in the same loop iteration, and destroying it in between silently
/// cancels that call.
#[derive(Debug, Default)]
pub struct Timers {
    armed: Vec<(Watcher, Rc<std::cell::Cell<bool>>)>,
}

impl Timers {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Run `f` once, `delay` seconds from now, on reactor `r`.
    pub fn after(&mut self, r: &ReactorRef, delay: f64, f: impl FnOnce() + 'static) -> Result<()> {
        let ran = Rc::new(std::cell::Cell::new(false));
        let ran2 = Rc::clone(&ran);
        let mut f = Some(f);
        let w = Watcher::timer(r, delay, 0.0, move |_, _| {
            if let Some(f) = f.take() {
                f();
            }
            ran2.set(true);
        })?;
        w.start();
        // A callback that arms a timer sweeps only timers that already ran
        // (its own flag is set after it returns), so no timer is destroyed
        // from inside its own callback either.
        self.armed.retain(|(_, ran)| !ran.get());
        self.armed.push((w, ran));
        Ok(())
    }

    /// Timers armed whose callback has not run yet.
    pub fn len(&self) -> usize {
        self.armed.iter().filter(|(_, ran)| !ran.get()).count()
    }

    /// True when no callback is still due.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cancel every timer.
    pub fn clear(&mut self) {
        self.armed.clear();
    }
}

/// The sending end of a [`channel`]: `Send`, cloneable, usable from any thread.
pub struct Sender<T> {
    tx: mpsc::Sender<T>,
    // The eventfd, shared by every clone and by the reading watcher.
    wake: Arc<OwnedFd>,
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sender(fd {})", self.wake.as_raw_fd())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            wake: Arc::clone(&self.wake),
        }
    }
}

impl<T> Sender<T> {
    /// Send `value` to the reactor thread and wake it. Fails once the
    /// receiving watcher is gone.
    pub fn send(&self, value: T) -> std::result::Result<(), T> {
        self.tx.send(value).map_err(|e| e.0)?;
        let one: u64 = 1;
        // An eventfd write only fails when the counter would overflow, in which
        // case the reactor is already due to wake up.
        let _ = nix::unistd::write(&*self.wake, &one.to_ne_bytes());
        Ok(())
    }
}

/// A channel from any thread to the reactor thread.
///
/// Values sent on the [`Sender`] are handed to `cb` on the reactor thread: an
/// eventfd wakes an fd watcher, which drains the queue. The returned watcher
/// is started; drop it to close the channel.
pub fn channel<T: 'static>(
    r: &ReactorRef,
    mut cb: impl FnMut(T) + 'static,
) -> Result<(Watcher, Sender<T>)> {
    let efd = nix::sys::eventfd::EventFd::from_flags(
        nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
    )
    .map_err(|e| Error::new(e as i32, "eventfd"))?;
    let fd: OwnedFd = efd.into();
    let raw = fd.as_raw_fd();
    let wake = Arc::new(fd);
    let reader = Arc::clone(&wake);
    let (tx, rx) = mpsc::channel::<T>();
    let w = Watcher::fd(r, raw, move |_w, _revents| {
        let mut buf = [0u8; 8];
        let _ = nix::unistd::read(&*reader, &mut buf);
        while let Ok(v) = rx.try_recv() {
            cb(v);
        }
    })?;
    w.start();
    Ok((w, Sender { tx, wake }))
}
