//! ansible-core from PyPI in `target/ansible-venv`, for the tests that hold hactl against
//! Ansible itself. Without python3, venv or pip they fail: they never pass silently.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Versions that run on Python 3.11 (the controller needs 3.10+ for 2.15-2.17).
pub const ANSIBLE_CORE: &str = "ansible-core>=2.15,<2.18";

/// Serializes the venv set-up between the tests of this file.
static VENV: Mutex<()> = Mutex::new(());

/// `target/ansible-venv/bin/NAME` (ansible-playbook, ansible-inventory), installing ansible-core
/// first if needed.
pub fn tool(name: &str) -> PathBuf {
    let _guard = VENV.lock().unwrap_or_else(|e| e.into_inner());
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ansible-venv");
    let bin = venv.join("bin").join(name);
    if runs(Command::new(&bin).arg("--version")) {
        return bin;
    }
    let python3 = Command::new("python3").arg("--version").output();
    if !python3.is_ok_and(|o| o.status.success()) {
        panic!(
            "python3 is needed to check hactl against ansible-inventory, and it is not on PATH: \
             install Python 3.10 or later (Debian/Ubuntu: apt-get install python3 python3-venv)"
        );
    }
    eprintln!("installing {ANSIBLE_CORE} into {} (once)", venv.display());
    run_or_explain(
        Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
        "python3 -m venv failed: install the venv module \
         (Debian/Ubuntu: apt-get install python3-venv)",
    );
    run_or_explain(
        Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(ANSIBLE_CORE),
        "pip could not install ansible-core from PyPI (is pip in the venv, and PyPI reachable?)",
    );
    assert!(
        runs(Command::new(&bin).arg("--version")),
        "{} does not run after installing {ANSIBLE_CORE}",
        bin.display()
    );
    bin
}

fn runs(command: &mut Command) -> bool {
    command.output().is_ok_and(|o| o.status.success())
}

fn run_or_explain(command: &mut Command, why: &str) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{why}: cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{why}\n{command:?} exited with {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
