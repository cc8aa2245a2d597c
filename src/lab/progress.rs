//! What `lab up` is doing: a spinner on a terminal, plain lines otherwise (CI logs).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    spinner: Option<ProgressBar>,
}

impl Progress {
    pub fn new() -> Progress {
        let spinner = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} lab up [{elapsed}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress { spinner }
    }

    pub fn step(&self, message: &str) {
        match &self.spinner {
            Some(bar) => bar.set_message(message.to_string()),
            None => eprintln!("lab up: {message}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.spinner {
            bar.finish_and_clear();
        }
    }
}
