//! Mutators: byte/text level (flips, truncation, splicing, duplication,
//! dictionary tokens) and JSON-tree level (replace a value with an extreme,
//! drop or duplicate members, change types, nest, splice subtrees).

use serde_json::{Map, Value};

use crate::rng::Rng;

/// Numbers as JSON text: boundaries of every integer type the parsers use,
/// the crates' own limits (2^24 counts, 2^40 seconds, 2^20 hosts/ranks) and
/// floats at and beyond the edge of f64.
pub const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "2",
    "3",
    "7",
    "63",
    "64",
    "65",
    "255",
    "256",
    "1023",
    "1024",
    "65535",
    "65536",
    "1048575",
    "1048576",
    "1048577",
    "16777215",
    "16777216",
    "16777217",
    "2147483647",
    "2147483648",
    "-2147483648",
    "-2147483649",
    "4294967294",
    "4294967295",
    "4294967296",
    "1099511627776",
    "1099511627777",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "100000000000000000000000000000",
    "1e308",
    "-1e308",
    "1.7976931348623157e308",
    "1e309",
    "-1e309",
    "5e-324",
    "1e-400",
    "0.5",
    "-0.5",
    "1.5",
    "0.0",
    "1.0",
    "3.0",
    "1E2",
    "1e10",
    "2.5e9",
];

/// Things that are not numbers but may be taken for them.
pub const NOT_NUMBERS: &[&str] = &[
    "NaN",
    "-NaN",
    "Infinity",
    "-Infinity",
    "inf",
    "\"NaN\"",
    "\"nan\"",
    "\"inf\"",
    "\"-Infinity\"",
    "\"1e999\"",
    "\"0x10\"",
    "\" 7 \"",
    "\"+3\"",
    "\"3\"",
    "\"-1\"",
    "\"\"",
    "01",
    "1.",
    ".5",
    "+1",
    "0x1f",
];

/// Strings: empty, odd unicode, separators of every format, type names.
pub fn strings() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        " ",
        "0",
        "-1",
        "a",
        "ƒ",
        "é",
        "\u{0}",
        "\u{7f}",
        "\u{200b}",
        "\u{202e}",
        "\u{fffd}",
        "\u{10ffff}",
        "🥞",
        "\\",
        "\"",
        "/",
        "//",
        "/a/",
        "/cluster0",
        "/cluster0/",
        "..",
        "../etc",
        "a,b",
        "[",
        "]",
        "[]",
        "n[",
        "n]",
        "core",
        "gpu",
        "node",
        "slot",
        "memory",
        "socket",
        "cluster",
        "rack",
        "numanode",
        "task",
        "containment",
        "contains",
        "in",
        "true",
        "false",
        "null",
        "B",
        "GB",
        "MiB",
        "TB",
        "pB",
        "queue",
        "app",
        "embedded",
        "grpc://",
        "grpc://127.0.0.1:1",
        "local:///tmp/x",
        "fcfs",
        "easy",
        "first",
        "low",
        "hinodex",
        "none",
        "30s",
        "5m",
        "1d",
        "-1s",
        "1e400s",
        "nans",
        "infd",
        "lammps",
        "ior",
        "chatterbug",
        "pancake",
        "exception",
        "cancel",
        "timeout",
        "submit",
        "alloc",
        "start",
        "finish",
        "clean",
        "memo",
        "dependency-add",
        "dependency-remove",
        "urgency",
        "priority",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("x".repeat(300));
    v.push("x".repeat(70_000));
    v.push("ñ".repeat(2000));
    v.push("/c".repeat(5000));
    v.push("0,".repeat(3000) + "0");
    v
}

/// RFC 22 idsets, valid and not.
pub fn idsets() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        "0",
        "1",
        "0-3",
        "0-1,3",
        "[0-3]",
        "[0-3",
        "0-3]",
        "[]",
        "3-0",
        "0,",
        ",0",
        "0,,1",
        "0-",
        "-3",
        "0--3",
        "1-1",
        "0-0,0-0",
        "00",
        "01-03",
        " 1 ",
        "1 - 2",
        "+1",
        "0-4294967294",
        "0-4294967295",
        "4294967294",
        "4294967295",
        "4294967293-4294967294",
        "99999999999999999999",
        "0-4294967294,0-4294967294",
        "0-1048575",
        "0-1048576",
        "0-16777215",
        "7,3,5,1",
        "5-9,0-6",
        "٣",
        "０",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(
        (0..2000)
            .map(|i| (i * 2).to_string())
            .collect::<Vec<_>>()
            .join(","),
    );
    v.push(
        (0..2000)
            .rev()
            .map(|i| format!("{}-{}", i * 3, i * 3 + 1))
            .collect::<Vec<_>>()
            .join(","),
    );
    v
}

/// RFC 29 hostlists, valid and not.
pub fn hostlists() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        "n0",
        "n[0-3]",
        "n[0-999999999]",
        "n[0-999999999999999999]",
        "n[0-9999999999999999999]",
        "n[00-99]",
        "n[1-0]",
        "n[0-3],m[0-3]",
        "n[0-3]x",
        "n[0-1]x[0-1]",
        "n[[0]]",
        "n[",
        "n]",
        "[0-3]",
        "n[,]",
        "n[-]",
        "n[0-]",
        "a,b,,c",
        "n[000000000000000001-000000000000000003]",
        "flux-sample-[0-1048575]",
        "flux-sample-[0-1048576]",
        "ƒ[0-2]",
        "n[0-3,5,7-9]",
        " n[0-3] ",
        "n 0",
        "n01,n1,n001",
        "n9,n10,n11",
        "n[9-10]",
        "node-[0-1]",
        "flux-sample-0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(format!("{}[0-1048575]", "h".repeat(64)));
    v.push(
        (0..3000)
            .map(|i| format!("h{}", i * 2))
            .collect::<Vec<_>>()
            .join(","),
    );
    v
}

/// JSON fragments, including nesting deeper than serde_json's limit.
pub fn fragments() -> Vec<String> {
    let mut v: Vec<String> = [
        "null",
        "true",
        "false",
        "[]",
        "{}",
        "\"\"",
        "[null]",
        "{\"\":null}",
        "[[]]",
        "[{}]",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for depth in [100, 127, 128, 129, 5000] {
        v.push("[".repeat(depth) + &"]".repeat(depth));
        v.push("{\"a\":".repeat(depth) + "1" + &"}".repeat(depth));
    }
    v.push("[".repeat(100_000));
    v
}

/// The dictionaries, built once.
#[derive(Debug)]
pub struct Dict {
    pub strings: Vec<String>,
    pub idsets: Vec<String>,
    pub hostlists: Vec<String>,
    pub fragments: Vec<String>,
    /// Target-specific tokens (keys, type names).
    pub tokens: Vec<String>,
}

impl Dict {
    pub fn new(tokens: &[&str]) -> Dict {
        Dict {
            strings: strings(),
            idsets: idsets(),
            hostlists: hostlists(),
            fragments: fragments(),
            tokens: tokens.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Any token from any list.
    pub fn any_token(&self, rng: &mut Rng) -> String {
        match rng.below(7) {
            0 => rng.pick(NUMBERS).to_string(),
            1 => rng.pick(NOT_NUMBERS).to_string(),
            2 => rng.pick(&self.strings).clone(),
            3 => rng.pick(&self.idsets).clone(),
            4 => rng.pick(&self.hostlists).clone(),
            5 => rng.pick(&self.fragments).clone(),
            _ if !self.tokens.is_empty() => rng.pick(&self.tokens).clone(),
            _ => rng.pick(NUMBERS).to_string(),
        }
    }

    /// A string value: mostly short dictionary entries.
    pub fn any_string(&self, rng: &mut Rng) -> String {
        match rng.below(5) {
            0 => rng.pick(&self.idsets).clone(),
            1 => rng.pick(&self.hostlists).clone(),
            2 if !self.tokens.is_empty() => rng.pick(&self.tokens).clone(),
            3 => rng.pick(NUMBERS).to_string(),
            _ => rng.pick(&self.strings).clone(),
        }
    }
}

/// Random bytes (as text, lossily), printable ASCII or JSON-ish token soup.
pub fn random_text(rng: &mut Rng, dict: &Dict) -> String {
    match rng.below(3) {
        0 => {
            let n = rng.small(256) as usize;
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        1 => {
            let n = rng.small(256) as usize;
            (0..n)
                .map(|_| {
                    let set = b"{}[]\",:-0123456789 abcnrsltue.\\/";
                    if rng.one_in(3) {
                        char::from(*rng.pick(set))
                    } else {
                        char::from(rng.range(0x20, 0x7e) as u8)
                    }
                })
                .collect()
        }
        _ => {
            let n = rng.small(40) as usize;
            let glue = ["{", "}", "[", "]", ",", ":", "\""];
            let mut s = String::new();
            for _ in 0..n {
                if rng.one_in(2) {
                    s.push_str(rng.pick_str(&glue));
                } else if rng.one_in(2) {
                    s.push('"');
                    s.push_str(&dict.any_string(rng));
                    s.push('"');
                } else {
                    s.push_str(&dict.any_token(rng));
                }
            }
            s
        }
    }
}

const INTERESTING_BYTES: &[u8] = b"[]{}\",:-0919 \\/\0\x7f\xff\xc3\xe2\n.e+";

fn span(rng: &mut Rng, len: usize) -> (usize, usize) {
    let a = rng.below(len + 1);
    let max = (len - a).min(if rng.one_in(4) { len } else { 32 });
    (a, a + rng.below(max + 1))
}

/// One textual mutation. `donors` are other inputs to splice from.
pub fn mutate_text_once(rng: &mut Rng, s: &str, dict: &Dict, donors: &[&str]) -> String {
    let mut b = s.as_bytes().to_vec();
    let len = b.len();
    match rng.below(12) {
        // Bit flip.
        0 if len > 0 => {
            let i = rng.below(len);
            b[i] ^= 1 << rng.below(8);
        }
        // Interesting byte.
        1 if len > 0 => {
            let i = rng.below(len);
            b[i] = *rng.pick(INTERESTING_BYTES);
        }
        // Truncate.
        2 => b.truncate(rng.below(len + 1)),
        // Delete a range.
        3 => {
            let (a, e) = span(rng, len);
            b.drain(a..e);
        }
        // Duplicate a range (possibly many times).
        4 => {
            let (a, e) = span(rng, len);
            let chunk = b[a..e].to_vec();
            let times = if rng.one_in(8) {
                rng.range(2, 2000) as usize
            } else {
                1
            };
            // At most 1 MiB more per mutation.
            let times = times.min((1 << 20) / chunk.len().max(1)).max(1);
            let at = rng.below(len + 1);
            let mut ins = Vec::with_capacity(chunk.len() * times);
            for _ in 0..times {
                ins.extend_from_slice(&chunk);
            }
            b.splice(at..at, ins);
        }
        // Splice from a donor.
        5 if !donors.is_empty() => {
            let d = rng.pick(donors).as_bytes();
            let (da, de) = span(rng, d.len());
            let (a, e) = span(rng, len);
            b.splice(a..e, d[da..de].iter().copied());
        }
        // Insert a dictionary token.
        6 => {
            let at = rng.below(len + 1);
            let t = dict.any_token(rng);
            b.splice(at..at, t.into_bytes());
        }
        // Replace a digit run with an extreme number.
        7 => {
            if let Some((a, e)) = pick_run(rng, &b, |c| c.is_ascii_digit() || c == b'.') {
                let n = if rng.one_in(4) {
                    rng.pick(NOT_NUMBERS)
                } else {
                    rng.pick(NUMBERS)
                };
                b.splice(a..e, n.bytes());
            }
        }
        // Replace the contents of a quoted string.
        8 => {
            if let Some((a, e)) = pick_quoted(rng, &b) {
                let t = dict.any_string(rng);
                let t = serde_json::to_string(&t).unwrap_or_default();
                // Keep the quotes of the original: insert the escaped body.
                let body = t
                    .get(1..t.len().saturating_sub(1))
                    .unwrap_or("")
                    .to_string();
                b.splice(a..e, body.into_bytes());
            }
        }
        // Swap two ranges.
        9 if len > 1 => {
            let (a0, a1) = span(rng, len / 2);
            let (c0, c1) = span(rng, len / 2);
            let (c0, c1) = (c0 + len / 2, c1 + len / 2);
            let first = b[a0..a1].to_vec();
            let second = b[c0..c1].to_vec();
            b.splice(c0..c1, first);
            b.splice(a0..a1, second);
        }
        // Wrap in brackets/braces or prepend junk.
        10 => {
            let (pre, post): (&[u8], &[u8]) = *rng.pick(&[
                (b"[".as_slice(), b"]".as_slice()),
                (b"{\"a\":", b"}"),
                (b" ", b" "),
                (b"", b"\0"),
                (b"\xef\xbb\xbf", b""),
                (b"", b"{}"),
            ]);
            b.splice(0..0, pre.iter().copied());
            b.extend_from_slice(post);
        }
        // Insert a random byte.
        _ => {
            let at = rng.below(len + 1);
            b.insert(at, rng.next_u64() as u8);
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// One to several stacked textual mutations.
pub fn mutate_text(rng: &mut Rng, s: &str, dict: &Dict, donors: &[&str]) -> String {
    let n = 1 + rng.small(6) as usize;
    let mut out = s.to_string();
    for _ in 0..n {
        out = mutate_text_once(rng, &out, dict, donors);
    }
    out
}

fn pick_run(rng: &mut Rng, b: &[u8], f: impl Fn(u8) -> bool) -> Option<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if f(b[i]) {
            let s = i;
            while i < b.len() && f(b[i]) {
                i += 1;
            }
            runs.push((s, i));
        } else {
            i += 1;
        }
    }
    if runs.is_empty() {
        None
    } else {
        Some(*rng.pick(&runs))
    }
}

fn pick_quoted(rng: &mut Rng, b: &[u8]) -> Option<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'"' {
            let s = i + 1;
            let mut j = s;
            while j < b.len() && b[j] != b'"' {
                if b[j] == b'\\' {
                    j += 1;
                }
                j += 1;
            }
            if j < b.len() {
                spans.push((s, j));
            }
            i = j + 1;
        } else {
            i += 1;
        }
    }
    if spans.is_empty() {
        None
    } else {
        Some(*rng.pick(&spans))
    }
}

/// Mutates an idset string in place of its numbers and separators.
pub fn mutate_idset(rng: &mut Rng, s: &str, dict: &Dict) -> String {
    match rng.below(6) {
        0 => rng.pick(&dict.idsets).clone(),
        1 => format!("{s},{}", rng.pick(&dict.idsets)),
        2 => {
            let lo = rng.range(0, u64::from(u32::MAX));
            let hi = if rng.one_in(2) {
                lo.saturating_add(rng.small(100))
            } else {
                rng.range(0, u64::from(u32::MAX) + 1)
            };
            format!("{lo}-{hi}")
        }
        3 => format!("[{s}]"),
        4 => {
            let n = rng.small(3000);
            (0..n)
                .map(|i| (i * rng.range(1, 3)).to_string())
                .collect::<Vec<_>>()
                .join(",")
        }
        _ => mutate_text(rng, s, dict, &[]),
    }
}

/// Mutates a hostlist string.
pub fn mutate_hostlist(rng: &mut Rng, s: &str, dict: &Dict) -> String {
    match rng.below(5) {
        0 => rng.pick(&dict.hostlists).clone(),
        1 => format!("{s},{}", rng.pick(&dict.hostlists)),
        2 => {
            let lo = rng.small(1 << 20);
            let hi = lo + rng.small(1 << 21);
            let w = rng.small(20) as usize;
            format!("h[{lo:0w$}-{hi}]")
        }
        3 => {
            // Same prefix, repeated or padded differently.
            let n = rng.small(50);
            (0..n)
                .map(|i| {
                    if rng.one_in(3) {
                        format!("n{i:03}")
                    } else {
                        format!("n{}", i * rng.range(1, 2))
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
        }
        _ => mutate_text(rng, s, dict, &[]),
    }
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count_nodes).sum(),
        Value::Object(o) => o.values().map(count_nodes).sum(),
        _ => 0,
    }
}

fn nth_mut<'a>(v: &'a mut Value, n: &mut usize) -> Option<&'a mut Value> {
    if *n == 0 {
        return Some(v);
    }
    *n -= 1;
    match v {
        Value::Array(a) => a.iter_mut().find_map(|c| nth_mut(c, n)),
        Value::Object(o) => o.values_mut().find_map(|c| nth_mut(c, n)),
        _ => None,
    }
}

/// The `n`-th node in preorder (0 = the root); `n` must be below `count_nodes(v)`.
fn node_at(v: &mut Value, n: usize) -> &mut Value {
    let mut k = n;
    nth_mut(v, &mut k).expect("node index within the document")
}

fn random_node(rng: &mut Rng, donors: &[&Value]) -> Value {
    if donors.is_empty() {
        return Value::Null;
    }
    let d = rng.pick(donors);
    let n = count_nodes(d);
    let mut c = (*d).clone();
    node_at(&mut c, rng.below(n)).take()
}

/// A random scalar or small structure.
pub fn random_value(rng: &mut Rng, dict: &Dict) -> Value {
    match rng.below(8) {
        0 => Value::Null,
        1 => Value::Bool(rng.one_in(2)),
        2 | 3 => serde_json::from_str(rng.pick_str(NUMBERS)).unwrap_or(Value::Null),
        4 | 5 => Value::String(dict.any_string(rng)),
        6 => Value::Array(Vec::new()),
        _ => Value::Object(Map::new()),
    }
}

/// One structural mutation of a JSON document.
pub fn mutate_value_once(rng: &mut Rng, root: &mut Value, dict: &Dict, donors: &[&Value]) {
    let n = count_nodes(root);
    let node = node_at(root, rng.below(n));
    match rng.below(14) {
        0 => *node = random_value(rng, dict),
        1 => {
            if let Ok(v) = serde_json::from_str(rng.pick_str(NUMBERS)) {
                *node = v;
            }
        }
        2 => *node = Value::String(dict.any_string(rng)),
        3 => match node {
            Value::Object(o) if !o.is_empty() => {
                let k = o
                    .keys()
                    .nth(rng.below(o.len()))
                    .cloned()
                    .unwrap_or_default();
                o.remove(&k);
            }
            Value::Array(a) if !a.is_empty() => {
                a.remove(rng.below(a.len()));
            }
            _ => *node = Value::Null,
        },
        4 => match node {
            Value::Array(a) if !a.is_empty() => {
                let i = rng.below(a.len());
                let times = if rng.one_in(4) {
                    rng.range(2, 300) as usize
                } else {
                    1
                };
                let item = a[i].clone();
                for _ in 0..times {
                    a.insert(i, item.clone());
                }
            }
            Value::Object(o) => {
                let k = if !dict.tokens.is_empty() && rng.one_in(2) {
                    rng.pick(&dict.tokens).clone()
                } else {
                    dict.any_string(rng)
                };
                o.insert(k, random_value(rng, dict));
            }
            _ => {}
        },
        5 => {
            // Type confusion: a number as a string and back, a scalar in an array.
            *node = match node.take() {
                Value::Number(n) => Value::String(n.to_string()),
                Value::String(s) => match s.parse::<f64>() {
                    Ok(_) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
                    Err(_) => Value::Array(vec![Value::String(s)]),
                },
                Value::Bool(b) => Value::String(b.to_string()),
                Value::Array(mut a) if a.len() == 1 => a.pop().unwrap_or(Value::Null),
                other => Value::Array(vec![other]),
            }
        }
        6 => {
            // Nest deeper.
            let depth = 1 + rng.small(40) as usize;
            let mut v = node.take();
            for _ in 0..depth {
                v = if rng.one_in(2) {
                    Value::Array(vec![v])
                } else {
                    let mut m = Map::new();
                    m.insert("with".into(), v);
                    Value::Object(m)
                };
            }
            *node = v;
        }
        7 => {
            // Numeric tweak.
            if let Value::Number(n) = node {
                let v = if let Some(i) = n.as_i64() {
                    let d = *rng.pick(&[1i64, -1, 2, -2, 64, -64]);
                    match rng.below(3) {
                        0 => Value::from(i.wrapping_add(d)),
                        1 => Value::from(i.wrapping_neg()),
                        _ => Value::from(i as f64 + 0.5),
                    }
                } else if let Some(u) = n.as_u64() {
                    Value::from(u.wrapping_add(1))
                } else {
                    Value::from(n.as_f64().unwrap_or(0.0) * 1e300)
                };
                *node = v;
            } else {
                *node = serde_json::from_str(rng.pick_str(NUMBERS)).unwrap_or(Value::Null);
            }
        }
        8 => {
            // String tweak: idset/hostlist aware.
            if let Value::String(s) = node {
                let t = match rng.below(4) {
                    0 => mutate_idset(rng, s, dict),
                    1 => mutate_hostlist(rng, s, dict),
                    2 => s.repeat(
                        (rng.range(2, 50) as usize)
                            .min((1 << 20) / s.len().max(1))
                            .max(1),
                    ),
                    _ => mutate_text(rng, s, dict, &[]),
                };
                *s = t;
            } else {
                *node = Value::String(dict.any_string(rng));
            }
        }
        9 | 10 => *node = random_node(rng, donors),
        11 => {
            // Rename a key.
            if let Value::Object(o) = node
                && !o.is_empty()
            {
                let k = o
                    .keys()
                    .nth(rng.below(o.len()))
                    .cloned()
                    .unwrap_or_default();
                if let Some(v) = o.remove(&k) {
                    let nk = if !dict.tokens.is_empty() && rng.one_in(2) {
                        rng.pick(&dict.tokens).clone()
                    } else {
                        mutate_text_once(rng, &k, dict, &[])
                    };
                    o.insert(nk, v);
                }
            }
        }
        12 => {
            // Empty a container.
            match node {
                Value::Array(a) => a.clear(),
                Value::Object(o) => o.clear(),
                _ => *node = Value::Array(Vec::new()),
            }
        }
        _ => {
            // Insert a donor subtree into an array or object.
            let sub = random_node(rng, donors);
            match node {
                Value::Array(a) => {
                    let at = rng.below(a.len() + 1);
                    a.insert(at, sub);
                }
                Value::Object(o) => {
                    let k = if !dict.tokens.is_empty() {
                        rng.pick(&dict.tokens).clone()
                    } else {
                        "x".into()
                    };
                    o.insert(k, sub);
                }
                _ => *node = sub,
            }
        }
    }
}

/// Several structural mutations, then the document as text (sometimes with
/// a textual mutation on top).
pub fn mutate_json(
    rng: &mut Rng,
    doc: &Value,
    dict: &Dict,
    donors: &[&Value],
    text_donors: &[&str],
) -> String {
    let mut v = doc.clone();
    let n = 1 + rng.small(5) as usize;
    for _ in 0..n {
        mutate_value_once(rng, &mut v, dict, donors);
    }
    let text = if rng.one_in(4) {
        serde_json::to_string_pretty(&v)
    } else {
        serde_json::to_string(&v)
    }
    .unwrap_or_default();
    if rng.one_in(5) {
        mutate_text(rng, &text, dict, text_donors)
    } else {
        text
    }
}
