//! `tcp`: a connection to HOST:PORT is accepted.

use super::{Env, Failure, Kind, Mistake, Run};
use crate::probe::config::Probe;
use crate::probe::metrics::Registrar;

pub(crate) struct Tcp;

impl Kind for Tcp {
    const NAME: &'static str = "tcp";
    const BLOCK: Option<&'static str> = None;
    type Options = ();
    type Spec = ();
    type State = ();
    type Series = ();

    fn check((): ()) -> Result<(), Mistake> {
        Ok(())
    }

    fn state((): &(), _: &Probe, _: &Env) -> Result<(), Mistake> {
        Ok(())
    }

    fn series(_: &mut Registrar) {}

    async fn run(run: Run<'_, Self>) -> Result<(), Failure> {
        tokio::net::TcpStream::connect(run.target)
            .await
            .map(drop)
            .map_err(|e| Failure(format!("connect: {e}")))
    }
}
