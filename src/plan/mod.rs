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
    for rule in ordered(desired) {
        rule.plan(&mut cx, checker.as_ref());
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
    let incoming = std::mem::take(&mut cx.incoming);
    let mut plan = cx.resolve();
    // Violations of the images the plan brings, where it brings them (not
    // those of an intent a conflict or `overwrite: false` holds back).
    let brought: std::collections::BTreeSet<(&str, &str)> = plan
        .changes
        .iter()
        .filter_map(|c| Some((c.target.as_str(), c.digest.as_deref()?)))
        .collect();
    let incoming: Vec<Violation> = incoming
        .into_iter()
        .filter(|i| {
            let target = crate::model::ImageRef::tagged(i.target.clone(), i.tag.clone());
            brought.contains(&(target.to_string().as_str(), i.digest.as_str()))
        })
        .map(|i| i.violation)
        .collect();
    plan.changes.extend(deletions);
    plan.changes.extend(host_changes);
    plan.retention = report.repos;
    plan.kept = report.kept;
    plan.endpoints = endpoints(desired);
    (plan.violations, plan.resolved) = policy::violations(desired, observed, now, &plan.changes);
    plan.violations.extend(incoming);
    for (subject, reason) in policy::unjudged_containers(desired, observed) {
        plan.unobserved.push(Unobserved { subject, reason });
    }
    let mut unread = |subject: String, reason: &String| {
        plan.unobserved.push(Unobserved {
            subject,
            reason: reason.clone(),
        })
    };
    for (repo, reason) in unknowns(&observed.repos) {
        unread(repo.to_string(), reason);
    }
    for (host, reason) in unknowns(&observed.hosts) {
        unread(format!("host:{host}"), reason);
    }
    for (reg, reason) in unknowns(&observed.catalogs) {
        unread(format!("{reg} (catalog)"), reason);
    }
    // One refusal of a registry's referrers route fails every image's ask
    // alike: one line per registry and reason, not one per image.
    let mut by_reason: std::collections::BTreeMap<
        (&crate::model::RegistryName, &String),
        Vec<String>,
    > = Default::default();
    let referrer_lists =
        unknowns(&observed.api_referrers).chain(unknowns(&observed.listed_referrers));
    for ((repo, digest), reason) in referrer_lists {
        by_reason
            .entry((&repo.registry, reason))
            .or_default()
            .push(format!("{repo}@{digest}"));
    }
    for ((registry, reason), images) in by_reason {
        let subject = match images.as_slice() {
            [one] => format!("{one} (referrers)"),
            many => format!("{registry}: referrers of {} images", many.len()),
        };
        unread(subject, reason);
    }
    for ((repo, digest), reason) in unknowns(&observed.images) {
        unread(format!("{repo}@{digest}"), reason);
    }
    // Indexes read for their platforms (filtered mirrors, prune).
    for ((repo, digest), reason) in unknowns(&observed.indexes) {
        unread(format!("{repo}@{digest} (index)"), reason);
    }
    // Referrer tags (signatures, SBOM lists) and what they list, read to
    // compare the two sides of a copy: one unread means a signature may be
    // missing at the target, so the plan is not complete.
    for ((repo, tag), reason) in unknowns(&observed.referrer_tags) {
        unread(format!("{repo}:{tag}"), reason);
    }
    for ((repo, digest), reason) in unknowns(&observed.referrer_entries) {
        unread(format!("{repo}@{digest} (entries)"), reason);
    }
    // An unreadable scan report is a blocked promotion (its reason says
    // why), not a gap in what regimen saw of the registry.
    plan.finish();
    plan
}

/// The facts of `facts` that could not be read, with why.
fn unknowns<K, T>(
    facts: &std::collections::BTreeMap<K, Fact<T>>,
) -> impl Iterator<Item = (&K, &String)> {
    facts.iter().filter_map(|(k, f)| match f {
        Fact::Unknown { reason } => Some((k, reason)),
        Fact::Known(_) => None,
    })
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
    /// Images in place at a rule's target whose source's own referrer index
    /// (API) the plan compares, by (source repo, subject).
    pub api_referrers: Vec<(crate::model::RepoAddr, crate::model::Digest)>,
    /// The target side of those, where the source lists some.
    pub listed_referrers: Vec<(crate::model::RepoAddr, crate::model::Digest)>,
}

pub fn wanted(desired: &Desired, observed: &Observed, now: Timestamp) -> Wanted {
    let cx = collect(desired, observed, now);
    Wanted {
        details: cx.needed.into_iter().collect(),
        indexes: cx.needed_indexes.into_iter().collect(),
        reports: cx.needed_reports.into_iter().collect(),
        referrer_tags: cx.needed_referrer_tags.into_iter().collect(),
        referrer_entries: cx.needed_referrer_entries.into_iter().collect(),
        api_referrers: cx.needed_api_referrers.into_iter().collect(),
        listed_referrers: cx.needed_listed_referrers.into_iter().collect(),
    }
}

/// Runs the rules that read image details in "what do you need" mode.
fn collect<'o>(desired: &Desired, observed: &'o Observed, now: Timestamp) -> intent::PlanCx<'o> {
    let checker = policy::Checker::new(desired);
    let mut cx = intent::PlanCx::new(observed, now);
    cx.collect_needed = true;
    for rule in ordered(desired) {
        rule.plan(&mut cx, checker.as_ref());
    }
    for m in desired.mirrors.iter().filter(|m| m.prune) {
        mirror::prune_needs(m, &mut cx);
    }
    for r in &desired.retention {
        retention::needs(r, &mut cx);
    }
    cx
}

/// A rule that puts images under tags.
#[derive(Clone, Copy)]
enum Rule<'d> {
    Mirror(&'d crate::config::Mirror),
    Promotion(&'d crate::config::Promotion),
    Retag(&'d crate::config::Retag),
}

impl Rule<'_> {
    fn writes(&self) -> &crate::model::RepoAddr {
        match self {
            Rule::Mirror(m) => &m.to,
            Rule::Promotion(p) => &p.to,
            Rule::Retag(r) => &r.tag.repo,
        }
    }

    fn reads(&self) -> &crate::model::RepoAddr {
        match self {
            Rule::Mirror(m) => &m.from,
            Rule::Promotion(p) => &p.from,
            Rule::Retag(r) => match &r.source {
                crate::config::RetagSource::From(src) => &src.repo,
                crate::config::RetagSource::Newest { repo, .. } => repo,
            },
        }
    }

    /// Whether this rule may read `tag` of the repo it reads: a retag reads
    /// one tag, the others what their selector matches. Pinned digests may
    /// arrive under any tag.
    fn may_read(&self, tag: &crate::model::Tag) -> bool {
        match self {
            Rule::Mirror(m) => m.tags.matches(tag),
            Rule::Promotion(p) => p.tags.matches(tag),
            Rule::Retag(r) => match &r.source {
                crate::config::RetagSource::From(src) => match &src.reference {
                    Some(crate::model::Reference::Tag(t)) => t == tag,
                    _ => true,
                },
                crate::config::RetagSource::Newest { tags, .. } => tags.matches(tag),
            },
        }
    }

    /// Whether rule `reader` reads what this one writes: the same repo and,
    /// for a retag (one tag), that tag. So `rc → stable` feeds
    /// `stable → prod` in one repo, and not the other way round.
    fn feeds(&self, reader: &Rule<'_>) -> bool {
        if self.writes() != reader.reads() {
            return false;
        }
        match self {
            Rule::Retag(r) => r.tag.tag().is_none_or(|t| reader.may_read(t)),
            _ => true,
        }
    }

    fn plan(&self, cx: &mut intent::PlanCx<'_>, checker: Option<&policy::Checker<'_>>) {
        match self {
            Rule::Mirror(m) => mirror::plan(m, cx, checker),
            Rule::Promotion(p) => promote::plan(p, cx, checker),
            Rule::Retag(r) => retag::plan(r, cx, checker),
        }
    }
}

/// The rules in an order where one that reads a repo comes after every
/// other that writes it (`a → b` before `b → c`; a retag in a mirror's
/// source before the mirror), so each sees what the earlier ones bring and
/// one apply converges. A retag feeds only rules that read its one tag, so
/// retags in one repo chain by tag (`rc → stable` before `stable → prod`).
/// Rules that feed each other in a cycle (`a → b` and `b → a`) stay
/// together, in the written order, after what feeds any of them; otherwise
/// too the written order holds: mirrors, promotions, retags.
fn ordered(desired: &Desired) -> Vec<Rule<'_>> {
    use std::collections::{BTreeMap, BTreeSet};
    let all: Vec<Rule<'_>> = desired
        .mirrors
        .iter()
        .map(Rule::Mirror)
        .chain(desired.promotions.iter().map(Rule::Promotion))
        .chain(desired.retags.iter().map(Rule::Retag))
        .collect();
    let n = all.len();
    let mut writers: BTreeMap<&crate::model::RepoAddr, Vec<usize>> = BTreeMap::new();
    for (i, r) in all.iter().enumerate() {
        writers.entry(r.writes()).or_default().push(i);
    }
    // `feeds[i]`: the rules that read what rule i writes.
    let mut feeds: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut fed_by: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (j, r) in all.iter().enumerate() {
        for &i in writers.get(r.reads()).into_iter().flatten() {
            if i != j && all[i].feeds(r) {
                feeds[i].push(j);
                fed_by[j].push(i);
            }
        }
    }
    let comp = cycles(&feeds, &fed_by);
    let comps = comp.iter().copied().max().map_or(0, |m| m + 1);
    // Each cycle (or lone rule) waits for those that feed it from outside.
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); comps];
    for (i, &c) in comp.iter().enumerate() {
        members[c].push(i);
    }
    let mut waits = vec![0usize; comps];
    let mut after: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); comps];
    for (i, next) in feeds.iter().enumerate() {
        for &j in next {
            if comp[i] != comp[j] && after[comp[i]].insert(comp[j]) {
                waits[comp[j]] += 1;
            }
        }
    }
    // Ready cycles by their first rule as written.
    let mut ready: BTreeSet<(usize, usize)> = (0..comps)
        .filter(|&c| waits[c] == 0)
        .filter_map(|c| Some((*members[c].first()?, c)))
        .collect();
    let mut out = Vec::with_capacity(n);
    while let Some((_, c)) = ready.pop_first() {
        out.extend(members[c].iter().map(|&i| all[i]));
        for &d in &after[c] {
            waits[d] = waits[d].saturating_sub(1);
            if waits[d] == 0 {
                if let Some(&first) = members[d].first() {
                    ready.insert((first, d));
                }
            }
        }
    }
    out
}

/// The strongly connected components of a graph (Kosaraju, without
/// recursion: a policy may have thousands of rules): for each node, the
/// number of its component.
fn cycles(next: &[Vec<usize>], prev: &[Vec<usize>]) -> Vec<usize> {
    let n = next.len();
    // Nodes by the time their depth-first search finished.
    let mut finished = Vec::with_capacity(n);
    let mut seen = vec![false; n];
    for root in 0..n {
        if seen[root] {
            continue;
        }
        seen[root] = true;
        let mut stack = vec![(root, 0usize)];
        while let Some((node, edge)) = stack.pop() {
            if let Some(&to) = next[node].get(edge) {
                stack.push((node, edge + 1));
                if !seen[to] {
                    seen[to] = true;
                    stack.push((to, 0));
                }
            } else {
                finished.push(node);
            }
        }
    }
    let mut comp = vec![usize::MAX; n];
    let mut count = 0;
    for &root in finished.iter().rev() {
        if comp[root] != usize::MAX {
            continue;
        }
        comp[root] = count;
        let mut stack = vec![root];
        while let Some(node) = stack.pop() {
            for &from in &prev[node] {
                if comp[from] == usize::MAX {
                    comp[from] = count;
                    stack.push(from);
                }
            }
        }
        count += 1;
    }
    comp
}

#[cfg(test)]
mod tests {
    use super::cycles;

    #[test]
    fn cycles_group_nodes_that_reach_each_other() {
        // 0 → 1 → 2 → 1, 3 alone, 4 → 0
        let next = vec![vec![1], vec![2], vec![1], vec![], vec![0]];
        let mut prev = vec![Vec::new(); next.len()];
        for (i, to) in next.iter().enumerate() {
            for &j in to {
                prev[j].push(i);
            }
        }
        let c = cycles(&next, &prev);
        assert_eq!(c[1], c[2]);
        let distinct: std::collections::BTreeSet<usize> = [c[0], c[1], c[3], c[4]].into();
        assert_eq!(distinct.len(), 4, "{c:?}");
    }
}
