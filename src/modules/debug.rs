//! `debug` and `fail`: a message in the output — a note, or a failure of the host.

use serde::Deserialize;

use super::{Outcome, Result, Spec};

pub const SPEC: Spec = Spec {
    name: "debug",
    args: &["msg"],
    required: &["msg"],
    free_form: false,
};

pub const FAIL_SPEC: Spec = Spec {
    name: "fail",
    args: &["msg"],
    required: &["msg"],
    free_form: false,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub msg: String,
}

pub fn run_debug(args: &Args) -> Result<Outcome> {
    Ok(Outcome {
        msg: args.msg.clone(),
        ..Outcome::default()
    })
}

pub fn run_fail(args: &Args) -> Result<Outcome> {
    super::fail(args.msg.clone())
}
