//! A retag pinned to a digest is satisfied once the tag is there, even after
//! the source image is deleted: it used to be blocked on every run ("source
//! … does not exist") although nothing was wrong.

mod common;

use common::{ago, run_args as run, tag as t};

use regimen::model::Repo;
use regimen::registry::oci_layout::OciLayout;
use regimen::registry::Registry;
use regimen::testkit::{push_image, ImageSpec};

#[tokio::test(flavor = "multi_thread")]
async fn a_pinned_retag_in_place_outlives_its_source() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    let src = OciLayout::new("src".parse().unwrap(), tmp.path().join("src"));
    let app: Repo = "team/app".parse().unwrap();
    let pinned = push_image(
        &src,
        &app,
        Some(&t("1.0")),
        &ImageSpec::new(&ago(3)).with_layer("v", "1"),
    )
    .await
    .unwrap();
    std::fs::write(
        tmp.path().join("policy.yaml"),
        format!(
            "registries:\n  src: {{url: oci:src}}\n  dst: {{url: oci:dst}}\n\
             retags:\n  - {{tag: \"dst/mirror/app:pinned\", from: \"src/team/app@{pinned}\"}}\n"
        ),
    )
    .unwrap();
    let (code, out) = run(&["apply", "--auto-approve", "-C", d]);
    assert_eq!(code, 0, "{out}");
    src.delete_manifest(&app, &pinned).await.unwrap();
    let (code, out) = run(&["plan", "--detailed-exitcode", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("! blocked"), "{out}");
    // Not in place and gone: blocked, as before.
    std::fs::remove_dir_all(tmp.path().join("dst")).unwrap();
    let (code, out) = run(&["plan", "-C", d]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("does not exist"), "{out}");
}
