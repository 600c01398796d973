//! The safe layer without a broker: flux-core's `loop://` connector hands
//! every sent message back to the same handle, so requests reach our own
//! handlers and responses reach our own futures.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use flux::{Handle, Pending, Role, Table, Timers, Watcher, channel};

fn loop_handle() -> Handle {
    Handle::open(Some("loop://"), 0).expect("loop:// connector")
}

#[test]
fn rpc_reaches_a_handler_table_and_the_continuation_runs() {
    let h = loop_handle();
    let _handlers = Table::new()
        .request("echo", Role::Owner, |h, msg| {
            let v: serde_json::Value = msg.request_json().unwrap();
            h.respond_json(msg, &serde_json::json!({ "echo": v["x"] }))
                .unwrap();
        })
        .register(&h, Some("test"))
        .unwrap();
    let got = Rc::new(RefCell::new(None));
    let got2 = Rc::clone(&got);
    let mut f = h
        .rpc("test.echo", Some(r#"{"x":42}"#), flux::NODEID_ANY, 0)
        .unwrap();
    f.then(5.0, move |f| {
        *got2.borrow_mut() = Some(f.rpc_get_json::<serde_json::Value>().unwrap());
        f.handle().unwrap().reactor().unwrap().stop();
    })
    .unwrap();
    h.reactor().unwrap().run().unwrap();
    assert_eq!(got.borrow().as_ref().unwrap()["echo"], 42);
}

#[test]
fn a_panicking_handler_fails_the_request_and_keeps_working() {
    let h = loop_handle();
    let calls = Rc::new(Cell::new(0));
    let c2 = Rc::clone(&calls);
    let _handlers = Table::new()
        .request("maybe", Role::Owner, move |h, msg| {
            c2.set(c2.get() + 1);
            if c2.get() == 1 {
                panic!("first call panics");
            }
            h.respond(msg, Some("{}")).unwrap();
        })
        .register(&h, Some("test"))
        .unwrap();
    let pending = Pending::new();
    let results = Rc::new(RefCell::new(Vec::new()));
    for _ in 0..2 {
        let r = Rc::clone(&results);
        let f = h
            .rpc("test.maybe", Some("{}"), flux::NODEID_ANY, 0)
            .unwrap();
        pending
            .spawn(f, 5.0, move |f| {
                r.borrow_mut()
                    .push(f.rpc_get().map(|_| ()).map_err(|e| (e.errno, e.text)));
                if r.borrow().len() == 2 {
                    f.handle().unwrap().reactor().unwrap().stop();
                }
            })
            .unwrap();
    }
    h.reactor().unwrap().run().unwrap();
    let results = results.borrow();
    assert_eq!(
        results[0],
        Err((libc::EIO, "internal error in test.maybe".to_string()))
    );
    assert_eq!(results[1], Ok(()), "the handler survived its own panic");
    assert_eq!(calls.get(), 2);
    assert!(
        pending.is_empty(),
        "one-shot futures are destroyed after their continuation"
    );
}

#[test]
fn a_panicking_continuation_is_contained() {
    let h = loop_handle();
    let _handlers = Table::new()
        .request("x", Role::Owner, |h, msg| h.respond(msg, None).unwrap())
        .register(&h, Some("test"))
        .unwrap();
    let pending = Pending::new();
    let f = h.rpc("test.x", None, flux::NODEID_ANY, 0).unwrap();
    pending
        .spawn(f, 5.0, |_| panic!("continuation panics"))
        .unwrap();
    let r = h.reactor().unwrap();
    let fired = Rc::new(Cell::new(false));
    let (f2, hr) = (Rc::clone(&fired), h.to_owned());
    let stop = Watcher::timer(r, 0.2, 0.0, move |_w, _| {
        // Reaching this timer proves the reactor kept running after the panic.
        f2.set(true);
        hr.reactor().unwrap().stop();
    })
    .unwrap();
    stop.start();
    r.run().unwrap();
    assert!(fired.get());
    assert!(pending.is_empty());
}

#[test]
fn channel_wakes_the_reactor_from_other_threads() {
    let h = loop_handle();
    let r = h.reactor().unwrap();
    let sum = Rc::new(Cell::new(0u64));
    let count = Rc::new(Cell::new(0u32));
    let (s2, c2) = (Rc::clone(&sum), Rc::clone(&count));
    let hr = h.to_owned();
    let (watcher, tx) = channel::<u64>(r, move |v| {
        s2.set(s2.get() + v);
        c2.set(c2.get() + 1);
        if c2.get() == 400 {
            hr.reactor().unwrap().stop();
        }
    })
    .unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..100u64 {
                    tx.send(t * 1000 + i).unwrap();
                }
            })
        })
        .collect();
    r.run().unwrap();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(count.get(), 400);
    assert_eq!(
        sum.get(),
        (0..4u64).map(|t| t * 100_000 + 4950).sum::<u64>()
    );
    drop(watcher);
    assert!(
        tx.send(1).is_err(),
        "sending after the receiver is gone fails"
    );
}

#[test]
fn open_errors_name_the_uri() {
    let e = Handle::open(Some("local:///nonexistent/pancake/socket"), 0).unwrap_err();
    assert!(e.message().contains("/nonexistent/pancake/socket"), "{e}");
}

#[test]
fn job_ids_round_trip() {
    let id = 1_234_567_890_123u64;
    let f58 = flux::job::id_f58(id);
    assert!(f58.starts_with('ƒ') || f58.starts_with('f'), "{f58}");
    assert_eq!(flux::job::parse(&f58).unwrap(), id);
    assert_eq!(flux::job::parse(&id.to_string()).unwrap(), id);
    assert!(flux::job::parse("not-a-job").is_err());
}

#[test]
fn json_objects_cross_without_jansson() {
    let o = flux::json::JsonObject::parse(r#"{"a":[1,2,{"b":"c"}]}"#).unwrap();
    let back: serde_json::Value = serde_json::from_str(&o.to_string().unwrap()).unwrap();
    assert_eq!(back, serde_json::json!({"a":[1,2,{"b":"c"}]}));
    assert!(
        flux::json::JsonObject::parse("[1]").is_err()
            || flux::json::JsonObject::parse("nope").is_err()
    );
}

// flux_watcher_is_active arrived in flux-core 0.69; older releases have no
// WatcherRef::is_active to test.
#[cfg(have_flux_watcher_is_active)]
#[test]
fn a_started_timer_is_active_until_it_fires() {
    let h = loop_handle();
    let r = h.reactor().unwrap();
    let hr = h.to_owned();
    let w = Watcher::timer(r, 0.05, 0.0, move |_, _| hr.reactor().unwrap().stop()).unwrap();
    assert!(!w.is_active());
    w.start();
    assert!(w.is_active(), "a started, unfired timer is active");
    r.run().unwrap();
    assert!(!w.is_active(), "a fired one-shot timer is not");
}

/// Regression: two timers expiring in the same loop iteration, the first of
/// which arms another timer. Sweeping "inactive" timers at that moment
/// destroyed the second one before libev called it (a queue job then never
/// got its start).
#[test]
fn timers_expiring_together_all_run_when_one_arms_another() {
    let h = loop_handle();
    let r = h.reactor().unwrap();
    let timers = Rc::new(RefCell::new(Timers::new()));
    let ran = Rc::new(RefCell::new(Vec::new()));
    for name in ["first", "second"] {
        let (t, ran2, r2) = (Rc::clone(&timers), Rc::clone(&ran), h.to_owned());
        timers
            .borrow_mut()
            .after(r, 0.01, move || {
                ran2.borrow_mut().push(name);
                if name == "first" {
                    let ran3 = Rc::clone(&ran2);
                    let r3 = r2.to_owned();
                    t.borrow_mut()
                        .after(r2.reactor().unwrap(), 0.02, move || {
                            ran3.borrow_mut().push("third");
                            r3.reactor().unwrap().stop();
                        })
                        .unwrap();
                }
            })
            .unwrap();
    }
    assert_eq!(timers.borrow().len(), 2);
    r.run().unwrap();
    let mut got = ran.borrow().clone();
    got.sort();
    assert_eq!(got, ["first", "second", "third"]);
    assert!(timers.borrow().is_empty());
}
