//! `template`: a Jinja2 template from the role's `templates/`, rendered on the control machine
//! with the host's variables, then put like `copy`.

use serde::Deserialize;

use super::{Ctx, Mode, Outcome, Result, Spec};

pub const SPEC: Spec = Spec {
    name: "template",
    args: &["src", "dest", "mode", "owner", "group"],
    required: &["src", "dest"],
    free_form: false,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub src: String,
    pub dest: String,
    pub mode: Option<Mode>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

pub async fn run(args: &Args, rendered: &str, ctx: &Ctx<'_>) -> Result<Outcome> {
    super::copy::put(
        ctx,
        &args.dest,
        rendered.as_bytes(),
        args.mode,
        args.owner.as_deref(),
        args.group.as_deref(),
    )
    .await
}
