//! JSON across the boundary without linking jansson.
//!
//! flux-core hands out some values only as jansson `json_t *` (the config
//! object) and takes some only through `pack` formats (`"O"` for an object,
//! e.g. a memo event's context). A `flux_plugin_arg_t` converts between a
//! JSON string and a `json_t *` in both directions with string-based calls,
//! so pancake needs no jansson bindings of its own.

use std::ffi::c_void;
use std::ptr::NonNull;

use crate::error::{Error, Result, cvt, cvt_p};
use crate::ffi::{cstr_to_string, cstring};

/// A JSON object held by flux-core (in a `flux_plugin_arg_t`).
pub struct JsonObject {
    args: NonNull<flux_sys::flux_plugin_arg_t>,
}

impl std::fmt::Debug for JsonObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JsonObject")
    }
}

impl JsonObject {
    fn empty() -> Result<Self> {
        // SAFETY: plain constructor.
        let args = cvt_p(unsafe { flux_sys::flux_plugin_arg_create() })?;
        Ok(Self { args })
    }

    /// Parse `text` (a JSON object) into a jansson object.
    pub fn parse(text: &str) -> Result<Self> {
        let me = Self::empty()?;
        let c = cstring(text)?;
        // SAFETY: args is live; c is a valid C string.
        cvt(unsafe {
            flux_sys::flux_plugin_arg_set(
                me.args.as_ptr(),
                flux_sys::FLUX_PLUGIN_ARG_IN as i32,
                c.as_ptr(),
            )
        })
        .map_err(|e| Error::new(e.errno, "expected a JSON object"))?;
        Ok(me)
    }

    /// Copy a borrowed `json_t *` into a new holder.
    ///
    /// # Safety
    /// `obj` must be a valid jansson object pointer for the duration of the call.
    pub unsafe fn from_borrowed(obj: *mut c_void) -> Result<Self> {
        let me = Self::empty()?;
        // SAFETY: "O" takes a new reference to obj, which is valid per the caller.
        cvt(unsafe {
            flux_sys::flux_plugin_arg_pack(
                me.args.as_ptr(),
                flux_sys::FLUX_PLUGIN_ARG_IN as i32,
                c"O".as_ptr(),
                obj,
            )
        })?;
        Ok(me)
    }

    /// The held `json_t *`, borrowed for as long as `self` lives.
    pub fn as_json_ptr(&self) -> Result<*mut c_void> {
        let mut obj: *mut c_void = std::ptr::null_mut();
        // SAFETY: "o" stores a borrowed json_t * into obj, owned by args.
        cvt(unsafe {
            flux_sys::flux_plugin_arg_unpack(
                self.args.as_ptr(),
                flux_sys::FLUX_PLUGIN_ARG_IN as i32,
                c"o".as_ptr(),
                &mut obj as *mut *mut c_void,
            )
        })?;
        Ok(obj)
    }

    /// The object as JSON text.
    pub fn to_string(&self) -> Result<String> {
        let mut s: *mut libc::c_char = std::ptr::null_mut();
        // SAFETY: args is live; s receives a malloc'ed string we free below.
        cvt(unsafe {
            flux_sys::flux_plugin_arg_get(
                self.args.as_ptr(),
                flux_sys::FLUX_PLUGIN_ARG_IN as i32,
                &mut s,
            )
        })?;
        // SAFETY: s is a valid C string from json_dumps.
        let out = unsafe { cstr_to_string(s) }.ok_or_else(|| Error::proto("empty JSON"));
        // SAFETY: s was allocated with malloc by jansson.
        unsafe { libc::free(s.cast()) };
        out
    }
}

impl Drop for JsonObject {
    fn drop(&mut self) {
        // SAFETY: we own args.
        unsafe { flux_sys::flux_plugin_arg_destroy(self.args.as_ptr()) };
    }
}

/// The instance configuration object as a `serde_json::Value`.
pub(crate) fn conf_to_value(conf: *const flux_sys::flux_conf_t) -> Result<serde_json::Value> {
    let mut obj: *mut c_void = std::ptr::null_mut();
    // SAFETY: conf is live (owned by the handle); "o" borrows its root object.
    cvt(unsafe {
        flux_sys::flux_conf_unpack(
            conf,
            std::ptr::null_mut(),
            c"o".as_ptr(),
            &mut obj as *mut *mut c_void,
        )
    })?;
    // SAFETY: obj is borrowed from conf, valid during this call.
    let holder = unsafe { JsonObject::from_borrowed(obj) }?;
    Ok(serde_json::from_str(&holder.to_string()?)?)
}
