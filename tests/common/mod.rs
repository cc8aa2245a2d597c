//! Shared by the lab end-to-end tests: one lab per test run, brought up on first use, and
//! one lab test at a time.

#![allow(dead_code)]

pub mod fixture;
pub mod probe;
pub mod release;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

pub const INVENTORY: &str = "inventory/lab.yml";
pub const HOSTS: [&str; 4] = ["ptrn-1", "ptrn-2", "ptrn-3", "prmt-1"];
/// The stack's PostgreSQL and Patroni members.
pub const CLUSTER: [&str; 3] = ["ptrn-1", "ptrn-2", "ptrn-3"];

static LAB: Mutex<bool> = Mutex::new(false);

/// The lab, up, and held by this test alone until the guard is dropped.
pub struct Lab {
    up: MutexGuard<'static, bool>,
}

/// Brings the lab up once per test run (later calls find it up) and locks it for one test.
pub fn lab() -> Lab {
    assert!(
        nix_is_root(),
        "the lab tests need root (they make a bridge, mounts and containers): run `sudo scripts/test.sh`"
    );
    let mut up = LAB.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if !*up {
        let out = hactl(&["lab", "up", "-i", INVENTORY]);
        assert!(out.status.success(), "lab up failed:\n{}", text(&out));
        *up = true;
    }
    Lab { up }
}

impl Lab {
    /// Runs a command on a lab host through `hactl lab ssh` (strict host key checking).
    pub fn ssh(&self, host: &str, command: &str) -> Output {
        hactl(&["lab", "ssh", "-i", INVENTORY, host, command])
    }

    /// Like `ssh`, but the command must succeed; returns its trimmed stdout.
    pub fn run(&self, host: &str, command: &str) -> String {
        let out = self.ssh(host, command);
        assert!(
            out.status.success(),
            "`{command}` on {host} failed:\n{}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The leader, as Patroni's `/leader` endpoint answers it on each member (waits up to a
    /// minute for one).
    pub fn leader(&self) -> String {
        for _ in 0..60 {
            for h in CLUSTER {
                let code = self.run(
                    h,
                    "curl -s -o /dev/null -w '%{http_code}' http://$(hostname -I | cut -d' ' -f1):8008/leader || true",
                );
                if code.trim() == "200" {
                    return h.to_string();
                }
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        panic!("no member answers 200 on /leader");
    }

    pub fn hactl(&self, args: &[&str]) -> Output {
        hactl(args)
    }

    /// Takes the lab down; the next `lab()` brings it up again.
    pub fn down(&mut self) -> Output {
        *self.up = false;
        hactl(&["lab", "down", "-i", INVENTORY])
    }

    /// Boots whatever is not running (after a kill) and waits for it.
    pub fn up(&mut self) -> Output {
        let out = hactl(&["lab", "up", "-i", INVENTORY]);
        *self.up = out.status.success();
        out
    }
}

/// Runs hactl in the repository.
/// `hactl failover-test` on the lab's inventory with a JSON report: the output and the report.
pub fn failover(mode: &str, max_downtime: &str) -> (Output, serde_json::Value) {
    let out = hactl(&[
        "failover-test",
        "-i",
        INVENTORY,
        "--mode",
        mode,
        "--max-downtime",
        max_downtime,
        "--output",
        "json",
    ]);
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{mode}: no JSON report ({e}):\n{}", text(&out)));
    (out, report)
}

pub fn hactl(args: &[&str]) -> Output {
    hactl_in(&repo(), args)
}

/// Runs hactl in `dir`, so that relative paths in its messages are short.
pub fn hactl_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hactl"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run hactl")
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// stdout and stderr together, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
