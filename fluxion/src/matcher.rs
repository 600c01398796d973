//! The embedded matcher: a [`Graph`] built from parsed JGF and a [`Matcher`]
//! that allocates, reserves, cancels and restores allocations on it.
//!
//! # Model
//!
//! Allocatable resources are the `core`, `gpu` and `memory` vertices inside
//! `node` vertices (at any depth: sockets and other structural vertices in
//! between are kept for output only). Each node keeps its free cores and GPUs
//! as bitsets over its vertices sorted by logical id, its memory vertices as
//! pools with a free amount, and free counts. A vertex (or node) with a non-zero
//! `status` is down and never allocated.
//!
//! A request ([`Request`]) is either *slots anywhere* (no node level: each slot
//! lands whole on one node, a node may take several) or *N nodes with S slots
//! each*, optionally node-exclusive. An exclusive node is given whole to the
//! job (all its cores, GPUs and memory appear in the allocation); no other job
//! may use it, and a node any job uses cannot be taken exclusively.
//!
//! # Policies
//!
//! Every policy ranks the nodes in one fixed order and takes the first nodes in
//! that order that can hold what is asked (first fit); inside a node it takes
//! cores and GPUs in id order. What differs is the order:
//!
//! | policy | node order | ids inside a node |
//! |---|---|---|
//! | `first` (also `""`) | graph order (JGF vertex order) | lowest first |
//! | `low`, `lonode` | lowest node `id` first (ties: lower rank, then graph order) | lowest first |
//! | `high`, `hinode` | highest node `id` first (ties: higher rank, then later in the graph) | highest first |
//! | `lonodex`, `hinodex`, `firstnodex` | as `lonode`, `hinode`, `first`, and every node used is allocated exclusively | as above |
//!
//! Taking the lowest-ranked nodes first packs: one-core jobs fill node 0
//! before node 1, keeping high nodes whole for exclusive and multi-node jobs.
//! (Fluxion's own `lonode`/`hinode` also prefer low/high node ids; `locality`
//! and `variation` are not offered.)
//!
//! Compared with flux-sched (v0.54, `tests/differential.rs` runs both): under
//! `lonode`, `hinode`, `lonodex` and `hinodex` (and `firstnodex` on graphs of
//! alike nodes) pancake and Fluxion agree on every verdict and on the cores,
//! GPUs and nodes of every allocation over whole sequences. Fluxion's
//! `low`/`high` have no node factor: slots are ranked by the ids of their own
//! cores across all nodes, so jobs without a node level spread (three
//! one-core slots take core 0 of three nodes), where pancake's pack.
//! Fluxion's `first` is `high` with a node factor that stops at the first
//! match, visiting nodes by a lazily updated free count (then highest
//! `uniq_id`): its first job lands on the last node, later ones spread. Under
//! those policies the two place differently, and so may answer later requests
//! differently, but on the same state they agree on busy / unsatisfiable and
//! on the cores and GPUs taken.
//!
//! # Speed
//!
//! The nodes, in policy order, are the leaves of a segment tree whose inner
//! entries hold the component-wise maximum of (free cores, free GPUs, free
//! memory, idle). Finding the first node in policy order that can hold a slot
//! (or a whole node's share) descends the tree, O(log n) for the usual case,
//! and an allocation updates O(log n) entries per node touched. No policy
//! rescans the graph.
//!
//! # Time and reservations
//!
//! The matcher has a logical clock `now` (seconds, 0 unless
//! [`Matcher::set_now`] moves it). An allocation made now holds its resources
//! until cancelled; for planning it is expected to end at `now + duration`,
//! or never when the duration is 0. [`Matcher::allocate_or_reserve`] first
//! tries now (also avoiding reservations that overlap the job's window); when
//! that fails it tries each time an existing allocation or reservation is
//! expected to end, in order, and reserves at the first that fits. A
//! reservation holds nothing now: it only keeps later matches out of its
//! window. When only jobs without a duration stand in the way, no time fits and
//! the answer is `Busy`.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::FluxionError;
use crate::jgf::{Jgf, JgfWriter, ResourceKind, Style};
use crate::jobspec::Request;

/// Size in bytes of one memory unit, for the units jobspecs and graphs use
/// (decimal and binary prefixes are both taken as binary multiples, so the
/// graph and the jobspec only have to agree on the name). `None` for an
/// unknown unit.
pub fn unit_factor(unit: &str) -> Option<u64> {
    let f = match unit {
        "B" | "b" => 1u64,
        "K" | "KB" | "KiB" | "kB" | "k" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        "T" | "TB" | "TiB" => 1 << 40,
        _ => return None,
    };
    Some(f)
}

/// A match policy (see the module docs for exactly what each does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Graph order, lowest ids inside a node.
    First,
    /// Lowest node id first, lowest ids inside a node.
    Low,
    /// Highest node id first, highest ids inside a node.
    High,
    /// Same as [`Policy::Low`] (Fluxion's name for node-first ordering).
    LoNode,
    /// Same as [`Policy::High`].
    HiNode,
    /// [`Policy::LoNode`] with every node allocated exclusively.
    LoNodeX,
    /// [`Policy::HiNode`] with every node allocated exclusively.
    HiNodeX,
    /// [`Policy::First`] with every node allocated exclusively.
    FirstNodeX,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    Graph,
    Asc,
    Desc,
}

impl Policy {
    /// All policies, in the order the docs list them.
    pub const ALL: [Policy; 8] = [
        Policy::First,
        Policy::Low,
        Policy::High,
        Policy::LoNode,
        Policy::HiNode,
        Policy::LoNodeX,
        Policy::HiNodeX,
        Policy::FirstNodeX,
    ];

    /// Parses a policy name as Fluxion spells it; `""` means `first`.
    pub fn parse(name: &str) -> Result<Policy, FluxionError> {
        Ok(match name {
            "" | "first" => Policy::First,
            "low" => Policy::Low,
            "high" => Policy::High,
            "lonode" => Policy::LoNode,
            "hinode" => Policy::HiNode,
            "lonodex" => Policy::LoNodeX,
            "hinodex" => Policy::HiNodeX,
            "firstnodex" => Policy::FirstNodeX,
            other => {
                return Err(FluxionError::Invalid(format!(
                    "policy: unknown match policy {other:?} (known: first, low, high, lonode, hinode, lonodex, hinodex, firstnodex)"
                )));
            }
        })
    }

    /// The policy's name.
    pub fn name(self) -> &'static str {
        match self {
            Policy::First => "first",
            Policy::Low => "low",
            Policy::High => "high",
            Policy::LoNode => "lonode",
            Policy::HiNode => "hinode",
            Policy::LoNodeX => "lonodex",
            Policy::HiNodeX => "hinodex",
            Policy::FirstNodeX => "firstnodex",
        }
    }

    fn order(self) -> Order {
        match self {
            Policy::First | Policy::FirstNodeX => Order::Graph,
            Policy::Low | Policy::LoNode | Policy::LoNodeX => Order::Asc,
            Policy::High | Policy::HiNode | Policy::HiNodeX => Order::Desc,
        }
    }

    /// True when every node used is allocated exclusively.
    pub fn node_exclusive(self) -> bool {
        matches!(self, Policy::LoNodeX | Policy::HiNodeX | Policy::FirstNodeX)
    }

    fn high_ids(self) -> bool {
        self.order() == Order::Desc
    }
}

#[derive(Debug, Clone)]
struct NodeRec {
    vertex: u32,
    core_start: u32,
    ncores: u32,
    core_word: u32,
    gpu_start: u32,
    ngpus: u32,
    gpu_word: u32,
    mem_start: u32,
    nmems: u32,
    mem_total: u64,
}

/// The static part of the matcher: the parsed graph and per-node resource lists.
#[derive(Debug)]
pub struct Graph {
    jgf: Jgf,
    nodes: Vec<NodeRec>,
    /// Vertex indices of cores, grouped by node, sorted by logical id.
    cores: Vec<u32>,
    gpus: Vec<u32>,
    mems: Vec<u32>,
    /// Capacity of each memory vertex, in the graph's memory unit scale.
    mem_cap: Vec<u64>,
    /// Bytes per memory unit when the graph's memory has a known unit.
    mem_factor: Option<u64>,
    core_words: usize,
    gpu_words: usize,
}

fn invalid(reason: impl Into<String>) -> FluxionError {
    FluxionError::Invalid(reason.into())
}

impl Graph {
    /// Parses JGF text and builds the graph.
    pub fn parse(jgf: &str) -> Result<Graph, FluxionError> {
        Graph::from_jgf(Jgf::parse(jgf)?)
    }

    /// Builds the matcher's view of a parsed graph. Fails when there is no
    /// node, when a core, GPU or memory vertex is not inside a node, when a node
    /// is inside a node, or when a node has two cores (or GPUs) with one id.
    pub fn from_jgf(jgf: Jgf) -> Result<Graph, FluxionError> {
        let n = jgf.len();
        // owner[v] = index into `nodes` of v's node ancestor (or v itself), NONE if none.
        const NONE: u32 = u32::MAX;
        const UNKNOWN: u32 = u32::MAX - 1;
        let mut node_index = vec![NONE; n];
        let mut nodes = Vec::new();
        for v in jgf.vertices() {
            if v.kind() == ResourceKind::Node {
                node_index[v.index()] = nodes.len() as u32;
                nodes.push(v.index() as u32);
            }
        }
        if nodes.is_empty() {
            return Err(invalid("graph.nodes: the graph has no node vertices"));
        }
        // Resolve each vertex's owning node with memoised parent walks.
        let mut owner = vec![UNKNOWN; n];
        let mut down = vec![false; n];
        let mut walk = Vec::new();
        for start in 0..n {
            if owner[start] != UNKNOWN {
                continue;
            }
            walk.clear();
            let mut cur = Some(start);
            let mut found = NONE;
            let mut found_down = false;
            while let Some(c) = cur {
                if owner[c] != UNKNOWN {
                    found = owner[c];
                    found_down = down[c];
                    break;
                }
                walk.push(c);
                if node_index[c] != NONE {
                    found = node_index[c];
                    found_down = jgf.vertex(c).status() != 0;
                    break;
                }
                cur = jgf.vertex(c).parent();
            }
            // Down-ness propagates from the node (or a down vertex between)
            // to everything below it.
            for &w in walk.iter().rev() {
                owner[w] = found;
                if node_index[w] == NONE {
                    found_down |= jgf.vertex(w).status() != 0 && found != NONE;
                }
                down[w] = found_down;
            }
        }
        for v in jgf.vertices() {
            if v.kind() == ResourceKind::Node
                && let Some(p) = v.parent()
                && owner[p] != NONE
            {
                return Err(invalid(format!(
                    "graph.nodes[{}]: node {} is inside another node",
                    v.index(),
                    v.path()
                )));
            }
        }
        let mut lists: [Vec<(u32, i64, u32)>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        let mut mem_factor: Option<Option<u64>> = None;
        for v in jgf.vertices() {
            let k = match v.kind() {
                ResourceKind::Core => 0,
                ResourceKind::Gpu => 1,
                ResourceKind::Memory => 2,
                _ => continue,
            };
            let o = owner[v.index()];
            if o == NONE {
                return Err(invalid(format!(
                    "graph.nodes[{}]: {} {} is not inside a node",
                    v.index(),
                    v.type_name(),
                    v.path()
                )));
            }
            if down[v.index()] {
                continue;
            }
            if k == 2 && mem_factor.is_none() {
                mem_factor = Some(unit_factor(v.unit()));
            }
            lists[k].push((o, v.id(), v.index() as u32));
        }
        for (k, list) in lists.iter_mut().enumerate() {
            list.sort_unstable();
            if k < 2 {
                for w in list.windows(2) {
                    if w[0].0 == w[1].0 && w[0].1 == w[1].1 {
                        let v = jgf.vertex(w[1].2 as usize);
                        return Err(invalid(format!(
                            "graph.nodes[{}]: node {} has two {} vertices with id {}",
                            w[1].2,
                            jgf.vertex(nodes[w[1].0 as usize] as usize).path(),
                            v.type_name(),
                            v.id()
                        )));
                    }
                }
            }
        }
        let mem_factor = mem_factor.flatten();
        let [core_list, gpu_list, mem_list] = lists;
        let mut recs: Vec<NodeRec> = nodes
            .iter()
            .map(|&v| NodeRec {
                vertex: v,
                core_start: 0,
                ncores: 0,
                core_word: 0,
                gpu_start: 0,
                ngpus: 0,
                gpu_word: 0,
                mem_start: 0,
                nmems: 0,
                mem_total: 0,
            })
            .collect();
        // Down nodes keep a record (so indices stay simple) but no resources.
        let node_down: Vec<bool> = nodes.iter().map(|&v| down[v as usize]).collect();
        let mut fill =
            |list: &[(u32, i64, u32)], set: &mut dyn FnMut(&mut NodeRec, u32, u32)| -> Vec<u32> {
                let mut out = Vec::with_capacity(list.len());
                let mut i = 0;
                while i < list.len() {
                    let node = list[i].0;
                    let start = out.len() as u32;
                    while i < list.len() && list[i].0 == node {
                        out.push(list[i].2);
                        i += 1;
                    }
                    set(&mut recs[node as usize], start, out.len() as u32 - start);
                }
                out
            };
        let cores = fill(&core_list, &mut |r, s, c| {
            r.core_start = s;
            r.ncores = c;
        });
        let gpus = fill(&gpu_list, &mut |r, s, c| {
            r.gpu_start = s;
            r.ngpus = c;
        });
        let mems = fill(&mem_list, &mut |r, s, c| {
            r.mem_start = s;
            r.nmems = c;
        });
        let mem_cap: Vec<u64> = mems
            .iter()
            .map(|&m| {
                let v = jgf.vertex(m as usize);
                let size = v.size().max(0) as u64;
                match mem_factor {
                    Some(_) => size.saturating_mul(unit_factor(v.unit()).unwrap_or(1)),
                    None => size,
                }
            })
            .collect();
        let (mut cw, mut gw) = (0u32, 0u32);
        for (i, r) in recs.iter_mut().enumerate() {
            debug_assert!(!node_down[i] || r.ncores == 0);
            r.core_word = cw;
            cw += r.ncores.div_ceil(64);
            r.gpu_word = gw;
            gw += r.ngpus.div_ceil(64);
            r.mem_total = mem_cap[r.mem_start as usize..(r.mem_start + r.nmems) as usize]
                .iter()
                .sum();
        }
        Ok(Graph {
            jgf,
            nodes: recs,
            cores,
            gpus,
            mems,
            mem_cap,
            mem_factor,
            core_words: cw as usize,
            gpu_words: gw as usize,
        })
    }

    /// The parsed JGF.
    pub fn jgf(&self) -> &Jgf {
        &self.jgf
    }

    /// Number of node vertices.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// JGF vertex index of node `n`.
    pub fn node_vertex(&self, n: usize) -> usize {
        self.nodes[n].vertex as usize
    }

    /// Logical ids of node `n`'s usable cores, ascending.
    pub fn node_core_ids(&self, n: usize) -> Vec<i64> {
        let r = &self.nodes[n];
        self.cores[r.core_start as usize..(r.core_start + r.ncores) as usize]
            .iter()
            .map(|&v| self.jgf.vertex(v as usize).id())
            .collect()
    }

    /// Logical ids of node `n`'s usable GPUs, ascending.
    pub fn node_gpu_ids(&self, n: usize) -> Vec<i64> {
        let r = &self.nodes[n];
        self.gpus[r.gpu_start as usize..(r.gpu_start + r.ngpus) as usize]
            .iter()
            .map(|&v| self.jgf.vertex(v as usize).id())
            .collect()
    }

    /// Total usable cores.
    pub fn total_cores(&self) -> u64 {
        self.cores.len() as u64
    }

    /// Total usable GPUs.
    pub fn total_gpus(&self) -> u64 {
        self.gpus.len() as u64
    }

    /// True when the graph has memory vertices.
    pub fn has_memory(&self) -> bool {
        !self.mems.is_empty()
    }

    /// Per-slot memory of `req` in the graph's memory scale.
    fn mem_need(&self, req: &Request) -> u64 {
        match (&req.memory_per_slot, self.mem_factor) {
            (None, _) => 0,
            (Some(m), None) => m.count,
            (Some(m), Some(gf)) => {
                let f = m.unit.as_deref().and_then(unit_factor).unwrap_or(gf);
                m.count.saturating_mul(f)
            }
        }
    }

    /// Node order for `policy`: `order[pos] = node`.
    fn policy_order(&self, policy: Policy) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.nodes.len() as u32).collect();
        let key = |n: &u32| {
            let v = self.jgf.vertex(self.nodes[*n as usize].vertex as usize);
            (v.id(), v.rank(), *n)
        };
        match policy.order() {
            Order::Graph => {}
            Order::Asc => order.sort_by_key(key),
            Order::Desc => {
                order.sort_by_key(key);
                order.reverse();
            }
        }
        order
    }
}

/// What one slot (or one node's share) needs; also a node's free amounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Amount {
    cores: u32,
    gpus: u32,
    mem: u64,
    idle: bool,
}

impl Amount {
    fn max(self, o: Amount) -> Amount {
        Amount {
            cores: self.cores.max(o.cores),
            gpus: self.gpus.max(o.gpus),
            mem: self.mem.max(o.mem),
            idle: self.idle || o.idle,
        }
    }
    fn covers(&self, need: &Amount) -> bool {
        self.cores >= need.cores
            && self.gpus >= need.gpus
            && self.mem >= need.mem
            && (self.idle || !need.idle)
    }
}

/// Segment tree over nodes in policy order, holding component-wise maxima.
#[derive(Debug, Clone, Default)]
struct Tree {
    size: usize,
    t: Vec<Amount>,
}

impl Tree {
    fn new(leaves: &[Amount]) -> Tree {
        let size = leaves.len().next_power_of_two().max(1);
        let mut t = vec![Amount::default(); 2 * size];
        t[size..size + leaves.len()].copy_from_slice(leaves);
        for i in (1..size).rev() {
            t[i] = t[2 * i].max(t[2 * i + 1]);
        }
        Tree { size, t }
    }

    fn set(&mut self, pos: usize, a: Amount) {
        let mut i = pos + self.size;
        self.t[i] = a;
        while i > 1 {
            i /= 2;
            self.t[i] = self.t[2 * i].max(self.t[2 * i + 1]);
        }
    }

    /// First position >= `from` whose leaf covers `need`.
    fn find(&self, from: usize, need: &Amount) -> Option<usize> {
        if from >= self.size {
            return None;
        }
        self.find_in(1, 0, self.size, from, need)
    }

    fn find_in(&self, i: usize, lo: usize, hi: usize, from: usize, need: &Amount) -> Option<usize> {
        if hi <= from || !self.t[i].covers(need) {
            return None;
        }
        if hi - lo == 1 {
            return Some(lo);
        }
        let mid = (lo + hi) / 2;
        self.find_in(2 * i, lo, mid, from, need)
            .or_else(|| self.find_in(2 * i + 1, mid, hi, from, need))
    }
}

/// Mutable allocation state: free bitsets, pools, counts and the tree.
#[derive(Debug, Clone, Default)]
struct State {
    core_free: Vec<u64>,
    gpu_free: Vec<u64>,
    mem_free: Vec<u64>,
    free: Vec<Amount>,
    held: Vec<bool>,
    tree: Tree,
}

/// The resources one allocation holds on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    node: u32,
    exclusive: bool,
    /// Local indices into the node's core list.
    cores: Vec<u32>,
    gpus: Vec<u32>,
    /// (local memory index, amount).
    mem: Vec<(u32, u64)>,
}

#[derive(Debug, Clone)]
struct Alloc {
    parts: Vec<Part>,
    start: i64,
    /// Expected end; `None` = never (duration 0 or restored).
    end: Option<i64>,
    reserved: bool,
}

impl Alloc {
    fn overlaps(&self, start: i64, end: Option<i64>) -> bool {
        let starts_before_end = end.is_none_or(|e| self.start < e);
        let ends_after_start = self.end.is_none_or(|e| e > start);
        starts_before_end && ends_after_start
    }
}

/// The resources of one node in an allocation, by logical id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeShare {
    /// Node index in the [`Graph`].
    pub node: usize,
    /// The node was given whole.
    pub exclusive: bool,
    /// Logical core ids.
    pub cores: Vec<i64>,
    /// Logical GPU ids.
    pub gpus: Vec<i64>,
    /// Memory taken, in the graph's memory scale.
    pub memory: u64,
}

/// The answer to a successful match.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    /// The matcher's job id.
    pub jobid: i64,
    /// True for a reservation in the future.
    pub reserved: bool,
    /// Start time on the matcher's clock (`now` for an allocation).
    pub at: i64,
    /// The allocation as condensed JGF (allocated vertices, their ancestors and edges).
    pub jgf: String,
}

/// Allocation state over a [`Graph`] with one [`Policy`].
#[derive(Debug)]
pub struct Matcher {
    graph: Graph,
    policy: Policy,
    order: Vec<u32>,
    pos_of: Vec<u32>,
    state: State,
    empty: State,
    allocs: HashMap<i64, Alloc>,
    reservations: BTreeSet<i64>,
    next_jobid: i64,
    now: i64,
    node_by_path: Option<HashMap<String, u32>>,
}

/// A plan: (node, slots, exclusive).
type Plan = Vec<(u32, u64, bool)>;

impl Matcher {
    /// A matcher with nothing allocated. Job ids start at 1.
    pub fn new(graph: Graph, policy: Policy) -> Matcher {
        let order = graph.policy_order(policy);
        let mut pos_of = vec![0u32; order.len()];
        for (p, &n) in order.iter().enumerate() {
            pos_of[n as usize] = p as u32;
        }
        let mut core_free = vec![0u64; graph.core_words];
        let mut gpu_free = vec![0u64; graph.gpu_words];
        let mut free = Vec::with_capacity(graph.nodes.len());
        for r in &graph.nodes {
            set_bits(&mut core_free[r.core_word as usize..], r.ncores);
            set_bits(&mut gpu_free[r.gpu_word as usize..], r.ngpus);
            free.push(Amount {
                cores: r.ncores,
                gpus: r.ngpus,
                mem: r.mem_total,
                idle: true,
            });
        }
        let leaves: Vec<Amount> = order.iter().map(|&n| free[n as usize]).collect();
        let state = State {
            core_free,
            gpu_free,
            mem_free: graph.mem_cap.clone(),
            free,
            held: vec![false; graph.nodes.len()],
            tree: Tree::new(&leaves),
        };
        Matcher {
            empty: state.clone(),
            state,
            graph,
            policy,
            order,
            pos_of,
            allocs: HashMap::new(),
            reservations: BTreeSet::new(),
            next_jobid: 1,
            now: 0,
            node_by_path: None,
        }
    }

    /// The graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The logical clock (seconds).
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Moves the logical clock; new allocations start at `now`.
    pub fn set_now(&mut self, now: i64) {
        self.now = now;
    }

    /// Moves the logical clock forward to `now` (never back): the time of
    /// the next match, when the clock follows a real one.
    pub fn advance_to(&mut self, now: i64) {
        self.now = self.now.max(now);
    }

    /// Free cores now.
    pub fn free_cores(&self) -> u64 {
        self.state.free.iter().map(|a| u64::from(a.cores)).sum()
    }

    /// Free GPUs now.
    pub fn free_gpus(&self) -> u64 {
        self.state.free.iter().map(|a| u64::from(a.gpus)).sum()
    }

    /// Ids of live allocations and reservations.
    pub fn jobids(&self) -> Vec<i64> {
        let mut v: Vec<i64> = self.allocs.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Whether `jobid` is a reservation.
    pub fn is_reserved(&self, jobid: i64) -> Option<bool> {
        self.allocs.get(&jobid).map(|a| a.reserved)
    }

    /// The resources of `jobid`, per node.
    pub fn shares(&self, jobid: i64) -> Option<Vec<NodeShare>> {
        let a = self.allocs.get(&jobid)?;
        Some(
            a.parts
                .iter()
                .map(|p| {
                    let r = &self.graph.nodes[p.node as usize];
                    let id = |list: &[u32], start: u32, i: u32| {
                        self.graph
                            .jgf
                            .vertex(list[(start + i) as usize] as usize)
                            .id()
                    };
                    NodeShare {
                        node: p.node as usize,
                        exclusive: p.exclusive,
                        cores: p
                            .cores
                            .iter()
                            .map(|&i| id(&self.graph.cores, r.core_start, i))
                            .collect(),
                        gpus: p
                            .gpus
                            .iter()
                            .map(|&i| id(&self.graph.gpus, r.gpu_start, i))
                            .collect(),
                        memory: p.mem.iter().map(|m| m.1).sum(),
                    }
                })
                .collect(),
        )
    }

    /// Slots node `n` can hold now for per-slot need `s` (u64::MAX when unbounded).
    fn capacity(free: &Amount, s: &Amount) -> u64 {
        let mut cap = u64::MAX;
        if let Some(k) = free.cores.checked_div(s.cores) {
            cap = cap.min(u64::from(k));
        }
        if let Some(k) = free.gpus.checked_div(s.gpus) {
            cap = cap.min(u64::from(k));
        }
        if let Some(k) = free.mem.checked_div(s.mem) {
            cap = cap.min(k);
        }
        cap
    }

    fn slot_need(&self, req: &Request) -> Amount {
        Amount {
            cores: req.cores_per_slot,
            gpus: req.gpus_per_slot,
            mem: self.graph.mem_need(req),
            idle: false,
        }
    }

    /// Finds room for `req` in `st` without changing it.
    fn plan(&self, st: &State, req: &Request) -> Option<Plan> {
        let slot = self.slot_need(req);
        let policy_excl = self.policy.node_exclusive();
        let mut plan = Plan::new();
        match req.nnodes {
            None => {
                let mut remaining = u64::from(req.slots);
                let need = Amount {
                    idle: policy_excl,
                    ..slot
                };
                let mut pos = 0;
                while remaining > 0 {
                    let p = st.tree.find(pos, &need)?;
                    let node = self.order[p];
                    let cap = Self::capacity(&st.free[node as usize], &slot);
                    let take = cap.min(remaining);
                    plan.push((node, take, policy_excl));
                    remaining -= take;
                    pos = p + 1;
                }
            }
            Some(n) => {
                let s = u64::from(req.slots);
                let excl = req.node_exclusive || policy_excl;
                let need = Amount {
                    cores: u32::try_from(u64::from(slot.cores) * s).ok()?,
                    gpus: u32::try_from(u64::from(slot.gpus) * s).ok()?,
                    mem: slot.mem.checked_mul(s)?,
                    idle: excl,
                };
                let mut pos = 0;
                for _ in 0..n {
                    let p = st.tree.find(pos, &need)?;
                    plan.push((self.order[p], s, excl));
                    pos = p + 1;
                }
            }
        }
        Some(plan)
    }

    /// Turns a plan into parts (which cores, GPUs and memory) against `st`.
    fn choose(&self, st: &State, plan: &Plan, req: &Request) -> Vec<Part> {
        let slot = self.slot_need(req);
        let high = self.policy.high_ids();
        plan.iter()
            .map(|&(node, slots, excl)| {
                let r = &self.graph.nodes[node as usize];
                let cw = &st.core_free[r.core_word as usize..];
                let gw = &st.gpu_free[r.gpu_word as usize..];
                let (ncores, ngpus) = if excl {
                    (r.ncores as usize, r.ngpus as usize)
                } else {
                    (
                        (u64::from(slot.cores) * slots) as usize,
                        (u64::from(slot.gpus) * slots) as usize,
                    )
                };
                let mut mem = Vec::new();
                let mut want = if excl { u64::MAX } else { slot.mem * slots };
                for i in 0..r.nmems {
                    if want == 0 {
                        break;
                    }
                    let free = st.mem_free[(r.mem_start + i) as usize];
                    let take = free.min(want);
                    if take > 0 {
                        mem.push((i, take));
                        if want != u64::MAX {
                            want -= take;
                        }
                    }
                }
                Part {
                    node,
                    exclusive: excl,
                    cores: pick_bits(cw, r.ncores, ncores, high),
                    gpus: pick_bits(gw, r.ngpus, ngpus, high),
                    mem,
                }
            })
            .collect()
    }

    fn leaf(&self, st: &State, node: u32) -> Amount {
        if st.held[node as usize] {
            return Amount::default();
        }
        let r = &self.graph.nodes[node as usize];
        let f = st.free[node as usize];
        Amount {
            idle: f.cores == r.ncores && f.gpus == r.ngpus && f.mem == r.mem_total,
            ..f
        }
    }

    fn apply(&self, st: &mut State, parts: &[Part], take: bool) {
        for p in parts {
            let r = &self.graph.nodes[p.node as usize];
            let n = p.node as usize;
            for &c in &p.cores {
                flip(&mut st.core_free[r.core_word as usize..], c, !take);
            }
            for &g in &p.gpus {
                flip(&mut st.gpu_free[r.gpu_word as usize..], g, !take);
            }
            let f = &mut st.free[n];
            let (nc, ng) = (p.cores.len() as u32, p.gpus.len() as u32);
            let mut m_total = 0u64;
            for &(i, amount) in &p.mem {
                let slot = &mut st.mem_free[(r.mem_start + i) as usize];
                if take {
                    *slot = slot.saturating_sub(amount);
                } else {
                    *slot = slot.saturating_add(amount);
                }
                m_total += amount;
            }
            if take {
                f.cores -= nc.min(f.cores);
                f.gpus -= ng.min(f.gpus);
                f.mem = f.mem.saturating_sub(m_total);
            } else {
                f.cores += nc;
                f.gpus += ng;
                f.mem += m_total;
            }
            if p.exclusive {
                st.held[n] = take;
            }
            let leaf = self.leaf(st, p.node);
            st.tree.set(self.pos_of[n] as usize, leaf);
        }
    }

    /// True when `parts` are all free in `st`.
    fn parts_free(&self, st: &State, parts: &[Part]) -> Result<(), String> {
        for p in parts {
            let r = &self.graph.nodes[p.node as usize];
            let n = p.node as usize;
            let name = || self.graph.jgf.vertex(r.vertex as usize).name().into_owned();
            if st.held[n] {
                return Err(format!("node {} is held exclusively", name()));
            }
            if p.exclusive && !self.leaf(st, p.node).idle {
                return Err(format!(
                    "node {} is in use and cannot be taken exclusively",
                    name()
                ));
            }
            for &c in &p.cores {
                if !bit(&st.core_free[r.core_word as usize..], c) {
                    let id = self
                        .graph
                        .jgf
                        .vertex(self.graph.cores[(r.core_start + c) as usize] as usize)
                        .id();
                    return Err(format!("core {id} of node {} is already allocated", name()));
                }
            }
            for &g in &p.gpus {
                if !bit(&st.gpu_free[r.gpu_word as usize..], g) {
                    let id = self
                        .graph
                        .jgf
                        .vertex(self.graph.gpus[(r.gpu_start + g) as usize] as usize)
                        .id();
                    return Err(format!("gpu {id} of node {} is already allocated", name()));
                }
            }
            for &(i, amount) in &p.mem {
                if st.mem_free[(r.mem_start + i) as usize] < amount {
                    return Err(format!("memory of node {} is already allocated", name()));
                }
            }
        }
        Ok(())
    }

    /// State expected during `[start, end)`: everything (allocations and
    /// reservations) whose window overlaps it.
    fn state_for_window(&self, start: i64, end: Option<i64>, base_live: bool) -> State {
        let mut st = if base_live {
            self.state.clone()
        } else {
            self.empty.clone()
        };
        for a in self.allocs.values() {
            if base_live && !a.reserved {
                continue;
            }
            if a.overlaps(start, end) {
                self.apply(&mut st, &a.parts, true);
            }
        }
        st
    }

    fn record(&mut self, parts: Vec<Part>, start: i64, end: Option<i64>, reserved: bool) -> i64 {
        // A restore may have taken any id up to i64::MAX: past it, ids go
        // back to 1, and an id in use is never given again.
        let mut jobid = self.next_jobid;
        while jobid < 1 || self.allocs.contains_key(&jobid) {
            jobid = jobid.checked_add(1).filter(|&j| j >= 1).unwrap_or(1);
        }
        self.next_jobid = jobid.checked_add(1).unwrap_or(1);
        if reserved {
            self.reservations.insert(jobid);
        }
        self.allocs.insert(
            jobid,
            Alloc {
                parts,
                start,
                end,
                reserved,
            },
        );
        jobid
    }

    fn end_for(&self, start: i64, req: &Request) -> Option<i64> {
        (req.duration > 0)
            .then(|| start.saturating_add(i64::try_from(req.duration).unwrap_or(i64::MAX / 4)))
    }

    /// Allocates `req` now, or fails with `Busy` (fits the graph, not the free
    /// resources) or `Unsatisfiable` (can never fit this graph).
    pub fn allocate(&mut self, req: &Request) -> Result<Allocation, FluxionError> {
        self.check_shape(req)?;
        let now = self.now;
        let end = self.end_for(now, req);
        let found = if self.reservations.is_empty() {
            self.plan(&self.state, req)
                .map(|p| self.choose(&self.state, &p, req))
        } else {
            let st = self.state_for_window(now, end, true);
            self.plan(&st, req).map(|p| self.choose(&st, &p, req))
        };
        match found {
            Some(parts) => {
                let mut st = std::mem::take(&mut self.state);
                self.apply(&mut st, &parts, true);
                self.state = st;
                let jgf = self.write_parts(&parts);
                let jobid = self.record(parts, now, end, false);
                Ok(Allocation {
                    jobid,
                    reserved: false,
                    at: now,
                    jgf,
                })
            }
            None => Err(self.why_not(req)),
        }
    }

    /// Allocates `req` now if it fits, else reserves it at the earliest time
    /// the expected ends of other jobs allow (see the module docs).
    pub fn allocate_or_reserve(&mut self, req: &Request) -> Result<Allocation, FluxionError> {
        match self.allocate(req) {
            Err(FluxionError::Busy(_)) => {}
            other => return other,
        }
        let now = self.now;
        // A job past its expected end still holds its resources (it is
        // ending, or its free is on its way): take it for ending any moment.
        let mut times: Vec<i64> = self
            .allocs
            .values()
            .filter_map(|a| a.end)
            .map(|e| e.max(now.saturating_add(1)))
            .collect();
        times.sort_unstable();
        times.dedup();
        for t in times {
            let end = self.end_for(t, req);
            let st = self.state_for_window(t, end, false);
            if let Some(plan) = self.plan(&st, req) {
                let parts = self.choose(&st, &plan, req);
                let jgf = self.write_parts(&parts);
                let jobid = self.record(parts, t, end, true);
                return Ok(Allocation {
                    jobid,
                    reserved: true,
                    at: t,
                    jgf,
                });
            }
        }
        Err(FluxionError::Busy(
            "no time in the future fits: the resources are held by jobs without a duration".into(),
        ))
    }

    /// Frees `jobid` (allocation or reservation). Returns false when unknown.
    pub fn cancel(&mut self, jobid: i64) -> bool {
        let Some(a) = self.allocs.remove(&jobid) else {
            return false;
        };
        if a.reserved {
            self.reservations.remove(&jobid);
        } else {
            let mut st = std::mem::take(&mut self.state);
            self.apply(&mut st, &a.parts, false);
            self.state = st;
        }
        true
    }

    /// The condensed JGF of a live allocation.
    pub fn allocation_jgf(&self, jobid: i64) -> Option<String> {
        self.allocs.get(&jobid).map(|a| self.write_parts(&a.parts))
    }

    fn check_shape(&self, req: &Request) -> Result<(), FluxionError> {
        if req.slots == 0 || req.nnodes == Some(0) {
            return Err(invalid("request: slot and node counts must be >= 1"));
        }
        if req.cores_per_slot == 0 && req.gpus_per_slot == 0 && req.memory_per_slot.is_none() {
            return Err(invalid(
                "request: a slot must ask for at least one resource",
            ));
        }
        Ok(())
    }

    /// Why `req` cannot be matched now: `Unsatisfiable` if it cannot fit the
    /// empty graph, else `Busy`.
    fn why_not(&self, req: &Request) -> FluxionError {
        match self.unsatisfiable_reason(req) {
            Some(r) => FluxionError::Unsatisfiable(r),
            None => FluxionError::Busy(format!(
                "{} does not fit the free resources now",
                describe(req)
            )),
        }
    }

    /// `Some(reason)` when `req` cannot fit this graph even with nothing allocated.
    pub fn unsatisfiable_reason(&self, req: &Request) -> Option<String> {
        if req.slots == 0 || req.nnodes == Some(0) {
            return Some("slot and node counts must be >= 1".into());
        }
        let slot = self.slot_need(req);
        if req.gpus_per_slot > 0 && self.graph.gpus.is_empty() {
            return Some(format!(
                "requested {} GPU(s) per slot, the graph has no GPUs",
                req.gpus_per_slot
            ));
        }
        if req.memory_per_slot.is_some() && self.graph.mems.is_empty() {
            return Some("requested memory, the graph has no memory vertices".into());
        }
        let node_total = |r: &NodeRec| Amount {
            cores: r.ncores,
            gpus: r.ngpus,
            mem: r.mem_total,
            idle: true,
        };
        match req.nnodes {
            Some(n) => {
                let total = self.graph.nodes.len() as u64;
                if u64::from(n) > total {
                    return Some(format!("requested {n} nodes, graph has {total}"));
                }
                let s = u64::from(req.slots);
                let big = self
                    .graph
                    .nodes
                    .iter()
                    .filter(|r| Self::capacity(&node_total(r), &slot) >= s)
                    .count() as u64;
                (big < u64::from(n)).then(|| {
                    format!(
                        "requested {n} nodes with {s} slot(s) of {} each, only {big} node(s) of the graph are that large",
                        describe_slot(req)
                    )
                })
            }
            None => {
                let mut sum = 0u64;
                for r in &self.graph.nodes {
                    sum = sum.saturating_add(Self::capacity(&node_total(r), &slot));
                    if sum >= u64::from(req.slots) {
                        return None;
                    }
                }
                let largest = self.graph.nodes.iter().map(|r| r.ncores).max().unwrap_or(0);
                Some(if sum == 0 {
                    format!(
                        "a slot of {} fits on no node (the largest has {largest} cores)",
                        describe_slot(req)
                    )
                } else {
                    format!(
                        "requested {} slots of {}, the whole graph holds {sum}",
                        req.slots,
                        describe_slot(req)
                    )
                })
            }
        }
    }

    /// Re-marks the resources of an existing allocation (JGF as a match wrote
    /// it) as allocated under `jobid`, held until cancelled. Fails with
    /// `Invalid` when a vertex does not exist in this graph or `jobid` is in
    /// use, and with `Busy` when the resources conflict with live allocations.
    pub fn restore(&mut self, jobid: i64, allocation: &str) -> Result<(), FluxionError> {
        if jobid < 1 {
            return Err(invalid(format!("restore: jobid {jobid} must be >= 1")));
        }
        if self.allocs.contains_key(&jobid) {
            return Err(invalid(format!("restore: jobid {jobid} is already in use")));
        }
        let a = Jgf::parse(allocation)?;
        let parts = self.parts_of(&a)?;
        if parts.is_empty() {
            return Err(invalid(
                "restore: the allocation holds no core, gpu or memory vertex",
            ));
        }
        self.parts_free(&self.state, &parts)
            .map_err(|e| FluxionError::Busy(format!("restore of job {jobid} conflicts: {e}")))?;
        let mut st = std::mem::take(&mut self.state);
        self.apply(&mut st, &parts, true);
        self.state = st;
        self.allocs.insert(
            jobid,
            Alloc {
                parts,
                start: self.now,
                end: None,
                reserved: false,
            },
        );
        self.next_jobid = self.next_jobid.max(jobid.saturating_add(1));
        Ok(())
    }

    fn parts_of(&mut self, a: &Jgf) -> Result<Vec<Part>, FluxionError> {
        if self.node_by_path.is_none() {
            let map = (0..self.graph.nodes.len())
                .map(|n| {
                    (
                        self.graph
                            .jgf
                            .vertex(self.graph.nodes[n].vertex as usize)
                            .path()
                            .to_string(),
                        n as u32,
                    )
                })
                .collect();
            self.node_by_path = Some(map);
        }
        let by_path = self
            .node_by_path
            .as_ref()
            .ok_or_else(|| invalid("restore: no node index"))?;
        let mut parts: Vec<Part> = Vec::new();
        let mut part_of_node: HashMap<u32, usize> = HashMap::new();
        for v in a.vertices() {
            let kind = v.kind();
            if !matches!(
                kind,
                ResourceKind::Core | ResourceKind::Gpu | ResourceKind::Memory | ResourceKind::Node
            ) {
                continue;
            }
            let at = format!("restore: graph.nodes[{}]", v.index());
            let mut node_v = None;
            let mut cur = Some(v.index());
            while let Some(c) = cur {
                if a.vertex(c).kind() == ResourceKind::Node {
                    node_v = Some(c);
                    break;
                }
                cur = a.vertex(c).parent();
            }
            let node_v = node_v
                .ok_or_else(|| invalid(format!("{at}: {} is not inside a node", v.path())))?;
            let nv = a.vertex(node_v);
            let node = *by_path
                .get(nv.path())
                .ok_or_else(|| invalid(format!("{at}: node {} is not in this graph", nv.path())))?;
            let pi = *part_of_node.entry(node).or_insert_with(|| {
                parts.push(Part {
                    node,
                    exclusive: false,
                    cores: Vec::new(),
                    gpus: Vec::new(),
                    mem: Vec::new(),
                });
                parts.len() - 1
            });
            let r = &self.graph.nodes[node as usize];
            let find = |list: &[u32], start: u32, count: u32| -> Option<u32> {
                let ids = &list[start as usize..(start + count) as usize];
                ids.binary_search_by_key(&v.id(), |&x| self.graph.jgf.vertex(x as usize).id())
                    .ok()
                    .map(|i| i as u32)
            };
            let missing = || {
                invalid(format!(
                    "{at}: {} {} is not in this graph",
                    v.type_name(),
                    v.path()
                ))
            };
            match kind {
                ResourceKind::Node => parts[pi].exclusive |= v.exclusive(),
                ResourceKind::Core => parts[pi]
                    .cores
                    .push(find(&self.graph.cores, r.core_start, r.ncores).ok_or_else(missing)?),
                ResourceKind::Gpu => parts[pi]
                    .gpus
                    .push(find(&self.graph.gpus, r.gpu_start, r.ngpus).ok_or_else(missing)?),
                _ => {
                    // Memory vertices are matched by logical id among the node's pools.
                    let i = (0..r.nmems)
                        .find(|&i| {
                            self.graph
                                .jgf
                                .vertex(self.graph.mems[(r.mem_start + i) as usize] as usize)
                                .id()
                                == v.id()
                        })
                        .ok_or_else(missing)?;
                    let amount = match self.graph.mem_factor {
                        Some(_) => (v.size().max(0) as u64)
                            .saturating_mul(unit_factor(v.unit()).unwrap_or(1)),
                        None => v.size().max(0) as u64,
                    };
                    parts[pi].mem.push((i, amount));
                }
            }
        }
        for p in &mut parts {
            p.cores.sort_unstable();
            p.cores.dedup();
            p.gpus.sort_unstable();
            p.gpus.dedup();
        }
        parts.retain(|p| {
            p.exclusive || !p.cores.is_empty() || !p.gpus.is_empty() || !p.mem.is_empty()
        });
        Ok(parts)
    }

    /// Condensed JGF for `parts`: the allocated vertices, their ancestors, and
    /// the edges between them.
    fn write_parts(&self, parts: &[Part]) -> String {
        let g = &self.graph.jgf;
        let mut w = JgfWriter::new(Style::Condensed);
        let mut emitted: HashSet<u32> = HashSet::new();
        let mut edges: Vec<(i64, i64)> = Vec::new();
        // Emits `v`'s not yet emitted ancestors (root first), then `v`.
        let mut emit =
            |w: &mut JgfWriter, v: u32, exclusive: bool, size: i64, emitted: &mut HashSet<u32>| {
                let mut chain = Vec::new();
                let mut cur = Some(v as usize);
                while let Some(c) = cur {
                    if emitted.contains(&(c as u32)) {
                        break;
                    }
                    chain.push(c);
                    cur = g.vertex(c).parent();
                }
                for &c in chain.iter().rev() {
                    emitted.insert(c as u32);
                    let vx = g.vertex(c);
                    if c == v as usize {
                        w.vertex(&vx, exclusive, size);
                    } else {
                        w.vertex(&vx, false, vx.size());
                    }
                    if let Some(p) = vx.parent() {
                        edges.push((g.vertex(p).uniq_id(), vx.uniq_id()));
                    }
                }
            };
        for p in parts {
            let r = &self.graph.nodes[p.node as usize];
            let nv = g.vertex(r.vertex as usize);
            emit(&mut w, r.vertex, p.exclusive, nv.size(), &mut emitted);
            for &c in &p.cores {
                emit(
                    &mut w,
                    self.graph.cores[(r.core_start + c) as usize],
                    true,
                    1,
                    &mut emitted,
                );
            }
            for &x in &p.gpus {
                emit(
                    &mut w,
                    self.graph.gpus[(r.gpu_start + x) as usize],
                    true,
                    1,
                    &mut emitted,
                );
            }
            for &(i, amount) in &p.mem {
                let v = self.graph.mems[(r.mem_start + i) as usize];
                let vx = g.vertex(v as usize);
                // Report the amount in the vertex's own unit.
                let size = match self.graph.mem_factor {
                    Some(_) => (amount / unit_factor(vx.unit()).unwrap_or(1)) as i64,
                    None => amount as i64,
                };
                emit(&mut w, v, true, size, &mut emitted);
            }
        }
        for (s, t) in edges {
            w.edge(s, t);
        }
        w.finish()
    }
}

fn describe_slot(req: &Request) -> String {
    let mut s = format!("{} core(s)", req.cores_per_slot);
    if req.gpus_per_slot > 0 {
        s.push_str(&format!(", {} GPU(s)", req.gpus_per_slot));
    }
    if let Some(m) = &req.memory_per_slot {
        s.push_str(&format!(
            ", {}{} memory",
            m.count,
            m.unit.as_deref().unwrap_or("")
        ));
    }
    s
}

fn describe(req: &Request) -> String {
    match req.nnodes {
        Some(n) => format!(
            "{n} {}node(s) with {} slot(s) of {}",
            if req.node_exclusive { "exclusive " } else { "" },
            req.slots,
            describe_slot(req)
        ),
        None => format!("{} slot(s) of {}", req.slots, describe_slot(req)),
    }
}

fn set_bits(words: &mut [u64], n: u32) {
    for i in 0..n {
        words[(i / 64) as usize] |= 1 << (i % 64);
    }
}

fn bit(words: &[u64], i: u32) -> bool {
    words[(i / 64) as usize] & (1 << (i % 64)) != 0
}

fn flip(words: &mut [u64], i: u32, on: bool) {
    if on {
        words[(i / 64) as usize] |= 1 << (i % 64);
    } else {
        words[(i / 64) as usize] &= !(1 << (i % 64));
    }
}

/// Picks `k` set bits among the first `n` of `words`, lowest (or highest) first.
fn pick_bits(words: &[u64], n: u32, k: usize, high: bool) -> Vec<u32> {
    let mut out = Vec::with_capacity(k);
    if k == 0 {
        return out;
    }
    let nwords = n.div_ceil(64) as usize;
    if high {
        for wi in (0..nwords).rev() {
            let mut w = words[wi];
            while w != 0 {
                let b = 63 - w.leading_zeros();
                out.push(wi as u32 * 64 + b);
                if out.len() == k {
                    return out;
                }
                w &= !(1u64 << b);
            }
        }
    } else {
        for (wi, &word) in words.iter().enumerate().take(nwords) {
            let mut w = word;
            while w != 0 {
                let b = w.trailing_zeros();
                out.push(wi as u32 * 64 + b);
                if out.len() == k {
                    return out;
                }
                w &= w - 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::rv1_to_jgf;
    use crate::rv1::Rv1;

    fn graph(nodes: u32, cores: u32, gpus: u32) -> Graph {
        let gpu = if gpus > 0 {
            format!(",\"gpu\":\"0-{}\"", gpus - 1)
        } else {
            String::new()
        };
        let r = Rv1::parse(&format!(
            r#"{{"version":1,"execution":{{"R_lite":[{{"rank":"0-{}","children":{{"core":"0-{}"{gpu}}}}}],"nodelist":["n[0-{}]"]}}}}"#,
            nodes - 1,
            cores - 1,
            nodes - 1
        ))
        .unwrap();
        Graph::parse(&rv1_to_jgf(&r).unwrap()).unwrap()
    }

    #[test]
    fn fill_one_core_at_a_time() {
        for policy in Policy::ALL {
            let mut m = Matcher::new(graph(2, 3, 0), policy);
            let n = if policy.node_exclusive() { 2 } else { 6 };
            for i in 0..n {
                let a = m.allocate(&Request::slots(1, 1, 0)).unwrap();
                assert_eq!(a.jobid, i + 1);
            }
            let e = m.allocate(&Request::slots(1, 1, 0)).unwrap_err();
            assert!(matches!(e, FluxionError::Busy(_)), "{policy:?} {e}");
            let e = m.allocate(&Request::slots(7, 1, 0)).unwrap_err();
            assert!(matches!(e, FluxionError::Unsatisfiable(_)), "{e}");
            assert!(m.cancel(1));
            assert!(!m.cancel(1));
            m.allocate(&Request::slots(1, 1, 0)).unwrap();
        }
    }

    #[test]
    fn policies_order_nodes() {
        let mut lo = Matcher::new(graph(3, 2, 0), Policy::Low);
        let mut hi = Matcher::new(graph(3, 2, 0), Policy::High);
        let a = lo.allocate(&Request::slots(1, 1, 0)).unwrap();
        let b = hi.allocate(&Request::slots(1, 1, 0)).unwrap();
        assert_eq!(lo.shares(a.jobid).unwrap()[0].node, 0);
        assert_eq!(lo.shares(a.jobid).unwrap()[0].cores, vec![0]);
        assert_eq!(hi.shares(b.jobid).unwrap()[0].node, 2);
        assert_eq!(hi.shares(b.jobid).unwrap()[0].cores, vec![1]);
    }

    #[test]
    fn exclusive_nodes() {
        let mut m = Matcher::new(graph(2, 4, 1), Policy::First);
        let a = m.allocate(&Request::nodes(1, None, true)).unwrap();
        let s = m.shares(a.jobid).unwrap();
        assert_eq!(
            (s[0].cores.len(), s[0].gpus.len(), s[0].exclusive),
            (4, 1, true)
        );
        let b = m.allocate(&Request::slots(1, 1, 0)).unwrap();
        assert_eq!(m.shares(b.jobid).unwrap()[0].node, 1);
        assert!(matches!(
            m.allocate(&Request::nodes(1, None, true)),
            Err(FluxionError::Busy(_))
        ));
        m.cancel(a.jobid);
        m.allocate(&Request::nodes(1, None, true)).unwrap();
    }

    #[test]
    fn reservations() {
        let mut m = Matcher::new(graph(1, 2, 0), Policy::First);
        let a = m
            .allocate(&Request::slots(2, 1, 0).with_duration(100))
            .unwrap();
        assert!(!a.reserved);
        let r = m
            .allocate_or_reserve(&Request::slots(1, 1, 0).with_duration(10))
            .unwrap();
        assert!(r.reserved);
        assert_eq!(r.at, 100);
        // A second one fits beside the first reservation.
        let r2 = m
            .allocate_or_reserve(&Request::slots(1, 1, 0).with_duration(50))
            .unwrap();
        assert_eq!(r2.at, 100);
        // A third waits for the first reservation to end.
        let r3 = m
            .allocate_or_reserve(&Request::slots(1, 1, 0).with_duration(5))
            .unwrap();
        assert_eq!(r3.at, 110);
        m.cancel(a.jobid);
        // Now the reservations block an unlimited job but not a short one.
        let now = m
            .allocate(&Request::slots(1, 1, 0).with_duration(100))
            .unwrap();
        assert!(!now.reserved);
        let mut m = Matcher::new(graph(1, 2, 0), Policy::First);
        m.allocate(&Request::slots(2, 1, 0)).unwrap();
        assert!(matches!(
            m.allocate_or_reserve(&Request::slots(1, 1, 0)),
            Err(FluxionError::Busy(_))
        ));
    }

    /// A job still holding its resources past its expected end (ending, or
    /// its free on its way) is taken for ending any moment: a reservation
    /// is still made, right after now, and the clock only moves forward.
    #[test]
    fn a_job_past_its_end_still_leaves_room_for_a_reservation() {
        let mut m = Matcher::new(graph(1, 2, 0), Policy::First);
        m.allocate(&Request::slots(2, 1, 0).with_duration(100))
            .unwrap();
        m.advance_to(150);
        m.advance_to(120);
        assert_eq!(m.now(), 150, "the clock never goes back");
        let r = m
            .allocate_or_reserve(&Request::slots(1, 1, 0).with_duration(10))
            .unwrap();
        assert!(r.reserved);
        assert_eq!(r.at, 151);
    }

    #[test]
    fn restore_marks_resources() {
        let mut m = Matcher::new(graph(2, 2, 0), Policy::First);
        let a = m.allocate(&Request::slots(3, 1, 0)).unwrap();
        let mut m2 = Matcher::new(graph(2, 2, 0), Policy::First);
        m2.restore(7, &a.jgf).unwrap();
        assert_eq!(m2.free_cores(), 1);
        let b = m2.allocate(&Request::slots(1, 1, 0)).unwrap();
        assert_eq!(b.jobid, 8);
        assert!(matches!(m2.restore(9, &a.jgf), Err(FluxionError::Busy(_))));
        assert!(matches!(
            m2.restore(7, &a.jgf),
            Err(FluxionError::Invalid(_))
        ));
        assert_eq!(m2.shares(7).unwrap(), m.shares(a.jobid).unwrap());
    }

    #[test]
    fn restore_of_the_largest_id_never_shares_it() {
        // Found by pancake-fuzz: restoring id i64::MAX left the counter on
        // it, so the next match got the same id (overflowing the counter in
        // debug builds) and replaced the restored allocation, whose cores
        // then stayed busy for good.
        let mut m = Matcher::new(graph(1, 4, 0), Policy::First);
        let a = m.allocate(&Request::slots(1, 1, 0)).unwrap();
        assert!(m.cancel(a.jobid));
        m.restore(i64::MAX, &a.jgf).unwrap();
        let b = m.allocate(&Request::slots(1, 1, 0)).unwrap();
        assert_ne!(b.jobid, i64::MAX);
        assert!(b.jobid >= 1);
        let c = m.allocate(&Request::slots(1, 1, 0)).unwrap();
        assert!(c.jobid >= 1 && c.jobid != b.jobid && c.jobid != i64::MAX);
        assert_eq!(m.free_cores(), 1);
        assert!(m.cancel(i64::MAX) && m.cancel(b.jobid) && m.cancel(c.jobid));
        assert_eq!(m.free_cores(), 4);
    }

    #[test]
    fn memory_pools() {
        let text = r#"{"graph":{"nodes":[
          {"id":"0","metadata":{"type":"cluster","paths":{"containment":"/c0"}}},
          {"id":"1","metadata":{"type":"node","name":"n0","rank":0,"paths":{"containment":"/c0/n0"}}},
          {"id":"2","metadata":{"type":"core","id":0,"rank":0,"paths":{"containment":"/c0/n0/core0"}}},
          {"id":"3","metadata":{"type":"core","id":1,"rank":0,"paths":{"containment":"/c0/n0/core1"}}},
          {"id":"4","metadata":{"type":"memory","id":0,"rank":0,"size":16,"unit":"GB","paths":{"containment":"/c0/n0/memory0"}}}],
          "edges":[{"source":"0","target":"1"},{"source":"1","target":"2"},{"source":"1","target":"3"},{"source":"1","target":"4"}]}}"#;
        let mut m = Matcher::new(Graph::parse(text).unwrap(), Policy::First);
        let mut r = Request::slots(1, 1, 0);
        r.memory_per_slot = Some(crate::jobspec::MemoryRequest {
            count: 10,
            unit: Some("GB".into()),
        });
        let a = m.allocate(&r).unwrap();
        assert!(a.jgf.contains(r#""size":10"#), "{}", a.jgf);
        assert!(matches!(m.allocate(&r), Err(FluxionError::Busy(_))));
        r.memory_per_slot = Some(crate::jobspec::MemoryRequest {
            count: 17,
            unit: None,
        });
        assert!(matches!(
            m.allocate(&r),
            Err(FluxionError::Unsatisfiable(_))
        ));
    }
}
