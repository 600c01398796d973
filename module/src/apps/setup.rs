//! What connecting to an application broker sets up there: its
//! `pancake-bypass` plugin (found or loaded, strict mode set) and its
//! `resource.R`, which must agree with the graph.

use flux::{Handle, Level};
use fluxion::Rv1;
use serde_json::{Value, json};

use super::graph::init_fluxion;
use super::journal::start_journal;
use super::{ask, lost, refuse};
use crate::{Shared, log};

/// Load `pancake-bypass` (role=app) on the broker unless it is there. It is
/// recognised by what it says it is (`plugin.query`), not by its file name:
/// flux-core lists a plugin by its file's name, which may be anything
/// (`libpancake_bypass.so` straight from a build, say).
pub(super) fn ensure_plugin(p: &Shared, name: &str) {
    let list = |h: &Handle| {
        h.rpc(
            "job-manager.jobtap",
            Some(r#"{"query_only":true}"#),
            flux::NODEID_ANY,
            0,
        )
    };
    ask(p, name, list, |p, n, f| {
        let listed = f
            .rpc_get_json::<Value>()
            .ok()
            .and_then(|v| v.get("plugins").cloned())
            .and_then(|v| v.as_array().cloned())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    // flux-core's own builtins start with a dot.
                    .filter(|s| !s.starts_with('.'))
                    .collect::<Vec<String>>()
            });
        match listed {
            Some(candidates) => find_plugin(p, n, candidates),
            None => lost(p, n, "cannot list its jobtap plugins"),
        }
    });
}

/// Ask each of `candidates` what it is, until one is pancake-bypass; load
/// it if none is.
fn find_plugin(p: &Shared, name: &str, mut candidates: Vec<String>) {
    let Some(candidate) = candidates.pop() else {
        return load_plugin(p, name);
    };
    let req = json!({ "name": candidate }).to_string();
    let query =
        move |h: &Handle| h.rpc("job-manager.jobtap-query", Some(&req), flux::NODEID_ANY, 0);
    ask(p, name, query, move |p, n, f| {
        let reply = f.rpc_get_json::<Value>().ok();
        match reply {
            // (Older pancake-bypass builds answered without a name: the
            // role and admitted set are theirs.)
            Some(v)
                if v.get("name").and_then(Value::as_str) == Some("pancake-bypass")
                    || (v.get("name").is_none()
                        && v.get("role").is_some()
                        && v.get("admitted").is_some()) =>
            {
                plugin_found(p, n, &candidate, &v)
            }
            _ => find_plugin(p, n, candidates),
        }
    });
}

/// The plugin is already there (loaded as `file`): it keeps what it
/// admitted; its strict mode is set to the module's.
fn plugin_found(p: &Shared, name: &str, file: &str, reply: &Value) {
    let strict = reply.get("strict").and_then(Value::as_bool);
    log(
        p,
        Level::Debug,
        &format!("container {name}: pancake-bypass is loaded there ({file}, strict={strict:?})"),
    );
    if let Some(c) = p.borrow_mut().containers.by_name.get_mut(name) {
        c.strict = strict;
    }
    let wanted = p.borrow().options.strict;
    if strict == Some(wanted) {
        read_resources(p, name);
    } else {
        set_strict(p, name, true);
    }
}

/// Set pancake-bypass's strict mode on container `name` to the module's
/// option; the container's status then reports the mode the plugin
/// answered. A plugin that cannot change it (an older build) is reported
/// loudly. With `then_resources`, go on connecting afterwards.
pub(crate) fn set_strict(p: &Shared, name: &str, then_resources: bool) {
    let wanted = p.borrow().options.strict;
    let req = json!({ "strict": wanted }).to_string();
    let call = move |h: &Handle| {
        h.rpc(
            "job-manager.pancake-bypass.set-strict",
            Some(&req),
            flux::NODEID_ANY,
            0,
        )
    };
    ask(p, name, call, move |p, n, f| {
        match f.rpc_get_json::<Value>() {
            Ok(v) => {
                let now = v.get("strict").and_then(Value::as_bool);
                if let Some(c) = p.borrow_mut().containers.by_name.get_mut(n) {
                    c.strict = now;
                }
                log(
                    p,
                    Level::Info,
                    &format!("container {n}: pancake-bypass strict mode set to {wanted}"),
                );
            }
            Err(e) => {
                let was = p.borrow().containers.by_name.get(n).and_then(|c| c.strict);
                log(
                    p,
                    Level::Err,
                    &format!(
                        "container {n}: pancake-bypass there runs with strict={} and cannot be set to strict={wanted} ({e}); reload that plugin there",
                        was.map_or("unknown".into(), |s| s.to_string())
                    ),
                );
            }
        }
        if then_resources {
            read_resources(p, n);
        }
    });
}

fn load_plugin(p: &Shared, name: &str) {
    let (plugin, strict) = {
        let st = p.borrow();
        (st.options.plugin.clone(), st.options.strict)
    };
    let req = json!({
        "load": plugin,
        "conf": { "role": "app", "container": name, "strict": strict },
    });
    let load = move |h: &Handle| {
        h.rpc(
            "job-manager.jobtap",
            Some(&req.to_string()),
            flux::NODEID_ANY,
            0,
        )
    };
    ask(p, name, load, move |p, n, f| match f.rpc_get() {
        Ok(_) => {
            if let Some(c) = p.borrow_mut().containers.by_name.get_mut(n) {
                c.strict = Some(strict);
            }
            log(
                p,
                Level::Info,
                &format!("container {n}: loaded {plugin} role=app"),
            );
            read_resources(p, n);
        }
        Err(e) => refuse(p, n, &format!("cannot load {plugin} there: {e}")),
    });
}

fn read_resources(p: &Shared, name: &str) {
    ask(
        p,
        name,
        |h| h.kvs_lookup("resource.R"),
        |p, n, f| {
            let r = f
                .kvs_lookup_get()
                .map_err(|e| e.message())
                .and_then(|s| Rv1::parse(s).map_err(|e| e.to_string()));
            match r {
                Ok(r) => got_resources(p, n, r),
                Err(e) => refuse(p, n, &format!("resource.R: {e}")),
            }
        },
    );
}

/// The graph is the first container's R; every other container must agree.
fn got_resources(p: &Shared, name: &str, r: Rv1) {
    let graph = p
        .borrow()
        .containers
        .iter()
        .find_map(|c| if c.name != name { c.r.clone() } else { None });
    if let Some(g) = &graph {
        let same = match (g.rank_map(), r.rank_map()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if !same {
            refuse(
                p,
                name,
                "its resources disagree with the graph the other containers share",
            );
            return;
        }
    }
    {
        let mut st = p.borrow_mut();
        if let Some(c) = st.containers.by_name.get_mut(name) {
            c.r = Some(r.clone());
        }
    }
    if graph.is_none() && !p.borrow().fx.ready() {
        init_fluxion(p, &r);
    }
    start_journal(p, name);
}
