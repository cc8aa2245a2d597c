//! Ansible's keywords and modules on the lab, one edge case each: a rescue after a failure in
//! the middle of a block (and a block without one), `until` giving up, `lineinfile` with a
//! regexp that matches nothing (once, then again), `become_user` to an unprivileged user, and
//! `-e ansible_user=...` switching the login to a sudo user.

mod common;

use std::process::Output;

use common::events::{events, recap};
use common::fixture::Fixture;
use common::{lab, text, Lab};
use serde_json::Value;

const HOST: &str = "ptrn-1";

/// `hactl apply` of a one-role site with `tasks` on HOST, with the JSON events.
fn apply(lab: &Lab, tasks: &str, extra: &[&str]) -> (Output, Vec<Value>) {
    let site = Fixture::new();
    let file = site.site("all", "idiom", tasks);
    let inventory = lab.inventory();
    let mut args = vec![
        "apply",
        &inventory,
        "--site",
        file.to_str().expect("utf-8"),
        "-l",
        HOST,
        "--output",
        "json",
    ];
    args.extend(extra);
    let out = common::hactl(&args);
    let ev = events(&out);
    (out, ev)
}

fn task<'a>(events: &'a [Value], name: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["event"] == "task" && e["task"] == name && e["host"] == HOST)
        .unwrap_or_else(|| panic!("no result for task {name}: {events:#?}"))
}

#[test]
fn a_rescue_after_a_failure_in_the_middle_of_a_block_runs_and_the_host_goes_on() {
    let lab = lab();
    lab.run(HOST, "rm -rf /tmp/idiom-block && mkdir /tmp/idiom-block");
    let (out, ev) = apply(
        &lab,
        "- name: the block
  block:
    - {name: first, copy: {dest: /tmp/idiom-block/first, content: \"1\\n\"}}
    - {name: fails, command: /bin/false}
    - {name: skipped, copy: {dest: /tmp/idiom-block/skipped, content: \"x\\n\"}}
  rescue:
    - {name: rescue, copy: {dest: /tmp/idiom-block/rescued, content: \"{{ ansible_failed_result.rc }}\\n\"}}
  always:
    - {name: always, copy: {dest: /tmp/idiom-block/always, content: \"a\\n\"}}
- {name: after, copy: {dest: /tmp/idiom-block/after, content: \"z\\n\"}}
",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        lab.run(
            HOST,
            "cd /tmp/idiom-block && ls | tr '\\n' ' '; cat rescued"
        ),
        "after always first rescued 1"
    );
    assert_eq!(task(&ev, "fails")["status"], "failed");
    let counts = &recap(&ev)[HOST];
    assert_eq!(
        (counts["failed"].as_u64(), counts["rescued"].as_u64()),
        (Some(0), Some(1)),
        "{counts}"
    );

    // Without a rescue: always still runs, then the host has failed and stops there.
    lab.run(HOST, "rm -rf /tmp/idiom-block && mkdir /tmp/idiom-block");
    let (out, ev) = apply(
        &lab,
        "- block:
    - {name: fails, command: /bin/false}
  always:
    - {name: always, copy: {dest: /tmp/idiom-block/always, content: \"a\\n\"}}
- {name: after, copy: {dest: /tmp/idiom-block/after, content: \"z\\n\"}}
",
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(lab.run(HOST, "ls /tmp/idiom-block"), "always");
    let counts = &recap(&ev)[HOST];
    assert_eq!(
        (counts["failed"].as_u64(), counts["rescued"].as_u64()),
        (Some(1), Some(0)),
        "{counts}"
    );

    // A rescue that fails too: the host fails, after always.
    lab.run(HOST, "rm -rf /tmp/idiom-block && mkdir /tmp/idiom-block");
    let (out, _) = apply(
        &lab,
        "- block:
    - {name: fails, command: /bin/false}
  rescue:
    - {name: fails again, command: /bin/false}
  always:
    - {name: always, copy: {dest: /tmp/idiom-block/always, content: \"a\\n\"}}
- {name: after, copy: {dest: /tmp/idiom-block/after, content: \"z\\n\"}}
",
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(lab.run(HOST, "ls /tmp/idiom-block"), "always");
    lab.run(HOST, "rm -rf /tmp/idiom-block");
}

#[test]
fn until_gives_up_after_its_retries_and_stops_as_soon_as_it_holds() {
    let lab = lab();
    lab.run(HOST, "rm -f /tmp/idiom-until /tmp/idiom-until-2");
    let (out, ev) = apply(
        &lab,
        "- name: never
  shell: echo try >> /tmp/idiom-until; false
  register: r
  until: r.rc == 0
  retries: 2
  delay: 0
  ignore_errors: true
- name: second time
  shell: echo try >> /tmp/idiom-until-2; test $(wc -l < /tmp/idiom-until-2) -ge 2
  register: s
  until: s.rc == 0
  retries: 5
  delay: 1
- name: attempts
  copy: {dest: /tmp/idiom-until-attempts, content: \"{{ r.attempts }} {{ s.attempts }}\\n\"}
",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // 1 + retries attempts, then the task failed (ignored here).
    assert_eq!(lab.run(HOST, "wc -l < /tmp/idiom-until"), "3");
    let never = task(&ev, "never");
    assert_eq!(never["status"], "failed", "{never}");
    assert!(
        never["msg"]
            .as_str()
            .is_some_and(|m| m.contains("did not hold after 3 attempts")),
        "{never}"
    );
    assert_eq!(lab.run(HOST, "wc -l < /tmp/idiom-until-2"), "2");
    assert_eq!(lab.run(HOST, "cat /tmp/idiom-until-attempts"), "3 2");
    assert_eq!(recap(&ev)[HOST]["ignored"], 1);
    lab.run(
        HOST,
        "rm -f /tmp/idiom-until /tmp/idiom-until-2 /tmp/idiom-until-attempts",
    );
}

#[test]
fn lineinfile_with_a_regexp_that_matches_nothing_adds_the_line_once() {
    let lab = lab();
    lab.run(HOST, "printf 'a=1\\nb=2\\n' > /tmp/idiom-lines");
    let tasks = "- name: line
  lineinfile: {path: /tmp/idiom-lines, regexp: '^never-matches=', line: c=3}
";
    let (out, ev) = apply(&lab, tasks, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(task(&ev, "line")["status"], "changed");
    let (out, ev) = apply(&lab, tasks, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        task(&ev, "line")["status"],
        "ok",
        "the line is there: nothing to do"
    );
    assert_eq!(lab.run(HOST, "cat /tmp/idiom-lines"), "a=1\nb=2\nc=3");
    lab.run(HOST, "rm -f /tmp/idiom-lines");
}

#[test]
fn become_user_runs_a_task_as_an_unprivileged_user() {
    let lab = lab();
    lab.run(
        HOST,
        "id idiom-user >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin idiom-user; \
         rm -rf /tmp/idiom-become && install -d -o idiom-user -m 0755 /tmp/idiom-become",
    );
    let (out, _) = apply(
        &lab,
        "- name: who
  command: id -un
  become: true
  become_user: idiom-user
  register: who
- name: a file written as that user
  copy: {dest: /tmp/idiom-become/mine, content: \"{{ who.stdout }}\\n\"}
  become: true
  become_user: idiom-user
- name: root cannot be that user's file here
  command: touch /root/idiom-not-allowed
  become: true
  become_user: idiom-user
  register: denied
  failed_when: denied.rc == 0
",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        lab.run(
            HOST,
            "stat -c %U /tmp/idiom-become/mine; cat /tmp/idiom-become/mine"
        ),
        "idiom-user\nidiom-user"
    );
    lab.run(HOST, "rm -rf /tmp/idiom-become; userdel idiom-user");
}

#[test]
fn extra_vars_switch_the_login_to_a_sudo_user() {
    let lab = lab();
    lab.run(
        HOST,
        "id idiom-deploy >/dev/null 2>&1 || useradd -m -s /bin/bash idiom-deploy; \
         install -d -o idiom-deploy -g idiom-deploy -m 700 /home/idiom-deploy/.ssh; \
         install -o idiom-deploy -g idiom-deploy -m 600 /root/.ssh/authorized_keys /home/idiom-deploy/.ssh/authorized_keys; \
         echo 'idiom-deploy ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/idiom-deploy; chmod 440 /etc/sudoers.d/idiom-deploy; \
         rm -f /root/idiom-marker",
    );
    let since = lab.run(HOST, "date '+%Y-%m-%d %H:%M:%S'");
    // The lab inventory logs in as root; -e makes it idiom-deploy with sudo.
    let (out, _) = apply(
        &lab,
        "- name: login
  command: id -un
  become: false
  register: login
- name: root-only file, through sudo
  copy: {dest: /root/idiom-marker, content: \"{{ login.stdout }}\\n\", mode: \"0600\"}
",
        &[
            "-e",
            "ansible_user=idiom-deploy",
            "-e",
            "ansible_become=true",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        lab.run(
            HOST,
            "stat -c %U:%a /root/idiom-marker; cat /root/idiom-marker"
        ),
        "root:600\nidiom-deploy"
    );
    let sshd = lab.run(
        HOST,
        &format!("journalctl --since '{since}' -u ssh -u sshd --no-pager -o cat | grep 'Accepted publickey for' || true"),
    );
    // One connection for the whole run, as idiom-deploy (the root logins are this test's own).
    assert_eq!(
        sshd.matches("Accepted publickey for idiom-deploy").count(),
        1,
        "{sshd}"
    );
    let sudo = lab.run(
        HOST,
        &format!("journalctl --since '{since}' _COMM=sudo --no-pager -o cat | grep 'idiom-deploy' || true"),
    );
    assert!(
        sudo.contains("USER=root"),
        "the tasks ran through sudo: {sudo}"
    );
    lab.run(
        HOST,
        "rm -f /root/idiom-marker /etc/sudoers.d/idiom-deploy; userdel -r idiom-deploy 2>/dev/null; true",
    );
}
