//! Promotions that feed each other (`dev → staging → prod`), on OCI-layout
//! registries through the CLI: one apply goes all the way, so the next plan
//! has nothing to do (SPEC: after a successful apply, `plan
//! --detailed-exitcode` exits 0).

mod common;

use common::{ago, oci_tags, tag as t};

use assert_cmd::Command;
use regimen::model::Repo;
use regimen::registry::oci_layout::OciLayout;
use regimen::testkit::{push_image, push_referrer, ImageSpec};

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::cargo_bin("regimen")
        .unwrap()
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chain_of_promotions_converges_in_one_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = OciLayout::new("dev".parse().unwrap(), tmp.path().join("dev"));
    let api: Repo = "team/api".parse().unwrap();
    let old = push_image(
        &dev,
        &api,
        Some(&t("1.0.0")),
        &ImageSpec::new(&ago(30)).with_layer("v", "old"),
    )
    .await
    .unwrap();
    push_referrer(&dev, &api, &old, "application/vnd.cyclonedx+json", b"{}")
        .await
        .unwrap();
    // Young: staging takes it, prod (min_age 7d) does not.
    push_image(
        &dev,
        &api,
        Some(&t("1.1.0")),
        &ImageSpec::new(&ago(1)).with_layer("v", "young"),
    )
    .await
    .unwrap();
    // Written last-first: the order of the file does not matter.
    std::fs::write(
        tmp.path().join("policy.yaml"),
        "registries:\n  dev: {url: oci:dev}\n  staging: {url: oci:staging}\n  prod: {url: oci:prod}\n\
         promotions:\n\
         \x20 - {name: to-prod, from: staging/team/api, to: prod/team/api,\n\
         \x20    require: {min_age: 7d, referrers: [application/vnd.cyclonedx+json]}}\n\
         \x20 - {name: to-staging, from: dev/team/api, to: staging/team/api}\n",
    )
    .unwrap();
    let d = tmp.path().to_str().unwrap();
    let (code, out) = run(&["plan", "-C", d]);
    assert_eq!(code, 0, "{out}");
    // Copied from where the image is now, so it need not wait for staging.
    assert!(
        out.contains("dev/team/api:1.0.0 -> prod/team/api:1.0.0"),
        "{out}"
    );
    assert!(
        out.contains("! blocked staging/team/api:1.1.0") && out.contains("too young"),
        "{out}"
    );
    // Blocked on its way to prod: `--target` on prod shows it (JSON
    // `target`). And prod alone does not skip staging: 1.0.0 waits for it.
    let (code, out) = run(&[
        "plan",
        "-C",
        d,
        "--target",
        "prod/team/api:*",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let blocked: Vec<(&str, &str)> = v["blocked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["subject"].as_str().unwrap(),
                b["target"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        blocked,
        [
            ("prod/team/api:1.0.0", ""),
            ("staging/team/api:1.1.0", "prod/team/api:1.1.0")
        ],
        "{out}"
    );
    assert!(
        out.contains("needs staging/team/api:1.0.0 first, which --target leaves out"),
        "{out}"
    );
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    let prod = OciLayout::new("prod".parse().unwrap(), tmp.path().join("prod"));
    assert_eq!(oci_tags(&prod, "team/api").await, ["1.0.0"]);
    // The SBOM came along to prod too.
    let staging = OciLayout::new("staging".parse().unwrap(), tmp.path().join("staging"));
    assert_eq!(oci_tags(&staging, "team/api").await, ["1.0.0", "1.1.0"]);
    let (code, out) = run(&["plan", "--detailed-exitcode", "-C", d]);
    assert_eq!(code, 0, "{out}");
    let refs = regimen::registry::Registry::referrers(&prod, &api, &old)
        .await
        .unwrap();
    assert_eq!(refs.len(), 1, "{refs:?}");
}

/// A candidate held back only by `min_age` is on its way: retention of the
/// promotion's source does not delete it meanwhile. One blocked for another
/// reason (here a missing SBOM) gets no such protection.
#[tokio::test(flavor = "multi_thread")]
async fn retention_spares_candidates_waiting_for_min_age() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = OciLayout::new("dev".parse().unwrap(), tmp.path().join("dev"));
    let api: Repo = "team/api".parse().unwrap();
    for (tag, days, sbom) in [("1.0.0", 3, false), ("1.1.0", 3, true)] {
        let d = push_image(
            &dev,
            &api,
            Some(&t(tag)),
            &ImageSpec::new(&ago(days)).with_layer("v", tag.to_string()),
        )
        .await
        .unwrap();
        if sbom {
            push_referrer(&dev, &api, &d, "application/vnd.cyclonedx+json", b"{}")
                .await
                .unwrap();
        }
    }
    std::fs::write(
        tmp.path().join("policy.yaml"),
        "registries:\n  dev: {url: oci:dev}\n  prod: {url: oci:prod}\n\
         promotions:\n\
         \x20 - {name: to-prod, from: dev/team/api, to: prod/team/api,\n\
         \x20    require: {min_age: 7d, referrers: [application/vnd.cyclonedx+json]}}\n\
         retention:\n\
         \x20 - {name: clean, repos: [dev/team/api], delete: {older_than: 1d}, min_keep: 0}\n",
    )
    .unwrap();
    let d = tmp.path().to_str().unwrap();
    let (code, out) = run(&["apply", "--auto-approve", "-v", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("delete dev/team/api:1.0.0"), "{out}");
    assert!(!out.contains("delete dev/team/api:1.1.0"), "{out}");
    assert!(out.contains("waiting for min_age"), "{out}");
    assert_eq!(oci_tags(&dev, "team/api").await, ["1.1.0"]);
}

/// The digest under `repo:tag` in an OCI-layout registry.
async fn digest_of(reg: &OciLayout, repo: &str, tag: &str) -> Option<String> {
    regimen::registry::Registry::head_manifest(reg, &repo.parse().unwrap(), tag)
        .await
        .unwrap()
        .map(|h| h.digest.to_string())
}

fn layout(tmp: &tempfile::TempDir, name: &str) -> OciLayout {
    OciLayout::new(name.parse().unwrap(), tmp.path().join(name))
}

/// `multi/app:TAG` in `reg`: an index of a linux/amd64 and a linux/arm64 image.
async fn push_two_platforms(reg: &OciLayout, tag: &str) {
    let specs = [
        ImageSpec::new(&ago(3))
            .with_layer("v", "amd")
            .with_platform("linux", "amd64"),
        ImageSpec::new(&ago(3))
            .with_layer("v", "arm")
            .with_platform("linux", "arm64"),
    ];
    let app: Repo = "multi/app".parse().unwrap();
    regimen::testkit::push_index(reg, &app, Some(&t(tag)), &specs)
        .await
        .unwrap();
}

/// Applies once and checks that the next plan has nothing to do.
fn apply_converges(d: &str) {
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(&["plan", "--detailed-exitcode", "-C", d]);
    assert_eq!(code, 0, "one apply must converge:\n{out}");
}

/// A mirror whose source another mirror fills (`a → b → c`, `b` not there
/// yet) sees what the first brings and copies it from where it is now.
#[tokio::test(flavor = "multi_thread")]
async fn a_chain_of_mirrors_converges_in_one_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let a = layout(&tmp, "a");
    let app: Repo = "chain/app".parse().unwrap();
    for v in ["1.0", "2.0"] {
        push_image(
            &a,
            &app,
            Some(&t(v)),
            &ImageSpec::new(&ago(3)).with_layer("v", v),
        )
        .await
        .unwrap();
    }
    // Written last-first: the order of the file does not matter.
    std::fs::write(
        tmp.path().join("policy.yaml"),
        "registries:\n  a: {url: oci:a}\n  b: {url: oci:b}\n  c: {url: oci:c}\n\
         mirrors:\n\
         \x20 - {name: b-to-c, from: b/chain/app, to: c/chain/app, tags: {latest: 1}}\n\
         \x20 - {name: a-to-b, from: a/chain/app, to: b/chain/app}\n",
    )
    .unwrap();
    let d = tmp.path().to_str().unwrap();
    let (code, out) = run(&["plan", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("does not exist"), "{out}");
    assert!(
        out.contains("a/chain/app:2.0 -> c/chain/app:2.0"),
        "copied from where the image is now:\n{out}"
    );
    apply_converges(d);
    let (b, c) = (layout(&tmp, "b"), layout(&tmp, "c"));
    assert_eq!(oci_tags(&b, "chain/app").await, ["1.0", "2.0"]);
    assert_eq!(oci_tags(&c, "chain/app").await, ["2.0"]);
    assert_eq!(
        digest_of(&c, "chain/app", "2.0").await,
        digest_of(&a, "chain/app", "2.0").await
    );
}

/// A platform-filtered mirror's index exists nowhere before the apply: the
/// next mirror in the chain makes the same index from the same source.
#[tokio::test(flavor = "multi_thread")]
async fn a_chain_after_a_filtered_mirror_converges_in_one_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let a = layout(&tmp, "a");
    push_two_platforms(&a, "1.0").await;
    std::fs::write(
        tmp.path().join("policy.yaml"),
        "registries:\n  a: {url: oci:a}\n  b: {url: oci:b}\n  c: {url: oci:c}\n\
         mirrors:\n\
         \x20 - {from: a/multi/app, to: b/multi/app, platforms: [linux/amd64, linux/s390x]}\n\
         \x20 - {from: b/multi/app, to: c/multi/app}\n\
         \x20 - {from: b/multi/app, to: c/multi/amd, platforms: [linux/amd64]}\n\
         \x20 - {from: b/multi/app, to: c/multi/wide, platforms: [linux/amd64, linux/arm64]}\n\
         retags:\n  - {tag: c/multi/app:stable, from: b/multi/app:1.0}\n",
    )
    .unwrap();
    let d = tmp.path().to_str().unwrap();
    apply_converges(d);
    let (b, c) = (layout(&tmp, "b"), layout(&tmp, "c"));
    let filtered = digest_of(&b, "multi/app", "1.0").await;
    assert!(filtered.is_some());
    assert_ne!(filtered, digest_of(&a, "multi/app", "1.0").await);
    assert_eq!(digest_of(&c, "multi/app", "1.0").await, filtered);
    assert_eq!(digest_of(&c, "multi/app", "stable").await, filtered);
    assert_eq!(digest_of(&c, "multi/amd", "1.0").await, filtered);
    // b has no arm64 to give.
    assert_eq!(digest_of(&c, "multi/wide", "1.0").await, filtered);
}

/// A retag in a promotion's source is promoted in the same apply.
#[tokio::test(flavor = "multi_thread")]
async fn a_retag_in_a_promotions_source_is_promoted_in_the_same_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let b = layout(&tmp, "b");
    let app: Repo = "p/app".parse().unwrap();
    push_image(
        &b,
        &app,
        Some(&t("1.0")),
        &ImageSpec::new(&ago(3)).with_layer("v", "1.0"),
    )
    .await
    .unwrap();
    std::fs::write(
        tmp.path().join("policy.yaml"),
        "registries:\n  b: {url: oci:b}\n  c: {url: oci:c}\n\
         promotions:\n  - {name: p, from: b/p/app, to: c/p/app}\n\
         retags:\n  - {tag: b/p/app:stable, from: b/p/app:1.0}\n",
    )
    .unwrap();
    let d = tmp.path().to_str().unwrap();
    let (code, out) = run(&["plan", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("b/p/app:stable -> c/p/app:stable"), "{out}");
    apply_converges(d);
    let c = layout(&tmp, "c");
    assert_eq!(oci_tags(&c, "p/app").await, ["1.0", "stable"]);
}

/// A retag that moves a tag in a mirror's source: the mirror copies where
/// the tag is going, not where it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_retag_in_a_mirrors_source_is_mirrored_in_the_same_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let a = layout(&tmp, "a");
    let app: Repo = "rt/app".parse().unwrap();
    for v in ["1.0.0", "1.1.0"] {
        push_image(
            &a,
            &app,
            Some(&t(v)),
            &ImageSpec::new(&ago(3)).with_layer("v", v),
        )
        .await
        .unwrap();
    }
    std::fs::write(
        tmp.path().join("policy.yaml"),
        "registries:\n  a: {url: oci:a}\n  b: {url: oci:b}\n\
         mirrors:\n  - {name: m, from: a/rt/app, to: b/rt/app}\n\
         retags:\n\
         \x20 - {tag: a/rt/app:1.0.0, from: a/rt/app:1.1.0}\n\
         \x20 - {tag: a/rt/app:latest, newest: {repo: a/rt/app, tags: {semver: \"*\"}}}\n",
    )
    .unwrap();
    let d = tmp.path().to_str().unwrap();
    let (code, out) = run(&["plan", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("a/rt/app:1.0.0 -> b/rt/app:1.0.0"), "{out}");
    apply_converges(d);
    let b = layout(&tmp, "b");
    let new = digest_of(&a, "rt/app", "1.1.0").await;
    assert_eq!(oci_tags(&b, "rt/app").await, ["1.0.0", "1.1.0", "latest"]);
    assert_eq!(digest_of(&b, "rt/app", "1.0.0").await, new);
    assert_eq!(digest_of(&b, "rt/app", "latest").await, new);
}

/// A promotion from a platform-filtered mirror's target: the filtered index
/// exists nowhere before the apply, so the plan says the promotion waits a
/// run (not a silent skip), and once it has landed it is promoted, read
/// where it is.
#[tokio::test(flavor = "multi_thread")]
async fn a_promotion_after_a_filtered_mirror_says_it_waits_then_promotes() {
    let tmp = tempfile::tempdir().unwrap();
    let a = layout(&tmp, "a");
    push_two_platforms(&a, "multi").await;
    std::fs::write(
        tmp.path().join("policy.yaml"),
        "registries:\n  a: {url: oci:a}\n  b: {url: oci:b}\n  c: {url: oci:c}\n\
         mirrors:\n  - {from: a/multi/app, to: b/multi/app, platforms: [linux/amd64]}\n\
         promotions:\n  - {name: p, from: b/multi/app, to: c/multi/app}\n",
    )
    .unwrap();
    let d = tmp.path().to_str().unwrap();
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("b/multi/app:multi") && out.contains("promoted on the next run"),
        "{out}"
    );
    apply_converges(d);
    let (b, c) = (layout(&tmp, "b"), layout(&tmp, "c"));
    let filtered = digest_of(&b, "multi/app", "multi").await;
    assert!(filtered.is_some());
    assert_eq!(digest_of(&c, "multi/app", "multi").await, filtered);
}

/// `--target` on a retag that follows a tag a promotion of the same plan
/// puts in place: without that promotion the retag cannot go alone (it
/// would point `stable` at an image prod does not have under `1.3.0`, for a
/// reason not yet true), so it is shown blocked; targeting both does both.
#[tokio::test(flavor = "multi_thread")]
async fn target_keeps_a_retag_with_the_change_it_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let staging = OciLayout::new("staging".parse().unwrap(), tmp.path().join("staging"));
    let api: Repo = "team/api".parse().unwrap();
    push_image(
        &staging,
        &api,
        Some(&t("1.3.0")),
        &ImageSpec::new(&ago(30)).with_layer("v", "1.3.0"),
    )
    .await
    .unwrap();
    std::fs::write(
        tmp.path().join("policy.yaml"),
        "registries:\n  staging: {url: oci:staging}\n  prod: {url: oci:prod}\n\
         promotions:\n  - {name: to-prod, from: staging/team/api, to: prod/team/api}\n\
         retags:\n  - tag: prod/team/api:stable\n    newest: {repo: prod/team/api, tags: {semver: \"*\"}}\n",
    )
    .unwrap();
    let d = tmp.path().to_str().unwrap();
    let file = tmp.path().join("plan.json");
    let f = file.to_str().unwrap();
    let (code, out) = run(&[
        "plan",
        "-C",
        d,
        "--target",
        "prod/team/api:stable",
        "--out",
        f,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("! blocked prod/team/api:stable")
            && out.contains("needs prod/team/api:1.3.0 first, which --target leaves out"),
        "{out}"
    );
    assert!(out.contains("Plan: 0 to copy, 0 to retag"), "{out}");
    let (code, out) = run(&["apply", "-C", d, f]);
    assert_eq!(code, 0, "{out}");
    let prod = OciLayout::new("prod".parse().unwrap(), tmp.path().join("prod"));
    assert!(oci_tags(&prod, "team/api").await.is_empty());

    let (code, out) = run(&[
        "apply",
        "--auto-approve",
        "-C",
        d,
        "--target",
        "prod/team/api:*",
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(oci_tags(&prod, "team/api").await, ["1.3.0", "stable"]);
}
