//! `mirrors:` — keep TO a copy of FROM's selected tags.

use super::intent::{Intent, PlanCx, RepoView, Unread};
use super::policy::Checker;
use crate::config::{Mirror, Platforms};
use crate::model::{Digest, Tag, Timestamp};
use crate::observe::Fact;
use crate::registry::manifest::filter_index;

pub fn plan(m: &Mirror, cx: &mut PlanCx<'_>, checker: Option<&Checker<'_>>) {
    let rule = m.rule_name();
    let RepoView::Known(src) = cx.repo(&m.from) else {
        // Reported as unobserved; what it copied before stays meanwhile.
        let why = format!("the source {} of {rule} could not be read", m.from);
        cx.hold_target(&rule, &m.to, why);
        return;
    };
    // What earlier rules bring into FROM in this plan counts too: with
    // `a → b → c`, or a retag in FROM, one apply converges.
    let fed = cx.fed(&m.from);
    if src.missing && !fed {
        // Said once here; `prune` stays its hand for the same reason.
        cx.block(
            &rule,
            m.from.to_string(),
            "the source repo does not exist: nothing is mirrored or pruned (is `from` right?)",
        );
        return;
    }
    let candidates: Vec<(Tag, Option<Timestamp>)> = if fed {
        cx.planned_tags(&m.from, m.tags.needs_created())
            .unwrap_or_default()
    } else {
        cx.tags_with_created(&m.from, src)
            .into_iter()
            .map(|(t, c)| (t.clone(), c))
            .collect()
    };
    if cx.wait_for_created(&rule, (&m.from, &m.to), &m.tags, &candidates) {
        return;
    }
    for tag in m.tags.select(candidates.iter().map(|(t, c)| (t, *c))) {
        // `origin` is where the image is now: FROM, or where an earlier
        // rule copies it from. The copy comes from there, so it does not
        // wait on the earlier one (changes of one phase run concurrently).
        let Some((planned, origin)) = cx.planned(&m.from, &tag) else {
            if cx.in_conflict(&m.from, &tag) {
                // Where it goes is undecided, not gone: its copy here stays.
                cx.unread.push(Unread {
                    target: m.to.clone(),
                    tag: Some(tag.clone()),
                    why: format!("{}:{tag}, which {rule} copies, is undecided", m.from),
                    rule: rule.clone(),
                });
            }
            continue;
        };
        // An earlier rule's filtered index exists nowhere yet: it is made
        // again here from the full index it is made from.
        let upstream = cx.planned_filter(&m.from, &tag, &planned);
        let full = upstream
            .as_ref()
            .map(|(d, _)| d.clone())
            .unwrap_or_else(|| planned.clone());
        // With a platform filter: the index this rule makes, for the
        // referrers of the platform manifests it keeps.
        let (digest, only, made) = match (&m.platforms, &upstream) {
            (Platforms::All, None) => (planned.clone(), None, None),
            (Platforms::All, Some((_, kept))) => {
                let made = match cx.index(&origin, &full) {
                    Some(Fact::Known(Some(index))) => filter_index(index.as_bytes(), kept),
                    _ => None,
                };
                (planned.clone(), Some(kept.clone()), made)
            }
            (Platforms::Only(wanted), _) => match cx.index(&origin, &full) {
                Some(Fact::Known(index)) => match index {
                    Some(index) => {
                        let full_bytes = index.as_bytes();
                        // What this rule makes of FROM's index: of the
                        // earlier rule's filtered one, where there is one.
                        let made = match &upstream {
                            None => filter_index(full_bytes, wanted),
                            Some((_, kept)) => filter_index(full_bytes, kept)
                                .and_then(|b| filter_index(&b, wanted)),
                        };
                        let Some(bytes) = made else {
                            cx.block(
                                &rule,
                                format!("{}:{tag}", m.from),
                                format!("no platform of the index matches {}", wanted.join(", ")),
                            );
                            continue;
                        };
                        // Made in one go from the full index (the copy
                        // filters once), with a platform list that gives
                        // the same bytes.
                        let lists =
                            std::iter::once(wanted).chain(upstream.as_ref().map(|(_, k)| k));
                        let Some(list) = lists
                            .into_iter()
                            .find(|w| filter_index(full_bytes, w).as_ref() == Some(&bytes))
                        else {
                            cx.block(
                                &rule,
                                format!("{}:{tag}", m.from),
                                "a filter of an index the plan filters first: copied once that \
                                 copy has landed, on the next run",
                            );
                            continue;
                        };
                        (Digest::sha256_of(&bytes), Some(list.clone()), Some(bytes))
                    }
                    // A single-platform image is copied as it is.
                    None => (planned.clone(), None, None),
                },
                Some(Fact::Unknown { reason }) => {
                    let reason = format!("the index could not be read: {reason}");
                    cx.unread.push(Unread {
                        target: m.to.clone(),
                        tag: Some(tag.clone()),
                        why: reason.clone(),
                        rule: rule.clone(),
                    });
                    cx.block(&rule, format!("{}:{tag}", m.from), reason);
                    continue;
                }
                None if cx.collect_needed => continue,
                None => {
                    cx.block(
                        &rule,
                        format!("{}:{tag}", m.from),
                        "the index was not read, so its platforms are unknown",
                    );
                    continue;
                }
            },
        };
        // No image details are read for plain mirror copies (platform and
        // referrer counts would cost several requests per image on a cold
        // mirror); promotions and filtered mirrors read what they check.
        let filtered_from = (full != digest).then_some(full);
        // A filter that keeps every platform copies the index as it is.
        let only = only.filter(|_| filtered_from.is_some());
        let made = made
            .filter(|_| filtered_from.is_some())
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        if m.referrers && (filtered_from.is_none() || made.is_some()) {
            let label = format!("{}:{tag}", m.from);
            super::referrers::follow(
                cx,
                &rule,
                (&origin, &m.from, &m.to),
                (&tag, &digest),
                &label,
                made.as_deref(),
            );
        }
        let after = cx.depends_on(&m.from, &tag);
        cx.bring(
            Intent {
                target: m.to.clone(),
                tag: tag.clone(),
                digest,
                source: origin,
                rule: rule.clone(),
                reason: format!("mirror of {}:{tag}", m.from),
                may_move: true,
                // Of a filtered index, only those of the platform manifests
                // it keeps: the rest name the source's full index.
                with_referrers: m.referrers,
                only_platforms: only,
                is_retag: false,
                source_digest: filtered_from,
                after,
            },
            checker,
        );
    }
}

/// For `plan::wanted`: the images prune would remove, whose age the plan
/// shows and `min_keep` orders by (only those: reading every TO tag would
/// cost each no-op run two requests per tag).
pub fn prune_needs(m: &Mirror, cx: &mut PlanCx<'_>) {
    let (RepoView::Known(from), RepoView::Known(to)) = (cx.repo(&m.from), cx.repo(&m.to)) else {
        return;
    };
    if from.missing && !cx.fed(&m.from) {
        return;
    }
    let mut pruning = false;
    for (t, d) in &to.tags {
        if m.tags.matches(t) && !from.tags.contains_key(t) {
            cx.image(&m.to, d);
            pruning = true;
        }
    }
    // An image going may be a child of an index another tag keeps: the
    // indexes of TO are read then (only then).
    if pruning {
        super::retention::index_children(&m.to, &to.tags, cx);
    }
}

/// `prune: true`: TO tags this rule selects whose FROM tag is gone. Foreign
/// tags (not matching the rule's selector) are never touched.
///
/// Retention over the same repo has its say: a tag it already deletes is not
/// deleted twice, a tag it keeps stays (shown as blocked: the two rules
/// disagree), and together they never leave fewer tags than its `min_keep`.
pub fn prune(
    m: &Mirror,
    protect: &super::retention::Protected,
    retention: &super::retention::Report,
    cx: &mut PlanCx<'_>,
    out: &mut Vec<super::types::Change>,
) {
    let (RepoView::Known(from), RepoView::Known(to)) = (cx.repo(&m.from), cx.repo(&m.to)) else {
        return; // unknown on either side: nothing is pruned
    };
    // A missing source is not "every tag gone upstream" (blocked in
    // `plan`), unless a rule fills it in this plan: what it brings is kept
    // at TO as this rule's targets.
    if from.missing && !cx.fed(&m.from) {
        return;
    }
    let rule = m.rule_name();
    let (gone, min_keep) = retention.going.get(&m.to).cloned().unwrap_or_default();
    // A source layout may name an image by full reference (`docker.io/x/app:1.0`)
    // rather than by tag: its `1.0` is not gone upstream.
    let named_upstream = |t: &crate::model::Tag| {
        from.other_names
            .values()
            .flatten()
            .any(|n| n.rsplit_once(':').is_some_and(|(_, tag)| tag == t.as_str()))
    };
    let gone_upstream = |t: &crate::model::Tag| {
        m.tags.matches(t) && !from.tags.contains_key(t) && !named_upstream(t) && !gone.contains(t)
    };
    // Another rule writing here could not read its source: what it keeps
    // is unknown. (This rule's own unread creation times do not matter:
    // prune goes by what FROM has, not by the selection.)
    let others_unread = protect
        .unread_repos
        .get(&m.to)
        .and_then(|u| u.iter().find(|(_, r)| *r != rule));
    if let Some((why, _)) = others_unread {
        if to.tags.keys().any(gone_upstream) {
            cx.block(&rule, m.to.to_string(), format!("{why}: nothing is pruned"));
        }
        return;
    }
    let mut going: Vec<super::retention::Going> = Vec::new();
    for (t, d) in &to.tags {
        if !gone_upstream(t) {
            continue;
        }
        let subject = format!("{}:{t}", m.to);
        // Another rule or a host needs it (a retag's or promotion's
        // source, a present tag, a running container): the two disagree,
        // which is shown, not settled silently either way.
        let needed = protect
            .tags
            .get(&(m.to.clone(), t.clone()))
            .or_else(|| protect.digests.get(&(m.to.clone(), d.clone())))
            .or_else(|| protect.run.get(d));
        if let Some(why) = needed {
            cx.block(
                &rule,
                subject,
                format!("gone upstream, but {why}: not pruned"),
            );
            continue;
        }
        if let Some(k) = retention.kept.iter().find(|k| k.subject == subject) {
            cx.block(
                &rule,
                subject,
                format!(
                    "gone upstream, but retention rule {} keeps it ({}): not pruned",
                    k.rule, k.reason
                ),
            );
            continue;
        }
        let created = match cx.observed.image(&m.to, d) {
            Some(Fact::Known(i)) => i.created,
            _ => None,
        };
        going.push((t.clone(), d.clone(), created));
    }
    // min_keep of the retention rules over this repo counts prune too: the
    // newest go back first.
    let left = to.tags.len().saturating_sub(gone.len() + going.len());
    if left < min_keep as usize {
        going.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        let back = (min_keep as usize - left).min(going.len());
        for (t, _, _) in going.drain(..back) {
            cx.block(
                &rule,
                format!("{}:{t}", m.to),
                format!(
                    "gone upstream, but retention keeps min_keep {min_keep} tags here: not pruned"
                ),
            );
        }
    }
    let mut changes = super::retention::digest_level(
        &m.to,
        to,
        &gone,
        &super::retention::index_children(&m.to, &to.tags, cx),
        &going,
        &m.rule_name(),
        cx.now,
    );
    for c in &mut changes {
        c.reason = format!(
            "{} gone upstream; {}",
            c.target.replacen(&m.to.to_string(), &m.from.to_string(), 1),
            c.reason
        );
    }
    out.extend(changes);
}
