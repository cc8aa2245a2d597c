//! The probe kinds, one file each: a kind owns its options and their checks, its series on
//! /metrics and their removal, and what one run against one target does.
//!
//! Adding a kind `foo`:
//! 1. `src/probe/kinds/foo.rs`: a unit struct `Foo` that implements [`Kind`]: `NAME` (`type:
//!    foo`), `BLOCK` (its options key, usually `Some("foo")`), `Options` (the block as written,
//!    `#[serde(deny_unknown_fields)]`), `check` (options → `Spec`, a [`Mistake`] names the key),
//!    `state` (clients or sessions its runs share), `run`, and `series` (registered with a
//!    `metrics::Per`, which says when they go); the other items have defaults. Unit tests of its
//!    configuration go in that file (helpers: `config::tests::{probe, assert_errors}`).
//! 2. One line in the registry, the `kinds!` list at the end of this file: `foo::Foo,`.
//!
//! Then document it in the README's `probe` section (the type table, its metrics).

use std::fmt::Debug;

use serde::de::DeserializeOwned;

use super::config::{parse_spec, Probe, SpecError};
use super::metrics::{Metrics, Registrar};
use crate::inventory::Inventory;
use crate::yaml::Node;

/// A kind of probe.
pub(crate) trait Kind: Sized + 'static {
    /// `type:` in the file, and the `ptype` label.
    const NAME: &'static str;
    /// The key of its options block (`write` reads `postgres:`); None: it takes no options.
    const BLOCK: Option<&'static str>;
    /// Whether all targets are probed as one, comma-separated (`write`: the members of a
    /// cluster, one of which accepts writes).
    const ONE_TARGET: bool = false;
    /// The options block as written.
    type Options: DeserializeOwned + Default;
    /// The options, checked, with their defaults.
    type Spec: Debug + Clone + Send + Sync;
    /// What its runs share across ticks and targets: clients, sessions, what they last saw.
    type State: Send + Sync;
    /// Its series on /metrics.
    type Series: Send + Sync;

    /// The options, checked; a mistake names its key (`http.body`).
    fn check(options: Self::Options) -> Result<Self::Spec, Mistake>;

    /// The targets of a probe that lists none; None: `targets:` is required.
    fn default_targets() -> Option<Vec<String>> {
        None
    }

    /// Whether a listed target is one this kind can probe.
    fn check_target(_spec: &Self::Spec, _target: &str) -> Result<(), BadTarget> {
        Ok(())
    }

    /// The target for a host of an inventory group, from its `HOST:PORT`.
    fn group_target(_spec: &Self::Spec, host_port: String) -> String {
        host_port
    }

    /// Built when the configuration is loaded (at start and on each reload).
    fn state(spec: &Self::Spec, probe: &Probe, env: &Env) -> Result<Self::State, Mistake>;

    /// One run against one target.
    async fn run(run: Run<'_, Self>) -> Result<(), Failure>;

    /// A run that timed out was dropped midway: what it would have recorded on failure.
    async fn timed_out(_run: Run<'_, Self>) {}

    /// Registers its series, once per prober. Those per `Target` and per `Probe` are removed
    /// when their target or probe goes; others are the kind's to remove in `forget_*`.
    fn series(r: &mut Registrar) -> Self::Series;

    /// Removes what it keeps for a target that is no longer probed (beyond its `Per::Target`
    /// series).
    fn forget_target(_series: &Self::Series, _probe: &str, _dst: &str) {}

    /// Removes what it keeps for a probe that is gone (beyond its `Per::Probe` series).
    fn forget_probe(_series: &Self::Series, _probe: &str) {}

    /// Appends series that are not in the registry (an external command's own).
    fn render(_series: &Self::Series, _out: &mut String) {}
}

/// What one run sees.
pub(crate) struct Run<'a, K: Kind> {
    pub probe: &'a Probe,
    pub spec: &'a K::Spec,
    pub state: &'a K::State,
    pub series: &'a K::Series,
    pub target: &'a str,
}

/// What a kind may read when it builds its state.
pub(crate) struct Env<'a> {
    pub inventory: Option<&'a Inventory>,
}

/// A mistake in a probe's options: the key it is about (`http.body`) and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub(crate) struct Mistake {
    pub key: String,
    pub message: String,
}

impl Mistake {
    pub fn new(key: &str, message: impl Into<String>) -> Mistake {
        Mistake {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// Why a listed target does not fit the kind (`is not an http:// or https:// URL`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadTarget(pub &'static str);

/// Why a run failed, as the log tells it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Failure(pub String);

impl Failure {
    pub fn new(why: impl Into<String>) -> Failure {
        Failure(why.into())
    }
}

/// A kind's checked options with the state its runs share.
pub(crate) struct Armed<K: Kind> {
    spec: K::Spec,
    state: K::State,
}

impl<K: Kind> Armed<K> {
    /// What a run against `target` sees.
    fn at<'a>(&'a self, probe: &'a Probe, target: &'a str, series: &'a K::Series) -> Run<'a, K> {
        Run {
            probe,
            spec: &self.spec,
            state: &self.state,
            series,
            target,
        }
    }
}

/// Declares every kind: its module, the tagged enums of specs and kits, the struct of their series, and
/// the dispatch from them to each kind (one arm per kind, generated).
macro_rules! kinds {
    ($($module:ident :: $kind:ident,)*) => {
        $(mod $module;)*

        /// One probe's kind with its checked options; `type:` in the file picks the variant.
        #[derive(Debug, Clone)]
        pub(crate) enum Spec {
            $($kind(<$module::$kind as Kind>::Spec),)*
        }

        /// A probe's kind, armed to run: its spec and the state its runs share.
        pub(crate) enum Kit {
            $($kind(Armed<$module::$kind>),)*
        }

        /// Every kind's series.
        pub(crate) struct Series {
            $($module: <$module::$kind as Kind>::Series,)*
        }

        /// Every kind: (`type:` name, options key).
        pub(crate) const KINDS: &[(&str, Option<&str>)] =
            &[$((<$module::$kind as Kind>::NAME, <$module::$kind as Kind>::BLOCK),)*];

        impl Spec {
            /// The spec of kind `name` from a probe's node (None: no kind has that name).
            pub fn parse(name: &str, probe: &Node) -> Option<Result<Spec, SpecError>> {
                $(if name == <$module::$kind as Kind>::NAME {
                    return Some(parse_spec::<$module::$kind>(probe).map(Spec::$kind));
                })*
                None
            }

            pub fn default_targets(&self) -> Option<Vec<String>> {
                match self {
                    $(Spec::$kind(_) => <$module::$kind as Kind>::default_targets(),)*
                }
            }

            pub fn check_target(&self, target: &str) -> Result<(), BadTarget> {
                match self {
                    $(Spec::$kind(s) => <$module::$kind as Kind>::check_target(s, target),)*
                }
            }

            pub fn group_target(&self, host_port: String) -> String {
                match self {
                    $(Spec::$kind(s) => <$module::$kind as Kind>::group_target(s, host_port),)*
                }
            }

            pub fn one_target(&self) -> bool {
                match self {
                    $(Spec::$kind(_) => <$module::$kind as Kind>::ONE_TARGET,)*
                }
            }
        }

        impl Kit {
            pub fn new(probe: &Probe, env: &Env) -> Result<Kit, Mistake> {
                Ok(match &probe.spec {
                    $(Spec::$kind(spec) => Kit::$kind(Armed {
                        state: <$module::$kind as Kind>::state(spec, probe, env)?,
                        spec: spec.clone(),
                    }),)*
                })
            }

            pub fn name(&self) -> &'static str {
                match self {
                    $(Kit::$kind(_) => <$module::$kind as Kind>::NAME,)*
                }
            }

            pub async fn run(&self, probe: &Probe, target: &str, metrics: &Metrics) -> Result<(), Failure> {
                match self {
                    $(Kit::$kind(a) => {
                        <$module::$kind as Kind>::run(a.at(probe, target, &metrics.kinds.$module)).await
                    })*
                }
            }

            pub async fn timed_out(&self, probe: &Probe, target: &str, metrics: &Metrics) {
                match self {
                    $(Kit::$kind(a) => {
                        <$module::$kind as Kind>::timed_out(a.at(probe, target, &metrics.kinds.$module)).await
                    })*
                }
            }
        }

        impl Series {
            pub fn register(r: &mut Registrar) -> Series {
                Series {
                    $($module: <$module::$kind as Kind>::series(
                        &mut r.kind(<$module::$kind as Kind>::NAME),
                    ),)*
                }
            }

            pub fn forget_target(&self, kind: &str, probe: &str, dst: &str) {
                $(if kind == <$module::$kind as Kind>::NAME {
                    <$module::$kind as Kind>::forget_target(&self.$module, probe, dst);
                })*
            }

            pub fn forget_probe(&self, kind: &str, probe: &str) {
                $(if kind == <$module::$kind as Kind>::NAME {
                    <$module::$kind as Kind>::forget_probe(&self.$module, probe);
                })*
            }

            pub fn render(&self, out: &mut String) {
                $(<$module::$kind as Kind>::render(&self.$module, out);)*
            }
        }
    };
}

// The registry: every kind, in the order error messages list them.
kinds! {
    http::Http,
    tcp::Tcp,
    postgres::Postgres,
    etcd::Etcd,
    patroni::Patroni,
    write::Write,
    endpoint::Endpoint,
    backup::Backup,
    external::External,
}
