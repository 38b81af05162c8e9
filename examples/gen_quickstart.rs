//! Generates the quickstart's upstream registry (`examples/quickstart/upstream`),
//! a small OCI-layout tree committed to Git. Deterministic: running it again
//! rewrites the same bytes.
//!
//!     cargo run --example gen_quickstart

use std::path::PathBuf;

use regimen::model::{Repo, Tag};
use regimen::registry::oci_layout::OciLayout;
use regimen::registry::Registry;
use regimen::testkit::{push_image, push_index, push_referrer, ImageSpec};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/upstream");
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    let reg = OciLayout::new(
        "upstream".parse().map_err(anyhow::Error::msg)?,
        root.clone(),
    );
    let repo = |s: &str| s.parse::<Repo>().map_err(anyhow::Error::msg);
    let tag = |s: &str| s.parse::<Tag>().map_err(anyhow::Error::msg);

    let alpine = repo("library/alpine")?;
    for (t, created) in [
        ("3.17.0", "2025-03-01T10:00:00Z"),
        ("3.18.0", "2025-06-01T10:00:00Z"),
        ("3.20.0-rc1", "2026-01-10T10:00:00Z"),
    ] {
        let spec = ImageSpec::new(created).with_layer("etc/alpine-release", format!("{t}\n"));
        push_image(&reg, &alpine, Some(&tag(t)?), &spec).await?;
    }
    let multi = [
        ImageSpec::new("2025-12-01T10:00:00Z").with_layer("etc/alpine-release", "3.19.1 amd64\n"),
        ImageSpec::new("2025-12-01T10:00:00Z")
            .with_layer("etc/alpine-release", "3.19.1 arm64\n")
            .with_platform("linux", "arm64"),
    ];
    push_index(&reg, &alpine, Some(&tag("3.19.1")?), &multi).await?;

    let api = repo("team/api")?;
    let sbom = "application/vnd.cyclonedx+json";
    for (t, created, with_sbom) in [
        ("0.9.0", "2025-09-01T10:00:00Z", false),
        ("1.0.0", "2025-10-01T10:00:00Z", true),
        ("1.1.0", "2025-11-01T10:00:00Z", true),
        ("1.2.0", "2026-02-01T10:00:00Z", false),
    ] {
        let spec = ImageSpec::new(created)
            .with_layer("srv/api/VERSION", format!("{t}\n"))
            .with_annotation(
                "org.opencontainers.image.source",
                "https://example.invalid/team/api",
            );
        let d = push_image(&reg, &api, Some(&tag(t)?), &spec).await?;
        if with_sbom {
            let doc = format!(
                r#"{{"bomFormat":"CycloneDX","specVersion":"1.5","metadata":{{"component":{{"name":"api","version":"{t}"}}}}}}"#
            );
            push_referrer(&reg, &api, &d, sbom, doc.as_bytes()).await?;
        }
    }
    println!("wrote {}", root.display());
    for r in reg.list_repos().await? {
        println!("  {r}: {:?}", reg.list_tags(&r).await?);
    }
    Ok(())
}
