//! `retags:` — a tag must point where stated: at a pinned image, or at the
//! newest tag matching a selector.

use super::intent::{Intent, PlanCx, RepoView};
use super::policy::Checker;

use crate::config::{Retag, RetagSource};
use crate::model::{Digest, Reference, RepoAddr, Tag};

pub fn plan(r: &Retag, cx: &mut PlanCx<'_>, checker: Option<&Checker<'_>>) {
    let rule = r.rule_name();
    let Some(tag) = r.tag.tag().cloned() else {
        return;
    };
    let subject = r.tag.to_string();
    // Where the source tag (or pinned digest) will be once earlier rules'
    // intents are applied: (repo, tag) for `planned_filter`.
    let (digest, source, reason, at): (Digest, RepoAddr, String, Option<(RepoAddr, Tag)>) = match &r
        .source
    {
        RetagSource::From(src) => match &src.reference {
            Some(Reference::Tag(t)) => match cx.planned(&src.repo, t) {
                Some((d, from)) => (
                    d,
                    from,
                    format!("pinned to {src}"),
                    Some((src.repo.clone(), t.clone())),
                ),
                None if cx.in_conflict(&src.repo, t) => {
                    // Still wants the tag: any other rule on it must not win.
                    let reason = format!("source {src} is itself in conflict");
                    cx.claim(&rule, &r.tag.repo, &tag, src.to_string(), reason);
                    return;
                }
                None => {
                    if matches!(cx.repo(&src.repo), RepoView::Known(_)) {
                        if !cx.collect_needed {
                            cx.block(&rule, subject, format!("source {src} does not exist"));
                        }
                    } else {
                        // Unread, not absent: the tag is still this rule's,
                        // and no other rule may move it meanwhile.
                        let reason = format!("source {src} could not be read");
                        cx.claim_unread(&rule, &r.tag.repo, &tag, src.to_string(), reason);
                    }
                    return;
                }
            },
            Some(Reference::Digest(d)) => {
                // An image a rule brings into that repo in this plan is
                // there for this retag too (read where that rule reads it).
                let brought = cx
                    .intents
                    .iter()
                    .find(|i| i.target == src.repo && &i.digest == d && !i.tag.is_referrer_tag())
                    .map(|i| (i.source.clone(), i.tag.clone()));
                if let Some((from, t)) = brought {
                    (
                        d.clone(),
                        from,
                        format!("pinned to {src}"),
                        Some((src.repo.clone(), t)),
                    )
                } else {
                    let known_tagged = matches!(cx.repo(&src.repo), RepoView::Known(s) if s.tags.values().any(|x| x == d));
                    // Already where it is pinned: nothing to read, and a
                    // source deleted since does not make it wrong.
                    let in_place = matches!(cx.repo(&r.tag.repo), RepoView::Known(s) if s.tags.get(&tag) == Some(d));
                    let exists = in_place
                        || known_tagged
                        || matches!(cx.image(&src.repo, d), Some(crate::observe::Fact::Known(_)));
                    if !exists {
                        let unread = match (cx.repo(&src.repo), cx.image(&src.repo, d)) {
                            (RepoView::Unknown, _) => Some(String::new()),
                            (_, Some(crate::observe::Fact::Unknown { reason })) => {
                                Some(format!(": {reason}"))
                            }
                            _ => None,
                        };
                        match unread {
                            Some(why) => {
                                let reason = format!("source {src} could not be read{why}");
                                cx.claim_unread(&rule, &r.tag.repo, &tag, src.to_string(), reason);
                            }
                            None if !cx.collect_needed => {
                                cx.block(&rule, subject, format!("source {src} does not exist"));
                            }
                            None => {}
                        }
                        return;
                    }
                    (
                        d.clone(),
                        src.repo.clone(),
                        format!("pinned to {src}"),
                        None,
                    )
                }
            }
            None => return,
        },
        RetagSource::Newest { repo, tags } => {
            // The newest tag cannot be told: the tag is still this rule's.
            let hold = |cx: &mut PlanCx<'_>, reason: String| {
                cx.claim_unread(
                    &rule,
                    &r.tag.repo,
                    &tag,
                    format!("newest of {repo}"),
                    reason,
                )
            };
            let Some(planned) = cx.planned_tags(repo, tags.semver.is_none()) else {
                hold(
                    cx,
                    format!("{repo}, where the newest tag is looked for, could not be read"),
                );
                return;
            };
            // The retagged tag itself (e.g. `latest`) is not a candidate for its own newest.
            let candidates: Vec<(&Tag, _)> = planned
                .iter()
                .filter(|(t, _)| !(repo == &r.tag.repo && *t == tag))
                .map(|(t, c)| (t, *c))
                .collect();
            if tags.semver.is_none() {
                let matching = candidates
                    .iter()
                    .map(|(t, _)| *t)
                    .filter(|t| tags.matches(t));
                if let Some((t, why)) = cx.unread_created(repo, 1, matching) {
                    hold(
                        cx,
                        format!(
                            "the creation time of {repo}:{t} could not be read ({why}), so the \
                             newest tag is unknown"
                        ),
                    );
                    return;
                }
            }
            let Some(best) = tags.select(candidates).into_iter().next() else {
                if !cx.collect_needed {
                    cx.block(
                        &rule,
                        subject,
                        format!("no tag of {repo} matches the selector"),
                    );
                }
                return;
            };
            match cx.planned(repo, &best) {
                Some((d, from)) => (
                    d,
                    from,
                    format!("newest of {repo}: {best}"),
                    Some((repo.clone(), best.clone())),
                ),
                None if cx.in_conflict(repo, &best) => {
                    let reason = format!("newest of {repo} is {best}, which is itself in conflict");
                    cx.claim(&rule, &r.tag.repo, &tag, format!("{repo}:{best}"), reason);
                    return;
                }
                None => return,
            }
        }
    };
    // An earlier rule's platform-filtered index exists nowhere yet: it is
    // made here the same way, from the full index at the source.
    let (source_digest, only_platforms) = match at
        .as_ref()
        .and_then(|(repo, t)| cx.planned_filter(repo, t, &digest))
    {
        Some((full, kept)) => (Some(full), Some(kept)),
        None => (None, None),
    };
    let current = match cx.repo(&r.tag.repo) {
        RepoView::Known(s) => s.tags.get(&tag).cloned(),
        RepoView::Unknown => None,
    };
    if cx.collect_needed && current.as_ref() != Some(&digest) {
        let _ = cx.image(&source, source_digest.as_ref().unwrap_or(&digest));
    }
    let after = at.as_ref().and_then(|(repo, t)| cx.depends_on(repo, t));
    cx.bring(
        Intent {
            target: r.tag.repo.clone(),
            tag,
            digest,
            source,
            rule,
            reason,
            may_move: true,
            // Referrers name the full index, not a filtered one.
            with_referrers: source_digest.is_none(),
            only_platforms,
            is_retag: true,
            source_digest,
            after,
        },
        checker,
    );
}
