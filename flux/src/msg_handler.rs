//! C header: flux/core/msg_handler.h — message handler tables with role masks.

use std::rc::Rc;

use crate::error::{Result, cvt_p};
use crate::ffi::{CbCell, cstring, guard};
use crate::handle::HandleRef;
use crate::log::report_panic;
use crate::msg::MsgRef;

/// Who may send a message to a handler. A handler always admits the instance
/// owner; `User` also admits guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The instance owner only (flux-core's default; use it for control paths).
    Owner,
    /// The owner and any guest user.
    User,
}

impl Role {
    fn mask(self) -> u32 {
        match self {
            Role::Owner => 0,
            Role::User => flux_sys::FLUX_ROLE_USER,
        }
    }
}

pub(crate) type Handler = dyn FnMut(&HandleRef, &MsgRef);

struct Entry {
    typemask: i32,
    topic: String,
    role: Role,
    cb: Box<Handler>,
}

/// A table of message handlers, built then registered with [`Table::register`].
pub struct Table {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| &e.topic))
            .finish()
    }
}

impl Default for Table {
    fn default() -> Self {
        Self::new()
    }
}

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// Handle requests whose topic matches `topic` (a glob), from `role`.
    pub fn request(
        self,
        topic: &str,
        role: Role,
        cb: impl FnMut(&HandleRef, &MsgRef) + 'static,
    ) -> Self {
        self.add(flux_sys::FLUX_MSGTYPE_REQUEST, topic, role, Box::new(cb))
    }

    /// Handle events whose topic matches `topic` (subscribe separately).
    pub fn event(
        self,
        topic: &str,
        role: Role,
        cb: impl FnMut(&HandleRef, &MsgRef) + 'static,
    ) -> Self {
        self.add(flux_sys::FLUX_MSGTYPE_EVENT, topic, role, Box::new(cb))
    }

    fn add(mut self, typemask: u32, topic: &str, role: Role, cb: Box<Handler>) -> Self {
        self.entries.push(Entry {
            typemask: typemask as i32,
            topic: topic.to_string(),
            role,
            cb,
        });
        self
    }

    /// Register every handler on `h`, each topic prefixed with `service.`
    /// when `service` is given. Handlers stop when the result is dropped.
    pub fn register(self, h: &HandleRef, service: Option<&str>) -> Result<MsgHandlers> {
        let mut out = MsgHandlers {
            handlers: Vec::new(),
        };
        for e in self.entries {
            let topic = match service {
                Some(s) => format!("{s}.{}", e.topic),
                None => e.topic,
            };
            let t = cstring(&topic)?;
            // SAFETY: flux_match_init copies nothing itself; the topic is copied by
            // flux_msg_handler_create below while `t` is alive.
            let m = unsafe {
                flux_sys::flux_match_init(e.typemask, flux_sys::FLUX_SYS_MATCHTAG_NONE, t.as_ptr())
            };
            let cell = CbCell::<Handler>::new(e.cb);
            // SAFETY: live handle; the match topic is copied; arg points into
            // `cell`, kept alive by the returned MsgHandlers.
            let mh = cvt_p(unsafe {
                flux_sys::flux_msg_handler_create(
                    h.as_ptr(),
                    m,
                    Some(handler_trampoline),
                    Rc::as_ptr(&cell) as *mut libc::c_void,
                )
            })?;
            // SAFETY: mh is the live handler just created.
            unsafe {
                flux_sys::flux_msg_handler_allow_rolemask(mh.as_ptr(), e.role.mask());
                flux_sys::flux_msg_handler_start(mh.as_ptr());
            }
            out.handlers.push((mh, cell));
        }
        Ok(out)
    }
}

pub(crate) extern "C" fn handler_trampoline(
    h: *mut flux_sys::flux_t,
    _mh: *mut flux_sys::flux_msg_handler_t,
    msg: *const flux_sys::flux_msg_t,
    arg: *mut libc::c_void,
) {
    // SAFETY: h and msg are valid for the duration of the callback.
    let (hr, mr) = unsafe { (HandleRef::from_ptr(h), MsgRef::from_ptr(msg)) };
    let r = guard(|| {
        // SAFETY: arg is Rc::as_ptr of a cell kept alive by MsgHandlers, which
        // destroys the C handler before releasing the cell.
        unsafe { CbCell::<Handler>::invoke(arg as *const CbCell<Handler>, |cb| cb(hr, mr)) }
    })
    .and_then(|inner| inner);
    if let Err(p) = r {
        let topic = mr.topic().unwrap_or("?").to_string();
        report_panic(Some(hr), &format!("handler for {topic}"), &p);
        if !mr.is_noresponse() {
            let _ = hr.respond_error(
                mr,
                &crate::Error::new(libc::EIO, format!("internal error in {topic}")),
            );
        }
    }
}

/// Registered message handlers; dropping this stops and destroys them.
pub struct MsgHandlers {
    handlers: Vec<(
        std::ptr::NonNull<flux_sys::flux_msg_handler_t>,
        Rc<CbCell<Handler>>,
    )>,
}

impl std::fmt::Debug for MsgHandlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MsgHandlers({})", self.handlers.len())
    }
}

impl Drop for MsgHandlers {
    fn drop(&mut self) {
        for (mh, _cell) in self.handlers.drain(..) {
            // SAFETY: we own the handler; destroying it before dropping the cell
            // guarantees C never calls into freed memory.
            unsafe { flux_sys::flux_msg_handler_destroy(mh.as_ptr()) };
        }
    }
}
