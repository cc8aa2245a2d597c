//! `template`: a Jinja2 template from the role's `templates/`, rendered on the control machine
//! with the host's variables, then put like `copy`.

use serde::Deserialize;

use super::{Ctx, Mode, Outcome, Result, Spec};

pub const SPEC: Spec = Spec {
    name: "template",
    args: &["src", "dest", "mode", "owner", "group", "force", "validate"],
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
    /// false: write the file only if it does not exist yet.
    #[serde(default, deserialize_with = "super::de_bool")]
    pub force: Option<bool>,
    /// A command that must accept the new file (`%s`) before it replaces the old one.
    pub validate: Option<String>,
}

pub async fn run(args: &Args, rendered: &str, ctx: &Ctx<'_>) -> Result<Outcome> {
    let how = super::copy::Put {
        mode: args.mode,
        owner: args.owner.as_deref(),
        group: args.group.as_deref(),
        keep_existing: args.force == Some(false),
        validate: args.validate.as_deref(),
    };
    super::copy::put(ctx, &args.dest, rendered.as_bytes(), how).await
}
