//! `template`: a Jinja2 template from the role's `templates/`, rendered on the control machine
//! with the host's variables, then put like `copy`.

use serde::Deserialize;

use super::copy::{self, Existing, Put};
use super::{fail, Ctx, Mode, Module, Outcome, Plan, Result, Step};

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
    /// The rendered text, filled in by the engine.
    #[serde(skip)]
    pub rendered: Option<String>,
}

impl Args {
    fn put(&self) -> Result<Put<'_>> {
        let Some(text) = &self.rendered else {
            return fail(format!("template: {} was not rendered", self.src));
        };
        Ok(Put {
            dest: &self.dest,
            contents: text.as_bytes(),
            mode: self.mode,
            owner: self.owner.as_deref(),
            group: self.group.as_deref(),
            keep_existing: self.force == Some(false),
            validate: self.validate.as_deref(),
        })
    }
}

pub struct Template;

impl Module for Template {
    const NAME: &'static str = "template";
    type Args = Args;
    type Observed = Existing;
    type Todo = Vec<Step>;

    async fn observe(args: &Args, ctx: &Ctx<'_>) -> Result<Existing> {
        copy::observe(ctx, &args.put()?).await
    }

    fn plan(args: &Args, existing: Existing) -> Result<Plan<Vec<Step>>> {
        copy::plan(&args.put()?, existing)
    }

    async fn apply(
        args: &Args,
        steps: Vec<Step>,
        planned: Outcome,
        ctx: &Ctx<'_>,
    ) -> Result<Outcome> {
        copy::apply(ctx, &args.dest, &steps, planned).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::copy::Content;
    use crate::modules::fake::{typed, FakeRemote, TestHost};
    use crate::modules::parse_stat;
    use serde_json::json;

    fn args(text: &str) -> Args {
        Args {
            rendered: Some(text.into()),
            ..typed::<Template>(json!({"src": "a.j2", "dest": "/etc/a.conf", "mode": "0644"}))
        }
    }

    fn found(stat: &str, text: &str) -> Existing {
        Existing {
            state: parse_stat(stat),
            content: Content::Text(text.as_bytes().to_vec()),
        }
    }

    #[test]
    fn the_rendered_text_is_put_where_it_differs() {
        let absent = Template::plan(&args("a=1\n"), found("absent", "")).unwrap();
        assert_eq!(absent.outcome.msg, "created /etc/a.conf");
        let same = Template::plan(&args("a=1\n"), found("regular file|644|root|root", "a=1\n"));
        assert!(same.unwrap().todo.is_none());
        let other =
            Template::plan(&args("a=2\n"), found("regular file|644|root|root", "a=1\n")).unwrap();
        assert_eq!(other.outcome.msg, "updated /etc/a.conf");
        assert_eq!(other.outcome.diffs[0].after, "a=2\n");
    }

    #[tokio::test]
    async fn check_mode_uploads_nothing() {
        let host = TestHost::new(FakeRemote::new().answer("stat -c", "absent\n"));
        let outcome = crate::modules::execute::<Template>(&args("a=1\n"), &host.ctx(), true)
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::changed("created /etc/a.conf"));
        assert!(host.remote.uploads().is_empty());
    }
}
