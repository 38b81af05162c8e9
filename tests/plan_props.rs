//! Property: for random worlds, applying the plan (simulated in memory, the
//! way the executor changes tags) and planning again yields no changes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use regimen::config;
use regimen::model::{Digest, RepoAddr, Tag, Timestamp};
use regimen::observe::{Fact, ImageInfo, Observed, ReferrerInfo, RepoState};
use regimen::plan::{plan, Action, Plan};

const TAGS: [&str; 7] = [
    "1.0.0",
    "1.1.0",
    "1.2.0-rc.1",
    "2.0.0",
    "latest",
    "v1.3.0",
    "edge",
];
const NOW: Timestamp = Timestamp(1_800_000_000);

fn digest(i: u8) -> Digest {
    Digest::sha256_of(&[i])
}

fn addr(s: &str) -> RepoAddr {
    s.parse().unwrap()
}

/// A repo's tags: each tag present with probability, pointing at one of 4 digests.
fn repo_state() -> impl Strategy<Value = BTreeMap<String, u8>> {
    proptest::collection::btree_map(
        proptest::sample::select(TAGS.to_vec()).prop_map(String::from),
        0u8..4,
        0..6,
    )
}

fn info(i: u8) -> ImageInfo {
    ImageInfo {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        created: Some(Timestamp(NOW.0 - (i as i64) * 40_000)),
        referrers: if i.is_multiple_of(2) {
            vec![ReferrerInfo {
                digest: digest(100 + i),
                artifact_type: "application/vnd.cyclonedx+json".into(),
            }]
        } else {
            vec![]
        },
        ..Default::default()
    }
}

fn world(
    src: &BTreeMap<String, u8>,
    dst: &BTreeMap<String, u8>,
    prod: &BTreeMap<String, u8>,
) -> Observed {
    let mut o = Observed::default();
    for (name, tags) in [("a/src", src), ("b/dst", dst), ("b/prod", prod)] {
        let r = addr(name);
        let state = RepoState {
            tags: tags
                .iter()
                .map(|(t, d)| (t.parse::<Tag>().unwrap(), digest(*d)))
                .collect(),
            ..Default::default()
        };
        o.repos.insert(r.clone(), Fact::Known(state));
    }
    // Every repo knows the details of every digest (observe reads what plan asks for).
    for name in ["a/src", "b/dst", "b/prod"] {
        for i in 0..4 {
            o.images
                .insert((addr(name), digest(i)), Fact::Known(info(i)));
        }
    }
    o
}

/// A fact that could not be read, and why.
fn unknown<T>(reason: &str) -> Fact<T> {
    Fact::Unknown {
        reason: reason.into(),
    }
}

fn policy(yaml: &str) -> config::Policy {
    config::load_texts(Path::new("."), &[(Arc::from("p.yaml"), yaml.to_string())])
        .unwrap_or_else(|e| panic!("{e:?}\n{yaml}"))
}

/// Does to the observed world what the executor does for each change.
fn simulate(o: &mut Observed, p: &Plan) {
    for c in &p.changes {
        assert!(matches!(c.action, Action::Copy | Action::Retag), "{c:?}");
        let (repo, tag) = c.target.rsplit_once(':').unwrap();
        let Some(Fact::Known(state)) = o.repos.get_mut(&addr(repo)) else {
            panic!("write to unknown repo")
        };
        let t: Tag = tag.parse().unwrap();
        let cur = state
            .tags
            .get(&t)
            .map(|d| d.to_string())
            .unwrap_or_else(|| "absent".into());
        assert_eq!(
            cur, c.expect,
            "compare-and-swap expectation for {}",
            c.target
        );
        state.tags.insert(
            tag.parse().unwrap(),
            c.digest.as_ref().unwrap().parse().unwrap(),
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn apply_then_plan_is_empty(
        src in repo_state(), dst in repo_state(), prod in repo_state(),
        selector in proptest::sample::select(vec!["", "tags: {semver: \">=1.0.0\"}", "tags: [latest, edge]", "tags: {latest: 2}", "tags: {glob: \"1.*\"}"]),
        min_age in proptest::sample::select(vec!["", "min_age: 1d", "min_age: 10m"]),
        sbom in any::<bool>(),
        overwrite in any::<bool>(),
        retag_from in proptest::sample::select(TAGS.to_vec()),
        newest in any::<bool>(),
    ) {
        let retag = if newest {
            "newest: {repo: b/dst, tags: {semver: \"*\"}}".to_string()
        } else {
            format!("from: b/prod:{retag_from}")
        };
        let yaml = format!(
            "registries:\n  a: {{url: oci:a}}\n  b: {{url: oci:b}}\n\
             mirrors:\n  - from: a/src\n    to: b/dst\n    {selector}\n\
             promotions:\n  - name: promote\n    from: a/src\n    to: b/prod\n    overwrite: {overwrite}\n    require:\n      {min_age}\n      referrers: {refs}\n\
             retags:\n  - tag: b/prod:stable\n    {retag}\n",
            refs = if sbom { "[application/vnd.cyclonedx+json]" } else { "[]" },
        );
        let desired = policy(&yaml);
        let mut observed = world(&src, &dst, &prod);
        let first = plan(&desired, &observed, NOW);
        simulate(&mut observed, &first);
        let second = plan(&desired, &observed, NOW);
        prop_assert!(second.changes.is_empty(), "second plan not empty:\n{:#?}\nfirst:\n{:#?}\n{yaml}", second.changes, first.changes);
        // Blocked items never turn into changes by themselves.
        prop_assert_eq!(first.blocked.len() >= second.blocked.len(), true);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    /// Rules that feed each other, written in any order: a mirror from a
    /// mirror's target, a promotion from it, retags in a mirror's source
    /// and in a promotion's source, a retag from another retag's tag in the
    /// same repo. One apply converges.
    #[test]
    fn chains_converge_in_one_apply(
        src in repo_state(), dst in repo_state(), prod in repo_state(), far in repo_state(),
        selector in proptest::sample::select(vec!["", "tags: {semver: \">=1.0.0\"}", "tags: [latest, edge]", "tags: {latest: 2}"]),
        retag_from in proptest::sample::select(TAGS.to_vec()),
        retag_to in proptest::sample::select(vec!["1.0.0", "stable", "latest"]),
        newest in any::<bool>(),
        reversed in any::<bool>(),
        pin_first in any::<bool>(),
    ) {
        prop_assume!(newest || retag_to != retag_from);
        let source_retag = if newest {
            format!("  - tag: a/src:{retag_to}\n    newest: {{repo: a/src, tags: {{semver: \"*\"}}}}\n")
        } else {
            format!("  - tag: a/src:{retag_to}\n    from: a/src:{retag_from}\n")
        };
        let mut rules = [
            format!("mirrors:\n  - from: b/dst\n    to: b/far\n    {selector}\n  - from: a/src\n    to: b/dst\n"),
            "promotions:\n  - name: promote\n    from: b/dst\n    to: b/prod\n    overwrite: true\n".to_string(),
            // `prod` follows `stable` in the same repo, written before or after it.
            if pin_first {
                format!("retags:\n  - tag: b/dst:prod\n    from: b/dst:stable\n  - tag: b/dst:stable\n    from: b/dst:{retag_from}\n{source_retag}")
            } else {
                format!("retags:\n  - tag: b/dst:stable\n    from: b/dst:{retag_from}\n  - tag: b/dst:prod\n    from: b/dst:stable\n{source_retag}")
            },
        ];
        if reversed {
            rules.reverse();
        }
        let yaml = format!("registries:\n  a: {{url: oci:a}}\n  b: {{url: oci:b}}\n{}", rules.concat());
        let desired = policy(&yaml);
        let mut observed = world(&src, &dst, &prod);
        let state = RepoState {
            tags: far.iter().map(|(t, d)| (t.parse::<Tag>().unwrap(), digest(*d))).collect(),
            ..Default::default()
        };
        observed.repos.insert(addr("b/far"), Fact::Known(state));
        for i in 0..4 {
            observed.images.insert((addr("b/far"), digest(i)), Fact::Known(info(i)));
        }
        let first = plan(&desired, &observed, NOW);
        simulate(&mut observed, &first);
        let second = plan(&desired, &observed, NOW);
        prop_assert!(second.changes.is_empty(), "second plan not empty:\n{:#?}\nfirst:\n{:#?}\n{yaml}", second.changes, first.changes);
    }
}

#[test]
fn unknown_target_is_never_written() {
    let desired = policy("registries:\n  a: {url: oci:a}\n  b: {url: oci:b}\nmirrors:\n  - from: a/src\n    to: b/dst\n");
    let mut observed = world(
        &[("1.0.0".to_string(), 1)].into(),
        &BTreeMap::new(),
        &BTreeMap::new(),
    );
    observed
        .repos
        .insert(addr("b/dst"), unknown("connection refused"));
    let p = plan(&desired, &observed, NOW);
    assert!(p.changes.is_empty());
    assert!(!p.complete);
    assert_eq!(p.unobserved[0].subject, "b/dst");
}

#[test]
fn conflicting_rules_are_both_blocked() {
    let desired = policy(
        "registries:\n  a: {url: oci:a}\n  b: {url: oci:b}\n\
         mirrors:\n  - from: a/src\n    to: b/prod\n    tags: [latest]\n\
         retags:\n  - tag: b/prod:latest\n    from: a/src:edge\n",
    );
    let src = [("latest".to_string(), 1), ("edge".to_string(), 2)].into();
    let observed = world(&src, &BTreeMap::new(), &BTreeMap::new());
    let p = plan(&desired, &observed, NOW);
    assert!(p.changes.is_empty(), "{:?}", p.changes);
    assert_eq!(p.blocked.len(), 2, "{:?}", p.blocked);
    assert!(p.blocked.iter().all(|b| b.reason.starts_with("conflict")));
}

/// A retag whose source tag is itself in conflict still wants its tag: a
/// promotion wanting that tag too must not win it silently, and no reason
/// says the (existing) source "does not exist".
#[test]
fn a_retag_on_a_conflicted_source_blocks_its_competitor() {
    let desired = policy(
        "registries:\n  a: {url: oci:a}\n  b: {url: oci:b}\n\
         mirrors:\n  - {name: m, from: a/src, to: b/prod, tags: [edge]}\n\
         promotions:\n  - {name: p, from: b/dst, to: b/prod, tags: [latest]}\n\
         retags:\n  - {name: edge-pin, tag: b/prod:edge, from: b/prod:1.0.0}\n\
         \x20 - {name: latest-pin, tag: b/prod:latest, from: b/prod:edge}\n\
         \x20 - {name: stable-pin, tag: b/prod:stable, from: b/prod:edge}\n",
    );
    let src = [("edge".to_string(), 1)].into();
    let dst = [("latest".to_string(), 2)].into();
    let prod = [("1.0.0".to_string(), 3), ("edge".to_string(), 0)].into();
    let p = plan(&desired, &world(&src, &dst, &prod), NOW);
    assert!(p.changes.is_empty(), "{:#?}", p.changes);
    let on = |subject: &str| -> Vec<(String, String)> {
        p.blocked
            .iter()
            .filter(|b| b.subject == subject)
            .map(|b| (b.rule.clone(), b.reason.clone()))
            .collect()
    };
    let latest = on("b/prod:latest");
    let rules: Vec<&str> = latest.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(rules, ["latest-pin", "p"], "{:#?}", p.blocked);
    for (_, reason) in &latest {
        assert!(reason.starts_with("conflict: p wants sha256:"), "{reason}");
        assert!(
            reason.contains("latest-pin wants b/prod:edge (itself in conflict)"),
            "{reason}"
        );
    }
    assert_eq!(
        on("b/prod:stable"),
        [(
            "stable-pin".to_string(),
            "source b/prod:edge is itself in conflict".to_string()
        )]
    );
    assert!(
        p.blocked
            .iter()
            .all(|b| !b.reason.contains("does not exist")),
        "{:#?}",
        p.blocked
    );
}

/// `newest:` picking a tag rules disagree on says so, instead of nothing.
#[test]
fn newest_on_a_conflicted_tag_is_blocked_with_the_reason() {
    let desired = policy(
        "registries:\n  a: {url: oci:a}\n  b: {url: oci:b}\n\
         mirrors:\n  - {name: m, from: a/src, to: b/prod}\n\
         retags:\n  - {name: pin, tag: b/prod:2.0.0, from: b/prod:1.0.0}\n\
         \x20 - {name: top, tag: b/prod:latest, newest: {repo: b/prod, tags: {semver: \"*\"}}}\n",
    );
    let src = [("2.0.0".to_string(), 1)].into();
    let prod = [("1.0.0".to_string(), 3)].into();
    let p = plan(&desired, &world(&src, &BTreeMap::new(), &prod), NOW);
    assert!(p.changes.is_empty(), "{:#?}", p.changes);
    let top: Vec<&str> = p
        .blocked
        .iter()
        .filter(|b| b.rule == "top")
        .map(|b| b.reason.as_str())
        .collect();
    assert_eq!(
        top,
        ["newest of b/prod is 2.0.0, which is itself in conflict"],
        "{:#?}",
        p.blocked
    );
}

#[test]
fn promotion_gates_block_with_reasons() {
    let desired = policy(
        "registries:\n  a: {url: oci:a}\n  b: {url: oci:b}\n\
         promotions:\n  - name: p\n    from: a/src\n    to: b/prod\n    require: {min_age: 1d, referrers: [application/vnd.cyclonedx+json]}\n",
    );
    // digest 0: brand new with SBOM; 1: old (40000s) without; 2: 80000s with SBOM; 3: 120000s, no SBOM.
    let src = [
        ("1.0.0".to_string(), 0),
        ("1.1.0".to_string(), 1),
        ("2.0.0".to_string(), 2),
        ("edge".to_string(), 3),
    ]
    .into();
    let p = plan(
        &desired,
        &world(&src, &BTreeMap::new(), &BTreeMap::new()),
        NOW,
    );
    let reasons: BTreeMap<&str, &str> = p
        .blocked
        .iter()
        .map(|b| (b.subject.as_str(), b.reason.as_str()))
        .collect();
    assert!(
        reasons["a/src:1.0.0"].starts_with("too young"),
        "{reasons:?}"
    );
    assert!(
        reasons["a/src:1.1.0"].starts_with("too young"),
        "{reasons:?}"
    );
    assert!(
        reasons["a/src:2.0.0"].starts_with("too young"),
        "{reasons:?}"
    );
    assert_eq!(
        reasons["a/src:edge"],
        "missing referrer: application/vnd.cyclonedx+json"
    );
    assert!(p.changes.is_empty());
}

#[test]
fn an_in_sync_world_needs_no_image_details() {
    // The no-op floor: once targets match, the plan reads nothing beyond tags and HEADs.
    let desired = policy(
        "registries:\n  a: {url: oci:a}\n  b: {url: oci:b}\n\
         mirrors:\n  - from: a/src\n    to: b/dst\n\
         retags:\n  - tag: b/dst:stable\n    from: b/dst:1.0.0\n",
    );
    let tags: BTreeMap<String, u8> = [("1.0.0".to_string(), 1), ("2.0.0".to_string(), 2)].into();
    let mut dst = tags.clone();
    dst.insert("stable".into(), 1);
    let observed = world(&tags, &dst, &BTreeMap::new());
    assert!(plan(&desired, &observed, NOW).changes.is_empty());
    assert_eq!(
        regimen::plan::wanted(&desired, &observed, NOW).details,
        vec![]
    );
    // A plain mirror copy reads no details even when a tag is missing ...
    dst.remove("2.0.0");
    let observed = world(&tags, &dst, &BTreeMap::new());
    assert_eq!(
        regimen::plan::wanted(&desired, &observed, NOW).details,
        vec![]
    );
    // ... while a gated promotion reads exactly the candidate it checks.
    let gated = policy(
        "registries:\n  a: {url: oci:a}\n  b: {url: oci:b}\n\
         promotions:\n  - name: p\n    from: a/src\n    to: b/dst\n    require: {min_age: 1h}\n",
    );
    assert_eq!(
        regimen::plan::wanted(&gated, &observed, NOW).details,
        vec![(addr("a/src"), digest(2))]
    );
}

/// Retention over a mirror's and a promotion's targets while their sources
/// cannot be read: which tags those rules keep is unknown, so nothing there
/// is deleted (the same world with readable sources deletes).
#[test]
fn retention_keeps_targets_whose_source_is_unread() {
    for kind in ["mirrors", "promotions"] {
        let desired = policy(&format!(
            "registries:\n  a: {{url: oci:a}}\n  b: {{url: oci:b}}\n\
             {kind}:\n  - {{name: up, from: a/src, to: b/prod}}\n\
             retention:\n  - {{name: old, repos: [b/prod], delete: {{older_than: 1d}}}}\n"
        ));
        // 1.0.0 is old, 2.0.0 new (and `min_keep: 1` keeps one anyway).
        let tags: BTreeMap<String, u8> =
            [("1.0.0".to_string(), 3), ("2.0.0".to_string(), 0)].into();
        let mut observed = world(&tags, &BTreeMap::new(), &tags);
        let p = plan(&desired, &observed, NOW);
        assert!(
            p.changes.is_empty(),
            "{kind}: in place, kept: {:?}",
            p.changes
        );
        // A tag the source no longer has goes once the source says so...
        let known = world(&BTreeMap::new(), &BTreeMap::new(), &tags);
        let p = plan(&desired, &known, NOW);
        assert_eq!(p.changes.len(), 1, "{kind}: {:?}", p.changes);
        // ...but not while the source cannot be read.
        observed
            .repos
            .insert(addr("a/src"), unknown("503 Service Unavailable"));
        let p = plan(&desired, &observed, NOW);
        assert!(p.changes.is_empty(), "{kind}: {:?}", p.changes);
        assert!(
            p.blocked
                .iter()
                .any(|b| b.reason.contains("a/src of up could not be read")),
            "{kind}: {:?}",
            p.blocked
        );
    }
}

/// A `newest` retag whose candidates include an image whose details could
/// not be read does not take it for the oldest (and move its tag back to an
/// older image): it waits, saying why.
#[test]
fn newest_waits_for_creation_times_it_could_not_read() {
    let desired = policy(
        "registries:\n  a: {url: oci:a}\n  b: {url: oci:b}\n\
         retags:\n  - tag: a/src:latest\n    newest: {repo: a/src, tags: {glob: \"build-*\"}}\n",
    );
    // build-0 is the newest image (digest 0), and `latest` is on it.
    let tags: BTreeMap<String, u8> = [
        ("build-0".to_string(), 0),
        ("build-1".to_string(), 1),
        ("latest".to_string(), 0),
    ]
    .into();
    let mut observed = world(&tags, &BTreeMap::new(), &BTreeMap::new());
    let p = plan(&desired, &observed, NOW);
    assert!(p.changes.is_empty(), "in place: {:?}", p.changes);
    observed
        .images
        .insert((addr("a/src"), digest(0)), unknown("config blob: 503"));
    let p = plan(&desired, &observed, NOW);
    assert!(
        p.changes.is_empty(),
        "latest must not move back: {:?}",
        p.changes
    );
    assert!(
        p.blocked
            .iter()
            .any(|b| b.reason.contains("a/src:build-0 could not be read")),
        "{:?}",
        p.blocked
    );
}

/// A signature tag whose HEAD failed on one side of a mirror leaves the
/// plan incomplete, naming it: the signature may be missing at the target.
#[test]
fn an_unread_referrer_tag_makes_the_plan_incomplete() {
    let desired = policy("registries:\n  a: {url: oci:a}\n  b: {url: oci:b}\nmirrors:\n  - from: a/src\n    to: b/dst\n");
    let tags: BTreeMap<String, u8> = [("1.0.0".to_string(), 1)].into();
    let mut observed = world(&tags, &tags, &BTreeMap::new());
    let sig: Tag = format!("{}.sig", digest(1).as_str().replace(':', "-"))
        .parse()
        .unwrap();
    for r in ["a/src", "b/dst"] {
        if let Some(Fact::Known(state)) = observed.repos.get_mut(&addr(r)) {
            state.referrer_tags.insert(sig.clone());
        }
    }
    observed
        .referrer_tags
        .insert((addr("a/src"), sig.clone()), Fact::Known(digest(9)));
    observed
        .referrer_tags
        .insert((addr("b/dst"), sig.clone()), Fact::Known(digest(9)));
    let p = plan(&desired, &observed, NOW);
    assert!(p.changes.is_empty() && p.complete, "{:?}", p.changes);
    observed
        .referrer_tags
        .insert((addr("b/dst"), sig.clone()), unknown("HEAD: 502"));
    let p = plan(&desired, &observed, NOW);
    assert!(p.changes.is_empty(), "{:?}", p.changes);
    assert!(!p.complete);
    assert!(
        p.unobserved
            .iter()
            .any(|u| u.subject == format!("b/dst:{sig}") && u.reason == "HEAD: 502"),
        "{:?}",
        p.unobserved
    );
}

/// A retag whose source cannot be read still holds its tag: a mirror
/// wanting the same tag does not take it meanwhile (as when the source
/// is readable: both are blocked as a conflict).
#[test]
fn a_retag_with_an_unread_source_still_holds_its_tag() {
    let desired = policy(
        "registries:\n  a: {url: oci:a}\n  b: {url: oci:b}\n\
         mirrors:\n  - from: a/src\n    to: b/prod\n    tags: [latest]\n\
         retags:\n  - tag: b/prod:latest\n    from: b/dst:edge\n",
    );
    let src = [("latest".to_string(), 1)].into();
    let dst = [("edge".to_string(), 2)].into();
    let mut observed = world(&src, &dst, &BTreeMap::new());
    let p = plan(&desired, &observed, NOW);
    assert!(p.changes.is_empty(), "{:?}", p.changes);
    observed
        .repos
        .insert(addr("b/dst"), unknown("connection refused"));
    let p = plan(&desired, &observed, NOW);
    assert!(
        p.changes.is_empty(),
        "the mirror must not move the retag's tag: {:?}",
        p.changes
    );
    assert_eq!(p.blocked.len(), 2, "{:?}", p.blocked);
}

/// Versions rank above other tags without creation times: an unread image
/// under a non-version tag does not hold up `latest: 1` over versions.
#[test]
fn unread_details_of_a_non_version_tag_do_not_hold_up_versions() {
    let desired = policy(
        "registries:\n  a: {url: oci:a}\n  b: {url: oci:b}\n\
         mirrors:\n  - {from: a/src, to: b/dst, tags: {latest: 1}}\n",
    );
    let tags: BTreeMap<String, u8> = [("1.0.0".to_string(), 1), ("edge".to_string(), 0)].into();
    let mut observed = world(&tags, &BTreeMap::new(), &BTreeMap::new());
    observed
        .images
        .insert((addr("a/src"), digest(0)), unknown("config blob: 503"));
    let p = plan(&desired, &observed, NOW);
    let targets: Vec<&str> = p.changes.iter().map(|c| c.target.as_str()).collect();
    assert_eq!(targets, ["b/dst:1.0.0"], "{:?}", p.blocked);
}

/// A pruning mirror does not prune a repo another mirror writes while that
/// one's source cannot be read: which tags it keeps there is unknown.
#[test]
fn prune_waits_while_another_writer_of_the_repo_is_unread() {
    let desired = policy(
        "registries:\n  a: {url: oci:a}\n  b: {url: oci:b}\n\
         mirrors:\n  - {name: one, from: a/src, to: b/prod, prune: true}\n  - {name: two, from: b/dst, to: b/prod}\n",
    );
    let src: BTreeMap<String, u8> = [("1.0.0".to_string(), 1)].into();
    let dst: BTreeMap<String, u8> = [("2.0.0".to_string(), 2)].into();
    let prod: BTreeMap<String, u8> = [("1.0.0".to_string(), 1), ("2.0.0".to_string(), 2)].into();
    let mut observed = world(&src, &dst, &prod);
    let p = plan(&desired, &observed, NOW);
    assert!(p.changes.is_empty(), "two keeps 2.0.0: {:?}", p.changes);
    observed
        .repos
        .insert(addr("b/dst"), unknown("connection refused"));
    let p = plan(&desired, &observed, NOW);
    assert!(
        p.changes.is_empty(),
        "2.0.0 must not be pruned: {:?}",
        p.changes
    );
    assert!(
        p.blocked
            .iter()
            .any(|b| b.rule == "one" && b.reason.contains("nothing is pruned")),
        "{:?}",
        p.blocked
    );
}

/// `latest: N` with no more than N candidates selects them all whatever
/// their order: an unread creation time changes nothing, and the mirror's
/// own prune goes on (it judges what FROM has, not the order).
#[test]
fn an_unread_time_that_cannot_change_the_selection_blocks_nothing() {
    let desired = policy(
        "registries:\n  a: {url: oci:a}\n  b: {url: oci:b}\n\
         mirrors:\n  - {from: a/src, to: b/dst, tags: {latest: 10}, prune: true}\n",
    );
    let src: BTreeMap<String, u8> = [("1.0.0".to_string(), 1), ("main".to_string(), 0)].into();
    let dst: BTreeMap<String, u8> = [
        ("1.0.0".to_string(), 1),
        ("main".to_string(), 0),
        ("old".to_string(), 2),
    ]
    .into();
    let mut observed = world(&src, &dst, &BTreeMap::new());
    observed
        .images
        .insert((addr("a/src"), digest(0)), unknown("config blob: 503"));
    let p = plan(&desired, &observed, NOW);
    assert!(p.blocked.is_empty(), "{:?}", p.blocked);
    let targets: Vec<&str> = p.changes.iter().map(|c| c.target.as_str()).collect();
    assert_eq!(targets, ["b/dst:old"], "{:?}", p.changes);
}
