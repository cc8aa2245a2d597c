//! The probe types, one file each. A run returns `Ok` or why it failed.

pub mod etcd;
pub mod external;
pub mod http;
pub mod patroni;
pub mod postgres;
pub mod tcp;

use std::sync::Arc;

use super::config::{Probe, Type};
use super::metrics::Metrics;

/// What one run sees.
pub struct Ctx<'a> {
    pub probe: &'a Probe,
    pub target: &'a str,
    pub metrics: &'a Metrics,
}

/// What a probe keeps across its runs and targets: clients, connections, what it last saw.
pub enum Kit {
    Http(reqwest::Client),
    Tcp,
    Postgres(Option<String>),
    Write(
        Option<String>,
        Arc<tokio::sync::Mutex<postgres::WriteState>>,
    ),
    Etcd,
    Patroni(
        reqwest::Client,
        Arc<std::sync::Mutex<patroni::PatroniState>>,
    ),
    External,
}

impl Kit {
    /// `password`: the PostgreSQL password, already looked up.
    pub fn new(probe: &Probe, password: Option<String>) -> Result<Kit, String> {
        Ok(match probe.ptype {
            Type::Http => Kit::Http(http::client(probe)?),
            Type::Tcp => Kit::Tcp,
            Type::Postgres => Kit::Postgres(password),
            Type::Write => Kit::Write(password, Arc::default()),
            Type::Etcd => Kit::Etcd,
            Type::Patroni => Kit::Patroni(
                reqwest::Client::builder()
                    .build()
                    .map_err(|e| e.to_string())?,
                Arc::default(),
            ),
            Type::External => Kit::External,
        })
    }

    pub async fn run(&self, ctx: &Ctx<'_>) -> Result<(), String> {
        match self {
            Kit::Http(client) => http::run(ctx, client).await,
            Kit::Tcp => tcp::run(ctx).await,
            Kit::Postgres(password) => {
                let config =
                    postgres::pg_config(ctx.probe, ctx.target, password.as_deref(), false)?;
                postgres::run(ctx, &config).await
            }
            Kit::Write(password, state) => {
                let config = postgres::pg_config(ctx.probe, ctx.target, password.as_deref(), true)?;
                postgres::write(ctx, &config, state).await
            }
            Kit::Etcd => etcd::run(ctx).await,
            Kit::Patroni(client, state) => patroni::run(ctx, client, state).await,
            Kit::External => external::run(ctx).await,
        }
    }

    /// A run that timed out was dropped midway: what it would have recorded on failure.
    pub async fn timed_out(&self, ctx: &Ctx<'_>) {
        if let Kit::Write(_, state) = self {
            postgres::write_failed(ctx, &mut *state.lock().await);
        }
    }
}
