//! C header: flux/core/job.h — job ids, submit, event watch, cancel, raise.

use crate::error::{Error, Result, cvt, cvt_p};
use crate::ffi::{cstr_ref, cstr_to_string, cstring};
use crate::future::{Future, FutureRef};
use crate::handle::HandleRef;

/// A Flux job id.
pub type JobId = u64;

/// The CLEANUP job state, as jobtap callbacks report it in `state`.
pub const STATE_CLEANUP: i32 = flux_sys::FLUX_JOB_STATE_CLEANUP as i32;

/// Submit flags.
pub mod submit_flags {
    /// Owner only: make the job waitable.
    pub const WAITABLE: i32 = flux_sys::FLUX_JOB_WAITABLE as i32;
    /// Owner only: skip the validator.
    pub const NOVALIDATE: i32 = flux_sys::FLUX_JOB_NOVALIDATE as i32;
}

/// Event-watch flags.
pub mod watch_flags {
    /// Wait for the eventlog to be created.
    pub const WAITCREATE: i32 = flux_sys::FLUX_JOB_EVENT_WATCH_WAITCREATE as i32;
}

/// Encode a job id as F58 (`ƒ...`), the form Flux prints.
pub fn id_f58(id: JobId) -> String {
    encode(id, "f58").unwrap_or_else(|_| id.to_string())
}

/// Encode a job id in `kind` (`dec`, `hex`, `f58`, `f58plain`, `words`, ...).
pub fn encode(id: JobId, kind: &str) -> Result<String> {
    let k = cstring(kind)?;
    let mut buf = [0 as libc::c_char; 128];
    // SAFETY: buf is writable for its length; k is a valid C string.
    cvt(unsafe { flux_sys::flux_job_id_encode(id, k.as_ptr(), buf.as_mut_ptr(), buf.len()) })?;
    // SAFETY: flux_job_id_encode NUL-terminates on success.
    Ok(unsafe { cstr_to_string(buf.as_ptr()) }.unwrap_or_default())
}

/// The KVS key of `key` in job `id`'s directory (e.g. `job.0000.0004.b200.0000.J`).
pub fn kvs_key(id: JobId, key: &str) -> Result<String> {
    let k = cstring(key)?;
    let mut buf = [0 as libc::c_char; 128];
    // SAFETY: buf is writable for its length; k is a valid C string.
    cvt(unsafe { flux_sys::flux_job_kvs_key(buf.as_mut_ptr(), buf.len() as i32, id, k.as_ptr()) })?;
    // SAFETY: NUL-terminated on success.
    Ok(unsafe { cstr_to_string(buf.as_ptr()) }.unwrap_or_default())
}

/// The name of job `id`'s guest KVS namespace (`job-<id>`).
pub fn kvs_namespace(id: JobId) -> Result<String> {
    let mut buf = [0 as libc::c_char; 64];
    // SAFETY: buf is writable for its length.
    cvt(unsafe { flux_sys::flux_job_kvs_namespace(buf.as_mut_ptr(), buf.len() as i32, id) })?;
    // SAFETY: NUL-terminated on success.
    Ok(unsafe { cstr_to_string(buf.as_ptr()) }.unwrap_or_default())
}

/// Parse a job id in any form Flux accepts.
pub fn parse(s: &str) -> Result<JobId> {
    let c = cstring(s)?;
    let mut id: flux_sys::flux_jobid_t = 0;
    // SAFETY: valid C string and out pointer.
    cvt(unsafe { flux_sys::flux_job_id_parse(c.as_ptr(), &mut id) })
        .map_err(|e| Error::new(e.errno, format!("invalid job id {s:?}")))?;
    Ok(id)
}

/// Unwrap signed J (no signature check) to the jobspec text and the signer's uid.
pub fn unwrap_j(j: &str) -> Result<(String, u32)> {
    let c = cstring(j)?;
    let mut uid = 0u32;
    let mut err = flux_sys::flux_error_t::default();
    // SAFETY: valid C string; out pointers valid; result is malloc'ed.
    let p = unsafe { flux_sys::flux_unwrap_string(c.as_ptr(), false, &mut uid, &mut err) };
    if p.is_null() {
        let errno = Error::last_os().errno;
        // SAFETY: err.text is NUL-terminated.
        let text = unsafe { cstr_to_string(err.text.as_ptr()) }.unwrap_or_default();
        return Err(Error::new(errno, format!("unwrapping J: {text}")));
    }
    // SAFETY: p is a valid C string.
    let s = unsafe { cstr_to_string(p) }.unwrap_or_default();
    // SAFETY: p was malloc'ed by flux_unwrap_string.
    unsafe { libc::free(p.cast()) };
    Ok((s, uid))
}

impl HandleRef {
    /// Submit `jobspec` (JSON text); the future yields the id ([`FutureRef::job_submit_get_id`]).
    pub fn job_submit(&self, jobspec: &str, urgency: i32, flags: i32) -> Result<Future> {
        let c = cstring(jobspec)?;
        // SAFETY: live handle, valid C string.
        let f = unsafe { flux_sys::flux_job_submit(self.as_ptr(), c.as_ptr(), urgency, flags) };
        // SAFETY: a new future we own.
        Ok(unsafe { Future::from_raw(cvt_p(f)?) })
    }

    /// Watch eventlog `path` (e.g. `eventlog`) of job `id`: a streaming future,
    /// one event per response, ENODATA at the end.
    pub fn job_event_watch(&self, id: JobId, path: &str, flags: i32) -> Result<Future> {
        let c = cstring(path)?;
        // SAFETY: live handle, valid C string.
        let f = unsafe { flux_sys::flux_job_event_watch(self.as_ptr(), id, c.as_ptr(), flags) };
        // SAFETY: a new future we own.
        Ok(unsafe { Future::from_raw(cvt_p(f)?) })
    }

    /// Cancel job `id` with `reason`.
    pub fn job_cancel(&self, id: JobId, reason: &str) -> Result<Future> {
        let c = cstring(reason)?;
        // SAFETY: live handle, valid C string.
        let f = unsafe { flux_sys::flux_job_cancel(self.as_ptr(), id, c.as_ptr()) };
        // SAFETY: a new future we own.
        Ok(unsafe { Future::from_raw(cvt_p(f)?) })
    }

    /// Raise an exception of `kind` and `severity` on job `id`.
    pub fn job_raise(&self, id: JobId, kind: &str, severity: i32, note: &str) -> Result<Future> {
        let (t, n) = (cstring(kind)?, cstring(note)?);
        // SAFETY: live handle, valid C strings.
        let f = unsafe {
            flux_sys::flux_job_raise(self.as_ptr(), id, t.as_ptr(), severity, n.as_ptr())
        };
        // SAFETY: a new future we own.
        Ok(unsafe { Future::from_raw(cvt_p(f)?) })
    }
}

impl FutureRef {
    /// The job id from a fulfilled submit future.
    pub fn job_submit_get_id(&self) -> Result<JobId> {
        let mut id: flux_sys::flux_jobid_t = 0;
        // SAFETY: self is a submit future; id is a valid out pointer.
        if unsafe { flux_sys::flux_job_submit_get_id(self.as_ptr(), &mut id) } < 0 {
            let mut e = Error::last_os();
            // SAFETY: error string owned by the future or NULL.
            if let Some(s) = unsafe { cstr_ref(flux_sys::flux_future_error_string(self.as_ptr())) }
            {
                e.text = s.to_string();
            }
            return Err(e);
        }
        Ok(id)
    }

    /// The next event of an event-watch future; `Ok(None)` at the end.
    pub fn job_event_watch_get(&self) -> Result<Option<&str>> {
        let mut s = std::ptr::null();
        // SAFETY: self is an event-watch future; s is borrowed from it.
        if unsafe { flux_sys::flux_job_event_watch_get(self.as_ptr(), &mut s) } < 0 {
            let e = Error::last_os();
            return if e.errno == libc::ENODATA {
                Ok(None)
            } else {
                Err(e)
            };
        }
        // SAFETY: as above.
        Ok(unsafe { cstr_ref(s) })
    }

    /// Stop an event watch (the stream then ends with ENODATA).
    pub fn job_event_watch_cancel(&self) -> Result<()> {
        // SAFETY: self is an event-watch future.
        cvt(unsafe { flux_sys::flux_job_event_watch_cancel(self.as_ptr()) }).map(|_| ())
    }
}
