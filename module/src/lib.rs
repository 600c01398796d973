//! The `pancake` broker module.
//!
//! Loaded into the queue broker with `flux module load pancake [options]`
//! (installed as `pancake.so`, so the broker names it `pancake`). This file
//! holds only the entry point and the wiring to Flux; decisions live in
//! plain-Rust modules that are tested without a broker.

#![deny(unsafe_code)]

pub mod worker;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use flux::{HandleRef, Level, Role, Table};
use serde_json::json;

use crate::worker::Worker;
use pancake_core::options::Options;

flux::module_main!(pancake_main);

/// `flux module debug --set` bit that makes the next `pancake.status` panic.
pub const DEBUG_PANIC: i32 = 0x1;

/// Shared state of one loaded instance of the module (reactor thread only).
struct Module {
    options: Options,
    started: Instant,
    worker: Worker,
    requests: u64,
}

fn pancake_main(h: &HandleRef, args: Vec<String>) -> flux::Result<()> {
    let options = Options::parse(&args).map_err(|e| flux::Error::inval(format!("pancake: {e}")))?;
    let worker = Worker::start(h.reactor()?)?;
    let state = Rc::new(RefCell::new(Module {
        options,
        started: Instant::now(),
        worker,
        requests: 0,
    }));

    let s_status = Rc::clone(&state);
    let s_reload = Rc::clone(&state);
    let handlers = Table::new()
        .request("status", Role::Owner, move |h, msg| {
            // Fault injection for tests: `flux module debug --set 1 pancake`
            // makes the next status request panic inside the handler.
            if h.module_debug_test(DEBUG_PANIC, true) {
                panic!("injected by debug flag {DEBUG_PANIC:#x}");
            }
            let mut st = s_status.borrow_mut();
            st.requests += 1;
            let req = msg.to_owned();
            let reply = json!({
                "version": env!("CARGO_PKG_VERSION"),
                "flux-core": flux::core_version(),
                "uptime": st.started.elapsed().as_secs_f64(),
                "options": st.options.to_json(),
                "requests": st.requests,
            });
            // Answer from the reactor after a round trip through the worker
            // thread, so `status` also proves the cross-thread wake path.
            let h2 = h.to_owned();
            let sent = st.worker.run(
                || std::thread::current().name().unwrap_or("?").to_string(),
                move |name: String| {
                    let mut reply = reply;
                    reply["worker"] = json!(name);
                    if let Err(e) = h2.respond_json(&req, &reply) {
                        h2.log(Level::Err, &format!("status: respond: {e}"));
                    }
                },
            );
            if let Err(e) = sent {
                let _ = h.respond_error(msg, &e);
            }
        })
        .request("config-reload", Role::Owner, move |h, msg| {
            match h.module_config_reload(msg) {
                Ok(conf) => {
                    let res = s_reload.borrow_mut().options.apply_config(&conf);
                    match res {
                        Ok(()) => {
                            h.log(Level::Info, "config reloaded");
                            let _ = h.respond(msg, None);
                        }
                        Err(e) => {
                            let _ =
                                h.respond_error(msg, &flux::Error::inval(format!("pancake: {e}")));
                        }
                    }
                }
                Err(e) => {
                    let _ = h.respond_error(msg, &e);
                }
            }
        })
        .register(h, Some("pancake"))?;

    if let Ok(conf) = h.conf_json() {
        state
            .borrow_mut()
            .options
            .apply_config(&conf)
            .map_err(|e| flux::Error::inval(format!("pancake: {e}")))?;
    }
    h.log(
        Level::Info,
        &format!(
            "pancake {} loaded (flux-core {})",
            env!("CARGO_PKG_VERSION"),
            flux::core_version()
        ),
    );
    let run = h.run_reactor();

    // Tear down in dependency order: handlers first (no new work), then the
    // worker (its thread is joined), so nothing outlives the DSO.
    drop(handlers);
    let module = Rc::try_unwrap(state).map(RefCell::into_inner);
    match module {
        Ok(m) => m.worker.shutdown(),
        Err(_) => h.log(Level::Err, "state still shared at unload"),
    }
    h.log(Level::Info, "pancake unloaded");
    run
}
