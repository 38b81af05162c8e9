//! The planner's vulnerability gates and registry-side policies, on
//! hand-built observed worlds (pure: no registry). The same behaviour on a
//! real `docker-registry` is in `gates_registry.rs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use regimen::config::{self, Severity};
use regimen::model::{Digest, RepoAddr, Timestamp};
use regimen::observe::{Fact, ImageInfo, Observed, ReferrerInfo, RepoState};
use regimen::plan::{plan, Plan};
use regimen::scan::{Finding, Report};

const NOW: Timestamp = Timestamp(1_800_000_000);
const DAY: i64 = 86_400;
const SARIF: &str = "application/sarif+json";
const TRIVY: &str = "application/vnd.aquasec.trivy.report+json";

fn d(s: &str) -> Digest {
    Digest::sha256_of(s.as_bytes())
}
fn addr(s: &str) -> RepoAddr {
    s.parse().unwrap()
}
fn policy(yaml: &str) -> config::Policy {
    let text = format!(
        "registries:\n  staging: {{url: \"http://127.0.0.1:5001\"}}\n  prod: {{url: \"http://127.0.0.1:5002\"}}\n{yaml}"
    );
    config::load_texts(Path::new("."), &[(Arc::from("p.yaml"), text)])
        .unwrap_or_else(|e| panic!("{e:?}\n{yaml}"))
}

fn finding(id: &str, sev: Option<Severity>, fixed: Option<bool>) -> Finding {
    Finding {
        id: id.into(),
        severity: sev,
        fixed,
        package: "pkg".into(),
    }
}
fn report(tool: &str, days_old: i64, findings: Vec<Finding>) -> Report {
    Report {
        tool: tool.into(),
        created: Some(Timestamp(NOW.0 - days_old * DAY)),
        findings,
    }
}

/// `staging/team/api` with the given tags, each image 10 days old with its
/// referrers (artifact type, what observe read of it); `prod/team/api` empty.
struct World(Observed);

impl World {
    fn new() -> World {
        let mut o = Observed::default();
        o.repos
            .insert(addr("staging/team/api"), Fact::Known(RepoState::default()));
        o.repos
            .insert(addr("prod/team/api"), Fact::Known(RepoState::default()));
        World(o)
    }
    fn tag(mut self, tag: &str, info: ImageInfo, reports: Vec<(&str, Fact<Vec<Report>>)>) -> World {
        let repo = addr("staging/team/api");
        let digest = d(tag);
        let mut info = info;
        for (i, (ty, fact)) in reports.into_iter().enumerate() {
            let rd = d(&format!("{tag}-report-{i}"));
            info.referrers.push(ReferrerInfo {
                digest: rd.clone(),
                artifact_type: ty.into(),
            });
            self.0.reports.insert((repo.clone(), rd), fact);
        }
        if let Some(Fact::Known(s)) = self.0.repos.get_mut(&repo) {
            s.tags.insert(tag.parse().unwrap(), digest.clone());
        }
        self.0.images.insert((repo, digest), Fact::Known(info));
        self
    }
}

fn img(days_old: i64) -> ImageInfo {
    ImageInfo {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        created: Some(Timestamp(NOW.0 - days_old * DAY)),
        ..Default::default()
    }
}

fn blocked(p: &Plan) -> BTreeMap<String, String> {
    p.blocked
        .iter()
        .map(|b| (b.subject.clone(), b.reason.clone()))
        .collect()
}
fn copied(p: &Plan) -> Vec<String> {
    p.changes.iter().map(|c| c.target.clone()).collect()
}

fn promotion(require: &str) -> String {
    format!(
        "promotions:\n  - name: api\n    from: staging/team/api\n    to: prod/team/api\n    require: {require}\n"
    )
}

#[test]
fn critical_blocks_low_passes_missing_blocks() {
    let w = World::new()
        .tag(
            "1.5.0",
            img(10),
            vec![(
                TRIVY,
                Fact::Known(vec![report(
                    "trivy",
                    1,
                    vec![
                        finding("CVE-2026-1234", Some(Severity::Critical), Some(true)),
                        finding("CVE-2024-1", Some(Severity::Low), Some(false)),
                    ],
                )]),
            )],
        )
        .tag(
            "1.4.9",
            img(10),
            vec![(
                SARIF,
                Fact::Known(vec![report(
                    "trivy",
                    1,
                    vec![finding("CVE-2024-1", Some(Severity::Low), None)],
                )]),
            )],
        )
        .tag("1.4.8", img(10), vec![])
        .tag(
            "1.4.7",
            img(10),
            vec![(
                SARIF,
                Fact::Unknown {
                    reason: "report sha256:ab: not valid JSON".into(),
                },
            )],
        );
    let p = plan(
        &policy(&promotion("{vulnerabilities: {max_severity: high}}")),
        &w.0,
        NOW,
    );
    assert_eq!(copied(&p), ["prod/team/api:1.4.9"]);
    let b = blocked(&p);
    assert_eq!(
        b["staging/team/api:1.5.0"],
        "critical vulnerability CVE-2026-1234 (trivy)"
    );
    assert_eq!(b["staging/team/api:1.4.8"], "no scan report");
    assert_eq!(
        b["staging/team/api:1.4.7"],
        "scan report unreadable: report sha256:ab: not valid JSON"
    );
}

#[test]
fn scanners_counts_distinct_tools() {
    let trivy = || Fact::Known(vec![report("trivy", 1, vec![])]);
    let grype = || Fact::Known(vec![report("grype", 1, vec![])]);
    let w = World::new()
        .tag("1.0.0", img(10), vec![(SARIF, trivy())])
        .tag("1.0.1", img(10), vec![(SARIF, trivy()), (TRIVY, trivy())])
        .tag("1.0.2", img(10), vec![(SARIF, trivy()), (SARIF, grype())]);
    let p = plan(
        &policy(&promotion(
            "{vulnerabilities: {max_severity: high, scanners: 2}}",
        )),
        &w.0,
        NOW,
    );
    assert_eq!(copied(&p), ["prod/team/api:1.0.2"]);
    let b = blocked(&p);
    assert_eq!(
        b["staging/team/api:1.0.0"],
        "scan reports from 1 scanner (trivy), scanners: 2 required"
    );
    assert_eq!(b["staging/team/api:1.0.1"], b["staging/team/api:1.0.0"]);
}

#[test]
fn ignore_unfixed_and_unknown_severity() {
    let findings = || {
        vec![
            finding("CVE-2025-0665", Some(Severity::High), Some(false)),
            finding("CVE-2025-7", None, None),
        ]
    };
    let w = World::new().tag(
        "2.0.0",
        img(10),
        vec![(SARIF, Fact::Known(vec![report("grype", 1, findings())]))],
    );
    let strict = plan(
        &policy(&promotion("{vulnerabilities: {max_severity: medium}}")),
        &w.0,
        NOW,
    );
    // Unknown severity counts as critical, and fix state unknown is kept.
    assert_eq!(
        blocked(&strict)["staging/team/api:2.0.0"],
        "critical vulnerability CVE-2025-7 (grype, unknown severity); 1 more above medium"
    );
    let w = World::new().tag(
        "2.0.0",
        img(10),
        vec![(
            SARIF,
            Fact::Known(vec![report(
                "grype",
                1,
                vec![finding("CVE-2025-0665", Some(Severity::High), Some(false))],
            )]),
        )],
    );
    let lenient = plan(
        &policy(&promotion(
            "{vulnerabilities: {max_severity: medium, ignore_unfixed: true}}",
        )),
        &w.0,
        NOW,
    );
    assert_eq!(copied(&lenient), ["prod/team/api:2.0.0"]);
}

#[test]
fn old_and_undated_reports_do_not_count() {
    let w = World::new()
        .tag(
            "3.0.0",
            img(10),
            vec![(SARIF, Fact::Known(vec![report("trivy", 9, vec![])]))],
        )
        .tag(
            "3.0.1",
            img(10),
            vec![(
                SARIF,
                Fact::Known(vec![Report {
                    tool: "trivy".into(),
                    created: None,
                    findings: vec![],
                }]),
            )],
        )
        .tag(
            "3.0.2",
            img(10),
            vec![(SARIF, Fact::Known(vec![report("trivy", 2, vec![])]))],
        )
        .tag(
            "3.0.3",
            img(10),
            vec![(SARIF, Fact::Known(vec![report("trivy", -30, vec![])]))],
        );
    let p = plan(
        &policy(&promotion(
            "{vulnerabilities: {max_severity: high, max_report_age: 7d}}",
        )),
        &w.0,
        NOW,
    );
    assert_eq!(copied(&p), ["prod/team/api:3.0.2"]);
    // Dated 30 days ahead: no age that max_report_age could check.
    assert_eq!(
        blocked(&p)["staging/team/api:3.0.3"],
        "scan report from trivy is dated 30d ahead of now: max_report_age cannot be checked"
    );
    let b = blocked(&p);
    assert_eq!(
        b["staging/team/api:3.0.0"],
        "scan report from trivy is too old: 9d old, max_report_age 7d"
    );
    assert_eq!(
        b["staging/team/api:3.0.1"],
        "scan report from trivy has no time: max_report_age cannot be checked"
    );
}

#[test]
fn every_failed_requirement_is_named() {
    let w = World::new().tag(
        "4.0.0",
        img(0),
        vec![(
            SARIF,
            Fact::Known(vec![report(
                "trivy",
                0,
                vec![
                    finding("CVE-1", Some(Severity::Critical), Some(true)),
                    finding("CVE-2", Some(Severity::Critical), Some(true)),
                    finding("CVE-3", Some(Severity::Critical), Some(true)),
                    finding("CVE-4", Some(Severity::Critical), Some(true)),
                ],
            )]),
        )],
    );
    let p = plan(
        &policy(&promotion(
            "{min_age: 1d, referrers: [application/vnd.cyclonedx+json], vulnerabilities: {max_severity: high}}",
        )),
        &w.0,
        NOW,
    );
    assert_eq!(
        blocked(&p)["staging/team/api:4.0.0"],
        "too young: created 0s ago, min_age 1d; missing referrer: application/vnd.cyclonedx+json; \
         critical vulnerabilities CVE-1 (trivy), CVE-2 (trivy), CVE-3 (trivy) and 1 more"
    );
}

#[test]
fn custom_artifact_types_replace_the_defaults() {
    let w = World::new().tag(
        "5.0.0",
        img(10),
        vec![(SARIF, Fact::Known(vec![report("trivy", 1, vec![])]))],
    );
    let p = plan(
        &policy(&promotion(
            "{vulnerabilities: {max_severity: high, artifact_types: [application/vnd.example.scan+json]}}",
        )),
        &w.0,
        NOW,
    );
    assert_eq!(blocked(&p)["staging/team/api:5.0.0"], "no scan report");
}

#[test]
fn reports_needed_lists_only_gated_report_referrers() {
    let w = World::new().tag(
        "1.0.0",
        img(10),
        vec![
            (SARIF, Fact::Known(vec![])),
            ("application/vnd.cyclonedx+json", Fact::Known(vec![])),
        ],
    );
    let pol = policy(&promotion("{vulnerabilities: {max_severity: high}}"));
    let need = regimen::plan::wanted(&pol, &w.0, NOW).reports;
    assert_eq!(need, [(addr("staging/team/api"), d("1.0.0-report-0"))]);
    let none = regimen::plan::wanted(&policy(&promotion("{min_age: 1d}")), &w.0, NOW).reports;
    assert!(none.is_empty());
}

fn base(mut i: ImageInfo, b: Option<&str>) -> ImageInfo {
    i.base_name = b.map(String::from);
    i
}

#[test]
fn policies_report_base_images_and_max_age() {
    let w = World::new()
        .tag(
            "ok",
            base(img(10), Some("127.0.0.1:5002/mirror/debian:12-slim")),
            vec![],
        )
        .tag(
            "hub",
            base(img(10), Some("docker.io/library/debian:12")),
            vec![],
        )
        .tag("bare", base(img(10), None), vec![])
        .tag(
            "old",
            base(img(400), Some("prod/mirror/debian@sha256:00")),
            vec![],
        );
    let pol = policy(
        "promotions:\n  - {name: api, from: staging/team/api, to: prod/team/api}\n\
         policies: {base_images: [\"prod/mirror/*\"], max_age: 180d}\n",
    );
    let p = plan(&pol, &w.0, NOW);
    let v: Vec<(String, Option<String>, String, String)> = p
        .violations
        .iter()
        .map(|v| {
            (
                v.policy.clone(),
                v.kind.clone(),
                v.subject.clone(),
                v.message.clone(),
            )
        })
        .collect();
    let s = |x: &str| x.to_string();
    // The source's images as they are, and the copies the promotion makes
    // as they will be: a pull request's plan shows what its merge brings.
    assert_eq!(
        v,
        [
            (
                s("base_images"),
                Some(s("missing")),
                s("prod/team/api:bare"),
                s("no base image annotation (org.opencontainers.image.base.name); \
                   comes with this plan: promotion of staging/team/api:bare")
            ),
            (
                s("base_images"),
                Some(s("not_allowed")),
                s("prod/team/api:hub"),
                s("base image docker.io/library/debian:12 matches none of base_images (prod/mirror/*); \
                   comes with this plan: promotion of staging/team/api:hub")
            ),
            (
                s("base_images"),
                Some(s("missing")),
                s("staging/team/api:bare"),
                s("no base image annotation (org.opencontainers.image.base.name)")
            ),
            (
                s("base_images"),
                Some(s("not_allowed")),
                s("staging/team/api:hub"),
                s("base image docker.io/library/debian:12 matches none of base_images (prod/mirror/*)")
            ),
            (
                s("max_age"),
                None,
                s("prod/team/api:old"),
                s("created 400d ago, max_age 180d; comes with this plan: promotion of staging/team/api:old")
            ),
            (
                s("max_age"),
                None,
                s("staging/team/api:old"),
                s("created 400d ago, max_age 180d")
            ),
        ]
    );
    assert_eq!(p.summary.violations, 6);
    // warn: promotions go ahead anyway.
    assert_eq!(p.changes.len(), 4);
}

#[test]
fn enforce_blocks_promotions_of_violating_images() {
    let w = World::new()
        .tag("ok", base(img(10), Some("prod/mirror/debian:12")), vec![])
        .tag("old", base(img(400), Some("prod/mirror/debian:12")), vec![]);
    let pol = policy(
        "promotions:\n  - {name: api, from: staging/team/api, to: prod/team/api}\n\
         policies: {base_images: [\"prod/mirror/*\"], max_age: 180d, on_violation: enforce}\n",
    );
    let p = plan(&pol, &w.0, NOW);
    assert_eq!(copied(&p), ["prod/team/api:ok"]);
    assert_eq!(
        blocked(&p)["staging/team/api:old"],
        "policy max_age: created 400d ago, max_age 180d"
    );
}

fn violations(p: &Plan) -> Vec<(String, String, String)> {
    p.violations
        .iter()
        .map(|v| (v.policy.clone(), v.subject.clone(), v.message.clone()))
        .collect()
}

/// A mirror's source is upstream, not judged; what the mirror copies into
/// the managed target is, before it lands: a pull request's plan must show
/// what merging it brings, not only the plan after the apply.
#[test]
fn images_a_mirror_brings_are_judged_before_they_land() {
    let mut w = World::new()
        .tag("ok", img(10), vec![])
        .tag("old", img(400), vec![]);
    let pol = policy(
        "mirrors:\n  - {name: m, from: staging/team/api, to: prod/team/api}\n\
         policies: {max_age: 180d, on_violation: fail}\n",
    );
    let p = plan(&pol, &w.0, NOW);
    assert_eq!(copied(&p), ["prod/team/api:ok", "prod/team/api:old"]);
    let s = |x: &str| x.to_string();
    assert_eq!(
        violations(&p),
        [(
            s("max_age"),
            s("prod/team/api:old"),
            s("created 400d ago, max_age 180d; comes with this plan: mirror of staging/team/api:old")
        )]
    );
    // Applied: the same violation, now of what is there; a tag in place
    // is not judged twice.
    let prod = addr("prod/team/api");
    for tag in ["ok", "old"] {
        if let Some(Fact::Known(st)) = w.0.repos.get_mut(&prod) {
            st.tags.insert(tag.parse().unwrap(), d(tag));
        }
        let info = w.0.images[&(addr("staging/team/api"), d(tag))].clone();
        w.0.images.insert((prod.clone(), d(tag)), info);
    }
    let p = plan(&pol, &w.0, NOW);
    assert!(p.changes.is_empty(), "{:?}", p.changes);
    assert_eq!(
        violations(&p),
        [(
            s("max_age"),
            s("prod/team/api:old"),
            s("created 400d ago, max_age 180d")
        )]
    );
}

#[test]
fn enforce_blocks_copies_and_retags_of_violating_images() {
    let w = World::new()
        .tag("ok", base(img(10), Some("prod/mirror/debian:12")), vec![])
        .tag("old", base(img(400), Some("prod/mirror/debian:12")), vec![])
        .tag(
            "hub",
            base(img(10), Some("docker.io/library/debian:12")),
            vec![],
        );
    let pol = policy(
        "mirrors:\n  - {name: m, from: staging/team/api, to: prod/team/api}\n\
         retags:\n  - {tag: prod/team/api:stable, from: staging/team/api:old}\n\
         \x20 - {tag: prod/team/api:latest, from: staging/team/api:ok}\n\
         \x20 - {tag: prod/team/far:1, from: prod/team/api:hub}\n\
         policies: {base_images: [\"prod/mirror/*\"], max_age: 180d, on_violation: enforce}\n",
    );
    let mut w = w;
    w.0.repos
        .insert(addr("prod/team/far"), Fact::Known(RepoState::default()));
    let p = plan(&pol, &w.0, NOW);
    assert_eq!(copied(&p), ["prod/team/api:ok", "prod/team/api:latest"]);
    let b = blocked(&p);
    assert_eq!(
        b["prod/team/api:old"],
        "policy max_age: created 400d ago, max_age 180d"
    );
    assert_eq!(
        b["prod/team/api:stable"],
        "policy max_age: created 400d ago, max_age 180d"
    );
    assert_eq!(
        b["prod/team/api:hub"],
        "policy base_images: base image docker.io/library/debian:12 matches none of base_images (prod/mirror/*)"
    );
    // Nothing builds on a blocked copy: the retag from it is not planned
    // (its source is not there, and will not be).
    assert!(
        b.get("prod/team/far:1")
            .is_some_and(|r| r.contains("does not exist")),
        "{b:?}"
    );
    // What is blocked does not come, so it is no violation of the target.
    assert!(
        violations(&p).iter().all(|v| !v.1.starts_with("prod/")),
        "{:?}",
        p.violations
    );
}

#[test]
fn enforce_blocks_a_copy_whose_image_could_not_be_read() {
    let mut w = World::new().tag("ok", img(10), vec![]);
    w.0.images.insert(
        (addr("staging/team/api"), d("ok")),
        Fact::Unknown {
            reason: "timeout".into(),
        },
    );
    let pol = policy(
        "mirrors:\n  - {name: m, from: staging/team/api, to: prod/team/api}\n\
         policies: {max_age: 180d, on_violation: enforce}\n",
    );
    let p = plan(&pol, &w.0, NOW);
    assert!(p.changes.is_empty(), "{:?}", p.changes);
    assert_eq!(
        blocked(&p)["prod/team/api:ok"],
        "image details could not be read: timeout"
    );
    assert!(!p.complete);
}

#[test]
fn hosts_present_images_from_other_registries_violate() {
    let pol = policy(
        "hosts:\n  build-01:\n    endpoint: unix:///var/run/docker.sock\n    images: {present: [staging/team/api:1.0.0, prod/team/api:1.0.0]}\n\
         policies: {registries: [prod]}\n",
    );
    let p = plan(&pol, &World::new().0, NOW);
    assert_eq!(p.violations.len(), 1);
    assert_eq!(p.violations[0].policy, "registries");
    assert_eq!(
        p.violations[0].subject,
        "host:build-01/staging/team/api:1.0.0"
    );
    assert_eq!(
        p.violations[0].message,
        "registry `staging` is not one of policies.registries (prod)"
    );
}

#[test]
fn unknown_details_are_unobserved_not_clean_or_violating() {
    let mut w = World::new();
    let repo = addr("staging/team/api");
    if let Some(Fact::Known(s)) = w.0.repos.get_mut(&repo) {
        s.tags.insert("x".parse().unwrap(), d("x"));
    }
    w.0.images.insert(
        (repo, d("x")),
        Fact::Unknown {
            reason: "timeout".into(),
        },
    );
    let pol = policy(
        "promotions:\n  - {name: api, from: staging/team/api, to: prod/team/api}\n\
         policies: {base_images: [\"prod/mirror/*\"]}\n",
    );
    let p = plan(&pol, &w.0, NOW);
    assert!(p.violations.is_empty());
    assert!(!p.complete);
}

#[test]
fn gate_and_policy_keys_are_validated_with_locations() {
    let text = "registries:\n  staging: {url: \"http://127.0.0.1:5001\"}\n\
        promotions:\n  - name: api\n    from: staging/a\n    to: staging/b\n    require:\n      vulnerabilities: {max_severity: hihg, artifact_types: [], scaners: 2}\n\
        policies: {base_images: [\"prod/[mirror\"]}\n";
    let errs =
        config::load_texts(Path::new("."), &[(Arc::from("p.yaml"), text.to_string())]).unwrap_err();
    let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let all = msgs.join("\n");
    assert!(
        all.contains("p.yaml:8:")
            && all.contains("unknown severity `hihg`")
            && all.contains("did you mean `high`"),
        "{all}"
    );
    assert!(
        all.contains("`artifact_types` must name at least one artifact type"),
        "{all}"
    );
    assert!(all.contains("did you mean `scanners`"), "{all}");
    assert!(
        all.contains("p.yaml:9:") && all.contains("`prod/[mirror` is not a valid glob"),
        "{all}"
    );
}

/// An image created "in the future" (a builder's clock ahead) is too young
/// for any `min_age`, and the reason says so rather than "0s ago".
#[test]
fn a_creation_time_in_the_future_is_said_as_such() {
    let w = World::new().tag("5.0.0", img(-2), vec![]);
    let p = plan(&policy(&promotion("{min_age: 1h}")), &w.0, NOW);
    assert_eq!(
        blocked(&p)["staging/team/api:5.0.0"],
        "too young: created 2d in the future (the builder's clock?), min_age 1h"
    );
    assert!(copied(&p).is_empty());
}
