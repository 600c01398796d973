//! Canonical Flux jobspec V1 (RFC 25 on top of RFC 14), as `flux submit` and
//! `flux run` produce it, reduced to the typed [`Request`] the matcher needs.
//!
//! The shapes `JobspecV1.from_command()` writes (flux-core
//! `src/bindings/python/flux/job/Jobspec.py`):
//!
//! * `flux submit -n4 -c2 -g1` →
//!   `[{type:slot, count:4, label:task, with:[{type:core,count:2},{type:gpu,count:1}]}]`
//! * `flux submit -N2 -n8` →
//!   `[{type:node, count:2, with:[{type:slot, count:4, label:task, with:[core 1]}]}]`
//!   (slots per node = ceil(tasks / nodes); not exclusive)
//! * `flux submit -N2` (no `-n`) → the same with slot count 1 and
//!   `"exclusive": true` on the node, because the CLI turns on `--exclusive`
//!   when only a node count is given.
//!
//! A slot may also carry `{type: memory, count, unit?}`. Fluxion reads the
//! jobspec with a strict top level (exactly `version`, `resources`, `tasks`,
//! `attributes`), so unknown top-level keys are refused here too. Everything in
//! `attributes` other than `system.duration` and `system.container` is kept as
//! opaque JSON.

use serde_json::{Map, Value};

use crate::FluxionError;

/// Largest count accepted for any resource; far more than any real graph and
/// small enough that products of counts never overflow `u64`.
pub const MAX_COUNT: u64 = 1 << 24;

/// Longest duration (seconds) kept as finite; longer ones are clamped here.
pub const MAX_DURATION: u64 = 1 << 40;

/// Memory asked for per slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryRequest {
    /// Amount in `unit`s.
    pub count: u64,
    /// The unit as written (`"GB"`, `"MiB"`, ...); `None` means the graph's unit.
    pub unit: Option<String>,
}

/// What a jobspec asks for, in the terms the matcher uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Number of nodes when the jobspec has a `node` level; `None` when slots
    /// may land on any nodes.
    pub nnodes: Option<u32>,
    /// The nodes are requested whole (`"exclusive": true` on the node level).
    pub node_exclusive: bool,
    /// Slots per node when `nnodes` is set, total slots otherwise.
    pub slots: u32,
    /// Cores in each slot (at least 1).
    pub cores_per_slot: u32,
    /// GPUs in each slot (0 when none).
    pub gpus_per_slot: u32,
    /// Memory in each slot, when the jobspec asks for it.
    pub memory_per_slot: Option<MemoryRequest>,
    /// `attributes.system.duration` rounded up to whole seconds; 0 = unlimited.
    pub duration: u64,
    /// `attributes.system.container` (pancake's target container), if set.
    pub container: Option<String>,
}

impl Request {
    /// Total number of slots the job needs.
    pub fn total_slots(&self) -> u64 {
        u64::from(self.slots) * u64::from(self.nnodes.unwrap_or(1))
    }

    /// Total number of cores the job needs (not counting whole exclusive nodes).
    pub fn total_cores(&self) -> u64 {
        self.total_slots() * u64::from(self.cores_per_slot)
    }

    /// Total number of GPUs the job needs.
    pub fn total_gpus(&self) -> u64 {
        self.total_slots() * u64::from(self.gpus_per_slot)
    }

    /// A request for `ntasks` slots of `cores` cores and `gpus` GPUs, as
    /// `flux submit -n ntasks -c cores -g gpus` writes it.
    pub fn slots(ntasks: u32, cores: u32, gpus: u32) -> Self {
        Request {
            nnodes: None,
            node_exclusive: false,
            slots: ntasks,
            cores_per_slot: cores,
            gpus_per_slot: gpus,
            memory_per_slot: None,
            duration: 0,
            container: None,
        }
    }

    /// A request shaped like `flux submit -N nnodes [-n ntasks] [--exclusive]`:
    /// `ntasks == None` means "one task per node, nodes exclusive", as the CLI does.
    pub fn nodes(nnodes: u32, ntasks: Option<u32>, exclusive: bool) -> Self {
        let (slots, excl) = match ntasks {
            None => (1, true),
            Some(n) => (n.div_ceil(nnodes.max(1)), exclusive),
        };
        Request {
            nnodes: Some(nnodes),
            node_exclusive: excl,
            slots,
            cores_per_slot: 1,
            gpus_per_slot: 0,
            memory_per_slot: None,
            duration: 0,
            container: None,
        }
    }

    /// Sets the duration (seconds, 0 = unlimited).
    pub fn with_duration(mut self, seconds: u64) -> Self {
        self.duration = seconds;
        self
    }

    /// Writes this request as a canonical V1 jobspec (JSON text) running `command`.
    pub fn to_jobspec_json(&self, command: &[&str]) -> String {
        let mut children = vec![serde_json::json!({"type": "core", "count": self.cores_per_slot})];
        if self.gpus_per_slot > 0 {
            children.push(serde_json::json!({"type": "gpu", "count": self.gpus_per_slot}));
        }
        if let Some(m) = &self.memory_per_slot {
            let mut o = serde_json::json!({"type": "memory", "count": m.count});
            if let (Some(u), Some(obj)) = (&m.unit, o.as_object_mut()) {
                obj.insert("unit".into(), Value::String(u.clone()));
            }
            children.push(o);
        }
        let slot = serde_json::json!({"type": "slot", "count": self.slots, "label": "task", "with": children});
        let resource = match self.nnodes {
            None => slot,
            Some(n) => {
                let mut node = serde_json::json!({"type": "node", "count": n, "with": [slot]});
                if self.node_exclusive
                    && let Some(obj) = node.as_object_mut()
                {
                    obj.insert("exclusive".into(), Value::Bool(true));
                }
                node
            }
        };
        let mut system = serde_json::json!({"duration": self.duration});
        if let (Some(c), Some(obj)) = (&self.container, system.as_object_mut()) {
            obj.insert("container".into(), Value::String(c.clone()));
        }
        serde_json::json!({
            "version": 1,
            "resources": [resource],
            "tasks": [{"command": command, "slot": "task", "count": {"per_slot": 1}}],
            "attributes": {"system": system},
        })
        .to_string()
    }
}

/// A parsed and checked V1 jobspec.
#[derive(Debug, Clone, PartialEq)]
pub struct Jobspec {
    /// The typed summary of `resources`.
    pub request: Request,
    /// `attributes.system.duration` as written (seconds, 0 = unlimited).
    pub duration: f64,
    /// `tasks`, kept as JSON.
    pub tasks: Value,
    /// `attributes`, kept as JSON (environment, cwd, shell options, ...).
    pub attributes: Value,
}

fn invalid(path: &str, reason: impl std::fmt::Display) -> FluxionError {
    FluxionError::Invalid(format!("{path}: {reason}"))
}

fn count_of(obj: &Map<String, Value>, path: &str) -> Result<u32, FluxionError> {
    let p = format!("{path}.count");
    let v = obj.get("count").ok_or_else(|| invalid(&p, "missing"))?;
    let n = match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i
            } else if n.as_u64().is_some() {
                return Err(invalid(&p, format!("must be <= {MAX_COUNT}")));
            } else {
                return Err(invalid(&p, "must be an integer"));
            }
        }
        Value::Object(_) => {
            return Err(invalid(
                &p,
                "count ranges are not supported in jobspec V1; use an integer",
            ));
        }
        _ => return Err(invalid(&p, "must be an integer")),
    };
    if n < 1 {
        return Err(invalid(&p, "must be >= 1"));
    }
    if n as u64 > MAX_COUNT {
        return Err(invalid(&p, format!("must be <= {MAX_COUNT}")));
    }
    Ok(n as u32)
}

fn type_of<'a>(obj: &'a Map<String, Value>, path: &str) -> Result<&'a str, FluxionError> {
    match obj.get("type") {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(&format!("{path}.type"), "must be a string")),
        None => Err(invalid(&format!("{path}.type"), "missing")),
    }
}

fn exclusive_of(obj: &Map<String, Value>, path: &str) -> Result<bool, FluxionError> {
    match obj.get("exclusive") {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid(&format!("{path}.exclusive"), "must be a boolean")),
    }
}

fn with_of<'a>(
    obj: &'a Map<String, Value>,
    path: &str,
) -> Result<Option<&'a Vec<Value>>, FluxionError> {
    match obj.get("with") {
        None => Ok(None),
        Some(Value::Array(a)) if !a.is_empty() => Ok(Some(a)),
        Some(Value::Array(_)) => Err(invalid(&format!("{path}.with"), "must not be empty")),
        Some(_) => Err(invalid(&format!("{path}.with"), "must be an array")),
    }
}

fn as_object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, FluxionError> {
    v.as_object()
        .ok_or_else(|| invalid(path, "must be an object"))
}

struct Slot {
    label: String,
    slots: u32,
    cores: u32,
    gpus: u32,
    memory: Option<MemoryRequest>,
}

fn parse_slot(v: &Value, path: &str) -> Result<Slot, FluxionError> {
    let obj = as_object(v, path)?;
    let slots = count_of(obj, path)?;
    let label = match obj.get("label") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) => {
            return Err(invalid(&format!("{path}.label"), "must not be empty"));
        }
        Some(_) => return Err(invalid(&format!("{path}.label"), "must be a string")),
        None => {
            return Err(invalid(
                &format!("{path}.label"),
                "missing (a slot must be labelled)",
            ));
        }
    };
    exclusive_of(obj, path)?;
    let children = with_of(obj, path)?
        .ok_or_else(|| invalid(&format!("{path}.with"), "missing (a slot needs a core)"))?;
    let (mut cores, mut gpus, mut memory) = (None, None, None);
    for (i, c) in children.iter().enumerate() {
        let cpath = format!("{path}.with[{i}]");
        let cobj = as_object(c, &cpath)?;
        let ty = type_of(cobj, &cpath)?;
        let n = count_of(cobj, &cpath)?;
        exclusive_of(cobj, &cpath)?;
        if cobj.contains_key("with") {
            return Err(invalid(
                &format!("{cpath}.with"),
                format!("a {ty} cannot contain other resources"),
            ));
        }
        let slot_for = match ty {
            "core" => &mut cores,
            "gpu" => &mut gpus,
            "memory" => {
                if memory.is_some() {
                    return Err(invalid(
                        &format!("{cpath}.type"),
                        "memory is listed twice in one slot",
                    ));
                }
                let unit = match cobj.get("unit") {
                    None => None,
                    Some(Value::String(u)) if u.is_empty() => None,
                    Some(Value::String(u)) => {
                        if crate::matcher::unit_factor(u).is_none() {
                            return Err(invalid(
                                &format!("{cpath}.unit"),
                                format!("unknown memory unit {u:?}"),
                            ));
                        }
                        Some(u.clone())
                    }
                    Some(_) => return Err(invalid(&format!("{cpath}.unit"), "must be a string")),
                };
                memory = Some(MemoryRequest {
                    count: u64::from(n),
                    unit,
                });
                continue;
            }
            "slot" => return Err(invalid(&format!("{cpath}.type"), "slots cannot be nested")),
            "node" => {
                return Err(invalid(
                    &format!("{cpath}.type"),
                    "a node cannot be inside a slot in jobspec V1",
                ));
            }
            other => {
                return Err(invalid(
                    &format!("{cpath}.type"),
                    format!("unknown resource type {other:?} (a slot may hold core, gpu, memory)"),
                ));
            }
        };
        if slot_for.is_some() {
            return Err(invalid(
                &format!("{cpath}.type"),
                format!("{ty} is listed twice in one slot"),
            ));
        }
        *slot_for = Some(n);
    }
    let cores = cores.ok_or_else(|| {
        invalid(
            &format!("{path}.with"),
            "a slot must contain a core resource",
        )
    })?;
    Ok(Slot {
        label,
        slots,
        cores,
        gpus: gpus.unwrap_or(0),
        memory,
    })
}

impl Jobspec {
    /// Parses and checks jobspec text (JSON). Errors name the field and the reason.
    pub fn parse(text: &str) -> Result<Jobspec, FluxionError> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| invalid("jobspec", format!("not valid JSON: {e}")))?;
        Self::from_value(&v)
    }

    /// Checks an already parsed jobspec.
    pub fn from_value(v: &Value) -> Result<Jobspec, FluxionError> {
        let top = v
            .as_object()
            .ok_or_else(|| invalid("jobspec", "must be a JSON object"))?;
        for k in top.keys() {
            if !matches!(k.as_str(), "version" | "resources" | "tasks" | "attributes") {
                return Err(invalid(
                    k,
                    "unknown top-level key (allowed: version, resources, tasks, attributes)",
                ));
            }
        }
        match top.get("version") {
            Some(Value::Number(n)) if n.as_i64() == Some(1) => {}
            Some(Value::Number(_)) => {
                return Err(invalid(
                    "version",
                    "must be 1 (only jobspec V1 is supported)",
                ));
            }
            Some(_) => return Err(invalid("version", "must be the integer 1")),
            None => return Err(invalid("version", "missing")),
        }
        let resources = match top.get("resources") {
            Some(Value::Array(a)) => a,
            Some(_) => return Err(invalid("resources", "must be an array")),
            None => return Err(invalid("resources", "missing")),
        };
        if resources.len() != 1 {
            return Err(invalid(
                "resources",
                format!(
                    "must hold exactly one entry (V1), found {}",
                    resources.len()
                ),
            ));
        }
        let r0 = as_object(&resources[0], "resources[0]")?;
        let (nnodes, node_exclusive, slot) = match type_of(r0, "resources[0]")? {
            "slot" => (None, false, parse_slot(&resources[0], "resources[0]")?),
            "node" => {
                let n = count_of(r0, "resources[0]")?;
                let excl = exclusive_of(r0, "resources[0]")?;
                let with = with_of(r0, "resources[0]")?
                    .ok_or_else(|| invalid("resources[0].with", "missing (a node needs a slot)"))?;
                if with.len() != 1 {
                    return Err(invalid("resources[0].with", "must hold exactly one slot"));
                }
                let wobj = as_object(&with[0], "resources[0].with[0]")?;
                match type_of(wobj, "resources[0].with[0]")? {
                    "slot" => {}
                    other => {
                        return Err(invalid(
                            "resources[0].with[0].type",
                            format!("must be \"slot\" under a node, found {other:?}"),
                        ));
                    }
                }
                (Some(n), excl, parse_slot(&with[0], "resources[0].with[0]")?)
            }
            other => {
                return Err(invalid(
                    "resources[0].type",
                    format!("must be \"slot\" or \"node\", found {other:?}"),
                ));
            }
        };
        let tasks = top
            .get("tasks")
            .ok_or_else(|| invalid("tasks", "missing"))?;
        check_tasks(tasks, &slot.label)?;
        let attributes = top
            .get("attributes")
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new()));
        let (duration, container) = check_attributes(&attributes)?;
        let request = Request {
            nnodes,
            node_exclusive,
            slots: slot.slots,
            cores_per_slot: slot.cores,
            gpus_per_slot: slot.gpus,
            memory_per_slot: slot.memory,
            duration: if duration <= 0.0 {
                0
            } else {
                (duration.ceil() as u64).min(MAX_DURATION)
            },
            container,
        };
        Ok(Jobspec {
            request,
            duration,
            tasks: tasks.clone(),
            attributes,
        })
    }
}

fn check_tasks(tasks: &Value, label: &str) -> Result<(), FluxionError> {
    let arr = tasks
        .as_array()
        .ok_or_else(|| invalid("tasks", "must be an array"))?;
    if arr.is_empty() {
        return Err(invalid("tasks", "must not be empty"));
    }
    for (i, t) in arr.iter().enumerate() {
        let path = format!("tasks[{i}]");
        let obj = as_object(t, &path)?;
        match obj.get("command") {
            Some(Value::Array(c)) if c.iter().all(Value::is_string) => {}
            Some(_) => {
                return Err(invalid(
                    &format!("{path}.command"),
                    "must be an array of strings",
                ));
            }
            None => return Err(invalid(&format!("{path}.command"), "missing")),
        }
        match obj.get("slot") {
            Some(Value::String(s)) if s == label => {}
            Some(Value::String(s)) => {
                return Err(invalid(
                    &format!("{path}.slot"),
                    format!("{s:?} does not name the slot label {label:?}"),
                ));
            }
            Some(_) => return Err(invalid(&format!("{path}.slot"), "must be a string")),
            None => return Err(invalid(&format!("{path}.slot"), "missing")),
        }
        let count = obj.get("count").and_then(Value::as_object).ok_or_else(|| {
            invalid(
                &format!("{path}.count"),
                "must be an object with per_slot or total",
            )
        })?;
        let mut found = false;
        for key in ["per_slot", "total"] {
            if let Some(n) = count.get(key) {
                found = true;
                match n.as_i64() {
                    Some(n) if n >= 1 => {}
                    _ => {
                        return Err(invalid(
                            &format!("{path}.count.{key}"),
                            "must be an integer >= 1",
                        ));
                    }
                }
            }
        }
        if !found {
            return Err(invalid(&format!("{path}.count"), "needs per_slot or total"));
        }
    }
    Ok(())
}

fn check_attributes(attrs: &Value) -> Result<(f64, Option<String>), FluxionError> {
    let obj = as_object(attrs, "attributes")?;
    for k in obj.keys() {
        if k != "user" && k != "system" {
            return Err(invalid(
                &format!("attributes.{k}"),
                "unknown key (allowed: user, system)",
            ));
        }
    }
    let Some(system) = obj.get("system") else {
        return Ok((0.0, None));
    };
    let system = as_object(system, "attributes.system")?;
    let duration = match system.get("duration") {
        None => 0.0,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(d) if d.is_finite() && d >= 0.0 => d,
            _ => {
                return Err(invalid(
                    "attributes.system.duration",
                    "must be a number >= 0",
                ));
            }
        },
        Some(_) => {
            return Err(invalid(
                "attributes.system.duration",
                "must be a number of seconds",
            ));
        }
    };
    let container = match system.get("container") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid("attributes.system.container", "must be a string")),
    };
    Ok((duration, container))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(resources: Value) -> String {
        serde_json::json!({
            "version": 1,
            "resources": resources,
            "tasks": [{"command": ["hostname"], "slot": "task", "count": {"per_slot": 1}}],
            "attributes": {"system": {"duration": 0, "cwd": "/tmp", "environment": {"A": "b"}}},
        })
        .to_string()
    }

    #[test]
    fn flux_submit_shapes() {
        // flux submit -n4
        let r = Jobspec::parse(&submit(
            serde_json::json!([{"type":"slot","count":4,"label":"task","with":[{"type":"core","count":1}]}]),
        ))
        .unwrap()
        .request;
        assert_eq!(r, Request::slots(4, 1, 0));
        // flux submit -N2 -n8
        let r = Jobspec::parse(&submit(
            serde_json::json!([{"type":"node","count":2,"with":[
            {"type":"slot","count":4,"label":"task","with":[{"type":"core","count":1}]}]}]),
        ))
        .unwrap()
        .request;
        assert_eq!(r, Request::nodes(2, Some(8), false));
        assert_eq!(r.total_cores(), 8);
        // flux submit -N2
        let r = Jobspec::parse(&submit(
            serde_json::json!([{"type":"node","count":2,"exclusive":true,"with":[
            {"type":"slot","count":1,"label":"task","with":[{"type":"core","count":1}]}]}]),
        ))
        .unwrap()
        .request;
        assert_eq!(r, Request::nodes(2, None, false));
        assert!(r.node_exclusive);
        // flux submit -n2 -c4 -g1
        let r = Jobspec::parse(&submit(
            serde_json::json!([{"type":"slot","count":2,"label":"task","with":[
            {"type":"core","count":4},{"type":"gpu","count":1}]}]),
        ))
        .unwrap()
        .request;
        assert_eq!(r, Request::slots(2, 4, 1));
    }

    #[test]
    fn roundtrip_builder() {
        let mut r = Request::nodes(3, Some(7), true).with_duration(60);
        r.container = Some("lammps".into());
        r.gpus_per_slot = 2;
        r.memory_per_slot = Some(MemoryRequest {
            count: 4,
            unit: Some("GB".into()),
        });
        let js = Jobspec::parse(&r.to_jobspec_json(&["true"])).unwrap();
        assert_eq!(js.request, r);
        assert_eq!(js.duration, 60.0);
    }

    #[test]
    fn duration_and_container() {
        let text = r#"{"version":1,"resources":[{"type":"slot","count":1,"label":"task","with":[{"type":"core","count":1}]}],
            "tasks":[{"command":["a"],"slot":"task","count":{"per_slot":1}}],
            "attributes":{"system":{"duration":1.5,"container":"ior","shell":{"options":{}}}}}"#;
        let js = Jobspec::parse(text).unwrap();
        assert_eq!(js.request.duration, 2);
        assert_eq!(js.request.container.as_deref(), Some("ior"));
    }

    #[test]
    fn errors_name_fields() {
        let cases = [
            (
                serde_json::json!([{"type":"slot","count":1,"label":"task","with":[{"type":"core","count":0}]}]),
                "resources[0].with[0].count: must be >= 1",
            ),
            (
                serde_json::json!([{"type":"slot","count":-2,"label":"task","with":[{"type":"core","count":1}]}]),
                "resources[0].count: must be >= 1",
            ),
            (
                serde_json::json!([{"type":"slot","count":1,"label":"task","with":[{"type":"fpga","count":1}]}]),
                "resources[0].with[0].type: unknown resource type",
            ),
            (
                serde_json::json!([{"type":"switch","count":1}]),
                "resources[0].type: must be",
            ),
            (
                serde_json::json!([{"type":"slot","count":1,"with":[{"type":"core","count":1}]}]),
                "resources[0].label: missing",
            ),
            (
                serde_json::json!([{"type":"slot","count":1,"label":"task","with":[{"type":"gpu","count":1}]}]),
                "resources[0].with: a slot must contain a core",
            ),
            (
                serde_json::json!([{"type":"node","count":1,"exclusive":"yes","with":[]}]),
                "resources[0].exclusive: must be a boolean",
            ),
            (
                serde_json::json!([{"type":"slot","count":1.5,"label":"task","with":[{"type":"core","count":1}]}]),
                "resources[0].count: must be an integer",
            ),
        ];
        for (res, want) in cases {
            let err = Jobspec::parse(&submit(res)).unwrap_err().to_string();
            assert!(err.contains(want), "{err} !~ {want}");
        }
        for (text, want) in [
            ("[]", "jobspec: must be a JSON object"),
            ("{", "jobspec: not valid JSON"),
            (
                r#"{"version":2,"resources":[],"tasks":[],"attributes":{}}"#,
                "version: must be 1",
            ),
            (
                r#"{"version":1,"resources":[],"tasks":[],"attributes":{},"x":1}"#,
                "x: unknown top-level key",
            ),
        ] {
            let err = Jobspec::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{err} !~ {want}");
        }
    }
}
