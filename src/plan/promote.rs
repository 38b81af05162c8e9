//! `promotions:` — copy FROM to TO once `require` holds; never move a TO tag
//! unless `overwrite: true`.

use super::intent::{age, Intent, PlanCx, RepoView};
use crate::config::Promotion;
use crate::model::{Duration, Tag};
use crate::observe::Fact;

pub fn plan(p: &Promotion, cx: &mut PlanCx<'_>) {
    let RepoView::Known(src) = cx.repo(&p.from) else {
        return;
    };
    let target_state = match cx.repo(&p.to) {
        RepoView::Known(s) => Some(s),
        RepoView::Unknown => None,
    };
    let candidates = cx.tags_with_created(&p.from, src);
    for tag in p.tags.select(candidates) {
        let Some(digest) = src.tags.get(&tag) else {
            continue;
        };
        // Already promoted: nothing to check.
        if target_state.and_then(|t| t.tags.get(&tag)) == Some(digest) {
            continue;
        }
        let subject = format!("{}:{tag}", p.from);
        if let Some(reason) = unmet(p, &tag, digest, cx) {
            if !cx.collect_needed {
                cx.block(&p.name, subject, reason);
            }
            continue;
        }
        cx.intents.push(Intent {
            target: p.to.clone(),
            tag: tag.clone(),
            digest: digest.clone(),
            source: p.from.clone(),
            rule: p.name.clone(),
            reason: format!("promotion of {subject}"),
            may_move: p.overwrite,
            with_referrers: true,
            only_platforms: None,
            is_retag: false,
            source_digest: None,
        });
    }
}

/// The first requirement that does not hold, as a reason for the plan.
fn unmet(
    p: &Promotion,
    _tag: &Tag,
    digest: &crate::model::Digest,
    cx: &mut PlanCx<'_>,
) -> Option<String> {
    let req = &p.require;
    let info = match cx.image(&p.from, digest) {
        Some(Fact::Known(i)) => Some(i),
        Some(Fact::Unknown { reason }) => {
            return Some(format!("image details could not be read: {reason}"))
        }
        None => None,
    };
    if req.min_age.is_none() && req.referrers.is_empty() && req.vulnerabilities.is_none() {
        return None;
    }
    let Some(info) = info else {
        return Some("image details were not read".into());
    };
    if let Some(min) = req.min_age {
        match info.created {
            None => {
                return Some(
                    "creation time unknown (no config `created`): min_age cannot be checked".into(),
                )
            }
            Some(c) if cx.now.0 - c.0 < min.0 as i64 => {
                return Some(format!(
                    "too young: created {} ago, min_age {}",
                    age(cx.now, c),
                    Duration::human(min.0 as i64)
                ))
            }
            Some(_) => {}
        }
    }
    let missing: Vec<&str> = req
        .referrers
        .iter()
        .filter(|t| !info.referrers.iter().any(|r| &r.artifact_type == *t))
        .map(|s| s.as_str())
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "missing referrer{}: {}",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", ")
        ));
    }
    if req.vulnerabilities.is_some() {
        // Scan-report gates are not evaluated by this version: refusing is the safe reading.
        return Some("require.vulnerabilities is not evaluated by this version of regimen; nothing is promoted under it".into());
    }
    None
}
