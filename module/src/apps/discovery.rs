//! Finding the application brokers: the Flux Operator's view directory or
//! the brokers named in the options, and telling the queue plugin which
//! containers exist.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use flux::Level;
use serde_json::json;

use super::{Container, State, connect};
use crate::{Shared, log};

/// Application brokers under an operator view root: (name, uri).
pub(crate) fn scan_view(view: &Path, own_socket: Option<&Path>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(view.join("etc/flux/meta")) else {
        return out;
    };
    for e in dir.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some((index, name)) = file.split_once('-') else {
            continue;
        };
        if index.parse::<u32>().is_err() || name.is_empty() {
            continue;
        }
        let socket = view.join(format!("run/flux/local-{index}"));
        // Skip the queue broker's own entry.
        if let (Some(own), Ok(this)) = (own_socket, std::fs::canonicalize(&socket))
            && this == own
        {
            continue;
        }
        out.push((name.to_string(), format!("local://{}", socket.display())));
    }
    out.sort();
    out
}

fn own_socket(p: &Shared) -> Option<PathBuf> {
    let uri = p.borrow().h.attr_get("local-uri").ok()?;
    std::fs::canonicalize(uri.strip_prefix("local://")?).ok()
}

/// Find application brokers and connect to new ones.
pub(crate) fn discover(p: &Shared) {
    let (view, explicit) = {
        let st = p.borrow();
        (st.options.view.clone(), st.options.brokers.clone())
    };
    let mut found = explicit;
    if let Some(view) = view {
        let own = own_socket(p);
        for (name, uri) in scan_view(Path::new(&view), own.as_deref()) {
            if !found.iter().any(|(n, _)| *n == name) {
                found.push((name, uri));
            }
        }
    }
    let mut added = Vec::new();
    {
        let mut st = p.borrow_mut();
        for (name, uri) in found {
            if !st.containers.by_name.contains_key(&name) {
                st.containers.by_name.insert(
                    name.clone(),
                    Container {
                        name: name.clone(),
                        uri,
                        state: State::Down,
                        reason: None,
                        pending: flux::Pending::new(),
                        handle: None,
                        r: None,
                        strict: None,
                        backoff: 0.1,
                        retry: None,
                        broken: Rc::new(std::cell::Cell::new(false)),
                    },
                );
                added.push(name);
            }
        }
    }
    // Also republished on every rescan: the queue plugin may have been
    // (re)loaded after the module.
    publish_containers(p);
    if !added.is_empty() {
        for name in added {
            log(p, Level::Info, &format!("container {name}: found"));
            connect(p, &name);
        }
    }
}

/// Tell the queue plugin which containers exist (it refuses unknown ones).
pub(crate) fn publish_containers(p: &Shared) {
    let (names, f) = {
        let st = p.borrow();
        let names: Vec<String> = st.containers.by_name.keys().cloned().collect();
        let local = if st.options.refuse_local {
            "refuse"
        } else {
            "run"
        };
        let f = st.h.rpc(
            "job-manager.pancake-bypass.containers",
            Some(&json!({ "names": names, "local": local }).to_string()),
            flux::NODEID_ANY,
            0,
        );
        (names, f)
    };
    let weak = Rc::downgrade(p);
    let pending = p.borrow().pending.clone();
    if let Ok(f) = f {
        let _ = pending.spawn(f, 10.0, move |f| {
            if let (Err(e), Some(p)) = (f.rpc_get(), weak.upgrade()) {
                log(
                    &p,
                    Level::Warning,
                    &format!(
                        "cannot tell pancake-bypass the containers {names:?} (is `flux jobtap load pancake-bypass.so` done?): {e}"
                    ),
                );
            }
        });
    }
}
