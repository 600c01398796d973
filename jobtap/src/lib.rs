//! The `pancake-bypass` jobtap plugin.
//!
//! Loaded with `flux jobtap load pancake-bypass.so role=queue` in the queue
//! broker, and by the pancake module with `role=app container=NAME
//! [strict=true]` in each application broker. The plugin must not start
//! threads: the job-manager `dlclose`s it on `flux jobtap remove`.
//!
//! * **queue role**, for jobs with `attributes.system.container`: refuse
//!   unknown containers, guests, and user-set `alloc-bypass`/`exec`
//!   attributes; switch the job to test-exec override mode, so that once
//!   the pancake module (the queue broker's scheduler) allocates it, it runs
//!   as a mirror of its application job. With `local-jobs=refuse` on the
//!   module, refuse jobs without a container, naming the containers.
//! * **app role**: admit only owner jobs carrying a pancake R that lies
//!   inside this broker's resources and overlaps no running pancake job
//!   (defence in depth against a buggy module); in strict mode refuse every
//!   other job; allocate admitted jobs alloc-bypass style.

#![deny(unsafe_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use flux::job::JobId;
use flux::jobtap::{Args, CURRENT_JOB, PluginRef};
use flux::{Level, Pending, Role as MsgRole};
use fluxion::{IdSet, Rv1};
use pancake_core::role::Role;
use serde_json::{Value, json};

flux::jobtap_plugin!(plugin_init);

/// The plugin's name (Flux also derives it from the file name).
pub const NAME: &str = "pancake-bypass";

/// Plugin state (job-manager thread only).
#[derive(Default)]
struct State {
    /// queue: containers the module knows.
    containers: BTreeSet<String>,
    /// queue: jobs without a container are refused (module `local-jobs=refuse`).
    refuse_local: bool,
    /// app: this container's name (for messages) and strict mode.
    container: String,
    strict: bool,
    /// app: this broker's resources.
    resources: Option<Rv1>,
    /// app: R of admitted pancake jobs that are not inactive yet.
    admitted: BTreeMap<JobId, Rv1>,
    /// app: jobs this plugin validated that the job-manager has not
    /// created yet (`job.new`), with when: another validator may still
    /// refuse them, and then nothing tells us; stale ones are dropped.
    unconfirmed: BTreeMap<JobId, std::time::Instant>,
    /// In-flight KVS commits and lookups (destroyed with the plugin).
    commits: Pending,
}

type Shared = Rc<RefCell<State>>;

/// How long a queue job may run at most (the application job's own time
/// limit applies on its broker; the queue job just mirrors it): ten years.
const QUEUE_RUN_DURATION: &str = "3650d";

fn owner_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

fn plugin_init(p: &PluginRef) -> flux::Result<()> {
    let conf = p.conf();
    let role = Role::from_conf(&conf).map_err(|e| flux::Error::inval(format!("{NAME}: {e}")))?;
    p.set_name(NAME)?;
    let st: Shared = Rc::new(RefCell::new(State::default()));
    {
        let s2 = Rc::clone(&st);
        p.add_handler("plugin.query", move |_p, _topic, args| {
            let s = s2.borrow();
            args.set_output(&json!({
                // What this plugin is, whatever its file is called: the
                // module recognises it by this name.
                "name": NAME,
                "role": role.as_str(),
                "version": env!("CARGO_PKG_VERSION"),
                "containers": s.containers,
                "container": s.container,
                "strict": s.strict,
                "admitted": s.admitted.keys().collect::<Vec<_>>(),
            }))
        })?;
    }
    match role {
        Role::Queue => init_queue(p, &st)?,
        Role::App => init_app(p, &st, &conf)?,
    }
    // (Only the app role allocates alloc-bypass style: the queue broker's
    // jobs are allocated by its scheduler, pancake, and freed as usual.)
    if !flux::JOB_MANAGER_FREES_BYPASS_JOBS && role == Role::App {
        free_on_cleanup(p)?;
    }
    p.handle()?.log(
        Level::Info,
        &format!("{NAME}: loaded in {} role", role.as_str()),
    );
    Ok(())
}

/// The container a job targets, from its (redacted) jobspec.
fn container_of(input: &Value) -> Option<&str> {
    input
        .pointer("/jobspec/attributes/system/container")
        .and_then(Value::as_str)
}

fn job_id(input: &Value) -> JobId {
    input
        .get("id")
        .and_then(Value::as_u64)
        .unwrap_or(CURRENT_JOB)
}

/// A container name is used in paths, logs and memo keys: keep it tame.
pub fn valid_container_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with('.')
}

fn init_queue(p: &PluginRef, st: &Shared) -> flux::Result<()> {
    let s = Rc::clone(st);
    p.add_handler("job.validate", move |p, _topic, args| {
        let input = args.input()?;
        let Some(container) = container_of(&input) else {
            let s = s.borrow();
            if s.refuse_local {
                let known: Vec<&str> = s.containers.iter().map(String::as_str).collect();
                return p.reject(
                    args,
                    &format!(
                        "pancake: this queue runs only container jobs: submit with --setattr=container=NAME (containers: {})",
                        known.join(", ")
                    ),
                );
            }
            return Ok(());
        };
        let sys = input.pointer("/jobspec/attributes/system").cloned().unwrap_or(Value::Null);
        {
            let s = s.borrow();
            let known: Vec<&str> = s.containers.iter().map(String::as_str).collect();
            if !valid_container_name(container) {
                return p.reject(
                    args,
                    &format!(
                        "pancake: invalid container name {container:?} (known: {})",
                        known.join(", ")
                    ),
                );
            }
            if s.containers.is_empty() {
                return p.reject(
                    args,
                    "pancake: the pancake module is not loaded on this broker (or knows no containers yet)",
                );
            }
            if !s.containers.contains(container) {
                return p.reject(
                    args,
                    &format!("pancake: unknown container {container:?} (known: {})", known.join(", ")),
                );
            }
        }
        let uid = input.get("userid").and_then(Value::as_u64).unwrap_or(u64::MAX);
        if uid != u64::from(owner_uid()) {
            return p.reject(
                args,
                &format!(
                    "pancake: only the instance owner (uid {}) may submit container jobs: a forwarded job runs as the application broker's owner",
                    owner_uid()
                ),
            );
        }
        for key in pancake_core::dispatch::RESERVED_ATTRIBUTES {
            if sys.get(*key).is_some() {
                return p.reject(
                    args,
                    &format!("pancake: attributes.system.{key} is set by pancake on container jobs; do not set it"),
                );
            }
        }
        // The queue side of a container job is a test-exec job that starts
        // and finishes on pancake's override RPCs. Its run_duration must be
        // long, not 0: after a queue broker restart test-exec reattaches the
        // job with the time left of run_duration, and with 0 it would finish
        // it at once with status 0, whatever the application job does.
        p.jobspec_update(&json!({
            "attributes.system.exec.test": { "override": 1, "run_duration": QUEUE_RUN_DURATION }
        }))?;
        Ok(())
    })?;
    let s = Rc::clone(st);
    p.service_register("containers", MsgRole::Owner, move |_p, h, msg| {
        let req: Value = match msg.request_json() {
            Ok(v) => v,
            Err(e) => return drop(h.respond_error(msg, &e)),
        };
        let names: BTreeSet<String> = req
            .get("names")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let refuse_local = req.get("local").and_then(Value::as_str) == Some("refuse");
        let mut s = s.borrow_mut();
        s.containers = names;
        s.refuse_local = refuse_local;
        drop(h.respond(msg, None));
    })?;
    Ok(())
}

/// In `job.state.sched`, allocate the jobs for which `take_r` yields an R
/// (alloc-bypass style); leave the others to the scheduler.
fn on_sched(
    p: &PluginRef,
    st: &Shared,
    take_r: impl Fn(&mut State, JobId) -> Option<Value> + 'static,
) -> flux::Result<()> {
    let s = Rc::clone(st);
    p.add_handler("job.state.sched", move |p, _topic, args| {
        let id = job_id(&args.input()?);
        let r = take_r(&mut s.borrow_mut(), id);
        match r {
            Some(r) => bypass_alloc(p, args, &s, id, r),
            None => Ok(()),
        }
    })
}

/// Allocate job `id` with `r` without the scheduler, as alloc-bypass does:
/// return R in OUT (the job-manager keeps it as the job's R), commit it to
/// the job's KVS directory (job-exec reads it there), then post `alloc`.
fn bypass_alloc(p: &PluginRef, args: &Args, st: &Shared, id: JobId, r: Value) -> flux::Result<()> {
    let h = p.handle()?;
    let mut txn = flux::kvs::KvsTxn::new()?;
    txn.put(&flux::job::kvs_key(id, "R")?, &r.to_string())?;
    let f = h.kvs_commit(&txn)?;
    let plugin = p.weak()?;
    st.borrow().commits.spawn(f, -1.0, move |f| {
        let res = f.kvs_commit_get();
        plugin.with(|p| {
            let res = res.and_then(|()| p.event_post(id, "alloc", &json!({ "bypass": true })));
            if let Err(e) = res {
                let _ = p.raise_exception(
                    id,
                    "alloc",
                    0,
                    &format!("pancake: failed to commit R: {}", e.message()),
                );
            }
        });
    })?;
    args.set_output(&json!({ "R": r }))
}

/// Version fallback (flux-core < 0.63.0, before flux-core PR #5980): the
/// job-manager does not post `free` for an alloc-bypass job, the plugin
/// that posted its `alloc` must, or the job stays in CLEANUP. Post it when
/// one of the app role's jobs that holds an R enters CLEANUP. Decided from
/// the job alone (not from plugin memory), so jobs allocated before a
/// plugin reload or a job-manager restart are freed too. A job that entered
/// CLEANUP while the plugin was not loaded is freed when the plugin sees it
/// in `job.new` (at plugin load and job-manager restart): see
/// [`free_if_left_in_cleanup`].
fn free_on_cleanup(p: &PluginRef) -> flux::Result<()> {
    p.add_handler("job.state.cleanup", move |p, _topic, args| {
        let input = args.input()?;
        if holds_our_r(&input) {
            p.event_post(job_id(&input), "free", &json!({}))?;
        }
        Ok(())
    })?;
    p.handle()?.log(
        Level::Info,
        &format!(
            "{NAME}: flux-core {} frees no alloc-bypass job by itself (before 0.63.0): \
             this plugin posts free for its jobs",
            flux::FLUX_CORE_BUILD_VERSION
        ),
    );
    Ok(())
}

/// True when `input` is a job carrying a pancake R that holds it.
fn holds_our_r(input: &Value) -> bool {
    input
        .pointer("/jobspec/attributes/system/alloc-bypass/R")
        .is_some()
        && input.get("R").is_some()
}

/// In `job.new` (flux-core < 0.63.0 only): post `free` for a job carrying
/// a pancake R already in CLEANUP, whose CLEANUP callback ran while the
/// plugin was not loaded. A second `free` is harmless there: it only
/// clears the job's has-resources flag again.
fn free_if_left_in_cleanup(p: &PluginRef, input: &Value) -> flux::Result<()> {
    if flux::JOB_MANAGER_FREES_BYPASS_JOBS {
        return Ok(());
    }
    let cleanup = i64::from(flux::job::STATE_CLEANUP);
    if input.get("state").and_then(Value::as_i64) == Some(cleanup) && holds_our_r(input) {
        p.event_post(job_id(input), "free", &json!({}))?;
    }
    Ok(())
}

fn init_app(p: &PluginRef, st: &Shared, conf: &Value) -> flux::Result<()> {
    {
        let mut s = st.borrow_mut();
        s.container = conf
            .get("container")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        s.strict = parse_strict(conf.get("strict"))
            .map_err(|e| flux::Error::inval(format!("{NAME}: {e}")))?;
    }
    // The module sets the mode of an already loaded plugin to its own
    // (a module reload with another `strict`).
    let s = Rc::clone(st);
    p.service_register("set-strict", MsgRole::Owner, move |_p, h, msg| {
        let req: Value = match msg.request_json() {
            Ok(v) => v,
            Err(e) => return drop(h.respond_error(msg, &e)),
        };
        match parse_strict(req.get("strict")) {
            Ok(strict) => {
                let mut st = s.borrow_mut();
                if st.strict != strict {
                    h.log(
                        Level::Info,
                        &format!(
                            "{NAME}: strict mode {} for container {}",
                            if strict { "on" } else { "off" },
                            st.container
                        ),
                    );
                }
                st.strict = strict;
                drop(h.respond_json(msg, &json!({ "strict": strict })));
            }
            Err(e) => drop(h.respond_error(msg, &flux::Error::inval(e))),
        }
    })?;
    // This broker's resources, read once (asynchronously: never block the job-manager).
    let h = p.handle()?;
    let f = h.kvs_lookup("resource.R")?;
    let s = Rc::clone(st);
    st.borrow()
        .commits
        .spawn(f, -1.0, move |f| match f.kvs_lookup_get().map(Rv1::parse) {
            Ok(Ok(r)) => s.borrow_mut().resources = Some(r),
            Ok(Err(e)) => report(f.handle(), &format!("resource.R: {e}")),
            Err(e) => report(f.handle(), &format!("resource.R: {}", e.message())),
        })?;

    let s = Rc::clone(st);
    p.add_handler("job.validate", move |p, _topic, args| {
        let input = args.input()?;
        let r = input
            .pointer("/jobspec/attributes/system/alloc-bypass/R")
            .cloned();
        let uid = input
            .get("userid")
            .and_then(Value::as_u64)
            .unwrap_or(u64::MAX);
        forget_unconfirmed(&mut s.borrow_mut());
        let st = s.borrow();
        let r = match admit_app(&st, uid, owner_uid(), r) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(why) => return p.reject(args, &why),
        };
        drop(st);
        let id = job_id(&input);
        let mut st = s.borrow_mut();
        st.admitted.insert(id, r);
        st.unconfirmed.insert(id, std::time::Instant::now());
        drop(st);
        p.set_flag(CURRENT_JOB, "alloc-bypass")?;
        Ok(())
    })?;
    let s = Rc::clone(st);
    p.add_handler("job.new", move |p, _topic, args| {
        let input = args.input()?;
        s.borrow_mut().unconfirmed.remove(&job_id(&input));
        free_if_left_in_cleanup(p, &input)
    })?;
    // Admitted jobs are allocated with the R they carry.
    on_sched(p, st, |s, id| {
        s.admitted
            .get(&id)
            .and_then(|r| serde_json::to_value(r).ok())
    })?;
    let s = Rc::clone(st);
    p.add_handler("job.state.inactive", move |_p, _topic, args| {
        let input = args.input()?;
        s.borrow_mut().admitted.remove(&job_id(&input));
        Ok(())
    })?;
    Ok(())
}

/// Whether the application role admits a job of user `uid` (the broker's
/// owner is `owner`) carrying alloc-bypass R `r`: `Ok(Some(R))` for a
/// pancake job to allocate with R, `Ok(None)` for a job that is none of
/// pancake's business (no R, strict mode off), or the reason to refuse it.
fn admit_app(st: &State, uid: u64, owner: u32, r: Option<Value>) -> Result<Option<Rv1>, String> {
    let Some(r) = r else {
        if st.strict {
            let name = if st.container.is_empty() {
                "<this container>"
            } else {
                &st.container
            };
            return Err(format!(
                "pancake: this broker runs only jobs forwarded by pancake; submit on the queue broker with --setattr=container={name}"
            ));
        }
        return Ok(None);
    };
    if uid != u64::from(owner) {
        return Err("pancake: only the instance owner may submit a job with a pancake R".into());
    }
    let r = serde_json::from_value::<Rv1>(r).map_err(|e| format!("pancake: invalid R: {e}"))?;
    let Some(mine) = &st.resources else {
        return Err("pancake: this broker's resource.R is not loaded yet; retry".into());
    };
    // Ranks first, as idsets: checking an R rank by rank (below) would
    // expand one naming a million ranks in the job-manager's thread.
    let broker_ranks = mine
        .execution
        .r_lite
        .iter()
        .filter_map(|e| IdSet::parse(&e.rank).ok())
        .fold(IdSet::new(), |all, s| all.union(&s));
    for e in &r.execution.r_lite {
        match IdSet::parse(&e.rank) {
            Ok(ranks) if ranks.is_subset(&broker_ranks) => {}
            Ok(_) => return Err("pancake: R is not inside this broker's resources".into()),
            Err(e) => return Err(format!("pancake: invalid R: {e}")),
        }
    }
    r.validate()
        .map_err(|e| format!("pancake: invalid R: {e}"))?;
    match r.is_subset_of(mine) {
        Ok(true) => {}
        Ok(false) => return Err("pancake: R is not inside this broker's resources".into()),
        Err(e) => return Err(format!("pancake: R: {e}")),
    }
    if let Some((other, _)) = st
        .admitted
        .iter()
        .find(|(_, held)| held.overlaps(&r).unwrap_or(true))
    {
        return Err(format!(
            "pancake: R overlaps running job {}",
            flux::job::id_f58(*other)
        ));
    }
    Ok(Some(r))
}

/// How long a validated job may take to be created before its admission
/// is taken for refused by a later validator.
const UNCONFIRMED_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Drop admissions of jobs that never became jobs (refused after us).
fn forget_unconfirmed(st: &mut State) {
    let stale: Vec<JobId> = st
        .unconfirmed
        .iter()
        .filter(|(_, t)| t.elapsed() > UNCONFIRMED_TTL)
        .map(|(id, _)| *id)
        .collect();
    for id in stale {
        st.unconfirmed.remove(&id);
        st.admitted.remove(&id);
    }
}

/// The `strict` setting as `flux jobtap load` passes it (`strict=true` a
/// boolean or string, `strict=1` a number) or as JSON: true, 1, "true",
/// "1" and "yes" mean strict; false, 0, "false", "0", "no" and no value
/// mean not strict; anything else is an error (a security switch must
/// never read an unknown value as off).
fn parse_strict(v: Option<&Value>) -> Result<bool, String> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(1.0) => Ok(true),
            Some(0.0) => Ok(false),
            _ => Err(format!("strict={n}: expected true or false")),
        },
        Some(Value::String(s)) => match s.as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(format!("strict={s:?}: expected true or false")),
        },
        Some(other) => Err(format!("strict={other}: expected true or false")),
    }
}

fn report(h: Option<&flux::HandleRef>, text: &str) {
    if let Some(h) = h {
        h.log(Level::Err, &format!("{NAME}: {text}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_values() {
        for yes in [
            json!(true),
            json!(1),
            json!(1.0),
            json!("true"),
            json!("1"),
            json!("yes"),
        ] {
            assert_eq!(parse_strict(Some(&yes)), Ok(true), "{yes}");
        }
        for no in [
            json!(false),
            json!(0),
            json!("false"),
            json!("0"),
            json!("no"),
            json!(null),
        ] {
            assert_eq!(parse_strict(Some(&no)), Ok(false), "{no}");
        }
        assert_eq!(parse_strict(None), Ok(false));
        // Never read an unknown value as "not strict".
        for bad in [json!(2), json!("on"), json!("True"), json!([]), json!({})] {
            let e = parse_strict(Some(&bad)).unwrap_err();
            assert!(e.contains("expected true or false"), "{bad}: {e}");
        }
    }

    #[test]
    fn container_names() {
        for ok in ["lammps", "ior", "chatter-bug_2", "a.b"] {
            assert!(valid_container_name(ok), "{ok}");
        }
        for bad in ["", "../etc", "a/b", ".hidden", "sp ace", &"x".repeat(65)] {
            assert!(!valid_container_name(bad), "{bad}");
        }
    }

    /// An R on ranks `ranks` (one rank, or a range), host `n<rank>` each.
    fn r_of(ranks: &str, cores: &str) -> Value {
        let hosts = if ranks.contains('-') {
            format!("n[{ranks}]")
        } else {
            format!("n{ranks}")
        };
        json!({"version": 1, "execution": {"R_lite": [{"rank": ranks, "children": {"core": cores}}],
               "nodelist": [hosts], "starttime": 0.0, "expiration": 0.0}})
    }

    /// The app role's admission, guests included (a flux-core without
    /// flux-security refuses a guest's J before any plugin sees it, so
    /// tier 2 cannot get a guest this far).
    #[test]
    fn app_admission() {
        const OWNER: u32 = 1000;
        let mut st = State {
            container: "ior".into(),
            resources: Some(serde_json::from_value(r_of("0-3", "0-9")).unwrap()),
            ..State::default()
        };
        let admit = |st: &State, uid: u64, r: Option<Value>| admit_app(st, uid, OWNER, r);
        // Not strict: a plain job, anyone's, is not pancake's business.
        assert!(matches!(admit(&st, 42, None), Ok(None)));
        // A guest with an R is refused, strict or not.
        let err = admit(&st, 42, Some(r_of("0", "0"))).unwrap_err();
        assert!(err.contains("only the instance owner"), "{err}");
        st.strict = true;
        let err = admit(&st, 42, Some(r_of("0", "0"))).unwrap_err();
        assert!(err.contains("only the instance owner"), "{err}");
        // Strict: a plain job is refused for anyone, naming the way in.
        for uid in [42, u64::from(OWNER)] {
            let err = admit(&st, uid, None).unwrap_err();
            assert!(err.contains("--setattr=container=ior"), "{err}");
        }
        // The owner's R: inside the broker, not overlapping admitted jobs.
        let ok = admit(&st, u64::from(OWNER), Some(r_of("1", "2-3"))).unwrap();
        assert!(ok.is_some());
        st.admitted.insert(7, ok.unwrap());
        let err = admit(&st, u64::from(OWNER), Some(r_of("1", "3-4"))).unwrap_err();
        assert!(err.contains("overlaps running job"), "{err}");
        assert!(
            admit(&st, u64::from(OWNER), Some(r_of("1", "4-5")))
                .unwrap()
                .is_some()
        );
        let err = admit(&st, u64::from(OWNER), Some(r_of("4", "0"))).unwrap_err();
        assert!(err.contains("not inside"), "{err}");
        // A million ranks is refused from the idsets, before anything
        // expands them rank by rank (most of a second in the job-manager):
        // its nodelist is wrong too, which only the expansion would see.
        let mut huge = r_of("0-1048575", "0");
        huge["execution"]["nodelist"] = json!(["n0"]);
        let err = admit(&st, u64::from(OWNER), Some(huge)).unwrap_err();
        assert!(err.contains("not inside"), "{err}");
        let err = admit(&st, u64::from(OWNER), Some(json!({"version": 9}))).unwrap_err();
        assert!(err.contains("invalid R"), "{err}");
        st.resources = None;
        let err = admit(&st, u64::from(OWNER), Some(r_of("0", "0"))).unwrap_err();
        assert!(err.contains("not loaded yet"), "{err}");
    }
}
