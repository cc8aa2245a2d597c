//! Ansible's keywords and modules on the lab, one edge case each: a rescue after a failure in
//! the middle of a block (and a block without one), `until` giving up, `lineinfile` with a
//! regexp that matches nothing (once, then again), `become_user` to an unprivileged user,
//! `-e ansible_user=...` switching the login to a sudo user, `get_url` (fetched here, pushed) and
//! `uri` (asked from the host).

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

#[test]
fn get_url_pushes_what_this_machine_fetched_and_uri_asks_from_the_host() {
    let lab = lab();
    lab.run(HOST, "rm -rf /tmp/idiom-get && mkdir /tmp/idiom-get");
    let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = requests.clone();
    // The lab machine's bridge address: the hosts reach it, and so does this machine.
    let port = common::http::serve_on("10.213.0.1", move |path| {
        seen.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(path.to_string());
        match path {
            "/file.txt" => ("200 OK", b"fetched once\n".to_vec()),
            "/api" => ("200 OK", b"{\"greeting\": \"hi\"}".to_vec()),
            _ => ("404 Not Found", Vec::new()),
        }
    });
    let tasks = format!(
        "- name: uri runs curl on the host
  apt: {{name: curl}}
- name: fetch
  get_url: {{url: \"http://10.213.0.1:{port}/file.txt\", dest: /tmp/idiom-get/file.txt, mode: \"0640\"}}
- name: ask
  uri: {{url: \"http://10.213.0.1:{port}/api\", return_content: true}}
  register: answer
- name: answer
  copy: {{dest: /tmp/idiom-get/answer, content: \"{{{{ answer.status }}}} {{{{ answer.content }}}}\\n\"}}
- name: missing
  uri: {{url: \"http://10.213.0.1:{port}/missing\"}}
  register: missing
  ignore_errors: true
"
    );
    let (out, ev) = apply(&lab, &tasks, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(task(&ev, "fetch")["status"], "changed");
    assert_eq!(task(&ev, "ask")["status"], "ok", "a GET changes nothing");
    let missing = task(&ev, "missing");
    assert_eq!(missing["status"], "failed");
    assert!(
        missing["msg"].as_str().is_some_and(|m| m.contains("404")),
        "{missing}"
    );
    assert_eq!(
        lab.run(
            HOST,
            "stat -c %a /tmp/idiom-get/file.txt; cat /tmp/idiom-get/file.txt /tmp/idiom-get/answer"
        ),
        "640\nfetched once\n200 {\"greeting\": \"hi\"}"
    );
    // Each asked once...
    let asked = |path: &str| {
        requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|p| *p == path)
            .count()
    };
    assert_eq!(asked("/file.txt"), 1);
    assert_eq!(asked("/api"), 1);
    // ... and a second run leaves it: nothing fetched, nothing changed.
    let (out, ev) = apply(&lab, &tasks, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(task(&ev, "fetch")["status"], "ok");
    assert_eq!(task(&ev, "answer")["status"], "ok");
    assert_eq!(
        asked("/file.txt"),
        1,
        "dest exists and no checksum: not fetched again"
    );
    lab.run(HOST, "rm -rf /tmp/idiom-get");
}

/// `hactl apply` of the site file `site` (a whole play) on ptrn-1 and ptrn-2.
fn apply_play(lab: &Lab, site: &str, files: &[(&str, &str)]) -> (Output, Vec<Value>) {
    let dir = Fixture::new();
    dir.file("site.yml", site);
    for (path, text) in files {
        dir.file(path, text);
    }
    let inventory = lab.inventory();
    let site = dir.path("site.yml");
    let out = common::hactl(&[
        "apply",
        &inventory,
        "--site",
        site.to_str().expect("utf-8"),
        "-l",
        "ptrn-1,ptrn-2",
        "--output",
        "json",
    ]);
    let ev = events(&out);
    (out, ev)
}

#[test]
fn any_errors_fatal_and_max_fail_percentage_stop_the_play_on_every_host() {
    let lab = lab();
    let clean = "rm -f /tmp/idiom-fatal";
    let play = |keyword: &str| {
        format!(
            "- hosts: postgres_cluster
  {keyword}
  tasks:
    - name: fails on ptrn-1 only
      command: /bin/false
      when: inventory_hostname == 'ptrn-1'
    - name: after
      copy: {{dest: /tmp/idiom-fatal, content: \"x\\n\"}}
"
        )
    };
    for host in ["ptrn-1", "ptrn-2"] {
        lab.run(host, clean);
    }
    // Without either, ptrn-2 goes on.
    let (out, _) = apply_play(&lab, &play("gather_facts: true"), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(lab.run("ptrn-2", "cat /tmp/idiom-fatal"), "x");
    for (keyword, why) in [
        ("any_errors_fatal: true", "any_errors_fatal"),
        ("max_fail_percentage: 40", "max_fail_percentage"),
    ] {
        lab.run("ptrn-2", clean);
        let (out, _) = apply_play(&lab, &play(keyword), &[]);
        assert_eq!(out.status.code(), Some(2), "{keyword}: {}", text(&out));
        assert!(text(&out).contains(why), "{keyword}: {}", text(&out));
        assert_eq!(
            lab.run(
                "ptrn-2",
                "test -e /tmp/idiom-fatal && echo there || echo absent"
            ),
            "absent",
            "{keyword}"
        );
    }
    // Half of two hosts is not over 60 %: ptrn-2 goes on.
    lab.run("ptrn-2", clean);
    let (out, _) = apply_play(&lab, &play("max_fail_percentage: 60"), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(lab.run("ptrn-2", "cat /tmp/idiom-fatal"), "x");
    lab.run("ptrn-2", clean);
}

#[test]
fn delegate_to_runs_on_the_other_host_with_this_hosts_variables() {
    let lab = lab();
    lab.run("ptrn-2", "rm -f /tmp/idiom-delegated-*");
    let (out, _) = apply_play(
        &lab,
        "- hosts: ptrn-1
  tasks:
    - name: on ptrn-2, for ptrn-1
      copy: {dest: \"/tmp/idiom-delegated-{{ inventory_hostname }}\", content: \"{{ ansible_hostname }}\\n\"}
      delegate_to: ptrn-2
",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        lab.run("ptrn-2", "cat /tmp/idiom-delegated-ptrn-1"),
        "ptrn-1"
    );
    lab.run("ptrn-2", "rm -f /tmp/idiom-delegated-*");
    let (out, _) = apply_play(
        &lab,
        "- hosts: ptrn-1\n  tasks:\n    - {name: x, command: 'true', delegate_to: nowhere-9}\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("delegate_to: no host `nowhere-9`"),
        "{}",
        text(&out)
    );
}

#[test]
fn flush_handlers_runs_them_before_the_next_task_and_include_tasks_follows_its_when() {
    let lab = lab();
    lab.run(HOST, "rm -rf /tmp/idiom-flush && mkdir /tmp/idiom-flush");
    let (out, _) = apply_play(
        &lab,
        "- hosts: ptrn-1
  vars: {with_extra: false}
  tasks:
    - name: notify
      copy: {dest: /tmp/idiom-flush/config, content: \"c\\n\"}
      notify: mark
    - meta: flush_handlers
    - name: after the flush
      command: cat /tmp/idiom-flush/handled
      register: handled
    - name: what it saw
      copy: {dest: /tmp/idiom-flush/seen, content: \"{{ handled.stdout }}\\n\"}
    - include_tasks: extra.yml
      when: with_extra
    - import_tasks: extra.yml
      vars: {with_extra: true}
      when: with_extra
  handlers:
    - name: mark
      copy: {dest: /tmp/idiom-flush/handled, content: \"handled\\n\"}
",
        &[(
            "extra.yml",
            "- name: extra\n  copy: {dest: /tmp/idiom-flush/extra, content: \"{{ with_extra }}\\n\"}\n",
        )],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        lab.run(
            HOST,
            "cd /tmp/idiom-flush && ls | tr '\\n' ' '; cat seen extra"
        ),
        "config extra handled seen handled\nTrue"
    );
    lab.run(HOST, "rm -rf /tmp/idiom-flush");
}

#[test]
fn set_fact_feeds_later_tasks_and_a_failed_assert_says_its_fail_msg() {
    let lab = lab();
    let (out, ev) = apply(
        &lab,
        "- name: facts
  set_fact:
    answer: \"{{ 6 * 7 }}\"
    where: \"{{ ansible_facts['distribution'] }} {{ ansible_distribution_release }}\"
- name: holds
  assert:
    that: [answer | int == 42, \"ansible_default_ipv4.address == '10.213.0.11'\", ansible_memtotal_mb > 0]
- name: does not hold
  assert:
    that: answer | int == 41
    fail_msg: \"the answer is {{ answer }}\"
- name: never
  command: 'true'
",
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        task(&ev, "holds")["status"],
        "ok",
        "{:#?}",
        task(&ev, "holds")
    );
    let failed = task(&ev, "does not hold");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["msg"], "the answer is 42");
    assert!(!ev.iter().any(|e| e["task"] == "never"));
}

/// The status of each task named in `names`, in that order.
fn statuses(events: &[Value], names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|n| {
            task(events, n)["status"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        })
        .collect()
}

#[test]
fn stat_tells_a_missing_path_a_file_a_link_and_a_directory_apart_and_slurp_reads_bytes() {
    let lab = lab();
    lab.run(
        HOST,
        "rm -rf /tmp/idiom-stat && mkdir /tmp/idiom-stat && cd /tmp/idiom-stat && \
         printf abc > file && chmod 0640 file && ln -s file link && printf '\\000\\001\\377' > binary",
    );
    let (out, ev) = apply(
        &lab,
        "- {name: missing, stat: {path: /tmp/idiom-stat/missing}, register: missing}
- {name: file, stat: {path: /tmp/idiom-stat/file}, register: file}
- {name: link, stat: {path: /tmp/idiom-stat/link}, register: link}
- {name: followed, stat: {path: /tmp/idiom-stat/link, follow: true}, register: followed}
- {name: dir, stat: {path: /tmp/idiom-stat, get_checksum: false}, register: dir}
- {name: binary, slurp: {src: /tmp/idiom-stat/binary}, register: binary}
- name: report
  copy:
    dest: /tmp/idiom-stat/report
    content: |
      missing {{ missing.stat.exists }}
      file {{ file.stat.exists }} {{ file.stat.isreg }} {{ file.stat.mode }} {{ file.stat.size }} {{ file.stat.pw_name }} {{ file.stat.checksum }}
      link {{ link.stat.islnk }} {{ link.stat.lnk_target }} {{ link.stat.lnk_source }}
      followed {{ followed.stat.islnk }} {{ followed.stat.isreg }} {{ followed.stat.size }}
      dir {{ dir.stat.isdir }} {{ dir.stat.checksum is defined }}
      binary {{ binary.content }} {{ binary.encoding }}
- {name: slurp a missing file, slurp: {src: /tmp/idiom-stat/missing}, ignore_errors: true}
- {name: slurp a directory, slurp: {src: /tmp/idiom-stat}, ignore_errors: true}
",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        statuses(
            &ev,
            &["missing", "file", "link", "followed", "dir", "binary"]
        ),
        ["ok"; 6],
        "reading changes nothing"
    );
    assert_eq!(
        lab.run(HOST, "cat /tmp/idiom-stat/report"),
        "missing False
file True True 0640 3 root a9993e364706816aba3e25717850c26c9cd0d89d
link True file /tmp/idiom-stat/file
followed False True 3
dir True False
binary AAH/ base64"
    );
    let missing = task(&ev, "slurp a missing file");
    assert_eq!(missing["status"], "failed");
    assert_eq!(missing["msg"], "file not found: /tmp/idiom-stat/missing");
    assert_eq!(
        task(&ev, "slurp a directory")["msg"],
        "source is a directory and must be a file: /tmp/idiom-stat"
    );
    assert_eq!(recap(&ev)[HOST]["ignored"], 2, "{:#?}", recap(&ev));
    lab.run(HOST, "rm -rf /tmp/idiom-stat");
}

#[test]
fn blockinfile_replaces_its_block_in_place_keeps_other_text_and_removes_it_when_absent() {
    let lab = lab();
    lab.run(HOST, "printf 'a=1\\nb=2\\n' > /tmp/idiom-block.conf");
    let block = |content: &str| {
        format!(
            "- name: block
  blockinfile:
    path: /tmp/idiom-block.conf
    block: |
{}
- name: top
  blockinfile:
    path: /tmp/idiom-block.conf
    marker: '# {{mark}} top'
    insertbefore: BOF
    block: top=0
",
            content
                .lines()
                .map(|l| format!("      {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    let (out, ev) = apply(&lab, &block("x=1\ny=2"), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(statuses(&ev, &["block", "top"]), ["changed", "changed"]);
    let (out, ev) = apply(&lab, &block("x=1\ny=2"), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(statuses(&ev, &["block", "top"]), ["ok", "ok"], "idempotent");
    // Someone appends a line; the block changes: it is replaced where it is.
    lab.run(HOST, "echo c=3 >> /tmp/idiom-block.conf");
    let (out, ev) = apply(&lab, &block("x=10"), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(statuses(&ev, &["block", "top"]), ["changed", "ok"]);
    assert_eq!(
        lab.run(HOST, "cat /tmp/idiom-block.conf"),
        "# BEGIN top\ntop=0\n# END top\na=1\nb=2\n\
         # BEGIN ANSIBLE MANAGED BLOCK\nx=10\n# END ANSIBLE MANAGED BLOCK\nc=3"
    );
    let absent = "- name: gone
  blockinfile: {path: /tmp/idiom-block.conf, state: absent}
- name: missing file
  blockinfile: {path: /tmp/idiom-block-missing.conf, block: x=1}
";
    let (out, ev) = apply(&lab, absent, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        statuses(&ev, &["gone", "missing file"]),
        ["changed", "failed"]
    );
    assert!(
        task(&ev, "missing file")["msg"]
            .as_str()
            .is_some_and(|m| m.contains("/tmp/idiom-block-missing.conf does not exist")),
        "{:#?}",
        task(&ev, "missing file")
    );
    let (_, ev) = apply(&lab, absent, &[]);
    assert_eq!(task(&ev, "gone")["status"], "ok", "nothing left to remove");
    assert_eq!(
        lab.run(HOST, "cat /tmp/idiom-block.conf"),
        "# BEGIN top\ntop=0\n# END top\na=1\nb=2\nc=3"
    );
    lab.run(HOST, "rm -f /tmp/idiom-block.conf");
}

#[test]
fn unarchive_unpacks_once_restores_what_was_changed_and_ignores_what_was_added() {
    let lab = lab();
    let here = Fixture::new();
    here.file("payload/inside.txt", "inside\n");
    here.file("payload/sub/secret.txt", "secret\n");
    let secret = here.path("payload/sub/secret.txt");
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let archive = here.path("payload.tar.gz");
    let tar = std::process::Command::new("tar")
        .arg("-C")
        .arg(here.path(""))
        .args(["-czf"])
        .arg(&archive)
        .arg("payload")
        .status()
        .expect("tar");
    assert!(tar.success());
    lab.run(
        HOST,
        "rm -rf /tmp/idiom-unarchive && mkdir /tmp/idiom-unarchive",
    );
    let tasks = format!(
        "- name: unpack
  unarchive: {{src: {}, dest: /tmp/idiom-unarchive}}
- name: nowhere to unpack
  unarchive: {{src: {}, dest: /tmp/idiom-unarchive-missing}}
  ignore_errors: true
",
        archive.display(),
        archive.display()
    );
    let (out, ev) = apply(&lab, &tasks, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(task(&ev, "unpack")["status"], "changed");
    assert_eq!(
        lab.run(
            HOST,
            "cd /tmp/idiom-unarchive/payload && cat inside.txt sub/secret.txt && stat -c %a sub/secret.txt"
        ),
        "inside\nsecret\n600"
    );
    let nowhere = task(&ev, "nowhere to unpack");
    assert_eq!(nowhere["status"], "failed");
    assert!(
        nowhere["msg"]
            .as_str()
            .is_some_and(|m| m.contains("/tmp/idiom-unarchive-missing")),
        "{nowhere:#?}"
    );
    let (_, ev) = apply(&lab, &tasks, &[]);
    assert_eq!(task(&ev, "unpack")["status"], "ok", "already unpacked");
    // A file of the archive changed on the host comes back; a file the archive lacks stays.
    lab.run(
        HOST,
        "cd /tmp/idiom-unarchive/payload && echo edited > inside.txt && echo mine > added.txt",
    );
    let (_, ev) = apply(&lab, &tasks, &[]);
    assert_eq!(task(&ev, "unpack")["status"], "changed");
    assert_eq!(
        lab.run(
            HOST,
            "cd /tmp/idiom-unarchive/payload && cat inside.txt added.txt"
        ),
        "inside\nmine"
    );
    let (_, ev) = apply(&lab, &tasks, &[]);
    assert_eq!(
        task(&ev, "unpack")["status"],
        "ok",
        "an added file is ignored"
    );
    // The archive already on the host: remote_src.
    lab.run(
        HOST,
        "rm -rf /tmp/idiom-unarchive/payload && cd /tmp && \
         tar -czf /tmp/idiom-unarchive/remote.tar.gz -C /etc hostname",
    );
    let (out, ev) = apply(
        &lab,
        "- name: remote
  unarchive: {src: /tmp/idiom-unarchive/remote.tar.gz, dest: /tmp/idiom-unarchive, remote_src: true}
",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(task(&ev, "remote")["status"], "changed");
    assert_eq!(lab.run(HOST, "cat /tmp/idiom-unarchive/hostname"), HOST);
    lab.run(HOST, "rm -rf /tmp/idiom-unarchive");
}

#[test]
fn environment_reaches_the_command_verbatim_args_chdir_and_creates_and_task_vars_stay_put() {
    let lab = lab();
    lab.run(HOST, "rm -rf /tmp/idiom-env && mkdir /tmp/idiom-env");
    let tasks = "- name: environment
  shell: printf '%s|%s|%s' \"$GREETING\" \"$EMPTY\" \"$(pwd)\" > out
  args:
    chdir: /tmp/idiom-env
    creates: /tmp/idiom-env/out
  environment:
    GREETING: \"it's \\\"quoted\\\" $HOME ; `id` {{ who }}\"
    EMPTY: ''
  vars:
    who: task
- name: the task's vars are gone
  copy: {dest: /tmp/idiom-env/who, content: \"{{ who | default('undefined') }}\\n\"}
- name: the environment is the task's only
  shell: echo \"${GREETING:-unset}\"
  register: after
- {name: report, copy: {dest: /tmp/idiom-env/after, content: \"{{ after.stdout }}\\n\"}}
";
    let (out, ev) = apply(&lab, tasks, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(task(&ev, "environment")["status"], "changed");
    assert_eq!(
        lab.run(
            HOST,
            "cat /tmp/idiom-env/out; echo; cat /tmp/idiom-env/who /tmp/idiom-env/after"
        ),
        "it's \"quoted\" $HOME ; `id` task||/tmp/idiom-env\nundefined\nunset"
    );
    let (_, ev) = apply(&lab, tasks, &[]);
    assert_eq!(
        task(&ev, "environment")["status"],
        "ok",
        "creates: the file is there, the command does not run"
    );
    lab.run(HOST, "rm -rf /tmp/idiom-env");
}

#[test]
fn with_items_flattens_one_level_with_dict_gives_keys_and_loop_control_names_the_item() {
    let lab = lab();
    lab.run(HOST, "rm -rf /tmp/idiom-loop && mkdir /tmp/idiom-loop");
    let (out, ev) = apply(
        &lab,
        "- name: items
  copy: {dest: \"/tmp/idiom-loop/item-{{ item }}\", content: \"{{ item }}\\n\"}
  with_items: [\"{{ base }}\", c, [d, [e]]]
  vars: {base: [a, b]}
  register: items
- name: dict
  copy: {dest: \"/tmp/idiom-loop/{{ item.key }}\", content: \"{{ item.value }}\\n\"}
  with_dict: {x: 1, y: two}
- name: own loop var
  command: \"echo {{ user.name }}\"
  loop: [{name: ann, uid: 1}, {name: bob, uid: 2}]
  loop_control: {loop_var: user, label: \"{{ user.name }}\"}
  register: users
- name: nothing to loop over
  command: /bin/false
  loop: []
- name: report
  copy:
    dest: /tmp/idiom-loop/report
    content: |
      {{ items.results | length }} {{ items.results | map(attribute='item') | list }}
      {{ users.results | map(attribute='user') | map(attribute='uid') | list }} {{ users.results[0].ansible_loop_var }} {{ users.results | map(attribute='stdout') | join(',') }}
",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        lab.run(HOST, "cd /tmp/idiom-loop && LC_ALL=C ls -m && cat x y"),
        "item-['e'], item-a, item-b, item-c, item-d, report, x, y\n1\ntwo"
    );
    assert_eq!(
        lab.run(HOST, "cat /tmp/idiom-loop/report"),
        "5 ['a', 'b', 'c', 'd', ['e']]\n[1, 2] user ann,bob"
    );
    assert_eq!(task(&ev, "own loop var")["msg"], "(ann); (bob)", "labels");
    assert_eq!(task(&ev, "nothing to loop over")["status"], "skipped");
    lab.run(HOST, "rm -rf /tmp/idiom-loop");
}

#[test]
fn pre_tasks_handlers_run_before_the_roles_and_role_vars_beat_play_vars_without_facts() {
    let lab = lab();
    lab.run(HOST, "rm -rf /tmp/idiom-play && mkdir /tmp/idiom-play");
    let (out, _) = apply_play(
        &lab,
        "- hosts: ptrn-1
  gather_facts: false
  vars: {from_play: play, overridden: play}
  pre_tasks:
    - name: notify from pre_tasks
      command: 'true'
      changed_when: true
      notify: log
  roles: [mine]
  tasks:
    - {name: tasks, shell: echo tasks >> /tmp/idiom-play/order}
  post_tasks:
    - {name: post_tasks, shell: echo post_tasks >> /tmp/idiom-play/order}
  handlers:
    - {name: log, shell: echo handler >> /tmp/idiom-play/order}
",
        &[
            ("roles/mine/defaults/main.yml", "from_play: default\nfrom_defaults: default\n"),
            ("roles/mine/vars/main.yml", "overridden: role\n"),
            (
                "roles/mine/tasks/main.yml",
                "- name: role
  shell: echo role {{ from_play }} {{ overridden }} {{ from_defaults }} {{ ansible_hostname | default('no-facts') }} >> /tmp/idiom-play/order
",
            ),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        lab.run(HOST, "cat /tmp/idiom-play/order"),
        "handler\nrole play role default no-facts\ntasks\npost_tasks"
    );
    lab.run(HOST, "rm -rf /tmp/idiom-play");
}

#[test]
fn apt_and_systemd_take_their_own_argument_names() {
    let lab = lab();
    lab.run(
        HOST,
        "systemctl unmask -q idiom-sleep 2>/dev/null; systemctl stop idiom-sleep 2>/dev/null; \
         rm -f /usr/local/lib/systemd/system/idiom-sleep.service; systemctl daemon-reload; \
         mkdir -p /usr/local/lib/systemd/system; \
         DEBIAN_FRONTEND=noninteractive apt-get -q -y purge tree >/dev/null 2>&1; true",
    );
    let install = "- name: apt
  apt: {pkg: [tree], state: present, update_cache: true, cache_valid_time: 86400, install_recommends: false}
- name: unit
  copy:
    dest: /usr/local/lib/systemd/system/idiom-sleep.service
    content: \"[Service]\\nExecStart=/bin/sleep infinity\\n[Install]\\nWantedBy=multi-user.target\\n\"
- name: systemd
  systemd: {name: idiom-sleep, state: started, enabled: true, daemon_reload: true}
- name: reload alone
  ansible.builtin.systemd_service: {daemon_reload: true}
";
    let (out, ev) = apply(&lab, install, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        statuses(&ev, &["apt", "unit", "systemd", "reload alone"]),
        ["changed", "changed", "changed", "ok"]
    );
    assert_eq!(
        lab.run(
            HOST,
            "dpkg-query -W -f='${Status}' tree; echo; systemctl is-active idiom-sleep; systemctl is-enabled idiom-sleep"
        ),
        "install ok installed\nactive\nenabled"
    );
    let (_, ev) = apply(&lab, install, &[]);
    assert_eq!(
        statuses(&ev, &["apt", "unit", "systemd", "reload alone"]),
        ["ok"; 4],
        "idempotent"
    );
    let remove = "- name: masked
  systemd: {unit: idiom-sleep, state: stopped, masked: true}
- name: purged
  apt: {name: tree, state: absent, purge: true, autoremove: true}
";
    let (out, ev) = apply(&lab, remove, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(statuses(&ev, &["masked", "purged"]), ["changed", "changed"]);
    assert_eq!(
        lab.run(
            HOST,
            "systemctl is-active idiom-sleep; systemctl is-enabled idiom-sleep; \
             dpkg-query -W -f='${Status}' tree 2>/dev/null || echo gone"
        ),
        "inactive\nmasked\ngone"
    );
    let (_, ev) = apply(&lab, remove, &[]);
    assert_eq!(statuses(&ev, &["masked", "purged"]), ["ok", "ok"]);
    let (out, ev) = apply(
        &lab,
        "- {name: unmasked, systemd: {name: idiom-sleep, masked: false}}\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(task(&ev, "unmasked")["status"], "changed");
    lab.run(
        HOST,
        "systemctl disable --now idiom-sleep; rm -f /usr/local/lib/systemd/system/idiom-sleep.service; \
         systemctl daemon-reload",
    );
}

#[test]
fn key_value_arguments_listen_topics_role_parameters_and_vars_files_as_ansible_reads_them() {
    let lab = lab();
    lab.run(HOST, "rm -rf /tmp/idiom-kv && mkdir /tmp/idiom-kv");
    let site = |more: &str| {
        format!(
            "- hosts: ptrn-1
  vars: {{level: play}}
  vars_files: [more.yml]
  roles:
    - role: mine
      param: entry
      level: entry
    - {{role: other, when: false}}
  tasks:
    - name: a quoted value with spaces, an expression with spaces
      lineinfile: path=/tmp/idiom-kv/conf line='a = {{{{ from_file | upper }}}}' create=yes mode=0640
    - name: a command line keeps its words, gives up chdir and creates
      shell: printf '%s %s' \"x  y\" $(pwd) > out chdir=/tmp/idiom-kv creates=/tmp/idiom-kv/out
{more}"
        )
    };
    let files = [
        ("more.yml", "from_file: shared\nlevel: file\n"),
        ("roles/mine/vars/main.yml", "level: role\n"),
        (
            "roles/other/tasks/main.yml",
            "- {debug: var=param}\n- {command: touch /tmp/idiom-kv/never, notify: a topic}\n",
        ),
        (
            "roles/other/handlers/main.yml",
            "- {name: other, shell: echo other >> /tmp/idiom-kv/handlers, listen: a topic}\n",
        ),
        (
            "roles/mine/tasks/main.yml",
            "- name: role task
  copy: {dest: \"/tmp/idiom-kv/role-{{ param }}\", content: \"{{ level }}\\n\"}
  notify: a topic
- debug: var=param
",
        ),
        (
            "roles/mine/handlers/main.yml",
            "- {name: first, shell: echo first >> /tmp/idiom-kv/handlers, listen: a topic}
- {name: second, shell: echo second >> /tmp/idiom-kv/handlers, listen: [other, a topic]}
",
        ),
    ];
    // Arguments that are not key=value are refused before any host is touched.
    let (out, ev) = apply_play(
        &lab,
        &site("    - {name: not key=value, file: path=/tmp/idiom-kv/x oops}\n"),
        &files,
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains(
            "site.yml:14: file: expected a mapping of arguments or key=value pairs, and `oops` is not one"
        ),
        "{}",
        text(&out)
    );
    assert!(ev.is_empty(), "nothing ran: {ev:#?}");

    let (out, ev) = apply_play(&lab, &site(""), &files);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown: Vec<&Value> = ev
        .iter()
        .filter(|e| e["event"] == "task" && e["task"] == "debug" && e["status"] == "ok")
        .map(|e| &e["msg"])
        .collect();
    assert_eq!(
        shown,
        ["param: entry"],
        "role other's entry has `when: false`"
    );
    // Role parameters win over the role's vars/main.yml, which wins over vars_files and vars;
    // both handlers listening to the topic run, in their order.
    assert_eq!(
        lab.run(
            HOST,
            "cd /tmp/idiom-kv && ls | tr '\\n' ' '; cat role-entry conf out; echo; \
             cat handlers; stat -c %a conf"
        ),
        "conf handlers out role-entry entry\na = SHARED\nx  y /tmp/idiom-kv\nfirst\nsecond\n640"
    );
    let (_, ev) = apply_play(&lab, &site(""), &files);
    assert!(
        common::events::changed(&ev).is_empty(),
        "a second run changes nothing: {:?}",
        common::events::changed(&ev)
    );
    lab.run(HOST, "rm -rf /tmp/idiom-kv");
}

#[test]
fn meta_end_host_and_end_play_local_action_and_the_other_with_loops() {
    let lab = lab();
    for h in ["ptrn-1", "ptrn-2"] {
        lab.run(h, "rm -rf /tmp/idiom-meta && mkdir /tmp/idiom-meta");
    }
    let (out, ev) = apply_play(
        &lab,
        "- hosts: postgres_cluster
  gather_facts: false
  tasks:
    - {name: notify, command: 'true', notify: handler}
    - meta: end_host
      when: inventory_hostname == 'ptrn-1'
    - {name: local, local_action: \"command echo {{ inventory_hostname }} from here\", register: here}
    - {name: nested, shell: \"echo {{ item.0 }}{{ item.1 }} >> /tmp/idiom-meta/nested\", with_nested: [[a, b], [1, 2]]}
    - {name: together, shell: \"echo {{ item.0 }}={{ item.1 }} >> /tmp/idiom-meta/together\", with_together: [[a, b], [1]]}
    - {name: sequence, shell: \"echo {{ item }} >> /tmp/idiom-meta/sequence\", with_sequence: start=8 end=12 stride=2 format=web%02d}
    - name: subelements
      shell: \"echo {{ item.0.name }}:{{ item.1 }} >> /tmp/idiom-meta/subelements\"
      with_subelements:
        - [{name: ann, keys: [k1, k2]}, {name: bob, keys: [k3]}, {name: cy}]
        - keys
        - {skip_missing: true}
    - {name: report, copy: {dest: /tmp/idiom-meta/here, content: \"{{ here.stdout }}\\n\"}}
    - meta: end_play
    - {name: never, command: touch /tmp/idiom-meta/never}
  handlers:
    - {name: handler, command: touch /tmp/idiom-meta/handled}
- hosts: postgres_cluster
  gather_facts: false
  tasks:
    - {name: the next play, command: touch /tmp/idiom-meta/next}
",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // ptrn-1 ended its play after `notify`: no handler, nothing after, but the next play runs.
    assert_eq!(
        lab.run("ptrn-1", "cd /tmp/idiom-meta && ls | tr '\\n' ' '"),
        "next"
    );
    // ptrn-2 ran to end_play: neither `never` nor the handler notified before it.
    let here = std::process::Command::new("hostname")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    assert_ne!(here, "ptrn-2");
    assert_eq!(
        lab.run(
            "ptrn-2",
            "cd /tmp/idiom-meta && ls | tr '\\n' ' '; echo; cat here nested together sequence subelements"
        ),
        format!(
            "here nested next sequence subelements together \nptrn-2 from here\na1\na2\nb1\nb2\na=1\nb=\nweb08\nweb10\nweb12\nann:k1\nann:k2\nbob:k3"
        )
    );
    // As Ansible's recap: meta tasks are not counted.
    assert_eq!(recap(&ev)["ptrn-1"]["ok"], 2, "{:#?}", recap(&ev));
    assert_eq!(recap(&ev)["ptrn-1"]["skipped"], 0, "{:#?}", recap(&ev));
    for h in ["ptrn-1", "ptrn-2"] {
        lab.run(h, "rm -rf /tmp/idiom-meta");
    }
}
