//! A change that reads a tag another change of the plan puts in place (the
//! plan JSON's `after`) goes only once that change has landed: a saved plan
//! whose copy turns out stale does not move `latest` onto a release the repo
//! does not have, nor `prod` away from a `stable` someone moved.

mod common;

use common::{ago, run_args as run, tag as t};

use std::path::Path;

use regimen::model::{Digest, Repo};
use regimen::registry::oci_layout::OciLayout;
use regimen::registry::Registry;
use regimen::testkit::{push_image, ImageSpec};

fn image(n: &str) -> ImageSpec {
    ImageSpec::new(&ago(3)).with_layer("v", n.to_string())
}

async fn digest(reg: &OciLayout, repo: &Repo, tag: &str) -> Option<Digest> {
    reg.head_manifest(repo, tag)
        .await
        .unwrap()
        .map(|h| h.digest)
}

fn setup(dir: &Path, rules: &str) -> (OciLayout, OciLayout) {
    std::fs::write(
        dir.join("policy.yaml"),
        format!("registries:\n  src: {{url: oci:src}}\n  dst: {{url: oci:dst}}\n{rules}"),
    )
    .unwrap();
    (
        OciLayout::new("src".parse().unwrap(), dir.join("src")),
        OciLayout::new("dst".parse().unwrap(), dir.join("dst")),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retag_waits_for_the_copy_it_reads_and_not_done_when_that_is_stale() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    let (src, dst) = setup(
        tmp.path(),
        "mirrors:\n  - {name: dep, from: src/team/app, to: dst/team/app}\n\
         retags:\n  - {tag: \"dst/team/app:latest\", newest: {repo: dst/team/app, tags: {semver: \"*\"}}}\n",
    );
    let app: Repo = "team/app".parse().unwrap();
    let v1 = push_image(&src, &app, Some(&t("1.0.0")), &image("1"))
        .await
        .unwrap();
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(digest(&dst, &app, "latest").await, Some(v1.clone()));

    // 2.0.0 is released; the saved plan copies it and moves `latest` onto it.
    let v2 = push_image(&src, &app, Some(&t("2.0.0")), &image("2"))
        .await
        .unwrap();
    let planfile = tmp.path().join("plan.json");
    let (code, out) = run(&["plan", "-C", d, "--out", planfile.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&planfile).unwrap()).unwrap();
    let retag = saved["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["target"] == "dst/team/app:latest")
        .unwrap();
    assert_eq!(retag["after"], "dst/team/app:2.0.0", "{saved:#}");

    // Before it is applied, someone puts another image under dst's 2.0.0.
    let other = push_image(&dst, &app, Some(&t("2.0.0")), &image("hand-made"))
        .await
        .unwrap();
    let (code, out) = run(&["apply", "-C", d, planfile.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("copy dst/team/app:2.0.0: STALE"), "{out}");
    assert!(
        out.contains("retag dst/team/app:latest: STALE")
            && out.contains("it needs dst/team/app:2.0.0 first"),
        "{out}"
    );
    assert_eq!(digest(&dst, &app, "2.0.0").await, Some(other));
    assert_eq!(
        digest(&dst, &app, "latest").await,
        Some(v1),
        "latest stays on a release the repo has"
    );

    // Put right, the same kind of plan applies both, the retag after the copy.
    push_image(&dst, &app, Some(&t("2.0.0")), &image("2"))
        .await
        .unwrap();
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(digest(&dst, &app, "latest").await, Some(v2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retag_chain_stops_where_a_link_was_moved_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    let (_, dst) = setup(
        tmp.path(),
        "retags:\n  - {tag: \"dst/team/app:rc\", newest: {repo: dst/team/app, tags: {semver: \"*\"}}}\n\
         \x20 - {tag: \"dst/team/app:stable\", from: \"dst/team/app:rc\"}\n\
         \x20 - {tag: \"dst/team/app:prod\", from: \"dst/team/app:stable\"}\n",
    );
    std::fs::create_dir_all(tmp.path().join("src")).unwrap();
    let app: Repo = "team/app".parse().unwrap();
    let v1 = push_image(&dst, &app, Some(&t("1.0.0")), &image("1"))
        .await
        .unwrap();
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(digest(&dst, &app, "prod").await, Some(v1.clone()));

    let v2 = push_image(&dst, &app, Some(&t("2.0.0")), &image("2"))
        .await
        .unwrap();
    let planfile = tmp.path().join("plan.json");
    let (code, out) = run(&["plan", "-C", d, "--out", planfile.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    // `stable` is moved by hand before the plan is applied.
    let hot = push_image(&dst, &app, Some(&t("stable")), &image("hotfix"))
        .await
        .unwrap();
    let (code, out) = run(&["apply", "-C", d, planfile.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("retag dst/team/app:rc: done"), "{out}");
    assert!(out.contains("retag dst/team/app:stable: STALE"), "{out}");
    assert!(
        out.contains("retag dst/team/app:prod: STALE")
            && out.contains("it needs dst/team/app:stable first"),
        "{out}"
    );
    assert_eq!(digest(&dst, &app, "rc").await, Some(v2));
    assert_eq!(digest(&dst, &app, "stable").await, Some(hot));
    assert_eq!(digest(&dst, &app, "prod").await, Some(v1), "prod untouched");
}
