//! `retags:` — a tag must point where stated: at a pinned image, or at the
//! newest tag matching a selector.

use super::intent::{Intent, PlanCx, RepoView};

use crate::config::{Retag, RetagSource};
use crate::model::{Reference, Tag};

pub fn plan(r: &Retag, cx: &mut PlanCx<'_>) {
    let rule = r.rule_name();
    let Some(tag) = r.tag.tag().cloned() else {
        return;
    };
    let subject = r.tag.to_string();
    let (digest, source, reason) = match &r.source {
        RetagSource::From(src) => match &src.reference {
            Some(Reference::Tag(t)) => match cx.planned(&src.repo, t) {
                Some((d, from)) => (d, from, format!("pinned to {src}")),
                None if cx.in_conflict(&src.repo, t) => {
                    // Still wants the tag: any other rule on it must not win.
                    let reason = format!("source {src} is itself in conflict");
                    cx.claim(&rule, &r.tag.repo, &tag, src.to_string(), reason);
                    return;
                }
                None => {
                    if matches!(cx.repo(&src.repo), RepoView::Known(_)) && !cx.collect_needed {
                        cx.block(&rule, subject, format!("source {src} does not exist"));
                    }
                    return;
                }
            },
            Some(Reference::Digest(d)) => {
                let known_tagged = matches!(cx.repo(&src.repo), RepoView::Known(s) if s.tags.values().any(|x| x == d));
                let exists = known_tagged
                    || matches!(cx.image(&src.repo, d), Some(crate::observe::Fact::Known(_)));
                if !exists {
                    if !cx.collect_needed && matches!(cx.repo(&src.repo), RepoView::Known(_)) {
                        cx.block(&rule, subject, format!("source {src} does not exist"));
                    }
                    return;
                }
                (d.clone(), src.repo.clone(), format!("pinned to {}", src))
            }
            None => return,
        },
        RetagSource::Newest { repo, tags } => {
            let Some(planned) = cx.planned_tags(repo) else {
                return;
            };
            // The retagged tag itself (e.g. `latest`) is not a candidate for its own newest.
            let candidates: Vec<(&Tag, _)> = planned
                .iter()
                .filter(|(t, _)| !(repo == &r.tag.repo && *t == tag))
                .map(|(t, c)| (t, *c))
                .collect();
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
                Some((d, from)) => (d, from, format!("newest of {repo}: {best}")),
                None if cx.in_conflict(repo, &best) => {
                    let reason = format!("newest of {repo} is {best}, which is itself in conflict");
                    cx.claim(&rule, &r.tag.repo, &tag, format!("{repo}:{best}"), reason);
                    return;
                }
                None => return,
            }
        }
    };
    let current = match cx.repo(&r.tag.repo) {
        RepoView::Known(s) => s.tags.get(&tag).cloned(),
        RepoView::Unknown => None,
    };
    if cx.collect_needed && current.as_ref() != Some(&digest) {
        let _ = cx.image(&source, &digest);
    }
    cx.intents.push(Intent {
        target: r.tag.repo.clone(),
        tag,
        digest,
        source,
        rule,
        reason,
        may_move: true,
        with_referrers: true,
        only_platforms: None,
        is_retag: true,
        source_digest: None,
    });
}
