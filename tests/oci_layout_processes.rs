//! Two regimen processes writing one OCI layout at once (a daemon and a CI
//! job sharing a folder): neither loses the other's `index.json` update.

use std::process::{Command, Stdio};

use regimen::model::Repo;
use regimen::registry::oci_layout::OciLayout;
use regimen::registry::Registry;
use regimen::testkit::{push_image, ImageSpec};

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_applies_to_one_layout_keep_every_tag() {
    let tmp = tempfile::tempdir().unwrap();
    let up = OciLayout::new("up".parse().unwrap(), tmp.path().join("up"));
    let app: Repo = "team/app".parse().unwrap();
    for side in ["a", "b"] {
        for i in 0..15 {
            let spec = ImageSpec::new("2026-01-01T00:00:00Z").with_layer("v", format!("{side}{i}"));
            push_image(
                &up,
                &app,
                Some(&format!("{side}-{i}").parse().unwrap()),
                &spec,
            )
            .await
            .unwrap();
        }
    }
    // Two policy folders, one shared pair of layouts; each mirrors its half.
    let mut children = Vec::new();
    for side in ["a", "b"] {
        let dir = tmp.path().join(format!("policy-{side}"));
        std::fs::create_dir_all(&dir).unwrap();
        let root = tmp.path().display();
        std::fs::write(
            dir.join("policy.yaml"),
            format!(
                "registries:\n  up: {{url: \"oci:{root}/up\"}}\n  out: {{url: \"oci:{root}/out\"}}\n\
                 mirrors:\n  - {{from: up/team/app, to: out/team/app, tags: {{regex: \"^{side}-\"}}}}\n"
            ),
        )
        .unwrap();
        children.push(
            Command::new(assert_cmd::cargo::cargo_bin("regimen"))
                .args(["apply", "--auto-approve", "-q", "-C"])
                .arg(&dir)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = OciLayout::new("out".parse().unwrap(), tmp.path().join("out"));
    let tags = out.list_tags(&app).await.unwrap();
    assert_eq!(tags.len(), 30, "{tags:?}");
}
