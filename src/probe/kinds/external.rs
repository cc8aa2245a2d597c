//! `external`: runs a command; exit code 0 is success, and lines of its standard output in the
//! Prometheus text format become metrics (as cloudprober's EXTERNAL probe does).

use std::process::Stdio;

use super::Ctx;
use crate::probe::metrics::{escape, ExternalSample};

pub async fn run(ctx: &Ctx<'_>) -> Result<(), String> {
    let p = ctx.probe;
    let argv: Vec<String> = p
        .external
        .command
        .iter()
        .map(|a| a.replace("{target}", ctx.target))
        .collect();
    let Some((program, args)) = argv.split_first() else {
        return Err("no command".into());
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a run that times out is dropped, and the whole group with it.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    let _group = child.id().map(Group);
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("{program}: {e}"))?;
    let samples = parse(&String::from_utf8_lossy(&out.stdout));
    ctx.metrics
        .external
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((p.name.clone(), ctx.target.to_string()), samples);
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or_default().trim();
        Err(match out.status.code() {
            Some(c) => format!("exit {c}{}{last}", if last.is_empty() { "" } else { ": " }),
            None => "killed by a signal".into(),
        })
    }
}

/// Kills a command's process group when its run ends (done, or dropped at its timeout), so
/// that nothing it started outlives it.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// `name value` or `name{k="v",...} value` lines; everything else (comments, junk) is skipped.
pub fn parse(text: &str) -> Vec<ExternalSample> {
    let name_re = regex::Regex::new(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$").ok();
    let label_re =
        regex::Regex::new(r#"^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*$"#).ok();
    let (Some(name_re), Some(label_re)) = (name_re, label_re) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (head, value) = match line.rsplit_once(char::is_whitespace) {
            Some((h, v)) => (h.trim(), v),
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => {
                let Some(inner) = rest.strip_suffix('}') else {
                    continue;
                };
                let mut labels = Vec::new();
                let mut ok = true;
                for part in inner.split(',').filter(|s| !s.trim().is_empty()) {
                    match label_re.captures(part) {
                        Some(c) if !matches!(&c[1], "probe" | "dst") => {
                            labels.push((c[1].to_string(), escape(&c[2].replace("\\\"", "\""))))
                        }
                        _ => ok = false,
                    }
                }
                if !ok {
                    continue;
                }
                (n.trim(), labels)
            }
            None => (head, Vec::new()),
        };
        if name_re.is_match(name) {
            out.push(ExternalSample {
                name: name.to_string(),
                labels,
                value,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn prometheus_text_lines_become_samples_and_junk_is_skipped() {
        let s = parse("# HELP x\nqueue_depth 12\nrows{table=\"a\",db=\"b\"} 3.5\nnot a metric\nbad{x=1} 2\nprobe_ok{probe=\"x\"} 1\n");
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[0].name, "queue_depth");
        assert_eq!(s[0].value, 12.0);
        assert_eq!(
            s[1].labels,
            vec![("table".into(), "a".into()), ("db".into(), "b".into())]
        );
    }
}
