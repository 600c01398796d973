//! C header: flux/core/kvs.h — KVS lookup and commit.

use std::ptr::NonNull;

use crate::error::{Error, Result, cvt, cvt_p};
use crate::ffi::{cstr_ref, cstring};
use crate::future::{Future, FutureRef};
use crate::handle::HandleRef;

impl HandleRef {
    /// Look up `key` in the primary KVS namespace.
    pub fn kvs_lookup(&self, key: &str) -> Result<Future> {
        let k = cstring(key)?;
        let primary = std::ptr::null();
        // SAFETY: live handle; valid C string; NULL namespace = primary.
        let f = unsafe { flux_sys::flux_kvs_lookup(self.as_ptr(), primary, 0, k.as_ptr()) };
        // SAFETY: a new future we own.
        Ok(unsafe { Future::from_raw(cvt_p(f)?) })
    }

    /// Commit `txn` to namespace `ns` (e.g. a job's guest namespace `job-<id>`).
    pub fn kvs_commit_ns(&self, ns: &str, txn: &KvsTxn) -> Result<Future> {
        let n = cstring(ns)?;
        let t = txn.ptr.as_ptr();
        // SAFETY: live handle, namespace string and transaction.
        let f = unsafe { flux_sys::flux_kvs_commit(self.as_ptr(), n.as_ptr(), 0, t) };
        // SAFETY: a new future we own.
        Ok(unsafe { Future::from_raw(cvt_p(f)?) })
    }

    /// Commit `txn` to the primary namespace.
    pub fn kvs_commit(&self, txn: &KvsTxn) -> Result<Future> {
        // SAFETY: live handle and transaction; NULL namespace = primary.
        let f = unsafe {
            flux_sys::flux_kvs_commit(self.as_ptr(), std::ptr::null(), 0, txn.ptr.as_ptr())
        };
        // SAFETY: a new future we own.
        Ok(unsafe { Future::from_raw(cvt_p(f)?) })
    }
}

impl FutureRef {
    /// The value of a fulfilled KVS lookup, as a string.
    pub fn kvs_lookup_get(&self) -> Result<&str> {
        let mut s = std::ptr::null();
        // SAFETY: self is a lookup future; s is borrowed from it.
        if unsafe { flux_sys::flux_kvs_lookup_get(self.as_ptr(), &mut s) } < 0 {
            return Err(Error::last_os());
        }
        // SAFETY: as above.
        unsafe { cstr_ref(s) }.ok_or_else(|| Error::proto("KVS value is not a UTF-8 string"))
    }

    /// Wait for a KVS commit to complete successfully.
    pub fn kvs_commit_get(&self) -> Result<()> {
        // SAFETY: self is a commit future.
        cvt(unsafe { flux_sys::flux_future_get(self.as_ptr(), std::ptr::null_mut()) }).map(|_| ())
    }
}

/// A KVS transaction.
pub struct KvsTxn {
    ptr: NonNull<flux_sys::flux_kvs_txn_t>,
}

impl std::fmt::Debug for KvsTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KvsTxn")
    }
}

impl KvsTxn {
    /// An empty transaction.
    pub fn new() -> Result<Self> {
        // SAFETY: plain constructor; NULL (with errno) is handled by cvt_p.
        let p = unsafe { flux_sys::flux_kvs_txn_create() };
        Ok(Self { ptr: cvt_p(p)? })
    }

    /// Append raw `text` to the value at `key` (an eventlog grows this way).
    pub fn append(&mut self, key: &str, text: &str) -> Result<()> {
        let (k, v) = (cstring(key)?, cstring(text)?);
        // SAFETY: live txn; valid C strings.
        cvt(unsafe {
            flux_sys::flux_kvs_txn_put(
                self.ptr.as_ptr(),
                flux_sys::FLUX_KVS_APPEND as i32,
                k.as_ptr(),
                v.as_ptr(),
            )
        })
        .map(|_| ())
    }

    /// Put `value` (JSON text) at `key`.
    pub fn put(&mut self, key: &str, value: &str) -> Result<()> {
        let (k, v) = (cstring(key)?, cstring(value)?);
        // SAFETY: live txn; valid C strings.
        cvt(unsafe { flux_sys::flux_kvs_txn_put(self.ptr.as_ptr(), 0, k.as_ptr(), v.as_ptr()) })
            .map(|_| ())
    }
}

impl Drop for KvsTxn {
    fn drop(&mut self) {
        // SAFETY: we own the transaction.
        unsafe { flux_sys::flux_kvs_txn_destroy(self.ptr.as_ptr()) };
    }
}
