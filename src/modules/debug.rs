//! `debug` and `fail`: a message in the output — a note, or a failure of the host.

use serde::Deserialize;

use super::{fail, Ctx, Module, Outcome, Plan, Result};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub msg: String,
}

pub struct Debug;
pub struct Fail;

/// Neither module has anything to do on a host.
pub enum Nothing {}

impl Module for Debug {
    const NAME: &'static str = "debug";
    type Args = Args;
    type Observed = ();
    type Todo = Nothing;

    async fn observe(_: &Args, _: &Ctx<'_>) -> Result<()> {
        Ok(())
    }

    fn plan(args: &Args, _: ()) -> Result<Plan<Nothing>> {
        Ok(Plan {
            outcome: Outcome {
                msg: args.msg.clone(),
                ..Outcome::ok()
            },
            todo: None,
        })
    }

    async fn apply(_: &Args, nothing: Nothing, _: Outcome, _: &Ctx<'_>) -> Result<Outcome> {
        match nothing {}
    }
}

impl Module for Fail {
    const NAME: &'static str = "fail";
    type Args = Args;
    type Observed = ();
    type Todo = Nothing;

    async fn observe(_: &Args, _: &Ctx<'_>) -> Result<()> {
        Ok(())
    }

    /// Fails in check mode as in a run.
    fn plan(args: &Args, _: ()) -> Result<Plan<Nothing>> {
        fail(args.msg.clone())
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
