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
