//! The flux-core linked at run time is the one the bindings were made from.

#[test]
fn runtime_version_matches_build_version() {
    // SAFETY: returns a pointer to a static NUL-terminated string.
    let runtime = unsafe { std::ffi::CStr::from_ptr(flux_sys::flux_core_version_string()) };
    assert_eq!(runtime.to_str().unwrap(), flux_sys::FLUX_CORE_BUILD_VERSION);
}
