//! Rv1, the RFC 20 resource set, as flux-core reads it (`rlist_from_json`).
//!
//! ```json
//! {"version":1,"execution":{"R_lite":[{"rank":"0","children":{"core":"0-3"}},
//!  {"rank":"1","children":{"core":"4-5","gpu":"0"}}],
//!  "nodelist":["flux-sample-[0-1]"],"starttime":1720000000.0,"expiration":1720003600.0}}
//! ```
//!
//! Rules kept here because flux-core enforces them at run time: `version` is
//! 1; each `R_lite` entry has a `rank` idset and `children` of idsets; ranks
//! must be disjoint across entries when written (job-exec refuses overlap;
//! [`Rv1::from_ranks`] groups ranks with identical children like
//! `rlist_to_R`); `nodelist` holds as many hosts as there are distinct ranks,
//! assigned in rank order. `scheduling` is never written.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::FluxionError;
use crate::hostlist;
use crate::idset::IdSet;

/// Most distinct ranks an R may describe before helpers refuse it.
pub const MAX_RANKS: u64 = 1 << 20;

/// One `R_lite` entry: a set of ranks sharing one set of children.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RLiteEntry {
    /// RFC 22 idset of broker ranks.
    pub rank: String,
    /// Child resource type (`core`, `gpu`) → RFC 22 idset of logical ids.
    pub children: BTreeMap<String, String>,
}

/// The `execution` section of Rv1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    /// The ranks and their children.
    #[serde(rename = "R_lite")]
    pub r_lite: Vec<RLiteEntry>,
    /// RFC 29 hostlists; expanded, one host per distinct rank in rank order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodelist: Vec<String>,
    /// Number of task slots (RFC 20), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nslots: Option<u64>,
    /// Start time, seconds since the epoch (0 = unset).
    #[serde(default)]
    pub starttime: f64,
    /// End time, seconds since the epoch; 0 means no time limit.
    #[serde(default)]
    pub expiration: f64,
    /// Property name → idset of ranks holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<BTreeMap<String, String>>,
}

/// An RFC 20 version 1 resource set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rv1 {
    /// Always 1.
    pub version: i64,
    /// What the job may execute on.
    pub execution: Execution,
    /// Opaque scheduler data; read but never needed here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<Value>,
    /// Opaque attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Value>,
}

/// The resources of one rank.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RankResources {
    /// Host name from `nodelist`, when the R has one.
    pub hostname: Option<String>,
    /// Logical core ids.
    pub cores: IdSet,
    /// Logical GPU ids.
    pub gpus: IdSet,
}

/// Sums over an R.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Distinct ranks.
    pub nodes: u64,
    /// Cores over all ranks.
    pub cores: u64,
    /// GPUs over all ranks.
    pub gpus: u64,
}

fn invalid(path: &str, reason: impl std::fmt::Display) -> FluxionError {
    FluxionError::Invalid(format!("{path}: {reason}"))
}

impl Rv1 {
    /// Parses Rv1 text and checks it the way flux-core does (see module docs).
    pub fn parse(text: &str) -> Result<Rv1, FluxionError> {
        let r: Rv1 =
            serde_json::from_str(text).map_err(|e| invalid("R", format!("malformed Rv1: {e}")))?;
        r.validate()?;
        Ok(r)
    }

    /// Checks version, idsets, properties and the nodelist length.
    pub fn validate(&self) -> Result<(), FluxionError> {
        self.rank_map().map(|_| ())
    }

    /// Per-rank resources. Ranks repeated across entries are merged, as rlist does.
    pub fn rank_map(&self) -> Result<BTreeMap<u32, RankResources>, FluxionError> {
        if self.version != 1 {
            return Err(invalid(
                "version",
                format!("must be 1, found {}", self.version),
            ));
        }
        let mut all_ranks = IdSet::new();
        let mut listed = 0u64;
        let mut entries = Vec::with_capacity(self.execution.r_lite.len());
        for (i, e) in self.execution.r_lite.iter().enumerate() {
            let ranks = IdSet::parse(&e.rank)
                .map_err(|err| invalid(&format!("execution.R_lite[{i}].rank"), err))?;
            let mut cores = IdSet::new();
            let mut gpus = IdSet::new();
            for (k, v) in &e.children {
                let set = IdSet::parse(v)
                    .map_err(|err| invalid(&format!("execution.R_lite[{i}].children.{k}"), err))?;
                match k.as_str() {
                    "core" => cores = set,
                    "gpu" => gpus = set,
                    // rlist keeps other child types opaque; so do we.
                    _ => {}
                }
            }
            all_ranks = all_ranks.union(&ranks);
            listed = listed.saturating_add(ranks.len());
            // Bound the work of merging repeated ranks, not only the distinct count.
            if all_ranks.len() > MAX_RANKS || listed > 4 * MAX_RANKS {
                return Err(invalid(
                    "execution.R_lite",
                    format!("more than {MAX_RANKS} ranks"),
                ));
            }
            entries.push((ranks, cores, gpus));
        }
        let hosts = if self.execution.nodelist.is_empty() {
            None
        } else {
            let n = self
                .execution
                .nodelist
                .iter()
                .try_fold(0u64, |acc, h| {
                    hostlist::count(h).map(|c| acc.saturating_add(c))
                })
                .map_err(|e| invalid("execution.nodelist", e))?;
            if n != all_ranks.len() {
                return Err(invalid(
                    "execution.nodelist",
                    format!(
                        "has {n} hosts but R_lite has {} distinct ranks",
                        all_ranks.len()
                    ),
                ));
            }
            Some(
                hostlist::parse_all(&self.execution.nodelist)
                    .map_err(|e| invalid("execution.nodelist", e))?,
            )
        };
        if let Some(props) = &self.execution.properties {
            for (name, ranks) in props {
                if name.chars().any(|c| "^&'\"`|()!".contains(c)) {
                    return Err(invalid(
                        &format!("execution.properties.{name}"),
                        "invalid character in property name",
                    ));
                }
                let set = IdSet::parse(ranks)
                    .map_err(|e| invalid(&format!("execution.properties.{name}"), e))?;
                if !set.is_subset(&all_ranks) {
                    return Err(invalid(
                        &format!("execution.properties.{name}"),
                        "names ranks not in R_lite",
                    ));
                }
            }
        }
        let mut map: BTreeMap<u32, RankResources> = BTreeMap::new();
        for (ranks, cores, gpus) in entries {
            for r in ranks.iter() {
                let e = map.entry(r).or_default();
                e.cores = e.cores.union(&cores);
                e.gpus = e.gpus.union(&gpus);
            }
        }
        if let Some(hosts) = hosts {
            for (res, h) in map.values_mut().zip(hosts) {
                res.hostname = Some(h);
            }
        }
        Ok(map)
    }

    /// Builds an R from per-rank resources: disjoint `R_lite` entries, ranks with
    /// identical children grouped (as `rlist_to_R` does), `nodelist` in rank order
    /// when every rank has a host name.
    pub fn from_ranks(
        ranks: &BTreeMap<u32, RankResources>,
        starttime: f64,
        expiration: f64,
    ) -> Rv1 {
        let mut groups: Vec<((IdSet, IdSet), IdSet)> = Vec::new();
        for (&rank, res) in ranks {
            let key = (res.cores.clone(), res.gpus.clone());
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, set)) => set.insert(rank),
                None => groups.push((key, IdSet::from_ids([rank]))),
            }
        }
        let r_lite = groups
            .into_iter()
            .map(|((cores, gpus), ranks)| {
                let mut children = BTreeMap::new();
                children.insert("core".to_string(), cores.to_string());
                if !gpus.is_empty() {
                    children.insert("gpu".to_string(), gpus.to_string());
                }
                RLiteEntry {
                    rank: ranks.to_string(),
                    children,
                }
            })
            .collect();
        let hosts: Option<Vec<&str>> = ranks.values().map(|r| r.hostname.as_deref()).collect();
        let nodelist = match hosts {
            Some(h) if !h.is_empty() => vec![hostlist::encode(&h)],
            _ => Vec::new(),
        };
        Rv1 {
            version: 1,
            execution: Execution {
                r_lite,
                nodelist,
                nslots: None,
                starttime,
                expiration,
                properties: None,
            },
            scheduling: None,
            attributes: None,
        }
    }

    /// Serializes to compact JSON text.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Sums of ranks, cores and GPUs.
    pub fn totals(&self) -> Result<Totals, FluxionError> {
        let m = self.rank_map()?;
        Ok(Totals {
            nodes: m.len() as u64,
            cores: m.values().map(|r| r.cores.len()).sum(),
            gpus: m.values().map(|r| r.gpus.len()).sum(),
        })
    }

    /// True when every rank of `self` is in `other` with the same host name (when
    /// both name it) and a subset of its cores and GPUs.
    pub fn is_subset_of(&self, other: &Rv1) -> Result<bool, FluxionError> {
        let mine = self.rank_map()?;
        let theirs = other.rank_map()?;
        Ok(mine.iter().all(|(rank, r)| {
            theirs.get(rank).is_some_and(|o| {
                let same_host = match (&r.hostname, &o.hostname) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                };
                same_host && r.cores.is_subset(&o.cores) && r.gpus.is_subset(&o.gpus)
            })
        }))
    }

    /// True when the two Rs share a core or GPU of the same rank. (Two Rs are
    /// compared by rank because both describe the same broker instance.)
    pub fn overlaps(&self, other: &Rv1) -> Result<bool, FluxionError> {
        let mine = self.rank_map()?;
        let theirs = other.rank_map()?;
        Ok(mine.iter().any(|(rank, r)| {
            theirs
                .get(rank)
                .is_some_and(|o| r.cores.intersects(&o.cores) || r.gpus.intersects(&o.gpus))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"version":1,"execution":{"R_lite":[{"rank":"0","children":{"core":"0-3"}},
 {"rank":"1","children":{"core":"4-5","gpu":"0"}}],
 "nodelist":["flux-sample-[0-1]"],"starttime":1720000000.0,"expiration":1720003600.0}}"#;

    #[test]
    fn parse_example() {
        let r = Rv1::parse(EXAMPLE).unwrap();
        let m = r.rank_map().unwrap();
        assert_eq!(m[&0].hostname.as_deref(), Some("flux-sample-0"));
        assert_eq!(m[&1].cores.to_string(), "4-5");
        assert_eq!(m[&1].gpus.to_string(), "0");
        assert_eq!(
            r.totals().unwrap(),
            Totals {
                nodes: 2,
                cores: 6,
                gpus: 1
            }
        );
        let back = Rv1::from_ranks(&m, 1720000000.0, 1720003600.0);
        assert_eq!(back, r);
    }

    #[test]
    fn groups_identical_children() {
        let mut m = BTreeMap::new();
        for rank in 0..4u32 {
            let cores = if rank == 2 { "0-1" } else { "0-3" };
            m.insert(
                rank,
                RankResources {
                    hostname: Some(format!("n{rank}")),
                    cores: IdSet::parse(cores).unwrap(),
                    gpus: IdSet::new(),
                },
            );
        }
        let r = Rv1::from_ranks(&m, 0.0, 0.0);
        assert_eq!(r.execution.r_lite.len(), 2);
        assert_eq!(r.execution.r_lite[0].rank, "0-1,3");
        assert_eq!(r.execution.nodelist, vec!["n[0-3]".to_string()]);
        assert_eq!(
            Rv1::parse(&r.to_json_string()).unwrap().rank_map().unwrap(),
            m
        );
    }

    #[test]
    fn subset_and_overlap() {
        let whole = Rv1::parse(EXAMPLE).unwrap();
        let part = Rv1::parse(
            r#"{"version":1,"execution":{"R_lite":[{"rank":"1","children":{"core":"5"}}],"nodelist":["flux-sample-1"]}}"#,
        )
        .unwrap();
        let other_host = Rv1::parse(
            r#"{"version":1,"execution":{"R_lite":[{"rank":"1","children":{"core":"5"}}],"nodelist":["x"]}}"#,
        )
        .unwrap();
        assert!(part.is_subset_of(&whole).unwrap());
        assert!(!whole.is_subset_of(&part).unwrap());
        assert!(!other_host.is_subset_of(&whole).unwrap());
        assert!(part.overlaps(&whole).unwrap());
        let disjoint = Rv1::parse(
            r#"{"version":1,"execution":{"R_lite":[{"rank":"1","children":{"core":"0-3"}}]}}"#,
        )
        .unwrap();
        assert!(!disjoint.overlaps(&whole).unwrap());
    }

    #[test]
    fn rejects() {
        for (text, want) in [
            (
                r#"{"version":2,"execution":{"R_lite":[]}}"#,
                "version: must be 1",
            ),
            (r#"{"version":1,"execution":{}}"#, "malformed Rv1"),
            (
                r#"{"version":1,"execution":{"R_lite":[{"rank":"x","children":{}}]}}"#,
                "R_lite[0].rank",
            ),
            (
                r#"{"version":1,"execution":{"R_lite":[{"rank":"0","children":{"core":"1-"}}]}}"#,
                "children.core",
            ),
            (
                r#"{"version":1,"execution":{"R_lite":[{"rank":"0-1","children":{"core":"0"}}],"nodelist":["a"]}}"#,
                "has 1 hosts but R_lite has 2",
            ),
        ] {
            let err = Rv1::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{err} !~ {want}");
        }
    }
}
