//! The SPF allow list (`bans.allow.spf`): resolved at the start and every
//! `bans.allow.refresh`, and sent to the engine, which never bans an
//! address the list allows.

use std::time::Duration;

use ipnet::IpNet;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Resolves the SPF records of `bans.allow.spf` now and every
/// `bans.allow.refresh`, sending the allowed networks to the engine. A
/// temporary DNS failure never shrinks the list: until a domain resolves
/// again, the networks it had stay allowed (allowing more only means
/// banning less).
pub(crate) async fn refresh_spf(
    config: Config,
    tx: mpsc::Sender<Vec<IpNet>>,
    shutdown: CancellationToken,
) {
    use crate::bans::spf::{Limits, expand};
    use crate::resolver::spf::DnsLookup;
    let domains: Vec<String> = config
        .bans
        .allow
        .spf
        .iter()
        .map(|n| n.as_str().to_owned())
        .collect();
    if domains.is_empty() {
        return;
    }
    let every = config.bans.allow.refresh.0.max(Duration::from_secs(60));
    let mut previous: std::collections::HashMap<String, Vec<IpNet>> =
        std::collections::HashMap::new();
    loop {
        match DnsLookup::new(&[], Duration::from_secs(5)) {
            Ok(lookup) => {
                for domain in &domains {
                    let result =
                        expand(std::slice::from_ref(domain), &lookup, Limits::default()).await;
                    let temporary = result.temporary_failure();
                    for (_, _, problems) in &result.per_domain {
                        for p in problems {
                            tracing::warn!(domain = %domain, "SPF allow list: {p}");
                        }
                    }
                    if !temporary || !previous.contains_key(domain) {
                        tracing::info!(domain = %domain, networks = result.networks.len(), "SPF allow list resolved");
                        previous.insert(domain.clone(), result.networks);
                    }
                }
                let mut all: Vec<IpNet> = previous.values().flatten().copied().collect();
                all = IpNet::aggregate(&all);
                if tx.send(all).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "SPF allow list: no resolver"),
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
