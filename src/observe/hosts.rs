//! Reading Docker/Podman hosts, concurrently; a host that cannot be read is
//! `Unknown` and gets no changes.

use std::collections::BTreeMap;

use futures_util::{stream, StreamExt};

use super::{Fact, HostState};
use crate::host::Hosts;

pub async fn observe_hosts(hosts: &Hosts) -> BTreeMap<String, Fact<HostState>> {
    stream::iter(hosts.engines.iter())
        .map(|(name, engine)| async move {
            let fact = match engine {
                Ok(e) => match e.observe().await {
                    Ok(s) => Fact::Known(s),
                    Err(reason) => Fact::Unknown { reason },
                },
                Err(reason) => Fact::Unknown {
                    reason: reason.clone(),
                },
            };
            (name.clone(), fact)
        })
        .buffer_unordered(8)
        .collect()
        .await
}
