//! What `flux pancake` prints, computed from the `pancake.status` answer.
//!
//! The command is a thin client: it sends `pancake.status` and hands the
//! JSON to these functions, so everything it shows is tested here without a
//! broker. Three views:
//!
//! * [`status`]: the Fluxion backend and each container's broker;
//! * [`map`] (and [`map_json`]): a node × core map, each core marked with
//!   the letter of the container holding it, the "pancake stack" of the pod;
//! * [`jobs`] (and [`jobs_json`]): the container jobs with their application
//!   and Fluxion ids.
//!
//! Job ids are printed by a function the caller supplies ([`Style::id`]):
//! the command passes flux-core's own F58 encoder (it follows the locale, as
//! `flux jobs` does) while this crate stays free of FFI.
//!
//! A job *holds* resources while it has both a Fluxion allocation and an R;
//! that is exactly what Fluxion counts as busy, so the map shows Fluxion's
//! view. A core claimed by two jobs is marked `!`: it would mean two brokers
//! share a core, the one thing pancake exists to prevent.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use fluxion::{IdSet, Rv1};
use serde::Deserialize;
use serde_json::{Value, json};

/// The status answer could not be understood (or has nothing to show).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShowError(pub String);

impl std::fmt::Display for ShowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ShowError {}

/// How to print.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// ANSI colours (the map's marks, the state column).
    pub color: bool,
    /// How a Flux job id is written (F58 in the command).
    pub id: fn(u64) -> String,
}

impl Style {
    /// No colour, decimal ids (tests, and anything that is not a terminal).
    pub fn plain() -> Style {
        Style {
            color: false,
            id: |id| id.to_string(),
        }
    }
}

/// When to use colour (`--color=WHEN`, as in `flux jobs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorWhen {
    /// On a terminal, unless `NO_COLOR` says otherwise.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl ColorWhen {
    /// Parse `auto`, `always` or `never`.
    pub fn parse(s: &str) -> Option<ColorWhen> {
        match s {
            "auto" => Some(ColorWhen::Auto),
            "always" => Some(ColorWhen::Always),
            "never" => Some(ColorWhen::Never),
            _ => None,
        }
    }

    /// Whether to colour, given whether stdout is a terminal and the value
    /// of `NO_COLOR`. Following no-color.org, a set and non-empty
    /// `NO_COLOR` turns automatic colour off; an explicit `always` wins.
    pub fn resolve(self, stdout_is_tty: bool, no_color: Option<&str>) -> bool {
        match self {
            ColorWhen::Always => true,
            ColorWhen::Never => false,
            ColorWhen::Auto => stdout_is_tty && no_color.is_none_or(str::is_empty),
        }
    }
}

// The parts of `pancake.status` shown here. Every field is optional so an
// older or newer module still gets as much shown as it answers.

#[derive(Debug, Default, Deserialize)]
struct Status {
    #[serde(default)]
    version: Option<String>,
    #[serde(default, rename = "flux-core")]
    flux_core: Option<String>,
    #[serde(default)]
    uptime: Option<f64>,
    #[serde(default)]
    worker: Option<String>,
    #[serde(default)]
    fluxion: FluxionInfo,
    #[serde(default)]
    containers: Vec<ContainerInfo>,
    /// The queue broker itself (jobs without a container run there).
    #[serde(default)]
    local: Option<ContainerInfo>,
    #[serde(default)]
    jobs: Vec<JobInfo>,
    #[serde(default)]
    graph: Option<Rv1>,
    #[serde(default)]
    stats: serde_json::Map<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
struct FluxionInfo {
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    ready: bool,
}

#[derive(Debug, Deserialize)]
struct ContainerInfo {
    name: String,
    #[serde(default)]
    uri: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    strict: bool,
    #[serde(default)]
    waiting: u64,
    #[serde(default)]
    running: u64,
}

/// How `flux pancake` names the queue broker itself, where jobs without a
/// container run (the module reports them with an empty container).
pub const QUEUE_BROKER: &str = "(queue)";

#[derive(Debug, Deserialize)]
struct JobInfo {
    id: u64,
    container: String,
    /// Why it waits (`sched.reason_pending`), while it does.
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    phase: String,
    #[serde(default)]
    fluxion_id: Option<i64>,
    #[serde(default)]
    app_id: Option<u64>,
    #[serde(default, rename = "R")]
    r: Option<Rv1>,
}

impl JobInfo {
    /// Fluxion counts these resources as busy.
    fn holds(&self) -> bool {
        self.fluxion_id.is_some() && self.r.is_some()
    }
}

fn parse(v: &Value) -> Result<Status, ShowError> {
    let mut st = Status::deserialize(v)
        .map_err(|e| ShowError(format!("unexpected pancake.status answer: {e}")))?;
    // Submission order, like `flux jobs` (ids grow with submit time).
    st.jobs.sort_by_key(|j| j.id);
    for j in &mut st.jobs {
        if j.container.is_empty() {
            j.container = QUEUE_BROKER.to_string();
        }
    }
    Ok(st)
}

/// A plain text table: headers in caps, columns padded to their widest
/// cell (by characters: F58 ids start with a two-byte `ƒ`), the last column
/// unpadded so lines carry no trailing blanks.
struct Table {
    head: Vec<(&'static str, bool)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// `head`: (title, right-aligned).
    fn new(head: &[(&'static str, bool)]) -> Table {
        Table {
            head: head.to_vec(),
            rows: Vec::new(),
        }
    }

    fn render(&self, out: &mut String) {
        let n = self.head.len();
        let mut width: Vec<usize> = self.head.iter().map(|(h, _)| h.len()).collect();
        for r in &self.rows {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let titles: Vec<String> = self.head.iter().map(|(h, _)| h.to_string()).collect();
        for row in std::iter::once(&titles).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let (w, right) = (width[i], self.head[i].1);
                if i > 0 {
                    line.push(' ');
                }
                if right {
                    pad(&mut line, cell, w, true);
                } else if i + 1 == n {
                    line.push_str(cell);
                } else {
                    pad(&mut line, cell, w, false);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
}

/// `s` padded with blanks to `width` characters (before it when `right`).
/// Not `format!`'s `{:w$}`: that panics for a width over 65535, which one
/// long container name or a node with that many cores makes.
fn pad(out: &mut String, s: &str, width: usize, right: bool) {
    let fill = width.saturating_sub(s.chars().count());
    if right {
        out.extend(std::iter::repeat_n(' ', fill));
        out.push_str(s);
    } else {
        out.push_str(s);
        out.extend(std::iter::repeat_n(' ', fill));
    }
}

/// Seconds as Flux Standard Duration, the way flux-core prints uptimes.
fn fsd(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else if secs < 3600.0 {
        format!("{:.1}m", secs / 60.0)
    } else if secs < 86400.0 {
        format!("{:.1}h", secs / 3600.0)
    } else {
        format!("{:.1}d", secs / 86400.0)
    }
}

const RESET: &str = "\x1b[0m";

fn paint(out: &mut String, color: bool, code: &str, text: &str) {
    if color {
        let _ = write!(out, "\x1b[{code}m{text}{RESET}");
    } else {
        out.push_str(text);
    }
}

/// `flux pancake status`: the backend, each container's broker, job counts
/// and the dispatcher's counters.
pub fn status(v: &Value, style: &Style) -> Result<String, ShowError> {
    let st = parse(v)?;
    let mut out = String::new();
    let backend = st.fluxion.backend.as_deref().unwrap_or("unknown");
    let ready = if st.fluxion.ready {
        "ready"
    } else {
        // Jobs wait (nothing is lost) until Fluxion holds the graph.
        "not ready: no graph yet, jobs wait"
    };
    let _ = writeln!(out, "fluxion: {backend} ({ready})");
    let mut about = format!("pancake {}", st.version.as_deref().unwrap_or("?"));
    if let Some(v) = &st.flux_core {
        let _ = write!(about, ", flux-core {v}");
    }
    if let Some(u) = st.uptime {
        let _ = write!(about, ", up {}", fsd(u));
    }
    if let Some(w) = &st.worker {
        let _ = write!(about, ", worker {w}");
    }
    let _ = writeln!(out, "{about}");
    if st.containers.is_empty() {
        out.push_str("no containers known yet (check the module's view= or broker= options)\n");
    } else {
        let mut t = Table::new(&[
            ("CONTAINER", false),
            ("STATE", false),
            ("STRICT", false),
            ("WAITING", true),
            ("RUNNING", true),
            ("URI", false),
        ]);
        for c in st.containers.iter().chain(&st.local) {
            t.rows.push(vec![
                c.name.clone(),
                c.state.clone(),
                if c.strict { "yes" } else { "no" }.into(),
                c.waiting.to_string(),
                c.running.to_string(),
                c.uri.clone(),
            ]);
        }
        let mut table = String::new();
        t.render(&mut table);
        if style.color {
            // Colour only the STATE word of each row, after layout, so
            // escapes never upset the column widths.
            for (i, line) in table.lines().enumerate() {
                // (A cell holding a newline adds a line: no container for it.)
                let state = i
                    .checked_sub(1)
                    .and_then(|k| st.containers.iter().chain(&st.local).nth(k))
                    .map(|c| c.state.as_str());
                let code = match state {
                    Some("connected") => "32",
                    Some("lost") | Some("refused") => "31",
                    Some(_) => "33",
                    None => "",
                };
                match state {
                    Some(s) if !code.is_empty() => {
                        let at = line.find(&format!(" {s}")).map(|p| p + 1);
                        match at {
                            Some(p) => {
                                out.push_str(&line[..p]);
                                paint(&mut out, true, code, s);
                                out.push_str(&line[p + s.len()..]);
                            }
                            None => out.push_str(line),
                        }
                    }
                    _ => out.push_str(line),
                }
                out.push('\n');
            }
        } else {
            out.push_str(&table);
        }
        for c in st.containers.iter().chain(&st.local) {
            if let Some(r) = &c.reason {
                let _ = writeln!(out, "{} {}: {r}", c.name, c.state);
            }
        }
    }
    // (Saturating: the counts come from the answer, and a sum that
    // overflows would panic in a debug build.)
    let waiting = st
        .containers
        .iter()
        .chain(&st.local)
        .map(|c| c.waiting)
        .fold(0u64, u64::saturating_add);
    let running = st
        .containers
        .iter()
        .chain(&st.local)
        .map(|c| c.running)
        .fold(0u64, u64::saturating_add);
    let _ = writeln!(out, "jobs: {waiting} waiting, {running} running");
    if !st.stats.is_empty() {
        let counters: Vec<String> = st.stats.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(out, "counters: {}", counters.join(", "));
    }
    Ok(out)
}

/// The mark of the `i`th container in the map: `A`–`Z`, `a`–`z`, `0`–`9`,
/// then `#` for any further ones (they share it).
pub fn mark(i: usize) -> char {
    const MARKS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    MARKS.get(i).map_or('#', |&b| b as char)
}

/// Mark of a free core or GPU.
pub const FREE: char = '.';
/// Mark of a core or GPU held by more than one job (a bug, shown loudly).
pub const OVERLAP: char = '!';

/// Foreground colours for container marks (red is kept for `!`).
const PALETTE: &[&str] = &["32", "34", "33", "35", "36", "92", "94", "93", "95", "96"];

/// One core or GPU: the containers of the jobs holding it (one entry per job).
#[derive(Debug, Clone, Default)]
struct Cell {
    id: u32,
    holders: Vec<usize>,
}

impl Cell {
    fn mark(&self) -> char {
        match self.holders.as_slice() {
            [] => FREE,
            [c] => mark(*c),
            _ => OVERLAP,
        }
    }
}

#[derive(Debug)]
struct Row {
    rank: u32,
    host: Option<String>,
    cores: Vec<Cell>,
    gpus: Vec<Cell>,
}

/// Who holds what, rank by rank: the model behind [`map`] and [`map_json`].
#[derive(Debug)]
struct Layout {
    /// Container names, in mark order.
    containers: Vec<String>,
    /// Holding jobs per container.
    jobs: Vec<u64>,
    rows: Vec<Row>,
    /// Holdings that fall outside the graph (never expected).
    stray: Vec<String>,
}

/// Most cores and GPUs a map draws: a graph claiming more (its idsets may
/// name up to 2^32 ids per rank) is refused instead of expanded cell by cell.
const MAX_CELLS: u64 = 1 << 22;

fn layout(st: &Status, style: &Style) -> Result<Layout, ShowError> {
    let graph = st.graph.as_ref().ok_or_else(|| {
        ShowError("no resource graph yet: no application broker has reported its resources".into())
    })?;
    let ranks = graph
        .rank_map()
        .map_err(|e| ShowError(format!("the graph: {e}")))?;
    let ncells = ranks
        .values()
        .map(|r| r.cores.len() + r.gpus.len())
        .fold(0u64, u64::saturating_add);
    if ncells > MAX_CELLS {
        return Err(ShowError(format!(
            "the graph has {ncells} cores and GPUs, more than a map can draw ({MAX_CELLS})"
        )));
    }
    // Marks follow the status's container order; a container named only by
    // a job (it left the view) still gets one.
    let mut containers: Vec<String> = st.containers.iter().map(|c| c.name.clone()).collect();
    for j in &st.jobs {
        if !containers.contains(&j.container) {
            containers.push(j.container.clone());
        }
    }
    let cells = |ids: &IdSet| {
        ids.iter()
            .map(|id| Cell {
                id,
                holders: Vec::new(),
            })
            .collect::<Vec<_>>()
    };
    let mut rows: Vec<Row> = ranks
        .iter()
        .map(|(&rank, res)| Row {
            rank,
            host: res.hostname.clone(),
            cores: cells(&res.cores),
            gpus: cells(&res.gpus),
        })
        .collect();
    let mut jobs = vec![0u64; containers.len()];
    let mut stray = Vec::new();
    for j in st.jobs.iter().filter(|j| j.holds()) {
        let Some(c) = containers.iter().position(|n| *n == j.container) else {
            continue;
        };
        jobs[c] += 1;
        let Some(r) = &j.r else { continue };
        let held = r
            .rank_map()
            .map_err(|e| ShowError(format!("R of job {}: {e}", (style.id)(j.id))))?;
        for (rank, res) in held {
            let row = rows.iter_mut().find(|r| r.rank == rank);
            let mut outside = Vec::new();
            for (kind, ids, row_cells) in [
                ("cores", &res.cores, row.as_ref().map(|r| &r.cores)),
                ("gpus", &res.gpus, row.as_ref().map(|r| &r.gpus)),
            ] {
                let known: IdSet = row_cells.into_iter().flatten().map(|c| c.id).collect();
                let missing = ids.difference(&known);
                if !missing.is_empty() {
                    outside.push(format!("{kind} {missing}"));
                }
            }
            if let Some(row) = row {
                for (ids, row_cells) in [(&res.cores, &mut row.cores), (&res.gpus, &mut row.gpus)] {
                    for cell in row_cells.iter_mut().filter(|c| ids.contains(c.id)) {
                        cell.holders.push(c);
                    }
                }
            }
            if !outside.is_empty() {
                stray.push(format!(
                    "job {} ({}) holds rank {rank} {}, not in the graph",
                    (style.id)(j.id),
                    j.container,
                    outside.join(" and ")
                ));
            }
        }
    }
    Ok(Layout {
        containers,
        jobs,
        rows,
        stray,
    })
}

/// The marks of one rank's cells, a space every ten for counting by eye.
fn marks(cells: &[Cell], color: bool) -> String {
    let mut out = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 && i % 10 == 0 {
            out.push(' ');
        }
        let m = cell.mark();
        let code = match cell.holders.as_slice() {
            [] => "2",
            [c] => PALETTE[c % PALETTE.len()],
            _ => "1;41",
        };
        paint(&mut out, color, code, &m.to_string());
    }
    out
}

fn cores(r: &Row) -> &[Cell] {
    &r.cores
}

fn gpus(r: &Row) -> &[Cell] {
    &r.gpus
}

/// Counts for the legend: cells of `pick` held by container `c` (or free).
fn count(l: &Layout, pick: fn(&Row) -> &[Cell], holder: Option<usize>) -> usize {
    l.rows
        .iter()
        .flat_map(|r| pick(r).iter())
        .filter(|cell| match holder {
            Some(c) => cell.holders.contains(&c),
            None => cell.holders.is_empty(),
        })
        .count()
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `flux pancake map`: one row per node (rank and host name), one mark per
/// core in core-id order — the holding container's letter, `.` when free,
/// `!` when two jobs hold it — then the GPUs the same way when the graph has
/// any, and a legend naming every container.
pub fn map(v: &Value, style: &Style) -> Result<String, ShowError> {
    let st = parse(v)?;
    let l = layout(&st, style)?;
    let has_gpus = l.rows.iter().any(|r| !r.gpus.is_empty());
    let rank_w = l
        .rows
        .iter()
        .map(|r| r.rank.to_string().len())
        .max()
        .unwrap_or(0)
        .max("RANK".len());
    let host_w = l
        .rows
        .iter()
        .map(|r| r.host.as_deref().unwrap_or("-").chars().count())
        .max()
        .unwrap_or(0)
        .max("HOSTNAME".len());
    let core_w = l
        .rows
        .iter()
        .map(|r| marks(&r.cores, false).chars().count())
        .max()
        .unwrap_or(0)
        .max("CORES".len());
    let mut out = String::new();
    pad(&mut out, "RANK", rank_w, true);
    out.push(' ');
    pad(&mut out, "HOSTNAME", host_w, false);
    out.push(' ');
    if has_gpus {
        pad(&mut out, "CORES", core_w, false);
        out.push_str(" GPUS\n");
    } else {
        let _ = writeln!(out, "CORES");
    }
    for r in &l.rows {
        let host = r.host.as_deref().unwrap_or("-");
        pad(&mut out, &r.rank.to_string(), rank_w, true);
        out.push(' ');
        pad(&mut out, host, host_w, false);
        out.push(' ');
        out.push_str(&marks(&r.cores, style.color));
        if has_gpus {
            // Pad by the uncoloured width: escapes take no columns.
            let pad = core_w - marks(&r.cores, false).chars().count();
            out.push_str(&" ".repeat(pad + 1));
            out.push_str(&marks(&r.gpus, style.color));
        }
        out.push('\n');
    }
    out.push('\n');
    let name_w = l
        .containers
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max("free".len());
    let what = |holder: Option<usize>| {
        let mut s = plural(count(&l, cores, holder), "core", "cores");
        if has_gpus {
            let _ = write!(s, ", {}", plural(count(&l, gpus, holder), "GPU", "GPUs"));
        }
        s
    };
    for (i, name) in l.containers.iter().enumerate() {
        paint(
            &mut out,
            style.color,
            PALETTE[i % PALETTE.len()],
            &mark(i).to_string(),
        );
        out.push(' ');
        pad(&mut out, name, name_w, false);
        let _ = writeln!(
            out,
            " {}, {}",
            what(Some(i)),
            plural(l.jobs[i] as usize, "job", "jobs")
        );
    }
    paint(&mut out, style.color, "2", &FREE.to_string());
    out.push(' ');
    pad(&mut out, "free", name_w, false);
    let _ = writeln!(out, " {}", what(None));
    let overlap = |pick: fn(&Row) -> &[Cell]| {
        l.rows
            .iter()
            .flat_map(|r| pick(r).iter())
            .filter(|c| c.holders.len() > 1)
            .count()
    };
    let (oc, og) = (overlap(cores), overlap(gpus));
    if oc + og > 0 {
        paint(&mut out, style.color, "1;41", &OVERLAP.to_string());
        let mut s = plural(oc, "core", "cores");
        if has_gpus {
            let _ = write!(s, ", {}", plural(og, "GPU", "GPUs"));
        }
        let _ = writeln!(out, " {s} held by more than one job");
    }
    for s in &l.stray {
        let _ = writeln!(out, "warning: {s}");
    }
    Ok(out)
}

/// `flux pancake map --json`: per rank, its cores and GPUs as idsets, which
/// are free, which each container holds, and which more than one job holds.
pub fn map_json(v: &Value) -> Result<Value, ShowError> {
    let st = parse(v)?;
    let l = layout(&st, &Style::plain())?;
    let part = |cells: &[Cell]| {
        let all: IdSet = cells.iter().map(|c| c.id).collect();
        let free: IdSet = cells
            .iter()
            .filter(|c| c.holders.is_empty())
            .map(|c| c.id)
            .collect();
        let overlap: IdSet = cells
            .iter()
            .filter(|c| c.holders.len() > 1)
            .map(|c| c.id)
            .collect();
        let mut held: BTreeMap<&str, IdSet> = BTreeMap::new();
        for c in cells {
            for &h in &c.holders {
                held.entry(l.containers[h].as_str())
                    .or_default()
                    .insert(c.id);
            }
        }
        let held: serde_json::Map<String, Value> = held
            .into_iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_string())))
            .collect();
        json!({
            "all": all.to_string(),
            "free": free.to_string(),
            "held": held,
            "overlap": overlap.to_string(),
        })
    };
    let ranks: Vec<Value> = l
        .rows
        .iter()
        .map(|r| {
            json!({
                "rank": r.rank,
                "hostname": r.host,
                "cores": part(&r.cores),
                "gpus": part(&r.gpus),
            })
        })
        .collect();
    let containers: Vec<Value> = l
        .containers
        .iter()
        .enumerate()
        .map(|(i, n)| json!({ "mark": mark(i).to_string(), "name": n, "jobs": l.jobs[i] }))
        .collect();
    Ok(json!({ "containers": containers, "ranks": ranks, "warnings": l.stray }))
}

/// `flux pancake jobs`: one line per job pancake schedules (container jobs,
/// and jobs running on the queue broker itself), in submission order, with
/// why it waits if it does.
pub fn jobs(v: &Value, style: &Style) -> Result<String, ShowError> {
    let st = parse(v)?;
    let mut t = Table::new(&[
        ("JOBID", true),
        ("CONTAINER", false),
        ("APPID", true),
        ("FLUXID", true),
        ("STATE", false),
        ("NCORES", true),
        ("NODELIST", false),
        ("REASON", false),
    ]);
    let dash = || "-".to_string();
    for j in &st.jobs {
        let totals = j.r.as_ref().and_then(|r| r.totals().ok());
        t.rows.push(vec![
            (style.id)(j.id),
            j.container.clone(),
            j.app_id.map_or_else(dash, style.id),
            j.fluxion_id.map_or_else(dash, |f| f.to_string()),
            j.phase.to_uppercase(),
            totals.map_or_else(dash, |t| t.cores.to_string()),
            j.r.as_ref()
                .map(|r| r.execution.nodelist.join(","))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(dash),
            j.reason.clone().unwrap_or_default(),
        ]);
    }
    let mut out = String::new();
    t.render(&mut out);
    Ok(out)
}

/// `flux pancake jobs --json`: `{"jobs": [...]}`, each entry exactly as
/// `pancake.status` reports it, in submission order.
pub fn jobs_json(v: &Value) -> Result<Value, ShowError> {
    let mut jobs = match v.get("jobs") {
        Some(Value::Array(a)) => a.clone(),
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err(ShowError("unexpected pancake.status answer: jobs".into())),
    };
    jobs.sort_by_key(|j| j.get("id").and_then(Value::as_u64).unwrap_or(u64::MAX));
    Ok(json!({ "jobs": jobs }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Rv1 value with `ranks` → (cores, gpus) idsets and host names.
    fn r(ranks: &[(u32, &str, &str)], hosts: Option<&str>) -> Value {
        let lite: Vec<Value> = ranks
            .iter()
            .map(|(rank, cores, gpus)| {
                let mut children = json!({ "core": cores });
                if !gpus.is_empty() {
                    children["gpu"] = json!(gpus);
                }
                json!({ "rank": rank.to_string(), "children": children })
            })
            .collect();
        let mut e = json!({ "R_lite": lite, "starttime": 0.0, "expiration": 0.0 });
        if let Some(h) = hosts {
            e["nodelist"] = json!([h]);
        }
        json!({ "version": 1, "execution": e })
    }

    fn graph(nodes: u32, cores: u32) -> Value {
        let all = format!("0-{}", cores - 1);
        let ranks: Vec<(u32, &str, &str)> = (0..nodes).map(|n| (n, all.as_str(), "")).collect();
        r(&ranks, Some(&format!("node-[0-{}]", nodes - 1)))
    }

    fn container(name: &str, state: &str) -> Value {
        json!({ "name": name, "uri": format!("local:///tmp/{name}"), "state": state,
                "reason": null, "strict": false, "waiting": 0, "running": 0 })
    }

    fn job(
        id: u64,
        container: &str,
        phase: &str,
        fid: Option<i64>,
        app: Option<u64>,
        r: Option<Value>,
    ) -> Value {
        json!({ "id": id, "container": container, "phase": phase, "fluxion_id": fid,
                "app_id": app, "R": r, "progress": {} })
    }

    fn status_with(jobs: Vec<Value>, g: Value) -> Value {
        json!({
            "version": "0.1.0", "flux-core": "0.88.0", "uptime": 75.0, "worker": "pancake-worker",
            "fluxion": { "backend": "embedded", "ready": true },
            "containers": [container("lammps", "connected"), container("ior", "connected"),
                           container("chatterbug", "lost")],
            "jobs": jobs, "graph": g,
            "stats": { "matches": 4, "granted": 3, "freed": 1, "forwarded": 3 },
        })
    }

    /// Parse the map back: (rank → marks without spaces), mark → container.
    fn parse_map(text: &str) -> (BTreeMap<u32, String>, BTreeMap<char, String>) {
        let mut rows = BTreeMap::new();
        let mut legend = BTreeMap::new();
        let mut lines = text.lines();
        assert!(lines.next().unwrap().contains("CORES"));
        for line in lines.by_ref() {
            if line.is_empty() {
                break;
            }
            let mut w = line.split_whitespace();
            let rank: u32 = w.next().unwrap().parse().unwrap();
            let _host = w.next().unwrap();
            rows.insert(rank, w.collect::<String>());
        }
        for line in lines {
            let mut w = line.split_whitespace();
            let m = w.next().unwrap();
            if m.chars().count() == 1 {
                legend.insert(m.chars().next().unwrap(), w.next().unwrap().to_string());
            }
        }
        (rows, legend)
    }

    #[test]
    fn map_marks_exactly_the_held_cores() {
        let jobs = vec![
            // lammps: rank 0 cores 0-3 and rank 1 cores 0-3.
            job(
                10,
                "lammps",
                "running",
                Some(1),
                Some(100),
                Some(r(&[(0, "0-3", ""), (1, "0-3", "")], None)),
            ),
            // ior: rank 1 core 9.
            job(
                11,
                "ior",
                "submitted",
                Some(2),
                Some(200),
                Some(r(&[(1, "9", "")], None)),
            ),
            // Waiting, and one whose allocation was already freed: hold nothing.
            job(12, "ior", "waiting", None, None, None),
            job(
                13,
                "chatterbug",
                "draining",
                None,
                Some(300),
                Some(r(&[(0, "8", "")], None)),
            ),
        ];
        let v = status_with(jobs, graph(2, 12));
        let text = map(&v, &Style::plain()).unwrap();
        let (rows, legend) = parse_map(&text);
        let by_name: BTreeMap<&str, char> = legend.iter().map(|(m, n)| (n.as_str(), *m)).collect();
        // Every container is in the legend with a distinct mark, and free too.
        assert_eq!(legend.len(), 4, "{text}");
        for n in ["lammps", "ior", "chatterbug", "free"] {
            assert!(
                by_name.contains_key(n),
                "{n} missing from the legend:\n{text}"
            );
        }
        assert_eq!(by_name["free"], FREE);
        let (l, i) = (by_name["lammps"], by_name["ior"]);
        assert_ne!(l, i);
        let expect = |held: &[(u32, char)]| -> String {
            (0..12)
                .map(|c| held.iter().find(|(k, _)| *k == c).map_or(FREE, |(_, m)| *m))
                .collect()
        };
        let lam: Vec<(u32, char)> = (0..4).map(|c| (c, l)).collect();
        assert_eq!(rows[&0], expect(&lam), "{text}");
        let mut r1 = lam.clone();
        r1.push((9, i));
        assert_eq!(rows[&1], expect(&r1), "{text}");
        assert_eq!(rows.len(), 2);
        assert!(!text.contains(OVERLAP), "{text}");
        // The legend counts what each holds.
        let line = |n: &str| {
            let words: Vec<&str> = text
                .lines()
                .find(|x| x.split_whitespace().nth(1) == Some(n))
                .unwrap()
                .split_whitespace()
                .collect();
            words.join(" ")
        };
        assert_eq!(
            line("lammps"),
            format!("{l} lammps 8 cores, 1 job"),
            "{text}"
        );
        assert_eq!(line("ior"), format!("{i} ior 1 core, 1 job"), "{text}");
        let c = by_name["chatterbug"];
        assert_eq!(
            line("chatterbug"),
            format!("{c} chatterbug 0 cores, 0 jobs")
        );
        assert_eq!(line("free"), format!(". free {} cores", 24 - 9), "{text}");
        // Host names label the rows.
        assert!(text.contains("node-0") && text.contains("node-1"), "{text}");
    }

    #[test]
    fn map_shows_a_core_held_twice() {
        let jobs = vec![
            job(
                1,
                "lammps",
                "running",
                Some(1),
                Some(5),
                Some(r(&[(0, "0-1", "")], None)),
            ),
            job(
                2,
                "ior",
                "running",
                Some(2),
                Some(6),
                Some(r(&[(0, "1-2", "")], None)),
            ),
        ];
        let text = map(&status_with(jobs.clone(), graph(1, 4)), &Style::plain()).unwrap();
        let (rows, legend) = parse_map(&text);
        let m = |n: &str| *legend.iter().find(|(_, v)| *v == n).unwrap().0;
        let want: String = [m("lammps"), OVERLAP, m("ior"), FREE].iter().collect();
        assert_eq!(rows[&0], want, "{text}");
        assert!(text.contains("1 core held by more than one job"), "{text}");
        let j = map_json(&status_with(jobs.clone(), graph(1, 4))).unwrap();
        let c = &j["ranks"][0]["cores"];
        assert_eq!(c["overlap"], "1");
        assert_eq!(c["free"], "3");
        assert_eq!(c["held"]["lammps"], "0-1");
        assert_eq!(c["held"]["ior"], "1-2");
        assert_eq!(c["all"], "0-3");
    }

    #[test]
    fn map_gpus_groups_and_strays() {
        let g = r(&[(0, "0-11", "0-1"), (1, "0-11", "0-1")], Some("gpu-[0-1]"));
        let jobs = vec![
            job(
                1,
                "ior",
                "running",
                Some(1),
                Some(5),
                Some(r(&[(1, "10-11", "1")], None)),
            ),
            // Rank 7 is not in the graph: shown as a warning, never dropped silently.
            job(
                2,
                "lammps",
                "running",
                Some(2),
                Some(6),
                Some(r(&[(7, "0", "")], None)),
            ),
        ];
        let text = map(&status_with(jobs, g), &Style::plain()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with("GPUS"), "{text}");
        let ior = mark(1);
        // Twelve cores print as ten, a space, two; then the GPUs.
        assert_eq!(
            lines[2].split_whitespace().skip(2).collect::<Vec<_>>(),
            vec![
                "..........".to_string(),
                format!("{ior}{ior}"),
                format!(".{ior}")
            ],
            "{text}"
        );
        assert!(text.contains("2 cores, 1 GPU, 1 job"), "{text}");
        assert!(
            text.contains("warning: job 2 (lammps) holds rank 7 cores 0"),
            "{text}"
        );
        // Free: 24 cores - 2, 4 GPUs - 1.
        assert!(text.contains("22 cores, 3 GPUs"), "{text}");
    }

    #[test]
    fn a_graph_too_large_to_draw_is_refused_not_expanded() {
        // Found by pancake-fuzz: a graph whose rank claims cores
        // 0-4294967294 made map allocate 64 GiB of cells and abort.
        let v = status_with(vec![], r(&[(0, "0-4194304", "")], Some("n0")));
        let e = map(&v, &Style::plain()).unwrap_err();
        assert!(e.0.contains("more than a map can draw"), "{e}");
        assert!(map_json(&v).is_err());
        let v = status_with(vec![], r(&[(0, "0-4294967294", "")], Some("n0")));
        assert!(map(&v, &Style::plain()).is_err());
        // Real graphs are far below the limit.
        assert!(map(&status_with(vec![], graph(64, 128)), &Style::plain()).is_ok());
    }

    #[test]
    fn very_wide_columns_do_not_panic() {
        // Found by pancake-fuzz: format!'s `{:w$}` panics for widths over
        // 65535, made by a long container name or a node with that many
        // cores (and a GPU, so the cores column is padded).
        let long = "c".repeat(70_000);
        let r1 = r(&[(0, "0-1", "")], Some("n0"));
        let mut v = status_with(
            vec![job(1, &long, "running", Some(1), Some(7), Some(r1))],
            r(&[(0, "0-69999", "0")], Some("n0")),
        );
        v["containers"][0]["name"] = json!(long);
        let text = status(&v, &Style::plain()).unwrap();
        assert!(text.contains(&long));
        let text = jobs(&v, &Style::plain()).unwrap();
        assert!(text.contains(&long));
        let text = map(&v, &Style::plain()).unwrap();
        assert!(
            text.lines().next().unwrap().ends_with(" GPUS"),
            "{}",
            &text[..200]
        );
        // Narrow tables are padded as before.
        let text = map(&status_with(vec![], graph(2, 4)), &Style::plain()).unwrap();
        assert!(
            text.starts_with("RANK HOSTNAME CORES\n   0 node-0   ....\n"),
            "{text}"
        );
    }

    #[test]
    fn a_newline_in_a_cell_does_not_panic_the_coloured_status() {
        // Found by pancake-fuzz: the colouring took line i of the table for
        // container i - 1, and a newline in a cell made more lines.
        let mut v = status_with(vec![], graph(1, 1));
        v["containers"][0]["state"] = json!("lost\nagain");
        v["containers"][1]["name"] = json!("a\nb");
        let color = Style {
            color: true,
            id: |id| id.to_string(),
        };
        let text = status(&v, &color).unwrap();
        assert!(text.contains("again"), "{text}");
        assert!(status(&v, &Style::plain()).is_ok());
    }

    #[test]
    fn huge_job_counts_do_not_overflow() {
        // Found by pancake-fuzz (with overflow checks): the status summed
        // the containers' counts with `sum`, which panics on overflow in
        // debug builds.
        let mut v = status_with(vec![], graph(1, 1));
        v["containers"][0]["running"] = json!(u64::MAX);
        v["containers"][1]["running"] = json!(1);
        v["containers"][0]["waiting"] = json!(u64::MAX);
        v["containers"][2]["waiting"] = json!(u64::MAX);
        let text = status(&v, &Style::plain()).unwrap();
        assert!(
            text.contains(&format!("jobs: {0} waiting, {0} running", u64::MAX)),
            "{text}"
        );
    }

    #[test]
    fn map_colour_only_when_asked_and_same_layout() {
        let jobs = vec![job(
            1,
            "lammps",
            "running",
            Some(1),
            Some(5),
            Some(r(&[(0, "0-1", "")], None)),
        )];
        let v = status_with(jobs, graph(2, 4));
        let plain = map(&v, &Style::plain()).unwrap();
        let colored = map(
            &v,
            &Style {
                color: true,
                ..Style::plain()
            },
        )
        .unwrap();
        assert!(!plain.contains('\x1b'));
        assert!(colored.contains("\x1b["));
        // Stripping the escapes gives the plain map back.
        let mut stripped = String::new();
        let mut it = colored.chars();
        while let Some(c) = it.next() {
            if c == '\x1b' {
                for d in it.by_ref() {
                    if d == 'm' {
                        break;
                    }
                }
            } else {
                stripped.push(c);
            }
        }
        assert_eq!(stripped, plain);
    }

    #[test]
    fn map_needs_a_graph() {
        let mut v = status_with(vec![], graph(1, 1));
        v["graph"] = Value::Null;
        let e = map(&v, &Style::plain()).unwrap_err();
        assert!(e.0.contains("no resource graph yet"), "{e}");
    }

    #[test]
    fn marks_are_distinct() {
        let all: std::collections::BTreeSet<char> = (0..62).map(mark).collect();
        assert_eq!(all.len(), 62);
        assert!(!all.contains(&FREE) && !all.contains(&OVERLAP));
        assert_eq!(mark(62), '#');
    }

    #[test]
    fn status_lists_backend_and_containers() {
        let mut v = status_with(vec![], graph(1, 1));
        v["containers"][0]["waiting"] = json!(2);
        v["containers"][0]["running"] = json!(1);
        v["containers"][1]["strict"] = json!(true);
        v["containers"][2]["reason"] = json!("connection reset");
        let text = status(&v, &Style::plain()).unwrap();
        assert!(text.starts_with("fluxion: embedded (ready)\n"), "{text}");
        assert!(
            text.contains("up 1.2m") && text.contains("flux-core 0.88.0"),
            "{text}"
        );
        let row = |n: &str| -> Vec<String> {
            text.lines()
                .find(|l| l.starts_with(&format!("{n} ")))
                .unwrap_or_else(|| panic!("no {n} row:\n{text}"))
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        assert_eq!(row("lammps")[1..5], ["connected", "no", "2", "1"]);
        assert_eq!(row("ior")[1..5], ["connected", "yes", "0", "0"]);
        assert_eq!(row("chatterbug")[1], "lost");
        assert!(text.contains("chatterbug lost: connection reset"), "{text}");
        assert!(text.contains("jobs: 2 waiting, 1 running"), "{text}");
        assert!(text.contains("granted 3"), "{text}");
        // The queue broker's own jobs (no container) have a row, counted.
        let mut with_local = v.clone();
        with_local["local"] = json!({"name": QUEUE_BROKER, "state": "local", "uri": "local:///q",
                                     "waiting": 4, "running": 1});
        let text = status(&with_local, &Style::plain()).unwrap();
        let local: Vec<&str> = text
            .lines()
            .find(|l| l.starts_with(QUEUE_BROKER))
            .unwrap_or_else(|| panic!("no queue row:\n{text}"))
            .split_whitespace()
            .collect();
        assert_eq!(local[1..], ["local", "no", "4", "1", "local:///q"]);
        assert!(text.contains("jobs: 6 waiting, 2 running"), "{text}");
        let header = text.lines().nth(2).unwrap();
        assert_eq!(
            header.split_whitespace().collect::<Vec<_>>(),
            ["CONTAINER", "STATE", "STRICT", "WAITING", "RUNNING", "URI"]
        );
        v["fluxion"] = json!({ "backend": "grpc://127.0.0.1:1", "ready": false });
        let text = status(&v, &Style::plain()).unwrap();
        assert!(
            text.starts_with("fluxion: grpc://127.0.0.1:1 (not ready"),
            "{text}"
        );
        // Colour touches the state words only.
        let c = status(
            &v,
            &Style {
                color: true,
                ..Style::plain()
            },
        )
        .unwrap();
        assert!(
            c.contains("\x1b[32mconnected\x1b[0m") && c.contains("\x1b[31mlost\x1b[0m"),
            "{c}"
        );
    }

    #[test]
    fn jobs_table_and_json() {
        let mut waiting = job(20, "ior", "waiting", None, None, None);
        waiting["reason"] = json!("container ior is not connected");
        let mut local = job(
            30,
            "",
            "running",
            Some(8),
            None,
            Some(r(&[(1, "2", "")], Some("n1"))),
        );
        local["reason"] = Value::Null;
        let list = vec![
            waiting,
            local,
            job(
                10,
                "lammps",
                "running",
                Some(7),
                Some(99),
                Some(r(&[(0, "0-3", ""), (1, "0-1", "")], Some("n[0-1]"))),
            ),
        ];
        let v = status_with(list, graph(2, 4));
        let style = Style {
            color: false,
            id: |id| format!("f{id}"),
        };
        let text = jobs(&v, &style).unwrap();
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines[0],
            [
                "JOBID",
                "CONTAINER",
                "APPID",
                "FLUXID",
                "STATE",
                "NCORES",
                "NODELIST",
                "REASON"
            ]
        );
        // Submission order, ids through the style, dashes for what is not
        // there yet, and why a job waits.
        assert_eq!(
            lines[1],
            ["f10", "lammps", "f99", "7", "RUNNING", "6", "n[0-1]"]
        );
        assert_eq!(
            lines[2],
            [
                "f20",
                "ior",
                "-",
                "-",
                "WAITING",
                "-",
                "-",
                "container",
                "ior",
                "is",
                "not",
                "connected"
            ]
        );
        // A job without a container runs on the queue broker.
        assert_eq!(
            lines[3],
            ["f30", QUEUE_BROKER, "-", "8", "RUNNING", "1", "n1"]
        );
        assert_eq!(lines.len(), 4);
        let j = jobs_json(&v).unwrap();
        assert_eq!(j["jobs"][0], v["jobs"][2]);
        assert_eq!(j["jobs"][1], v["jobs"][0]);
        // Empty: the header only.
        let e = jobs(&status_with(vec![], graph(1, 1)), &Style::plain()).unwrap();
        assert_eq!(e.lines().count(), 1);
    }

    #[test]
    fn colour_rules() {
        assert!(ColorWhen::Auto.resolve(true, None));
        assert!(ColorWhen::Auto.resolve(true, Some("")));
        assert!(!ColorWhen::Auto.resolve(true, Some("1")));
        assert!(!ColorWhen::Auto.resolve(false, None));
        assert!(ColorWhen::Always.resolve(false, Some("1")));
        assert!(!ColorWhen::Never.resolve(true, None));
        assert_eq!(ColorWhen::parse("always"), Some(ColorWhen::Always));
        assert_eq!(ColorWhen::parse("sometimes"), None);
    }

    #[test]
    fn bad_answers_are_errors() {
        let e = status(&json!({"containers": 3}), &Style::plain()).unwrap_err();
        assert!(e.0.contains("unexpected pancake.status answer"), "{e}");
        assert!(jobs_json(&json!({"jobs": {}})).is_err());
    }
}
