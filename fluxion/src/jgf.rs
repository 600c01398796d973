//! The JSON Graph Format (JGF) that Fluxion reads at `Init` and writes as a
//! match allocation, in every dialect flux-sched has used.
//!
//! # Reading
//!
//! `{"graph": {"nodes": [...], "edges": [...]}}`; `nodes` may also be a JGF v2
//! object keyed by vertex id. Each vertex is `{"id": "<string>", "metadata":
//! {...}}` and the outer `id` **must be a string** (flux-sched requires it).
//! Metadata fields missing from a vertex get flux-sched ≥ v0.39 defaults:
//! `basename` = `type`, `id` = `uniq_id` (for a `node`, the integer suffix of
//! its `name` when it has one), `name` = basename + id, `uniq_id` = the outer id
//! parsed as an integer, `rank` -1, `status` 0, `exclusive` false, `size` 1,
//! `unit` "". `type` and `paths.containment` are required. JSON `null` counts as
//! absent (jansson's `s?` does the same). Integer fields also accept numeric
//! strings, as some hand-written v2 examples carry them.
//!
//! Edges are containment edges when their metadata is absent (≥ v0.39), is
//! `{"subsystem": "containment"}` (v0.38) or `{"name": {"containment":
//! "contains"}}` (≤ v0.37), or both. Reverse `"in"` edges and edges of other
//! subsystems are skipped. An edge labelled containment whose target's path is
//! an ancestor of its source's path is a mislabelled reverse edge and is
//! skipped too. `edges` may be missing; a vertex without a containment parent
//! whose path has more than one component is then attached to the nearest
//! vertex whose path is a `/`-bounded prefix of it.
//!
//! Resource types: any non-empty `type` is read. The seven types pancake knows
//! (`cluster`, `rack`, `node`, `socket`, `core`, `gpu`, `memory`) have a
//! [`ResourceKind`]; every other type (flux-sched graphs may hold `numanode`,
//! `switch`, ...) is [`ResourceKind::Other`], which the matcher treats as a
//! structural container that is never allocated. Refusing them would make
//! valid flux-sched graphs unusable for no gain in safety.
//!
//! Rejected, with the field named: missing `graph` or `graph.nodes`, a
//! non-string outer id, missing `metadata`, `type` or `paths.containment`, a
//! wrongly typed field, duplicate vertex ids, edges naming unknown vertices, a
//! vertex with two containment parents, containment cycles.
//!
//! # Writing
//!
//! [`Jgf::to_json_string`] writes the maximally compatible form: every vertex
//! field explicit and each edge with `{"name": {"containment": "contains"},
//! "subsystem": "containment"}`, parent→child only; every flux-sched reader
//! accepts it. [`JgfWriter`] with [`Style::Condensed`] writes the ≥ v0.39 match
//! writer form (defaults omitted, edges without metadata).
//!
//! # Memory
//!
//! Graphs reach a million vertices, so vertices are stored compactly: strings
//! live in one arena (paths, names that are not basename + id) or are interned
//! (type, basename, unit), and the input text is parsed with serde visitors
//! that borrow from it instead of building a JSON tree.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Write as _};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::FluxionError;

/// What a vertex is, for the types pancake gives meaning to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// `cluster`
    Cluster,
    /// `rack`
    Rack,
    /// `node`
    Node,
    /// `socket`
    Socket,
    /// `core`
    Core,
    /// `gpu`
    Gpu,
    /// `memory`
    Memory,
    /// Any other type: structural, never allocated.
    Other,
}

impl ResourceKind {
    /// The kind of a `type` string.
    pub fn from_type(t: &str) -> ResourceKind {
        match t {
            "cluster" => ResourceKind::Cluster,
            "rack" => ResourceKind::Rack,
            "node" => ResourceKind::Node,
            "socket" => ResourceKind::Socket,
            "core" => ResourceKind::Core,
            "gpu" => ResourceKind::Gpu,
            "memory" => ResourceKind::Memory,
            _ => ResourceKind::Other,
        }
    }
}

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct StrRef {
    start: u32,
    len: u32,
}

#[derive(Debug, Clone)]
struct Vtx {
    kind: ResourceKind,
    exclusive: bool,
    status: i32,
    ty: u32,
    basename: u32,
    unit: u32,
    /// `len == NONE` when the name is basename + id.
    name: StrRef,
    path: StrRef,
    id: i64,
    uniq_id: i64,
    rank: i64,
    size: i64,
    parent: u32,
}

/// A parsed resource graph. Vertices are addressed by index (`0..len()`).
#[derive(Debug, Clone, Default)]
pub struct Jgf {
    arena: String,
    syms: Vec<String>,
    sym_index: HashMap<String, u32>,
    verts: Vec<Vtx>,
    /// Sorted by vertex index.
    props: Vec<(u32, BTreeMap<String, String>)>,
}

/// Everything needed to add a vertex through [`JgfBuilder`].
#[derive(Debug, Clone)]
pub struct VertexSpec<'a> {
    /// Resource type (`node`, `core`, ...).
    pub type_name: &'a str,
    /// Basename; `None` = the type.
    pub basename: Option<&'a str>,
    /// Name; `None` = basename + id.
    pub name: Option<&'a str>,
    /// Logical id.
    pub id: i64,
    /// Graph-unique id (also written as the outer string id).
    pub uniq_id: i64,
    /// Broker rank, -1 when unknown.
    pub rank: i64,
    /// Exclusive flag.
    pub exclusive: bool,
    /// Unit of `size` ("" for countable resources).
    pub unit: &'a str,
    /// Amount in this pool (1 for cores and GPUs).
    pub size: i64,
    /// 0 = up, anything else = down.
    pub status: i64,
    /// Containment path, e.g. `/cluster0/node3/core5`.
    pub path: &'a str,
    /// Properties (name → value).
    pub properties: Option<BTreeMap<String, String>>,
}

impl<'a> VertexSpec<'a> {
    /// A vertex with defaults for everything but type, id, uniq_id and path.
    pub fn new(type_name: &'a str, id: i64, uniq_id: i64, path: &'a str) -> Self {
        VertexSpec {
            type_name,
            basename: None,
            name: None,
            id,
            uniq_id,
            rank: -1,
            exclusive: false,
            unit: "",
            size: 1,
            status: 0,
            path,
            properties: None,
        }
    }
}

/// A read-only view of one vertex.
#[derive(Debug, Clone, Copy)]
pub struct Vertex<'g> {
    g: &'g Jgf,
    i: usize,
}

impl<'g> Vertex<'g> {
    fn v(&self) -> &'g Vtx {
        &self.g.verts[self.i]
    }
    /// Index in the graph.
    pub fn index(&self) -> usize {
        self.i
    }
    /// Kind derived from the type.
    pub fn kind(&self) -> ResourceKind {
        self.v().kind
    }
    /// The `type` string.
    pub fn type_name(&self) -> &'g str {
        &self.g.syms[self.v().ty as usize]
    }
    /// The basename.
    pub fn basename(&self) -> &'g str {
        &self.g.syms[self.v().basename as usize]
    }
    /// The name (stored, or basename + id).
    pub fn name(&self) -> Cow<'g, str> {
        let v = self.v();
        if v.name.len == NONE {
            Cow::Owned(format!("{}{}", self.basename(), v.id))
        } else {
            Cow::Borrowed(self.g.str_at(v.name))
        }
    }
    /// True when the name is exactly basename + id (writers may omit it).
    pub fn name_is_default(&self) -> bool {
        self.v().name.len == NONE
    }
    /// Logical id.
    pub fn id(&self) -> i64 {
        self.v().id
    }
    /// Graph-unique id.
    pub fn uniq_id(&self) -> i64 {
        self.v().uniq_id
    }
    /// Broker rank (-1 when unknown).
    pub fn rank(&self) -> i64 {
        self.v().rank
    }
    /// Exclusive flag as written.
    pub fn exclusive(&self) -> bool {
        self.v().exclusive
    }
    /// Status (0 = up).
    pub fn status(&self) -> i64 {
        i64::from(self.v().status)
    }
    /// Pool size.
    pub fn size(&self) -> i64 {
        self.v().size
    }
    /// Unit of the size.
    pub fn unit(&self) -> &'g str {
        &self.g.syms[self.v().unit as usize]
    }
    /// Containment path.
    pub fn path(&self) -> &'g str {
        self.g.str_at(self.v().path)
    }
    /// Index of the containment parent.
    pub fn parent(&self) -> Option<usize> {
        let p = self.v().parent;
        (p != NONE).then_some(p as usize)
    }
    /// Properties, when the vertex has any.
    pub fn properties(&self) -> Option<&'g BTreeMap<String, String>> {
        let i = self.i as u32;
        self.g
            .props
            .binary_search_by_key(&i, |(k, _)| *k)
            .ok()
            .map(|p| &self.g.props[p].1)
    }
}

impl Jgf {
    /// Parses JGF text (any dialect, see the module docs).
    pub fn parse(text: &str) -> Result<Jgf, FluxionError> {
        let mut reader = Reader::default();
        let mut de = serde_json::Deserializer::from_str(text);
        TopSeed(&mut reader)
            .deserialize(&mut de)
            .map_err(|e| FluxionError::Invalid(clean_error(&e)))?;
        de.end().map_err(|e| {
            FluxionError::Invalid(format!("jgf: trailing characters: {}", clean_error(&e)))
        })?;
        reader.finish()
    }

    /// Number of vertices.
    pub fn len(&self) -> usize {
        self.verts.len()
    }

    /// True when the graph has no vertex.
    pub fn is_empty(&self) -> bool {
        self.verts.is_empty()
    }

    /// The vertex at `index`.
    ///
    /// # Panics
    /// When `index >= len()`.
    pub fn vertex(&self, index: usize) -> Vertex<'_> {
        assert!(index < self.verts.len(), "vertex index out of range");
        Vertex { g: self, i: index }
    }

    /// All vertices in graph order.
    pub fn vertices(&self) -> impl Iterator<Item = Vertex<'_>> + '_ {
        (0..self.verts.len()).map(move |i| Vertex { g: self, i })
    }

    /// Vertices with no containment parent.
    pub fn roots(&self) -> Vec<usize> {
        (0..self.verts.len())
            .filter(|&i| self.verts[i].parent == NONE)
            .collect()
    }

    /// Containment children of every vertex, as (offsets, flat list): the
    /// children of `v` are `flat[offsets[v]..offsets[v + 1]]`, in graph order.
    pub fn child_index(&self) -> (Vec<u32>, Vec<u32>) {
        let n = self.verts.len();
        let mut offsets = vec![0u32; n + 1];
        for v in &self.verts {
            if v.parent != NONE {
                offsets[v.parent as usize + 1] += 1;
            }
        }
        for i in 0..n {
            offsets[i + 1] += offsets[i];
        }
        let mut fill = offsets.clone();
        let mut flat = vec![0u32; offsets[n] as usize];
        for (i, v) in self.verts.iter().enumerate() {
            if v.parent != NONE {
                let slot = &mut fill[v.parent as usize];
                flat[*slot as usize] = i as u32;
                *slot += 1;
            }
        }
        (offsets, flat)
    }

    fn str_at(&self, r: StrRef) -> &str {
        let start = r.start as usize;
        self.arena.get(start..start + r.len as usize).unwrap_or("")
    }

    /// Writes the whole graph in the maximally compatible form (see module docs).
    pub fn to_json_string(&self) -> String {
        let mut w = JgfWriter::new(Style::Full);
        for v in self.vertices() {
            w.vertex(&v, v.exclusive(), v.size());
        }
        for v in self.vertices() {
            if let Some(p) = v.parent() {
                w.edge(self.vertex(p).uniq_id(), v.uniq_id());
            }
        }
        w.finish()
    }
}

/// Builds a [`Jgf`] vertex by vertex; used by the reader and by conversions.
#[derive(Debug, Default)]
pub struct JgfBuilder {
    g: Jgf,
    /// Set when some uniq_id may repeat although outer ids are distinct.
    check_uniq: bool,
}

impl JgfBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.g.sym_index.get(s) {
            return i;
        }
        let i = self.g.syms.len() as u32;
        self.g.syms.push(s.to_string());
        self.g.sym_index.insert(s.to_string(), i);
        i
    }

    fn store(&mut self, s: &str) -> Result<StrRef, FluxionError> {
        let start = self.g.arena.len();
        if start + s.len() >= NONE as usize || s.len() >= NONE as usize {
            return Err(FluxionError::Invalid("jgf: graph text too large".into()));
        }
        self.g.arena.push_str(s);
        Ok(StrRef {
            start: start as u32,
            len: s.len() as u32,
        })
    }

    /// Adds a vertex and returns its index. The uniq_id must be unique (checked by [`build`](Self::build)).
    pub fn add_vertex(&mut self, spec: &VertexSpec<'_>) -> Result<usize, FluxionError> {
        self.check_uniq = true;
        self.push(spec)
    }

    fn push(&mut self, spec: &VertexSpec<'_>) -> Result<usize, FluxionError> {
        if self.g.verts.len() >= (NONE - 1) as usize {
            return Err(FluxionError::Invalid("jgf: too many vertices".into()));
        }
        let ty = self.intern(spec.type_name);
        let basename = self.intern(spec.basename.unwrap_or(spec.type_name));
        let unit = self.intern(spec.unit);
        let name = match spec.name {
            Some(n) if !is_basename_id(n, spec.basename.unwrap_or(spec.type_name), spec.id) => {
                self.store(n)?
            }
            _ => StrRef {
                start: 0,
                len: NONE,
            },
        };
        let path = self.store(spec.path)?;
        let idx = self.g.verts.len();
        self.g.verts.push(Vtx {
            kind: ResourceKind::from_type(spec.type_name),
            exclusive: spec.exclusive,
            status: spec.status.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
            ty,
            basename,
            unit,
            name,
            path,
            id: spec.id,
            uniq_id: spec.uniq_id,
            rank: spec.rank,
            size: spec.size,
            parent: NONE,
        });
        if let Some(p) = &spec.properties
            && !p.is_empty()
        {
            self.g.props.push((idx as u32, p.clone()));
        }
        Ok(idx)
    }

    /// Makes `parent` the containment parent of `child`.
    pub fn add_edge(&mut self, parent: usize, child: usize) -> Result<(), FluxionError> {
        let n = self.g.verts.len();
        if parent >= n || child >= n {
            return Err(FluxionError::Invalid(format!(
                "jgf: edge {parent}->{child} names an unknown vertex"
            )));
        }
        self.set_parent(parent as u32, child as u32)
            .map_err(FluxionError::Invalid)
    }

    fn set_parent(&mut self, parent: u32, child: u32) -> Result<(), String> {
        if parent == child {
            return Err("containment cycle: a vertex contains itself".into());
        }
        let cur = self.g.verts[child as usize].parent;
        if cur == NONE {
            self.g.verts[child as usize].parent = parent;
            Ok(())
        } else if cur == parent {
            Ok(())
        } else {
            Err(format!(
                "vertex {} has two containment parents ({} and {})",
                self.g.verts[child as usize].uniq_id,
                self.g.verts[cur as usize].uniq_id,
                self.g.verts[parent as usize].uniq_id
            ))
        }
    }

    /// Attaches parentless vertices by path, checks for cycles and repeated
    /// uniq_ids, and returns the graph.
    pub fn build(mut self) -> Result<Jgf, FluxionError> {
        self.attach_by_path()?;
        self.check_cycles()?;
        if self.check_uniq {
            let mut seen = HashSet::with_capacity(self.g.verts.len());
            for v in &self.g.verts {
                if !seen.insert(v.uniq_id) {
                    return Err(FluxionError::Invalid(format!(
                        "graph.nodes: uniq_id {} is used by two vertices",
                        v.uniq_id
                    )));
                }
            }
        }
        Ok(self.g)
    }

    fn attach_by_path(&mut self) -> Result<(), FluxionError> {
        let orphans: Vec<usize> = (0..self.g.verts.len())
            .filter(|&i| {
                let v = &self.g.verts[i];
                v.parent == NONE
                    && self
                        .g
                        .str_at(v.path)
                        .trim_end_matches('/')
                        .matches('/')
                        .count()
                        > 1
            })
            .collect();
        if orphans.is_empty() {
            return Ok(());
        }
        let mut by_path: HashMap<&str, u32> = HashMap::with_capacity(self.g.verts.len());
        for (i, v) in self.g.verts.iter().enumerate() {
            by_path
                .entry(self.g.str_at(v.path).trim_end_matches('/'))
                .or_insert(i as u32);
        }
        let mut links = Vec::new();
        for i in orphans {
            let mut p = self.g.str_at(self.g.verts[i].path).trim_end_matches('/');
            while let Some(cut) = p.rfind('/') {
                p = &p[..cut];
                if p.is_empty() {
                    break;
                }
                if let Some(&parent) = by_path.get(p) {
                    if parent as usize != i {
                        links.push((parent, i as u32));
                    }
                    break;
                }
            }
        }
        for (p, c) in links {
            self.g.verts[c as usize].parent = p;
        }
        Ok(())
    }

    fn check_cycles(&self) -> Result<(), FluxionError> {
        // 0 = unvisited, 1 = on the current walk, 2 = known to reach a root.
        let n = self.g.verts.len();
        let mut state = vec![0u8; n];
        let mut walk = Vec::new();
        for start in 0..n {
            let mut cur = start as u32;
            walk.clear();
            while cur != NONE && state[cur as usize] == 0 {
                state[cur as usize] = 1;
                walk.push(cur);
                cur = self.g.verts[cur as usize].parent;
            }
            if cur != NONE && state[cur as usize] == 1 {
                return Err(FluxionError::Invalid(format!(
                    "graph.edges: containment cycle through vertex with uniq_id {} (path {})",
                    self.g.verts[cur as usize].uniq_id,
                    self.g.str_at(self.g.verts[cur as usize].path)
                )));
            }
            for &w in &walk {
                state[w as usize] = 2;
            }
        }
        Ok(())
    }
}

/// `name == basename + id` without allocating.
fn is_basename_id(name: &str, basename: &str, id: i64) -> bool {
    let Some(rest) = name.strip_prefix(basename) else {
        return false;
    };
    let mut buf = [0u8; 24];
    let mut pos = buf.len();
    let neg = id < 0;
    let mut n = id.unsigned_abs();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if neg {
        pos -= 1;
        buf[pos] = b'-';
    }
    rest.as_bytes() == &buf[pos..]
}

// ---------------------------------------------------------------------------
// Writer

/// Which JGF form a [`JgfWriter`] emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Every vertex field explicit, edges with `name` and `subsystem`: read by every flux-sched.
    Full,
    /// flux-sched ≥ v0.39 match-writer form: defaults omitted, edges without metadata.
    Condensed,
}

/// Streams vertices and edges into JGF text.
#[derive(Debug)]
pub struct JgfWriter {
    style: Style,
    nodes: String,
    edges: String,
    first_node: bool,
    first_edge: bool,
}

/// Appends `s` as a JSON string literal.
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
    }
}

impl JgfWriter {
    /// A writer for `style`.
    pub fn new(style: Style) -> Self {
        JgfWriter {
            style,
            nodes: String::new(),
            edges: String::new(),
            first_node: true,
            first_edge: true,
        }
    }

    /// Writes vertex `v` with the given exclusive flag and size (a match writes
    /// allocated cores as exclusive and a memory pool with the allocated size).
    pub fn vertex(&mut self, v: &Vertex<'_>, exclusive: bool, size: i64) {
        let o = &mut self.nodes;
        if !self.first_node {
            o.push(',');
        }
        self.first_node = false;
        let _ = write!(o, "{{\"id\":\"{}\",\"metadata\":{{\"type\":", v.uniq_id());
        push_json_str(o, v.type_name());
        let full = self.style == Style::Full;
        if full || v.basename() != v.type_name() {
            o.push_str(",\"basename\":");
            push_json_str(o, v.basename());
        }
        if full || !v.name_is_default() {
            o.push_str(",\"name\":");
            push_json_str(o, &v.name());
        }
        let _ = write!(o, ",\"id\":{}", v.id());
        if full {
            let _ = write!(o, ",\"uniq_id\":{}", v.uniq_id());
        }
        let _ = write!(o, ",\"rank\":{}", v.rank());
        if let Some(props) = v.properties() {
            o.push_str(",\"properties\":{");
            for (k, (name, value)) in props.iter().enumerate() {
                if k > 0 {
                    o.push(',');
                }
                push_json_str(o, name);
                o.push(':');
                push_json_str(o, value);
            }
            o.push('}');
        }
        if full || !v.unit().is_empty() {
            o.push_str(",\"unit\":");
            push_json_str(o, v.unit());
        }
        if full || exclusive {
            let _ = write!(o, ",\"exclusive\":{exclusive}");
        }
        if full || size != 1 {
            let _ = write!(o, ",\"size\":{size}");
        }
        if v.status() != 0 {
            let _ = write!(o, ",\"status\":{}", v.status());
        }
        o.push_str(",\"paths\":{\"containment\":");
        push_json_str(o, v.path());
        o.push_str("}}}");
    }

    /// Writes a containment edge between two uniq_ids.
    pub fn edge(&mut self, parent_uniq: i64, child_uniq: i64) {
        let o = &mut self.edges;
        if !self.first_edge {
            o.push(',');
        }
        self.first_edge = false;
        let _ = write!(
            o,
            "{{\"source\":\"{parent_uniq}\",\"target\":\"{child_uniq}\""
        );
        if self.style == Style::Full {
            o.push_str(",\"metadata\":{\"name\":{\"containment\":\"contains\"},\"subsystem\":\"containment\"}");
        }
        o.push('}');
    }

    /// The finished JGF text.
    pub fn finish(self) -> String {
        let mut out = String::with_capacity(self.nodes.len() + self.edges.len() + 40);
        out.push_str("{\"graph\":{\"nodes\":[");
        out.push_str(&self.nodes);
        out.push_str("],\"edges\":[");
        out.push_str(&self.edges);
        out.push_str("]}}");
        out
    }
}

// ---------------------------------------------------------------------------
// Reader

/// serde_json appends " at line L column C" to errors; when we wrap an error in
/// a field path we keep only one position, at the end.
fn clean_error(e: &serde_json::Error) -> String {
    let s = e.to_string();
    let pos = format!(" at line {} column {}", e.line(), e.column());
    let body = s.strip_suffix(&pos).unwrap_or(&s);
    // Inner errors may already carry a position; drop those too.
    let body = match body.rfind(" at line ") {
        Some(i)
            if body[i..].split_whitespace().nth(4).is_some() && body[i..].contains(" column ") =>
        {
            &body[..i]
        }
        _ => body,
    };
    if e.line() > 0 {
        format!("{body} (at line {} column {})", e.line(), e.column())
    } else {
        body.to_string()
    }
}

fn strip_pos(e: &impl fmt::Display) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) if s[i..].contains(" column ") => s[..i].to_string(),
        _ => s,
    }
}

/// A string that borrows from the input when it can.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A string, or a note of what else was found (to report "must be a string").
enum StrOrOther<'a> {
    Str(Cow<'a, str>),
    Other(&'static str),
}

impl<'de> de::Deserialize<'de> for StrOrOther<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrOrOther<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(StrOrOther::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StrOrOther::Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(StrOrOther::Str(Cow::Owned(v)))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(StrOrOther::Other("a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(StrOrOther::Other("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(StrOrOther::Other("a number"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(StrOrOther::Other("a boolean"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(StrOrOther::Other("null"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(StrOrOther::Other("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(StrOrOther::Other("an object"))
            }
        }
        d.deserialize_any(V)
    }
}

/// An integer, also accepted as a decimal string.
struct IntLike(i64);

impl<'de> de::Deserialize<'de> for IntLike {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntLike;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntLike, E> {
                Ok(IntLike(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntLike, E> {
                i64::try_from(v)
                    .map(IntLike)
                    .map_err(|_| E::custom("integer out of range"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntLike, E> {
                v.trim()
                    .parse::<i64>()
                    .map(IntLike)
                    .map_err(|_| E::custom(format!("expected an integer, found {v:?}")))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Default)]
struct RawMeta<'a> {
    ty: Option<Cow<'a, str>>,
    basename: Option<Cow<'a, str>>,
    name: Option<Cow<'a, str>>,
    id: Option<i64>,
    uniq_id: Option<i64>,
    rank: Option<i64>,
    status: Option<i64>,
    exclusive: Option<bool>,
    unit: Option<Cow<'a, str>>,
    size: Option<i64>,
    path: Option<Cow<'a, str>>,
    has_paths: bool,
    properties: Option<BTreeMap<String, String>>,
}

/// Where a vertex came from, for error messages.
#[derive(Clone, Copy)]
struct Loc<'k> {
    index: usize,
    key: Option<&'k str>,
}

impl fmt::Display for Loc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key {
            Some(k) => write!(f, "graph.nodes[{k:?}]"),
            None => write!(f, "graph.nodes[{}]", self.index),
        }
    }
}

struct MetaSeed<'k> {
    loc: Loc<'k>,
}

impl<'de> DeserializeSeed<'de> for MetaSeed<'_> {
    type Value = RawMeta<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MetaSeed<'_> {
    type Value = RawMeta<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an object ({}.metadata)", self.loc)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let loc = self.loc;
        let ctx = |field: &str, e: A::Error| -> A::Error {
            de::Error::custom(format!("{loc}.metadata.{field}: {}", strip_pos(&e)))
        };
        let mut m = RawMeta::default();
        while let Some(key) = map.next_key::<CowStr<'de>>()? {
            let k = key.0.as_ref();
            match k {
                "type" => {
                    m.ty = map
                        .next_value::<Option<CowStr>>()
                        .map_err(|e| ctx(k, e))?
                        .map(|c| c.0)
                }
                "basename" => {
                    m.basename = map
                        .next_value::<Option<CowStr>>()
                        .map_err(|e| ctx(k, e))?
                        .map(|c| c.0)
                }
                "name" => {
                    m.name = map
                        .next_value::<Option<CowStr>>()
                        .map_err(|e| ctx(k, e))?
                        .map(|c| c.0)
                }
                "unit" => {
                    m.unit = map
                        .next_value::<Option<CowStr>>()
                        .map_err(|e| ctx(k, e))?
                        .map(|c| c.0)
                }
                "id" => {
                    m.id = map
                        .next_value::<Option<IntLike>>()
                        .map_err(|e| ctx(k, e))?
                        .map(|c| c.0)
                }
                "uniq_id" => {
                    m.uniq_id = map
                        .next_value::<Option<IntLike>>()
                        .map_err(|e| ctx(k, e))?
                        .map(|c| c.0)
                }
                "rank" => {
                    m.rank = map
                        .next_value::<Option<IntLike>>()
                        .map_err(|e| ctx(k, e))?
                        .map(|c| c.0)
                }
                "status" => {
                    m.status = map
                        .next_value::<Option<IntLike>>()
                        .map_err(|e| ctx(k, e))?
                        .map(|c| c.0)
                }
                "size" => {
                    m.size = map
                        .next_value::<Option<IntLike>>()
                        .map_err(|e| ctx(k, e))?
                        .map(|c| c.0)
                }
                "exclusive" => {
                    m.exclusive = map.next_value::<Option<bool>>().map_err(|e| ctx(k, e))?
                }
                "paths" => {
                    let paths: Option<BTreeMap<CowStr<'de>, StrOrOther<'de>>> =
                        map.next_value().map_err(|e| ctx(k, e))?;
                    if let Some(paths) = paths {
                        m.has_paths = true;
                        for (sub, p) in paths {
                            if sub.0 == "containment" {
                                match p {
                                    StrOrOther::Str(s) => m.path = Some(s),
                                    StrOrOther::Other(what) => {
                                        return Err(de::Error::custom(format!(
                                            "{loc}.metadata.paths.containment: must be a string, found {what}"
                                        )));
                                    }
                                }
                            }
                        }
                    }
                }
                "properties" => {
                    let props: Option<BTreeMap<String, serde_json::Value>> = map
                        .next_value()
                        .map_err(|e| ctx("properties (must be an object or null)", e))?;
                    if let Some(props) = props {
                        let mut out = BTreeMap::new();
                        for (pk, pv) in props {
                            match pv {
                                serde_json::Value::String(s) => {
                                    out.insert(pk, s);
                                }
                                _ => {
                                    return Err(de::Error::custom(format!(
                                        "{loc}.metadata.properties.{pk}: must be a string"
                                    )));
                                }
                            }
                        }
                        m.properties = Some(out);
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(m)
    }
}

impl PartialEq for CowStr<'_> {
    fn eq(&self, o: &Self) -> bool {
        self.0 == o.0
    }
}
impl Eq for CowStr<'_> {}
impl PartialOrd for CowStr<'_> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for CowStr<'_> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.cmp(&o.0)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum EdgeKind {
    Contains,
    Skip,
}

struct RawEdge<'a> {
    index: usize,
    source: Cow<'a, str>,
    target: Cow<'a, str>,
}

#[derive(Default)]
struct Reader<'a> {
    b: JgfBuilder,
    ids: HashMap<Cow<'a, str>, u32>,
    pending: Vec<RawEdge<'a>>,
    saw_graph: bool,
    saw_nodes: bool,
    nodes_done: bool,
}

impl<'a> Reader<'a> {
    fn add_vertex(
        &mut self,
        loc: Loc<'_>,
        outer: Cow<'a, str>,
        m: RawMeta<'a>,
    ) -> Result<(), String> {
        let ty =
            m.ty.ok_or_else(|| format!("{loc}.metadata.type: missing"))?;
        if ty.is_empty() {
            return Err(format!("{loc}.metadata.type: must not be empty"));
        }
        let path = match m.path {
            Some(p) => p,
            None if m.has_paths => {
                return Err(format!("{loc}.metadata.paths.containment: missing"));
            }
            None => return Err(format!("{loc}.metadata.paths: missing")),
        };
        if !path.starts_with('/') || path.len() < 2 {
            return Err(format!(
                "{loc}.metadata.paths.containment: {path:?} must be an absolute path"
            ));
        }
        let outer_num = outer.parse::<i64>().ok();
        let uniq_id = match (m.uniq_id, outer_num) {
            (Some(u), Some(o)) => {
                if u != o || outer.as_ref() != o.to_string() {
                    self.b.check_uniq = true;
                }
                u
            }
            (Some(u), None) => {
                self.b.check_uniq = true;
                u
            }
            (None, Some(o)) => {
                if outer.as_ref() != o.to_string() {
                    self.b.check_uniq = true;
                }
                o
            }
            (None, None) => {
                return Err(format!(
                    "{loc}.metadata.uniq_id: missing, and the outer id {outer:?} is not an integer to infer it from"
                ));
            }
        };
        let id = match m.id {
            Some(i) => i,
            None => {
                let mut id = uniq_id;
                if ty == "node"
                    && let Some(n) = &m.name
                {
                    let digits = n.bytes().rev().take_while(u8::is_ascii_digit).count();
                    if let Ok(v) = n[n.len() - digits..].parse::<i64>() {
                        id = v;
                    }
                }
                id
            }
        };
        let size = m.size.unwrap_or(1);
        if size < 0 {
            return Err(format!("{loc}.metadata.size: must be >= 0"));
        }
        let spec = VertexSpec {
            type_name: &ty,
            basename: m.basename.as_deref(),
            name: m.name.as_deref(),
            id,
            uniq_id,
            rank: m.rank.unwrap_or(-1),
            exclusive: m.exclusive.unwrap_or(false),
            unit: m.unit.as_deref().unwrap_or(""),
            size,
            status: m.status.unwrap_or(0),
            path: &path,
            properties: m.properties,
        };
        let idx = self.b.push(&spec).map_err(|e| e.to_string())?;
        if self.ids.insert(outer.clone(), idx as u32).is_some() {
            return Err(format!("{loc}.id: duplicate vertex id {outer:?}"));
        }
        Ok(())
    }

    fn add_edge(&mut self, e: &RawEdge<'_>) -> Result<(), String> {
        let at = |which: &str| format!("graph.edges[{}].{which}", e.index);
        let s = *self
            .ids
            .get(e.source.as_ref())
            .ok_or_else(|| format!("{}: unknown vertex id {:?}", at("source"), e.source))?;
        let t = *self
            .ids
            .get(e.target.as_ref())
            .ok_or_else(|| format!("{}: unknown vertex id {:?}", at("target"), e.target))?;
        // A containment edge from a vertex to one of its path ancestors is a
        // reverse edge that was labelled "contains"; skip it.
        let sp = self.b.g.str_at(self.b.g.verts[s as usize].path);
        let tp = self.b.g.str_at(self.b.g.verts[t as usize].path);
        if sp.len() > tp.len() && sp.starts_with(tp) && sp.as_bytes()[tp.len()] == b'/' {
            return Ok(());
        }
        self.b
            .set_parent(s, t)
            .map_err(|m| format!("graph.edges[{}]: {m}", e.index))
    }

    fn finish(mut self) -> Result<Jgf, FluxionError> {
        if !self.saw_graph {
            return Err(FluxionError::Invalid("graph: missing".into()));
        }
        if !self.saw_nodes {
            return Err(FluxionError::Invalid("graph.nodes: missing".into()));
        }
        let pending = std::mem::take(&mut self.pending);
        for e in &pending {
            self.add_edge(e).map_err(FluxionError::Invalid)?;
        }
        self.ids = HashMap::new();
        self.b.build()
    }
}

struct TopSeed<'r, 'a>(&'r mut Reader<'a>);

impl<'de, 'r> DeserializeSeed<'de> for TopSeed<'r, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 'r> Visitor<'de> for TopSeed<'r, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JGF object {\"graph\": {...}}")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<CowStr<'de>>()? {
            if key.0 == "graph" {
                self.0.saw_graph = true;
                map.next_value_seed(GraphSeed(&mut *self.0))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

struct GraphSeed<'r, 'a>(&'r mut Reader<'a>);

impl<'de, 'r> DeserializeSeed<'de> for GraphSeed<'r, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 'r> Visitor<'de> for GraphSeed<'r, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("graph: an object with nodes and edges")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<CowStr<'de>>()? {
            match key.0.as_ref() {
                "nodes" => {
                    self.0.saw_nodes = true;
                    map.next_value_seed(NodesSeed(&mut *self.0))?;
                    self.0.nodes_done = true;
                }
                "edges" => map.next_value_seed(EdgesSeed(&mut *self.0))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct NodesSeed<'r, 'a>(&'r mut Reader<'a>);

impl<'de, 'r> DeserializeSeed<'de> for NodesSeed<'r, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, 'r> Visitor<'de> for NodesSeed<'r, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("graph.nodes: an array of vertices (or a JGF v2 object of vertices)")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while seq
            .next_element_seed(VertexSeed {
                r: &mut *self.0,
                loc: Loc { index, key: None },
                key_id: None,
            })?
            .is_some()
        {
            index += 1;
        }
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(key) = map.next_key::<CowStr<'de>>()? {
            let k = key.0.clone();
            let kref: &str = &k;
            map.next_value_seed(VertexSeed {
                r: &mut *self.0,
                loc: Loc {
                    index,
                    key: Some(kref),
                },
                key_id: Some(key.0),
            })?;
            index += 1;
        }
        Ok(())
    }
}

struct VertexSeed<'r, 'a, 'k> {
    r: &'r mut Reader<'a>,
    loc: Loc<'k>,
    key_id: Option<Cow<'a, str>>,
}

impl<'de, 'r, 'k> DeserializeSeed<'de> for VertexSeed<'r, 'de, 'k> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 'r, 'k> Visitor<'de> for VertexSeed<'r, 'de, 'k> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: a vertex object", self.loc)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let loc = self.loc;
        let mut outer: Option<StrOrOther<'de>> = None;
        let mut meta: Option<RawMeta<'de>> = None;
        while let Some(key) = map.next_key::<CowStr<'de>>()? {
            match key.0.as_ref() {
                "id" => outer = Some(map.next_value()?),
                "metadata" => meta = Some(map.next_value_seed(MetaSeed { loc })?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let outer = match (outer, self.key_id) {
            (Some(StrOrOther::Str(s)), _) => s,
            (Some(StrOrOther::Other(what)), _) => {
                return Err(de::Error::custom(format!(
                    "{loc}.id: must be a string, found {what}"
                )));
            }
            (None, Some(k)) => k,
            (None, None) => return Err(de::Error::custom(format!("{loc}.id: missing"))),
        };
        let meta = meta.ok_or_else(|| de::Error::custom(format!("{loc}.metadata: missing")))?;
        self.r
            .add_vertex(loc, outer, meta)
            .map_err(de::Error::custom)
    }
}

struct EdgesSeed<'r, 'a>(&'r mut Reader<'a>);

impl<'de, 'r> DeserializeSeed<'de> for EdgesSeed<'r, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, 'r> Visitor<'de> for EdgesSeed<'r, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("graph.edges: an array of edges")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(edge) = seq.next_element_seed(EdgeSeed { index })? {
            if let Some(e) = edge {
                if self.0.nodes_done {
                    self.0.add_edge(&e).map_err(de::Error::custom)?;
                } else {
                    self.0.pending.push(e);
                }
            }
            index += 1;
        }
        Ok(())
    }
}

struct EdgeSeed {
    index: usize,
}

impl<'de> DeserializeSeed<'de> for EdgeSeed {
    type Value = Option<RawEdge<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EdgeSeed {
    type Value = Option<RawEdge<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "graph.edges[{}]: an edge object", self.index)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let i = self.index;
        let mut source = None;
        let mut target = None;
        let mut kind = EdgeKind::Contains;
        while let Some(key) = map.next_key::<CowStr<'de>>()? {
            match key.0.as_ref() {
                "source" => source = Some(map.next_value::<StrOrOther<'de>>()?),
                "target" => target = Some(map.next_value::<StrOrOther<'de>>()?),
                "metadata" => {
                    let meta: Option<EdgeMeta<'de>> = map.next_value().map_err(|e| {
                        de::Error::custom(format!("graph.edges[{i}].metadata: {}", strip_pos(&e)))
                    })?;
                    kind = meta.map_or(EdgeKind::Contains, |m| m.kind());
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let get = |v: Option<StrOrOther<'de>>, which: &str| match v {
            Some(StrOrOther::Str(s)) => Ok(s),
            Some(StrOrOther::Other(what)) => Err(de::Error::custom(format!(
                "graph.edges[{i}].{which}: must be a string, found {what}"
            ))),
            None => Err(de::Error::custom(format!(
                "graph.edges[{i}].{which}: missing"
            ))),
        };
        let source = get(source, "source")?;
        let target = get(target, "target")?;
        Ok((kind == EdgeKind::Contains).then_some(RawEdge {
            index: i,
            source,
            target,
        }))
    }
}

/// Edge metadata in any dialect.
#[derive(serde::Deserialize)]
struct EdgeMeta<'a> {
    #[serde(default, borrow)]
    subsystem: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<BTreeMap<Cow<'a, str>, Cow<'a, str>>>,
}

impl EdgeMeta<'_> {
    fn kind(&self) -> EdgeKind {
        if let Some(name) = &self.name {
            return match name.get("containment").map(|c| c.as_ref()) {
                Some("contains") => EdgeKind::Contains,
                // "in" is the reverse direction; other relations and other
                // subsystems are not containment.
                _ => EdgeKind::Skip,
            };
        }
        match self.subsystem.as_deref() {
            None | Some("containment") => EdgeKind::Contains,
            Some(_) => EdgeKind::Skip,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Jgf::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let g = Jgf::parse(
            r#"{"graph":{"nodes":[
            {"id":"0","metadata":{"type":"cluster","paths":{"containment":"/cluster0"}}},
            {"id":"1","metadata":{"type":"node","name":"flux-sample-12","rank":3,"paths":{"containment":"/cluster0/flux-sample-12"}}},
            {"id":"2","metadata":{"type":"core","id":5,"paths":{"containment":"/cluster0/flux-sample-12/core5"}}}
            ],"edges":[{"source":"0","target":"1"},{"source":"1","target":"2"}]}}"#,
        )
        .unwrap();
        let c = g.vertex(0);
        assert_eq!(
            (
                c.basename(),
                c.name().as_ref(),
                c.id(),
                c.uniq_id(),
                c.rank()
            ),
            ("cluster", "cluster0", 0, 0, -1)
        );
        let n = g.vertex(1);
        assert_eq!(
            (n.id(), n.rank(), n.name().as_ref(), n.basename()),
            (12, 3, "flux-sample-12", "node")
        );
        let k = g.vertex(2);
        assert_eq!(
            (
                k.name().as_ref(),
                k.size(),
                k.unit(),
                k.exclusive(),
                k.parent()
            ),
            ("core5", 1, "", false, Some(1))
        );
        assert_eq!(g.roots(), vec![0]);
    }

    #[test]
    fn edge_dialects() {
        for meta in [
            "",
            r#","metadata":{"name":{"containment":"contains"}}"#,
            r#","metadata":{"subsystem":"containment"}"#,
            r#","metadata":{"name":{"containment":"contains"},"subsystem":"containment"}"#,
        ] {
            let text = format!(
                r#"{{"graph":{{"nodes":[
                {{"id":"0","metadata":{{"type":"cluster","paths":{{"containment":"/c0"}}}}}},
                {{"id":"1","metadata":{{"type":"node","paths":{{"containment":"/c0/n1"}}}}}}],
                "edges":[{{"source":"0","target":"1"{meta}}},
                         {{"source":"1","target":"0","metadata":{{"name":{{"containment":"in"}}}}}}]}}}}"#
            );
            let g = Jgf::parse(&text).unwrap();
            assert_eq!(g.vertex(1).parent(), Some(0), "{meta}");
            assert_eq!(g.vertex(0).parent(), None);
        }
    }

    #[test]
    fn reverse_contains_edges_skipped_and_paths_fallback() {
        let g = Jgf::parse(
            r#"{"graph":{"nodes":[
            {"id":"0","metadata":{"type":"cluster","paths":{"containment":"/c0"}}},
            {"id":"1","metadata":{"type":"node","paths":{"containment":"/c0/n1"}}},
            {"id":"2","metadata":{"type":"node","paths":{"containment":"/c0/n10"}}},
            {"id":"3","metadata":{"type":"core","paths":{"containment":"/c0/n10/core0"}}}],
            "edges":[{"source":"1","target":"0"},{"source":"0","target":"1"}]}}"#,
        )
        .unwrap();
        assert_eq!(g.vertex(1).parent(), Some(0));
        assert_eq!(g.vertex(2).parent(), Some(0));
        assert_eq!(g.vertex(3).parent(), Some(2));
    }

    #[test]
    fn errors_name_fields() {
        let v = |m: &str| {
            format!(r#"{{"graph":{{"nodes":[{{"id":"0","metadata":{m}}}],"edges":[]}}}}"#)
        };
        for (text, want) in [
            ("{}".to_string(), "graph: missing"),
            (r#"{"graph":{"edges":[]}}"#.to_string(), "graph.nodes: missing"),
            (r#"{"graph":{"nodes":[{"id":0,"metadata":{}}]}}"#.to_string(), "graph.nodes[0].id: must be a string"),
            (r#"{"graph":{"nodes":[{"id":"0"}]}}"#.to_string(), "graph.nodes[0].metadata: missing"),
            (v(r#"{"paths":{"containment":"/a"}}"#), "graph.nodes[0].metadata.type: missing"),
            (v(r#"{"type":"node"}"#), "graph.nodes[0].metadata.paths: missing"),
            (v(r#"{"type":"node","exclusive":"yes","paths":{"containment":"/a"}}"#), "graph.nodes[0].metadata.exclusive"),
            (v(r#"{"type":"node","rank":1.5,"paths":{"containment":"/a"}}"#), "graph.nodes[0].metadata.rank"),
            (v(r#"{"type":"node","properties":[],"paths":{"containment":"/a"}}"#), "graph.nodes[0].metadata.properties"),
            (
                r#"{"graph":{"nodes":[{"id":"x","metadata":{"type":"node","paths":{"containment":"/a"}}}]}}"#.to_string(),
                "graph.nodes[0].metadata.uniq_id: missing",
            ),
            (
                r#"{"graph":{"nodes":[{"id":"0","metadata":{"type":"node","paths":{"containment":"/a"}}},
                {"id":"0","metadata":{"type":"node","paths":{"containment":"/b"}}}]}}"#
                    .to_string(),
                "graph.nodes[1].id: duplicate vertex id",
            ),
            (
                r#"{"graph":{"nodes":[{"id":"0","metadata":{"type":"node","paths":{"containment":"/a"}}}],
                "edges":[{"source":"0","target":"9"}]}}"#
                    .to_string(),
                "graph.edges[0].target: unknown vertex id",
            ),
            (
                r#"{"graph":{"nodes":[{"id":"0","metadata":{"type":"node","paths":{"containment":"/a"}}},
                {"id":"1","metadata":{"type":"node","paths":{"containment":"/b"}}}],
                "edges":[{"source":"0","target":"1"},{"source":"1","target":"0"}]}}"#
                    .to_string(),
                "cycle",
            ),
        ] {
            let e = err(&text);
            assert!(e.contains(want), "{e} !~ {want}");
        }
    }

    #[test]
    fn writer_roundtrip() {
        let mut b = JgfBuilder::new();
        let c = b
            .add_vertex(&VertexSpec::new("cluster", 0, 0, "/cluster0"))
            .unwrap();
        let mut n = VertexSpec::new("node", 7, 1, "/cluster0/host7");
        n.basename = Some("host");
        n.name = Some("host7");
        n.rank = 2;
        let mut props = BTreeMap::new();
        props.insert("amd".to_string(), String::new());
        n.properties = Some(props);
        let n = b.add_vertex(&n).unwrap();
        let mut k = VertexSpec::new("core", 3, 2, "/cluster0/host7/core3");
        k.rank = 2;
        let k = b.add_vertex(&k).unwrap();
        b.add_edge(c, n).unwrap();
        b.add_edge(n, k).unwrap();
        let g = b.build().unwrap();
        let text = g.to_json_string();
        assert!(text.contains(r#""subsystem":"containment""#));
        let g2 = Jgf::parse(&text).unwrap();
        assert_eq!(g2.len(), 3);
        assert_eq!(g2.vertex(1).name(), "host7");
        assert_eq!(g2.vertex(1).properties().unwrap().len(), 1);
        assert_eq!(g2.vertex(2).parent(), Some(1));
        assert_eq!(g2.to_json_string(), text);
        let mut w = JgfWriter::new(Style::Condensed);
        w.vertex(&g2.vertex(2), true, 1);
        let t = w.finish();
        assert!(
            !t.contains("basename") && !t.contains("uniq_id") && t.contains(r#""exclusive":true"#),
            "{t}"
        );
    }
}
