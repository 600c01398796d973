//! Running the `pancake-fluxion` binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `pancake-fluxion`, killed on drop.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Start it on a free port with `args`; wait for its port file.
    pub fn start(args: &[&str], stderr: Stdio) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let port_file: PathBuf = dir.path().join("port");
        let child = Command::new(env!("CARGO_BIN_EXE_pancake-fluxion"))
            .args(["--port", "0", "--port-file"])
            .arg(&port_file)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn pancake-fluxion");
        let t = Instant::now();
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Ok(port) = text.trim().parse()
            {
                break port;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "no port file");
            std::thread::sleep(Duration::from_millis(20));
        };
        Daemon {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn address(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.port)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
    }

    /// Wait up to `limit` for the process to exit.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
