//! pancake-fuzz: a deterministic, seedable, structure-aware fuzzer for
//! pancake's pure crates (issue #5). No coverage instrumentation (no nightly
//! toolchain, so no cargo-fuzz): inputs come from random text, from
//! mutations of valid seeds built with the crates' own writers and fixtures,
//! and from a corpus that keeps every input whose outcome (the error text
//! with numbers blanked, or the shape of what was accepted) was new.
//!
//! Every input runs under `catch_unwind` with a per-input time budget;
//! panics, failed invariants and slow inputs are saved under
//! `fuzz/artifacts/`. See `fuzz/README.md`.

mod mutate;
mod rng;
mod seeds;
mod targets;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rng::{Rng, fnv};
use targets::{Ctx, Target};

// ---------------------------------------------------------------------------
// Memory limit: a runaway allocation must not take the machine down. Over
// the limit, the input is saved and the process aborts (an allocator may
// not unwind, so this cannot be a catchable panic).

struct Limited;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
static TRIPPED: AtomicBool = AtomicBool::new(false);

#[global_allocator]
static ALLOC: Limited = Limited;

impl Limited {
    fn admit(size: usize) -> bool {
        if TRIPPED.load(Ordering::Relaxed) {
            return true;
        }
        let live = LIVE.load(Ordering::Relaxed);
        if live.saturating_add(size) <= LIMIT.load(Ordering::Relaxed) {
            return true;
        }
        if TRIPPED.swap(true, Ordering::SeqCst) {
            return true;
        }
        // From here on every allocation passes (the report below allocates).
        out_of_memory(size, live);
        false
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments; the
// only change is that a request over the limit gets a null pointer, which
// the `GlobalAlloc` contract allows.
unsafe impl GlobalAlloc for Limited {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if !Self::admit(l.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: our caller upholds `alloc`'s contract, which we pass on.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            LIVE.fetch_add(l.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if !Self::admit(l.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            LIVE.fetch_add(l.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` was allocated by `System` with layout `l` (through us).
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new > l.size() && !Self::admit(new - l.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: `p` was allocated by `System` with layout `l`; the caller
        // upholds the rest of `realloc`'s contract.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            if new >= l.size() {
                LIVE.fetch_add(new - l.size(), Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(l.size() - new, Ordering::Relaxed);
            }
        }
        q
    }
}

// ---------------------------------------------------------------------------
// The input being run, for the watchdog and the memory limit.

#[derive(Debug, Clone)]
struct Current {
    target: &'static str,
    multi: bool,
    parts: Vec<String>,
    started: Instant,
}

static CURRENT: Mutex<Option<Current>> = Mutex::new(None);
static ARTIFACTS: Mutex<Option<PathBuf>> = Mutex::new(None);

fn artifacts_dir() -> PathBuf {
    ARTIFACTS
        .lock()
        .map(|a| a.clone())
        .unwrap_or_default()
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/artifacts")))
}

fn out_of_memory(size: usize, live: usize) {
    let cur = match CURRENT.try_lock() {
        Ok(g) => g.clone(),
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().clone(),
        Err(_) => None,
    };
    let limit = LIMIT.load(Ordering::Relaxed) >> 20;
    match cur {
        Some(c) => {
            let msg = format!(
                "an allocation of {size} bytes with {} MiB live would exceed the limit of {limit} MiB",
                live >> 20
            );
            let path = save_artifact(c.target, c.multi, &c.parts, "oom", &msg, None, None);
            eprintln!(
                "\npancake-fuzz: {}: {msg}; input saved to {}; aborting",
                c.target,
                path.display()
            );
        }
        None => eprintln!(
            "\npancake-fuzz: an allocation of {size} bytes would exceed the limit of {limit} MiB (outside any input); aborting"
        ),
    }
}

// ---------------------------------------------------------------------------
// Panics: recorded by a quiet hook, caught around every input.

#[derive(Debug, Clone)]
struct PanicRecord {
    message: String,
    location: String,
    backtrace: Option<String>,
}

thread_local! {
    static LAST_PANIC: RefCell<Option<PanicRecord>> = const { RefCell::new(None) };
    /// An input is running (its panics are findings, not fuzzer bugs).
    static IN_RUN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

static BACKTRACED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn install_hook() {
    panic::set_hook(Box::new(|info| {
        let message = if let Some(s) = info.payload().downcast_ref::<&str>() {
            s.to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "(non-string panic payload)".to_string()
        };
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_else(|| "?".into());
        // A backtrace for the first panic at each place only (they are slow).
        let first = BACKTRACED
            .lock()
            .map(|mut s| s.get_or_insert_with(HashSet::new).insert(location.clone()))
            .unwrap_or(false);
        if !IN_RUN.with(|r| r.get()) {
            // A bug of the fuzzer itself: say where.
            eprintln!(
                "pancake-fuzz: internal panic at {location}: {message}\n{}",
                std::backtrace::Backtrace::force_capture()
            );
            return;
        }
        let backtrace = first.then(|| std::backtrace::Backtrace::force_capture().to_string());
        LAST_PANIC.with(|p| {
            *p.borrow_mut() = Some(PanicRecord {
                message,
                location,
                backtrace,
            })
        });
    }));
}

enum Outcome {
    Done(String),
    Panic(PanicRecord),
}

fn run_one(t: &Target, input: &[String], trace: bool) -> (Outcome, Duration) {
    let cur = Current {
        target: t.name,
        multi: t.multi,
        parts: input.to_vec(),
        started: Instant::now(),
    };
    if trace {
        let _ = std::fs::create_dir_all(artifacts_dir());
        let _ = std::fs::write(
            artifacts_dir().join(format!("{}.current", t.name)),
            artifact_text(t.multi, input),
        );
    }
    if let Ok(mut g) = CURRENT.lock() {
        *g = Some(cur);
    }
    let t0 = Instant::now();
    IN_RUN.with(|r| r.set(true));
    let r = panic::catch_unwind(AssertUnwindSafe(|| (t.run)(input)));
    IN_RUN.with(|r| r.set(false));
    let elapsed = t0.elapsed();
    if let Ok(mut g) = CURRENT.lock() {
        *g = None;
    }
    let out = match r {
        Ok(sig) => Outcome::Done(sig),
        Err(_) => Outcome::Panic(LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or(
            PanicRecord {
                message: "(panic without a record)".into(),
                location: "?".into(),
                backtrace: None,
            },
        )),
    };
    (out, elapsed)
}

// ---------------------------------------------------------------------------
// Artifacts

fn artifact_text(multi: bool, parts: &[String]) -> String {
    if multi {
        serde_json::to_string_pretty(parts).unwrap_or_default()
    } else {
        parts.first().cloned().unwrap_or_default()
    }
}

fn save_artifact(
    target: &str,
    multi: bool,
    parts: &[String],
    kind: &str,
    message: &str,
    location: Option<&str>,
    backtrace: Option<&str>,
) -> PathBuf {
    let dir = artifacts_dir();
    let _ = std::fs::create_dir_all(&dir);
    let text = artifact_text(multi, parts);
    let name = format!("{target}-{:016x}", fnv(text.as_bytes()));
    let path = dir.join(format!("{name}.txt"));
    let _ = std::fs::write(&path, &text);
    let mut msg = format!(
        "target: {target}\nkind: {kind}\nwhere: {}\nmessage: {message}\nreplay: cargo run --release -p pancake-fuzz -- --target {target} --replay {}\n",
        location.unwrap_or("-"),
        path.display()
    );
    if let Some(bt) = backtrace {
        msg.push_str("backtrace:\n");
        msg.push_str(bt);
    }
    let _ = std::fs::write(dir.join(format!("{name}.msg")), msg);
    path
}

// ---------------------------------------------------------------------------
// Findings

#[derive(Debug, Clone)]
struct Finding {
    target: &'static str,
    kind: &'static str,
    location: String,
    message: String,
    count: u64,
    input_len: usize,
    artifact: PathBuf,
    elapsed: Duration,
}

/// Removes chunks of each part while the input still panics at `location`.
fn minimize(t: &Target, input: &[String], location: &str, time: Duration) -> Vec<String> {
    let t0 = Instant::now();
    let still = |cand: &[String]| match run_one(t, cand, false).0 {
        Outcome::Panic(p) => p.location == location,
        Outcome::Done(_) => false,
    };
    let mut cur = input.to_vec();
    // Whole parts first (step lists, extra Rs).
    let mut i = cur.len();
    while i > 0 && t0.elapsed() < time {
        i -= 1;
        if cur.len() > 1 {
            let mut cand = cur.clone();
            cand.remove(i);
            if still(&cand) {
                cur = cand;
            }
        }
    }
    for part in 0..cur.len() {
        let mut chunk = (cur[part].len() / 2).max(1);
        loop {
            let mut progress = false;
            let mut i = 0;
            while i < cur[part].len() && t0.elapsed() < time {
                let s = &cur[part];
                let end = (i + chunk).min(s.len());
                if !s.is_char_boundary(i) || !s.is_char_boundary(end) {
                    i += 1;
                    continue;
                }
                let mut cand = cur.clone();
                cand[part] = format!("{}{}", &s[..i], &s[end..]);
                if still(&cand) {
                    cur = cand;
                    progress = true;
                } else {
                    i += chunk;
                }
            }
            if t0.elapsed() >= time || (chunk == 1 && !progress) {
                break;
            }
            if !progress {
                chunk /= 2;
            }
        }
    }
    cur
}

// ---------------------------------------------------------------------------
// The loop

#[derive(Debug, Clone)]
struct Opts {
    seed: u64,
    iterations: Option<u64>,
    time: Option<f64>,
    targets: Vec<String>,
    budget: Duration,
    hard_timeout: Duration,
    mem_limit_mb: usize,
    replay: Option<PathBuf>,
    trace: bool,
    minimize_secs: f64,
    child: bool,
}

#[derive(Debug, Default, Clone)]
struct Stats {
    inputs: u64,
    accepted: u64,
    corpus: usize,
    secs: f64,
    panics: u64,
    slow: u64,
}

const CORPUS_CAP: usize = 3000;
const MAX_INPUT: usize = 8 << 20;

fn fuzz(t: &Target, o: &Opts, findings: &mut Vec<Finding>) -> Stats {
    let dict = mutate::Dict::new(t.tokens);
    let seeds = (t.seeds)();
    let nseeds = seeds.len();
    let mut corpus = seeds.clone();
    let mut sigs: HashSet<String> = HashSet::new();
    let mut rng = Rng::new(o.seed ^ fnv(t.name.as_bytes()));
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut st = Stats::default();
    let t0 = Instant::now();
    let deadline = o.time.map(|s| t0 + Duration::from_secs_f64(s));
    let mut i: u64 = 0;
    loop {
        if o.iterations.is_some_and(|n| i >= n) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let input = if (i as usize) < nseeds {
            seeds[i as usize].clone()
        } else {
            let ctx = Ctx {
                dict: &dict,
                corpus: &corpus,
                nseeds,
            };
            (t.generate)(&mut rng, &ctx)
        };
        i += 1;
        let size: usize = input.iter().map(String::len).sum();
        if size > MAX_INPUT || input.is_empty() {
            continue;
        }
        st.inputs += 1;
        let (outcome, elapsed) = run_one(t, &input, o.trace);
        match outcome {
            Outcome::Done(sig) => {
                if sig.starts_with("ok") {
                    st.accepted += 1;
                }
                if elapsed > o.budget {
                    // Confirm (the machine may be busy): run it again.
                    let (_, again) = run_one(t, &input, false);
                    let e = elapsed.min(again);
                    if e > o.budget {
                        st.slow += 1;
                        record_slow(t, &input, e, &sig, &mut seen, findings);
                    }
                }
                let fresh = sigs.insert(sig.clone());
                if size <= 1 << 20 && (fresh || (sig.starts_with("ok") && rng.one_in(64))) {
                    if corpus.len() < CORPUS_CAP {
                        corpus.push(input);
                    } else {
                        let k = nseeds + rng.below(corpus.len() - nseeds);
                        corpus[k] = input;
                    }
                }
            }
            Outcome::Panic(p) => {
                st.panics += 1;
                record_panic(t, &input, p, elapsed, o, &mut seen, findings);
            }
        }
    }
    st.secs = t0.elapsed().as_secs_f64();
    st.corpus = corpus.len();
    if std::env::var_os("PANCAKE_FUZZ_SIGS").is_some() {
        let mut v: Vec<&String> = sigs.iter().collect();
        v.sort();
        eprintln!("{}: {} outcomes seen:", t.name, v.len());
        for s in v {
            eprintln!("  {s}");
        }
    }
    st
}

fn record_panic(
    t: &Target,
    input: &[String],
    p: PanicRecord,
    elapsed: Duration,
    o: &Opts,
    seen: &mut HashMap<String, usize>,
    findings: &mut Vec<Finding>,
) {
    let size: usize = input.iter().map(String::len).sum();
    if let Some(&k) = seen.get(&p.location) {
        let f = &mut findings[k];
        f.count += 1;
        if size < f.input_len / 2 {
            // Keep a much shorter reproducer too.
            f.input_len = size;
            f.artifact = save_artifact(
                t.name,
                t.multi,
                input,
                f.kind,
                &p.message,
                Some(&p.location),
                None,
            );
        }
        return;
    }
    let kind = if p.message.starts_with("invariant:") {
        "invariant"
    } else {
        "panic"
    };
    eprintln!(
        "  [{}] {kind} at {}: {}",
        t.name,
        p.location,
        p.message.chars().take(300).collect::<String>()
    );
    let small = minimize(
        t,
        input,
        &p.location,
        Duration::from_secs_f64(o.minimize_secs),
    );
    let small_len: usize = small.iter().map(String::len).sum();
    // The reduced input's own message (the reduction may have changed it).
    let p = match run_one(t, &small, false).0 {
        Outcome::Panic(q) if q.location == p.location => PanicRecord {
            backtrace: p.backtrace,
            ..q
        },
        _ => p,
    };
    let artifact = save_artifact(
        t.name,
        t.multi,
        &small,
        kind,
        &p.message,
        Some(&p.location),
        p.backtrace.as_deref(),
    );
    eprintln!(
        "  [{}]   minimized {} -> {} bytes: {}",
        t.name,
        size,
        small_len,
        artifact.display()
    );
    seen.insert(p.location.clone(), findings.len());
    findings.push(Finding {
        target: t.name,
        kind,
        location: p.location,
        message: p.message,
        count: 1,
        input_len: small_len,
        artifact,
        elapsed,
    });
}

fn record_slow(
    t: &Target,
    input: &[String],
    elapsed: Duration,
    sig: &str,
    seen: &mut HashMap<String, usize>,
    findings: &mut Vec<Finding>,
) {
    let key = format!("slow:{}", targets::signature(sig));
    if let Some(&k) = seen.get(&key) {
        let f = &mut findings[k];
        f.count += 1;
        if elapsed > f.elapsed {
            f.elapsed = elapsed;
            f.artifact = save_artifact(
                t.name,
                t.multi,
                input,
                "slow",
                &format!("{} ms ({sig})", elapsed.as_millis()),
                None,
                None,
            );
        }
        return;
    }
    let msg = format!("{} ms ({sig})", elapsed.as_millis());
    let artifact = save_artifact(t.name, t.multi, input, "slow", &msg, None, None);
    eprintln!("  [{}] hang suspect: {msg}: {}", t.name, artifact.display());
    seen.insert(key.clone(), findings.len());
    findings.push(Finding {
        target: t.name,
        kind: "slow",
        location: key,
        message: msg,
        count: 1,
        input_len: input.iter().map(String::len).sum(),
        artifact,
        elapsed,
    });
}

// ---------------------------------------------------------------------------
// CLI

const USAGE: &str = "usage: pancake-fuzz [--seed N] [--iterations N] [--time SECONDS] [--target NAME[,NAME...]]
                    [--budget-ms MS] [--hard-timeout SECONDS] [--mem-limit-mb MB] [--minimize-secs S]
                    [--artifacts DIR] [--trace] [--list]
       pancake-fuzz --target NAME --replay FILE

  --time is per target (default 10 s when neither --time nor --iterations is given);
  with both, whichever comes first. Inputs slower than --budget-ms (default 1000)
  are hang suspects; one running longer than --hard-timeout (default 60) stops the run.
  --trace writes each input to ARTIFACTS/<target>.current before running it (to find
  an input that aborts the process: stack overflow, out of memory).";

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        seed: 1,
        iterations: None,
        time: None,
        targets: Vec::new(),
        budget: Duration::from_millis(1000),
        hard_timeout: Duration::from_secs(60),
        mem_limit_mb: 4096,
        replay: None,
        trace: false,
        minimize_secs: 20.0,
        child: false,
    };
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>, name: &str| -> Result<f64, String> {
        v.ok_or(format!("{name} needs a value"))?
            .parse::<f64>()
            .map_err(|e| format!("{name}: {e}"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seed" => {
                o.seed = it
                    .next()
                    .ok_or("--seed needs a value")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?
            }
            "--iterations" => o.iterations = Some(num(it.next(), &a)? as u64),
            "--time" => o.time = Some(num(it.next(), &a)?),
            "--target" => o.targets.extend(
                it.next()
                    .ok_or("--target needs a value")?
                    .split(',')
                    .map(str::to_string),
            ),
            "--budget-ms" => o.budget = Duration::from_millis(num(it.next(), &a)? as u64),
            "--hard-timeout" => o.hard_timeout = Duration::from_secs_f64(num(it.next(), &a)?),
            "--mem-limit-mb" => o.mem_limit_mb = num(it.next(), &a)? as usize,
            "--minimize-secs" => o.minimize_secs = num(it.next(), &a)?,
            "--artifacts" => {
                let d = PathBuf::from(it.next().ok_or("--artifacts needs a value")?);
                if let Ok(mut g) = ARTIFACTS.lock() {
                    *g = Some(d);
                }
            }
            "--replay" => o.replay = Some(PathBuf::from(it.next().ok_or("--replay needs a file")?)),
            "--trace" => o.trace = true,
            "--child" => o.child = true,
            "--list" => {
                for t in targets::all() {
                    println!("{:<11} {}", t.name, t.about);
                }
                std::process::exit(0);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if o.iterations.is_none() && o.time.is_none() {
        o.time = Some(10.0);
    }
    Ok(o)
}

fn replay(t: &Target, file: &Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let parts: Vec<String> = if t.multi {
        match serde_json::from_str(&text) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{}: not a JSON array of strings: {e}", file.display());
                return ExitCode::from(2);
            }
        }
    } else {
        vec![text]
    };
    // The default hook prints the panic (RUST_BACKTRACE=1 for a backtrace).
    let t0 = Instant::now();
    let sig = (t.run)(&parts);
    println!(
        "{}: no panic, {:.3} s, outcome {sig}",
        t.name,
        t0.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let all = targets::all();
    let chosen: Vec<&Target> = if o.targets.is_empty() {
        all.iter().collect()
    } else {
        let mut v = Vec::new();
        for n in &o.targets {
            match all.iter().find(|t| t.name == n) {
                Some(t) => v.push(t),
                None => {
                    eprintln!(
                        "unknown target {n:?}; targets: {}",
                        all.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
                    );
                    return ExitCode::from(2);
                }
            }
        }
        v
    };
    if let Some(file) = &o.replay {
        let [t] = chosen.as_slice() else {
            eprintln!("--replay needs exactly one --target");
            return ExitCode::from(2);
        };
        return replay(t, file);
    }
    if o.child {
        child_main(&o, &chosen)
    } else {
        supervise(&o, &chosen)
    }
}

fn stats_json(name: &str, st: &Stats) -> String {
    serde_json::json!({"target": name, "inputs": st.inputs, "accepted": st.accepted,
        "corpus": st.corpus, "secs": st.secs, "panics": st.panics, "slow": st.slow})
    .to_string()
}

fn finding_json(f: &Finding) -> String {
    serde_json::json!({"target": f.target, "kind": f.kind, "location": f.location,
        "message": f.message, "count": f.count, "input_len": f.input_len,
        "artifact": f.artifact.display().to_string(), "elapsed_ms": f.elapsed.as_millis() as u64})
    .to_string()
}

/// Fuzz `chosen` in this process; report on stdout as `@@stats`/`@@finding` lines.
fn child_main(o: &Opts, chosen: &[&Target]) -> ExitCode {
    LIMIT.store(o.mem_limit_mb << 20, Ordering::Relaxed);
    install_hook();
    let names: Vec<&'static str> = chosen.iter().map(|t| t.name).collect();
    let opts = o.clone();
    let worker = std::thread::Builder::new()
        .name("fuzz".into())
        .stack_size(8 << 20)
        .spawn(move || {
            let all = targets::all();
            let mut findings = Vec::new();
            let mut rows = Vec::new();
            for name in names {
                let Some(t) = all.iter().find(|t| t.name == name) else {
                    continue;
                };
                let st = fuzz(t, &opts, &mut findings);
                rows.push((t.name, st));
            }
            (rows, findings)
        });
    let worker = match worker {
        Ok(w) => w,
        Err(e) => {
            eprintln!("cannot start the fuzz thread: {e}");
            return ExitCode::from(2);
        }
    };
    // Watchdog: an input that never returns is a hang; save it and stop.
    while !worker.is_finished() {
        std::thread::sleep(Duration::from_millis(200));
        let cur = CURRENT.lock().ok().and_then(|g| g.clone());
        if let Some(c) = cur
            && c.started.elapsed() > o.hard_timeout
        {
            let msg = format!(
                "still running after {} s (hard timeout)",
                o.hard_timeout.as_secs_f64()
            );
            let path = save_artifact(c.target, c.multi, &c.parts, "timeout", &msg, None, None);
            eprintln!(
                "  [{}] HANG: an input is {msg}; saved to {}",
                c.target,
                path.display()
            );
            std::process::exit(3);
        }
    }
    let Ok((rows, findings)) = worker.join() else {
        eprintln!("the fuzz thread itself panicked");
        return ExitCode::from(2);
    };
    for (name, st) in &rows {
        println!("@@stats {}", stats_json(name, st));
    }
    for f in &findings {
        println!("@@finding {}", finding_json(f));
    }
    if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The newest `<target>-*.txt` artifact written since `since`, with its message.
fn newest_artifact(target: &str, since: std::time::SystemTime) -> Option<(PathBuf, String)> {
    let dir = std::fs::read_dir(artifacts_dir()).ok()?;
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for e in dir.flatten() {
        let p = e.path();
        let name = p.file_name()?.to_string_lossy().to_string();
        if !name.starts_with(&format!("{target}-")) || !name.ends_with(".txt") {
            continue;
        }
        let Ok(m) = e.metadata().and_then(|m| m.modified()) else {
            continue;
        };
        if m >= since && best.as_ref().is_none_or(|(t, _)| m > *t) {
            best = Some((m, p));
        }
    }
    let (_, path) = best?;
    let msg = std::fs::read_to_string(path.with_extension("msg"))
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("message: ").map(str::to_string))
        })
        .unwrap_or_default();
    Some((path, msg))
}

fn describe_exit(st: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(2), _) => "the fuzzer itself failed (exit code 2; see its panic above)".into(),
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(6)) => "aborted (SIGABRT: out of memory or stack overflow)".into(),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "ended abnormally".into(),
    }
}

/// Run each target in a child process, so that an abort (out of memory,
/// stack overflow) or a hang is reported and the run goes on.
fn supervise(o: &Opts, chosen: &[&Target]) -> ExitCode {
    println!(
        "pancake-fuzz: seed {}, {} per target, budget {} ms per input, artifacts in {}",
        o.seed,
        match (o.time, o.iterations) {
            (Some(t), Some(n)) => format!("{t} s or {n} inputs"),
            (Some(t), None) => format!("{t} s"),
            (None, Some(n)) => format!("{n} inputs"),
            (None, None) => "-".into(),
        },
        o.budget.as_millis(),
        artifacts_dir().display()
    );
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot find this executable: {e}");
            return ExitCode::from(2);
        }
    };
    let mut rows: Vec<(&str, Stats)> = Vec::new();
    let mut findings: Vec<serde_json::Value> = Vec::new();
    for t in chosen {
        eprintln!("fuzzing {} ...", t.name);
        let mut total = Stats::default();
        let mut remaining = o.time;
        let mut restarts: u64 = 0;
        loop {
            let seed = o
                .seed
                .wrapping_add(restarts.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut cmd = std::process::Command::new(&exe);
            cmd.args(["--child", "--target", t.name])
                .args(["--seed", &seed.to_string()])
                .args(["--budget-ms", &o.budget.as_millis().to_string()])
                .args(["--hard-timeout", &o.hard_timeout.as_secs_f64().to_string()])
                .args(["--mem-limit-mb", &o.mem_limit_mb.to_string()])
                .args(["--minimize-secs", &o.minimize_secs.to_string()])
                .args(["--artifacts", &artifacts_dir().display().to_string()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::inherit());
            if let Some(n) = o.iterations {
                cmd.args(["--iterations", &n.to_string()]);
            }
            if let Some(s) = remaining {
                cmd.args(["--time", &s.to_string()]);
            }
            if o.trace {
                cmd.arg("--trace");
            }
            let started = Instant::now();
            let since = std::time::SystemTime::now();
            let out = match cmd.output() {
                Ok(out) => out,
                Err(e) => {
                    eprintln!("cannot run {}: {e}", exe.display());
                    return ExitCode::from(2);
                }
            };
            let mut got_stats = false;
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(j) = line.strip_prefix("@@stats ")
                    && let Ok(v) = serde_json::from_str::<serde_json::Value>(j)
                {
                    got_stats = true;
                    let n = |k: &str| v[k].as_u64().unwrap_or(0);
                    total.inputs += n("inputs");
                    total.accepted += n("accepted");
                    total.panics += n("panics");
                    total.slow += n("slow");
                    total.corpus = n("corpus") as usize;
                    total.secs += v["secs"].as_f64().unwrap_or(0.0);
                } else if let Some(j) = line.strip_prefix("@@finding ")
                    && let Ok(v) = serde_json::from_str::<serde_json::Value>(j)
                {
                    merge_finding(&mut findings, v);
                }
            }
            if got_stats {
                break;
            }
            // The child died: out of memory, stack overflow, hard timeout.
            let elapsed = started.elapsed().as_secs_f64();
            total.secs += elapsed;
            let how = describe_exit(&out.status);
            let kind = if out.status.code() == Some(3) {
                "timeout"
            } else {
                "abort"
            };
            let (artifact, message) = match newest_artifact(t.name, since) {
                Some((p, m)) => (p.display().to_string(), m),
                None => (
                    "-".to_string(),
                    "input unknown: rerun this target with --trace".to_string(),
                ),
            };
            eprintln!("  [{}] {kind}: {how}: {message}", t.name);
            merge_finding(
                &mut findings,
                serde_json::json!({"target": t.name, "kind": kind, "location": how,
                    "message": message, "count": 1, "artifact": artifact, "input_len": 0}),
            );
            match remaining {
                Some(r) if r - elapsed > 1.0 && restarts < 5 => {
                    remaining = Some(r - elapsed);
                    restarts += 1;
                    eprintln!(
                        "  [{}] restarting with another seed for the remaining {:.0} s",
                        t.name,
                        r - elapsed
                    );
                }
                _ => break,
            }
        }
        rows.push((t.name, total));
    }
    println!(
        "\n{:<11} {:>9} {:>9} {:>9} {:>7} {:>7} {:>13}",
        "target", "inputs", "inputs/s", "accepted", "corpus", "panics", "hang-suspects"
    );
    for (name, st) in &rows {
        println!(
            "{:<11} {:>9} {:>9.0} {:>8.1}% {:>7} {:>7} {:>13}",
            name,
            st.inputs,
            st.inputs as f64 / st.secs.max(1e-9),
            100.0 * st.accepted as f64 / st.inputs.max(1) as f64,
            st.corpus,
            st.panics,
            st.slow
        );
    }
    if findings.is_empty() {
        println!("\nno panic, no failed invariant, no hang suspect, no abort");
        return ExitCode::SUCCESS;
    }
    println!("\nfindings:");
    for f in &findings {
        println!(
            "  {} {} x{} at {}: {}\n    {} ({} bytes)",
            f["target"].as_str().unwrap_or("?"),
            f["kind"].as_str().unwrap_or("?"),
            f["count"].as_u64().unwrap_or(1),
            f["location"].as_str().unwrap_or("?"),
            f["message"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect::<String>(),
            f["artifact"].as_str().unwrap_or("-"),
            f["input_len"].as_u64().unwrap_or(0)
        );
    }
    ExitCode::from(1)
}

/// Adds a finding, or counts it with an earlier one of the same place.
fn merge_finding(findings: &mut Vec<serde_json::Value>, v: serde_json::Value) {
    let key = |f: &serde_json::Value| {
        (
            f["target"].as_str().unwrap_or("").to_string(),
            f["kind"].as_str().unwrap_or("").to_string(),
            f["location"].as_str().unwrap_or("").to_string(),
        )
    };
    match findings.iter_mut().find(|f| key(f) == key(&v)) {
        Some(f) => {
            let c = f["count"].as_u64().unwrap_or(1) + v["count"].as_u64().unwrap_or(1);
            f["count"] = c.into();
        }
        None => findings.push(v),
    }
}
