//! RFC 22 idsets: sets of non-negative integers written as `"0-3,7"`.
//!
//! Flux writes idsets in a canonical *ranged* form: ascending, comma
//! separated, consecutive runs collapsed into `lo-hi`, and the empty set as
//! `""`. [`IdSet`] stores the set as sorted, disjoint, non-adjacent ranges so
//! that huge runs (`"0-4000000"`) cost nothing and set operations are linear in
//! the number of ranges.

use std::fmt;

/// Largest id an idset may hold. flux-core uses `unsigned int` ids and
/// reserves `UINT_MAX` as "invalid", so the same limit applies here.
pub const MAX_ID: u32 = u32::MAX - 1;

/// Why an idset string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid idset {input:?}: {reason}")]
pub struct IdSetError {
    /// The text that failed to parse.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A set of ids kept as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdSet {
    ranges: Vec<(u32, u32)>,
}

impl IdSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses RFC 22 text: comma separated ids or `lo-hi` ranges, optionally in
    /// square brackets (`"[0-3]"`), in any order, possibly overlapping; `""` is
    /// the empty set.
    pub fn parse(s: &str) -> Result<Self, IdSetError> {
        let err = |reason: &str| IdSetError {
            input: s.chars().take(200).collect(),
            reason: reason.to_string(),
        };
        let mut body = s.trim();
        if let Some(inner) = body.strip_prefix('[') {
            body = inner
                .strip_suffix(']')
                .ok_or_else(|| err("unbalanced '['"))?;
        }
        let mut set = IdSet::new();
        if body.is_empty() {
            return Ok(set);
        }
        let mut pending: Vec<(u32, u32)> = Vec::new();
        for part in body.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(err("empty element"));
            }
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (
                    parse_id(a).map_err(|r| err(&r))?,
                    parse_id(b).map_err(|r| err(&r))?,
                ),
                None => {
                    let v = parse_id(part).map_err(|r| err(&r))?;
                    (v, v)
                }
            };
            if lo > hi {
                return Err(err(&format!("range {lo}-{hi} is descending")));
            }
            pending.push((lo, hi));
        }
        pending.sort_unstable();
        for (lo, hi) in pending {
            set.insert_range(lo, hi);
        }
        Ok(set)
    }

    /// Builds a set from ids in any order.
    pub fn from_ids<I: IntoIterator<Item = u32>>(ids: I) -> Self {
        let mut v: Vec<u32> = ids.into_iter().collect();
        v.sort_unstable();
        let mut set = IdSet::new();
        for id in v {
            set.insert_range(id, id);
        }
        set
    }

    /// Inserts one id.
    pub fn insert(&mut self, id: u32) {
        self.insert_range(id, id);
    }

    /// Inserts the inclusive range `lo..=hi` (no-op when `lo > hi`).
    pub fn insert_range(&mut self, lo: u32, hi: u32) {
        if lo > hi {
            return;
        }
        // Fast path: appending in ascending order, which is how sets are
        // usually built.
        if let Some(last) = self.ranges.last_mut() {
            if lo >= last.0 {
                if lo <= last.1.saturating_add(1) {
                    last.1 = last.1.max(hi);
                    return;
                }
                self.ranges.push((lo, hi));
                return;
            }
        } else {
            self.ranges.push((lo, hi));
            return;
        }
        let mut merged = Vec::with_capacity(self.ranges.len() + 1);
        let mut new = (lo, hi);
        let mut placed = false;
        for &(a, b) in &self.ranges {
            if b.saturating_add(1) < new.0 {
                merged.push((a, b));
            } else if new.1.saturating_add(1) < a {
                if !placed {
                    merged.push(new);
                    placed = true;
                }
                merged.push((a, b));
            } else {
                new = (new.0.min(a), new.1.max(b));
            }
        }
        if !placed {
            merged.push(new);
        }
        self.ranges = merged;
    }

    /// True when the set holds `id`.
    pub fn contains(&self, id: u32) -> bool {
        let i = self.ranges.partition_point(|&(_, hi)| hi < id);
        self.ranges.get(i).is_some_and(|&(lo, _)| lo <= id)
    }

    /// Number of ids in the set.
    pub fn len(&self) -> u64 {
        self.ranges
            .iter()
            .map(|&(lo, hi)| u64::from(hi - lo) + 1)
            .sum()
    }

    /// True for the empty set.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Smallest id, if any.
    pub fn first(&self) -> Option<u32> {
        self.ranges.first().map(|r| r.0)
    }

    /// Largest id, if any.
    pub fn last(&self) -> Option<u32> {
        self.ranges.last().map(|r| r.1)
    }

    /// The sorted inclusive ranges.
    pub fn ranges(&self) -> &[(u32, u32)] {
        &self.ranges
    }

    /// Ids in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.ranges.iter().flat_map(|&(lo, hi)| lo..=hi)
    }

    /// Set union.
    pub fn union(&self, other: &IdSet) -> IdSet {
        let mut all: Vec<(u32, u32)> = self
            .ranges
            .iter()
            .chain(other.ranges.iter())
            .copied()
            .collect();
        all.sort_unstable();
        let mut out = IdSet::new();
        for (lo, hi) in all {
            out.insert_range(lo, hi);
        }
        out
    }

    /// Set intersection.
    pub fn intersection(&self, other: &IdSet) -> IdSet {
        let (mut i, mut j) = (0, 0);
        let mut out = IdSet::new();
        while i < self.ranges.len() && j < other.ranges.len() {
            let (a0, a1) = self.ranges[i];
            let (b0, b1) = other.ranges[j];
            let lo = a0.max(b0);
            let hi = a1.min(b1);
            if lo <= hi {
                out.insert_range(lo, hi);
            }
            if a1 < b1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        out
    }

    /// Ids in `self` but not in `other`.
    pub fn difference(&self, other: &IdSet) -> IdSet {
        let mut out = IdSet::new();
        let mut j = 0;
        for &(lo, hi) in &self.ranges {
            let mut cur = lo;
            let mut done = false;
            while j < other.ranges.len() && other.ranges[j].1 < cur {
                j += 1;
            }
            let mut k = j;
            while k < other.ranges.len() && other.ranges[k].0 <= hi {
                let (b0, b1) = other.ranges[k];
                if b0 > cur {
                    out.insert_range(cur, b0 - 1);
                }
                if b1 >= hi {
                    done = true;
                    break;
                }
                cur = b1 + 1;
                k += 1;
            }
            if !done {
                out.insert_range(cur, hi);
            }
        }
        out
    }

    /// True when every id of `self` is in `other`.
    pub fn is_subset(&self, other: &IdSet) -> bool {
        self.difference(other).is_empty()
    }

    /// True when the sets share an id.
    pub fn intersects(&self, other: &IdSet) -> bool {
        !self.intersection(other).is_empty()
    }
}

fn parse_id(s: &str) -> Result<u32, String> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a non-negative integer"));
    }
    match s.parse::<u64>() {
        Ok(v) if v <= u64::from(MAX_ID) => Ok(v as u32),
        _ => Err(format!("{s} is larger than {MAX_ID}")),
    }
}

impl fmt::Display for IdSet {
    /// The canonical ranged form, e.g. `0-3,7`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for IdSet {
    type Err = IdSetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IdSet::parse(s)
    }
}

impl FromIterator<u32> for IdSet {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        IdSet::from_ids(iter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        for (input, canon) in [
            ("", ""),
            ("0", "0"),
            ("0-3,7", "0-3,7"),
            ("3,2,1,0", "0-3"),
            ("[1-2,4]", "1-2,4"),
            ("5-7,0-5", "0-7"),
            ("1,3,5", "1,3,5"),
        ] {
            assert_eq!(IdSet::parse(input).unwrap().to_string(), canon, "{input}");
        }
        for bad in [
            "-1",
            "a",
            "1-",
            "3-1",
            ",",
            "1,,2",
            "[1",
            "4294967295",
            "1-2-3",
        ] {
            assert!(IdSet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_ops() {
        let a = IdSet::parse("0-9").unwrap();
        let b = IdSet::parse("3-4,8-12").unwrap();
        assert_eq!(a.union(&b).to_string(), "0-12");
        assert_eq!(a.intersection(&b).to_string(), "3-4,8-9");
        assert_eq!(a.difference(&b).to_string(), "0-2,5-7");
        assert_eq!(b.difference(&a).to_string(), "10-12");
        assert!(IdSet::parse("3").unwrap().is_subset(&a));
        assert!(!b.is_subset(&a));
        assert!(a.intersects(&b));
        assert_eq!(a.len(), 10);
        assert!(a.contains(9) && !a.contains(10));
        let mut c = IdSet::new();
        c.insert(5);
        c.insert(1);
        c.insert(3);
        c.insert(2);
        assert_eq!(c.to_string(), "1-3,5");
    }

    #[test]
    fn brute_force_ops() {
        // Small exhaustive cross-check against BTreeSet.
        use std::collections::BTreeSet;
        let masks: Vec<u32> = (0..64u32)
            .map(|i| i.wrapping_mul(2654435761) & 0xff)
            .collect();
        for &ma in &masks {
            for &mb in &masks[..16] {
                let sa: BTreeSet<u32> = (0..8).filter(|i| ma & (1 << i) != 0).collect();
                let sb: BTreeSet<u32> = (0..8).filter(|i| mb & (1 << i) != 0).collect();
                let a = IdSet::from_ids(sa.iter().copied());
                let b = IdSet::from_ids(sb.iter().copied());
                let d: Vec<u32> = a.difference(&b).iter().collect();
                assert_eq!(d, sa.difference(&sb).copied().collect::<Vec<_>>());
                let u: Vec<u32> = a.union(&b).iter().collect();
                assert_eq!(u, sa.union(&sb).copied().collect::<Vec<_>>());
                let n: Vec<u32> = a.intersection(&b).iter().collect();
                assert_eq!(n, sa.intersection(&sb).copied().collect::<Vec<_>>());
                assert_eq!(IdSet::parse(&a.to_string()).unwrap(), a);
            }
        }
    }
}
