//! `hosts:` — what a Docker/Podman host must have (`images.present`), may
//! drop (`images.prune`) and may keep running (`containers.max_age`).

use super::intent::{age, PlanCx, RepoView};
use super::types::{Action, Change, Kept};
use crate::config::{Host, Policy};
use crate::host::address::Addresses;
use crate::model::{Duration, ImageRef};
use crate::observe::{Fact, HostImage, HostState};

/// The `rule` of host changes: `host:NAME`.
pub fn rule_name(host: &str) -> String {
    format!("host:{host}")
}

/// `host:NAME/what`.
fn target(host: &str, what: &str) -> String {
    format!("host:{host}/{what}")
}

pub fn plan(desired: &Policy, cx: &mut PlanCx<'_>, out: &mut Vec<Change>, kept: &mut Vec<Kept>) {
    let addrs = Addresses::from_policy(desired);
    for (name, host) in &desired.hosts {
        let Some(Fact::Known(state)) = cx.observed.hosts.get(name) else {
            // Unobserved (listed as such by the caller): no changes there.
            continue;
        };
        present(name, host, state, &addrs, cx, out);
        prune(name, host, state, &addrs, cx, out, kept);
        max_age(name, host, state, &addrs, cx, out);
    }
    enforce(desired, cx, out);
}

/// `on_violation: enforce`: running containers that break `policies` are
/// stopped (once, even when a `max_age` of the host also stops them).
fn enforce(desired: &Policy, cx: &PlanCx<'_>, out: &mut Vec<Change>) {
    let enforcing = desired
        .policies
        .as_ref()
        .is_some_and(|p| p.on_violation == crate::config::OnViolation::Enforce);
    if !enforcing {
        return;
    }
    for v in super::policy::host_violations(desired, cx.observed, cx.now) {
        let Some(c) = v.container else { continue };
        let t = target(&v.host, &format!("container/{}", c.name));
        if out
            .iter()
            .any(|x| x.action == Action::StopContainer && x.target == t)
        {
            continue;
        }
        out.push(Change {
            target: t,
            source: Some(c.image.clone()),
            digest: Some(c.image_id.clone()),
            expect: c.id.clone(),
            rule: format!("policies.{}", v.violation.policy),
            reason: format!("on_violation: enforce: {}", v.violation.message),
            ..Change::new(Action::StopContainer)
        });
    }
}

/// Pulls what `present` names when the host lacks it or has another digest
/// under the tag. The pull is by digest, so apply fetches exactly what was planned.
fn present(
    name: &str,
    host: &Host,
    state: &HostState,
    addrs: &Addresses,
    cx: &mut PlanCx<'_>,
    out: &mut Vec<Change>,
) {
    let rule = rule_name(name);
    for want in &host.images.present {
        let Some(tag) = want.tag() else { continue };
        let subject = target(name, &want.to_string());
        let Some(engine_repo) = addrs.engine_repo(&want.repo) else {
            cx.block(
                &rule,
                subject,
                format!(
                    "registry `{}` is an OCI layout: hosts cannot pull from it",
                    want.repo.registry
                ),
            );
            continue;
        };
        let digest = match cx.planned(&want.repo, tag) {
            Some((d, _)) => d,
            None => {
                let why = match cx.repo(&want.repo) {
                    RepoView::Unknown => format!("{} could not be read", want.repo),
                    RepoView::Known(s) if s.tags.contains_key(tag) => {
                        "rules disagree on where the tag will point".to_string()
                    }
                    RepoView::Known(_) => format!("{want} does not exist in the registry"),
                };
                cx.block(&rule, subject, why);
                continue;
            }
        };
        let engine_tag = format!("{engine_repo}:{tag}");
        let engine_digest = format!("{engine_repo}@{digest}");
        let local = state.images.iter().find(|i| i.tags.contains(&engine_tag));
        if local.is_some_and(|i| i.repo_digests.contains(&engine_digest)) {
            continue;
        }
        let reason = match local {
            None => "missing on the host".to_string(),
            Some(i) => format!("the tag moved: the host has image {}", short_id(&i.id)),
        };
        out.push(Change {
            target: subject,
            source: Some(ImageRef::digested(want.repo.clone(), digest.clone()).to_string()),
            digest: Some(digest.to_string()),
            expect: local
                .map(|i| i.id.clone())
                .unwrap_or_else(|| "absent".into()),
            rule: rule.clone(),
            reason,
            ..Change::new(Action::Pull)
        });
    }
}

/// The policy addresses of an image's names, else the names themselves.
fn addresses(img: &HostImage, addrs: &Addresses) -> Vec<String> {
    img.tags
        .iter()
        .map(|t| {
            addrs
                .from_engine(t)
                .map(|a| a.to_string())
                .unwrap_or_else(|| t.clone())
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn prune(
    name: &str,
    host: &Host,
    state: &HostState,
    addrs: &Addresses,
    cx: &PlanCx<'_>,
    out: &mut Vec<Change>,
    kept: &mut Vec<Kept>,
) {
    let Some(rules) = &host.images.prune else {
        return;
    };
    let rule = rule_name(name);
    let keep: Vec<globset::GlobMatcher> = rules
        .keep
        .iter()
        .filter_map(|g| globset::Glob::new(g).ok().map(|g| g.compile_matcher()))
        .collect();
    for img in &state.images {
        let names = addresses(img, addrs);
        let label = names.first().cloned().unwrap_or_else(|| short_id(&img.id));
        let Some(created) = img.created else {
            // Unknown age is never old.
            continue;
        };
        if let Some(o) = rules.older_than {
            if cx.now.0 - created.0 <= o.0 as i64 {
                continue;
            }
        }
        let mut keep_reason = None;
        if let Some(c) = state.users(img).next() {
            keep_reason = Some(format!(
                "used by container {}{}",
                c.name,
                if c.running { " (running)" } else { "" }
            ));
        } else if let Some(p) = host.images.present.iter().find(|p| is_named(img, p, addrs)) {
            keep_reason = Some(format!("listed in present ({p})"));
        } else if let Some(n) = names.iter().find(|n| {
            keep.iter()
                .any(|g| g.is_match(n.as_str()) || g.is_match(repo_part(n)))
        }) {
            keep_reason = Some(format!("keep matches {n}"));
        }
        if let Some(reason) = keep_reason {
            kept.push(Kept {
                rule: rule.clone(),
                subject: target(name, &label),
                reason,
            });
            continue;
        }
        let age_text = format!("created {} ago", age(cx.now, created));
        out.push(Change {
            target: target(name, &label),
            digest: Some(img.id.clone()),
            expect: img.id.clone(),
            rule: rule.clone(),
            reason: match rules.older_than {
                Some(o) => format!(
                    "unused, {age_text} (older_than {})",
                    Duration::human(o.0 as i64)
                ),
                None => format!("unused, {age_text}"),
            },
            size: Some(img.size),
            also_tags: img.tags.clone(),
            ..Change::new(Action::RemoveImage)
        });
    }
}

/// Whether the image carries `present`'s tag (under the engine's name for it).
fn is_named(img: &HostImage, p: &ImageRef, addrs: &Addresses) -> bool {
    addrs.to_engine(p).is_some_and(|n| img.tags.contains(&n))
}

/// `reg/repo` of `reg/repo:tag` (a colon after the last slash is a tag).
fn repo_part(n: &str) -> &str {
    let last_slash = n.rfind('/').map(|i| i + 1).unwrap_or(0);
    match n[last_slash..].rfind(':') {
        Some(i) => &n[..last_slash + i],
        None => n,
    }
}

fn max_age(
    name: &str,
    host: &Host,
    state: &HostState,
    addrs: &Addresses,
    cx: &PlanCx<'_>,
    out: &mut Vec<Change>,
) {
    let Some(max) = host.containers.max_age else {
        return;
    };
    for c in state.containers.iter().filter(|c| c.running) {
        let Some(started) = c.started else { continue };
        if cx.now.0 - started.0 <= max.0 as i64 {
            continue;
        }
        let image = addrs
            .from_engine(&c.image)
            .map(|a| a.to_string())
            .unwrap_or_else(|| c.image.clone());
        out.push(Change {
            target: target(name, &format!("container/{}", c.name)),
            source: Some(image.clone()),
            digest: Some(c.image_id.clone()),
            expect: c.id.clone(),
            rule: rule_name(name),
            reason: format!(
                "running {} on {image} (max_age {})",
                age(cx.now, started),
                Duration::human(max.0 as i64)
            ),
            ..Change::new(Action::StopContainer)
        });
    }
}

fn short_id(id: &str) -> String {
    let hex = id.trim_start_matches("sha256:");
    hex.get(..12).unwrap_or(hex).to_string()
}
