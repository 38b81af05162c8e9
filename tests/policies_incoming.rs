//! `policies` judge what a plan brings into the managed repos before it
//! lands (a pull request's plan warns before the merge), through the CLI on
//! OCI-layout registries: observe reads the incoming images' details.

mod common;

use common::{ago, oci_tags, run, tag as t};

use regimen::model::Repo;
use regimen::registry::oci_layout::OciLayout;
use regimen::testkit::{push_image, ImageSpec};

async fn upstream(dir: &std::path::Path) {
    let up = OciLayout::new("up".parse().unwrap(), dir.join("up"));
    let app: Repo = "lib/app".parse().unwrap();
    for (v, days) in [("old", 692), ("new", 3)] {
        push_image(
            &up,
            &app,
            Some(&t(v)),
            &ImageSpec::new(&ago(days)).with_layer("v", v),
        )
        .await
        .unwrap();
    }
}

fn policy(dir: &std::path::Path, on: &str) {
    std::fs::write(
        dir.join("policy.yaml"),
        format!(
            "registries:\n  up: {{url: oci:up}}\n  prod: {{url: oci:prod}}\n\
             mirrors:\n  - {{name: m, from: up/lib/app, to: prod/lib/app}}\n\
             policies: {{max_age: 30d, on_violation: {on}}}\n"
        ),
    )
    .unwrap();
}

fn regimen(args: &[&str]) -> (i32, String) {
    run(common::regimen().args(args))
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_reports_what_a_mirror_would_bring_before_the_apply() {
    let tmp = tempfile::tempdir().unwrap();
    upstream(tmp.path()).await;
    policy(tmp.path(), "fail");
    let d = tmp.path().to_str().unwrap();
    let (code, out) = regimen(&["plan", "-C", d]);
    assert_eq!(
        code, 1,
        "on_violation: fail exits 1 before the merge:\n{out}"
    );
    assert!(
        out.contains("! violation max_age prod/lib/app:old")
            && out.contains("comes with this plan: mirror of up/lib/app:old"),
        "{out}"
    );
    assert!(out.contains("0 blocked, 1 violations."), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn enforce_does_not_copy_a_violating_image() {
    let tmp = tempfile::tempdir().unwrap();
    upstream(tmp.path()).await;
    policy(tmp.path(), "enforce");
    let d = tmp.path().to_str().unwrap();
    let (code, out) = regimen(&["plan", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("! blocked prod/lib/app:old")
            && out.contains("policy max_age: created 692d ago, max_age 30d"),
        "{out}"
    );
    let (code, out) = regimen(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    let prod = OciLayout::new("prod".parse().unwrap(), tmp.path().join("prod"));
    assert_eq!(oci_tags(&prod, "lib/app").await, ["new"]);
    let (code, out) = regimen(&["plan", "--detailed-exitcode", "-C", d]);
    assert_eq!(code, 0, "{out}");
}
