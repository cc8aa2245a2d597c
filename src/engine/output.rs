//! What a run tells its user: a line per task and host, unified diffs with secrets masked, a
//! spinner on a terminal, and the recap — or the same as one JSON event per line.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use indexmap::IndexMap;
use serde::Serialize;
use similar::TextDiff;

use crate::modules::Diff;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Changed,
    Skipped,
    Failed,
    Unreachable,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Changed => "changed",
            Status::Skipped => "skipping",
            Status::Failed => "failed",
            Status::Unreachable => "unreachable",
        }
    }
}

/// Per-host counts, as Ansible's recap shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub ok: u32,
    pub changed: u32,
    pub unreachable: u32,
    pub failed: u32,
    pub skipped: u32,
    /// Failures a block's `rescue` took over (not counted as failed).
    pub rescued: u32,
    /// Failures `ignore_errors` let pass (counted as ok too, as Ansible does).
    pub ignored: u32,
    /// SSH commands and uploads sent to the host (facts included).
    pub round_trips: u32,
}

impl Stats {
    pub fn count(&mut self, status: Status) {
        match status {
            Status::Ok => self.ok += 1,
            // Ansible counts a changed task in both ok and changed.
            Status::Changed => {
                self.ok += 1;
                self.changed += 1
            }
            Status::Skipped => self.skipped += 1,
            Status::Failed => self.failed += 1,
            Status::Unreachable => self.unreachable += 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// One task's result on one host, as reported.
#[derive(Debug, Clone)]
pub struct Line<'a> {
    pub host: &'a str,
    pub role: &'a str,
    pub task: &'a str,
    pub status: Status,
    pub msg: &'a str,
    pub diffs: &'a [Diff],
    /// The task is `no_log`: say nothing of its output.
    pub quiet: bool,
}

pub struct Reporter {
    format: Format,
    show_diff: bool,
    check: bool,
    /// Values never printed, by host ("" = every host).
    secrets: IndexMap<String, Vec<String>>,
    spinner: Option<indicatif::ProgressBar>,
    out: Mutex<std::io::Stdout>,
}

impl Reporter {
    pub fn new(format: Format, show_diff: bool, check: bool) -> Reporter {
        let spinner = (format == Format::Text && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Reporter {
            format,
            show_diff,
            check,
            secrets: IndexMap::new(),
            spinner,
            out: Mutex::new(std::io::stdout()),
        }
    }

    /// Values that must never be printed for `host` ("" for every host).
    pub fn add_secrets(&mut self, host: &str, values: Vec<String>) {
        let list = self.secrets.entry(host.to_string()).or_default();
        list.extend(values.into_iter().filter(|v| v.len() >= 3));
        list.sort_by_key(|v| std::cmp::Reverse(v.len()));
        list.dedup();
    }

    /// Replaces every secret value known for `host` with `********`.
    pub fn mask(&self, host: &str, text: &str) -> String {
        let mut out = text.to_string();
        for key in ["", host] {
            for secret in self.secrets.get(key).into_iter().flatten() {
                if out.contains(secret.as_str()) {
                    out = out.replace(secret.as_str(), "********");
                }
            }
        }
        out
    }

    fn emit(&self, text: &str) {
        match &self.spinner {
            Some(bar) => bar.suspend(|| self.write(text)),
            None => self.write(text),
        }
    }

    fn write(&self, text: &str) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // A closed pipe (`| head`) must not turn into a panic; the run goes on regardless.
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    fn json(&self, value: serde_json::Value) {
        self.emit(&format!("{value}\n"));
    }

    pub fn play(&self, name: &str, hosts: &[String]) {
        match self.format {
            Format::Text => self.emit(&format!(
                "\nPLAY [{name}] on {}{}\n",
                hosts.join(", "),
                if self.check { " (check mode)" } else { "" }
            )),
            Format::Json => self.json(serde_json::json!({"event": "play", "play": name, "hosts": hosts, "check": self.check})),
        }
    }

    /// Shows what is running, on the spinner only.
    pub fn progress(&self, text: &str) {
        if let Some(bar) = &self.spinner {
            bar.set_message(text.to_string());
        }
    }

    pub fn result(&self, line: &Line) {
        let msg = if line.quiet {
            String::new()
        } else {
            self.mask(line.host, line.msg)
        };
        let title = if line.role.is_empty() {
            line.task.to_string()
        } else {
            format!("{} : {}", line.role, line.task)
        };
        let diffs: Vec<String> = if self.show_diff && !line.quiet {
            line.diffs
                .iter()
                .map(|d| self.unified(line.host, d))
                .collect()
        } else {
            Vec::new()
        };
        match self.format {
            Format::Text => {
                let mut text = format!(
                    "{:<11} [{}] {title}",
                    format!("{}:", line.status.word()),
                    line.host
                );
                if !msg.is_empty() {
                    text.push_str(&format!(" — {msg}"));
                }
                text.push('\n');
                for d in &diffs {
                    text.push_str(d);
                }
                self.emit(&text);
            }
            Format::Json => self.json(serde_json::json!({
                "event": "task", "host": line.host, "role": line.role, "task": line.task,
                "status": line.status, "msg": msg, "diff": diffs,
            })),
        }
    }

    fn unified(&self, host: &str, diff: &Diff) -> String {
        let after = self.mask(host, &diff.after);
        if after != diff.after {
            // The old content may hold an older secret that no variable names any more.
            return format!("--- {} holds a secret: diff not shown\n", diff.path);
        }
        let before = self.mask(host, &diff.before);
        TextDiff::from_lines(&before, &after)
            .unified_diff()
            .context_radius(3)
            .header(
                &format!("{} (before)", diff.path),
                &format!("{} (after)", diff.path),
            )
            .to_string()
    }

    pub fn warn(&self, text: &str) {
        match self.format {
            Format::Text => {
                let _ = match &self.spinner {
                    Some(bar) => bar.suspend(|| writeln!(std::io::stderr(), "hactl: {text}")),
                    None => writeln!(std::io::stderr(), "hactl: {text}"),
                };
            }
            Format::Json => self.json(serde_json::json!({"event": "warning", "msg": text})),
        }
    }

    pub fn recap(&self, stats: &IndexMap<String, Stats>) {
        if let Some(bar) = &self.spinner {
            bar.finish_and_clear();
        }
        match self.format {
            Format::Text => {
                let width = stats.keys().map(String::len).max().unwrap_or(0);
                let mut text = String::from("\nRECAP\n");
                for (host, s) in stats {
                    text.push_str(&format!(
                        "{host:<width$} : ok={} changed={} unreachable={} failed={} skipped={} rescued={} ignored={}\n",
                        s.ok, s.changed, s.unreachable, s.failed, s.skipped, s.rescued, s.ignored
                    ));
                }
                self.emit(&text);
            }
            Format::Json => self.json(serde_json::json!({"event": "recap", "hosts": stats})),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_holding_a_secret_shows_no_diff() {
        let mut r = Reporter::new(Format::Json, true, false);
        r.add_secrets("db1", vec!["s3cr3t-pw".into()]);
        let d = Diff {
            path: "/etc/x".into(),
            before: "a\n".into(),
            after: "a\npassword: s3cr3t-pw\n".into(),
        };
        let text = r.unified("db1", &d);
        assert_eq!(text, "--- /etc/x holds a secret: diff not shown\n");
        let d = Diff {
            path: "/etc/y".into(),
            before: "a\n".into(),
            after: "b\n".into(),
        };
        assert!(r.unified("db1", &d).contains("+b"));
    }

    #[test]
    fn secrets_nested_in_inventory_and_extra_vars_are_masked_in_diffs_and_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts.yml");
        let inventory = "all:
  vars:
    alertmanager_receivers:
      - name: ops
        telegram_configs:
          - bot_token: '123:tg-tok3n'
            chat_id: 42
  hosts:
    mon1: {ansible_host: 10.0.0.9}
";
        std::fs::write(&path, inventory).unwrap();
        let inventory = crate::inventory::Inventory::load(&path).unwrap();
        let opts = super::super::Options {
            extra_vars: [(
                "smtp".to_string(),
                serde_json::json!({"auth_password": "m4il-pw"}),
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let mut r = Reporter::new(Format::Json, true, false);
        r.add_secrets("mon1", super::super::secrets_of(&inventory, "mon1", &opts));
        assert_eq!(
            r.mask("mon1", "token 123:tg-tok3n, password m4il-pw, chat 42"),
            "token ********, password ********, chat 42"
        );
        let d = Diff {
            path: "/etc/prometheus/alertmanager.yml".into(),
            before: String::new(),
            after: "    bot_token: '123:tg-tok3n'\n    chat_id: 42\n".into(),
        };
        assert_eq!(
            r.unified("mon1", &d),
            "--- /etc/prometheus/alertmanager.yml holds a secret: diff not shown\n"
        );
    }

    #[test]
    fn changed_counts_as_ok_too() {
        let mut s = Stats::default();
        s.count(Status::Changed);
        s.count(Status::Ok);
        assert_eq!((s.ok, s.changed), (2, 1));
    }
}
