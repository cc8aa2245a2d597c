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

    async fn run(run: Run<'_, Self>) -> Result<(), Failure> {
        tokio::net::TcpStream::connect(run.target)
            .await
            .map(drop)
            .map_err(|e| Failure(format!("connect: {e}")))
    }

    fn series(_: &mut Registrar) {}
}

#[cfg(test)]
mod tests {
    use crate::probe::config::tests::{error, probe};
    use crate::probe::kinds::Spec;

    #[test]
    fn takes_host_port_targets_and_no_options() {
        let p = probe("probes:\n  - {name: t, type: tcp, targets: [\"h:1\", \"h:2\"]}\n");
        assert!(matches!(p.spec, Spec::Tcp(())));
        assert_eq!(p.spec.group_target("10.0.0.1:9100".into()), "10.0.0.1:9100");
        assert!(!p.spec.one_target());
        assert_eq!(
            error("probes:\n  - {name: t, type: tcp, targets: [\"h:1\"], http: {path: /}}\n"),
            "probes.yml:2: http: only for probes of type http"
        );
    }
}
