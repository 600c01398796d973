//! C header: flux/jobtap.h, flux/core/plugin.h — jobtap plugins.
//!
//! Only a jobtap plugin may use this module (feature `jobtap`): the
//! `flux_jobtap_*` functions exist only inside the job-manager, which
//! resolves them when it loads the plugin.
//!
//! [`jobtap_plugin!`](crate::jobtap_plugin) exports `flux_plugin_init`.
//! Handlers are Rust closures; their state lives in the plugin's aux
//! container, so it is freed when the plugin is unloaded. A plugin must not
//! start threads (the job-manager `dlclose`s it on `flux jobtap remove`).

use std::ffi::c_char;
use std::marker::PhantomData;
use std::rc::Rc;

use crate::error::{Error, Result, cvt, set_errno};
use crate::ffi::{CbCell, cstr_ref, cstr_to_string, cstring, guard};
use crate::handle::HandleRef;
use crate::job::JobId;
use crate::json::JsonObject;
use crate::log::{Level, report_panic, set_panic_handle};
use crate::msg::MsgRef;
use crate::msg_handler::{Handler, Role, handler_trampoline};

/// The job id meaning "the job of the current callback".
pub const CURRENT_JOB: JobId = flux_sys::FLUX_SYS_JOBID_ANY as JobId;

/// A borrowed `flux_plugin_t *`.
pub struct PluginRef {
    _opaque: [u8; 0],
    _marker: PhantomData<*mut ()>,
}

impl std::fmt::Debug for PluginRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PluginRef({:p})", self.as_ptr())
    }
}

/// A borrowed `flux_plugin_arg_t *`: a callback's IN and OUT arguments.
pub struct Args {
    _opaque: [u8; 0],
    _marker: PhantomData<*mut ()>,
}

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Args")
    }
}

impl Args {
    /// Borrow raw args.
    ///
    /// # Safety
    /// `p` must be valid, non-NULL args that outlive `'a`.
    pub unsafe fn from_ptr<'a>(p: *mut flux_sys::flux_plugin_arg_t) -> &'a Args {
        // SAFETY: zero-sized stand-in; validity guaranteed by the caller.
        unsafe { &*p.cast::<Args>() }
    }

    /// The raw pointer.
    pub fn as_ptr(&self) -> *mut flux_sys::flux_plugin_arg_t {
        (self as *const Args).cast_mut().cast()
    }

    /// All IN arguments as one JSON object (whole-JSON access instead of unpack).
    pub fn input(&self) -> Result<serde_json::Value> {
        let mut s: *mut c_char = std::ptr::null_mut();
        // SAFETY: live args; s receives a malloc'ed string freed below.
        cvt(unsafe {
            flux_sys::flux_plugin_arg_get(
                self.as_ptr(),
                flux_sys::FLUX_PLUGIN_ARG_IN as i32,
                &mut s,
            )
        })?;
        // SAFETY: s is a valid C string.
        let text = unsafe { cstr_to_string(s) }.unwrap_or_default();
        // SAFETY: s was malloc'ed by jansson.
        unsafe { libc::free(s.cast()) };
        Ok(serde_json::from_str(&text)?)
    }

    /// Merge `value` (a JSON object) into the OUT arguments.
    pub fn set_output(&self, value: &serde_json::Value) -> Result<()> {
        let c = cstring(&value.to_string())?;
        // SAFETY: live args; valid C string.
        cvt(unsafe {
            flux_sys::flux_plugin_arg_set(
                self.as_ptr(),
                flux_sys::FLUX_PLUGIN_ARG_OUT as i32,
                c.as_ptr(),
            )
        })
        .map(|_| ())
    }
}

type Callback = dyn FnMut(&PluginRef, &str, &Args) -> Result<()>;

/// Everything a plugin registers, owned by the plugin's aux container.
#[derive(Default)]
struct State {
    callbacks: Vec<Rc<CbCell<Callback>>>,
    services: Vec<Rc<CbCell<Handler>>>,
    /// Cleared when the plugin is destroyed, so [`WeakPlugin`]s go dead.
    alive: Rc<std::cell::Cell<bool>>,
}

extern "C" fn state_destroy(arg: *mut libc::c_void) {
    let _ = guard(|| {
        // SAFETY: arg is the Box<State> leaked in PluginRef::state.
        let state = unsafe { Box::from_raw(arg.cast::<State>()) };
        state.alive.set(false);
        drop(state);
    });
}

/// A plugin reference that closures (service handlers, future
/// continuations) can keep: [`WeakPlugin::with`] reaches the plugin only
/// while it is loaded.
#[derive(Clone)]
pub struct WeakPlugin {
    ptr: *mut flux_sys::flux_plugin_t,
    alive: Rc<std::cell::Cell<bool>>,
}

impl std::fmt::Debug for WeakPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WeakPlugin({:p}, alive={})", self.ptr, self.alive.get())
    }
}

impl WeakPlugin {
    /// Run `f` with the plugin, or return `None` once it is unloaded.
    pub fn with<R>(&self, f: impl FnOnce(&PluginRef) -> R) -> Option<R> {
        if !self.alive.get() {
            return None;
        }
        // `alive` is true until the plugin's aux state is destroyed, which
        // happens only when the plugin itself is destroyed; WeakPlugin is
        // !Send, so we are on the plugin's (job-manager) thread.
        // SAFETY: until then ptr is the live plugin.
        Some(f(unsafe { PluginRef::from_ptr(self.ptr) }))
    }
}

extern "C" fn callback_trampoline(
    p: *mut flux_sys::flux_plugin_t,
    topic: *const c_char,
    args: *mut flux_sys::flux_plugin_arg_t,
    arg: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: the job-manager passes a live plugin, topic and args for this call.
    let (pr, a) = unsafe { (PluginRef::from_ptr(p), Args::from_ptr(args)) };
    // SAFETY: as above.
    let topic = unsafe { cstr_ref(topic) }.unwrap_or("");
    let mut rc = 0;
    let r = guard(|| {
        // SAFETY: arg is Rc::as_ptr of a cell owned by the plugin's State.
        unsafe {
            CbCell::<Callback>::invoke(arg as *const CbCell<Callback>, |cb| {
                if let Err(e) = cb(pr, topic, a) {
                    rc = pr.error(a, &e.message());
                }
            })
        }
    })
    .and_then(|inner| inner);
    if let Err(payload) = r {
        report_panic(
            pr.handle().ok(),
            &format!("jobtap callback {topic}"),
            &payload,
        );
        rc = pr.error(a, &format!("internal error in {topic}"));
    }
    rc
}

impl PluginRef {
    /// Borrow a raw plugin.
    ///
    /// # Safety
    /// `p` must be a valid, non-NULL plugin that outlives `'a`.
    pub unsafe fn from_ptr<'a>(p: *mut flux_sys::flux_plugin_t) -> &'a PluginRef {
        // SAFETY: zero-sized stand-in; validity guaranteed by the caller.
        unsafe { &*p.cast::<PluginRef>() }
    }

    /// The raw pointer.
    pub fn as_ptr(&self) -> *mut flux_sys::flux_plugin_t {
        (self as *const PluginRef).cast_mut().cast()
    }

    /// Run `f` with the plugin's Rust state (created on first use).
    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> Result<R> {
        const KEY: &std::ffi::CStr = c"pancake::rust-state";
        // SAFETY: live plugin; the key is a valid C string.
        let mut p = unsafe { flux_sys::flux_plugin_aux_get(self.as_ptr(), KEY.as_ptr()) };
        if p.is_null() {
            let b = Box::into_raw(Box::new(State {
                alive: Rc::new(std::cell::Cell::new(true)),
                ..State::default()
            }));
            // SAFETY: the plugin takes ownership of b and frees it with state_destroy.
            let rc = unsafe {
                flux_sys::flux_plugin_aux_set(
                    self.as_ptr(),
                    KEY.as_ptr(),
                    b.cast(),
                    Some(state_destroy),
                )
            };
            if rc < 0 {
                // SAFETY: not stored, so still ours.
                drop(unsafe { Box::from_raw(b) });
                return Err(Error::last_os());
            }
            p = b.cast();
        }
        // The State is owned by the plugin and used only on its thread; the
        // borrow ends with this call and `f` cannot reach the state again.
        // SAFETY: p is the State stored above, alive while the plugin is.
        let state = unsafe { &mut *p.cast::<State>() };
        Ok(f(state))
    }

    /// A reference to this plugin that closures may keep.
    pub fn weak(&self) -> Result<WeakPlugin> {
        let alive = self.with_state(|s| Rc::clone(&s.alive))?;
        Ok(WeakPlugin {
            ptr: self.as_ptr(),
            alive,
        })
    }

    /// The job-manager's handle (never block on it).
    pub fn handle(&self) -> Result<&HandleRef> {
        // SAFETY: live plugin inside the job-manager.
        let h = unsafe { flux_sys::flux_jobtap_get_flux(self.as_ptr()) };
        if h.is_null() {
            return Err(Error::last_os());
        }
        // SAFETY: the job-manager's handle outlives its plugins.
        Ok(unsafe { HandleRef::from_ptr(h) })
    }

    /// Set the plugin's name (as `flux jobtap list` shows it).
    pub fn set_name(&self, name: &str) -> Result<()> {
        let c = cstring(name)?;
        // SAFETY: live plugin; valid C string.
        cvt(unsafe { flux_sys::flux_plugin_set_name(self.as_ptr(), c.as_ptr()) }).map(|_| ())
    }

    /// The load-time configuration (`flux jobtap load X key=val`) as JSON.
    pub fn conf(&self) -> serde_json::Value {
        // SAFETY: live plugin; the string is owned by it.
        unsafe { cstr_ref(flux_sys::flux_plugin_get_conf(self.as_ptr())) }
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Call `cb` for callback topics matching `topic` (a glob).
    pub fn add_handler(
        &self,
        topic: &str,
        cb: impl FnMut(&PluginRef, &str, &Args) -> Result<()> + 'static,
    ) -> Result<()> {
        let t = cstring(topic)?;
        let cell = CbCell::<Callback>::new(Box::new(cb));
        // SAFETY: live plugin; topic copied; arg points into `cell`, kept by State.
        cvt(unsafe {
            flux_sys::flux_plugin_add_handler(
                self.as_ptr(),
                t.as_ptr(),
                Some(callback_trampoline),
                Rc::as_ptr(&cell) as *mut libc::c_void,
            )
        })?;
        self.with_state(|s| s.callbacks.push(cell))?;
        Ok(())
    }

    /// Register the service method `job-manager.<plugin>.<method>`.
    pub fn service_register(
        &self,
        method: &str,
        role: Role,
        mut cb: impl FnMut(&PluginRef, &HandleRef, &MsgRef) + 'static,
    ) -> Result<()> {
        let m = cstring(method)?;
        let weak = self.weak()?;
        let cell = CbCell::<Handler>::new(Box::new(move |h: &HandleRef, msg: &MsgRef| {
            // The handler is owned by the plugin, so the plugin is alive.
            weak.with(|p| cb(p, h, msg));
        }));
        let mask = match role {
            Role::Owner => 0,
            Role::User => flux_sys::FLUX_ROLE_USER,
        };
        // SAFETY: live plugin; arg points into `cell`, kept by State.
        cvt(unsafe {
            flux_sys::flux_jobtap_service_register_ex(
                self.as_ptr(),
                m.as_ptr(),
                mask,
                Some(handler_trampoline),
                Rc::as_ptr(&cell) as *mut libc::c_void,
            )
        })?;
        self.with_state(|s| s.services.push(cell))?;
        Ok(())
    }

    /// Set the error for a failed callback and return -1 (for the trampoline).
    fn error(&self, args: &Args, text: &str) -> libc::c_int {
        let Ok(c) = cstring(&text.replace('\0', " ")) else {
            return -1;
        };
        // SAFETY: live plugin and args; "%s" with one C string.
        unsafe {
            flux_sys::flux_jobtap_error(self.as_ptr(), args.as_ptr(), c"%s".as_ptr(), c.as_ptr())
        };
        -1
    }

    /// Reject the job of a `job.validate` callback with `reason` (shown to the submitter).
    /// Return the result from the callback.
    pub fn reject(&self, args: &Args, reason: &str) -> Result<()> {
        let c = cstring(&reason.replace('\0', " "))?;
        // SAFETY: live plugin and args; "%s" with one C string.
        unsafe {
            flux_sys::flux_jobtap_reject_job(
                self.as_ptr(),
                args.as_ptr(),
                c"%s".as_ptr(),
                c.as_ptr(),
            )
        };
        Err(Error::new(libc::EINVAL, reason))
    }

    /// Add dependency `desc` to job `id` (NEW or DEPEND only).
    pub fn dependency_add(&self, id: JobId, desc: &str) -> Result<()> {
        let c = cstring(desc)?;
        // SAFETY: live plugin; valid C string.
        cvt(unsafe { flux_sys::flux_jobtap_dependency_add(self.as_ptr(), id, c.as_ptr()) })
            .map(|_| ())
    }

    /// Remove dependency `desc` from job `id`.
    pub fn dependency_remove(&self, id: JobId, desc: &str) -> Result<()> {
        let c = cstring(desc)?;
        // SAFETY: live plugin; valid C string.
        cvt(unsafe { flux_sys::flux_jobtap_dependency_remove(self.as_ptr(), id, c.as_ptr()) })
            .map(|_| ())
    }

    /// Set job flag `flag` (e.g. `alloc-bypass`).
    pub fn set_flag(&self, id: JobId, flag: &str) -> Result<()> {
        let c = cstring(flag)?;
        // SAFETY: live plugin; valid C string.
        cvt(unsafe { flux_sys::flux_jobtap_job_set_flag(self.as_ptr(), id, c.as_ptr()) })
            .map(|_| ())
    }

    /// Raise an exception on job `id`.
    pub fn raise_exception(&self, id: JobId, kind: &str, severity: i32, note: &str) -> Result<()> {
        let (t, n) = (cstring(kind)?, cstring(&note.replace('\0', " "))?);
        // SAFETY: live plugin; valid C strings; "%s" with one argument.
        cvt(unsafe {
            flux_sys::flux_jobtap_raise_exception(
                self.as_ptr(),
                id,
                t.as_ptr(),
                severity,
                c"%s".as_ptr(),
                n.as_ptr(),
            )
        })
        .map(|_| ())
    }

    /// Post event `name` with JSON object `context` to job `id`'s eventlog.
    pub fn event_post(&self, id: JobId, name: &str, context: &serde_json::Value) -> Result<()> {
        let n = cstring(name)?;
        let obj = JsonObject::parse(&context.to_string())?;
        let o = obj.as_json_ptr()?;
        // SAFETY: live plugin; "O" takes a new reference to the live object o.
        cvt(unsafe {
            flux_sys::flux_jobtap_event_post_pack(self.as_ptr(), id, n.as_ptr(), c"O".as_ptr(), o)
        })
        .map(|_| ())
    }

    /// Update the current job's jobspec with `updates` (`{"attributes.system.x": v}`),
    /// from inside that job's callback.
    pub fn jobspec_update(&self, updates: &serde_json::Value) -> Result<()> {
        let obj = JsonObject::parse(&updates.to_string())?;
        let o = obj.as_json_ptr()?;
        // SAFETY: live plugin; "O" takes a new reference to the live object o.
        cvt(unsafe { flux_sys::flux_jobtap_jobspec_update_pack(self.as_ptr(), c"O".as_ptr(), o) })
            .map(|_| ())
    }

    /// Start an epilog action `desc` on the current job (holds it in CLEANUP).
    pub fn epilog_start(&self, desc: &str) -> Result<()> {
        let c = cstring(desc)?;
        // SAFETY: live plugin; valid C string.
        cvt(unsafe { flux_sys::flux_jobtap_epilog_start(self.as_ptr(), c.as_ptr()) }).map(|_| ())
    }

    /// Finish epilog action `desc` on job `id` with `status`.
    pub fn epilog_finish(&self, id: JobId, desc: &str, status: i32) -> Result<()> {
        let c = cstring(desc)?;
        // SAFETY: live plugin; valid C string.
        cvt(unsafe { flux_sys::flux_jobtap_epilog_finish(self.as_ptr(), id, c.as_ptr(), status) })
            .map(|_| ())
    }
}

/// The signature of a plugin's init function.
pub type InitFn = fn(&PluginRef) -> Result<()>;

/// Run `init` as `flux_plugin_init`. Called by [`jobtap_plugin!`](crate::jobtap_plugin).
///
/// # Safety
/// `p` must be the live plugin the job-manager passes.
pub unsafe fn run_init(p: *mut flux_sys::flux_plugin_t, init: InitFn) -> libc::c_int {
    if p.is_null() {
        set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: the job-manager passes a live plugin.
    let pr = unsafe { PluginRef::from_ptr(p) };
    let h = pr.handle().ok();
    if let Some(h) = h {
        set_panic_handle(Some(h));
    }
    match guard(|| init(pr)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            if let Some(h) = h {
                h.log(Level::Err, &format!("jobtap plugin init: {}", e.message()));
            }
            crate::error::to_c(&e)
        }
        Err(payload) => {
            report_panic(h, "flux_plugin_init", &payload);
            set_errno(libc::EINVAL);
            -1
        }
    }
}

/// Export `flux_plugin_init` for a jobtap plugin whose init function is
/// `$init` (`fn(&flux::jobtap::PluginRef) -> flux::Result<()>`).
#[macro_export]
macro_rules! jobtap_plugin {
    ($init:path) => {
        /// Jobtap plugin entry point (generated by `flux::jobtap_plugin!`).
        ///
        /// # Safety
        /// Called by the job-manager with the plugin being loaded.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn flux_plugin_init(
            p: *mut $crate::flux_sys_reexport::flux_plugin_t,
        ) -> ::std::ffi::c_int {
            // SAFETY: the job-manager's argument is forwarded unchanged.
            unsafe { $crate::jobtap::run_init(p, $init) }
        }
    };
}
