//! Retention and mirror prune on OCI-layout registries, through the CLI.

mod common;

use common::{ago, run_args as run, tag as t};

use common::oci_tags as tags;

use std::path::Path;

use regimen::model::Repo;
use regimen::registry::oci_layout::OciLayout;
use regimen::registry::Registry;
use regimen::testkit::{push_image, push_referrer, ImageSpec};

/// dev/team/api: pr-1 old; pr-2 old sharing its image with release-1; pr-3 young;
/// pr-4 old with an SBOM; stable old. dev/team/web: three old pr- tags.
async fn seed(root: &Path) -> OciLayout {
    let reg = OciLayout::new("dev".parse().unwrap(), root.join("dev"));
    let api: Repo = "team/api".parse().unwrap();
    let img = |n: &str, days: i64| ImageSpec::new(&ago(days)).with_layer("v", n.to_string());
    push_image(&reg, &api, Some(&t("pr-1")), &img("1", 100))
        .await
        .unwrap();
    push_image(&reg, &api, Some(&t("pr-2")), &img("2", 120))
        .await
        .unwrap();
    push_image(&reg, &api, Some(&t("release-1")), &img("2", 120))
        .await
        .unwrap();
    push_image(&reg, &api, Some(&t("pr-3")), &img("3", 2))
        .await
        .unwrap();
    let d4 = push_image(&reg, &api, Some(&t("pr-4")), &img("4", 95))
        .await
        .unwrap();
    push_referrer(&reg, &api, &d4, "application/vnd.cyclonedx+json", b"{}")
        .await
        .unwrap();
    push_image(&reg, &api, Some(&t("stable")), &img("5", 300))
        .await
        .unwrap();
    let web: Repo = "team/web".parse().unwrap();
    for (i, days) in [(1, 200), (2, 150), (3, 100)] {
        push_image(
            &reg,
            &web,
            Some(&t(&format!("pr-{i}"))),
            &img(&format!("w{i}"), days),
        )
        .await
        .unwrap();
    }
    reg
}

fn policy(dir: &Path, extra: &str) {
    std::fs::write(
        dir.join("policy.yaml"),
        format!(
            "registries:\n  dev: {{url: oci:dev}}\n\
             retention:\n  - name: dev-cleanup\n    repos: [\"dev/team/*\"]\n\
             \x20   delete: {{older_than: 90d, tags: {{regex: \"^pr-\"}}}}\n\
             \x20   keep: {{tags: [stable, \"release-*\"], younger_than: 14d}}\n{extra}"
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_exactly_what_no_keep_protects() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = seed(tmp.path()).await;
    policy(tmp.path(), "");
    let d = tmp.path().to_str().unwrap();
    let api: Repo = "team/api".parse().unwrap();
    let release = reg
        .head_manifest(&api, "release-1")
        .await
        .unwrap()
        .unwrap()
        .digest;
    let pr4 = reg
        .head_manifest(&api, "pr-4")
        .await
        .unwrap()
        .unwrap()
        .digest;
    assert_eq!(reg.referrers(&api, &pr4).await.unwrap().len(), 1);

    let (code, plan) = run(&["plan", "-C", d]);
    assert_eq!(code, 0, "{plan}");
    assert!(plan.contains("- delete dev/team/api:pr-1"), "{plan}");
    assert!(
        plan.contains("- untag  dev/team/api:pr-2") || plan.contains("- untag dev/team/api:pr-2"),
        "{plan}"
    );
    assert!(plan.contains("dev/team/api:pr-4"), "{plan}");
    assert!(
        !plan.contains("pr-3") && !plan.contains(":stable"),
        "{plan}"
    );

    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        tags(&reg, "team/api").await,
        ["pr-3", "release-1", "stable"]
    );
    // The kept tag that shared pr-2's image still resolves to the same image.
    assert_eq!(
        reg.head_manifest(&api, "release-1")
            .await
            .unwrap()
            .unwrap()
            .digest,
        release
    );
    // pr-4's SBOM went with it.
    assert!(reg
        .head_manifest(&api, pr4.as_str())
        .await
        .unwrap()
        .is_none());
    assert!(reg.referrers(&api, &pr4).await.unwrap().is_empty());
    // min_keep (default 1): web keeps its newest pr- tag.
    assert_eq!(tags(&reg, "team/web").await, ["pr-3"]);

    let (code, again) = run(&["plan", "--detailed-exitcode", "-C", d]);
    assert_eq!(code, 0, "nothing left to delete:\n{again}");
}

#[tokio::test(flavor = "multi_thread")]
async fn over_max_deletes_nothing_is_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = seed(tmp.path()).await;
    policy(tmp.path(), "    max_deletes: 2\n");
    let d = tmp.path().to_str().unwrap();
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("over max_deletes 2"), "{out}");
    assert_eq!(tags(&reg, "team/api").await.len(), 6);
    assert_eq!(tags(&reg, "team/web").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn mirror_targets_are_protected_and_prune_removes_only_its_own_tags() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = seed(tmp.path()).await;
    let d = tmp.path().to_str().unwrap();
    // Mirror api -> mirror/api with prune; then drop pr-1 upstream and add a foreign tag downstream.
    std::fs::write(
        tmp.path().join("policy.yaml"),
        "registries:\n  dev: {url: oci:dev}\nmirrors:\n  - {from: dev/team/api, to: dev/mirror/api, tags: {regex: \"^pr-\"}, prune: true}\n",
    )
    .unwrap();
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        tags(&reg, "mirror/api").await,
        ["pr-1", "pr-2", "pr-3", "pr-4"]
    );
    let api: Repo = "team/api".parse().unwrap();
    let mirror: Repo = "mirror/api".parse().unwrap();
    regimen::apply::remove_tag(&reg, &api, &t("pr-1"), None)
        .await
        .unwrap();
    push_image(
        &reg,
        &mirror,
        Some(&t("local-only")),
        &ImageSpec::new(&ago(1)),
    )
    .await
    .unwrap();
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("dev/mirror/api:pr-1"), "{out}");
    // Its age is read (it orders min_keep) and shown.
    assert!(out.contains("gone upstream; 100d old"), "{out}");
    assert_eq!(
        tags(&reg, "mirror/api").await,
        ["local-only", "pr-2", "pr-3", "pr-4"]
    );

    // A mistyped (or vanished) source repo is not "every tag gone upstream":
    // nothing is pruned, and the plan says why.
    std::fs::write(
        tmp.path().join("policy.yaml"),
        "registries:\n  dev: {url: oci:dev}\nmirrors:\n  - {from: dev/team/apii, to: dev/mirror/api, tags: {regex: \"^pr-\"}, prune: true}\n",
    )
    .unwrap();
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("! blocked dev/team/apii")
            && out.contains("the source repo does not exist: nothing is mirrored or pruned"),
        "{out}"
    );
    assert!(!out.contains("- delete"), "{out}");
    assert_eq!(
        tags(&reg, "mirror/api").await,
        ["local-only", "pr-2", "pr-3", "pr-4"]
    );

    // The same typo in a promotion is said too, not read as "nothing to promote".
    std::fs::write(
        tmp.path().join("policy.yaml"),
        "registries:\n  dev: {url: oci:dev}\npromotions:\n  - {name: p, from: dev/team/apii, to: dev/prod/api}\n",
    )
    .unwrap();
    let (code, out) = run(&["plan", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("! blocked dev/team/apii")
            && out.contains("the source repo does not exist: nothing is promoted"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn saved_delete_of_a_repushed_tag_is_stale() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = seed(tmp.path()).await;
    policy(tmp.path(), "");
    let d = tmp.path().to_str().unwrap();
    let planfile = tmp.path().join("plan.json");
    let (code, out) = run(&["plan", "-C", d, "--out", planfile.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("- delete dev/team/api:pr-1"), "{out}");
    // pr-1 is re-pushed to a new image after the plan was saved.
    let api: Repo = "team/api".parse().unwrap();
    let fresh = push_image(
        &reg,
        &api,
        Some(&t("pr-1")),
        &ImageSpec::new(&ago(1)).with_layer("v", "new"),
    )
    .await
    .unwrap();
    let (code, out) = run(&["apply", "-C", d, planfile.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("delete dev/team/api:pr-1: STALE"), "{out}");
    assert_eq!(
        reg.head_manifest(&api, "pr-1")
            .await
            .unwrap()
            .unwrap()
            .digest,
        fresh
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_platform_of_a_tagged_index_is_only_untagged() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = OciLayout::new("dev".parse().unwrap(), tmp.path().join("dev"));
    let app: Repo = "team/app".parse().unwrap();
    let specs = [
        ImageSpec::new(&ago(200)).with_layer("v", "amd"),
        ImageSpec::new(&ago(200))
            .with_layer("v", "arm")
            .with_platform("linux", "arm64"),
    ];
    regimen::testkit::push_index(&reg, &app, Some(&t("1.0")), &specs)
        .await
        .unwrap();
    // The amd64 child also carries its own tag.
    let amd = push_image(&reg, &app, Some(&t("1.0-amd64")), &specs[0])
        .await
        .unwrap();
    std::fs::write(
        tmp.path().join("policy.yaml"),
        "registries:\n  dev: {url: oci:dev}\nretention:\n  - {name: drop-arch-tags, repos: [dev/team/app], delete: {tags: {regex: \"-amd64$\"}}}\n",
    )
    .unwrap();
    let d = tmp.path().to_str().unwrap();
    let (code, plan) = run(&["plan", "-C", d]);
    assert_eq!(code, 0, "{plan}");
    assert!(
        plan.contains("untag") && plan.contains("dev/team/app:1.0-amd64"),
        "{plan}"
    );
    assert!(!plan.contains("- delete"), "{plan}");
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(tags(&reg, "team/app").await, ["1.0"]);
    assert!(
        reg.head_manifest(&app, amd.as_str())
            .await
            .unwrap()
            .is_some(),
        "the platform image stays"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_rules_on_one_repo_honour_the_largest_min_keep_and_delete_once() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = seed(tmp.path()).await;
    // A second rule sweeps every web tag older than a day but keeps two.
    policy(
        tmp.path(),
        "  - name: web-sweep\n    repos: [dev/team/web]\n    delete: {older_than: 1d}\n    min_keep: 2\n",
    );
    let d = tmp.path().to_str().unwrap();
    let (code, plan) = run(&["plan", "--format", "json", "-C", d]);
    assert_eq!(code, 0, "{plan}");
    let json: serde_json::Value = serde_json::from_str(&plan).unwrap();
    let web: Vec<&str> = json["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["target"].as_str())
        .filter(|t| t.starts_with("dev/team/web"))
        .collect();
    assert_eq!(web, ["dev/team/web:pr-1"], "{plan}");
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(tags(&reg, "team/web").await, ["pr-2", "pr-3"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_whose_tags_two_rules_take_is_deleted_not_left_untagged() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = OciLayout::new("dev".parse().unwrap(), tmp.path().join("dev"));
    let x: Repo = "team/x".parse().unwrap();
    let old = ImageSpec::new(&ago(100)).with_layer("v", "old");
    let d = push_image(&reg, &x, Some(&t("pr-1")), &old).await.unwrap();
    push_image(&reg, &x, Some(&t("sha-1")), &old).await.unwrap();
    push_referrer(&reg, &x, &d, "application/vnd.cyclonedx+json", b"{}")
        .await
        .unwrap();
    push_image(&reg, &x, Some(&t("new")), &ImageSpec::new(&ago(1)))
        .await
        .unwrap();
    std::fs::write(
        tmp.path().join("policy.yaml"),
        "registries:\n  dev: {url: oci:dev}\nretention:\n\
         \x20 - {name: prs, repos: [dev/team/x], delete: {older_than: 30d, tags: {regex: \"^pr-\"}}}\n\
         \x20 - {name: shas, repos: [dev/team/x], delete: {older_than: 30d, tags: {regex: \"^sha-\"}}}\n",
    )
    .unwrap();
    let dir = tmp.path().to_str().unwrap();
    let (code, plan) = run(&["plan", "-C", dir]);
    assert_eq!(code, 0, "{plan}");
    assert!(plan.contains("- delete dev/team/x:sha-1"), "{plan}");
    let (code, out) = run(&["apply", "--auto-approve", "-C", dir]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(tags(&reg, "team/x").await, ["new"]);
    assert!(
        reg.head_manifest(&x, d.as_str()).await.unwrap().is_none(),
        "the image went, not just its tags"
    );
    assert!(reg.referrers(&x, &d).await.unwrap().is_empty());
    let (code, again) = run(&["plan", "--detailed-exitcode", "-C", dir]);
    assert_eq!(code, 0, "{again}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reproducible_build_dates_are_no_age() {
    // ko and Bazel write the Unix epoch as `created`, Nix and Jib a second after
    // it: such an image is not 56 years old, its age is unknown, and
    // `older_than` spares it.
    let tmp = tempfile::tempdir().unwrap();
    let reg = OciLayout::new("dev".parse().unwrap(), tmp.path().join("dev"));
    let app: Repo = "team/app".parse().unwrap();
    for (tag, created) in [
        ("epoch", "1970-01-01T00:00:00Z".to_string()),
        ("nix", "1970-01-01T00:00:01Z".to_string()),
        ("pre-docker", "2012-12-31T23:59:59Z".to_string()),
        ("old", ago(100)),
        ("new", ago(1)),
    ] {
        let spec = ImageSpec::new(&created).with_layer("v", tag.to_string());
        push_image(&reg, &app, Some(&t(tag)), &spec).await.unwrap();
    }
    std::fs::write(
        tmp.path().join("policy.yaml"),
        "registries:\n  dev: {url: oci:dev}\nretention:\n  - {name: r, repos: [dev/team/app], delete: {older_than: 30d}}\n",
    )
    .unwrap();
    let d = tmp.path().to_str().unwrap();
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("- delete dev/team/app:old"), "{out}");
    assert_eq!(
        tags(&reg, "team/app").await,
        ["epoch", "new", "nix", "pre-docker"]
    );
}

fn write_policy(dir: &Path, yaml: &str) {
    std::fs::write(dir.join("policy.yaml"), yaml).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn promoted_tags_stay_protected_after_the_promotion() {
    // Once promoted, a tag has no change in the plan, but retention must keep
    // both ends: deleting the target would make every run copy it again.
    let tmp = tempfile::tempdir().unwrap();
    let reg = OciLayout::new("dev".parse().unwrap(), tmp.path().join("dev"));
    let up: Repo = "up/app".parse().unwrap();
    push_image(&reg, &up, Some(&t("1.0.0")), &ImageSpec::new(&ago(100)))
        .await
        .unwrap();
    let promote = "registries:\n  dev: {url: oci:dev}\npromotions:\n  - {name: p, from: dev/up/app, to: dev/prod/app, tags: [\"1.0.0\"]}\n";
    write_policy(tmp.path(), promote);
    let d = tmp.path().to_str().unwrap();
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    write_policy(
        tmp.path(),
        &format!("{promote}retention:\n  - {{name: r, repos: [dev/prod/app, dev/up/app], delete: {{older_than: 30d}}, min_keep: 0}}\n"),
    );
    let (code, out) = run(&["plan", "-v", "--detailed-exitcode", "-C", d]);
    assert_eq!(code, 0, "nothing to delete, nothing to copy again:\n{out}");
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("= keep dev/prod/app:1.0.0 target of p"),
        "{out}"
    );
    assert!(
        flat.contains("= keep dev/up/app:1.0.0 source of p"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_platform_filtered_mirror_protects_its_source_index() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = OciLayout::new("dev".parse().unwrap(), tmp.path().join("dev"));
    let up: Repo = "up/app".parse().unwrap();
    let specs = [
        ImageSpec::new(&ago(200)).with_layer("v", "amd"),
        ImageSpec::new(&ago(200))
            .with_layer("v", "arm")
            .with_platform("linux", "arm64"),
    ];
    regimen::testkit::push_index(&reg, &up, Some(&t("1.0")), &specs)
        .await
        .unwrap();
    write_policy(
        tmp.path(),
        "registries:\n  dev: {url: oci:dev}\nmirrors:\n  - {name: m, from: dev/up/app, to: dev/out/app, platforms: [linux/amd64]}\nretention:\n  - {name: r, repos: [dev/up/app], delete: {older_than: 30d}, min_keep: 0}\n",
    );
    let d = tmp.path().to_str().unwrap();
    let (code, out) = run(&["apply", "-v", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("- delete"), "{out}");
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains("= keep dev/up/app:1.0 source of m"), "{out}");
    assert_eq!(tags(&reg, "up/app").await, ["1.0"]);
    let (code, out) = run(&["plan", "--detailed-exitcode", "-C", d]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mirror_prune_heeds_retention_keeps_and_min_keep() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = OciLayout::new("dev".parse().unwrap(), tmp.path().join("dev"));
    let up: Repo = "up/app".parse().unwrap();
    for (i, days) in [(1, 300), (2, 200), (3, 100)] {
        let spec = ImageSpec::new(&ago(days)).with_layer("v", format!("{i}"));
        push_image(&reg, &up, Some(&t(&format!("1.{i}.0"))), &spec)
            .await
            .unwrap();
    }
    write_policy(
        tmp.path(),
        "registries:\n  dev: {url: oci:dev}\nmirrors:\n  - {name: m, from: dev/up/app, to: dev/out/app, prune: true}\nretention:\n  - {name: r, repos: [dev/out/app], delete: {older_than: 90d}, min_keep: 2}\n",
    );
    let d = tmp.path().to_str().unwrap();
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    // Upstream drops every tag.
    for tag in ["1.1.0", "1.2.0", "1.3.0"] {
        regimen::apply::remove_tag(&reg, &up, &t(tag), None)
            .await
            .unwrap();
    }
    let (code, out) = run(&["apply", "-v", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    // Retention deletes the oldest once (not twice), its min_keep keeps two,
    // and the prune that wanted those is shown as blocked.
    assert_eq!(
        out.matches("- delete dev/out/app:1.1.0").count(),
        1,
        "{out}"
    );
    assert!(
        out.contains("! blocked dev/out/app:1.3.0") && out.contains("retention rule r keeps it"),
        "{out}"
    );
    assert_eq!(tags(&reg, "out/app").await, ["1.2.0", "1.3.0"]);
}

/// An untag whose last step failed leaves its tag on a regimen placeholder
/// (no age, no image): the next plan removes it whatever its age, the keep
/// rules or min_keep, and nothing else changes.
#[tokio::test(flavor = "multi_thread")]
async fn a_tag_left_on_a_placeholder_is_removed_whatever_its_age() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = seed(tmp.path()).await;
    // min_keep 10: no real tag of the seed goes.
    policy(tmp.path(), "    min_keep: 10\n");
    let d = tmp.path().to_str().unwrap();
    let api: Repo = "team/api".parse().unwrap();
    let before = tags(&reg, "team/api").await;
    let (code, plan) = run(&["plan", "--detailed-exitcode", "-C", d]);
    assert_eq!(code, 0, "nothing to do before:\n{plan}");
    for tag in ["pr-9", "nightly"] {
        regimen::registry::push_placeholder(&reg, &api, &t(tag))
            .await
            .unwrap();
    }

    let (code, plan) = run(&["plan", "-C", d]);
    assert_eq!(code, 0, "{plan}");
    for tag in ["pr-9", "nightly"] {
        assert!(
            plan.contains(&format!("- delete dev/team/api:{tag}"))
                && plan.contains("left on a regimen placeholder"),
            "{plan}"
        );
    }
    assert!(plan.contains("0 to untag, 2 to delete"), "{plan}");
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(tags(&reg, "team/api").await, before);
    let (code, again) = run(&["plan", "--detailed-exitcode", "-C", d]);
    assert_eq!(code, 0, "converged:\n{again}");
}

/// Adds an `index.json` entry naming `digest` by a full reference (the OCI
/// layout spec allows any `ref.name`; `skopeo copy … oci:DIR:docker.io/x:1`
/// writes such names), as another tool would.
fn add_foreign_name(layout: &Path, digest: &str, name: &str) {
    let path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let manifests = index["manifests"].as_array_mut().unwrap();
    let mut entry = manifests
        .iter()
        .find(|e| e["digest"] == digest)
        .unwrap()
        .clone();
    entry["annotations"]["org.opencontainers.image.ref.name"] = name.into();
    manifests.push(entry);
    std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
}

fn has_name(layout: &Path, name: &str) -> bool {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["annotations"]["org.opencontainers.image.ref.name"] == name)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_that_is_not_a_tag_keeps_its_image() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = seed(tmp.path()).await;
    policy(tmp.path(), "");
    let d = tmp.path().to_str().unwrap();
    let api: Repo = "team/api".parse().unwrap();
    let layout = tmp.path().join("dev/team/api");
    let pr1 = reg
        .head_manifest(&api, "pr-1")
        .await
        .unwrap()
        .unwrap()
        .digest;
    let foreign = "docker.io/team/api:1.0";

    // A plan saved before the other name appeared deletes pr-1's image:
    // apply refuses it as stale.
    let planfile = tmp.path().join("plan.json");
    let (code, out) = run(&["plan", "-C", d, "--out", planfile.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("- delete dev/team/api:pr-1"), "{out}");
    add_foreign_name(&layout, pr1.as_str(), foreign);
    let (code, out) = run(&["apply", "-C", d, planfile.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("delete dev/team/api:pr-1: STALE"), "{out}");
    assert!(out.contains(foreign), "{out}");
    assert!(has_name(&layout, foreign) && has_name(&layout, "pr-1"));

    // A fresh plan only untags pr-1, and says why.
    let (code, plan) = run(&["plan", "-C", d]);
    assert_eq!(code, 0, "{plan}");
    assert!(
        plan.contains("untag  dev/team/api:pr-1") || plan.contains("untag dev/team/api:pr-1"),
        "{plan}"
    );
    assert!(plan.contains(foreign), "{plan}");
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert!(!has_name(&layout, "pr-1"));
    assert!(has_name(&layout, foreign));
    assert!(reg
        .head_manifest(&api, pr1.as_str())
        .await
        .unwrap()
        .is_some());
    let (code, again) = run(&["plan", "--detailed-exitcode", "-C", d]);
    assert_eq!(code, 0, "{again}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_source_index_prunes_nothing() {
    // A source index.json whose `manifests` is missing, null or not a list
    // is unreadable: the source is unobserved, not "every tag gone upstream".
    let tmp = tempfile::tempdir().unwrap();
    let src = OciLayout::new("src".parse().unwrap(), tmp.path().join("src"));
    let app: Repo = "app".parse().unwrap();
    for (tag, n) in [("1.0.0", "a"), ("1.1.0", "b")] {
        push_image(
            &src,
            &app,
            Some(&t(tag)),
            &ImageSpec::new(&ago(100)).with_layer("v", n.to_string()),
        )
        .await
        .unwrap();
    }
    std::fs::write(
        tmp.path().join("policy.yaml"),
        "registries:\n  src: {url: oci:src}\n  dst: {url: oci:dst}\nmirrors:\n  - {from: src/app, to: dst/app, prune: true}\n",
    )
    .unwrap();
    let d = tmp.path().to_str().unwrap();
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    let dst = OciLayout::new("dst".parse().unwrap(), tmp.path().join("dst"));
    assert_eq!(tags(&dst, "app").await, ["1.0.0", "1.1.0"]);
    let index = tmp.path().join("src/app/index.json");
    for doc in [
        r#"{"schemaVersion":2}"#,
        r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":null}"#,
        r#"{"schemaVersion":2,"manifests":{}}"#,
    ] {
        std::fs::write(&index, doc).unwrap();
        let (code, plan) = run(&["plan", "-C", d, "--format", "json"]);
        assert_eq!(code, 0, "{plan}");
        let v: serde_json::Value = serde_json::from_str(&plan).unwrap();
        assert_eq!(v["complete"], false, "{doc}: {plan}");
        assert!(v["changes"].as_array().unwrap().is_empty(), "{doc}: {plan}");
        assert!(
            v["unobserved"].to_string().contains("not an image index"),
            "{doc}: {plan}"
        );
        let (_, out) = run(&["apply", "--auto-approve", "-C", d]);
        assert_eq!(tags(&dst, "app").await, ["1.0.0", "1.1.0"], "{doc}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_keeps_a_tag_the_source_names_by_full_reference() {
    // `skopeo copy … oci:DIR:docker.io/team/app:1.0.0` names the image by full
    // reference, not by tag: its 1.0.0 is still upstream, not gone.
    let tmp = tempfile::tempdir().unwrap();
    let reg = OciLayout::new("dev".parse().unwrap(), tmp.path().join("dev"));
    let up: Repo = "up/app".parse().unwrap();
    let digest = push_image(&reg, &up, Some(&t("1.0.0")), &ImageSpec::new(&ago(10)))
        .await
        .unwrap();
    write_policy(
        tmp.path(),
        "registries:\n  dev: {url: oci:dev}\nmirrors:\n  - {name: m, from: dev/up/app, to: dev/out/app, prune: true}\n",
    );
    let d = tmp.path().to_str().unwrap();
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    let layout = tmp.path().join("dev/up/app");
    add_foreign_name(&layout, digest.as_str(), "docker.io/team/app:1.0.0");
    let path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .retain(|e| e["annotations"]["org.opencontainers.image.ref.name"] != "1.0.0");
    std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
    let (code, out) = run(&["plan", "--detailed-exitcode", "-C", d]);
    assert_eq!(code, 0, "nothing is pruned:\n{out}");
    assert_eq!(tags(&reg, "out/app").await, ["1.0.0"]);
}

/// Prune of a tag whose image is a platform of an index another tag keeps:
/// the tag goes, the image stays (it is part of the index). Planned so from
/// the start, not found out by apply as stale on every run.
#[tokio::test]
async fn prune_of_an_index_child_untags_it() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = OciLayout::new("dev".parse().unwrap(), tmp.path().join("dev"));
    let src: Repo = "team/multi".parse().unwrap();
    let amd = ImageSpec::new(&ago(10))
        .with_layer("v", "amd")
        .with_platform("linux", "amd64");
    let arm = ImageSpec::new(&ago(10))
        .with_layer("v", "arm")
        .with_platform("linux", "arm64");
    regimen::testkit::push_index(&reg, &src, Some(&t("multi")), &[amd.clone(), arm])
        .await
        .unwrap();
    push_image(&reg, &src, Some(&t("amd64-only")), &amd)
        .await
        .unwrap();
    let d = tmp.path().to_str().unwrap();
    std::fs::write(
        tmp.path().join("policy.yaml"),
        "registries:\n  dev: {url: oci:dev}\nmirrors:\n  - {from: dev/team/multi, to: dev/mirror/multi, prune: true}\n",
    )
    .unwrap();
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(tags(&reg, "mirror/multi").await, ["amd64-only", "multi"]);
    regimen::apply::remove_tag(&reg, &src, &t("amd64-only"), None)
        .await
        .unwrap();
    let (code, out) = run(&["plan", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("untag  dev/mirror/multi:amd64-only"), "{out}");
    assert!(!out.contains("- delete"), "{out}");
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("STALE"), "{out}");
    assert_eq!(tags(&reg, "mirror/multi").await, ["multi"]);
    let (code, out) = run(&["plan", "--detailed-exitcode", "-C", d]);
    assert_eq!(code, 0, "{out}");
}

/// `keep.newest` counts images (three tags on one image are one of the N,
/// as Harbor and ECR count), among the tags no earlier rule deletes, and
/// never ranks images whose creation time is unknown (a reproducible
/// build's 1970): those are kept, not judged by tag text.
#[tokio::test]
async fn keep_newest_counts_images_that_stay_and_never_guesses_an_age() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = OciLayout::new("dev".parse().unwrap(), tmp.path().join("dev"));
    let img = |n: &str, days: i64| ImageSpec::new(&ago(days)).with_layer("v", n.to_string());
    // team/a: three tags on the newest image, then two older images.
    let a: Repo = "team/a".parse().unwrap();
    for (tag, n, days) in [
        ("1.2", "12", 10),
        ("latest", "12", 10),
        ("main", "12", 10),
        ("1.1", "11", 20),
        ("1.0", "10", 30),
    ] {
        push_image(&reg, &a, Some(&t(tag)), &img(n, days))
            .await
            .unwrap();
    }
    // team/b: the two newest are tmp- tags the first rule deletes.
    let b: Repo = "team/b".parse().unwrap();
    for (tag, days) in [
        ("tmp-1", 1),
        ("tmp-2", 2),
        ("1.3", 40),
        ("1.2", 50),
        ("1.1", 60),
    ] {
        push_image(&reg, &b, Some(&t(tag)), &img(tag, days))
            .await
            .unwrap();
    }
    // team/c: ko-style builds, all created 1970-01-01.
    let c: Repo = "team/c".parse().unwrap();
    for i in 1..=12 {
        let tag = format!("pr-{i}");
        push_image(
            &reg,
            &c,
            Some(&t(&tag)),
            &ImageSpec::new("1970-01-01T00:00:00Z").with_layer("v", tag.clone()),
        )
        .await
        .unwrap();
    }
    let d = tmp.path().to_str().unwrap();
    std::fs::write(
        tmp.path().join("policy.yaml"),
        "registries:\n  dev: {url: oci:dev}\nretention:\n\
         \x20 - {name: tmp, repos: [dev/team/b], delete: {tags: {glob: \"tmp-*\"}}, min_keep: 0}\n\
         \x20 - {name: newest, repos: [dev/team/a, dev/team/b, dev/team/c], delete: {tags: {glob: \"*\"}}, keep: {newest: 2}, min_keep: 0}\n",
    )
    .unwrap();
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        tags(&reg, "team/a").await,
        ["1.1", "1.2", "latest", "main"],
        "{out}"
    );
    assert_eq!(tags(&reg, "team/b").await, ["1.2", "1.3"], "{out}");
    assert_eq!(tags(&reg, "team/c").await.len(), 12, "{out}");
    let (code, out) = run(&["plan", "-v", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("dev/team/c:pr-10") && out.contains("creation time unknown"),
        "{out}"
    );
}

/// An image that is a platform of an index listed by a tagged index (an
/// index of indexes) is part of what that tag keeps: its own old tag is
/// only untagged, planned so, not refused by apply as stale every run.
#[tokio::test]
async fn a_child_of_a_nested_index_is_untagged_not_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = OciLayout::new("dev".parse().unwrap(), tmp.path().join("dev"));
    let repo: Repo = "team/n".parse().unwrap();
    let old = ImageSpec::new(&ago(100))
        .with_layer("v", "c")
        .with_platform("linux", "amd64");
    push_image(&reg, &repo, Some(&t("c-old")), &old)
        .await
        .unwrap();
    let inner = regimen::testkit::push_index(&reg, &repo, None, std::slice::from_ref(&old))
        .await
        .unwrap();
    let inner_size = reg
        .get_manifest(&repo, inner.as_str())
        .await
        .unwrap()
        .unwrap()
        .bytes
        .len();
    let outer = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": inner.as_str(),
            "size": inner_size,
        }],
    });
    let outer = regimen::registry::Manifest::from_bytes(
        serde_json::to_vec(&outer).unwrap(),
        Some("application/vnd.oci.image.index.v1+json"),
    )
    .unwrap();
    reg.put_manifest(&repo, Some(&t("multi")), &outer)
        .await
        .unwrap();
    let d = tmp.path().to_str().unwrap();
    std::fs::write(
        tmp.path().join("policy.yaml"),
        "registries:\n  dev: {url: oci:dev}\nretention:\n  - {name: old, repos: [dev/team/n], delete: {tags: {glob: \"c-*\"}, older_than: 30d}, min_keep: 0}\n",
    )
    .unwrap();
    let (code, out) = run(&["plan", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("untag  dev/team/n:c-old"), "{out}");
    assert!(!out.contains("- delete"), "{out}");
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(tags(&reg, "team/n").await, ["multi"]);
    let (code, out) = run(&["plan", "--detailed-exitcode", "-C", d]);
    assert_eq!(code, 0, "{out}");
}

/// On an OCI layout too, a referrer with a tag of its own outlives the image
/// it describes; an untagged one goes with it.
#[tokio::test]
async fn tagged_referrers_outlive_their_image_in_a_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = OciLayout::new("dev".parse().unwrap(), tmp.path().join("dev"));
    let repo: Repo = "team/r".parse().unwrap();
    let old = push_image(
        &reg,
        &repo,
        Some(&t("pr-1")),
        &ImageSpec::new(&ago(100)).with_layer("v", "1"),
    )
    .await
    .unwrap();
    let kept = push_referrer(&reg, &repo, &old, "application/vnd.cyclonedx+json", b"{}")
        .await
        .unwrap();
    let gone = push_referrer(&reg, &repo, &old, "application/spdx+json", b"{}")
        .await
        .unwrap();
    let m = reg
        .get_manifest(&repo, kept.as_str())
        .await
        .unwrap()
        .unwrap();
    reg.put_manifest(&repo, Some(&t("sbom-keep")), &m)
        .await
        .unwrap();
    let d = tmp.path().to_str().unwrap();
    std::fs::write(
        tmp.path().join("policy.yaml"),
        "registries:\n  dev: {url: oci:dev}\nretention:\n  - {name: old, repos: [dev/team/r], delete: {tags: {glob: \"pr-*\"}, older_than: 30d}, min_keep: 0}\n",
    )
    .unwrap();
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(tags(&reg, "team/r").await, ["sbom-keep"], "{out}");
    for (digest, present) in [(&old, false), (&kept, true), (&gone, false)] {
        assert_eq!(
            reg.head_manifest(&repo, digest.as_str())
                .await
                .unwrap()
                .is_some(),
            present,
            "{digest}"
        );
    }
}

/// A mirror's prune and a retag disagree about a tag gone upstream that
/// the retag reads from: it is kept, and the plan says so as blocked (not
/// "No changes", which would hide that the prune waits for ever).
#[tokio::test]
async fn prune_of_a_tag_another_rule_reads_from_is_shown_blocked() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = OciLayout::new("dev".parse().unwrap(), tmp.path().join("dev"));
    let up: Repo = "up/app".parse().unwrap();
    for v in ["v1", "v2"] {
        push_image(
            &reg,
            &up,
            Some(&t(v)),
            &ImageSpec::new(&ago(10)).with_layer("v", v),
        )
        .await
        .unwrap();
    }
    let d = tmp.path().to_str().unwrap();
    write_policy(
        tmp.path(),
        "registries:\n  dev: {url: oci:dev}\nmirrors:\n  - {name: m, from: dev/up/app, to: dev/out/app, prune: true}\n\
         retags:\n  - {tag: \"dev/rel/app:stable\", from: \"dev/out/app:v2\"}\n",
    );
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    regimen::apply::remove_tag(&reg, &up, &t("v2"), None)
        .await
        .unwrap();
    let (code, out) = run(&["plan", "--detailed-exitcode", "-C", d]);
    assert_eq!(code, 0, "nothing to do:\n{out}");
    assert!(
        out.contains("! blocked dev/out/app:v2")
            && out.contains("gone upstream, but source of retag:dev/rel/app:stable: not pruned"),
        "{out}"
    );
    assert_eq!(tags(&reg, "out/app").await, ["v1", "v2"]);
}

/// A tag gone upstream leaves a chain of pruning mirrors: the rule reading
/// the pruned repo already holds its copy, so it does not hold the prune
/// back (it used to, on every run). A `newest` retag over the pruned repo
/// moves on to what remains.
#[tokio::test(flavor = "multi_thread")]
async fn prune_passes_a_withdrawn_tag_down_a_chain_of_mirrors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    std::fs::write(
        tmp.path().join("policy.yaml"),
        "registries:\n  src: {url: oci:src}\n  dst: {url: oci:dst}\n\
         mirrors:\n  - {name: b, from: src/team/app, to: dst/b/app, tags: {semver: \"*\"}, prune: true}\n\
         \x20 - {name: c, from: dst/b/app, to: dst/c/app, tags: {semver: \"*\"}, prune: true}\n\
         retags:\n  - {tag: \"dst/b/app:latest\", newest: {repo: dst/b/app, tags: {semver: \"*\"}}}\n",
    )
    .unwrap();
    let src = OciLayout::new("src".parse().unwrap(), tmp.path().join("src"));
    let dst = OciLayout::new("dst".parse().unwrap(), tmp.path().join("dst"));
    let app: Repo = "team/app".parse().unwrap();
    let img = |n: &str| ImageSpec::new(&ago(3)).with_layer("v", n.to_string());
    let v1 = push_image(&src, &app, Some(&t("1.0.0")), &img("1"))
        .await
        .unwrap();
    push_image(&src, &app, Some(&t("2.0.0")), &img("2"))
        .await
        .unwrap();
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    let b: Repo = "b/app".parse().unwrap();
    assert_eq!(tags(&dst, "c/app").await, ["1.0.0", "2.0.0"]);

    // 2.0.0 is withdrawn upstream.
    src.delete_tag(&app, &t("2.0.0")).await.unwrap();
    let (code, out) = run(&["plan", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("! blocked"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("- untag") && l.contains("dst/b/app:2.0.0")),
        "{out}"
    );
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    // The next run: c prunes its copy, and latest moves back to 1.0.0.
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(tags(&dst, "c/app").await, ["1.0.0"]);
    assert_eq!(tags(&dst, "b/app").await, ["1.0.0", "latest"]);
    assert_eq!(
        dst.head_manifest(&b, "latest")
            .await
            .unwrap()
            .unwrap()
            .digest,
        v1
    );
    let (code, out) = run(&["plan", "-C", d, "--detailed-exitcode"]);
    assert_eq!(code, 0, "converged: {out}");
}
