//! `external`: runs a command; exit code 0 is success, and lines of its standard output in the
//! Prometheus text format become metrics (as cloudprober's EXTERNAL probe does).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Mutex;

use serde::Deserialize;

use super::{Env, Failure, Kind, Mistake, Run};
use crate::probe::config::Probe;
use crate::probe::metrics::Registrar;

pub(crate) struct External;

/// `external:` as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Options {
    /// The program and its arguments; `{target}` is replaced by the target.
    command: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spec {
    program: String,
    args: Vec<String>,
}

/// The commands' own metrics, by (probe, dst): the lines to append as they came. They are not
/// in the registry: their names and labels are the commands'.
#[derive(Default)]
pub(crate) struct Series {
    samples: Mutex<BTreeMap<(String, String), Vec<Sample>>>,
}

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    /// `k="v"` pairs, already escaped.
    labels: Vec<(String, String)>,
    value: f64,
}

impl Kind for External {
    const NAME: &'static str = "external";
    const BLOCK: Option<&'static str> = Some("external");
    type Options = Options;
    type Spec = Spec;
    type State = ();
    type Series = Series;

    fn check(o: Options) -> Result<Spec, Mistake> {
        let key = "external.command";
        let command = o.command.ok_or_else(|| Mistake::new(key, "missing"))?;
        match command.split_first() {
            Some((program, args)) => Ok(Spec {
                program: program.clone(),
                args: args.to_vec(),
            }),
            None => Err(Mistake::new(key, "the list is empty")),
        }
    }

    fn default_targets() -> Option<Vec<String>> {
        Some(vec!["local".into()])
    }

    fn state(_: &Spec, _: &Probe, _: &Env) -> Result<(), Mistake> {
        Ok(())
    }

    async fn run(run: Run<'_, Self>) -> Result<(), Failure> {
        let spec = run.spec;
        let program = spec.program.replace("{target}", run.target);
        let child = tokio::process::Command::new(&program)
            .args(spec.args.iter().map(|a| a.replace("{target}", run.target)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a run that times out is dropped, and the whole group with it.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Failure(format!("{program}: {e}")))?;
        let _group = child.id().map(Group);
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| Failure(format!("{program}: {e}")))?;
        let samples = parse(&String::from_utf8_lossy(&out.stdout));
        run.series
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((run.probe.name.clone(), run.target.to_string()), samples);
        if out.status.success() {
            Ok(())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().last().unwrap_or_default().trim();
            Err(Failure(match out.status.code() {
                Some(c) => format!("exit {c}{}{last}", if last.is_empty() { "" } else { ": " }),
                None => "killed by a signal".into(),
            }))
        }
    }

    fn series(_: &mut Registrar) -> Series {
        Series::default()
    }

    fn forget_target(series: &Series, probe: &str, dst: &str) {
        series
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(probe.to_string(), dst.to_string()));
    }

    fn render(series: &Series, out: &mut String) {
        let samples = series.samples.lock().unwrap_or_else(|e| e.into_inner());
        let mut typed = std::collections::BTreeSet::new();
        for ((probe, dst), samples) in samples.iter() {
            for s in samples {
                if typed.insert(s.name.clone()) {
                    out.push_str(&format!("# TYPE {} untyped\n", s.name));
                }
                let mut labels = vec![
                    format!("probe=\"{}\"", escape(probe)),
                    format!("dst=\"{}\"", escape(dst)),
                ];
                labels.extend(s.labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")));
                out.push_str(&format!("{}{{{}}} {}\n", s.name, labels.join(","), s.value));
            }
        }
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
fn parse(text: &str) -> Vec<Sample> {
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
            out.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
        }
    }
    out
}

/// A label value in the text format.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::config::tests::{assert_errors, probe};
    use crate::probe::kinds::Spec as AnySpec;

    #[test]
    fn the_command_is_required_and_the_target_defaults_to_local() {
        let p = probe("probes:\n  - {name: x, type: external, external: {command: [sh, -c, \"exit 0\"]}}\n");
        assert_eq!(p.targets, crate::probe::config::Targets::Static(vec!["local".into()]));
        let AnySpec::External(s) = p.spec else {
            panic!("not an external spec: {:?}", p.spec)
        };
        assert_eq!((s.program.as_str(), s.args.as_slice()), ("sh", &["-c".to_string(), "exit 0".into()][..]));
        let head = "probes:\n  - name: x\n    type: external\n";
        assert_errors(head, &[
            ("", "probes.yml:2: probes[0] (x): external.command: missing"),
            ("    external: {}\n", "probes.yml:4: probes[0] (x): external.command: missing"),
            ("    external: {command: []}\n", "probes.yml:4: external.command: the list is empty"),
            (
                "    external: {command: \"true\"}\n",
                "probes.yml:4: probes[0]: external.command: invalid type: string \"true\", expected a sequence",
            ),
            (
                "    external: {cmd: [x]}\n",
                "probes.yml:4: probes[0]: external.cmd: unknown field `cmd`, expected `command`",
            ),
        ]);
    }

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
