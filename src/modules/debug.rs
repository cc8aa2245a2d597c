//! `debug` and `fail`: a message in the output — a note, or a failure of the host.

use serde::Deserialize;

use super::{fail, Ctx, Module, Outcome, Plan, Result};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Any value, as in Ansible: a list or a mapping is shown as JSON.
    #[serde(deserialize_with = "message")]
    pub msg: String,
    /// Ansible shows the message only from this `-v` level on; hactl has no levels, and shows
    /// only messages of level 0.
    #[serde(default, deserialize_with = "super::de_u64")]
    pub verbosity: Option<u64>,
}

fn message<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    })
}

/// `debug` (`FAIL` false) or `fail`.
pub struct Message<const FAIL: bool>;
pub type Debug = Message<false>;
pub type Fail = Message<true>;

/// Neither module has anything to do on a host.
#[derive(Debug)]
pub enum Nothing {}

impl<const FAIL: bool> Module for Message<FAIL> {
    const NAME: &'static str = if FAIL { "fail" } else { "debug" };
    type Args = Args;
    type Observed = ();
    type Todo = Nothing;

    async fn observe(_: &Args, _: &Ctx<'_>) -> Result<()> {
        Ok(())
    }

    /// `fail` fails in check mode as in a run.
    fn plan(args: &Args, _: ()) -> Result<Plan<Nothing>> {
        if FAIL {
            return fail(args.msg.clone());
        }
        let shown = args.verbosity.unwrap_or(0) == 0;
        Ok(Plan {
            outcome: Outcome {
                msg: if shown {
                    args.msg.clone()
                } else {
                    String::new()
                },
                ..Outcome::ok()
            },
            todo: None,
        })
    }

    async fn apply(_: &Args, nothing: Nothing, _: Outcome, _: &Ctx<'_>) -> Result<Outcome> {
        match nothing {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::fake::{FakeRemote, TestHost};
    use serde_json::json;

    #[tokio::test]
    async fn debug_says_its_message_and_fail_fails_with_it_in_either_mode() {
        let host = TestHost::new(FakeRemote::new());
        for check in [true, false] {
            let args = json!({"msg": "hello"});
            let said = if check {
                host.check::<Debug>(args.clone()).await
            } else {
                host.apply::<Debug>(args.clone()).await
            };
            assert_eq!(said.unwrap().msg, "hello");
            let failed = if check {
                host.check::<Fail>(args).await
            } else {
                host.apply::<Fail>(args).await
            };
            assert_eq!(failed.unwrap_err().to_string(), "hello");
        }
        assert!(host.remote.sent().is_empty());
    }
}
