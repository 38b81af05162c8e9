//! `hosts:` — what a Docker/Podman host must have (`images.present`), may
//! drop (`images.prune`) and may keep running (`containers.max_age`).

use super::intent::{age, PlanCx, RepoView};
use super::types::{Action, Change, Kept};
use crate::config::{Host, Policy};
use crate::host::address::Addresses;
use crate::model::{Duration, ImageRef, Timestamp};
use crate::observe::{Fact, HostState};

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
        let moves = present(name, host, state, &addrs, cx, out);
        prune(name, host, state, &addrs, &moves, cx, out, kept);
        max_age(name, host, state, &addrs, cx, out);
    }
    enforce(desired, &addrs, cx, out);
}

/// `on_violation: enforce`: running containers that break `policies` are
/// stopped (once, even when a `max_age` of the host also stops them).
fn enforce(desired: &Policy, addrs: &Addresses, cx: &PlanCx<'_>, out: &mut Vec<Change>) {
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
        // Named as `max_age` names it: the policy's address where a
        // registry of the policy has the image, else the engine's name.
        let image = addrs
            .from_engine(&c.image)
            .map(|a| a.to_string())
            .unwrap_or_else(|| c.image.clone());
        out.push(Change {
            target: t,
            source: Some(image),
            digest: Some(c.image_id.clone()),
            expect: container_expect(&c.id, c.started),
            rule: format!("policies.{}", v.violation.policy),
            reason: format!("on_violation: enforce: {}", v.violation.message),
            ..Change::new(Action::StopContainer)
        });
    }
}

/// `expect` of a `stop_container`: the container's ID and, when known, when
/// it started (`ID@RFC3339`), so that apply stops only the run the plan
/// showed, not one restarted since.
pub fn container_expect(id: &str, started: Option<Timestamp>) -> String {
    match started {
        Some(t) => format!("{id}@{}", t.to_rfc3339()),
        None => id.to_string(),
    }
}

/// The container ID and start time of a `stop_container`'s `expect` (plans
/// saved before the start time was recorded have the ID alone).
pub fn parse_container_expect(expect: &str) -> (&str, Option<Timestamp>) {
    match expect.split_once('@') {
        Some((id, t)) => (id, Timestamp::parse_rfc3339(t)),
        None => (expect, None),
    }
}

/// A `present` pull that moves an engine name: off an image (the tag
/// moved), or onto one the host already has by digest (a roll-back to an
/// image still there, or a tag removed by hand): the image's ID and the name.
struct Move {
    image: String,
    name: String,
    /// The name arrives on `image` (else it leaves it).
    arrives: bool,
}

/// Pulls what `present` names when the host lacks it or has another digest
/// under the tag. The pull is by digest, so apply fetches exactly what was
/// planned. Returns the names the pulls move off other images.
fn present(
    name: &str,
    host: &Host,
    state: &HostState,
    addrs: &Addresses,
    cx: &mut PlanCx<'_>,
    out: &mut Vec<Change>,
) -> Vec<Move> {
    let mut moves = Vec::new();
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
                    RepoView::Known(_) if cx.in_conflict(&want.repo, tag) => {
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
        if let Some(i) = local {
            moves.push(Move {
                image: i.id.clone(),
                name: engine_tag.clone(),
                arrives: false,
            });
        }
        // The pull only names an image already here: pruning it would undo
        // the pull (and fail its own check, the name having arrived).
        if let Some(i) = state
            .images
            .iter()
            .find(|i| i.repo_digests.contains(&engine_digest))
        {
            moves.push(Move {
                image: i.id.clone(),
                name: engine_tag.clone(),
                arrives: true,
            });
        }
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
    moves
}

/// The policy addresses of an image's names, else the names themselves.
fn addresses(tags: &[String], addrs: &Addresses) -> Vec<String> {
    tags.iter()
        .map(|t| {
            addrs
                .from_engine(t)
                .map(|a| a.to_string())
                .unwrap_or_else(|| t.clone())
        })
        .collect()
}

/// Removes old images nothing needs. An image a `present` pull of this
/// plan takes a name off is judged by the names it will have after the
/// pull (the pull is applied first), so that the plan after a successful
/// apply has nothing left to do.
#[allow(clippy::too_many_arguments)]
fn prune(
    name: &str,
    host: &Host,
    state: &HostState,
    addrs: &Addresses,
    moves: &[Move],
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
        let moved: Vec<&str> = moves
            .iter()
            .filter(|m| m.image == img.id && !m.arrives)
            .map(|m| m.name.as_str())
            .collect();
        let arriving = moves.iter().filter(|m| m.image == img.id && m.arrives);
        // Its names once this plan's pulls have moved theirs: the ones
        // they take away gone, the ones they bring added.
        let mut tags: Vec<String> = img
            .tags
            .iter()
            .filter(|t| !moved.contains(&t.as_str()))
            .cloned()
            .collect();
        for m in arriving {
            if !tags.contains(&m.name) {
                tags.push(m.name.clone());
            }
        }
        let names = addresses(&tags, addrs);
        let label = names.first().cloned().unwrap_or_else(|| short_id(&img.id));
        let Some(created) = img.created else {
            // Unknown age is never old.
            continue;
        };
        if let Some(o) = rules.older_than {
            if cx.now.0 - created.0 <= o.secs() {
                continue;
            }
        }
        let mut keep_reason = None;
        if let Some(c) = state.users(img).next() {
            keep_reason = Some(format!(
                "used by container {}{}",
                c.name,
                if c.paused {
                    " (paused)"
                } else if c.running {
                    " (running)"
                } else {
                    ""
                }
            ));
        } else if let Some(u) = state.use_of(img) {
            keep_reason = Some(format!("used by {u}"));
        } else if let Some(p) = host
            .images
            .present
            .iter()
            .find(|p| is_named(&tags, p, addrs))
        {
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
        let unused = if moved.is_empty() {
            "unused".to_string()
        } else {
            format!("unused once the pull replaces it as {}", moved.join(", "))
        };
        out.push(Change {
            target: target(name, &label),
            digest: Some(img.id.clone()),
            expect: img.id.clone(),
            rule: rule.clone(),
            reason: match rules.older_than {
                Some(o) => format!(
                    "{unused}, {age_text} (older_than {})",
                    Duration::human(o.secs())
                ),
                None => format!("{unused}, {age_text}"),
            },
            size: Some(img.size),
            // The names apply must find on it (compare-and-swap).
            also_tags: tags,
            ..Change::new(Action::RemoveImage)
        });
    }
}

/// Whether the image carries `present`'s tag (under the engine's name for
/// it, or any name of the same registry: `127.0.0.1/…` for `http://127.0.0.1:80`).
fn is_named(tags: &[String], p: &ImageRef, addrs: &Addresses) -> bool {
    addrs.to_engine(p).is_some_and(|n| tags.contains(&n))
        || tags.iter().any(|t| addrs.from_engine_all(t).contains(p))
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
        if cx.now.0 - started.0 <= max.secs() {
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
            expect: container_expect(&c.id, Some(started)),
            rule: rule_name(name),
            reason: format!(
                "running {} on {image}{} (max_age {})",
                age(cx.now, started),
                if c.paused { ", paused" } else { "" },
                Duration::human(max.secs())
            ),
            ..Change::new(Action::StopContainer)
        });
    }
}

/// An engine image ID's first 12 hex digits, as `docker images` shows it.
pub(super) fn short_id(id: &str) -> String {
    let hex = id.trim_start_matches("sha256:");
    hex.get(..12).unwrap_or(hex).to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::model::{Digest, Timestamp};
    use crate::observe::{Fact, HostContainer, HostImage, HostState, Observed, RepoState};
    use crate::plan::{plan, Action, Plan};

    /// Why the plan keeps `subject` ("" when it does not say).
    fn kept_reason(plan: &Plan, subject: &str) -> String {
        plan.kept
            .iter()
            .find(|k| k.subject == subject)
            .map(|k| k.reason.clone())
            .unwrap_or_default()
    }

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    fn policy(extra: &str) -> crate::config::Policy {
        let text = format!(
            "registries:\n  prod: {{url: \"http://reg.example:5000\"}}\n  local: {{url: \"oci:store\"}}\n\
             hosts:\n  h1:\n    endpoint: unix:///run/docker.sock\n{extra}"
        );
        crate::config::load_texts(std::path::Path::new("/p"), &[(Arc::from("p.yaml"), text)])
            .unwrap_or_else(|d| panic!("{d:?}"))
    }

    fn d(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    fn image(id: char, tags: &[&str], digests: &[&str], days: i64) -> HostImage {
        HostImage {
            id: format!("sha256:{}", id.to_string().repeat(64)),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: digests.iter().map(|s| s.to_string()).collect(),
            created: Some(Timestamp(NOW - days * DAY)),
            size: 1000,
            labels: Default::default(),
            containers: None,
        }
    }

    fn container(name: &str, img: &HostImage, running: bool, started_days: i64) -> HostContainer {
        HostContainer {
            id: format!("{name}-id"),
            name: name.into(),
            image: img.tags.first().cloned().unwrap_or_default(),
            image_id: img.id.clone(),
            running,
            paused: false,
            started: Some(Timestamp(NOW - started_days * DAY)),
        }
    }

    fn observed(state: HostState, api_tag: Option<Digest>) -> Observed {
        let mut o = Observed::default();
        o.hosts.insert("h1".into(), Fact::Known(state));
        let mut repo = RepoState::default();
        if let Some(dg) = api_tag {
            repo.tags.insert("stable".parse().unwrap(), dg);
        }
        o.repos
            .insert("prod/team/api".parse().unwrap(), Fact::Known(repo));
        o
    }

    /// `repo:tag` on `digest` in the observed registries, created `days` ago.
    fn add_tag(o: &mut Observed, repo: &str, tag: &str, digest: Digest, days: i64) {
        let addr: crate::model::RepoAddr = repo.parse().unwrap();
        let info = crate::observe::ImageInfo {
            created: Some(Timestamp(NOW - days * DAY)),
            ..Default::default()
        };
        o.images
            .insert((addr.clone(), digest.clone()), Fact::Known(info));
        let Fact::Known(state) = o
            .repos
            .entry(addr)
            .or_insert_with(|| Fact::Known(RepoState::default()))
        else {
            unreachable!()
        };
        state.tags.insert(tag.parse().unwrap(), digest);
    }

    fn changes(p: &Plan, a: Action) -> Vec<String> {
        p.changes
            .iter()
            .filter(|c| c.action == a)
            .map(|c| c.target.clone())
            .collect()
    }

    #[test]
    fn prune_spares_used_kept_present_and_young_images() {
        let p = policy(
            "    images:\n      present: [prod/team/api:stable]\n      prune: {older_than: 30d, keep: [\"prod/base/*\"]}\n",
        );
        let old = image('1', &["reg.example:5000/team/old:1"], &[], 60);
        let used = image('2', &["reg.example:5000/team/used:1"], &[], 60);
        let base = image('3', &["reg.example:5000/base/os:12"], &[], 60);
        let present = image(
            '4',
            &["reg.example:5000/team/api:stable"],
            &[&format!("reg.example:5000/team/api@{}", d('a'))],
            60,
        );
        let young = image('5', &["reg.example:5000/team/new:1"], &[], 2);
        let dangling = image('6', &[], &[], 90);
        let hub = image('7', &["alpine:3.19"], &[], 90);
        let stopped = container("c-used", &used, false, 50);
        let state = HostState {
            images: vec![old, used, base, present, young, dangling, hub],
            containers: vec![stopped],
        };
        let plan = plan(&p, &observed(state, Some(d('a'))), Timestamp(NOW));
        assert_eq!(
            changes(&plan, Action::RemoveImage),
            vec![
                "host:h1/666666666666",
                "host:h1/alpine:3.19",
                "host:h1/prod/team/old:1"
            ]
        );
        assert!(changes(&plan, Action::Pull).is_empty(), "{plan:?}");
        let why = |s: &str| kept_reason(&plan, s);
        assert_eq!(why("host:h1/prod/team/used:1"), "used by container c-used");
        assert_eq!(
            why("host:h1/prod/base/os:12"),
            "keep matches prod/base/os:12"
        );
        assert!(why("host:h1/prod/team/api:stable").starts_with("listed in present"));
        let old = plan
            .changes
            .iter()
            .find(|c| c.target == "host:h1/prod/team/old:1")
            .unwrap();
        assert_eq!(old.reason, "unused, created 60d ago (older_than 30d)");
        assert_eq!(old.expect, format!("sha256:{}", "1".repeat(64)));
    }

    /// A host image prune removes is no `max_age` violation after the
    /// apply; one it keeps (a stopped container uses it) still is.
    #[test]
    fn a_host_image_prune_removes_is_no_violation() {
        let p = policy(
            "    images:\n      prune: {older_than: 30d}\npolicies:\n  max_age: 180d\n  on_violation: fail\n",
        );
        let old = image('1', &["reg.example:5000/team/old:1"], &[], 400);
        let used = image('2', &["reg.example:5000/team/used:1"], &[], 400);
        let state = HostState {
            containers: vec![container("c-used", &used, false, 50)],
            images: vec![old, used],
        };
        let plan = plan(&p, &observed(state, None), Timestamp(NOW));
        assert_eq!(
            changes(&plan, Action::RemoveImage),
            ["host:h1/prod/team/old:1"]
        );
        let subjects: Vec<&str> = plan.violations.iter().map(|v| v.subject.as_str()).collect();
        assert_eq!(subjects, ["host:h1/prod/team/used:1"]);
    }

    #[test]
    fn removing_an_image_with_several_names_shows_them_all() {
        let p = policy("    images:\n      prune: {older_than: 30d}\n");
        let names = [
            "reg.example:5000/team/old:1",
            "reg.example:5000/team/old:latest",
            "quay.io/x/old:1",
        ];
        let state = HostState {
            images: vec![image('1', &names, &[], 60)],
            containers: vec![],
        };
        let plan = plan(&p, &observed(state, None), Timestamp(NOW));
        let c = &plan.changes[0];
        assert_eq!(c.target, "host:h1/prod/team/old:1");
        // The plan carries every name the engine lists, the target's first.
        assert_eq!(c.also_tags, names);
        let line = "- remove host:h1/prod/team/old:1   unused, created 60d ago (older_than 30d); \
                    also removes names reg.example:5000/team/old:latest, quay.io/x/old:1\n";
        let text = crate::render::text(&plan, false, false);
        assert!(text.contains(&format!("  {line}")), "{text}");
        let md = crate::render::markdown(&plan);
        assert!(md.contains(&format!("\n{line}")), "{md}");
    }

    #[test]
    fn present_pulls_missing_and_moved_tags_by_digest() {
        let p = policy("    images:\n      present: [prod/team/api:stable]\n");
        // Missing.
        let plan1 = plan(
            &p,
            &observed(HostState::default(), Some(d('b'))),
            Timestamp(NOW),
        );
        let pull = &plan1.changes[0];
        assert_eq!(pull.action, Action::Pull);
        assert_eq!(pull.target, "host:h1/prod/team/api:stable");
        assert_eq!(pull.digest.as_deref(), Some(d('b').as_str()));
        assert_eq!(pull.expect, "absent");
        // Moved: the host has the tag at another digest.
        let old = image(
            '4',
            &["reg.example:5000/team/api:stable"],
            &[&format!("reg.example:5000/team/api@{}", d('a'))],
            5,
        );
        let state = HostState {
            images: vec![old.clone()],
            containers: vec![],
        };
        let plan2 = plan(&p, &observed(state, Some(d('b'))), Timestamp(NOW));
        assert_eq!(plan2.changes[0].expect, old.id);
        assert!(plan2.changes[0].reason.contains("the tag moved"));
        // Missing in the registry: blocked, not pulled.
        let plan3 = plan(&p, &observed(HostState::default(), None), Timestamp(NOW));
        assert!(plan3.changes.is_empty());
        assert!(plan3.blocked[0]
            .reason
            .contains("does not exist in the registry"));
    }

    #[test]
    fn present_from_an_oci_layout_is_blocked() {
        let p = policy("    images:\n      present: [local/x:1]\n");
        let mut o = observed(HostState::default(), None);
        o.repos.insert(
            "local/x".parse().unwrap(),
            Fact::Known(RepoState::default()),
        );
        let plan = plan(&p, &o, Timestamp(NOW));
        assert!(plan.changes.is_empty());
        assert!(plan.blocked[0].reason.contains("OCI layout"), "{plan:?}");
    }

    #[test]
    fn a_default_port_is_the_same_registry_as_no_port() {
        // The policy writes `http://reg.example:80`; the engine shows the
        // image as `reg.example/…` (and the other way round): retention
        // spares what a container runs, host prune keeps what `present` names.
        let text = "registries:\n  plain: {url: \"http://reg.example:80\"}\n  tls: {url: \"https://reg.example\"}\n\
             retention:\n  - {name: old, repos: [plain/team/app, tls/team/app], delete: {older_than: 30d}}\n\
             hosts:\n  h1:\n    endpoint: unix:///run/docker.sock\n    images:\n      present: [plain/team/api:stable]\n      prune: {older_than: 30d}\n";
        let p = crate::config::load_texts(
            std::path::Path::new("/p"),
            &[(Arc::from("p.yaml"), text.to_string())],
        )
        .unwrap_or_else(|d| panic!("{d:?}"));
        let used = image(
            '1',
            &["reg.example/team/app:pr-1"],
            &[&format!("reg.example/team/app@{}", d('a'))],
            60,
        );
        let tls_used = image(
            '2',
            &["reg.example:443/team/app:pr-2"],
            &[&format!("reg.example:443/team/app@{}", d('b'))],
            60,
        );
        let present = image(
            '3',
            &["reg.example/team/api:stable"],
            &[&format!("reg.example/team/api@{}", d('e'))],
            60,
        );
        let state = HostState {
            containers: vec![
                container("c1", &used, false, 50),
                container("c2", &tls_used, false, 50),
            ],
            images: vec![used, tls_used, present],
        };
        let mut o = Observed::default();
        o.hosts.insert("h1".into(), Fact::Known(state));
        for (repo, tag, dg) in [
            ("plain/team/app", "pr-1", d('a')),
            ("plain/team/app", "new", d('c')),
            ("tls/team/app", "pr-2", d('b')),
            ("tls/team/app", "new", d('c')),
            ("plain/team/api", "stable", d('e')),
        ] {
            let days = if tag == "new" { 1 } else { 100 };
            add_tag(&mut o, repo, tag, dg, days);
        }
        let plan = plan(&p, &o, Timestamp(NOW));
        // (present still pulls under the name the policy writes.)
        assert_eq!(
            changes(&plan, Action::Pull),
            ["host:h1/plain/team/api:stable"]
        );
        assert!(
            changes(&plan, Action::Delete).is_empty()
                && changes(&plan, Action::RemoveImage).is_empty(),
            "containers keep their images, present keeps its own: {:?}",
            plan.changes
        );
        let why = |s: &str| kept_reason(&plan, s);
        assert!(
            why("plain/team/app:pr-1").contains("container c1"),
            "{:?}",
            plan.kept
        );
        assert!(
            why("tls/team/app:pr-2").contains("container c2"),
            "{:?}",
            plan.kept
        );
    }

    #[test]
    fn max_age_stops_only_old_running_containers() {
        let p = policy("    containers: {max_age: 7d}\n");
        let img = image('1', &["reg.example:5000/team/api:1.2"], &[], 1);
        let state = HostState {
            containers: vec![
                container("old", &img, true, 9),
                container("young", &img, true, 1),
                container("old-stopped", &img, false, 30),
            ],
            images: vec![img],
        };
        let plan = plan(&p, &observed(state, None), Timestamp(NOW));
        assert_eq!(
            changes(&plan, Action::StopContainer),
            vec!["host:h1/container/old"]
        );
        assert_eq!(
            plan.changes[0].reason,
            "running 9d on prod/team/api:1.2 (max_age 7d)"
        );
    }

    #[test]
    fn enforce_stops_containers_from_other_registries() {
        let p = policy("policies: {registries: [prod], on_violation: enforce}\n");
        let ours = image('1', &["reg.example:5000/team/api:1"], &[], 1);
        let theirs = image('2', &["quay.io/org/tool:1"], &[], 1);
        let state = HostState {
            containers: vec![
                container("ours", &ours, true, 1),
                container("theirs", &theirs, true, 1),
            ],
            images: vec![ours, theirs],
        };
        let plan = plan(&p, &observed(state, None), Timestamp(NOW));
        assert_eq!(
            changes(&plan, Action::StopContainer),
            vec!["host:h1/container/theirs"]
        );
        // Stopping it ends the violation: the plan leaves none, and says
        // which one it ends.
        assert!(plan.violations.is_empty(), "{:?}", plan.violations);
        assert_eq!(plan.resolved.len(), 1, "{:?}", plan.resolved);
        assert_eq!(
            plan.resolved[0].violation.subject,
            "host:h1/container/theirs"
        );
        assert_eq!(plan.resolved[0].by, "host:h1/container/theirs");
        // Cut from the plan (`--target`), the stop no longer ends it.
        let mut cut = plan.clone();
        cut.retain_targets(&[globset::Glob::new("host:h1/other*")
            .unwrap()
            .compile_matcher()]);
        let v: Vec<&str> = cut.violations.iter().map(|v| v.subject.as_str()).collect();
        assert_eq!(v, ["host:h1/container/theirs"]);
        assert_eq!(cut.summary.violations, 1);
        assert!(cut.resolved.is_empty());
    }

    #[test]
    fn a_pull_that_only_names_an_image_here_keeps_that_image() {
        // `stable` was rolled back in the registry to b, which the host
        // still has by digest only; the host's `stable` is on c. The pull
        // puts the tag on b: b stays, c goes.
        let p = policy(
            "    images:\n      present: [prod/team/api:stable]\n      prune: {older_than: 30d}\n",
        );
        let stable = "reg.example:5000/team/api:stable";
        let back = image(
            '4',
            &[],
            &[&format!("reg.example:5000/team/api@{}", d('b'))],
            400,
        );
        let now_on = image(
            '5',
            &[stable],
            &[&format!("reg.example:5000/team/api@{}", d('c'))],
            300,
        );
        let state = HostState {
            images: vec![back, now_on],
            containers: vec![],
        };
        let plan = plan(&p, &observed(state, Some(d('b'))), Timestamp(NOW));
        assert_eq!(
            changes(&plan, Action::Pull),
            ["host:h1/prod/team/api:stable"]
        );
        let removed: Vec<Option<&str>> = plan
            .changes
            .iter()
            .filter(|c| c.action == Action::RemoveImage)
            .map(|c| c.digest.as_deref())
            .collect();
        assert_eq!(
            removed,
            [Some(format!("sha256:{}", "5".repeat(64)).as_str())]
        );
        assert_eq!(
            kept_reason(&plan, "host:h1/prod/team/api:stable"),
            "listed in present (prod/team/api:stable)",
            "{:?}",
            plan.kept
        );
    }

    #[test]
    fn enforce_names_a_policy_image_as_max_age_does() {
        // A container from a policy registry that breaks `max_age`: the stop
        // names its image by the policy's address, which a saved plan
        // checks against `registries:`; one from elsewhere keeps the
        // engine's name, which no saved-plan check reads as a registry.
        let p = policy(
            "policies: {registries: [prod], max_age: 30d, on_violation: enforce}
",
        );
        let old = image('1', &["reg.example:5000/team/old:1"], &[], 90);
        let theirs = image('2', &["quay.io/org/tool:1"], &[], 1);
        let state = HostState {
            containers: vec![
                container("old", &old, true, 1),
                container("theirs", &theirs, true, 1),
            ],
            images: vec![old, theirs],
        };
        let plan = plan(&p, &observed(state, None), Timestamp(NOW));
        let sources: Vec<(&str, Option<&str>)> = plan
            .changes
            .iter()
            .filter(|c| c.action == Action::StopContainer)
            .map(|c| (c.target.as_str(), c.source.as_deref()))
            .collect();
        assert_eq!(
            sources,
            [
                ("host:h1/container/old", Some("prod/team/old:1")),
                ("host:h1/container/theirs", Some("quay.io/org/tool:1")),
            ]
        );
        let mut now = crate::plan::types::Endpoints::default();
        now.registries
            .insert("prod".into(), "http://reg.example:5000".into());
        now.registries.insert("local".into(), "oci:/p/store".into());
        now.hosts
            .insert("h1".into(), "unix:///run/docker.sock".into());
        assert_eq!(plan.undefined_names(&now), Vec::<String>::new());
    }

    #[test]
    fn a_container_run_by_image_id_is_judged_by_that_image_names() {
        let p = policy("policies: {registries: [prod], on_violation: enforce}\n");
        let by_id = |name: &str, img: &HostImage, image: String| HostContainer {
            image,
            ..container(name, img, true, 1)
        };
        let ours = image(
            '1',
            &[],
            &[&format!("reg.example:5000/team/api@{}", d('a'))],
            1,
        );
        let theirs = image('2', &["quay.io/org/tool:1"], &[], 1);
        let nameless = image('3', &[], &[], 1);
        let state = HostState {
            containers: vec![
                by_id("ours", &ours, ours.id.clone()),
                // Podman shows the bare hex, sometimes shortened.
                by_id("theirs", &theirs, "2".repeat(12)),
                by_id("nameless", &nameless, "3".repeat(64)),
            ],
            images: vec![ours, theirs, nameless],
        };
        let plan = plan(&p, &observed(state, None), Timestamp(NOW));
        // Only the one known to come from elsewhere is a violation and stopped.
        assert_eq!(
            changes(&plan, Action::StopContainer),
            vec!["host:h1/container/theirs"]
        );
        let v: Vec<&str> = plan
            .resolved
            .iter()
            .map(|r| r.violation.subject.as_str())
            .collect();
        assert_eq!(v, ["host:h1/container/theirs"]);
        assert!(plan.resolved[0]
            .violation
            .message
            .contains("quay.io/org/tool:1"));
        // The nameless one is not judged, and says so.
        let u: Vec<&str> = plan.unobserved.iter().map(|u| u.subject.as_str()).collect();
        assert_eq!(u, ["host:h1/container/nameless"]);
        assert!(plan.unobserved[0].reason.contains("not judged"));
    }

    #[test]
    fn a_moved_present_tag_also_removes_the_image_it_replaces() {
        // `present` pulls the moved tag; the image it leaves behind is old
        // and nothing else needs it: the same plan removes it (after the
        // pull), so the plan after a successful apply is empty.
        let p = policy(
            "    images:\n      present: [prod/team/api:stable]\n      prune: {older_than: 30d}\n",
        );
        let stable = "reg.example:5000/team/api:stable";
        let old = image(
            '4',
            &[stable],
            &[&format!("reg.example:5000/team/api@{}", d('a'))],
            50,
        );
        let state = HostState {
            images: vec![old.clone()],
            containers: vec![],
        };
        let plan1 = plan(&p, &observed(state, Some(d('b'))), Timestamp(NOW));
        assert_eq!(
            plan1
                .changes
                .iter()
                .map(|c| (c.action, c.target.as_str()))
                .collect::<Vec<_>>(),
            vec![
                (Action::Pull, "host:h1/prod/team/api:stable"),
                (Action::RemoveImage, "host:h1/444444444444"),
            ],
            "pull first, then the removal: {:?}",
            plan1.changes
        );
        let rm = &plan1.changes[1];
        assert_eq!(rm.expect, old.id);
        // Compare-and-swap: after the pull, the image has no names left.
        assert!(rm.also_tags.is_empty(), "{rm:?}");
        assert_eq!(
            rm.reason,
            format!(
                "unused once the pull replaces it as {stable}, created 50d ago (older_than 30d)"
            )
        );

        // Still named otherwise, or used: kept as before.
        let named = image(
            '4',
            &[stable, "reg.example:5000/team/api:1.0"],
            &[&format!("reg.example:5000/team/api@{}", d('a'))],
            50,
        );
        let state = HostState {
            containers: vec![],
            images: vec![named],
        };
        let plan2 = plan(&p, &observed(state, Some(d('b'))), Timestamp(NOW));
        let rm = plan2
            .changes
            .iter()
            .find(|c| c.action == Action::RemoveImage)
            .unwrap();
        assert_eq!(rm.target, "host:h1/prod/team/api:1.0");
        assert_eq!(rm.also_tags, ["reg.example:5000/team/api:1.0"]);
        let state = HostState {
            containers: vec![container("api", &old, true, 40)],
            images: vec![old.clone()],
        };
        let plan3 = plan(&p, &observed(state, Some(d('b'))), Timestamp(NOW));
        assert_eq!(changes(&plan3, Action::RemoveImage), Vec::<String>::new());
        assert_eq!(changes(&plan3, Action::Pull).len(), 1);
    }

    #[test]
    fn images_of_containers_the_engine_does_not_list_are_kept() {
        // Podman counts buildah's ("external") containers on an image but
        // does not list them: removing it would fail with 409 on every apply.
        let p = policy("    images:\n      prune: {older_than: 30d}\n");
        let mut built = image('1', &["reg.example:5000/team/built:1"], &[], 60);
        built.containers = Some(1);
        let mut listed = image('2', &["reg.example:5000/team/listed:1"], &[], 60);
        listed.containers = Some(1);
        let state = HostState {
            containers: vec![container("c", &listed, false, 50)],
            images: vec![built, listed],
        };
        let plan = plan(&p, &observed(state, None), Timestamp(NOW));
        assert!(plan.changes.is_empty(), "{:?}", plan.changes);
        assert_eq!(
            kept_reason(&plan, "host:h1/prod/team/built:1"),
            "used by 1 container the engine does not list (external, e.g. buildah's)"
        );
        assert_eq!(
            kept_reason(&plan, "host:h1/prod/team/listed:1"),
            "used by container c"
        );
    }

    #[test]
    fn stops_expect_the_start_the_plan_saw() {
        // A container restarted after the plan is not the one it showed:
        // `expect` carries the start time apply compares.
        let p = policy(
            "    containers: {max_age: 7d}\npolicies: {registries: [prod], on_violation: enforce}\n",
        );
        let ours = image('1', &["reg.example:5000/team/api:1"], &[], 1);
        let theirs = image('2', &["quay.io/org/tool:1"], &[], 1);
        let mut paused = container("old", &ours, true, 9);
        paused.paused = true;
        let state = HostState {
            containers: vec![paused, container("theirs", &theirs, true, 1)],
            images: vec![ours, theirs],
        };
        let plan = plan(&p, &observed(state, None), Timestamp(NOW));
        let stops: Vec<(&str, &str, &str)> = plan
            .changes
            .iter()
            .map(|c| (c.target.as_str(), c.expect.as_str(), c.reason.as_str()))
            .collect();
        let at = |days: i64| Timestamp(NOW - days * DAY).to_rfc3339();
        assert_eq!(stops[0].0, "host:h1/container/old");
        assert_eq!(stops[0].1, format!("old-id@{}", at(9)));
        assert_eq!(
            stops[0].2,
            "running 9d on prod/team/api:1, paused (max_age 7d)"
        );
        assert_eq!(stops[1].0, "host:h1/container/theirs");
        assert_eq!(stops[1].1, format!("theirs-id@{}", at(1)));
        assert_eq!(
            super::parse_container_expect(stops[0].1),
            ("old-id", Some(Timestamp(NOW - 9 * DAY)))
        );
        // Plans saved before: the ID alone.
        assert_eq!(super::parse_container_expect("abc"), ("abc", None));
    }

    #[test]
    fn retention_spares_a_digest_a_container_pulled_by_another_name() {
        // The host pulled it as `localhost:5000/…`, the policy writes
        // `http://reg.example:5000`: the digest is the same image, so no
        // registry deletes it, under any repo.
        let text = "registries:\n  prod: {url: \"http://reg.example:5000\"}\n\
             retention:\n  - {name: old, repos: [prod/team/app, prod/team/copy], delete: {older_than: 30d}}\n\
             mirrors:\n  - {from: prod/team/src, to: prod/team/copy, prune: true}\n\
             hosts:\n  h1:\n    endpoint: unix:///run/docker.sock\n";
        let p = crate::config::load_texts(
            std::path::Path::new("/p"),
            &[(Arc::from("p.yaml"), text.to_string())],
        )
        .unwrap_or_else(|d| panic!("{d:?}"));
        let alias = image(
            '1',
            &["localhost:5000/team/alias:1"],
            &[&format!("localhost:5000/team/alias@{}", d('a'))],
            60,
        );
        let state = HostState {
            containers: vec![container("racer", &alias, true, 1)],
            images: vec![alias],
        };
        let mut o = Observed::default();
        o.hosts.insert("h1".into(), Fact::Known(state));
        for (repo, tag, dg) in [
            ("prod/team/app", "1", d('a')),
            ("prod/team/app", "2", d('c')),
            ("prod/team/app", "3", d('e')),
            ("prod/team/copy", "gone", d('a')),
            ("prod/team/src", "other", d('f')),
        ] {
            add_tag(&mut o, repo, tag, dg, 100);
        }
        let plan = plan(&p, &o, Timestamp(NOW));
        let mut deleted = changes(&plan, Action::Delete);
        deleted.extend(changes(&plan, Action::Untag));
        deleted.sort();
        assert_eq!(deleted, ["prod/team/app:2", "prod/team/app:3"], "{plan:?}");
        assert_eq!(
            kept_reason(&plan, "prod/team/app:1"),
            "run by container racer on host h1"
        );
    }

    #[test]
    fn an_unobserved_host_gets_no_changes() {
        let p = policy("    containers: {max_age: 1s}\n");
        let mut o = Observed::default();
        o.hosts.insert(
            "h1".into(),
            Fact::Unknown {
                reason: "connection refused".into(),
            },
        );
        let plan = plan(&p, &o, Timestamp(NOW));
        assert!(plan.changes.is_empty());
        assert!(!plan.complete);
        assert_eq!(plan.unobserved[0].subject, "host:h1");
    }
}
