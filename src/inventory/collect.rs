//! Reading what `inventory` shows: the plan's observation, then every tag of
//! every managed repo with its details, the images hosts run from policy
//! registries, and the latest scan report of each.

use std::collections::BTreeSet;

use super::kinds::{referrer_kind, ReferrerKind};
use crate::config::Desired;
use crate::model::{Digest, RepoAddr, Timestamp};
use crate::observe::{Fact, Observed, Registries};

/// Observes registries and hosts for an inventory.
pub async fn observe(desired: &Desired, registries: &Registries, now: Timestamp) -> Observed {
    let mut observed = crate::observe::observe(desired, registries, now).await;

    // Managed repos the plan did not need to read.
    let repos: Vec<RepoAddr> = crate::plan::policy::managed_repos(desired, &observed)
        .into_iter()
        .filter(|r| !observed.repos.contains_key(r))
        .collect();
    observed
        .repos
        .extend(crate::observe::read_repos(registries, repos).await);

    // Details of every managed tag, and of host images pulled from policy registries.
    let mut want: Vec<(RepoAddr, Digest)> = Vec::new();
    for repo in crate::plan::policy::managed_repos(desired, &observed) {
        if let Some(Fact::Known(s)) = observed.repos.get(&repo) {
            want.extend(s.tags.values().map(|d| (repo.clone(), d.clone())));
        }
    }
    let addrs = crate::host::address::Addresses::from_policy(desired);
    for state in observed.hosts.values().filter_map(Fact::known) {
        for img in &state.images {
            want.extend(img.repo_digests.iter().filter_map(|n| addrs.repo_digest(n)));
        }
    }
    crate::observe::read_details(registries, &mut observed, want).await;

    // Every scan-report referrer of every image read: the newest one is
    // only known once all are read (the time is inside the report).
    let reports: BTreeSet<(RepoAddr, Digest)> = observed
        .images
        .iter()
        .filter_map(|((repo, _), f)| Some((repo, f.known()?)))
        .flat_map(|(repo, info)| {
            info.referrers
                .iter()
                .filter(|r| referrer_kind(&r.artifact_type) == ReferrerKind::Scan)
                .map(move |r| (repo.clone(), r.digest.clone()))
        })
        .filter(|k| !observed.reports.contains_key(k))
        .collect();
    crate::observe::read_reports(registries, &mut observed, reports.into_iter().collect()).await;
    observed
}
