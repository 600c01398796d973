//! `pancake-pod`: start the simulated MiniCluster pod of `t/` by hand.
//!
//! ```text
//! pancake-pod hold [--containers a,b,c] [--nodes N] [--cores C]
//!     start a pod, print its view root, and keep it until stdin closes
//! pancake-pod demo [--installed]
//!     start the default pod, load pancake, show every broker's resources
//! ```

use std::io::Read;

use pancake_pod::{Pod, PodSpec, skip_reason};

fn usage() -> ! {
    eprintln!("usage: pancake-pod hold [--containers a,b,c] [--nodes N] [--cores C] | demo [--installed]");
    std::process::exit(2);
}

fn parse_spec(args: &[String]) -> PodSpec {
    let mut spec = PodSpec::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--containers" => spec.containers = v.split(',').map(str::to_string).collect(),
            "--nodes" => spec.nodes = v.parse().unwrap_or_else(|_| usage()),
            "--cores" => spec.cores = v.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    spec
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(reason) = skip_reason() {
        eprintln!("pancake-pod: flux-core is not available ({reason})");
        std::process::exit(1);
    }
    let result = match args.first().map(String::as_str) {
        Some("hold") => hold(parse_spec(&args[1..])),
        Some("demo") => demo(args.get(1).map(String::as_str) == Some("--installed")),
        _ => usage(),
    };
    if let Err(e) = result {
        eprintln!("pancake-pod: {e}");
        std::process::exit(1);
    }
}

fn hold(spec: PodSpec) -> Result<(), String> {
    let pod = Pod::start(spec)?;
    println!("{}", pod.root().display());
    for b in pod.brokers() {
        println!("{} {}", b.name, b.uri);
    }
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    pod.shutdown().map(|_| ())
}

/// With `installed`, load pancake by name from flux-core's directories (as
/// `make install` put it there); otherwise from this build's target dir.
fn demo(installed: bool) -> Result<(), String> {
    let spec = PodSpec::default();
    println!(
        "Starting a simulated pod: queue + {} ({} nodes x {} cores each)",
        spec.containers.join(", "),
        spec.nodes,
        spec.cores
    );
    let pod = Pod::start(spec)?;
    let (module, plugin) = pod.install_pancake()?;
    pod.queue
        .run(&["module", "load", &module.to_string_lossy()])?;
    pod.queue
        .run(&["jobtap", "load", &plugin.to_string_lossy(), "role=queue"])?;
    println!("\nview root: {}", pod.root().display());
    for b in pod.brokers() {
        println!("\n== {} ({}) ==", b.name, b.uri);
        print!("{}", b.run(&["resource", "list"])?);
    }
    println!("\n== queue: flux module list | grep pancake ==");
    let list = pod.queue.run(&["module", "list"])?;
    list.lines()
        .filter(|l| l.starts_with("pancake"))
        .for_each(|l| println!("{l}"));
    println!("\n== queue: flux jobtap list ==");
    print!("{}", pod.queue.run(&["jobtap", "list"])?);
    pod.queue.run(&["module", "remove", "pancake"])?;
    let killed = pod.shutdown()?;
    println!(
        "\npod stopped cleanly ({} leftover processes killed)",
        killed.len()
    );
    Ok(())
}
