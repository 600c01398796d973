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
    eprintln!(
        "usage: pancake-pod hold [--containers a,b,c] [--nodes N] [--cores C] | demo [--installed]"
    );
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
    let (module, plugin) = if installed {
        ("pancake".to_string(), "pancake-bypass.so".to_string())
    } else {
        let (m, p) = pod.install_pancake()?;
        (
            m.to_string_lossy().into_owned(),
            p.to_string_lossy().into_owned(),
        )
    };
    let view = format!("view={}", pod.root().display());
    let plugin_arg = format!("plugin={plugin}");
    let q = &pod.queue;
    println!("view root: {}\n", pod.root().display());
    println!("$ flux jobtap load {plugin} role=queue");
    q.run(&["jobtap", "load", &plugin, "role=queue"])?;
    println!("$ flux module load {module} {view} {plugin_arg}");
    q.run(&["module", "load", &module, &view, &plugin_arg])?;
    // Wait for the three containers to connect.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while q.run(&["dmesg"])?.matches(": connected").count() < pod.apps.len() {
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "containers did not connect:\n{}",
                q.run(&["dmesg"])?
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let jobs: [&[&str]; 5] = [
        &["--setattr=container=lammps", "-N2", "-n8", "sleep", "1"],
        &["--setattr=container=ior", "-n4", "-c2", "sleep", "1"],
        &[
            "--setattr=container=chatterbug",
            "-N4",
            "--exclusive",
            "true",
        ],
        &["--setattr=container=ior", "-n1", "sh", "-c", "exit 3"],
        &["--setattr=container=lammps", "-n20", "true"],
    ];
    let mut ids = Vec::new();
    for args in jobs {
        let shown: Vec<String> = args
            .iter()
            .map(|a| {
                if a.contains(' ') {
                    format!("'{a}'")
                } else {
                    a.to_string()
                }
            })
            .collect();
        println!("$ flux submit {}", shown.join(" "));
        let mut a = vec!["submit"];
        a.extend_from_slice(args);
        ids.push(q.run(&a)?.trim().to_string());
    }
    for id in &ids {
        q.run(&["job", "wait-event", "-t", "60", id, "clean"])?;
    }
    println!(
        "\n$ flux jobs -a -o '{{id}} {{user.container}} {{status}} {{returncode}} {{nnodes}} {{ncores}} {{nodelist}}'"
    );
    print!(
        "{}",
        q.run(&["jobs", "-a", "-o", "{id.f58:>12} {user.container:>10} {status:>9} {returncode:>3} {nnodes:>3} {ncores:>4} {nodelist}"])?
    );
    println!("\ncores each job used (rank: cores), from the queue jobs' R:");
    for id in &ids {
        let r: serde_json::Value =
            serde_json::from_str(&q.run(&["job", "info", id, "R"])?).map_err(|e| e.to_string())?;
        let lite: Vec<String> = r["execution"]["R_lite"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        format!(
                            "{}: {}",
                            e["rank"].as_str().unwrap_or("?"),
                            e["children"]["core"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        println!("  {id:>12}  {}", lite.join("  "));
    }
    q.run(&["module", "remove", "pancake"])?;
    let killed = pod.shutdown()?;
    println!(
        "\npod stopped cleanly ({} leftover processes killed)",
        killed.len()
    );
    Ok(())
}
