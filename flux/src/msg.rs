//! C header: flux/core/message.h, request.h, response.h — messages.

use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::error::{Error, Result, cvt, cvt_p};
use crate::ffi::{cstr_ref, cstring};
use crate::handle::HandleRef;

/// A borrowed `flux_msg_t *` (`&MsgRef`), as message handlers receive it.
pub struct MsgRef {
    _opaque: [u8; 0],
    _marker: PhantomData<*mut ()>,
}

impl std::fmt::Debug for MsgRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MsgRef({:?})", self.topic().unwrap_or("?"))
    }
}

/// The sender's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cred {
    /// Authenticated user id.
    pub userid: u32,
    /// `FLUX_ROLE_*` bits.
    pub rolemask: u32,
}

impl Cred {
    /// True when the sender is the instance owner.
    pub fn is_owner(&self) -> bool {
        self.rolemask & flux_sys::FLUX_ROLE_OWNER != 0
    }
}

impl MsgRef {
    /// Borrow a raw message.
    ///
    /// # Safety
    /// `p` must be a valid, non-NULL message that outlives `'a`.
    pub unsafe fn from_ptr<'a>(p: *const flux_sys::flux_msg_t) -> &'a MsgRef {
        // SAFETY: zero-sized stand-in; validity guaranteed by the caller.
        unsafe { &*p.cast::<MsgRef>() }
    }

    /// The raw pointer.
    pub fn as_ptr(&self) -> *const flux_sys::flux_msg_t {
        (self as *const MsgRef).cast()
    }

    /// The message topic.
    pub fn topic(&self) -> Result<&str> {
        let mut t = std::ptr::null();
        // SAFETY: self is a live message; t receives a pointer owned by it.
        cvt(unsafe { flux_sys::flux_msg_get_topic(self.as_ptr(), &mut t) })?;
        // SAFETY: the topic lives as long as the message.
        unsafe { cstr_ref(t) }.ok_or_else(|| Error::proto("topic is not UTF-8"))
    }

    /// The JSON payload of a request, `None` when it has none.
    pub fn request_payload(&self) -> Result<Option<&str>> {
        let mut s = std::ptr::null();
        // SAFETY: self is live; topic out pointer may be NULL; s receives a borrowed string.
        cvt(unsafe { flux_sys::flux_request_decode(self.as_ptr(), std::ptr::null_mut(), &mut s) })?;
        // SAFETY: the payload lives as long as the message.
        Ok(unsafe { cstr_ref(s) })
    }

    /// Decode the request payload as JSON (`{}` when absent).
    pub fn request_json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let s = self.request_payload()?.unwrap_or("{}");
        serde_json::from_str(s)
            .map_err(|e| Error::proto(format!("{}: {e}", self.topic().unwrap_or("request"))))
    }

    /// The JSON payload of an event message, `None` when it has none.
    pub fn event_payload(&self) -> Result<Option<&str>> {
        let mut s = std::ptr::null();
        // SAFETY: self is live; s receives a borrowed string or NULL.
        cvt(unsafe { flux_sys::flux_msg_get_string(self.as_ptr(), &mut s) })?;
        // SAFETY: the payload lives as long as the message.
        Ok(unsafe { cstr_ref(s) })
    }

    /// The sender's credentials.
    pub fn cred(&self) -> Result<Cred> {
        let mut c = flux_sys::flux_msg_cred::default();
        // SAFETY: self is live; c is a valid out pointer.
        cvt(unsafe { flux_sys::flux_msg_get_cred(self.as_ptr(), &mut c) })?;
        Ok(Cred {
            userid: c.userid,
            rolemask: c.rolemask,
        })
    }

    /// True if the sender asked for no response.
    pub fn is_noresponse(&self) -> bool {
        // SAFETY: self is live.
        unsafe { flux_sys::flux_msg_is_noresponse(self.as_ptr()) }
    }

    /// True if the request is streaming (several responses, ended by an error).
    pub fn is_streaming(&self) -> bool {
        // SAFETY: self is live.
        unsafe { flux_sys::flux_msg_is_streaming(self.as_ptr()) }
    }

    /// A copy of this message without its payload: enough to respond to a
    /// request later (route, matchtag, credentials), for a fraction of the
    /// memory a held request with a large payload costs.
    pub fn copy_header(&self) -> Result<Msg> {
        // SAFETY: self is live; flux_msg_copy returns a new message we own.
        let m = unsafe { flux_sys::flux_msg_copy(self.as_ptr(), false) };
        Ok(Msg { ptr: cvt_p(m)? })
    }

    /// A new reference to this message.
    pub fn to_owned(&self) -> Msg {
        // SAFETY: self is live; incref returns the same pointer with one more reference.
        let p = unsafe { flux_sys::flux_msg_incref(self.as_ptr()) };
        Msg {
            ptr: NonNull::new(p.cast_mut()).expect("flux_msg_incref returns its argument"),
        }
    }
}

/// An owned reference to a message (`flux_msg_decref` on drop).
pub struct Msg {
    ptr: NonNull<flux_sys::flux_msg_t>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl Msg {
    /// A new request message with `topic` and optional JSON payload.
    pub fn request(topic: &str, payload: Option<&str>) -> Result<Msg> {
        let t = cstring(topic)?;
        let p = payload.map(cstring).transpose()?;
        // SAFETY: valid C strings (payload may be NULL).
        let m = unsafe {
            flux_sys::flux_request_encode(
                t.as_ptr(),
                p.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            )
        };
        Ok(Msg { ptr: cvt_p(m)? })
    }

    /// Set the credentials the request carries (a module may act for a user).
    pub fn set_cred(&mut self, cred: Cred) -> Result<()> {
        let c = flux_sys::flux_msg_cred {
            userid: cred.userid,
            rolemask: cred.rolemask,
        };
        // SAFETY: we own the only reference to a freshly created message.
        cvt(unsafe { flux_sys::flux_msg_set_cred(self.ptr.as_ptr(), c) }).map(|_| ())
    }
}

impl std::ops::Deref for Msg {
    type Target = MsgRef;
    fn deref(&self) -> &MsgRef {
        // SAFETY: ptr is a live reference owned by self.
        unsafe { MsgRef::from_ptr(self.ptr.as_ptr()) }
    }
}

impl Drop for Msg {
    fn drop(&mut self) {
        // SAFETY: we own one reference.
        unsafe { flux_sys::flux_msg_decref(self.ptr.as_ptr()) };
    }
}

impl HandleRef {
    /// Respond to `req` with a JSON payload (or none).
    pub fn respond(&self, req: &MsgRef, payload: Option<&str>) -> Result<()> {
        let p = payload.map(cstring).transpose()?;
        // SAFETY: live handle and message; payload NULL or a valid C string.
        cvt(unsafe {
            flux_sys::flux_respond(
                self.as_ptr(),
                req.as_ptr(),
                p.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            )
        })
        .map(|_| ())
    }

    /// Respond to `req` with a serializable value.
    pub fn respond_json<T: serde::Serialize>(&self, req: &MsgRef, value: &T) -> Result<()> {
        let s = serde_json::to_string(value)?;
        self.respond(req, Some(&s))
    }

    /// Respond to `req` with an error (errno and message).
    pub fn respond_error(&self, req: &MsgRef, err: &Error) -> Result<()> {
        let text = cstring(&err.message().replace('\0', " "))?;
        let errno = if err.errno == 0 { libc::EIO } else { err.errno };
        // SAFETY: live handle and message; text is a valid C string.
        cvt(unsafe {
            flux_sys::flux_respond_error(self.as_ptr(), req.as_ptr(), errno, text.as_ptr())
        })
        .map(|_| ())
    }
}
