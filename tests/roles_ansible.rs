//! tests/roles_ansible: a role set written with Ansible's idioms, in Ansible's layout, applied
//! to one lab host by hactl and then, from a clean host, by ansible-playbook (ansible-core from
//! PyPI). The same files, contents, modes, users and services must result, and both must report
//! the same number of changed tasks on a first run and on a second one.

mod common;

use std::path::Path;
use std::process::Command;

use common::events::{events, recap};
use common::fixture::Fixture;
use common::{lab, text, Lab, STATE_DIR};

const HOST: &str = "ptrn-2";
const ADDRESS: &str = "10.213.0.12";

/// Undoes everything the role set does on the host, and the note it leaves on this machine.
fn clean(lab: &Lab) {
    let _ = std::fs::remove_file(format!("/tmp/hactl-idioms-delegated-{HOST}"));
    lab.run(
        HOST,
        "systemctl disable --now hactl-idioms >/dev/null 2>&1; \
         rm -f /etc/systemd/system/hactl-idioms.service; systemctl daemon-reload; \
         rm -rf /srv/hactl-idioms; userdel hactl-idioms 2>/dev/null; groupdel hactl-idioms 2>/dev/null; \
         DEBIAN_FRONTEND=noninteractive apt-get -q -y remove tree >/dev/null 2>&1; true",
    );
}

/// What the run left: every path with its type, mode and owner, each file's checksum, the user,
/// the unit and its state, the package.
fn snapshot(lab: &Lab) -> String {
    // What delegate_to: localhost wrote on this machine.
    let local = format!("/tmp/hactl-idioms-delegated-{HOST}");
    let note = std::fs::read_to_string(&local).unwrap_or_else(|e| format!("{local}: {e}"));
    let _ = std::fs::remove_file(&local);
    note + &lab.run(
        HOST,
        "cd /srv/hactl-idioms && find . -printf '%p %y %m %u %g\\n' | sort; \
         find . -type f -print0 | sort -z | xargs -0 sha256sum; \
         getent passwd hactl-idioms | cut -d: -f1,6,7; \
         sha256sum /etc/systemd/system/hactl-idioms.service; \
         systemctl is-enabled hactl-idioms; systemctl is-active hactl-idioms; \
         dpkg-query -W -f '${Status}\\n' tree",
    )
}

/// The inventory both tools read: HOST in group idioms, as root with the lab's key.
fn inventory(dir: &Fixture) -> String {
    dir.file(
        "inventory.yml",
        &format!(
            "all:\n  vars:\n    ansible_user: root\n    ansible_ssh_private_key_file: {STATE_DIR}/id_ed25519\n    \
             hactl_known_hosts: {STATE_DIR}/known_hosts\n    ansible_python_interpreter: /usr/bin/python3\n  \
             children:\n    idioms:\n      hosts:\n        {HOST}: {{ansible_host: {ADDRESS}}}\n"
        ),
    );
    dir.path("inventory.yml").to_string_lossy().into_owned()
}

fn site() -> String {
    common::repo()
        .join("tests/roles_ansible/site.yml")
        .to_string_lossy()
        .into_owned()
}

/// hactl's changed count for HOST.
fn hactl_run(inventory: &str) -> u64 {
    let out = common::hactl(&["apply", inventory, "--site", &site(), "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "hactl:\n{}", text(&out));
    let counts = &recap(&events(&out))[HOST];
    assert_eq!(counts["failed"], 0, "{counts}");
    assert_eq!(
        counts["rescued"], 1,
        "the block's failure is rescued: {counts}"
    );
    counts["changed"].as_u64().unwrap_or(u64::MAX)
}

/// ansible-playbook's changed count for HOST, from its PLAY RECAP.
fn ansible_run(inventory: &str) -> u64 {
    let playbook = common::ansible::tool("ansible-playbook");
    let scratch = tempfile::tempdir().expect("a temp dir");
    let config = scratch.path().join("ansible.cfg");
    std::fs::write(
        &config,
        format!(
            "[defaults]\nhost_key_checking = True\nretry_files_enabled = False\n\
             [ssh_connection]\npipelining = True\nssh_args = -o UserKnownHostsFile={STATE_DIR}/known_hosts\n"
        ),
    )
    .expect("ansible.cfg");
    let mut command = Command::new(&playbook);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ANSIBLE_") {
            command.env_remove(key);
        }
    }
    let out = command
        .arg("-i")
        .arg(inventory)
        .arg(site())
        .current_dir(scratch.path())
        .env("ANSIBLE_CONFIG", &config)
        .env("ANSIBLE_HOME", scratch.path().join("home"))
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .expect("ansible-playbook");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ansible-playbook:\n{}", text(&out));
    let line = stdout
        .lines()
        .find(|l| l.starts_with(HOST) && l.contains("changed="))
        .unwrap_or_else(|| panic!("no recap line for {HOST}:\n{stdout}"));
    assert!(
        line.contains("failed=0") && line.contains("rescued=1"),
        "{line}"
    );
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("changed="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no changed= in {line}"))
}

#[test]
fn hactl_and_ansible_playbook_make_the_same_host_with_the_same_changes() {
    let lab = lab();
    // Ansible's apt module needs python3-apt on the host.
    lab.run(
        HOST,
        "dpkg -s python3-apt >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get -q -y install python3-apt >/dev/null",
    );
    let dir = Fixture::new();
    let inventory = inventory(&dir);
    assert!(Path::new(&site()).exists());

    clean(&lab);
    let hactl_first = hactl_run(&inventory);
    let hactl_second = hactl_run(&inventory);
    let by_hactl = snapshot(&lab);

    clean(&lab);
    let ansible_first = ansible_run(&inventory);
    let ansible_second = ansible_run(&inventory);
    let by_ansible = snapshot(&lab);
    clean(&lab);

    assert_eq!(
        by_hactl, by_ansible,
        "what hactl made (left) and what Ansible made (right)"
    );
    assert!(by_hactl.contains("active"), "{by_hactl}");
    assert_eq!(
        (hactl_first, hactl_second),
        (ansible_first, ansible_second),
        "changed tasks on the first and the second run: hactl (left), Ansible (right)"
    );
    assert!(hactl_first > 10, "{hactl_first}");
    eprintln!(
        "changed: first run {hactl_first} (hactl) / {ansible_first} (Ansible), second run {hactl_second} / {ansible_second}"
    );
}
