//! Module options: `flux module load pancake key=value ...` and the
//! `[pancake]` table of the broker's TOML config.
//!
//! Arguments win over the config table; a config reload re-reads the table.
//! Unknown keys are errors, so a typo fails the load with a reason instead of
//! being silently ignored.

use serde_json::{Value, json};

/// Parsed options.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Where Fluxion is: `None` for the embedded matcher, else a gRPC address.
    pub fluxion: Option<String>,
    /// Fluxion match policy, by flux-sched's names (see `fluxion::Policy`).
    pub policy: String,
    /// How waiting jobs are taken: `fcfs`, `easy` or `conservative`.
    pub queue_policy: crate::dispatch::QueuePolicy,
    /// Most jobs a scheduling pass asks Fluxion about (Fluxion's
    /// `queue-depth`).
    pub queue_depth: u32,
    /// With `conservative`, most reservations a pass makes per queue
    /// (`None`: as many as `queue-depth`).
    pub reservation_depth: Option<u32>,
    /// Jobs without a container run on the queue broker (`false`), or are
    /// refused at submit (`true`, `local-jobs=refuse`).
    pub refuse_local: bool,
    /// The Flux Operator view root: containers are found from
    /// `meta/<i>-<name>` and reached at `run/flux/local-<i>`; their resources
    /// are read from each broker's `resource.R`.
    pub view: Option<String>,
    /// Application brokers named explicitly: (name, URI).
    pub brokers: Vec<(String, String)>,
    /// Application brokers refuse every job not forwarded by pancake.
    pub strict: bool,
    /// The jobtap plugin to load on application brokers.
    pub plugin: String,
    /// Seconds after which the cores of a lost broker's jobs go back to
    /// Fluxion even if the broker has not returned (`None`, `never`: only
    /// when it returns without them).
    pub lost_grace: Option<f64>,
    /// Keys given on the command line (they override the config table).
    from_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fluxion: None,
            policy: "first".into(),
            queue_policy: crate::dispatch::QueuePolicy::Fcfs,
            queue_depth: crate::dispatch::queue::DEFAULT_QUEUE_DEPTH,
            reservation_depth: None,
            refuse_local: false,
            view: None,
            brokers: Vec::new(),
            strict: false,
            plugin: "pancake-bypass.so".into(),
            lost_grace: Some(DEFAULT_LOST_GRACE),
            from_args: Vec::new(),
        }
    }
}

/// The default `lost-grace`, seconds. In a Flux Operator pod an
/// application broker is its container's main process: when it dies,
/// Kubernetes restarts the container and its tasks die with it, so a lost
/// broker's cores are free again soon (Slurm gives a node that stops
/// answering `SlurmdTimeout`, 300 s by default, before its jobs fail and
/// its resources return; a container restart takes seconds). A minute
/// leaves time for a broker that is only slow to answer to come back.
pub const DEFAULT_LOST_GRACE: f64 = 60.0;

/// Every key pancake accepts.
const KEYS: &[&str] = &[
    "fluxion",
    "policy",
    "queue-policy",
    "queue-depth",
    "reservation-depth",
    "local-jobs",
    "view",
    "broker",
    "strict",
    "plugin",
    "lost-grace",
];

/// A Flux Standard Duration (RFC 23): a number with an optional `s`, `m`,
/// `h` or `d` suffix, in seconds.
pub fn parse_fsd(v: &str) -> Option<f64> {
    let (num, mult) = match v.char_indices().last()? {
        (i, 's') => (&v[..i], 1.0),
        (i, 'm') => (&v[..i], 60.0),
        (i, 'h') => (&v[..i], 3600.0),
        (i, 'd') => (&v[..i], 86400.0),
        _ => (v, 1.0),
    };
    let n: f64 = num.parse().ok()?;
    let secs = n * mult;
    (secs.is_finite() && secs >= 0.0).then_some(secs)
}

/// A depth: a whole number from 1 to 100,000.
fn parse_depth(key: &str, v: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if (1..=100_000).contains(&n) => Ok(n),
        _ => Err(format!(
            "{key}={v}: expected a whole number from 1 to 100000"
        )),
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("{key}={v}: expected true or false")),
    }
}

impl Options {
    /// Parse module arguments (`key=value` words).
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options::default();
        for a in args {
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| format!("argument {a:?} is not key=value"))?;
            o.set(k, v)?;
            o.from_args.push(k.to_string());
        }
        Ok(o)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "fluxion" => {
                self.fluxion = match value {
                    "" | "embedded" => None,
                    v if v.starts_with("grpc://") => Some(v.to_string()),
                    v => {
                        return Err(format!(
                            "fluxion={v}: expected 'embedded' or grpc://HOST:PORT"
                        ));
                    }
                };
                Ok(())
            }
            "policy" => {
                fluxion::Policy::parse(value).map_err(|e| format!("policy={value}: {e}"))?;
                self.policy = value.to_string();
                Ok(())
            }
            "queue-policy" => {
                self.queue_policy =
                    crate::dispatch::QueuePolicy::parse(value).ok_or_else(|| {
                        format!("queue-policy={value}: expected fcfs, easy or conservative")
                    })?;
                Ok(())
            }
            "queue-depth" => {
                self.queue_depth = parse_depth(key, value)?;
                Ok(())
            }
            "reservation-depth" => {
                self.reservation_depth = Some(parse_depth(key, value)?);
                Ok(())
            }
            "local-jobs" => {
                self.refuse_local = match value {
                    "run" => false,
                    "refuse" => true,
                    _ => return Err(format!("local-jobs={value}: expected run or refuse")),
                };
                Ok(())
            }
            "view" => {
                self.view = (!value.is_empty()).then(|| value.to_string());
                Ok(())
            }
            "broker" => {
                let (name, uri) = value
                    .split_once('=')
                    .ok_or_else(|| format!("broker={value}: expected broker=NAME=local:///path"))?;
                if name.is_empty() || !uri.contains("://") {
                    return Err(format!(
                        "broker={value}: expected broker=NAME=local:///path"
                    ));
                }
                self.brokers.retain(|(n, _)| n != name);
                self.brokers.push((name.to_string(), uri.to_string()));
                Ok(())
            }
            "strict" => {
                self.strict = parse_bool(key, value)?;
                Ok(())
            }
            "plugin" => {
                self.plugin = value.to_string();
                Ok(())
            }
            "lost-grace" => {
                self.lost_grace = match value {
                    "never" | "none" => None,
                    v => Some(parse_fsd(v).ok_or_else(|| {
                        format!("lost-grace={v}: expected a duration (30, 30s, 5m) or never")
                    })?),
                };
                Ok(())
            }
            _ => Err(format!(
                "unknown option {key:?} (known: {})",
                KEYS.join(", ")
            )),
        }
    }

    /// Apply the `[pancake]` table of the instance config (keys given as
    /// arguments keep their argument values).
    pub fn apply_config(&mut self, conf: &Value) -> Result<(), String> {
        let Some(table) = conf.get("pancake") else {
            return Ok(());
        };
        let table = table.as_object().ok_or("[pancake] must be a table")?;
        for (k, v) in table {
            // TOML keys may use '_' where module arguments use '-'.
            let key = k.replace('_', "-");
            if self
                .from_args
                .iter()
                .any(|a| *a == key || (key == "brokers" && a == "broker"))
            {
                continue;
            }
            if key == "brokers" {
                // brokers = { lammps = "local:///...", ior = "local:///..." }
                let t = v
                    .as_object()
                    .ok_or("[pancake] brokers: expected a table of name = \"URI\"")?;
                for (name, uri) in t {
                    let uri = uri
                        .as_str()
                        .ok_or("[pancake] brokers: URIs must be strings")?;
                    self.set("broker", &format!("{name}={uri}"))
                        .map_err(|e| format!("[pancake] {e}"))?;
                }
                continue;
            }
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                _ => {
                    return Err(format!(
                        "[pancake] {k}: expected a string, number or boolean"
                    ));
                }
            };
            self.set(&key, &text)
                .map_err(|e| format!("[pancake] {e}"))?;
        }
        Ok(())
    }

    /// The scheduling parameters these options set.
    pub fn sched_params(&self) -> crate::dispatch::SchedParams {
        crate::dispatch::SchedParams {
            policy: self.queue_policy,
            queue_depth: self.queue_depth,
            reservation_depth: self.reservation_depth,
        }
    }

    /// The options as JSON (for `pancake.status`).
    pub fn to_json(&self) -> Value {
        json!({
            "fluxion": self.fluxion.as_deref().unwrap_or("embedded"),
            "policy": self.policy,
            "queue-policy": self.queue_policy.name(),
            "queue-depth": self.queue_depth,
            "reservation-depth": self.sched_params().reservations(),
            "local-jobs": if self.refuse_local { "refuse" } else { "run" },
            "view": self.view,
            "brokers": self.brokers.iter().map(|(n, u)| json!({"name": n, "uri": u})).collect::<Vec<_>>(),
            "strict": self.strict,
            "plugin": self.plugin,
            "lost-grace": match self.lost_grace {
                Some(g) => json!(g),
                None => json!("never"),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_lost_grace() {
        assert_eq!(parse_fsd("30"), Some(30.0));
        assert_eq!(parse_fsd("1.5m"), Some(90.0));
        assert_eq!(parse_fsd("2h"), Some(7200.0));
        assert_eq!(parse_fsd("1d"), Some(86400.0));
        for bad in ["", "-1", "5x", "inf", "m"] {
            assert_eq!(parse_fsd(bad), None, "{bad}");
        }
        // Finite numbers whose product with the unit is not (pancake-fuzz).
        for bad in ["1e308m", "1e307d", "1.7976931348623157e308h"] {
            assert_eq!(parse_fsd(bad), None, "{bad}");
        }
        assert!(Options::parse(&["lost-grace=1e308m".into()]).is_err());
        let o = Options::parse(&["lost-grace=5m".into()]).unwrap();
        assert_eq!(o.lost_grace, Some(300.0));
        assert_eq!(
            Options::parse(&[]).unwrap().lost_grace,
            Some(DEFAULT_LOST_GRACE),
            "bounded by default"
        );
        for never in ["never", "none"] {
            let o = Options::parse(&[format!("lost-grace={never}")]).unwrap();
            assert_eq!(o.lost_grace, None);
            assert_eq!(o.to_json()["lost-grace"], "never");
        }
        assert!(Options::parse(&["lost-grace=soon".into()]).is_err());
        assert!(Options::parse(&["lost-grace=".into()]).is_err());
    }

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_fluxion() {
        let o = Options::parse(&args(&["fluxion=grpc://127.0.0.1:4242"])).unwrap();
        assert_eq!(o.fluxion.as_deref(), Some("grpc://127.0.0.1:4242"));
        assert_eq!(
            Options::parse(&args(&["fluxion=embedded"]))
                .unwrap()
                .fluxion,
            None
        );
    }

    #[test]
    fn rejects_unknown_and_malformed() {
        assert!(
            Options::parse(&args(&["bogus=1"]))
                .unwrap_err()
                .contains("unknown option")
        );
        assert!(
            Options::parse(&args(&["fluxion"]))
                .unwrap_err()
                .contains("not key=value")
        );
        assert!(Options::parse(&args(&["fluxion=http://x"])).is_err());
    }

    #[test]
    fn all_options() {
        let o = Options::parse(&args(&[
            "policy=lonode",
            "queue-policy=easy",
            "view=/mnt/flux/view",
            "broker=lammps=local:///tmp/l",
            "broker=ior=local:///tmp/i",
            "strict=true",
            "plugin=/x/pancake-bypass.so",
        ]))
        .unwrap();
        assert_eq!(o.policy, "lonode");
        assert_eq!(o.queue_policy, crate::dispatch::QueuePolicy::Easy);
        assert_eq!(o.view.as_deref(), Some("/mnt/flux/view"));
        assert_eq!(o.brokers.len(), 2);
        assert!(o.strict);
        assert!(Options::parse(&args(&["policy=nope"])).is_err());
        assert!(Options::parse(&args(&["queue-policy=lifo"])).is_err());
        assert!(Options::parse(&args(&["broker=lammps"])).is_err());
        assert!(Options::parse(&args(&["strict=maybe"])).is_err());
        let o = Options::parse(&args(&[
            "queue-policy=conservative",
            "queue-depth=8",
            "reservation-depth=4",
            "local-jobs=refuse",
        ]))
        .unwrap();
        let p = o.sched_params();
        assert_eq!(p.policy, crate::dispatch::QueuePolicy::Conservative);
        assert_eq!((p.queue_depth, p.reservations()), (8, 4));
        assert!(o.refuse_local);
        let d = Options::default();
        assert_eq!((d.queue_depth, d.refuse_local), (32, false));
        assert_eq!(d.sched_params().reservations(), 0, "fcfs reserves nothing");
        for bad in [
            "queue-depth=0",
            "queue-depth=x",
            "reservation-depth=-1",
            "local-jobs=maybe",
        ] {
            assert!(Options::parse(&args(&[bad])).is_err(), "{bad}");
        }
        let mut o = Options::default();
        o.apply_config(
            &json!({"pancake": {"brokers": {"a": "local:///a"}, "queue_policy": "easy"}}),
        )
        .unwrap();
        assert_eq!(o.brokers, vec![("a".to_string(), "local:///a".to_string())]);
        assert_eq!(o.queue_policy, crate::dispatch::QueuePolicy::Easy);
    }

    #[test]
    fn config_table_applies_but_args_win() {
        let mut o = Options::parse(&args(&["fluxion=grpc://a:1"])).unwrap();
        o.apply_config(&json!({"pancake": {"fluxion": "grpc://b:2"}}))
            .unwrap();
        assert_eq!(o.fluxion.as_deref(), Some("grpc://a:1"));
        let mut o = Options::default();
        o.apply_config(&json!({"pancake": {"fluxion": "grpc://b:2"}}))
            .unwrap();
        assert_eq!(o.fluxion.as_deref(), Some("grpc://b:2"));
        assert!(o.apply_config(&json!({"pancake": {"nope": 1}})).is_err());
        assert!(o.apply_config(&json!({"pancake": 3})).is_err());
    }
}
