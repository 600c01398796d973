//! The command line: what to run ([`Mode`]s, [`Exec`] kinds) and how much
//! ([`Opts`]).

use std::path::PathBuf;

/// How a job gets to an application broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Straight to the application broker with an R the bench chose.
    Direct,
    /// Through the queue broker and pancake's embedded matcher.
    Pancake,
    /// The same with `pancake-fluxion` over loopback gRPC.
    Grpc,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Pancake => "pancake",
            Mode::Grpc => "pancake+grpc",
        }
    }
}

/// How a job runs on its application broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exec {
    /// `true` under a real job shell.
    Real,
    /// Flux's test exec (`run_duration=0`), put there by `bench-testexec`.
    Test,
}

impl Exec {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Exec::Real => "real",
            Exec::Test => "test",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Opts {
    pub(crate) jobs: usize,
    pub(crate) serial: usize,
    pub(crate) waiting: usize,
    pub(crate) modes: Vec<Mode>,
    pub(crate) execs: Vec<Exec>,
    pub(crate) direct_containers: usize,
    pub(crate) pipeline: usize,
    pub(crate) csv: Option<PathBuf>,
    pub(crate) perf: Option<PathBuf>,
    pub(crate) stall: f64,
    pub(crate) trace: bool,
    pub(crate) plot: Option<PathBuf>,
    /// Backlog sizes for the backlog scenario (empty: skip it).
    pub(crate) backlog: Vec<usize>,
    /// Small jobs per backlog size.
    pub(crate) backlog_small: usize,
}

const USAGE: &str = "usage: pancake-bench [--jobs N] [--serial N] [--waiting N] \
[--modes direct,pancake,grpc] [--exec real,test] [--direct-containers K] \
[--pipeline N] [--stall SECS] [--trace] [--csv FILE] [--plot FILE.png] [--perf DIR] \
[--backlog N,N,...] [--backlog-small N]";

pub(crate) fn parse_opts() -> Result<Opts, String> {
    let mut o = Opts {
        jobs: 1000,
        serial: 50,
        waiting: 10000,
        modes: vec![Mode::Direct, Mode::Pancake, Mode::Grpc],
        execs: vec![Exec::Real, Exec::Test],
        direct_containers: 1,
        pipeline: 64,
        csv: None,
        perf: None,
        stall: 60.0,
        trace: false,
        plot: None,
        backlog: vec![1000, 10000],
        backlog_small: 30,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or(format!("{a} needs a value\n{USAGE}"))
        };
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{a}: {e}"));
        match a.as_str() {
            "--jobs" => o.jobs = num(val()?)?,
            "--serial" => o.serial = num(val()?)?,
            "--waiting" => o.waiting = num(val()?)?,
            "--direct-containers" => o.direct_containers = num(val()?)?.clamp(1, 3),
            "--pipeline" => o.pipeline = num(val()?)?.max(1),
            "--csv" => o.csv = Some(PathBuf::from(val()?)),
            "--stall" => o.stall = num(val()?)? as f64,
            "--trace" => o.trace = true,
            "--plot" => o.plot = Some(PathBuf::from(val()?)),
            "--perf" => o.perf = Some(PathBuf::from(val()?)),
            "--backlog-small" => o.backlog_small = num(val()?)?.max(1),
            "--backlog" => {
                let v = val()?;
                o.backlog = if v == "0" || v.is_empty() {
                    Vec::new()
                } else {
                    v.split(',')
                        .map(|n| num(n.to_string()))
                        .collect::<Result<_, _>>()?
                };
                o.backlog.sort_unstable();
            }
            "--modes" => {
                o.modes = val()?
                    .split(',')
                    .map(|m| match m {
                        "direct" => Ok(Mode::Direct),
                        "pancake" => Ok(Mode::Pancake),
                        "grpc" => Ok(Mode::Grpc),
                        _ => Err(format!("unknown mode {m:?}\n{USAGE}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--exec" => {
                o.execs = val()?
                    .split(',')
                    .map(|m| match m {
                        "real" => Ok(Exec::Real),
                        "test" => Ok(Exec::Test),
                        _ => Err(format!("unknown exec {m:?}\n{USAGE}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "-h" | "--help" => return Err(USAGE.into()),
            _ => return Err(format!("unknown argument {a:?}\n{USAGE}")),
        }
    }
    Ok(o)
}
