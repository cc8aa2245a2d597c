//! One command's conversation over an exec channel: stdin written when the command runs (after
//! sudo's password, if sudo asks for it), output read until the channel ends.

use std::future::Future;
use std::time::Duration;

use russh::client;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};

use super::sudo::{Conversation, Markers, Step};
use super::Output;

/// Messages from the host: russh's read half, or a test's fake host.
pub(crate) trait Inbox: Send {
    fn recv(&mut self) -> impl Future<Output = Option<ChannelMsg>> + Send;
}

/// The command's stdin: russh's write half, or a test's fake host.
pub(crate) trait Outbox: Sync {
    fn send(&self, data: &[u8]) -> impl Future<Output = Result<(), russh::Error>> + Send;
    fn eof(&self) -> impl Future<Output = Result<(), russh::Error>> + Send;
}

impl Inbox for ChannelReadHalf {
    async fn recv(&mut self) -> Option<ChannelMsg> {
        self.wait().await
    }
}

impl Outbox for ChannelWriteHalf<client::Msg> {
    async fn send(&self, data: &[u8]) -> Result<(), russh::Error> {
        self.data(data).await
    }

    async fn eof(&self) -> Result<(), russh::Error> {
        ChannelWriteHalf::eof(self).await
    }
}

/// sudo that may ask for a password.
pub(crate) struct Sudo<'a> {
    pub markers: &'a Markers,
    pub password: &'a str,
    /// How long sudo may take to ask or to let the command run.
    pub patience: Duration,
}

#[derive(Debug)]
pub(crate) enum Failure {
    Channel(russh::Error),
    /// sudo asked again after the password.
    WrongPassword,
    /// sudo neither asked with the marker nor ran the command in time.
    SudoSilent,
}

/// Talks to a command whose exec request was just sent: waits for the request's answer, feeds
/// stdin once the command runs, and collects its output until the channel ends.
pub(crate) async fn converse<I: Inbox, O: Outbox>(
    inbox: &mut I,
    outbox: &O,
    stdin: &[u8],
    sudo: Option<Sudo<'_>>,
) -> Result<Output, Failure> {
    let (steps, mut next) = tokio::sync::mpsc::unbounded_channel();
    let password = sudo.as_ref().map(|s| s.password);
    let mut talk = sudo.as_ref().map(|s| Conversation::new(s.markers));
    let deadline = sudo
        .as_ref()
        .map(|s| tokio::time::Instant::now() + s.patience);
    let read = async move {
        let mut out = Output::default();
        let mut accepted = false;
        loop {
            let msg = match deadline.filter(|_| talk.as_ref().is_some_and(|t| t.waiting())) {
                Some(deadline) => tokio::time::timeout_at(deadline, inbox.recv())
                    .await
                    .map_err(|_| Failure::SudoSilent)?,
                None => inbox.recv().await,
            };
            let Some(msg) = msg else { break };
            match (msg, talk.as_mut()) {
                (ChannelMsg::Success, _) if !accepted => {
                    accepted = true;
                    if talk.is_none() {
                        let _ = steps.send(Step::Input);
                    }
                }
                (ChannelMsg::Failure, _) if !accepted => {
                    return Err(Failure::Channel(russh::Error::RequestDenied))
                }
                (ChannelMsg::ExtendedData { data, ext: 1 }, Some(talk)) => {
                    let (passed, taken) = talk.stderr(&data);
                    out.stderr.extend(passed);
                    for step in taken {
                        if step == Step::WrongPassword {
                            return Err(Failure::WrongPassword);
                        }
                        let _ = steps.send(step);
                    }
                }
                (msg, _) => absorb(&mut out, msg),
            }
        }
        if !accepted {
            return Err(Failure::Channel(russh::Error::Disconnect));
        }
        if let Some(talk) = talk {
            out.stderr.extend(talk.finish());
        }
        Ok(out)
    };
    // Writes only what the reader decided; ends when the reader does.
    let write = async {
        while let Some(step) = next.recv().await {
            match step {
                Step::Password => {
                    let line = format!("{}\n", password.unwrap_or_default());
                    outbox.send(line.as_bytes()).await?;
                }
                Step::Input => {
                    if !stdin.is_empty() {
                        outbox.send(stdin).await?;
                    }
                    return outbox.eof().await;
                }
                Step::WrongPassword => break,
            }
        }
        Ok(())
    };
    let (written, read) = tokio::join!(write, read);
    let out = read?;
    written.map_err(Failure::Channel)?;
    Ok(out)
}

/// ExitStatus may come before the last data: this is fed every message until the channel ends.
fn absorb(out: &mut Output, msg: ChannelMsg) {
    match msg {
        ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
        ChannelMsg::ExtendedData { data, ext: 1 } => out.stderr.extend_from_slice(&data),
        ChannelMsg::ExitStatus { exit_status } => out.exit_status = Some(exit_status),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh::sudo::tests::{markers, PROMPT, RAN};
    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

    const PASSWORD: &str = "s3cret-pw";

    impl Inbox for UnboundedReceiver<ChannelMsg> {
        async fn recv(&mut self) -> Option<ChannelMsg> {
            UnboundedReceiver::recv(self).await
        }
    }

    /// Bytes written to the host; `None` is end of file.
    impl Outbox for UnboundedSender<Option<Vec<u8>>> {
        async fn send(&self, data: &[u8]) -> Result<(), russh::Error> {
            UnboundedSender::send(self, Some(data.to_vec())).map_err(|_| russh::Error::SendError)
        }

        async fn eof(&self) -> Result<(), russh::Error> {
            UnboundedSender::send(self, None).map_err(|_| russh::Error::SendError)
        }
    }

    /// How the fake host's sudo treats the login user.
    #[derive(Clone, Copy)]
    enum Sudoers {
        /// Asks for this password, three times at most.
        Asks(&'static str),
        /// A cached ticket, or NOPASSWD: runs the command at once.
        Ticket,
        /// PAM asks something else than the password.
        AsksOtherwise,
    }

    fn stderr(text: &[u8]) -> ChannelMsg {
        ChannelMsg::ExtendedData {
            data: text.to_vec().into(),
            ext: 1,
        }
    }

    /// What the fake host's command (`cat`) will have read on its stdin.
    type Stdin = tokio::task::JoinHandle<Vec<u8>>;

    /// A host running `sudo -S -p PROMPT -- sh -c 'announce; cat; echo done >&2'`.
    fn host(
        sudoers: Sudoers,
    ) -> (
        Stdin,
        UnboundedReceiver<ChannelMsg>,
        UnboundedSender<Option<Vec<u8>>>,
    ) {
        let (to_client, inbox) = unbounded_channel();
        let (outbox, mut from_client) = unbounded_channel::<Option<Vec<u8>>>();
        let stdin = tokio::spawn(async move {
            let say = |msg| {
                let _ = to_client.send(msg);
            };
            say(ChannelMsg::Success);
            // What the client wrote, as sudo and then the command read it.
            let mut written = vec![];
            let mut ended = false;
            match sudoers {
                Sudoers::Ticket => {}
                Sudoers::AsksOtherwise => {
                    say(stderr(b"Verification code: "));
                    while from_client.recv().await.is_some() {}
                    return vec![];
                }
                Sudoers::Asks(password) => {
                    let mut tries = 0;
                    loop {
                        // The prompt in two messages, as a network may cut it.
                        say(stderr(&PROMPT[..7]));
                        say(stderr(&PROMPT[7..]));
                        while !ended && !written.contains(&b'\n') {
                            match from_client.recv().await {
                                Some(Some(bytes)) => written.extend(bytes),
                                _ => ended = true,
                            }
                        }
                        let Some(end) = written.iter().position(|b| *b == b'\n') else {
                            say(stderr(b"sudo: no password was provided\n"));
                            say(ChannelMsg::ExitStatus { exit_status: 1 });
                            return written;
                        };
                        let line: Vec<u8> = written.drain(..=end).collect();
                        if line == format!("{password}\n").as_bytes() {
                            break;
                        }
                        tries += 1;
                        if tries == 3 {
                            say(stderr(b"sudo: 3 incorrect password attempts\n"));
                            say(ChannelMsg::ExitStatus { exit_status: 1 });
                            return written;
                        }
                        say(stderr(b"Sorry, try again.\n"));
                    }
                }
            }
            say(stderr(RAN));
            while !ended {
                match from_client.recv().await {
                    Some(Some(bytes)) => written.extend(bytes),
                    _ => ended = true,
                }
            }
            say(ChannelMsg::Data {
                data: written.clone().into(),
            });
            say(stderr(b"done\n"));
            say(ChannelMsg::ExitStatus { exit_status: 0 });
            written
        });
        (stdin, inbox, outbox)
    }

    async fn run(
        sudoers: Sudoers,
        password: &str,
        input: &[u8],
    ) -> (Result<Output, Failure>, Vec<u8>) {
        let m = markers();
        let (host, mut inbox, outbox) = host(sudoers);
        let sudo = Sudo {
            markers: &m,
            password,
            patience: Duration::from_millis(300),
        };
        let result = tokio::time::timeout(
            Duration::from_secs(5),
            converse(&mut inbox, &outbox, input, Some(sudo)),
        )
        .await
        .expect("the conversation hung");
        drop(outbox);
        (result, host.await.unwrap())
    }

    #[tokio::test]
    async fn with_a_sudo_ticket_the_password_never_reaches_the_command() {
        let (out, stdin) = run(Sudoers::Ticket, PASSWORD, b"file contents\n").await;
        let out = out.unwrap();
        assert_eq!(stdin, b"file contents\n");
        assert_eq!(out.stdout, b"file contents\n");
        assert_eq!(out.stderr_text(), "done\n");
        assert!(out.success());
    }

    #[tokio::test]
    async fn with_a_sudo_ticket_a_command_reading_stdin_first_does_not_wait_for_a_prompt() {
        let (out, stdin) = run(Sudoers::Ticket, PASSWORD, b"").await;
        assert!(out.unwrap().success());
        assert!(stdin.is_empty());
    }

    #[tokio::test]
    async fn sudo_that_asks_gets_the_password_and_the_command_only_its_stdin() {
        let (out, stdin) = run(Sudoers::Asks(PASSWORD), PASSWORD, b"file contents\n").await;
        let out = out.unwrap();
        assert_eq!(stdin, b"file contents\n");
        assert_eq!(out.stdout, b"file contents\n");
        assert_eq!(out.stderr_text(), "done\n", "a marker leaked into stderr");
        assert!(out.success());
    }

    #[tokio::test]
    async fn a_wrong_password_fails_at_the_second_prompt_without_hanging() {
        let (out, stdin) = run(Sudoers::Asks(PASSWORD), "wrong", b"file contents\n").await;
        assert!(matches!(out, Err(Failure::WrongPassword)), "{out:?}");
        assert!(stdin.is_empty(), "the command got {stdin:?}");
    }

    #[tokio::test]
    async fn sudo_asking_something_else_fails_after_the_patience() {
        let (out, _) = run(Sudoers::AsksOtherwise, PASSWORD, b"x").await;
        assert!(matches!(out, Err(Failure::SudoSilent)), "{out:?}");
    }

    #[tokio::test]
    async fn without_sudo_stdin_is_written_once_the_command_is_accepted() {
        let (host, mut inbox, outbox) = host(Sudoers::Ticket);
        let out = converse(&mut inbox, &outbox, b"abc", None).await.unwrap();
        drop(outbox);
        assert_eq!(host.await.unwrap(), b"abc");
        // Without sudo nothing is taken for a marker: the host's announcement is reported.
        assert_eq!(out.stderr, [RAN, b"done\n"].concat());
    }
}
