//! sudo with a password, without the password ever reaching the command: sudo prompts with a
//! marker of hactl's own, the password is written only after that marker, and the command's
//! stdin only after the shell under sudo has said that it runs.

use super::shell_quote;

/// The markers of one session: random, so a command cannot print them to obtain the password.
#[derive(Debug, Clone)]
pub(crate) struct Markers {
    /// sudo's prompt (`sudo -S -p PROMPT`), written to stderr when it wants the password.
    prompt: Vec<u8>,
    /// What the shell under sudo writes to stderr before it runs the command.
    running: Vec<u8>,
}

impl Markers {
    pub(crate) fn random() -> std::io::Result<Markers> {
        let hex: String = crate::secrets::random_bytes(12)?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Markers::with_nonce(&hex))
    }

    fn with_nonce(nonce: &str) -> Markers {
        Markers {
            prompt: format!("[hactl-sudo-{nonce}]").into_bytes(),
            running: format!("[hactl-sudo-{nonce}-ran]").into_bytes(),
        }
    }

    /// `command` run as root by `sh -c` under `sudo -S`, announcing itself first.
    #[cfg(test)]
    pub(crate) fn wrap(&self, command: &str) -> String {
        self.wrap_as(command, "")
    }

    /// The same, as `user` (`-u USER`; root when empty).
    pub(crate) fn wrap_as(&self, command: &str, user: &str) -> String {
        let prompt = String::from_utf8_lossy(&self.prompt);
        let running = String::from_utf8_lossy(&self.running);
        // A newline, not `;`, after the announcement: the command may start with anything.
        let script = format!("printf '%s' {} >&2\n{command}", shell_quote(&running));
        let as_user = if user.is_empty() {
            String::new()
        } else {
            format!("-u {} ", shell_quote(user))
        };
        format!(
            "sudo -S -p {} -H {as_user}-- sh -c {}",
            shell_quote(&prompt),
            shell_quote(&script)
        )
    }
}

/// What to write on the command's stdin next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// sudo asks: the password line.
    Password,
    /// The command runs: its stdin, then end of file.
    Input,
    /// sudo asked again after the password: it was wrong. End of file, and fail.
    WrongPassword,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// sudo has neither asked nor let the command run.
    Waiting,
    PasswordSent,
    Running,
    Refused,
}

/// Reads sudo's side of stderr: finds the markers, decides the next step, and passes on the
/// rest (sudo's own messages, then the command's stderr) without the markers.
#[derive(Debug)]
pub(crate) struct Conversation<'a> {
    markers: &'a Markers,
    state: State,
    /// Bytes that may be the start of a marker split across messages.
    pending: Vec<u8>,
}

impl<'a> Conversation<'a> {
    pub(crate) fn new(markers: &'a Markers) -> Conversation<'a> {
        Conversation {
            markers,
            state: State::Waiting,
            pending: vec![],
        }
    }

    /// Whether the command is yet to run: sudo has not let it, nor refused.
    pub(crate) fn waiting(&self) -> bool {
        matches!(self.state, State::Waiting | State::PasswordSent)
    }

    /// Takes a chunk of stderr; returns the part to report as stderr, and the steps to take.
    pub(crate) fn stderr(&mut self, chunk: &[u8]) -> (Vec<u8>, Vec<Step>) {
        if !self.waiting() {
            return (chunk.to_vec(), vec![]);
        }
        self.pending.extend_from_slice(chunk);
        let mut passed = vec![];
        let mut steps = vec![];
        while self.waiting() {
            let prompt = find(&self.pending, &self.markers.prompt);
            let running = find(&self.pending, &self.markers.running);
            let (at, len, step) = match (prompt, running) {
                (Some(p), Some(r)) if r < p => (r, self.markers.running.len(), Step::Input),
                (Some(p), _) if self.state == State::PasswordSent => {
                    (p, self.markers.prompt.len(), Step::WrongPassword)
                }
                (Some(p), _) => (p, self.markers.prompt.len(), Step::Password),
                (None, Some(r)) => (r, self.markers.running.len(), Step::Input),
                (None, None) => break,
            };
            passed.extend_from_slice(&self.pending[..at]);
            self.pending.drain(..at + len);
            self.state = match step {
                Step::Password => State::PasswordSent,
                Step::Input => State::Running,
                Step::WrongPassword => State::Refused,
            };
            steps.push(step);
        }
        if self.waiting() {
            // Keep only what could still grow into a marker.
            let keep = [&self.markers.prompt, &self.markers.running]
                .iter()
                .map(|m| partial_suffix(&self.pending, m))
                .max()
                .unwrap_or(0);
            let cut = self.pending.len() - keep;
            passed.extend(self.pending.drain(..cut));
        } else {
            passed.append(&mut self.pending);
        }
        (passed, steps)
    }

    /// At the end of the channel: what is still held back, which was no marker after all.
    pub(crate) fn finish(self) -> Vec<u8> {
        self.pending
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The length of the longest end of `bytes` that is the start of `marker` (and not all of it).
fn partial_suffix(bytes: &[u8], marker: &[u8]) -> usize {
    (1..marker.len().min(bytes.len() + 1))
        .rev()
        .find(|n| bytes.ends_with(&marker[..*n]))
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn markers() -> Markers {
        Markers::with_nonce("c0ffee")
    }

    /// The markers' prompt and announcement, as a host sees them.
    pub(crate) const PROMPT: &[u8] = b"[hactl-sudo-c0ffee]";
    pub(crate) const RAN: &[u8] = b"[hactl-sudo-c0ffee-ran]";

    fn feed(c: &mut Conversation, chunks: &[&[u8]]) -> (String, Vec<Step>) {
        let mut passed = vec![];
        let mut steps = vec![];
        for chunk in chunks {
            let (p, s) = c.stderr(chunk);
            passed.extend(p);
            steps.extend(s);
        }
        (String::from_utf8(passed).unwrap(), steps)
    }

    #[test]
    fn the_markers_are_random_per_session() {
        let a = Markers::random().unwrap();
        let b = Markers::random().unwrap();
        assert_ne!(a.prompt, b.prompt);
        assert!(String::from_utf8_lossy(&a.prompt).starts_with("[hactl-sudo-"));
    }

    #[test]
    fn the_wrapped_command_prompts_with_the_marker_and_announces_itself() {
        let wrapped = markers().wrap("cat > /etc/x");
        assert_eq!(
            wrapped,
            "sudo -S -p '[hactl-sudo-c0ffee]' -H -- sh -c 'printf '\\''%s'\\'' '\\''[hactl-sudo-c0ffee-ran]'\\'' >&2\ncat > /etc/x'"
        );
    }

    #[test]
    fn without_a_prompt_the_password_is_never_asked_for() {
        let m = markers();
        let mut c = Conversation::new(&m);
        let (passed, steps) = feed(&mut c, &[RAN, b"warning: x\n"]);
        assert_eq!(steps, [Step::Input]);
        assert_eq!(passed, "warning: x\n");
        assert!(!c.waiting());
    }

    #[test]
    fn the_password_follows_the_prompt_and_the_input_the_announcement() {
        let m = markers();
        let mut c = Conversation::new(&m);
        let (passed, steps) = feed(&mut c, &[PROMPT]);
        assert_eq!((passed.as_str(), steps), ("", vec![Step::Password]));
        let (passed, steps) = feed(&mut c, &[RAN, b"err\n"]);
        assert_eq!((passed.as_str(), steps), ("err\n", vec![Step::Input]));
    }

    #[test]
    fn markers_split_across_messages_are_found_and_never_reported() {
        let m = markers();
        let mut c = Conversation::new(&m);
        let (passed, steps) = feed(
            &mut c,
            &[
                b"lecture\n[hactl-su",
                b"do-c0ff",
                b"ee]",
                b"[hactl-sudo-c0",
                b"ffee-ran]out",
            ],
        );
        assert_eq!(steps, [Step::Password, Step::Input]);
        assert_eq!(passed, "lecture\nout");
    }

    #[test]
    fn a_second_prompt_means_a_wrong_password() {
        let m = markers();
        let mut c = Conversation::new(&m);
        let (passed, steps) = feed(&mut c, &[PROMPT, b"Sorry, try again.\n", PROMPT]);
        assert_eq!(steps, [Step::Password, Step::WrongPassword]);
        assert_eq!(passed, "Sorry, try again.\n");
        assert!(!c.waiting());
    }

    #[test]
    fn the_command_printing_the_prompt_gets_nothing() {
        let m = markers();
        let mut c = Conversation::new(&m);
        let (passed, steps) = feed(&mut c, &[RAN, PROMPT]);
        assert_eq!(steps, [Step::Input]);
        assert_eq!(passed.as_bytes(), PROMPT);
    }

    #[test]
    fn what_sudo_says_when_it_refuses_is_reported_whole() {
        let m = markers();
        let mut c = Conversation::new(&m);
        let (passed, steps) = feed(&mut c, &[b"deploy is not in the sudoers file.\n[hactl"]);
        assert!(steps.is_empty());
        assert_eq!(passed, "deploy is not in the sudoers file.\n");
        assert_eq!(c.finish(), b"[hactl");
    }
}
