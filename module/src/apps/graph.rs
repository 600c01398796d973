//! Fluxion's resource graph, built from the containers' shared R: loaded
//! once the first container's R is read, and again when Fluxion lost it.

use std::rc::Rc;

use flux::Level;
use fluxion::Rv1;
use pancake_core::dispatch::{Capacity, Event};

use crate::{Shared, feed, log};

pub(super) fn init_fluxion(p: &Shared, r: &Rv1) {
    let jgf = match fluxion::rv1_to_jgf(r) {
        Ok(j) => j,
        Err(e) => {
            log(p, Level::Err, &format!("cannot build the graph: {e}"));
            return;
        }
    };
    let cap = Capacity::of(r);
    let r2 = r.clone();
    let graph = r.clone();
    let policy = p.borrow().options.policy.clone();
    let weak = Rc::downgrade(p);
    let res = p.borrow_mut().fx.init(policy.clone(), jgf, move |res| {
        let Some(p) = weak.upgrade() else { return };
        match (res, cap) {
            (Ok(()), Ok(cap)) => {
                p.borrow_mut().fx.set_ready();
                log(
                    &p,
                    Level::Info,
                    &format!(
                        "fluxion: graph loaded ({} nodes x {} cores, {} GPUs per node), policy {policy}",
                        cap.nodes, cap.cores_per_node, cap.gpus_per_node
                    ),
                );
                crate::fluxion_ready(&p, cap, graph);
            }
            (Err(e), _) => {
                // Nothing is lost: jobs wait until Fluxion holds the graph.
                log(&p, Level::Err, &format!("fluxion init failed (retrying in 1 s): {e}"));
                retry_init(&p, r2);
            }
            (_, Err(e)) => log(&p, Level::Err, &format!("graph capacity: {e}")),
        }
    });
    if let Err(e) = res {
        log(p, Level::Err, &format!("fluxion init: {e}"));
    }
}

/// Try `init` again in a second (the service may not be up yet).
fn retry_init(p: &Shared, r: Rv1) {
    crate::after(p, 1.0, move |p| {
        if !p.borrow().fx.ready() {
            init_fluxion(p, &r);
        }
    });
}

/// Load the graph into Fluxion again (the service restarted and lost it),
/// retrying every second; then tell the dispatcher, which restores every
/// live allocation before matching again.
pub(crate) fn reinit_fluxion(p: &Shared) {
    let graph = p.borrow().containers.iter().find_map(|c| c.r.clone());
    let Some(r) = graph else {
        return log(
            p,
            Level::Err,
            "fluxion: no container's R to reload the graph from",
        );
    };
    let jgf = match fluxion::rv1_to_jgf(&r) {
        Ok(j) => j,
        Err(e) => return log(p, Level::Err, &format!("cannot build the graph: {e}")),
    };
    let policy = p.borrow().options.policy.clone();
    let weak = Rc::downgrade(p);
    let res = p.borrow_mut().fx.init(policy, jgf, move |res| {
        let Some(p) = weak.upgrade() else { return };
        match res {
            Ok(()) => feed(&p, Event::FluxionReset),
            Err(e) => {
                log(
                    &p,
                    Level::Err,
                    &format!("fluxion init failed (retrying in 1 s): {e}"),
                );
                crate::after(&p, 1.0, reinit_fluxion);
            }
        }
    });
    if let Err(e) = res {
        log(p, Level::Err, &format!("fluxion init: {e}"));
    }
}
