//! `promotions:` — copy FROM to TO once `require` holds; never move a TO tag
//! unless `overwrite: true`.

use std::collections::{BTreeMap, BTreeSet};

/// How far ahead of this machine's clock a scan report's time may be and
/// still count as "now" (clock skew between the scanner and here).
const FUTURE_SKEW: i64 = 3600;

use super::intent::{age, Intent, PlanCx, RepoView};
use super::policy::Checker;
use crate::config::{Promotion, Severity, VulnGate};
use crate::model::{Digest, Duration, RepoAddr};
use crate::observe::{Fact, ImageInfo};
use crate::scan::{severity_name, Report};

/// How a `min_age` failure starts (the one that passes with time).
const TOO_YOUNG: &str = "too young:";

/// How many vulnerability IDs a blocked reason names before "and N more".
const NAMED_IDS: usize = 3;

pub fn plan(p: &Promotion, cx: &mut PlanCx<'_>, checker: Option<&Checker<'_>>) {
    let RepoView::Known(src) = cx.repo(&p.from) else {
        // Reported as unobserved; what it promoted before stays meanwhile.
        let why = format!("the source {} of {} could not be read", p.from, p.name);
        cx.hold_target(&p.name, &p.to, why);
        return;
    };
    // What earlier rules bring into FROM in this plan counts too: with
    // `dev → staging → prod`, one apply promotes all the way, and the next
    // plan has nothing left to do.
    let fed = cx.fed(&p.from);
    if src.missing && !fed {
        // As for mirrors: a mistyped `from` must not read as "nothing to promote".
        cx.block(
            &p.name,
            p.from.to_string(),
            "the source repo does not exist: nothing is promoted (is `from` right?)",
        );
        return;
    }
    let target_state = match cx.repo(&p.to) {
        RepoView::Known(s) => Some(s),
        RepoView::Unknown => None,
    };
    let planned = if fed {
        cx.planned_tags(&p.from, p.tags.needs_created())
            .unwrap_or_default()
    } else {
        cx.tags_with_created(&p.from, src)
            .into_iter()
            .map(|(t, c)| (t.clone(), c))
            .collect()
    };
    if cx.wait_for_created(&p.name, (&p.from, &p.to), &p.tags, &planned) {
        return;
    }
    let selected = p.tags.select(planned.iter().map(|(t, c)| (t, *c)));
    for tag in selected {
        // `origin` is where the image is now: FROM, or where an earlier
        // rule copies it from. Gates read it there and the copy comes from
        // there, so it does not wait on the earlier copy.
        let Some((digest, origin)) = cx.planned(&p.from, &tag) else {
            if cx.in_conflict(&p.from, &tag) {
                // Still wants the tag: any other rule on it must not win.
                let reason = format!("{}:{tag} is itself in conflict", p.from);
                cx.claim(&p.name, &p.to, &tag, format!("{}:{tag}", p.from), reason);
            }
            continue;
        };
        let has = |r: &RepoAddr, cx: &PlanCx<'_>| matches!(cx.repo(r), RepoView::Known(o) if o.tags.values().any(|d| *d == digest));
        let subject = format!("{}:{tag}", p.from);
        let origin = if origin == p.from || has(&origin, cx) {
            origin
        } else if has(&p.from, cx) {
            // A platform-filtered mirror's copy that has landed: read it where it is.
            p.from.clone()
        } else {
            // A filtered mirror's new index exists nowhere yet: promoted
            // once it has landed, on the next run.
            if !cx.collect_needed {
                cx.block_to(
                    &p.name,
                    subject,
                    format!("{}:{tag}", p.to),
                    "its platform-filtered copy lands with this apply: promoted on the next run",
                );
            }
            continue;
        };
        // The source's referrers (and cosign's tags) go where the image goes.
        let follow = |cx: &mut PlanCx<'_>| {
            let to = (&origin, &p.from, &p.to);
            super::referrers::follow(cx, &p.name, to, (&tag, &digest), &subject, None);
        };
        // Already promoted: nothing to check; referrers attached since follow.
        if target_state.and_then(|t| t.tags.get(&tag)) == Some(&digest) {
            follow(cx);
            cx.in_place.push(super::intent::InPlace {
                target: p.to.clone(),
                tag: tag.clone(),
                source: p.from.clone(),
                digest: digest.clone(),
                rule: p.name.clone(),
            });
            continue;
        }
        let failed = unmet(p, &origin, &digest, cx, checker);
        if failed.len() == 1 && failed[0].starts_with(TOO_YOUNG) {
            cx.soaking
                .push((origin.clone(), digest.clone(), p.name.clone()));
        }
        if !failed.is_empty() {
            if !cx.collect_needed {
                cx.block_to(
                    &p.name,
                    subject,
                    format!("{}:{tag}", p.to),
                    failed.join("; "),
                );
            }
            continue;
        }
        // cosign's signature tags come in the same apply.
        follow(cx);
        let after = cx.depends_on(&p.from, &tag);
        cx.bring(
            Intent {
                target: p.to.clone(),
                tag: tag.clone(),
                digest: digest.clone(),
                source: origin,
                rule: p.name.clone(),
                reason: format!("promotion of {subject}"),
                may_move: p.overwrite,
                with_referrers: true,
                only_platforms: None,
                is_retag: false,
                source_digest: None,
                after,
            },
            checker,
        );
    }
}

/// Every requirement that does not hold, each as a reason for the plan, in
/// the order of the `require` keys (then policy violations under `enforce`).
fn unmet(
    p: &Promotion,
    origin: &RepoAddr,
    digest: &Digest,
    cx: &mut PlanCx<'_>,
    checker: Option<&Checker<'_>>,
) -> Vec<String> {
    let req = &p.require;
    let enforce = checker.filter(|c| c.enforces());
    let info = match cx.image(origin, digest) {
        Some(Fact::Known(i)) => Some(i),
        Some(Fact::Unknown { reason }) => {
            return vec![format!("image details could not be read: {reason}")]
        }
        None => None,
    };
    if req.min_age.is_none()
        && req.referrers.is_empty()
        && req.vulnerabilities.is_none()
        && enforce.is_none()
    {
        return Vec::new();
    }
    let Some(info) = info else {
        return vec!["image details were not read".into()];
    };
    let mut failed = Vec::new();
    if let Some(min) = req.min_age {
        match info.created {
            None => failed.push(
                "creation time unknown (no config `created`, or a reproducible build's placeholder before 2013): min_age cannot be checked".into(),
            ),
            // A clock ahead at build time: its age is not known to be any.
            Some(c) if c.0 > cx.now.0 => failed.push(format!(
                "{TOO_YOUNG} created {} in the future (the builder's clock?), min_age {}",
                Duration::human(c.0 - cx.now.0),
                Duration::human(min.secs())
            )),
            Some(c) if cx.now.0 - c.0 < min.secs() => failed.push(format!(
                "{TOO_YOUNG} created {} ago, min_age {}",
                age(cx.now, c),
                Duration::human(min.secs())
            )),
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
        failed.push(format!(
            "missing referrer{}: {}",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", ")
        ));
    }
    if let Some(gate) = &req.vulnerabilities {
        if cx.collect_needed {
            for r in report_referrers(gate, info) {
                cx.needed_reports.insert((origin.clone(), r.clone()));
            }
        }
        failed.extend(vulnerabilities(gate, origin, info, cx));
    }
    if let Some(c) = enforce {
        for v in c.image(info, cx.now) {
            failed.push(format!("policy {}: {}", v.policy, v.message));
        }
    }
    failed
}

/// The candidate's referrers whose artifact type the gate reads as reports.
fn report_referrers<'i>(gate: &VulnGate, info: &'i ImageInfo) -> Vec<&'i Digest> {
    let types = gate.report_types();
    info.referrers
        .iter()
        .filter(|r| types.contains(&r.artifact_type.as_str()))
        .map(|r| &r.digest)
        .collect()
}

/// `require.vulnerabilities`: enough fresh, readable reports from distinct
/// scanners, and no finding above `max_severity` in any of them.
fn vulnerabilities(
    gate: &VulnGate,
    repo: &RepoAddr,
    info: &ImageInfo,
    cx: &PlanCx<'_>,
) -> Vec<String> {
    let referrers = report_referrers(gate, info);
    let need = gate
        .scanners
        .unwrap_or(crate::config::VulnGate::DEFAULT_SCANNERS)
        .max(1) as usize;
    if referrers.is_empty() {
        return vec!["no scan report".into()];
    }
    let mut problems: Vec<String> = Vec::new();
    let mut usable: Vec<&Report> = Vec::new();
    for d in &referrers {
        match cx.observed.reports.get(&(repo.clone(), (*d).clone())) {
            // Not read yet (observe's first passes): judged once it is.
            None => problems.push(format!("scan report {} was not read", d.short())),
            Some(Fact::Unknown { reason }) => {
                problems.push(format!("scan report unreadable: {reason}"))
            }
            Some(Fact::Known(reports)) => {
                for r in reports {
                    match (gate.max_report_age, r.created) {
                        (None, _) => usable.push(r),
                        (Some(_), None) => problems.push(format!(
                            "scan report from {} has no time: max_report_age cannot be checked",
                            r.tool
                        )),
                        // Dated ahead of this clock by more than skew
                        // explains: not a fresh report, an unknown age.
                        (Some(_), Some(c)) if c.0 - cx.now.0 > FUTURE_SKEW => {
                            problems.push(format!(
                                "scan report from {} is dated {} ahead of now: max_report_age cannot be checked",
                                r.tool,
                                age(c, cx.now)
                            ))
                        }
                        (Some(max), Some(c)) if cx.now.0 - c.0 > max.secs() => {
                            problems.push(format!(
                                "scan report from {} is too old: {} old, max_report_age {}",
                                r.tool,
                                age(cx.now, c),
                                Duration::human(max.secs())
                            ))
                        }
                        (Some(_), Some(_)) => usable.push(r),
                    }
                }
            }
        }
    }
    let mut failed = Vec::new();
    let tools: BTreeSet<&str> = usable.iter().map(|r| r.tool.as_str()).collect();
    if tools.len() < need {
        // The reasons the unusable reports did not count say more than a count.
        failed.append(&mut problems);
        if need > 1 || failed.is_empty() {
            failed.push(format!(
                "scan reports from {} scanner{}{}, scanners: {need} required",
                tools.len(),
                if tools.len() == 1 { "" } else { "s" },
                if tools.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({})",
                        tools.iter().copied().collect::<Vec<_>>().join(", ")
                    )
                }
            ));
        }
    }
    if let Some(f) = findings_above(gate, &usable) {
        failed.push(f);
    }
    failed
}

/// The worst findings above `max_severity` across the usable reports, named
/// by ID and tool: `critical vulnerability CVE-2026-1234 (trivy)`. A finding
/// of unknown severity counts as critical.
fn findings_above(gate: &VulnGate, reports: &[&Report]) -> Option<String> {
    let drop_unfixed = gate.ignore_unfixed == Some(true);
    // id -> (severity, tools)
    let mut over: BTreeMap<&str, (Severity, BTreeSet<&str>, bool)> = BTreeMap::new();
    for r in reports {
        for f in &r.findings {
            if drop_unfixed && f.fixed == Some(false) {
                continue;
            }
            let sev = f.severity.unwrap_or(Severity::Critical);
            if sev <= gate.max_severity {
                continue;
            }
            let e =
                over.entry(f.id.as_str())
                    .or_insert((sev, BTreeSet::new(), f.severity.is_none()));
            if sev > e.0 {
                e.0 = sev;
                e.2 = f.severity.is_none();
            }
            e.1.insert(r.tool.as_str());
        }
    }
    let worst = over.values().map(|v| v.0).max()?;
    // Findings the tool rated come before those counted as critical for lack of a rating.
    let mut worst_ids: Vec<_> = over.iter().filter(|(_, v)| v.0 == worst).collect();
    worst_ids.sort_by_key(|(id, v)| (v.2, **id));
    let named: Vec<String> = worst_ids
        .into_iter()
        .map(|(id, (_, tools, unknown))| {
            let tools: Vec<&str> = tools.iter().copied().collect();
            format!(
                "{id} ({}{})",
                tools.join(", "),
                if *unknown { ", unknown severity" } else { "" }
            )
        })
        .collect();
    let mut s = format!(
        "{} vulnerabilit{} {}",
        severity_name(worst),
        if named.len() == 1 { "y" } else { "ies" },
        named
            .iter()
            .take(NAMED_IDS)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    if named.len() > NAMED_IDS {
        s.push_str(&format!(" and {} more", named.len() - NAMED_IDS));
    }
    let lower = over.len() - named.len();
    if lower > 0 {
        s.push_str(&format!(
            "; {lower} more above {}",
            severity_name(gate.max_severity)
        ));
    }
    Some(s)
}
