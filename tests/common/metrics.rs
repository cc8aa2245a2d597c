//! A Prometheus text-format page, as the prober serves it on /metrics: parsed into samples, and
//! asked for one series or a sum.

use std::collections::BTreeMap;

/// One sample of the text format: name, labels, value.
#[derive(Debug)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// Whether the sample carries every one of `labels`.
    pub fn has(&self, labels: &[(&str, &str)]) -> bool {
        labels
            .iter()
            .all(|(k, v)| self.labels.get(*k).map(String::as_str) == Some(*v))
    }
}

/// A /metrics page, parsed.
pub struct Metrics {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| parse_sample(l).unwrap_or_else(|| panic!("not a sample: {l:?}\n{text}")))
            .collect();
        Metrics {
            text: text.to_string(),
            samples,
        }
    }

    /// The value of the one sample called `name` that has all of `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self.with(name, labels).collect();
        assert!(
            found.len() <= 1,
            "{name}{labels:?} matches {} samples:\n{}",
            found.len(),
            self.text
        );
        found.first().map(|s| s.value)
    }

    /// The sum of every sample called `name` that has all of `labels` (0 when there is none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.with(name, labels).map(|s| s.value).sum()
    }

    /// The samples called `name` that have all of `labels`.
    pub fn with<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.name == name && s.has(labels))
    }

    /// A per-target series of a probe (labels probe and dst).
    pub fn of(&self, name: &str, probe: &str, dst: &str) -> Option<f64> {
        self.get(name, &[("probe", probe), ("dst", dst)])
    }

    /// A counter that does not exist yet counts 0.
    pub fn count(&self, name: &str, probe: &str, dst: &str) -> f64 {
        self.of(name, probe, dst).unwrap_or(0.0)
    }

    /// Asserts the value of a per-target series (None: absent), showing the page otherwise.
    #[track_caller]
    pub fn assert_is(&self, name: &str, probe: &str, dst: &str, want: Option<f64>) {
        let got = self.of(name, probe, dst);
        assert_eq!(
            got, want,
            "{name}{{probe={probe:?},dst={dst:?}}}:\n{}",
            self.text
        );
    }

    /// Asserts a counter's value (absent counts 0), showing the page otherwise.
    #[track_caller]
    pub fn assert_count(&self, name: &str, probe: &str, dst: &str, want: f64) {
        let got = self.count(name, probe, dst);
        assert_eq!(
            got, want,
            "{name}{{probe={probe:?},dst={dst:?}}}:\n{}",
            self.text
        );
    }

    /// Whether every run so far counts in `counter` (`success`, `timeouts`), and there was one.
    /// To wait for, not to assert on one page: the registry gathers one family after another,
    /// so a page can catch a run between its `total` and `success` increments.
    pub fn every_run(&self, counter: &str, probe: &str, dst: &str) -> bool {
        let total = self.count("total", probe, dst);
        total > 0.0 && self.count(counter, probe, dst) == total
    }

    /// The samples that carry all of `labels`, one per line (for messages that list them).
    pub fn series_with(&self, labels: &[(&str, &str)]) -> Vec<String> {
        self.samples
            .iter()
            .filter(|s| s.has(labels))
            .map(|s| format!("{}{:?} {}", s.name, s.labels, s.value))
            .collect()
    }

    /// Whether any series carries probe="probe".
    pub fn mentions(&self, probe: &str) -> bool {
        self.samples.iter().any(|s| s.has(&[("probe", probe)]))
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let end = line.find(['{', ' '])?;
    let name = line[..end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => {
                    rest = &inner[i + 1..];
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                other => key.push(other),
            }
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}
