//! The lab's power loss for failover-test: the machine is powered off, and the lab booted again.

use futures::future::BoxFuture;

use super::{LabConfig, LabError};
use crate::failover::{FaultError, PowerLoss};
use crate::inventory::Inventory;

/// The lab's power switch, when `inventory` is a lab inventory (its `all` sets
/// `hactl_lab_bridge`).
pub fn of_inventory(inventory: &Inventory) -> Option<LabConfig> {
    let all = inventory.groups.get("all")?;
    all.inline_vars.get("hactl_lab_bridge")?;
    LabConfig::from_inventory(inventory).ok()
}

impl PowerLoss for LabConfig {
    fn power_off<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<(), FaultError>> {
        let (config, name) = (self.clone(), host.to_string());
        blocking(format!("powering {host} off"), move || {
            super::kill(&config, &name)
        })
    }

    fn power_on<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<(), FaultError>> {
        let config = self.clone();
        blocking(format!("booting {host} again"), move || super::up(&config))
    }
}

/// The lab's blocking calls, off the async runtime's threads.
fn blocking<'a>(
    what: String,
    f: impl FnOnce() -> Result<(), LabError> + Send + 'static,
) -> BoxFuture<'a, Result<(), FaultError>> {
    Box::pin(async move {
        let power = |error: Box<dyn std::error::Error + Send + Sync>| FaultError::Power {
            what: what.clone(),
            error,
        };
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| power(e.into()))?
            .map_err(|e| power(e.into()))
    })
}
