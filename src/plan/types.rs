//! The plan as data (SPEC "Plan output"). Renderers and the executor read it;
//! saved plans are this, as JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const FORMAT_VERSION: &str = "1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Copy,
    Retag,
    Untag,
    Delete,
    Pull,
    RemoveImage,
    StopContainer,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Copy => "copy",
            Action::Retag => "retag",
            Action::Untag => "untag",
            Action::Delete => "delete",
            Action::Pull => "pull",
            Action::RemoveImage => "remove_image",
            Action::StopContainer => "stop_container",
        }
    }

    /// Untag and delete: the changes that take something out of a registry.
    pub fn deletes_from_registry(self) -> bool {
        matches!(self, Action::Untag | Action::Delete)
    }
}

/// One mutation, with what apply must find before doing it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub action: Action,
    /// `REGISTRY/REPO:TAG` (or `host:NAME/…`).
    pub target: String,
    /// `REGISTRY/REPO@sha256:…` the content comes from.
    #[serde(default)]
    pub source: Option<String>,
    /// The digest the target will point at (copy, retag) or that goes (delete).
    #[serde(default)]
    pub digest: Option<String>,
    /// `absent` or the digest the target must have now (compare-and-swap).
    pub expect: String,
    pub rule: String,
    pub reason: String,
    /// Child manifests of an index (0 for a single image), for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platforms: Option<u32>,
    /// Referrers that follow the copy, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrers: Option<u32>,
    /// Bytes the image holds (manifests, configs, layers), for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Whether referrers are copied with it (mirrors' `referrers:`).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub with_referrers: bool,
    /// For a platform-filtered copy: the platforms kept (the digest is then the filtered index's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_platforms: Option<Vec<String>>,
    /// For a delete: the digest's other tags, which go with it (each re-checked at apply).
    /// For a remove_image: every name of the image as the engine lists them, the first
    /// being the one the target shows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_tags: Vec<String>,
    /// For an untag of an image its other tags keep: those tags. Apply
    /// untags only while one of them is still on the image, so that it is
    /// never left without a tag (where retention would not see it again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_by: Vec<String>,
    /// A copy or retag that reads a tag another change of the plan puts in
    /// place: that change's target (it is applied first; a plan cut
    /// without it shows this one as blocked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

impl Change {
    /// An empty change of this action, for struct-update syntax.
    pub fn new(action: Action) -> Change {
        Change {
            action,
            target: String::new(),
            source: None,
            digest: None,
            expect: String::new(),
            rule: String::new(),
            reason: String::new(),
            platforms: None,
            referrers: None,
            size: None,
            with_referrers: true,
            only_platforms: None,
            also_tags: Vec::new(),
            kept_by: Vec::new(),
            after: None,
        }
    }

    /// Every target the change affects: its own and, for a delete or an
    /// image removal, the tags or names going with it (`also_tags`), in
    /// the target's form (`REG/REPO:TAG`, `host:NAME/IMAGE`).
    pub fn targets(&self) -> Vec<String> {
        let mut out = vec![self.target.clone()];
        let prefix = match self.action {
            // `REG/REPO:TAG`: the other tags are of the same repo.
            Action::Delete if !self.target.contains('@') => self
                .target
                .rfind(':')
                .filter(|i| !self.target[*i..].contains('/'))
                .map(|i| &self.target[..=i]),
            // `host:NAME/…`: the names are the engine's, on the same host.
            Action::RemoveImage => self
                .target
                .strip_prefix("host:")
                .and_then(|rest| rest.find('/'))
                .map(|i| &self.target[..="host:".len() + i]),
            _ => None,
        };
        if let Some(prefix) = prefix {
            out.extend(self.also_tags.iter().map(|t| format!("{prefix}{t}")));
        }
        out
    }
}

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocked {
    pub rule: String,
    pub subject: String,
    pub reason: String,
    /// Where it would have gone, when that is not `subject` (a promotion
    /// blocked at its source): `--target` selects it by either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// `max_age`, `registries` or `base_images`.
    pub policy: String,
    /// Which way the policy is broken where it can be in several:
    /// `base_images` is `missing` (no annotation) or `not_allowed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub subject: String,
    pub message: String,
}

/// A violation a change of the plan ends (it deletes or repoints the tag,
/// removes the host image, stops the container): not one the plan leaves,
/// unless that change is cut from the plan (`--target`, `--shard`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    #[serde(flatten)]
    pub violation: Violation,
    /// The target of the change that ends it.
    pub by: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unobserved {
    pub subject: String,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub copy: u32,
    pub retag: u32,
    pub untag: u32,
    pub delete: u32,
    pub pull: u32,
    pub remove_image: u32,
    pub stop_container: u32,
    pub blocked: u32,
    pub violations: u32,
}

impl Summary {
    pub fn host_changes(&self) -> u32 {
        self.pull + self.remove_image + self.stop_container
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: String,
    /// False when something could not be observed: the plan then makes no
    /// deletions or overwrites where it could not see.
    pub complete: bool,
    pub revision: Option<String>,
    /// The policy folder had uncommitted changes: the plan is of the files
    /// as they were, not of `revision` alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revision_modified: bool,
    pub changes: Vec<Change>,
    pub blocked: Vec<Blocked>,
    pub violations: Vec<Violation>,
    /// Violations the plan's own changes end (listed with `-v`).
    #[serde(
        default,
        rename = "resolved_violations",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub resolved: Vec<Resolved>,
    pub unobserved: Vec<Unobserved>,
    pub summary: Summary,
    /// Per retention rule and repo: how many tags there are and how many go.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retention: Vec<RetentionRepo>,
    /// Tags a retention rule would delete but something protects, with why
    /// (shown with `-v`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<Kept>,
    /// Where each registry and host was when planned, so that a saved plan
    /// is not applied to whatever those names mean in another policy.
    #[serde(default, skip_serializing_if = "Endpoints::is_empty")]
    pub endpoints: Endpoints,
    /// The part of the policy this plan was cut to (`--target`, `--shard`),
    /// if any: what it does not show was not planned, not found in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// Registry and host names → endpoints as the policy wrote them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub registries: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<String, String>,
}

impl Endpoints {
    pub fn is_empty(&self) -> bool {
        self.registries.is_empty() && self.hosts.is_empty()
    }

    /// Every name both know whose endpoint differs: `(what, then, now)`.
    pub fn moved(&self, now: &Endpoints) -> Vec<(String, String, String)> {
        let pairs = [
            ("registry", &self.registries, &now.registries),
            ("host", &self.hosts, &now.hosts),
        ];
        let mut out = Vec::new();
        for (kind, then, current) in pairs {
            for (name, was) in then {
                if let Some(is) = current.get(name).filter(|is| *is != was) {
                    out.push((format!("{kind} `{name}`"), was.clone(), is.clone()));
                }
            }
        }
        out
    }
}

impl Plan {
    /// The registries and hosts the changes act on (targets, sources, a
    /// pull's registry) that `now` does not define, as ``registry `x` ``.
    /// Applying such a plan would do only the part whose names exist.
    pub fn undefined_names(&self, now: &Endpoints) -> Vec<String> {
        // The first segment of `REGISTRY/REPO…` names the registry.
        let registry_of = |r: &str| r.split('/').next().unwrap_or(r).to_string();
        let mut registries = std::collections::BTreeSet::new();
        let mut hosts = std::collections::BTreeSet::new();
        for c in &self.changes {
            match c.target.strip_prefix("host:") {
                Some(rest) => {
                    let (host, what) = rest.split_once('/').unwrap_or((rest, ""));
                    hosts.insert(host.to_string());
                    if c.action == Action::Pull {
                        registries.insert(registry_of(what));
                    }
                }
                None => {
                    registries.insert(registry_of(&c.target));
                }
            }
            // A container's or image's `source` on a host says what it runs
            // (an engine name such as `quay.io/x/y:1` when no registry of the
            // policy has it): no registry is read or written for it.
            let informational = matches!(c.action, Action::StopContainer | Action::RemoveImage);
            if let Some(src) = c.source.as_ref().filter(|_| !informational) {
                registries.insert(registry_of(src));
            }
        }
        let missing = |kind: &str,
                       names: std::collections::BTreeSet<String>,
                       known: &BTreeMap<String, String>| {
            names
                .into_iter()
                .filter(|n| !known.contains_key(n))
                .map(|n| format!("{kind} `{n}`"))
                .collect::<Vec<_>>()
        };
        let mut out = missing("registry", registries, &now.registries);
        out.extend(missing("host", hosts, &now.hosts));
        out
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionRepo {
    pub rule: String,
    pub repo: String,
    pub tags: u32,
    pub deleting: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub rule: String,
    pub subject: String,
    pub reason: String,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            format_version: FORMAT_VERSION.to_string(),
            complete: true,
            revision: None,
            revision_modified: false,
            changes: Vec::new(),
            blocked: Vec::new(),
            violations: Vec::new(),
            resolved: Vec::new(),
            unobserved: Vec::new(),
            summary: Summary::default(),
            retention: Vec::new(),
            kept: Vec::new(),
            endpoints: Endpoints::default(),
            scope: None,
        }
    }
}

impl Plan {
    /// Sorts into the fixed safe order and recomputes the summary.
    pub fn finish(&mut self) {
        // Copies land before retags point at them; deletions come last.
        self.changes.sort_by(|a, b| {
            (order(a.action), &a.rule, &a.target).cmp(&(order(b.action), &b.rule, &b.target))
        });
        self.blocked
            .sort_by(|a, b| (&a.rule, &a.subject).cmp(&(&b.rule, &b.subject)));
        self.blocked.dedup();
        self.unobserved.sort_by(|a, b| a.subject.cmp(&b.subject));
        // A violation whose change was cut from the plan is left by it again.
        let targets: std::collections::BTreeSet<&str> =
            self.changes.iter().map(|c| c.target.as_str()).collect();
        let (ended, left): (Vec<Resolved>, Vec<Resolved>) = std::mem::take(&mut self.resolved)
            .into_iter()
            .partition(|r| targets.contains(r.by.as_str()));
        self.resolved = ended;
        self.violations
            .extend(left.into_iter().map(|r| r.violation));
        self.resolved.sort_by(|a, b| {
            (&a.violation.policy, &a.violation.subject, &a.by).cmp(&(
                &b.violation.policy,
                &b.violation.subject,
                &b.by,
            ))
        });
        self.resolved.dedup();
        self.violations.sort_by(|a, b| {
            (&a.policy, &a.subject, &a.message).cmp(&(&b.policy, &b.subject, &b.message))
        });
        self.violations.dedup();
        self.unobserved.dedup();
        self.complete = self.unobserved.is_empty();
        let mut s = Summary::default();
        for c in &self.changes {
            match c.action {
                Action::Copy => s.copy += 1,
                Action::Retag => s.retag += 1,
                Action::Untag => s.untag += 1,
                Action::Delete => s.delete += 1,
                Action::Pull => s.pull += 1,
                Action::RemoveImage => s.remove_image += 1,
                Action::StopContainer => s.stop_container += 1,
            }
        }
        s.blocked = self.blocked.len() as u32;
        s.violations = self.violations.len() as u32;
        self.summary = s;
    }

    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// Keeps only changes that affect a target one of the globs matches
    /// (`--target`): a delete that also removes a matching tag is kept.
    pub fn retain_targets(&mut self, globs: &[globset::GlobMatcher]) {
        if globs.is_empty() {
            return;
        }
        let (kept, cut): (Vec<Change>, Vec<Change>) = std::mem::take(&mut self.changes)
            .into_iter()
            .partition(|c| {
                c.targets()
                    .iter()
                    .any(|t| globs.iter().any(|g| g.is_match(t)))
            });
        self.changes = kept;
        // A change that reads what a cut change would put there cannot go
        // alone (it would copy from where that change reads, under a reason
        // that is not true yet): shown blocked, as far as chains go.
        let mut cut: std::collections::BTreeSet<String> =
            cut.into_iter().map(|c| c.target).collect();
        let mut waiting = Vec::new();
        loop {
            let (needs, rest): (Vec<Change>, Vec<Change>) = std::mem::take(&mut self.changes)
                .into_iter()
                .partition(|c| c.after.as_ref().is_some_and(|a| cut.contains(a)));
            self.changes = rest;
            if needs.is_empty() {
                break;
            }
            for c in needs {
                let after = c.after.clone().unwrap_or_default();
                waiting.push(Blocked {
                    target: None,
                    rule: c.rule.clone(),
                    subject: c.target.clone(),
                    reason: format!(
                        "needs {after} first, which --target leaves out: target it too"
                    ),
                });
                cut.insert(c.target);
            }
        }
        self.blocked.retain(|b| {
            std::iter::once(&b.subject)
                .chain(&b.target)
                .any(|s| globs.iter().any(|g| g.is_match(s)))
        });
        self.blocked.extend(waiting);
        self.finish();
    }
}

/// The fixed order changes are applied in.
pub fn order(a: Action) -> u8 {
    match a {
        Action::Copy => 0,
        Action::Retag => 1,
        Action::Pull => 2,
        Action::Untag => 3,
        Action::Delete => 4,
        Action::StopContainer => 5,
        Action::RemoveImage => 6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_globs_see_what_a_delete_or_removal_takes_with_it() {
        let glob = |g: &str| vec![globset::Glob::new(g).unwrap().compile_matcher()];
        let plan = || Plan {
            changes: vec![
                Change {
                    target: "dev/team/app:a".into(),
                    also_tags: vec!["b".into()],
                    ..Change::new(Action::Delete)
                },
                Change {
                    target: "host:web/prod/app:1".into(),
                    also_tags: vec!["reg:5000/app:1".into(), "reg:5000/app:old".into()],
                    ..Change::new(Action::RemoveImage)
                },
            ],
            ..Plan::default()
        };
        let kept = |g: &str| {
            let mut p = plan();
            p.retain_targets(&glob(g));
            p.changes.into_iter().map(|c| c.target).collect::<Vec<_>>()
        };
        assert_eq!(kept("dev/team/app:b"), ["dev/team/app:a"]);
        assert_eq!(kept("host:web/reg:5000/app:old"), ["host:web/prod/app:1"]);
        assert!(kept("dev/team/app:c").is_empty());
        assert!(kept("host:db/*").is_empty());
    }

    #[test]
    fn undefined_names_cover_targets_sources_and_hosts() {
        let plan = Plan {
            changes: vec![
                Change {
                    target: "prod/app:1".into(),
                    source: Some("dev/app@sha256:00".into()),
                    ..Change::new(Action::Copy)
                },
                Change {
                    target: "host:web/prod/app:1".into(),
                    ..Change::new(Action::Pull)
                },
                Change {
                    target: "host:db/abc".into(),
                    ..Change::new(Action::RemoveImage)
                },
                // What a stopped container runs is no registry the plan uses.
                Change {
                    target: "host:web/container/x".into(),
                    source: Some("quay.io/evil/tool:1".into()),
                    ..Change::new(Action::StopContainer)
                },
            ],
            ..Plan::default()
        };
        let mut now = Endpoints::default();
        now.registries.insert("prod".into(), "https://prod".into());
        now.hosts.insert("web".into(), "unix:///d".into());
        assert_eq!(
            plan.undefined_names(&now),
            vec!["registry `dev`".to_string(), "host `db`".to_string()]
        );
    }
}
