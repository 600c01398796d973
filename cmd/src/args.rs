//! The command line of `flux-pancake`, parsed by hand (three subcommands and
//! four options do not justify a parser dependency).
//!
//! The shape follows flux-core's C commands (`flux module`, `flux ping`):
//! `Usage:` lines, an option list, `unrecognized option` errors with a
//! `Try ... --help` hint. Usage errors exit 2, like flux-core's commands.

use pancake_core::options::parse_fsd;
use pancake_core::show::ColorWhen;

/// The program name in messages (flux runs us as `flux-pancake`).
pub const PROG: &str = "flux-pancake";

/// A subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `status`: backend and containers.
    Status,
    /// `map`: node × core map.
    Map,
    /// `jobs`: container jobs.
    Jobs,
}

/// (name, summary) of every subcommand, in help order.
const COMMANDS: &[(&str, Command, &str)] = &[
    (
        "status",
        Command::Status,
        "Show the Fluxion backend and each container's broker",
    ),
    (
        "map",
        Command::Map,
        "Show which container holds each core (node x core map)",
    ),
    (
        "jobs",
        Command::Jobs,
        "List container jobs with their application and Fluxion ids",
    ),
];

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    /// The subcommand.
    pub command: Command,
    /// `--json`: machine-readable output.
    pub json: bool,
    /// `--color[=WHEN]` (status and map).
    pub color: ColorWhen,
    /// `-t, --timeout=FSD`: how long to wait for the module's answer
    /// (seconds; 0 waits forever).
    pub timeout: f64,
}

/// How long the module's answer is awaited unless `--timeout` says.
pub const DEFAULT_TIMEOUT: f64 = 30.0;

/// The outcome of parsing.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// Run this.
    Run(Args),
    /// Print this help on stdout and exit 0.
    Help(String),
    /// A usage error: print it (and a hint) on stderr and exit 2.
    Usage(String),
}

fn opt(short: &str, long: &str, text: &str) -> String {
    let flag = if short.is_empty() {
        format!("      {long}")
    } else {
        format!("  {short}, {long}")
    };
    // Wrap the description at 80 columns, continuation lines under it, as
    // flux-core's optparse does.
    let mut out = format!("{flag:<25}");
    let mut col = out.len();
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 && col + 1 + word.len() > 80 {
            out.push('\n');
            out.push_str(&" ".repeat(25));
            col = 25;
        } else if i > 0 {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += word.len();
    }
    out.push('\n');
    out
}

/// The top-level help.
pub fn usage() -> String {
    let mut s = format!(
        "Usage: {PROG} COMMAND [OPTIONS]\n{}\nflux pancake subcommands:\n",
        opt("-h", "--help", "Display this message.")
    );
    for (name, _, text) in COMMANDS {
        s.push_str(&format!("   {name:<16}{text}\n"));
    }
    s
}

/// The help of one subcommand.
pub fn command_usage(c: Command) -> String {
    let (name, _, text) = COMMANDS
        .iter()
        .find(|(_, k, _)| *k == c)
        .copied()
        .unwrap_or(("", c, ""));
    let mut s = format!("Usage: {PROG} {name} [OPTIONS]\n{text}.\n");
    s.push_str(&opt("-h", "--help", "Display this message."));
    let json = match c {
        Command::Status => "Print the pancake.status answer as JSON",
        Command::Map => "Print each rank's free and held cores and GPUs as JSON",
        Command::Jobs => "Print the jobs as pancake.status reports them, as JSON",
    };
    s.push_str(&opt("", "--json", json));
    s.push_str(&opt(
        "-t",
        "--timeout=FSD",
        "Give up if the module has not answered after FSD (a Flux Standard Duration, e.g. 5s; default 30s; 0 waits forever)",
    ));
    if c != Command::Jobs {
        s.push_str(&opt(
            "",
            "--color[=WHEN]",
            "Use colour: auto (on a terminal, unless NO_COLOR is set), always or never; no WHEN means always",
        ));
    }
    s
}

/// Parse the arguments after the program name.
pub fn parse(argv: &[String]) -> Parsed {
    let mut it = argv.iter();
    // Before the subcommand only --help is an option, as in `flux module`.
    let command = match it.next().map(String::as_str) {
        None => return Parsed::Usage("missing subcommand".into()),
        Some("-h" | "--help") => return Parsed::Help(usage()),
        Some(s) if s.starts_with('-') => {
            return Parsed::Usage(format!("unrecognized option '{s}'"));
        }
        Some(s) => match COMMANDS.iter().find(|(n, _, _)| *n == s) {
            Some((_, c, _)) => *c,
            None => return Parsed::Usage(format!("Unknown subcommand: {s}")),
        },
    };
    let mut args = Args {
        command,
        json: false,
        color: ColorWhen::Auto,
        timeout: DEFAULT_TIMEOUT,
    };
    while let Some(a) = it.next() {
        let (name, value) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v)),
            _ => (a.as_str(), None),
        };
        match (name, value) {
            ("-h" | "--help", None) => return Parsed::Help(command_usage(command)),
            ("--json", None) => args.json = true,
            ("-t" | "--timeout", v) => {
                // `--timeout=FSD`, or the value as the next argument.
                let Some(v) = v.map(str::to_string).or_else(|| it.next().cloned()) else {
                    return Parsed::Usage(format!("option '{name}' requires an argument"));
                };
                args.timeout = match parse_fsd(&v) {
                    Some(t) if t >= 0.0 => t,
                    _ => {
                        return Parsed::Usage(format!(
                            "{name}: invalid duration '{v}' (e.g. 30s, 2m)"
                        ));
                    }
                };
            }
            ("--color", v) if command != Command::Jobs => {
                args.color = match v.map(ColorWhen::parse) {
                    None => ColorWhen::Always,
                    Some(Some(w)) => w,
                    Some(None) => {
                        return Parsed::Usage(format!(
                            "--color: invalid argument '{}' (use auto, always or never)",
                            v.unwrap_or_default()
                        ));
                    }
                }
            }
            (n, _) if n.starts_with('-') => {
                return Parsed::Usage(format!("unrecognized option '{a}'"));
            }
            _ => return Parsed::Usage(format!("unexpected argument '{a}'")),
        }
    }
    Parsed::Run(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Parsed {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn run(args: &[&str]) -> Args {
        match p(args) {
            Parsed::Run(a) => a,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn subcommands_and_options() {
        assert_eq!(run(&["status"]).command, Command::Status);
        assert_eq!(run(&["map"]).command, Command::Map);
        let j = run(&["jobs", "--json"]);
        assert_eq!((j.command, j.json), (Command::Jobs, true));
        assert!(!run(&["jobs"]).json);
        assert_eq!(run(&["map"]).color, ColorWhen::Auto);
        assert_eq!(run(&["map", "--color"]).color, ColorWhen::Always);
        assert_eq!(run(&["map", "--color=never"]).color, ColorWhen::Never);
        assert_eq!(run(&["status", "--color=auto"]).color, ColorWhen::Auto);
        assert_eq!(run(&["status"]).timeout, DEFAULT_TIMEOUT);
        assert_eq!(run(&["status", "--timeout=2m"]).timeout, 120.0);
        assert_eq!(run(&["jobs", "-t", "5s", "--json"]).timeout, 5.0);
        assert_eq!(run(&["map", "-t", "0"]).timeout, 0.0);
    }

    #[test]
    fn help() {
        match p(&["--help"]) {
            Parsed::Help(h) => {
                assert!(h.starts_with("Usage: flux-pancake COMMAND"), "{h}");
                for c in ["status", "map", "jobs"] {
                    assert!(h.contains(&format!("   {c} ")), "{h}");
                }
            }
            other => panic!("{other:?}"),
        }
        match p(&["map", "-h"]) {
            Parsed::Help(h) => {
                assert!(h.starts_with("Usage: flux-pancake map [OPTIONS]"), "{h}");
                assert!(h.contains("--json") && h.contains("--color[=WHEN]"), "{h}");
            }
            other => panic!("{other:?}"),
        }
        match p(&["jobs", "--help"]) {
            Parsed::Help(h) => assert!(!h.contains("--color"), "{h}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn usage_errors() {
        let usage = |args: &[&str]| match p(args) {
            Parsed::Usage(m) => m,
            other => panic!("{args:?}: {other:?}"),
        };
        assert_eq!(usage(&[]), "missing subcommand");
        assert_eq!(usage(&["bogus"]), "Unknown subcommand: bogus");
        assert_eq!(usage(&["--bogus"]), "unrecognized option '--bogus'");
        assert_eq!(
            usage(&["status", "--bogus"]),
            "unrecognized option '--bogus'"
        );
        assert_eq!(usage(&["status", "x"]), "unexpected argument 'x'");
        assert!(usage(&["map", "--color=blue"]).contains("invalid argument 'blue'"));
        // Options that take no value refuse one; jobs has no colour.
        assert!(usage(&["jobs", "--json=1"]).contains("unrecognized option"));
        assert!(usage(&["jobs", "--color"]).contains("unrecognized option"));
        assert!(usage(&["status", "-t"]).contains("requires an argument"));
        assert!(usage(&["status", "--timeout=soon"]).contains("invalid duration 'soon'"));
    }
}
