//! Referrers that a source registry indexes itself (the OCI 1.1 referrers
//! API; an OCI layout's `subject` manifests) follow images copied before
//! they were attached. The source here is an OCI layout, which keeps no
//! `sha256-<hex>` tags; the target a real `docker-registry` (no referrers
//! API), which gets each one added to its tag-schema index.

mod common;

use common::{block_on, json_plan, open, regimen, run, TestRegistry};
use regimen::model::{Digest, Repo};
use regimen::registry::oci_layout::OciLayout;
use regimen::registry::Registry;
use regimen::testkit::{push_image, push_referrer, ImageSpec};
use serde_json::Value;

const SBOM: &str = "application/vnd.cyclonedx+json";
const SCAN: &str = "application/vnd.trivy.report+json";
const NOTARY: &str = "application/vnd.cncf.notary.signature";

fn repo() -> Repo {
    "team/app".parse().unwrap()
}

fn plan(dir: &std::path::Path) -> (i32, Value, String) {
    let (code, v, out) = json_plan(
        regimen()
            .args(["plan", "--format", "json", "--detailed-exitcode", "-C"])
            .arg(dir),
    );
    assert!(code == 0 || code == 2, "plan failed ({code}):\n{out}");
    (code, v, out)
}

fn apply(dir: &std::path::Path) -> String {
    let (code, out) = run(regimen().args(["apply", "--auto-approve", "-C"]).arg(dir));
    assert_eq!(code, 0, "apply:\n{out}");
    out
}

/// The targets of a JSON plan's changes.
fn change_targets(v: &Value) -> Vec<String> {
    v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["target"].as_str().unwrap().to_string())
        .collect()
}

/// Digests the target lists as referrers of `subject`.
fn listed(dst: &TestRegistry, subject: &Digest) -> Vec<Digest> {
    let d = open(&dst.host);
    let mut l: Vec<Digest> = block_on(d.referrers(&repo(), subject))
        .unwrap()
        .into_iter()
        .map(|r| r.digest)
        .collect();
    l.sort();
    l
}

/// An OCI layout `src` holding `team/app:1.0` (one layer of `content`), a
/// real registry `dst`, and a policy mirroring one to the other, applied
/// once: (dst, the policy folder, src, the image's digest).
fn layout_mirrored(content: &str) -> (TestRegistry, tempfile::TempDir, OciLayout, Digest) {
    let dst = TestRegistry::start();
    let tmp = tempfile::tempdir().unwrap();
    let src = OciLayout::new("src".parse().unwrap(), tmp.path().join("src"));
    let subject = block_on(push_image(
        &src,
        &repo(),
        Some(&"1.0".parse().unwrap()),
        &ImageSpec::new("2026-01-02T03:04:05Z").with_layer("app", content),
    ))
    .unwrap();
    std::fs::write(
        tmp.path().join("policy.yaml"),
        format!(
            "registries:\n  src: {{url: oci:src}}\n  dst: {{url: \"http://{}\"}}\n\
             mirrors:\n  - {{name: app, from: src/team/app, to: dst/team/app}}\n",
            dst.host
        ),
    )
    .unwrap();
    apply(tmp.path());
    (dst, tmp, src, subject)
}

#[test]
fn referrers_attached_at_an_indexing_source_after_the_copy_follow_it() {
    let (dst, tmp, src, subject) = layout_mirrored("v1");
    let dir = tmp.path();
    assert_eq!(dst.digest("team/app", "1.0"), subject.to_string());
    assert_eq!(plan(dir).0, 0);

    // An SBOM attached at the source since: the layout lists it only as a
    // manifest whose subject is the image (no tag names it).
    let sbom = block_on(push_referrer(&src, &repo(), &subject, SBOM, b"{\"bom\":1}")).unwrap();
    let tags = block_on(src.list_tags(&repo())).unwrap();
    assert_eq!(tags, vec!["1.0".parse().unwrap()], "the layout made a tag");

    let (code, v, out) = plan(dir);
    assert_eq!(code, 2, "{out}");
    let changes = v["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{out}");
    let c = &changes[0];
    assert_eq!(c["action"], "copy");
    assert_eq!(c["target"], format!("dst/team/app@{sbom}"));
    assert_eq!(c["source"], format!("src/team/app@{sbom}"));
    assert_eq!(c["expect"], "absent");
    assert_eq!(c["rule"], "app");
    let reason = c["reason"].as_str().unwrap();
    assert!(
        reason.contains(SBOM) && reason.contains("src/team/app:1.0"),
        "{reason}"
    );
    let (_, text) = run(regimen().args(["plan", "-C"]).arg(dir));
    let short = &sbom.as_str()["sha256:".len().."sha256:".len() + 12];
    assert!(
        text.contains(&format!(
            "+ copy   src/team/app@sha256:{short} -> dst/team/app@sha256:{short}   \
             sha256:{short} (referrer ({SBOM}) of src/team/app:1.0, attached after the copy)"
        )),
        "{text}"
    );
    let (_, md) = run(regimen()
        .args(["plan", "--format", "markdown", "-C"])
        .arg(dir));
    assert!(
        md.contains(&format!("dst/team/app@sha256:{short}"))
            && md.contains("attached after the copy")
            && md.contains("1 to copy"),
        "{md}"
    );

    let out = apply(dir);
    assert!(out.contains("1 done"), "{out}");
    assert_eq!(listed(&dst, &subject), vec![sbom.clone()]);
    assert_eq!(plan(dir).0, 0, "a second run has nothing to do");

    // One more: only the new one is copied, the first stays listed.
    let scan = block_on(push_referrer(&src, &repo(), &subject, SCAN, b"{\"r\":[]}")).unwrap();
    let (code, v, out) = plan(dir);
    assert_eq!(code, 2, "{out}");
    let targets = change_targets(&v);
    assert_eq!(targets, [format!("dst/team/app@{scan}")], "{out}");
    apply(dir);
    let mut both = vec![sbom, scan];
    both.sort();
    assert_eq!(listed(&dst, &subject), both);
    // skopeo reads what landed, by digest.
    let inspected = common::skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/team/app@{}", dst.host, both[0]),
    ]);
    assert!(inspected.contains(&subject.to_string()), "{inspected}");
    assert_eq!(plan(dir).0, 0);
}

/// A registry without the referrers API (Distribution 2.8) is asked whether
/// it has it once per run, not once per copied image: a no-op stays at one
/// tag list per repo and one HEAD per tag per side.
#[test]
fn a_registry_without_the_referrers_api_is_asked_once_per_run() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let s = open(&src.host);
    for t in ["1.0", "1.1", "2.0", "2.1", "3.0"] {
        block_on(push_image(
            s.as_ref(),
            &repo(),
            Some(&t.parse().unwrap()),
            &ImageSpec::new("2026-01-02T03:04:05Z").with_layer("app", t),
        ))
        .unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("policy.yaml"),
        format!(
            "registries:\n  src: {{url: \"http://{}\"}}\n  dst: {{url: \"http://{}\"}}\n\
             mirrors:\n  - {{name: app, from: src/team/app, to: dst/team/app}}\n",
            src.host, dst.host
        ),
    )
    .unwrap();
    let asked = |reg: &TestRegistry| reg.log().matches("/referrers/").count();
    // `apply` plans and copies through the same connections: the copies
    // (which list each image's referrers) do not ask again.
    apply(tmp.path());
    assert_eq!(asked(&src), 1, "{}", src.log());
    let before = (asked(&src), asked(&dst));
    assert_eq!(plan(tmp.path()).0, 0);
    assert_eq!(asked(&src) - before.0, 1, "{}", src.log());
    assert_eq!(asked(&dst) - before.1, 0);
}

/// dev (an OCI layout) → staging → prod (real registries), with a referrer
/// attached at dev after both copies: one plan brings it to both, prod's
/// read at dev (where staging's own copy reads it).
#[test]
fn a_referrer_attached_later_goes_down_a_chain_in_one_run() {
    let (staging, prod) = (TestRegistry::start(), TestRegistry::start());
    let tmp = tempfile::tempdir().unwrap();
    let dev = OciLayout::new("dev".parse().unwrap(), tmp.path().join("dev"));
    let subject = block_on(push_image(
        &dev,
        &repo(),
        Some(&"1.0".parse().unwrap()),
        &ImageSpec::new("2026-01-02T03:04:05Z").with_layer("app", "chain"),
    ))
    .unwrap();
    std::fs::write(
        tmp.path().join("policy.yaml"),
        format!(
            "registries:\n  dev: {{url: oci:dev}}\n  staging: {{url: \"http://{}\"}}\n  \
             prod: {{url: \"http://{}\"}}\n\
             mirrors:\n  - {{name: to-staging, from: dev/team/app, to: staging/team/app}}\n  \
             - {{name: to-prod, from: staging/team/app, to: prod/team/app}}\n",
            staging.host, prod.host
        ),
    )
    .unwrap();
    let dir = tmp.path();
    apply(dir);
    assert_eq!(prod.digest("team/app", "1.0"), subject.to_string());
    assert_eq!(plan(dir).0, 0);

    let sbom = block_on(push_referrer(&dev, &repo(), &subject, SBOM, b"{\"bom\":2}")).unwrap();
    let (code, v, out) = plan(dir);
    assert_eq!(code, 2, "{out}");
    let mut got: Vec<(String, String)> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["target"].as_str().unwrap().to_string(),
                c["source"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (
                format!("prod/team/app@{sbom}"),
                format!("dev/team/app@{sbom}")
            ),
            (
                format!("staging/team/app@{sbom}"),
                format!("dev/team/app@{sbom}")
            ),
        ],
        "{out}"
    );
    apply(dir);
    assert_eq!(listed(&staging, &subject), vec![sbom.clone()]);
    assert_eq!(listed(&prod, &subject), vec![sbom]);
    assert_eq!(plan(dir).0, 0);
}

/// A source that indexes referrers itself *and* holds the image's
/// `sha256-<hex>` tag (an earlier copy from a tag-schema registry left it
/// there): one attached there since through the index still follows.
#[test]
fn an_indexed_referrer_follows_though_the_source_also_has_the_tag_index() {
    let (dev, prod) = (TestRegistry::start(), TestRegistry::start());
    let tmp = tempfile::tempdir().unwrap();
    let d = open(&dev.host);
    let subject = block_on(push_image(
        d.as_ref(),
        &repo(),
        Some(&"1.0".parse().unwrap()),
        &ImageSpec::new("2026-01-02T03:04:05Z").with_layer("app", "mixed"),
    ))
    .unwrap();
    let sbom = block_on(push_referrer(d.as_ref(), &repo(), &subject, SBOM, b"{}")).unwrap();
    std::fs::write(
        tmp.path().join("policy.yaml"),
        format!(
            "registries:\n  dev: {{url: \"http://{}\"}}\n  staging: {{url: oci:staging}}\n  \
             prod: {{url: \"http://{}\"}}\n\
             mirrors:\n  - {{name: to-staging, from: dev/team/app, to: staging/team/app}}\n  \
             - {{name: to-prod, from: staging/team/app, to: prod/team/app}}\n",
            dev.host, prod.host
        ),
    )
    .unwrap();
    let dir = tmp.path();
    apply(dir);
    let staging = OciLayout::new("staging".parse().unwrap(), tmp.path().join("staging"));
    let tags = block_on(staging.list_tags(&repo())).unwrap();
    assert!(
        tags.contains(&subject.referrers_tag()),
        "the copy from a tag-schema registry leaves the tag index: {tags:?}"
    );
    assert_eq!(listed(&prod, &subject), vec![sbom.clone()]);
    assert_eq!(plan(dir).0, 0);

    // Signed at staging, through its own index (no tag).
    let sig = block_on(push_referrer(&staging, &repo(), &subject, NOTARY, b"sig")).unwrap();
    let (code, v, out) = plan(dir);
    assert_eq!(code, 2, "{out}");
    let targets = change_targets(&v);
    assert_eq!(targets, [format!("prod/team/app@{sig}")], "{out}");
    apply(dir);
    let mut both = vec![sbom, sig];
    both.sort();
    assert_eq!(listed(&prod, &subject), both);
    assert_eq!(plan(dir).0, 0);
}

/// A saved plan's referrer copy whose image is gone from the target since
/// is stale, not pushed to describe nothing.
#[test]
fn a_saved_referrer_copy_whose_image_left_the_target_is_stale() {
    let (dst, tmp, src, subject) = layout_mirrored("gone");
    let dir = tmp.path();
    block_on(push_referrer(&src, &repo(), &subject, SBOM, b"{}")).unwrap();
    let planfile = tmp.path().join("plan.json");
    let (code, out) = run(regimen()
        .args(["plan", "--detailed-exitcode", "--out"])
        .arg(&planfile)
        .arg("-C")
        .arg(dir));
    assert_eq!(code, 2, "{out}");
    block_on(open(&dst.host).delete_manifest(&repo(), &subject)).unwrap();
    let (code, out) = run(regimen().args(["apply", "-C"]).arg(dir).arg(&planfile));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("STALE") && out.contains("is no longer there"),
        "{out}"
    );
    assert!(listed(&dst, &subject).is_empty());
}

/// Promotions follow them too: a signature added through staging's own
/// index after the promotion reaches prod on the next run.
#[test]
fn a_promoted_image_gets_referrers_attached_after_the_promotion() {
    let prod = TestRegistry::start();
    let tmp = tempfile::tempdir().unwrap();
    let staging = OciLayout::new("staging".parse().unwrap(), tmp.path().join("staging"));
    let subject = block_on(push_image(
        &staging,
        &repo(),
        Some(&"2.0.0".parse().unwrap()),
        &ImageSpec::new("2026-01-02T03:04:05Z").with_layer("app", "promoted"),
    ))
    .unwrap();
    block_on(push_referrer(&staging, &repo(), &subject, SBOM, b"{}")).unwrap();
    std::fs::write(
        tmp.path().join("policy.yaml"),
        format!(
            "registries:\n  staging: {{url: oci:staging}}\n  prod: {{url: \"http://{}\"}}\n\
             promotions:\n  - {{name: to-prod, from: staging/team/app, to: prod/team/app,\n    \
             require: {{referrers: [{SBOM}]}}}}\n",
            prod.host
        ),
    )
    .unwrap();
    let dir = tmp.path();
    apply(dir);
    assert_eq!(prod.digest("team/app", "2.0.0"), subject.to_string());
    assert_eq!(listed(&prod, &subject).len(), 1);
    assert_eq!(plan(dir).0, 0);

    let sig = block_on(push_referrer(
        &staging,
        &repo(),
        &subject,
        NOTARY,
        b"signed",
    ))
    .unwrap();
    let (code, v, out) = plan(dir);
    assert_eq!(code, 2, "{out}");
    assert_eq!(
        v["changes"][0]["target"],
        format!("prod/team/app@{sig}"),
        "{out}"
    );
    assert_eq!(v["changes"][0]["rule"], "to-prod", "{out}");
    assert_eq!(v["changes"].as_array().unwrap().len(), 1, "{out}");
    apply(dir);
    assert!(listed(&prod, &subject).contains(&sig));
    assert_eq!(plan(dir).0, 0);
}
