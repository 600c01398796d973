//! RFC 29 hostlists: compressed lists of host names such as
//! `"flux-sample-[0-3,5]"`, `"a,b"` or `"node[01-03]"`.
//!
//! [`parse`] reads the bracketed form (counting before expanding, so a hostile
//! `"n[0-99999999999]"` is refused instead of exhausting memory) and
//! [`encode`] compresses a list the way flux-core's `hostlist_encode()` does:
//! hosts stay in the given order, a host joins the previous run when it has the
//! same prefix, a compatible zero-padding width and the next number, and
//! consecutive runs with one prefix share one bracket (`"n[1,3-4]"`).

/// Most hosts [`parse`] will expand; a larger list is refused.
pub const MAX_HOSTS: u64 = 1 << 20;

/// Most bytes of host names [`parse`] will expand (128 per host at
/// [`MAX_HOSTS`]): a long prefix repeated over many hosts is refused too.
pub const MAX_BYTES: u64 = 1 << 27;

/// Why a hostlist could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid hostlist {input:?}: {reason}")]
pub struct HostlistError {
    /// The text that failed to parse (shortened).
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

/// One `prefix[lo-hi,...]suffix` term, already split into numeric runs.
#[derive(Debug, Clone)]
struct Term {
    prefix: String,
    suffix: String,
    /// `(lo, hi, width)` runs; empty for a plain host name.
    runs: Vec<(u64, u64, usize)>,
}

impl Term {
    fn count(&self) -> u64 {
        if self.runs.is_empty() {
            1
        } else {
            self.runs.iter().map(|&(lo, hi, _)| hi - lo + 1).sum()
        }
    }

    /// Bytes of the expanded names (at most).
    fn bytes(&self) -> u64 {
        let fixed = (self.prefix.len() + self.suffix.len()) as u64;
        if self.runs.is_empty() {
            return fixed;
        }
        self.runs
            .iter()
            .map(|&(lo, hi, width)| {
                (hi - lo + 1).saturating_mul(fixed + width.max(digits(hi)) as u64)
            })
            .fold(0u64, u64::saturating_add)
    }
}

fn bytes(terms: &[Term]) -> u64 {
    terms
        .iter()
        .map(Term::bytes)
        .fold(0u64, u64::saturating_add)
}

fn too_many_bytes(s: &str, bytes: u64) -> HostlistError {
    error(
        s,
        &format!("expands to {bytes} bytes of host names, more than the limit of {MAX_BYTES}"),
    )
}

/// Number of hosts in a hostlist without expanding it.
pub fn count(s: &str) -> Result<u64, HostlistError> {
    Ok(terms(s)?
        .iter()
        .map(Term::count)
        .fold(0u64, u64::saturating_add))
}

/// Expands a hostlist into host names, in order. `""` is the empty list.
pub fn parse(s: &str) -> Result<Vec<String>, HostlistError> {
    let terms = terms(s)?;
    let n = terms
        .iter()
        .map(Term::count)
        .fold(0u64, u64::saturating_add);
    if n > MAX_HOSTS {
        return Err(error(
            s,
            &format!("{n} hosts is more than the limit of {MAX_HOSTS}"),
        ));
    }
    let b = bytes(&terms);
    if b > MAX_BYTES {
        return Err(too_many_bytes(s, b));
    }
    let mut out = Vec::with_capacity(n as usize);
    for t in terms {
        if t.runs.is_empty() {
            out.push(format!("{}{}", t.prefix, t.suffix));
        }
        for (lo, hi, width) in t.runs {
            for i in lo..=hi {
                out.push(format!(
                    "{}{:0width$}{}",
                    t.prefix,
                    i,
                    t.suffix,
                    width = width
                ));
            }
        }
    }
    Ok(out)
}

/// Expands several hostlist strings (Rv1 `nodelist` is an array of them).
pub fn parse_all<S: AsRef<str>>(items: &[S]) -> Result<Vec<String>, HostlistError> {
    let mut total = 0u64;
    let mut total_bytes = 0u64;
    for s in items {
        let t = terms(s.as_ref())?;
        total = total.saturating_add(t.iter().map(Term::count).fold(0u64, u64::saturating_add));
        total_bytes = total_bytes.saturating_add(bytes(&t));
    }
    if total > MAX_HOSTS {
        return Err(error(
            "",
            &format!("{total} hosts is more than the limit of {MAX_HOSTS}"),
        ));
    }
    if total_bytes > MAX_BYTES {
        return Err(too_many_bytes("", total_bytes));
    }
    let mut out = Vec::with_capacity(total as usize);
    for s in items {
        out.extend(parse(s.as_ref())?);
    }
    Ok(out)
}

fn error(s: &str, reason: &str) -> HostlistError {
    HostlistError {
        input: s.chars().take(200).collect(),
        reason: reason.to_string(),
    }
}

fn terms(s: &str) -> Result<Vec<Term>, HostlistError> {
    let s_trim = s.trim();
    let mut out = Vec::new();
    if s_trim.is_empty() {
        return Ok(out);
    }
    // Split on commas outside brackets.
    let mut depth = 0i32;
    let mut start = 0usize;
    let bytes = s_trim.as_bytes();
    let mut pieces = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'[' => {
                depth += 1;
                if depth > 1 {
                    return Err(error(s, "nested '['"));
                }
            }
            b']' => {
                depth -= 1;
                if depth < 0 {
                    return Err(error(s, "unbalanced ']'"));
                }
            }
            b',' if depth == 0 => {
                pieces.push(&s_trim[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(error(s, "unbalanced '['"));
    }
    pieces.push(&s_trim[start..]);
    for p in pieces {
        let p = p.trim();
        if p.is_empty() {
            return Err(error(s, "empty host name"));
        }
        if p.chars().any(char::is_whitespace) {
            return Err(error(s, &format!("host {p:?} contains whitespace")));
        }
        match p.find('[') {
            None => out.push(Term {
                prefix: p.to_string(),
                suffix: String::new(),
                runs: Vec::new(),
            }),
            Some(open) => {
                let close = p.find(']').ok_or_else(|| error(s, "unbalanced '['"))?;
                let suffix = &p[close + 1..];
                if suffix.contains('[') {
                    return Err(error(s, "only one bracketed range per host is supported"));
                }
                let inner = &p[open + 1..close];
                let mut runs = Vec::new();
                for r in inner.split(',') {
                    let (a, b) = r.split_once('-').unwrap_or((r, r));
                    let lo = parse_num(a)
                        .ok_or_else(|| error(s, &format!("bad number {a:?} in {p:?}")))?;
                    let hi = parse_num(b)
                        .ok_or_else(|| error(s, &format!("bad number {b:?} in {p:?}")))?;
                    if lo > hi {
                        return Err(error(s, &format!("range {a}-{b} is descending")));
                    }
                    runs.push((lo, hi, a.len()));
                }
                out.push(Term {
                    prefix: p[..open].to_string(),
                    suffix: suffix.to_string(),
                    runs,
                });
            }
        }
    }
    Ok(out)
}

fn parse_num(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 18 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A run of hosts `prefix{lo..=hi}` printed with zero padding to `width`,
/// or a single host without a number (`num == None`).
#[derive(Debug, Clone)]
struct Run {
    prefix: String,
    num: Option<(u64, u64)>,
    width: usize,
}

/// Splits `host` into prefix and trailing number, like flux's hostname parser.
fn split_host(host: &str) -> Run {
    let digits = host.bytes().rev().take_while(u8::is_ascii_digit).count();
    let (prefix, num) = host.split_at(host.len() - digits);
    match parse_num(num) {
        Some(n) => Run {
            prefix: prefix.to_string(),
            num: Some((n, n)),
            width: num.len(),
        },
        None => Run {
            prefix: host.to_string(),
            num: None,
            width: 0,
        },
    }
}

fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

fn zero_padded(n: u64, width: usize) -> usize {
    width.saturating_sub(digits(n))
}

/// flux-core's `width_equiv()`: can numbers printed with widths `wn` and `wm`
/// share one run? Adjusts one width to the other when they can.
fn width_equiv(n: u64, wn: &mut usize, m: u64, wm: &mut usize) -> bool {
    if *wn == *wm {
        return true;
    }
    let npad = zero_padded(n, *wn);
    let nmpad = zero_padded(n, *wm);
    let mpad = zero_padded(m, *wm);
    let mnpad = zero_padded(m, *wn);
    if npad != nmpad && mpad != mnpad {
        return false;
    }
    if npad != nmpad {
        *wm = *wn;
    } else {
        *wn = *wm;
    }
    true
}

/// Compresses host names into an RFC 29 hostlist, keeping their order.
pub fn encode<S: AsRef<str>>(hosts: &[S]) -> String {
    let mut runs: Vec<Run> = Vec::new();
    for h in hosts {
        let new = split_host(h.as_ref());
        if let (Some(last), Some((n, _))) = (runs.last_mut(), new.num)
            && let Some((lo, hi)) = last.num
            && last.prefix == new.prefix
            && hi.checked_add(1) == Some(n)
        {
            let mut wl = last.width;
            let mut wn = new.width;
            if width_equiv(lo, &mut wl, n, &mut wn) && wl == wn {
                last.width = wl;
                last.num = Some((lo, n));
                continue;
            }
        }
        runs.push(new);
    }
    let mut out = String::new();
    let mut i = 0;
    while i < runs.len() {
        if !out.is_empty() {
            out.push(',');
        }
        let first = &runs[i];
        let Some((lo, hi)) = first.num else {
            out.push_str(&first.prefix);
            i += 1;
            continue;
        };
        // Consecutive numbered runs with the same prefix share a bracket.
        let mut j = i + 1;
        while j < runs.len() && runs[j].num.is_some() && runs[j].prefix == first.prefix {
            j += 1;
        }
        out.push_str(&first.prefix);
        let bracket = j - i > 1 || lo != hi;
        if bracket {
            out.push('[');
        }
        for (k, r) in runs[i..j].iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            if let Some((lo, hi)) = r.num {
                out.push_str(&format!("{:0w$}", lo, w = r.width));
                if hi > lo {
                    out.push_str(&format!("-{:0w$}", hi, w = r.width));
                }
            }
        }
        if bracket {
            out.push(']');
        }
        i = j;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_examples() {
        assert_eq!(
            parse("flux-sample-[0-3,5]").unwrap(),
            [
                "flux-sample-0",
                "flux-sample-1",
                "flux-sample-2",
                "flux-sample-3",
                "flux-sample-5"
            ]
        );
        assert_eq!(parse("a,b").unwrap(), ["a", "b"]);
        assert_eq!(
            parse("node[01-03]").unwrap(),
            ["node01", "node02", "node03"]
        );
        assert_eq!(parse("node[9-10]").unwrap(), ["node9", "node10"]);
        assert_eq!(parse("n[1-2]-ib,x").unwrap(), ["n1-ib", "n2-ib", "x"]);
        assert!(parse("").unwrap().is_empty());
        for bad in [
            "a,,b",
            "n[1-",
            "n]",
            "n[3-1]",
            "n[a]",
            "n[[1]]",
            "n[0-99999999999]",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(count("n[0-99999999999]").unwrap(), 100_000_000_000);
    }

    #[test]
    fn long_names_are_bounded_in_bytes_not_only_in_hosts() {
        // 2^20 hosts is allowed, but not with a 200-byte prefix: 200 MiB of
        // names from 200 bytes of text (and 24 GiB from 23 kB, found by
        // pancake-fuzz), which an R's nodelist must never cost.
        let long = format!("{}[0-1048575]", "h".repeat(200));
        assert_eq!(count(&long).unwrap(), 1 << 20);
        let e = parse(&long).unwrap_err();
        assert!(e.reason.contains("bytes of host names"), "{e}");
        let e = parse_all(&[long.as_str()]).unwrap_err();
        assert!(e.reason.contains("bytes of host names"), "{e}");
        // Split over many items, the total counts.
        let piece = format!("{}[0-9999]", "h".repeat(200));
        let many: Vec<&str> = std::iter::repeat_n(piece.as_str(), 100).collect();
        assert!(parse_all(&many).is_err());
        // Real lists are far below the limit.
        assert_eq!(parse("flux-sample-[0-1048575]").unwrap().len(), 1 << 20);
    }

    #[test]
    fn encode_examples() {
        let e = |v: &[&str]| encode(v);
        assert_eq!(
            e(&["flux-sample-0", "flux-sample-1", "flux-sample-2"]),
            "flux-sample-[0-2]"
        );
        assert_eq!(e(&["a", "b"]), "a,b");
        assert_eq!(e(&["node01", "node02", "node03"]), "node[01-03]");
        assert_eq!(e(&["node9", "node10"]), "node[9-10]");
        assert_eq!(e(&["node1", "node3", "node4"]), "node[1,3-4]");
        assert_eq!(e(&["n3", "n1"]), "n[3,1]");
        assert_eq!(e(&["n1", "x", "n2"]), "n1,x,n2");
        assert_eq!(e(&["n1", "n01"]), "n[1,01]");
        assert_eq!(e(&["host"]), "host");
        assert_eq!(e(&["n5"]), "n5");
        assert_eq!(e(&[]), "");
    }

    #[test]
    fn roundtrip() {
        for hosts in [
            vec!["a1", "a2", "b", "a3", "c07", "c08", "c09", "c10"],
            vec!["x", "y", "z"],
            vec!["n0", "n2", "n4", "m1", "m2"],
        ] {
            let s = encode(&hosts);
            assert_eq!(parse(&s).unwrap(), hosts, "{s}");
        }
    }
}
