//! A foreign (non-distributable) layer, as Windows base images have: the
//! manifest lists it with `urls`, and registries do not hold its blob.
//! Mirrored as skopeo does: the manifest as it is, the layer left to its URLs.

mod common;

use common::{ago, oci_tags, tag as t};

use assert_cmd::Command;
use regimen::model::Repo;
use regimen::registry::oci_layout::OciLayout;
use regimen::registry::{Manifest, MediaType, Registry};
use regimen::testkit::push_blob;

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_layer_the_source_does_not_hold_is_left_to_its_urls() {
    let tmp = tempfile::tempdir().unwrap();
    let src = OciLayout::new("src".parse().unwrap(), tmp.path().join("src"));
    let repo: Repo = "win/base".parse().unwrap();
    let config = format!(
        "{{\"architecture\":\"amd64\",\"os\":\"windows\",\"created\":\"{}\",\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[]}}}}",
        ago(3)
    );
    let config_digest = push_blob(&src, &repo, config.as_bytes()).await.unwrap();
    let local = push_blob(&src, &repo, b"a layer the registry holds")
        .await
        .unwrap();
    let foreign = regimen::model::Digest::sha256_of(b"a layer only on its URL");
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":"{foreign}","size":23,"urls":["https://mcr.example/{foreign}"]}},{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{local}","size":26}}]}}"#,
        MediaType::OCI_MANIFEST,
        config.len()
    );
    let m =
        Manifest::from_bytes(manifest.clone().into_bytes(), Some(MediaType::OCI_MANIFEST)).unwrap();
    src.put_manifest(&repo, Some(&t("ltsc2022")), &m)
        .await
        .unwrap();
    std::fs::write(
        tmp.path().join("policy.yaml"),
        "registries:\n  src: {url: oci:src}\n  dst: {url: oci:dst}\nmirrors:\n  - {from: src/win/base, to: dst/win/base}\n",
    )
    .unwrap();
    let out = Command::cargo_bin("regimen")
        .unwrap()
        .args([
            "apply",
            "--auto-approve",
            "-C",
            tmp.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let dst = OciLayout::new("dst".parse().unwrap(), tmp.path().join("dst"));
    assert_eq!(oci_tags(&dst, "win/base").await, ["ltsc2022"]);
    // The manifest byte for byte; the held layer copied; the foreign one not.
    let copied = dst.get_manifest(&repo, "ltsc2022").await.unwrap().unwrap();
    assert_eq!(copied.bytes, manifest.as_bytes());
    assert!(dst.head_blob(&repo, &local).await.unwrap().is_some());
    assert!(dst.head_blob(&repo, &foreign).await.unwrap().is_none());
}
