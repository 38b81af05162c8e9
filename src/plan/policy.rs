//! `policies:` on the registry side: `base_images` and `max_age` for every
//! tag in the *managed* repos, `registries` for hosts' `present` images.
//!
//! Managed repos are the ones regimen writes to or promotes from: mirror
//! targets, promotion sources and targets, retag targets and sources, and
//! retention repos. A mirror's source is upstream (not ours to govern); its
//! copy in the target is checked instead. On hosts: `registries` judges what
//! running containers run, `max_age` every image in the engine's store.

use std::collections::{BTreeMap, BTreeSet};

use super::intent::age;
use super::types::Violation;
use crate::config::{Desired, OnViolation, Policies, RetagSource};
use crate::model::{Duration, ImageRef, RepoAddr, Timestamp};
use crate::observe::{Fact, HostContainer, HostState, ImageInfo, Observed, BASE_NAME};

/// One broken rule of one image, before it has a subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageViolation {
    pub policy: &'static str,
    pub kind: Option<&'static str>,
    pub message: String,
}

/// The compiled `policies:` section.
pub struct Checker<'d> {
    policies: &'d Policies,
    base_globs: Vec<(String, globset::GlobMatcher)>,
    /// The policy's registries by host and port, to read a base image's
    /// real address as `NAME/REPO` (`host:443` is `https://host`).
    addrs: crate::host::address::Addresses,
}

impl<'d> Checker<'d> {
    pub fn new(desired: &'d Desired) -> Option<Checker<'d>> {
        let policies = desired.policies.as_ref()?;
        let base_globs = policies
            .base_images
            .iter()
            .flatten()
            .filter_map(|g| {
                // Validated when the policy was loaded; a bad one matches nothing.
                let m = globset::Glob::new(g).ok()?.compile_matcher();
                Some((g.clone(), m))
            })
            .collect();
        Some(Checker {
            policies,
            base_globs,
            addrs: crate::host::address::Addresses::from_policy(desired),
        })
    }

    pub fn enforces(&self) -> bool {
        self.policies.on_violation == OnViolation::Enforce
    }

    /// Whether image details are needed at all.
    pub fn judges_images(&self) -> bool {
        self.policies.base_images.is_some() || self.policies.max_age.is_some()
    }

    /// Whether `max_age` judges images: one whose creation time is unknown
    /// is then not judged, which is not clean.
    pub fn judges_age(&self) -> bool {
        self.policies.max_age.is_some()
    }

    /// What `base_images` and `max_age` say about one image.
    pub fn image(&self, info: &ImageInfo, now: Timestamp) -> Vec<ImageViolation> {
        let mut out = Vec::new();
        if let Some(allowed) = &self.policies.base_images {
            match &info.base_name {
                None => out.push(ImageViolation {
                    policy: "base_images",
                    kind: Some("missing"),
                    message: format!("no base image annotation ({BASE_NAME})"),
                }),
                Some(b) if !self.base_allowed(b) => out.push(ImageViolation {
                    policy: "base_images",
                    kind: Some("not_allowed"),
                    message: format!(
                        "base image {b} matches none of base_images ({})",
                        allowed.join(", ")
                    ),
                }),
                Some(_) => {}
            }
        }
        if let (Some(max), Some(c)) = (self.policies.max_age, info.created) {
            if now.0 - c.0 > max.secs() {
                out.push(ImageViolation {
                    policy: "max_age",
                    kind: None,
                    message: format!(
                        "created {} ago, max_age {}",
                        age(now, c),
                        Duration::human(max.secs())
                    ),
                });
            }
        }
        out
    }

    /// A base name matches when a glob matches it as written, or as a
    /// `NAME/REPO[:TAG]` address of a policy registry, with or without its
    /// tag or digest.
    fn base_allowed(&self, base: &str) -> bool {
        let mut forms = vec![base.to_string()];
        // `repo:tag@digest` is tried with its digest and with its tag.
        let tagged = base
            .split_once('@')
            .filter(|(n, _)| n.rsplit('/').next().is_some_and(|last| last.contains(':')));
        for name in std::iter::once(base).chain(tagged.map(|(n, _)| n)) {
            forms.extend(
                self.addrs
                    .from_engine_all(name)
                    .iter()
                    .map(|r| r.to_string()),
            );
        }
        // And whole, as written: `REGISTRY/repo:tag@digest`.
        if let Some((name, digest)) = tagged {
            forms.extend(
                self.addrs
                    .from_engine_all(name)
                    .iter()
                    .map(|r| format!("{r}@{digest}")),
            );
        }
        let bare: Vec<String> = forms.iter().map(|f| strip_reference(f)).collect();
        forms.extend(bare);
        self.base_globs
            .iter()
            .any(|(_, g)| forms.iter().any(|f| g.is_match(f)))
    }
}

/// `reg/repo:tag` or `reg/repo@sha256:…` → `reg/repo`.
fn strip_reference(s: &str) -> String {
    let s = s.split_once('@').map(|(a, _)| a).unwrap_or(s);
    match s.rfind(':') {
        Some(i) if !s[i..].contains('/') => s[..i].to_string(),
        _ => s.to_string(),
    }
}

/// The repos whose images `policies` judges (see the module comment).
pub fn managed_repos(desired: &Desired, observed: &Observed) -> BTreeSet<RepoAddr> {
    let mut repos = BTreeSet::new();
    for m in &desired.mirrors {
        repos.insert(m.to.clone());
    }
    for p in &desired.promotions {
        repos.insert(p.from.clone());
        repos.insert(p.to.clone());
    }
    for r in &desired.retags {
        repos.insert(r.tag.repo.clone());
        match &r.source {
            RetagSource::From(src) => repos.insert(src.repo.clone()),
            RetagSource::Newest { repo, .. } => repos.insert(repo.clone()),
        };
    }
    for r in &desired.retention {
        repos.extend(super::retention::rule_repos(r, observed).0);
    }
    repos
}

/// Every violation of `policies` the observed state shows and `changes`
/// leave in place, sorted. A tag the plan deletes, untags or points
/// elsewhere, or a host image it removes, is no violation after the apply
/// (what a tag gets instead is judged as it comes in), so `on_violation:
/// fail` does not fail the run that cleans it up.
pub fn violations(
    desired: &Desired,
    observed: &Observed,
    now: Timestamp,
    changes: &[super::types::Change],
) -> (Vec<Violation>, Vec<super::types::Resolved>) {
    use super::types::{Action, Resolved};
    let Some(checker) = Checker::new(desired) else {
        return (Vec::new(), Vec::new());
    };
    // Each tag a change copies, retags, untags or deletes → that change.
    let mut changed: BTreeMap<String, &str> = BTreeMap::new();
    for c in changes.iter().filter(|c| {
        matches!(
            c.action,
            Action::Copy | Action::Retag | Action::Untag | Action::Delete
        )
    }) {
        for t in c.targets() {
            changed.entry(t).or_insert(c.target.as_str());
        }
    }
    let removed = |host: &str, id: &Option<String>| -> Option<&str> {
        let prefix = format!("host:{host}/");
        changes
            .iter()
            .find(|c| {
                c.action == Action::RemoveImage
                    && c.target.starts_with(&prefix)
                    && matches!((&c.digest, id), (Some(d), Some(i)) if crate::observe::same_id(d, i))
            })
            .map(|c| c.target.as_str())
    };
    // A running container the plan stops (`containers.max_age`, or
    // `enforce` itself) no longer runs what it is judged for.
    let stopped: BTreeSet<&str> = changes
        .iter()
        .filter(|c| c.action == Action::StopContainer)
        .map(|c| c.target.as_str())
        .collect();
    let mut resolved = Vec::new();
    let mut out = Vec::new();
    if checker.judges_images() {
        for repo in managed_repos(desired, observed) {
            let Some(Fact::Known(state)) = observed.repos.get(&repo) else {
                continue;
            };
            for (tag, digest) in &state.tags {
                let subject = ImageRef::tagged(repo.clone(), tag.clone()).to_string();
                let by = changed.get(&subject);
                // Unknown details are listed as unobserved, never as clean.
                let Some(Fact::Known(info)) = observed.image(&repo, digest) else {
                    continue;
                };
                // An unfinished untag's placeholder is no image (retention removes it).
                if info.is_regimen_placeholder() {
                    continue;
                }
                for v in checker.image(info, now) {
                    let v = Violation {
                        policy: v.policy.to_string(),
                        kind: v.kind.map(str::to_string),
                        subject: subject.clone(),
                        message: v.message,
                    };
                    match by {
                        Some(by) => resolved.push(Resolved {
                            violation: v,
                            by: by.to_string(),
                        }),
                        None => out.push(v),
                    }
                }
            }
        }
    }
    if let Some(allowed) = &checker.policies.registries {
        for (host, h) in &desired.hosts {
            for img in &h.images.present {
                if !allowed.contains(&img.repo.registry) {
                    out.push(Violation {
                        policy: "registries".into(),
                        kind: None,
                        subject: format!("host:{host}/{img}"),
                        message: format!(
                            "registry `{}` is not one of policies.registries ({})",
                            img.repo.registry,
                            allowed
                                .iter()
                                .map(|r| r.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                }
            }
        }
    }
    for h in host_violations(desired, observed, now) {
        let by = match &h.container {
            Some(_) => stopped
                .contains(h.violation.subject.as_str())
                .then(|| h.violation.subject.clone()),
            None => removed(&h.host, &h.image_id).map(str::to_string),
        };
        match by {
            Some(by) => resolved.push(Resolved {
                violation: h.violation,
                by,
            }),
            None => out.push(h.violation),
        }
    }
    out.sort_by(|a, b| {
        (&a.policy, &a.subject, &a.message).cmp(&(&b.policy, &b.subject, &b.message))
    });
    out.dedup();
    (out, resolved)
}

/// The names a container's image goes by, for `registries`: its `Image` as
/// the engine shows it, or, when that is a bare image ID (a container
/// created by ID), the repo digests and tags of that image in the host's
/// store. `None` when it has none: where it came from is unknown.
fn container_names(c: &HostContainer, state: &HostState) -> Option<Vec<String>> {
    if !is_image_id(&c.image, &c.image_id) {
        return Some(vec![c.image.clone()]);
    }
    let img = state
        .images
        .iter()
        .find(|i| crate::observe::same_id(&i.id, &c.image_id))?;
    let names: Vec<String> = img.repo_digests.iter().chain(&img.tags).cloned().collect();
    (!names.is_empty()).then_some(names)
}

/// Whether a container's `Image` is its image's ID (full, `sha256:`-prefixed
/// or a short prefix of `image_id`) rather than a name. A 64-digit hex name
/// is always an ID: engines refuse it as a repository name.
fn is_image_id(image: &str, image_id: &str) -> bool {
    let hex = image.strip_prefix("sha256:").unwrap_or(image);
    let is_hex = hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    is_hex
        && (image.starts_with("sha256:")
            || hex.len() == 64
            || image_id.trim_start_matches("sha256:").starts_with(hex))
}

/// Running containers `registries` cannot judge: their image is known by
/// ID alone, with no name or repo digest in the host's store, so where it
/// came from is unknown. Reported as not judged, never a violation (which
/// `enforce` would stop).
pub fn unjudged_containers(desired: &Desired, observed: &Observed) -> Vec<(String, String)> {
    let judges = desired
        .policies
        .as_ref()
        .is_some_and(|p| p.registries.is_some());
    if !judges {
        return Vec::new();
    }
    let mut out = Vec::new();
    for name in desired.hosts.keys() {
        let Some(Fact::Known(state)) = observed.hosts.get(name) else {
            continue;
        };
        for c in state.containers.iter().filter(|c| c.running) {
            if container_names(c, state).is_none() {
                out.push((
                    format!("host:{name}/container/{}", c.name),
                    format!(
                        "runs image {}, which has no name or repo digest on the host: its registry is unknown, so policies.registries is not judged",
                        c.image
                    ),
                ));
            }
        }
    }
    out
}

/// A violation on a host, with the running container it concerns (which
/// `on_violation: enforce` stops).
pub struct HostViolation {
    pub violation: Violation,
    pub host: String,
    pub container: Option<crate::observe::HostContainer>,
    /// The engine image ID it concerns, where it concerns one (`inventory`).
    pub image_id: Option<String>,
}

/// `registries` for what running containers run, `max_age` for host images
/// (and the running containers that use them).
pub fn host_violations(
    desired: &Desired,
    observed: &Observed,
    now: Timestamp,
) -> Vec<HostViolation> {
    let Some(policies) = desired.policies.as_ref() else {
        return Vec::new();
    };
    let addrs = crate::host::address::Addresses::from_policy(desired);
    let mut out = Vec::new();
    for name in desired.hosts.keys() {
        let Some(Fact::Known(state)) = observed.hosts.get(name) else {
            continue;
        };
        if let Some(allowed) = &policies.registries {
            for c in state.containers.iter().filter(|c| c.running) {
                // No name at all: not judged (see `unjudged_containers`).
                let Some(names) = container_names(c, state) else {
                    continue;
                };
                let froms: Vec<_> = names.iter().filter_map(|n| addrs.from_engine(n)).collect();
                if froms.iter().any(|a| allowed.contains(&a.repo.registry)) {
                    continue;
                }
                let from = froms.into_iter().next();
                let list = allowed
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                let by_id = names.first() != Some(&c.image);
                out.push(HostViolation {
                    violation: Violation {
                        policy: "registries".into(),
                        kind: Some("container".into()),
                        subject: format!("host:{name}/container/{}", c.name),
                        message: match (&from, by_id) {
                            (Some(a), false) => format!(
                                "runs {a}: registry `{}` is not one of policies.registries ({list})",
                                a.repo.registry
                            ),
                            (Some(a), true) => format!(
                                "runs image {} ({a}): registry `{}` is not one of policies.registries ({list})",
                                c.image, a.repo.registry
                            ),
                            (None, false) => format!(
                                "runs {}, which is not from a policy registry ({list})",
                                c.image
                            ),
                            (None, true) => format!(
                                "runs image {} ({}), which is not from a policy registry ({list})",
                                c.image,
                                names.join(", ")
                            ),
                        },
                    },
                    host: name.clone(),
                    container: Some(c.clone()),
                    image_id: Some(c.image_id.clone()),
                });
            }
        }
        if let Some(max) = policies.max_age {
            for img in &state.images {
                let Some(created) = img.created else { continue };
                if now.0 - created.0 <= max.secs() {
                    continue;
                }
                let label = img
                    .tags
                    .first()
                    .map(|t| {
                        addrs
                            .from_engine(t)
                            .map(|a| a.to_string())
                            .unwrap_or(t.clone())
                    })
                    // As prune names an image without a name: its short ID.
                    .unwrap_or_else(|| super::hosts::short_id(&img.id));
                let message = format!(
                    "created {} ago, max_age {}",
                    age(now, created),
                    Duration::human(max.secs())
                );
                out.push(HostViolation {
                    violation: Violation {
                        policy: "max_age".into(),
                        kind: Some("host_image".into()),
                        subject: format!("host:{name}/{label}"),
                        message: message.clone(),
                    },
                    host: name.clone(),
                    container: None,
                    image_id: Some(img.id.clone()),
                });
                for c in state.users(img).filter(|c| c.running) {
                    out.push(HostViolation {
                        violation: Violation {
                            policy: "max_age".into(),
                            kind: Some("container".into()),
                            subject: format!("host:{name}/container/{}", c.name),
                            message: format!("runs {label}, {message}"),
                        },
                        host: name.clone(),
                        container: Some(c.clone()),
                        image_id: Some(img.id.clone()),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_names_map_to_registries_by_host_and_port() {
        let text = "registries:\n  mirror: {url: \"https://registry.example.com\"}\n  \
                    dev: {url: \"http://127.0.0.1:5000\"}\n\
                    policies:\n  base_images: [\"mirror/base/*\", \"dev/base/*\"]\n";
        let d = crate::config::load_texts(
            std::path::Path::new("/"),
            &[(std::sync::Arc::from("p.yaml"), text.to_string())],
        )
        .unwrap();
        let c = Checker::new(&d).unwrap();
        for ok in [
            "registry.example.com/base/debian:12",
            "registry.example.com:443/base/debian:12",
            "REGISTRY.example.com/base/debian:12",
            "127.0.0.1:5000/base/alpine:3.19",
            &format!("127.0.0.1:5000/base/alpine:3.19@sha256:{}", "a".repeat(64)),
        ] {
            assert!(c.base_allowed(ok), "{ok}");
        }
        for no in [
            "registry.example.com:8443/base/debian:12",
            "127.0.0.1/base/alpine:3.19",
            "docker.io/library/debian:12",
            &format!("127.0.0.1:5001/base/alpine:3.19@sha256:{}", "a".repeat(64)),
        ] {
            assert!(!c.base_allowed(no), "{no}");
        }
    }

    #[test]
    fn a_base_pattern_with_tag_and_digest_matches_as_written() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let text = format!(
            "registries:\n  dev: {{url: \"http://127.0.0.1:5000\"}}\n\
             policies:\n  base_images: [\"dev/base/alpine:3.19@{digest}\"]\n"
        );
        let d = crate::config::load_texts(
            std::path::Path::new("/"),
            &[(std::sync::Arc::from("p.yaml"), text)],
        )
        .unwrap();
        let c = Checker::new(&d).unwrap();
        assert!(c.base_allowed(&format!("127.0.0.1:5000/base/alpine:3.19@{digest}")));
        assert!(!c.base_allowed(&format!("127.0.0.1:5000/base/alpine:3.20@{digest}")));
    }

    #[test]
    fn a_regimen_placeholder_under_a_tag_is_not_judged_as_an_image() {
        let text = "registries:\n  prod: {url: \"http://127.0.0.1:1\"}\n\
                    retention:\n  - name: r\n    repos: [prod/a]\n    delete: {older_than: 3650d}\n\
                    policies:\n  base_images: [\"prod/base/*\"]\n";
        let d = crate::config::load_texts(
            std::path::Path::new("/"),
            &[(std::sync::Arc::from("p.yaml"), text.to_string())],
        )
        .unwrap();
        let a: RepoAddr = "prod/a".parse().unwrap();
        let digest: crate::model::Digest = format!("sha256:{}", "e".repeat(64)).parse().unwrap();
        let mut o = Observed::default();
        let mut state = crate::observe::RepoState::default();
        state.tags.insert("gone".parse().unwrap(), digest.clone());
        o.repos.insert(a.clone(), Fact::Known(state));
        let placeholder = ImageInfo {
            artifact_type: Some(crate::registry::PLACEHOLDER_ARTIFACT_TYPE.into()),
            ..Default::default()
        };
        o.images
            .insert((a.clone(), digest.clone()), Fact::Known(placeholder));
        assert_eq!(violations(&d, &o, Timestamp(1_800_000_000), &[]).0, []);
        let inv = crate::inventory::build(&d, &o, Timestamp(1_800_000_000));
        assert!(inv.images.is_empty(), "{:?}", inv.images);
        // An image there is judged.
        o.images
            .insert((a, digest), Fact::Known(ImageInfo::default()));
        assert_eq!(violations(&d, &o, Timestamp(1_800_000_000), &[]).0.len(), 1);
    }

    /// Violations are those the plan leaves: a tag retention deletes is
    /// none after the apply, so `fail` does not fail the run removing it;
    /// a tag it keeps still is.
    #[test]
    fn a_tag_the_plan_deletes_is_no_violation() {
        let text = "registries:\n  prod: {url: \"http://127.0.0.1:1\"}\n\
                    retention:\n  - name: r\n    repos: [prod/a]\n    delete: {older_than: 365d}\n\
                    \x20   keep: {tags: [pinned]}\n\
                    policies:\n  max_age: 180d\n  on_violation: fail\n";
        let d = crate::config::load_texts(
            std::path::Path::new("/"),
            &[(std::sync::Arc::from("p.yaml"), text.to_string())],
        )
        .unwrap();
        let now = Timestamp(1_800_000_000);
        let a: RepoAddr = "prod/a".parse().unwrap();
        let mut o = Observed::default();
        let mut state = crate::observe::RepoState::default();
        for (i, tag) in ["old", "pinned"].iter().enumerate() {
            let digest: crate::model::Digest = format!("sha256:{}", i.to_string().repeat(64))
                .parse()
                .unwrap();
            state.tags.insert(tag.parse().unwrap(), digest.clone());
            let info = ImageInfo {
                created: Some(Timestamp(now.0 - 400 * 86_400)),
                ..Default::default()
            };
            o.images.insert((a.clone(), digest), Fact::Known(info));
        }
        o.repos.insert(a, Fact::Known(state));
        let p = crate::plan::plan(&d, &o, now);
        let deleted: Vec<&str> = p.changes.iter().map(|c| c.target.as_str()).collect();
        assert_eq!(deleted, ["prod/a:old"], "{:#?}", p.changes);
        let subjects: Vec<&str> = p.violations.iter().map(|v| v.subject.as_str()).collect();
        assert_eq!(subjects, ["prod/a:pinned"]);
        let ended: Vec<(&str, &str)> = p
            .resolved
            .iter()
            .map(|r| (r.violation.subject.as_str(), r.by.as_str()))
            .collect();
        assert_eq!(ended, [("prod/a:old", "prod/a:old")]);
        // Without the deletion both violate.
        assert_eq!(violations(&d, &o, now, &[]).0.len(), 2);
        // With the deletion cut from the plan (`--target prod/a:p*`), so does
        // the deleted one again: the cut plan leaves it.
        let mut cut = p.clone();
        cut.retain_targets(&[globset::Glob::new("prod/a:p*").unwrap().compile_matcher()]);
        let subjects: Vec<&str> = cut.violations.iter().map(|v| v.subject.as_str()).collect();
        assert_eq!(subjects, ["prod/a:old", "prod/a:pinned"]);
        assert_eq!(cut.summary.violations, 2);
    }

    #[test]
    fn references_are_stripped_to_the_repo() {
        assert_eq!(
            strip_reference("local/mirror/alpine:3.19"),
            "local/mirror/alpine"
        );
        assert_eq!(
            strip_reference("127.0.0.1:5000/mirror/alpine"),
            "127.0.0.1:5000/mirror/alpine"
        );
        assert_eq!(
            strip_reference(&format!("a/b@sha256:{}", "0".repeat(64))),
            "a/b"
        );
    }
}
