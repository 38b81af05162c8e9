//! The planner: `plan(&Desired, &Observed, now) -> Plan`. Pure: no I/O, no
//! clock, no async. Each concern has its own file and contributes *intents*
//! (this tag should point at that digest, for this rule) or blocked items;
//! `resolve` turns intents into changes, surfacing conflicts.

mod hosts;
mod intent;
mod mirror;
pub mod policy;
mod promote;
mod referrers;
mod retag;
mod retention;
pub mod types;

pub use hosts::{container_expect, parse_container_expect};
pub use intent::Needs;
pub use types::*;

use crate::config::Desired;
use crate::model::Timestamp;
use crate::observe::{Fact, Observed};

/// The endpoints a plan is made against (see `Plan::endpoints`). An `oci:`
/// path inside the policy directory is recorded relative to it, so that a
/// plan saved in one checkout applies in another (CI jobs).
pub fn endpoints(desired: &Desired) -> types::Endpoints {
    use crate::config::Endpoint;
    types::Endpoints {
        registries: desired
            .registries
            .iter()
            .map(|(n, r)| {
                let at = match &r.url {
                    Endpoint::OciLayout(p) => match p.strip_prefix(&desired.root) {
                        Ok(rel) => format!("oci:{}", rel.display()),
                        Err(_) => r.url.to_string(),
                    },
                    url => url.to_string(),
                };
                (n.to_string(), at)
            })
            .collect(),
        hosts: desired
            .hosts
            .iter()
            .map(|(n, h)| (n.clone(), h.endpoint.clone()))
            .collect(),
    }
}

/// Computes the plan. `now` is given, never read, so plans are reproducible.
pub fn plan(desired: &Desired, observed: &Observed, now: Timestamp) -> Plan {
    let checker = policy::Checker::new(desired);
    let mut cx = intent::PlanCx::new(observed, now);
    for m in &desired.mirrors {
        mirror::plan(m, &mut cx);
    }
    for p in promote::ordered(&desired.promotions) {
        promote::plan(p, &mut cx, checker.as_ref());
    }
    for r in &desired.retags {
        retag::plan(r, &mut cx);
    }
    // Retention runs after the other rules, so it knows what they need.
    let protect = retention::protected(desired, &cx);
    let mut deletions = Vec::new();
    let mut report = retention::Report::for_rules(&desired.retention, cx.observed);
    for r in &desired.retention {
        retention::plan(r, &protect, &mut cx, &mut deletions, &mut report);
    }
    for m in desired.mirrors.iter().filter(|m| m.prune) {
        if protect.unknown_hosts.is_empty() {
            mirror::prune(m, &protect, &report, &mut cx, &mut deletions);
        } else {
            cx.block(
                &m.rule_name(),
                m.to.to_string(),
                format!(
                    "host {} could not be read: what it runs is unknown, so nothing is pruned",
                    protect.unknown_hosts.join(", ")
                ),
            );
        }
    }
    let mut host_changes = Vec::new();
    hosts::plan(desired, &mut cx, &mut host_changes, &mut report.kept);
    let mut plan = cx.resolve();
    plan.changes.extend(deletions);
    plan.changes.extend(host_changes);
    plan.retention = report.repos;
    plan.kept = report.kept;
    plan.endpoints = endpoints(desired);
    plan.violations = policy::violations(desired, observed, now);
    for (subject, reason) in policy::unjudged_containers(desired, observed) {
        plan.unobserved.push(Unobserved { subject, reason });
    }
    for (repo, fact) in &observed.repos {
        if let Fact::Unknown { reason } = fact {
            plan.unobserved.push(Unobserved {
                subject: repo.to_string(),
                reason: reason.clone(),
            });
        }
    }
    for (host, fact) in &observed.hosts {
        if let Fact::Unknown { reason } = fact {
            plan.unobserved.push(Unobserved {
                subject: format!("host:{host}"),
                reason: reason.clone(),
            });
        }
    }
    for (reg, fact) in &observed.catalogs {
        if let Fact::Unknown { reason } = fact {
            plan.unobserved.push(Unobserved {
                subject: format!("{reg} (catalog)"),
                reason: reason.clone(),
            });
        }
    }
    for ((repo, digest), fact) in &observed.images {
        if let Fact::Unknown { reason } = fact {
            plan.unobserved.push(Unobserved {
                subject: format!("{repo}@{digest}"),
                reason: reason.clone(),
            });
        }
    }
    // An unreadable scan report is a blocked promotion (its reason says
    // why), not a gap in what regimen saw of the registry.
    plan.finish();
    plan
}

/// The repos a retention rule covers (wildcards through observed catalogs).
pub fn retention_repos(
    rule: &crate::config::Retention,
    observed: &Observed,
) -> (
    std::collections::BTreeSet<crate::model::RepoAddr>,
    std::collections::BTreeSet<crate::model::RegistryName>,
) {
    retention::rule_repos(rule, observed)
}

/// What observe must read for this policy (pure; see [`Needs`]).
pub fn needs(desired: &Desired) -> Needs {
    intent::needs(desired)
}

/// What the plan would still read, given what is observed so far (the rules
/// run in "what do you need" mode). Observe asks again after each read: which
/// reports matter depends on the details, which referrer tags on both.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Image details: the sources of would-be changes and candidates ordered
    /// by creation time.
    pub details: Vec<(crate::model::RepoAddr, crate::model::Digest)>,
    /// Manifests read for their index bytes alone (platform-filtered mirrors).
    pub indexes: Vec<(crate::model::RepoAddr, crate::model::Digest)>,
    /// Scan-report referrers (repo, referrer digest) that
    /// `require.vulnerabilities` gates judge.
    pub reports: Vec<(crate::model::RepoAddr, crate::model::Digest)>,
    /// Referrer tags whose digests the plan compares (see `referrers`).
    pub referrer_tags: Vec<(crate::model::RepoAddr, crate::model::Tag)>,
    /// Referrer manifests whose entries it compares, where the two sides
    /// hold different digests under one referrer tag.
    pub referrer_entries: Vec<(crate::model::RepoAddr, crate::model::Digest)>,
}

pub fn wanted(desired: &Desired, observed: &Observed, now: Timestamp) -> Wanted {
    let cx = collect(desired, observed, now);
    Wanted {
        details: cx.needed.into_iter().collect(),
        indexes: cx.needed_indexes.into_iter().collect(),
        reports: cx.needed_reports.into_iter().collect(),
        referrer_tags: cx.needed_referrer_tags.into_iter().collect(),
        referrer_entries: cx.needed_referrer_entries.into_iter().collect(),
    }
}

/// Runs the rules that read image details in "what do you need" mode.
fn collect<'o>(desired: &Desired, observed: &'o Observed, now: Timestamp) -> intent::PlanCx<'o> {
    let checker = policy::Checker::new(desired);
    let mut cx = intent::PlanCx::new(observed, now);
    cx.collect_needed = true;
    for m in &desired.mirrors {
        mirror::plan(m, &mut cx);
    }
    for p in promote::ordered(&desired.promotions) {
        promote::plan(p, &mut cx, checker.as_ref());
    }
    for r in &desired.retags {
        retag::plan(r, &mut cx);
    }
    for m in desired.mirrors.iter().filter(|m| m.prune) {
        mirror::prune_needs(m, &mut cx);
    }
    for r in &desired.retention {
        retention::needs(r, &mut cx);
    }
    cx
}
