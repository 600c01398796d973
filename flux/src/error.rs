//! Errors: flux-core's `-1`/`NULL` plus `errno`, captured as [`Error`].

use std::fmt;

/// An error from flux-core or from pancake code that must reach C as an errno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The POSIX errno that C callers see.
    pub errno: i32,
    /// Human-readable text; empty means "use strerror(errno)".
    pub text: String,
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with an errno and a message.
    pub fn new(errno: i32, text: impl Into<String>) -> Self {
        Self {
            errno,
            text: text.into(),
        }
    }

    /// An error carrying only an errno.
    pub fn from_errno(errno: i32) -> Self {
        Self {
            errno,
            text: String::new(),
        }
    }

    /// The errno set by the last failed libc/flux call on this thread.
    pub fn last_os() -> Self {
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        Self::from_errno(if errno == 0 { libc::EIO } else { errno })
    }

    /// `EINVAL` with a message (bad input from the caller).
    pub fn inval(text: impl Into<String>) -> Self {
        Self::new(libc::EINVAL, text)
    }

    /// `EPROTO` with a message (a peer sent something unexpected).
    pub fn proto(text: impl Into<String>) -> Self {
        Self::new(libc::EPROTO, text)
    }

    /// The message, or strerror(errno) when there is none.
    pub fn message(&self) -> String {
        if self.text.is_empty() {
            std::io::Error::from_raw_os_error(self.errno).to_string()
        } else {
            self.text.clone()
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for Error {}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::proto(format!("JSON: {e}"))
    }
}

impl From<std::ffi::NulError> for Error {
    fn from(_: std::ffi::NulError) -> Self {
        Error::inval("string contains a NUL byte")
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::new(e.raw_os_error().unwrap_or(libc::EIO), e.to_string())
    }
}

/// Turn a C `int` return (`< 0` = error with errno) into a `Result`.
pub fn cvt(rc: libc::c_int) -> Result<libc::c_int> {
    if rc < 0 {
        Err(Error::last_os())
    } else {
        Ok(rc)
    }
}

/// Turn a C pointer return (`NULL` = error with errno) into a `Result`.
pub fn cvt_p<T>(p: *mut T) -> Result<std::ptr::NonNull<T>> {
    std::ptr::NonNull::new(p).ok_or_else(Error::last_os)
}

/// Set errno for a C caller and return -1 (the Flux convention).
pub fn to_c(e: &Error) -> libc::c_int {
    set_errno(e.errno);
    -1
}

/// Set this thread's errno.
pub fn set_errno(errno: i32) {
    // SAFETY: __errno_location returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() = errno };
}
