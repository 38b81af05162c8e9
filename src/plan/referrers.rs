//! Referrer tags follow their subject: signatures, SBOMs and attestations
//! stored under the `sha256-<hex>` tag schema (the OCI 1.1 fallback index,
//! and cosign's `.sig`/`.att`/`.sbom`) are kept at the target like tags,
//! byte for byte. So one attached to a source image *after* it was copied
//! reaches the target on the next run, and on a registry without the
//! referrers API a no-op run stays at one HEAD per tag per side.
//!
//! Where the source registry indexes referrers itself (the OCI 1.1
//! referrers API, an OCI layout), its list for each image already copied is
//! read too (one request per image) and what the target does not list is
//! copied by digest (`follow_indexed`).
//!
//! A target tag that differs is moved only when nothing it lists would be
//! lost (the target's entries are a subset of the source's); a target that
//! holds entries of its own is left alone and reported.

use std::collections::BTreeSet;

use super::intent::{Intent, PlanCx, RepoView};
use crate::model::{Digest, RepoAddr, Tag};
use crate::observe::Fact;

/// Intents for the source's referrer tags whose subject is `subject` (or
/// one of its platform manifests), which the rule keeps at `to` under `tag`
/// (`label` names it in reasons). For a tag the rule copies now, only
/// cosign's `.sig`/`.att`/`.sbom` tags: the copy brings the OCI referrers
/// (and their `sha256-<hex>` index) itself, but cosign's tags are no
/// referrers of anything and would come a run late.
///
/// `filtered`: `subject` is an index the rule makes by keeping some
/// platforms, these bytes; only the referrers of the platform manifests it
/// lists follow (those of the source's full index do not describe it).
///
/// `from` is where the image is read (an upstream rule's source, when the
/// rule's own one holds the same image); `declared` the rule's own source,
/// whose own referrer index is asked too.
pub fn follow(
    cx: &mut PlanCx<'_>,
    rule: &str,
    (from, declared, to): (&RepoAddr, &RepoAddr, &RepoAddr),
    (tag, subject): (&Tag, &Digest),
    label: &str,
    filtered: Option<&str>,
) {
    let (RepoView::Known(src), RepoView::Known(dst)) = (cx.repo(from), cx.repo(to)) else {
        return;
    };
    let in_place = dst.tags.get(tag) == Some(subject);
    // Brought into `from` by an earlier rule in this plan.
    let arriving: Vec<Tag> = cx.arriving_referrers(from).to_vec();
    // Referrers may hang on an index's platform manifests too (cosign
    // `--recursive`, per-platform scans). The index is read only when the
    // source holds referrer tags of something no tag names, so a repo
    // without such tags costs no request.
    // Worked out once per repo: a mirror of thousands of tags calls this
    // for each of them.
    let loose_seen = *cx.loose_referrers.entry(from.clone()).or_insert_with(|| {
        if src.referrer_tags.is_empty() {
            return false;
        }
        let tagged: BTreeSet<&Digest> = src.tags.values().collect();
        src.referrer_tags
            .iter()
            .filter_map(Tag::referrer_subject)
            .any(|s| !tagged.contains(&s))
    });
    let loose = loose_seen
        || arriving
            .iter()
            .filter_map(Tag::referrer_subject)
            .any(|s| !src.tags.values().any(|d| *d == s));
    let subjects = match filtered {
        Some(bytes) => super::retention::listed_children(bytes),
        None => {
            let mut subjects = BTreeSet::from([subject.clone()]);
            if loose {
                let one = std::collections::BTreeMap::from([(tag.clone(), subject.clone())]);
                subjects.extend(super::retention::index_children(from, &one, cx));
            }
            subjects
        }
    };
    // The source's referrer tags, and those an earlier rule brings into it
    // in this plan: with `dev → staging → prod` promoted long ago and an
    // SBOM attached in dev since, staging's image is in place (no intent
    // reads it from dev), and the SBOM goes on to prod now, read in dev.
    let tags: BTreeSet<Tag> = src
        .referrer_tags
        .iter()
        .chain(&arriving)
        .filter(|t| t.referrer_subject().is_some_and(|s| subjects.contains(&s)))
        .filter(|t| in_place || t.as_str().contains('.'))
        .cloned()
        .collect();
    for tag in &tags {
        let on_target = dst.referrer_tags.contains(tag);
        if cx.collect_needed && on_target {
            cx.needed_referrer_tags.insert((to.clone(), tag.clone()));
        }
        let (want, read_from) = match cx.planned_referrer(from, tag) {
            Some(at) => at,
            None => {
                if cx.collect_needed {
                    cx.needed_referrer_tags.insert((from.clone(), tag.clone()));
                }
                let Some(Fact::Known(want)) = cx.observed.referrer_tag(from, tag) else {
                    continue; // not read: nothing is planned on a guess
                };
                (want.clone(), from.clone())
            }
        };
        let want = &want;
        if on_target {
            let Some(Fact::Known(have)) = cx.observed.referrer_tag(to, tag) else {
                continue;
            };
            if have == want {
                continue;
            }
            if cx.collect_needed {
                cx.needed_referrer_entries
                    .insert((read_from.clone(), want.clone()));
                cx.needed_referrer_entries
                    .insert((to.clone(), have.clone()));
            }
            match subsumed(cx, to, have, &read_from, want) {
                Some(true) => {}
                // The target has everything the source lists, and more.
                Some(false) if subsumed(cx, &read_from, want, to, have) == Some(true) => continue,
                Some(false) => {
                    cx.block(
                        rule,
                        format!("{to}:{tag}"),
                        format!(
                            "the target's {} and those of {from}:{tag} each have entries the \
                             other lacks; regimen does not merge them (remove the target's own, \
                             or attach them at the source too)",
                            kind(tag)
                        ),
                    );
                    continue;
                }
                None => continue,
            }
        }
        cx.push_intent(Intent {
            target: to.clone(),
            tag: tag.clone(),
            digest: want.clone(),
            source: read_from,
            rule: rule.to_string(),
            reason: format!("{} of {label}", kind(tag)),
            may_move: true,
            // Its own referrers, if any, come along as with any copy.
            with_referrers: true,
            only_platforms: None,
            is_retag: false,
            source_digest: None,
            after: None,
        });
    }
    // Where the source registry indexes referrers itself, one attached
    // since the copy may show only there (`oras attach`, `notation sign`
    // against a registry with the referrers API). Not while this plan moves
    // the image's `sha256-<hex>` index at the target: that copy brings what
    // it lists, and the next run compares again.
    if in_place && filtered.is_none() && !cx.has_intent_on(to, &subject.referrers_tag()) {
        follow_indexed(cx, rule, (declared, to), subject, label);
    }
}

/// Copies of the referrers the source registry lists for `subject` (already
/// at `to`) through its own index, which the target does not list. Each is
/// one manifest (with its blobs and its own referrers), copied by digest: a
/// target with the referrers API indexes it as it lands, one without gets
/// it added to its `sha256-<hex>` index. Those an earlier rule of this plan
/// brings into `from` go on too, read where that rule reads them.
fn follow_indexed(
    cx: &mut PlanCx<'_>,
    rule: &str,
    (from, to): (&RepoAddr, &RepoAddr),
    subject: &Digest,
    label: &str,
) {
    let key = (from.clone(), subject.clone());
    if cx.collect_needed {
        cx.needed_api_referrers.insert(key.clone());
    }
    // (referrer, artifact type, repo it is read from)
    let mut wanted: Vec<(Digest, String, RepoAddr)> = match cx.observed.api_referrers.get(&key) {
        // Not read: listed as unobserved, nothing planned on a guess.
        Some(Fact::Known(Some(listed))) => listed
            .iter()
            .map(|r| (r.digest.clone(), r.artifact_type.clone(), from.clone()))
            .collect(),
        _ => Vec::new(),
    };
    for arriving in cx.indexed_arrivals(&key) {
        if !wanted.iter().any(|w| w.0 == arriving.0) {
            wanted.push(arriving);
        }
    }
    if wanted.is_empty() {
        return;
    }
    let at_target = (to.clone(), subject.clone());
    if cx.collect_needed {
        cx.needed_listed_referrers.insert(at_target.clone());
    }
    let missing: Vec<_> = match cx.observed.listed_referrers.get(&at_target) {
        Some(Fact::Known(have)) => wanted
            .into_iter()
            .filter(|(d, _, _)| !have.contains(d))
            .collect(),
        // Not read yet: asking what to read, any of them may arrive at `to`,
        // and a rule reading `to` then needs its own target's list too (a
        // chain is then followed in one run).
        _ if cx.collect_needed => wanted,
        _ => return,
    };
    for (digest, artifact_type, read_from) in missing {
        let what = if artifact_type.is_empty() {
            "referrer".to_string()
        } else {
            format!("referrer ({artifact_type})")
        };
        cx.plan_referrer_copy(
            (to, subject, &digest),
            super::intent::ReferrerCopy {
                source: read_from,
                rules: vec![rule.to_string()],
                reason: format!("{what} of {label}, attached after the copy"),
                artifact_type,
            },
        );
    }
}

/// Whether every entry of `a` (in `a_repo`) is also in `b`; `None` when
/// either was not read.
fn subsumed(
    cx: &PlanCx<'_>,
    a_repo: &RepoAddr,
    a: &Digest,
    b_repo: &RepoAddr,
    b: &Digest,
) -> Option<bool> {
    let a = cx.observed.referrer_entries(a_repo, a)?.known()?;
    let b = cx.observed.referrer_entries(b_repo, b)?.known()?;
    Some(a.is_subset(b))
}

fn kind(tag: &Tag) -> &'static str {
    match tag.as_str().rsplit_once('.') {
        Some((_, "sig")) => "signature",
        Some((_, "att")) => "attestations",
        Some((_, "sbom")) => "SBOM",
        _ => "referrers",
    }
}
