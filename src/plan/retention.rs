//! `retention:` — delete what no keep protects, at digest level, never what
//! another rule, a managed host or an unobserved place needs.
//!
//! Per repo of a rule: a tag is a *candidate* when every `delete` condition
//! holds; it stays when any `keep` condition holds, when it is protected
//! (a target or source of a mirror/promotion/retag in the same policy), or
//! when deleting it would leave fewer than `min_keep` tags. A digest whose
//! tags all go is deleted (its referrers with it); otherwise only the tags go.

use std::collections::{BTreeMap, BTreeSet};

use super::intent::{age, PlanCx, RepoView};
use super::types::{Action, Change, Kept, RetentionRepo};
use crate::config::selector::compare_tags;
use crate::config::{Desired, Retention};
use crate::model::{Digest, ImageRef, RegistryName, RepoAddr, Tag, Timestamp};
use crate::observe::{Fact, Observed};

/// The repos a rule covers: literal ones as written, wildcards through the
/// registry's catalog. Registries whose catalog is unknown are returned apart.
pub fn rule_repos(
    rule: &Retention,
    observed: &Observed,
) -> (BTreeSet<RepoAddr>, BTreeSet<RegistryName>) {
    let mut repos = BTreeSet::new();
    let mut unknown = BTreeSet::new();
    for g in &rule.repos {
        if g.is_literal() {
            if let Ok(repo) = g.pattern.parse() {
                repos.insert(RepoAddr {
                    registry: g.registry.clone(),
                    repo,
                });
            }
            continue;
        }
        match observed.catalogs.get(&g.registry) {
            Some(Fact::Known(list)) => {
                repos.extend(
                    list.iter()
                        .filter(|r| g.matcher.is_match(r.as_str()))
                        .map(|r| RepoAddr {
                            registry: g.registry.clone(),
                            repo: r.clone(),
                        }),
                );
            }
            _ => {
                unknown.insert(g.registry.clone());
            }
        }
    }
    (repos, unknown)
}

/// What other rules need: tags they write or read, and digests they copy.
#[derive(Default)]
pub struct Protected {
    pub tags: BTreeMap<(RepoAddr, Tag), String>,
    pub digests: BTreeMap<(RepoAddr, Digest), String>,
    /// Sources of copies already in place. Retention keeps them (deleting
    /// what dev → prod mirrors copied would let a pruning prod follow);
    /// a mirror's prune does not: a tag gone upstream goes down a chain of
    /// pruning mirrors (the next rule's copy stays, or its own prune
    /// follows), and a `newest` retag's image keeps its tag, so pruning the
    /// version tag untags it and the retag moves on at the next run.
    pub settled_sources: BTreeMap<(RepoAddr, Digest), String>,
    /// Digests a container on a managed host uses, whatever name (registry,
    /// repo) it was pulled by: never deleted from any registry or repo.
    pub run: BTreeMap<Digest, String>,
    /// Hosts that could not be read: what they run is unknown, so nothing is deleted.
    pub unknown_hosts: Vec<String>,
    /// Repos a mirror or promotion writes whose source could not be read:
    /// which of their tags it keeps is unknown, so nothing there is deleted.
    /// Why, and which rule.
    pub unread_repos: BTreeMap<RepoAddr, Vec<(String, String)>>,
}

/// Indexes observed in any repo that list `child` as a platform.
fn indexes_containing(child: &Digest, observed: &Observed) -> Vec<Digest> {
    observed
        .images
        .iter()
        .filter(|(_, f)| {
            f.known()
                .and_then(|i| i.index_manifest.as_deref())
                .is_some_and(|m| m.contains(child.as_str()))
        })
        .map(|((_, d), _)| d.clone())
        .collect()
}

pub fn protected(desired: &Desired, cx: &PlanCx<'_>) -> Protected {
    let mut p = Protected::default();
    for i in &cx.intents {
        p.tags.insert(
            (i.target.clone(), i.tag.clone()),
            format!("target of {}", i.rule),
        );
        // A platform-filtered copy is made from the source's full index.
        let read = i.source_digest.as_ref().unwrap_or(&i.digest);
        let in_place = matches!(cx.repo(&i.target), RepoView::Known(at)
            if at.tags.get(&i.tag) == Some(&i.digest));
        let to = if in_place {
            &mut p.settled_sources
        } else {
            &mut p.digests
        };
        to.insert(
            (i.source.clone(), read.clone()),
            format!("source of {}", i.rule),
        );
    }
    for (repo, digest, rule) in &cx.soaking {
        p.digests.insert(
            (repo.clone(), digest.clone()),
            format!("candidate of {rule}, waiting for min_age"),
        );
    }
    // A tag a rule holds without a digest (its source unread or in
    // conflict) is that rule's all the same.
    for c in &cx.claims {
        p.tags
            .entry((c.target.clone(), c.tag.clone()))
            .or_insert_with(|| format!("target of {}", c.rule));
    }
    for u in &cx.unread {
        match &u.tag {
            Some(t) => {
                p.tags.insert((u.target.clone(), t.clone()), u.why.clone());
            }
            None => p
                .unread_repos
                .entry(u.target.clone())
                .or_default()
                .push((u.why.clone(), u.rule.clone())),
        }
    }
    for i in &cx.in_place {
        p.tags.insert(
            (i.target.clone(), i.tag.clone()),
            format!("target of {}", i.rule),
        );
        p.digests.insert(
            (i.source.clone(), i.digest.clone()),
            format!("source of {}", i.rule),
        );
    }
    for r in &desired.retags {
        if let Some(t) = r.tag.tag() {
            p.tags.insert(
                (r.tag.repo.clone(), t.clone()),
                format!("target of {}", r.rule_name()),
            );
        }
        if let crate::config::RetagSource::From(ImageRef {
            repo,
            reference: Some(crate::model::Reference::Tag(t)),
        }) = &r.source
        {
            p.tags.insert(
                (repo.clone(), t.clone()),
                format!("source of {}", r.rule_name()),
            );
        }
    }
    // What hosts' containers run (any state: a stopped container can be
    // started again), by the registry manifests the engine pulled it as.
    // By digest alone: the engine may have pulled it by a name the policy
    // does not write for that registry (`localhost:5000/…` for
    // `http://127.0.0.1:5000`), or from another registry with the same
    // content, and the digest is the same image wherever it is. An index
    // whose platform a container runs stays too.
    for (name, fact) in &cx.observed.hosts {
        let Fact::Known(state) = fact else {
            p.unknown_hosts.push(name.clone());
            continue;
        };
        for img in &state.images {
            let Some(user) = state.use_of(img) else {
                continue;
            };
            let why = format!("run by {user} on host {name}");
            for digest in img
                .repo_digests
                .iter()
                .filter_map(|rd| rd.split_once('@'))
                .filter_map(|(_, d)| d.parse::<Digest>().ok())
            {
                for index in indexes_containing(&digest, cx.observed) {
                    p.run.entry(index).or_insert_with(|| why.clone());
                }
                p.run.entry(digest).or_insert_with(|| why.clone());
            }
        }
    }
    for (name, h) in &desired.hosts {
        for img in &h.images.present {
            if let Some(t) = img.tag() {
                p.tags.insert(
                    (img.repo.clone(), t.clone()),
                    format!("present on host {name}"),
                );
            }
        }
    }
    p
}

/// What retention adds to the plan besides changes.
#[derive(Default)]
pub struct Report {
    pub repos: Vec<RetentionRepo>,
    pub kept: Vec<Kept>,
    /// Per repo, across rules: tags earlier rules delete, and the largest
    /// `min_keep` of every rule over the repo, so several rules on one repo
    /// never leave it with fewer tags than any of them allows (nor delete a
    /// tag twice).
    pub going: BTreeMap<RepoAddr, (BTreeSet<Tag>, u32)>,
    /// Orphan referrer tags an earlier (not blocked) rule cleans up.
    pub orphans_taken: BTreeSet<String>,
}

impl Report {
    /// Seeds each repo's `min_keep` with the largest among all the rules
    /// that cover it, whatever their order in the file.
    pub fn for_rules(rules: &[Retention], observed: &Observed) -> Report {
        let mut report = Report::default();
        for rule in rules {
            for repo in rule_repos(rule, observed).0 {
                let e = report.going.entry(repo).or_default();
                e.1 = e.1.max(rule.min_keep);
            }
        }
        report
    }
}

pub fn plan(
    rule: &Retention,
    protect: &Protected,
    cx: &mut PlanCx<'_>,
    out: &mut Vec<Change>,
    report: &mut Report,
) {
    if !protect.unknown_hosts.is_empty() {
        cx.block(
            &rule.name,
            rule.repos
                .iter()
                .map(|g| format!("{}/{}", g.registry, g.pattern))
                .collect::<Vec<_>>()
                .join(", "),
            format!(
                "host {} could not be read: what it runs is unknown, so nothing is deleted",
                protect.unknown_hosts.join(", ")
            ),
        );
        return;
    }
    let (repos, unknown_catalogs) = rule_repos(rule, cx.observed);
    for reg in unknown_catalogs {
        cx.block(
            &rule.name,
            format!("{reg}/*"),
            "the registry catalog could not be read: no deletions there",
        );
    }
    let mut changes = Vec::new();
    let first_repo = report.repos.len();
    let mut going: Vec<(RepoAddr, Vec<Tag>)> = Vec::new();
    let mut orphans: Vec<String> = Vec::new();
    for repo in repos {
        let (tags, orphaned) = plan_repo(rule, protect, &repo, cx, &mut changes, report);
        orphans.extend(orphaned);
        going.push((repo, tags));
    }
    if let Some(max) = rule.max_deletes {
        // This rule's own tags (not those of earlier rules that a delete
        // here names too) and its orphan referrer deletions.
        let n = going.iter().map(|(_, t)| t.len()).sum::<usize>() + orphans.len();
        if n > max as usize {
            for c in &changes {
                cx.block(
                    &rule.name,
                    c.target.clone(),
                    format!("{n} tags would be deleted, over max_deletes {max}: none are"),
                );
            }
            for r in &mut report.repos[first_repo..] {
                r.deleting = 0;
            }
            return;
        }
    }
    // Only deletions that will happen count against later rules.
    for (repo, tags) in going {
        report.going.entry(repo).or_default().0.extend(tags);
    }
    report.orphans_taken.extend(orphans);
    out.extend(changes);
}

fn plan_repo(
    rule: &Retention,
    protect: &Protected,
    repo: &RepoAddr,
    cx: &mut PlanCx<'_>,
    out: &mut Vec<Change>,
    report: &mut Report,
) -> (Vec<Tag>, Vec<String>) {
    let RepoView::Known(state) = cx.repo(repo) else {
        return (Vec::new(), Vec::new());
    };
    if let Some((why, _)) = protect.unread_repos.get(repo).and_then(|u| u.first()) {
        cx.block(
            &rule.name,
            repo.to_string(),
            format!("{why}: no deletions in this repo"),
        );
        return (Vec::new(), Vec::new());
    }
    // Unknown is not absent: an image whose details could not be read might
    // be the newest or the youngest, so nothing in this repo is deleted.
    if state
        .tags
        .values()
        .any(|d| matches!(cx.observed.image(repo, d), Some(Fact::Unknown { .. })))
    {
        cx.block(
            &rule.name,
            repo.to_string(),
            "details of some images could not be read: no deletions in this repo",
        );
        return (Vec::new(), Vec::new());
    }
    let now = cx.now;
    let (earlier, all_min_keep) = report.going.get(repo).cloned().unwrap_or_default();
    // A tag left on a regimen placeholder (an untag whose last step, deleting
    // the placeholder, failed) is no image: it goes whatever its age, the
    // keep rules or min_keep, unless another rule writes that tag.
    let placeholder = |t: &Tag, d: &Digest| {
        matches!(cx.observed.image(repo, d), Some(Fact::Known(i)) if i.is_regimen_placeholder())
            && !protect.tags.contains_key(&(repo.clone(), t.clone()))
    };
    // Every tag with its creation time; an unread time is unknown, never "old".
    let (placeholders, mut tags): (Vec<Going>, Vec<Going>) = state
        .tags
        .iter()
        .filter(|(t, _)| !t.is_referrer_tag())
        .map(|(t, d)| {
            let created = match cx.observed.image(repo, d) {
                Some(Fact::Known(i)) => i.created,
                _ => None,
            };
            (t.clone(), d.clone(), created)
        })
        .partition(|(t, d, _)| placeholder(t, d));
    let placeholders: Vec<Going> = placeholders
        .into_iter()
        .filter(|(t, _, _)| !earlier.contains(t))
        .collect();
    // Newest first: by created, ties by tag order.
    tags.sort_by(|a, b| {
        b.2.cmp(&a.2)
            .then_with(|| compare_tags((&b.0, b.2), (&a.0, a.2)))
    });

    let mut keep: BTreeSet<Tag> = BTreeSet::new();
    let mut delete: Vec<Going> = Vec::new();
    // `keep.newest` counts images, as Harbor and ECR do (three tags on one
    // image are one of the N), among those no earlier rule deletes.
    let mut image_rank: BTreeMap<&Digest, usize> = BTreeMap::new();
    for (tag, digest, _) in &tags {
        if !earlier.contains(tag) {
            let next = image_rank.len();
            image_rank.entry(digest).or_insert(next);
        }
    }
    for (tag, digest, created) in tags.iter() {
        if earlier.contains(tag) {
            continue; // an earlier rule already deletes it
        }
        let rank = image_rank.get(digest).copied().unwrap_or(usize::MAX);
        let why_kept: Option<String> = if rule.keep.tags.iter().any(|g| g.is_match(tag.as_str())) {
            Some("keep.tags".into())
        } else if let Some(n) = rule.keep.newest.filter(|_| created.is_none()) {
            // A reproducible build's 1970, or no time at all: which images
            // are the newest cannot be told, and unknown is not old.
            Some(format!(
                "keep.newest: creation time unknown, so whether it is one of the {n} newest cannot be told"
            ))
        } else if rule.keep.newest.is_some_and(|n| rank < n as usize) {
            Some(format!(
                "keep.newest: one of the {} newest images",
                rule.keep.newest.unwrap_or(0)
            ))
        } else if rule
            .keep
            .younger_than
            .is_some_and(|y| created.is_none_or(|c| now.0 - c.0 < y.secs()))
        {
            Some("keep.younger_than".into())
        } else if let Some(r) = protect.tags.get(&(repo.clone(), tag.clone())) {
            Some(r.clone())
        } else {
            let key = (repo.clone(), digest.clone());
            protect
                .digests
                .get(&key)
                .or_else(|| protect.settled_sources.get(&key))
                .or_else(|| protect.run.get(digest))
                .cloned()
        };
        let kept = why_kept.is_some();
        let selected = rule.delete.tags.as_ref().is_none_or(|s| s.matches(tag));
        let old_enough = match (rule.delete.older_than, created) {
            (None, _) => true,
            (Some(o), Some(c)) => now.0 - c.0 > o.secs(),
            (Some(_), None) => false,
        };
        // `untagged_referrers` alone selects no images: only their orphans.
        let by_tag_or_age = rule.delete.older_than.is_some() || rule.delete.tags.is_some();
        if by_tag_or_age && !kept && selected && old_enough {
            delete.push((tag.clone(), digest.clone(), *created));
        } else {
            if let (Some(why), true) = (&why_kept, by_tag_or_age && selected && old_enough) {
                report.kept.push(Kept {
                    rule: rule.name.clone(),
                    subject: ImageRef::tagged(repo.clone(), tag.clone()).to_string(),
                    reason: why.clone(),
                });
            }
            keep.insert(tag.clone());
        }
    }
    // min_keep: give back the newest candidates until enough tags remain,
    // by the largest min_keep of any rule over this repo.
    let min_keep = rule.min_keep.max(all_min_keep) as usize;
    while keep.len() < min_keep && !delete.is_empty() {
        let (t, _, _) = delete.remove(0);
        report.kept.push(Kept {
            rule: rule.name.clone(),
            subject: ImageRef::tagged(repo.clone(), t.clone()).to_string(),
            reason: format!("min_keep {min_keep}"),
        });
        keep.insert(t);
    }
    report.repos.push(RetentionRepo {
        rule: rule.name.clone(),
        repo: repo.to_string(),
        tags: (tags.len() + placeholders.len()) as u32,
        deleting: (delete.len() + placeholders.len()) as u32,
    });
    let children = index_children(repo, &state.tags, cx);
    out.extend(digest_level(
        repo, state, &earlier, &children, &delete, &rule.name, now,
    ));
    for mut c in digest_level(
        repo,
        state,
        &earlier,
        &children,
        &placeholders,
        &rule.name,
        now,
    ) {
        c.reason = "left on a regimen placeholder by an untag that did not finish; \
                    removed whatever its age"
            .into();
        out.push(c);
    }
    delete.extend(placeholders);
    let mut orphans = Vec::new();
    if rule.delete.untagged_referrers == Some(true) {
        for o in cx.observed.orphans.get(repo).into_iter().flatten() {
            let target = ImageRef::tagged(repo.clone(), o.tag.clone()).to_string();
            // An earlier rule over this repo may have taken it already.
            if report.orphans_taken.contains(&target) {
                continue;
            }
            orphans.push(target.clone());
            // Deleting by digest would take every tag on it: a list also
            // kept under an ordinary tag (`refs-archive`), or an image someone
            // tagged `sha256-…`, only loses this tag.
            let others: Vec<&str> = state
                .tags
                .iter()
                .filter(|(_, d)| **d == o.digest)
                .map(|(t, _)| t.as_str())
                .collect();
            let gone = format!("referrers of {}, which no longer exists", o.subject.short());
            let (action, reason) = if others.is_empty() {
                (Action::Delete, gone)
            } else {
                (
                    Action::Untag,
                    format!(
                        "{gone} (it stays for its other tags: {})",
                        others.join(", ")
                    ),
                )
            };
            out.push(Change {
                target,
                digest: Some(o.digest.to_string()),
                expect: o.digest.to_string(),
                rule: rule.name.clone(),
                reason,
                ..Change::new(action)
            });
        }
    }
    (delete.into_iter().map(|d| d.0).collect(), orphans)
}

/// Turns tags to remove into changes: a digest whose tags all go is deleted
/// (with its referrers); otherwise only the tags go, and the image stays.
/// A tag to remove: its digest and creation time when known.
pub type Going = (Tag, Digest, Option<Timestamp>);

///
/// `gone`: tags earlier rules already remove from this repo. They no longer
/// hold an image in place, so the rule that takes an image's last remaining
/// tag deletes the image, naming them in `also_tags` (the delete's
/// compare-and-swap accepts a planned tag that is already gone).
pub fn digest_level(
    repo: &RepoAddr,
    state: &crate::observe::RepoState,
    gone: &BTreeSet<Tag>,
    children: &BTreeSet<Digest>,
    delete: &[Going],
    rule: &str,
    now: Timestamp,
) -> Vec<Change> {
    let all = &state.tags;
    let mut out = Vec::new();
    let mut by_digest: BTreeMap<&Digest, Vec<&Going>> = BTreeMap::new();
    for d in delete {
        by_digest.entry(&d.1).or_default().push(d);
    }
    for (digest, going) in by_digest {
        let tag_count = all
            .iter()
            .filter(|(t, d)| *d == digest && !gone.contains(*t))
            .count();
        let age_text = match going[0].2 {
            Some(c) => format!("{} old", age(now, c)),
            None => "age unknown".to_string(),
        };
        // An image that is also a platform of a tagged index, or that has a
        // name other than a tag (an OCI layout's full-reference ref.name),
        // is never deleted on its own: only its tags go.
        let other_names = state.other_names.get(digest);
        if tag_count == going.len() && !children.contains(digest) && other_names.is_none() {
            let mut names: Vec<&Tag> = going.iter().map(|g| &g.0).collect();
            names.sort();
            let earlier = all
                .iter()
                .filter(|(t, d)| *d == digest && gone.contains(*t))
                .map(|(t, _)| t.to_string());
            out.push(Change {
                target: ImageRef::tagged(repo.clone(), names[0].clone()).to_string(),
                digest: Some(digest.to_string()),
                expect: digest.to_string(),
                rule: rule.to_string(),
                reason: age_text,
                also_tags: names[1..]
                    .iter()
                    .map(|t| t.to_string())
                    .chain(earlier)
                    .collect(),
                ..Change::new(Action::Delete)
            });
        } else {
            let stays = match other_names {
                Some(names) if tag_count == going.len() => {
                    format!("the image stays: it is also named {}", names.join(", "))
                }
                _ => "the image stays for its other tags".to_string(),
            };
            // Held by tags alone (no index lists it, no other name): the
            // tags apply checks are still there before it untags.
            let kept_by: Vec<String> = if children.contains(digest) || other_names.is_some() {
                Vec::new()
            } else {
                all.iter()
                    .filter(|(t, d)| {
                        *d == digest && !gone.contains(*t) && !going.iter().any(|g| &g.0 == *t)
                    })
                    .map(|(t, _)| t.to_string())
                    .collect()
            };
            for g in going {
                out.push(Change {
                    target: ImageRef::tagged(repo.clone(), g.0.clone()).to_string(),
                    digest: Some(digest.to_string()),
                    expect: digest.to_string(),
                    rule: rule.to_string(),
                    reason: format!("{age_text}; {stays}"),
                    kept_by: kept_by.clone(),
                    ..Change::new(Action::Untag)
                });
            }
        }
    }
    out
}

/// The digests the indexes among `tags` list as children (the platforms
/// of a multi-arch image), nested indexes followed: those are part of an
/// image that stays, never deleted on their own. Asks for the indexes not
/// read yet (a mirror's prune reads no image details of the tags it keeps).
pub fn index_children(
    repo: &RepoAddr,
    tags: &BTreeMap<Tag, Digest>,
    cx: &mut PlanCx<'_>,
) -> BTreeSet<Digest> {
    let mut out = BTreeSet::new();
    let mut nested = Vec::new();
    for d in tags.values() {
        if let Some(Fact::Known(index)) = cx.index(repo, d) {
            nested.extend(add_children(index, &mut out));
        }
    }
    // An index of indexes (a tagged index listing per-variant indexes):
    // their children are part of it too. Only children the index says are
    // indexes are read, a few levels deep.
    let mut seen = BTreeSet::new();
    for _ in 0..INDEX_DEPTH {
        let mut next = Vec::new();
        for d in std::mem::take(&mut nested) {
            if !seen.insert(d.clone()) {
                continue;
            }
            if let Some(Fact::Known(index)) = cx.index(repo, &d) {
                next.extend(add_children(index, &mut out));
            }
        }
        if next.is_empty() {
            break;
        }
        nested = next;
    }
    out
}

/// For `plan::wanted`: the nested indexes of the rule's repos (their
/// top-level indexes come with the image details retention reads anyway).
pub fn needs(rule: &Retention, cx: &mut PlanCx<'_>) {
    let (repos, _) = super::retention_repos(rule, cx.observed);
    for repo in repos {
        if let RepoView::Known(state) = cx.repo(&repo) {
            index_children(&repo, &state.tags, cx);
        }
    }
}

/// How deep nested indexes are followed (as apply does).
const INDEX_DEPTH: usize = 4;

/// The manifests an index lists (none for anything else).
pub fn listed_children(index: &str) -> BTreeSet<Digest> {
    let mut out = BTreeSet::new();
    add_children(Some(index), &mut out);
    out
}

/// Adds the children an index manifest lists (none for anything else) to
/// `out`; returns those listed as indexes themselves.
fn add_children(index: Option<&str>, out: &mut BTreeSet<Digest>) -> Vec<Digest> {
    let Some(Ok(v)) = index.map(serde_json::from_str::<serde_json::Value>) else {
        return Vec::new();
    };
    let mut indexes = Vec::new();
    for m in v
        .get("manifests")
        .and_then(|m| m.as_array())
        .into_iter()
        .flatten()
    {
        if let Some(Ok(child)) = m
            .get("digest")
            .and_then(|x| x.as_str())
            .map(str::parse::<Digest>)
        {
            let media_type = m.get("mediaType").and_then(|x| x.as_str()).unwrap_or("");
            if crate::registry::manifest::MediaType::is_index(media_type) {
                indexes.push(child.clone());
            }
            out.insert(child);
        }
    }
    indexes
}
