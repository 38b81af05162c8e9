//! Small, valid, deterministic container images for tests, examples and
//! benchmarks, pushed through any [`Registry`].
//!
//! Every image has one uncompressed tar layer holding one file, and a config
//! with `created`, `os`, `architecture`, `config.Labels` and `rootfs.diff_ids`,
//! so skopeo, podman and docker accept it. The same [`ImageSpec`] always gives
//! the same bytes, hence the same digests.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::model::{Digest, Repo, Tag, Timestamp};
use crate::registry::{BlobStream, Descriptor, Manifest, MediaType, Registry};

/// The uncompressed OCI layer media type.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// The uncompressed Docker schema2 layer media type.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// The `{}` blob OCI 1.1 artifacts use as config.
pub const EMPTY_JSON: &[u8] = b"{}";

const CHUNK: usize = 64 * 1024;

/// What an image is made of. Build with [`ImageSpec::new`] and the `with_*`
/// methods, or fill the fields directly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSpec {
    /// Config `created`, RFC 3339 (`2026-01-02T03:04:05Z`); also the tar mtime.
    pub created: String,
    /// Name of the one file in the layer.
    pub file_name: String,
    /// Contents of that file.
    pub layer_bytes: Vec<u8>,
    /// Config `config.Labels`.
    pub labels: BTreeMap<String, String>,
    /// Manifest annotations (OCI only; Docker schema2 has none).
    pub annotations: BTreeMap<String, String>,
    /// `(os, architecture)`, e.g. `("linux", "amd64")`.
    pub platform: (String, String),
    /// Config `Cmd`; when set, the layer's file is executable (a container
    /// can run it, e.g. a static busybox).
    pub cmd: Option<Vec<String>>,
}

impl Default for ImageSpec {
    fn default() -> Self {
        ImageSpec::new("2026-01-01T00:00:00Z")
    }
}

impl ImageSpec {
    /// A linux/amd64 image created at `created` with a small text file.
    pub fn new(created: &str) -> ImageSpec {
        ImageSpec {
            created: created.to_string(),
            file_name: "hello.txt".to_string(),
            layer_bytes: b"hello from regimen\n".to_vec(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            platform: ("linux".to_string(), "amd64".to_string()),
            cmd: None,
        }
    }

    /// The layer holds one executable, and containers run `cmd`.
    pub fn with_command(
        mut self,
        file_name: &str,
        bytes: impl Into<Vec<u8>>,
        cmd: &[&str],
    ) -> Self {
        self.file_name = file_name.to_string();
        self.layer_bytes = bytes.into();
        self.cmd = Some(cmd.iter().map(|s| s.to_string()).collect());
        self
    }
    pub fn with_label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }
    pub fn with_annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_string(), value.to_string());
        self
    }
    pub fn with_platform(mut self, os: &str, arch: &str) -> Self {
        self.platform = (os.to_string(), arch.to_string());
        self
    }
    pub fn with_layer(mut self, file_name: &str, bytes: impl Into<Vec<u8>>) -> Self {
        self.file_name = file_name.to_string();
        self.layer_bytes = bytes.into();
        self
    }
}

/// An image of `size` pseudo-random bytes (deterministic in `seed`), for
/// benchmarks. Different seeds give different digests.
pub fn layer_size_image(seed: u64, size: usize, created: &str) -> ImageSpec {
    ImageSpec::new(created)
        .with_layer("data.bin", pseudo_random_bytes(seed, size))
        .with_label("org.example.regimen.seed", &seed.to_string())
}

/// `size` bytes of splitmix64 output seeded with `seed`.
pub fn pseudo_random_bytes(seed: u64, size: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(size);
    out
}

/// A ustar archive holding one regular file (mode 0644, owner root) with
/// the given mtime: a 512-byte header, the data padded to 512 bytes, and two
/// zero blocks.
pub fn tar_one_file(name: &str, data: &[u8], mtime: u64) -> anyhow::Result<Vec<u8>> {
    tar_file(name, data, mtime, 0o644)
}

/// Like [`tar_one_file`], with the file's mode (`0o755` for an executable).
pub fn tar_file(name: &str, data: &[u8], mtime: u64, mode: u32) -> anyhow::Result<Vec<u8>> {
    if name.is_empty() || name.len() > 99 || name.starts_with('/') {
        bail!("tar entry name `{name}` must be a relative path of 1 to 99 bytes");
    }
    let size = data.len() as u64;
    if size >= 8 << 30 {
        bail!("tar entry of {size} bytes is too large for a ustar header");
    }
    let mut h = [0u8; 512];
    fn put(h: &mut [u8; 512], at: usize, field: &[u8]) {
        h[at..at + field.len()].copy_from_slice(field);
    }
    put(&mut h, 0, name.as_bytes());
    put(&mut h, 100, format!("{:07o}\0", mode & 0o7777).as_bytes());
    put(&mut h, 108, b"0000000\0"); // uid
    put(&mut h, 116, b"0000000\0"); // gid
    put(&mut h, 124, format!("{size:011o}\0").as_bytes());
    put(
        &mut h,
        136,
        format!("{:011o}\0", mtime.min(0o77777777777)).as_bytes(),
    );
    put(&mut h, 148, b"        "); // checksum: spaces while summing
    h[156] = b'0'; // regular file
    put(&mut h, 257, b"ustar\0");
    put(&mut h, 263, b"00");
    put(&mut h, 265, b"root");
    put(&mut h, 297, b"root");
    put(&mut h, 329, b"0000000\0"); // devmajor
    put(&mut h, 337, b"0000000\0"); // devminor
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());

    let padded = data.len().div_ceil(512) * 512;
    let mut out = Vec::with_capacity(512 + padded + 1024);
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(512 + padded + 1024, 0);
    Ok(out)
}

/// Which manifest format to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// OCI image manifest, OCI config and uncompressed OCI tar layer.
    Oci,
    /// Docker schema2 manifest, Docker config and uncompressed Docker tar layer.
    Docker,
}

/// The three documents of one image, not yet pushed.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub config: Vec<u8>,
    pub layer: Vec<u8>,
    pub manifest: Manifest,
}

fn descriptor_json(media_type: &str, digest: &Digest, size: u64) -> Value {
    json!({"mediaType": media_type, "digest": digest.as_str(), "size": size})
}

fn annotations_json(a: &BTreeMap<String, String>) -> Value {
    Value::Object(
        a.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// Builds the config, layer and manifest of `spec` (deterministically).
pub fn build_image(spec: &ImageSpec, flavor: Flavor) -> anyhow::Result<BuiltImage> {
    let created = Timestamp::parse_rfc3339(&spec.created)
        .with_context(|| format!("image `created` must be RFC 3339, got `{}`", spec.created))?;
    let mode = if spec.cmd.is_some() { 0o755 } else { 0o644 };
    let layer = tar_file(
        &spec.file_name,
        &spec.layer_bytes,
        created.0.max(0) as u64,
        mode,
    )?;
    let layer_digest = Digest::sha256_of(&layer);

    let mut inner = Map::new();
    if !spec.labels.is_empty() {
        inner.insert("Labels".into(), annotations_json(&spec.labels));
    }
    if let Some(cmd) = &spec.cmd {
        inner.insert("Cmd".into(), json!(cmd));
    }
    let config = json!({
        "created": spec.created,
        "architecture": spec.platform.1,
        "os": spec.platform.0,
        "config": inner,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest.as_str()]},
        "history": [{"created": spec.created, "created_by": format!("regimen testkit: add {}", spec.file_name)}],
    });
    let config = serde_json::to_vec(&config)?;
    let config_digest = Digest::sha256_of(&config);

    let (manifest_type, config_type, layer_type) = match flavor {
        Flavor::Oci => (
            MediaType::OCI_MANIFEST,
            MediaType::OCI_CONFIG,
            OCI_LAYER_TAR,
        ),
        Flavor::Docker => (
            MediaType::DOCKER_MANIFEST,
            MediaType::DOCKER_CONFIG,
            DOCKER_LAYER_TAR,
        ),
    };
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": descriptor_json(config_type, &config_digest, config.len() as u64),
        "layers": [descriptor_json(layer_type, &layer_digest, layer.len() as u64)],
    });
    if flavor == Flavor::Oci && !spec.annotations.is_empty() {
        manifest["annotations"] = annotations_json(&spec.annotations);
    }
    let manifest = Manifest::from_bytes(serde_json::to_vec(&manifest)?, Some(manifest_type))?;
    Ok(BuiltImage {
        config,
        layer,
        manifest,
    })
}

/// Pushes `bytes` as a blob (skipped when already present); returns its digest.
pub async fn push_blob(reg: &dyn Registry, repo: &Repo, bytes: &[u8]) -> anyhow::Result<Digest> {
    let digest = Digest::sha256_of(bytes);
    let size = bytes.len() as u64;
    if reg.head_blob(repo, &digest).await? == Some(size) {
        return Ok(digest);
    }
    let all = Bytes::copy_from_slice(bytes);
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..all.len())
        .step_by(CHUNK)
        .map(|i| Ok(all.slice(i..(i + CHUNK).min(all.len()))))
        .collect();
    let stream: BlobStream = Box::pin(futures_util::stream::iter(chunks));
    reg.put_blob(repo, &digest, size, stream)
        .await
        .with_context(|| format!("pushing blob {digest} to {}/{repo}", reg.name()))?;
    Ok(digest)
}

async fn push_built(
    reg: &dyn Registry,
    repo: &Repo,
    tag: Option<&Tag>,
    img: &BuiltImage,
) -> anyhow::Result<Descriptor> {
    push_blob(reg, repo, &img.layer).await?;
    push_blob(reg, repo, &img.config).await?;
    reg.put_manifest(repo, tag, &img.manifest)
        .await
        .with_context(|| {
            format!(
                "pushing manifest {} to {}/{repo}",
                img.manifest.digest,
                reg.name()
            )
        })?;
    Ok(img.manifest.descriptor())
}

/// Pushes an OCI image (layer, config, then manifest, then `tag` if given).
pub async fn push_image(
    reg: &dyn Registry,
    repo: &Repo,
    tag: Option<&Tag>,
    spec: &ImageSpec,
) -> anyhow::Result<Digest> {
    let img = build_image(spec, Flavor::Oci)?;
    Ok(push_built(reg, repo, tag, &img).await?.digest)
}

/// Pushes a Docker schema2 image (layer, config, then manifest, then `tag`).
pub async fn push_docker_image(
    reg: &dyn Registry,
    repo: &Repo,
    tag: Option<&Tag>,
    spec: &ImageSpec,
) -> anyhow::Result<Digest> {
    let img = build_image(spec, Flavor::Docker)?;
    Ok(push_built(reg, repo, tag, &img).await?.digest)
}

/// The OCI index over already-built children, each with its platform.
pub fn build_index(children: &[(Descriptor, &ImageSpec)]) -> anyhow::Result<Manifest> {
    let manifests: Vec<Value> = children
        .iter()
        .map(|(d, spec)| {
            let mut v = descriptor_json(&d.media_type, &d.digest, d.size);
            v["platform"] = json!({"architecture": spec.platform.1, "os": spec.platform.0});
            v
        })
        .collect();
    let index =
        json!({"schemaVersion": 2, "mediaType": MediaType::OCI_INDEX, "manifests": manifests});
    Ok(Manifest::from_bytes(
        serde_json::to_vec(&index)?,
        Some(MediaType::OCI_INDEX),
    )?)
}

/// Pushes a multi-platform OCI index: every child image first (untagged),
/// then the index, then `tag`.
pub async fn push_index(
    reg: &dyn Registry,
    repo: &Repo,
    tag: Option<&Tag>,
    specs: &[ImageSpec],
) -> anyhow::Result<Digest> {
    if specs.is_empty() {
        bail!("an index needs at least one image");
    }
    let mut children = Vec::with_capacity(specs.len());
    for spec in specs {
        let img = build_image(spec, Flavor::Oci)?;
        children.push((push_built(reg, repo, None, &img).await?, spec));
    }
    let index = build_index(&children)?;
    reg.put_manifest(repo, tag, &index)
        .await
        .with_context(|| format!("pushing index {} to {}/{repo}", index.digest, reg.name()))
}

/// Pushes an OCI 1.1 artifact referring to `subject` (which must be in
/// `repo`): config is the empty `{}` blob, one layer holds `payload` with
/// media type `artifact_type`. Untagged; returns the artifact's digest.
pub async fn push_referrer(
    reg: &dyn Registry,
    repo: &Repo,
    subject: &Digest,
    artifact_type: &str,
    payload: &[u8],
) -> anyhow::Result<Digest> {
    push_referrer_with_annotations(reg, repo, subject, artifact_type, payload, &BTreeMap::new())
        .await
}

/// [`push_referrer`] with manifest annotations (e.g. `org.opencontainers.image.created`).
pub async fn push_referrer_with_annotations(
    reg: &dyn Registry,
    repo: &Repo,
    subject: &Digest,
    artifact_type: &str,
    payload: &[u8],
    annotations: &BTreeMap<String, String>,
) -> anyhow::Result<Digest> {
    let head = reg
        .head_manifest(repo, subject.as_str())
        .await?
        .with_context(|| format!("subject {subject} is not in {}/{repo}", reg.name()))?;
    let empty = push_blob(reg, repo, EMPTY_JSON).await?;
    let layer = push_blob(reg, repo, payload).await?;
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": MediaType::OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": descriptor_json(MediaType::OCI_EMPTY, &empty, EMPTY_JSON.len() as u64),
        "layers": [descriptor_json(artifact_type, &layer, payload.len() as u64)],
        "subject": descriptor_json(&head.media_type, &head.digest, head.size),
    });
    if !annotations.is_empty() {
        manifest["annotations"] = annotations_json(annotations);
    }
    let manifest = Manifest::from_bytes(
        serde_json::to_vec(&manifest)?,
        Some(MediaType::OCI_MANIFEST),
    )?;
    reg.put_manifest(repo, None, &manifest)
        .await
        .with_context(|| {
            format!(
                "pushing referrer {} to {}/{repo}",
                manifest.digest,
                reg.name()
            )
        })
}

/// Attaches a scan report (SARIF, Trivy or Grype JSON bytes) to `subject` as
/// a referrer of `artifact_type`, the way `oras attach` and `trivy … --format
/// sarif | oras attach` do; `created` becomes the referrer's
/// `org.opencontainers.image.created` annotation. Returns the referrer's digest.
pub async fn push_scan_report(
    reg: &dyn Registry,
    repo: &Repo,
    subject: &Digest,
    artifact_type: &str,
    report: &[u8],
    created: Option<Timestamp>,
) -> anyhow::Result<Digest> {
    let mut annotations = BTreeMap::new();
    if let Some(c) = created {
        annotations.insert(
            "org.opencontainers.image.created".to_string(),
            c.to_rfc3339(),
        );
    }
    push_referrer_with_annotations(reg, repo, subject, artifact_type, report, &annotations).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::manifest::Parsed;
    use crate::registry::oci_layout::OciLayout;
    use futures_util::TryStreamExt;

    fn repo(s: &str) -> Repo {
        s.parse().unwrap()
    }
    fn tag(s: &str) -> Tag {
        s.parse().unwrap()
    }

    #[test]
    fn tar_is_well_formed() {
        let t = tar_one_file("hello.txt", b"hi\n", 1_767_225_600).unwrap();
        assert_eq!(t.len(), 512 + 512 + 1024);
        let mut h = t[..512].to_vec();
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        h[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, h.iter().map(|&b| u32::from(b)).sum::<u32>());
        assert_eq!(&t[512..515], b"hi\n");
        assert!(t[515..].iter().all(|&b| b == 0));
        assert_eq!(
            tar_one_file("x", &[7; 512], 0).unwrap().len(),
            512 + 512 + 1024
        );
        assert!(tar_one_file("", b"", 0).is_err());
    }

    #[test]
    fn images_are_deterministic() {
        let a = build_image(
            &layer_size_image(7, 10_000, "2026-01-01T00:00:00Z"),
            Flavor::Oci,
        )
        .unwrap();
        let b = build_image(
            &layer_size_image(7, 10_000, "2026-01-01T00:00:00Z"),
            Flavor::Oci,
        )
        .unwrap();
        let c = build_image(
            &layer_size_image(8, 10_000, "2026-01-01T00:00:00Z"),
            Flavor::Oci,
        )
        .unwrap();
        assert_eq!(a.manifest.digest, b.manifest.digest);
        assert_ne!(a.manifest.digest, c.manifest.digest);
        assert!(build_image(&ImageSpec::new("yesterday"), Flavor::Oci).is_err());
        let d = build_image(&ImageSpec::default(), Flavor::Docker).unwrap();
        assert_eq!(d.manifest.media_type, MediaType::DOCKER_MANIFEST);
    }

    #[tokio::test]
    async fn index_and_referrer_read_back_from_oci_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = OciLayout::new("local".parse().unwrap(), tmp.path().to_path_buf());
        let rp = repo("team/api");
        let specs = [
            ImageSpec::new("2026-01-02T03:04:05Z").with_label("version", "1.0"),
            ImageSpec::new("2026-01-02T03:04:05Z")
                .with_label("version", "1.0")
                .with_platform("linux", "arm64"),
        ];
        let idx = push_index(&reg, &rp, Some(&tag("1.0")), &specs)
            .await
            .unwrap();
        let sbom = push_referrer(
            &reg,
            &rp,
            &idx,
            "application/vnd.cyclonedx+json",
            b"{\"bomFormat\":\"CycloneDX\"}",
        )
        .await
        .unwrap();
        let docker = push_docker_image(&reg, &rp, Some(&tag("docker")), &ImageSpec::default())
            .await
            .unwrap();

        assert_eq!(
            reg.list_tags(&rp).await.unwrap(),
            vec![tag("1.0"), tag("docker")]
        );
        let index = reg.get_manifest(&rp, "1.0").await.unwrap().unwrap();
        assert_eq!(index.digest, idx);
        let Parsed::Index { manifests, .. } = index.parse().unwrap() else {
            panic!("not an index")
        };
        assert_eq!(manifests.len(), 2);
        assert_eq!(
            manifests[1].platform.as_ref().unwrap().to_string(),
            "linux/arm64"
        );
        for child in &manifests {
            let m = reg
                .get_manifest(&rp, child.digest.as_str())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(m.media_type, MediaType::OCI_MANIFEST);
            let Parsed::Image { config, layers, .. } = m.parse().unwrap() else {
                panic!("not an image")
            };
            let cfg: Vec<Bytes> = reg
                .get_blob(&rp, &config.digest)
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            let cfg: Value = serde_json::from_slice(&cfg.concat()).unwrap();
            assert_eq!(cfg["created"], "2026-01-02T03:04:05Z");
            assert_eq!(cfg["config"]["Labels"]["version"], "1.0");
            assert_eq!(cfg["rootfs"]["diff_ids"][0], layers[0].digest.as_str());
        }

        let refs = reg.referrers(&rp, &idx).await.unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].digest, sbom);
        assert_eq!(
            refs[0].artifact_type.as_deref(),
            Some("application/vnd.cyclonedx+json")
        );
        let head = reg.head_manifest(&rp, "docker").await.unwrap().unwrap();
        assert_eq!(
            (head.digest, head.media_type.as_str()),
            (docker, MediaType::DOCKER_MANIFEST)
        );

        // Pushing the same things again is a no-op with the same digests.
        assert_eq!(
            push_index(&reg, &rp, Some(&tag("1.0")), &specs)
                .await
                .unwrap(),
            idx
        );
    }

    /// When skopeo is installed, it must read what we wrote (OCI image,
    /// multi-platform index) and copy it with every blob verified. Docker
    /// schema2 manifests are stored byte for byte with their own media type;
    /// containers/image only resolves `index.json` entries with OCI media
    /// types, so skopeo does not see that tag (regimen itself does).
    #[tokio::test]
    async fn skopeo_reads_layouts() {
        use std::process::Command;
        // skopeo is a required test tool (scripts/test.sh installs it): no silent skip.
        let present = Command::new("skopeo")
            .arg("--version")
            .output()
            .map(|o| o.status.success());
        assert!(
            matches!(present, Ok(true)),
            "skopeo is required: run scripts/test.sh, which installs it"
        );
        let tmp = tempfile::tempdir().unwrap();
        let reg = OciLayout::new("local".parse().unwrap(), tmp.path().join("registry"));
        let rp = repo("mirror/alpine");
        let spec = ImageSpec::new("2026-01-02T03:04:05Z")
            .with_label("org.opencontainers.image.title", "t");
        let img = push_image(&reg, &rp, Some(&tag("oci")), &spec)
            .await
            .unwrap();
        let idx = push_index(
            &reg,
            &rp,
            Some(&tag("multi")),
            &[spec.clone(), spec.clone().with_platform("linux", "arm64")],
        )
        .await
        .unwrap();
        push_referrer(&reg, &rp, &img, "application/vnd.cyclonedx+json", b"{}")
            .await
            .unwrap();
        let layout = reg.repo_dir(&rp);
        let skopeo = |args: &[&str]| {
            let out = Command::new("skopeo")
                .arg("--insecure-policy")
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "skopeo {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let src = format!("oci:{}:oci", layout.display());
        let info: Value = serde_json::from_str(&skopeo(&["inspect", &src])).unwrap();
        assert_eq!(info["Created"], "2026-01-02T03:04:05Z", "{info}");
        assert_eq!(info["Architecture"], "amd64");
        assert_eq!(info["Labels"]["org.opencontainers.image.title"], "t");
        skopeo(&[
            "copy",
            &src,
            &format!("dir:{}", tmp.path().join("copy-oci").display()),
        ]);
        let src = format!("oci:{}:multi", layout.display());
        let raw: Value = serde_json::from_str(&skopeo(&["inspect", "--raw", &src])).unwrap();
        assert_eq!(Digest::sha256_of(&serde_json::to_vec(&raw).unwrap()), idx);
        // A layout written by skopeo reads back through OciLayout.
        let copied = repo("copied/by/skopeo");
        std::fs::create_dir_all(reg.repo_dir(&copied)).unwrap();
        let dst = format!("oci:{}:v1", reg.repo_dir(&copied).display());
        skopeo(&["copy", "--all", "--preserve-digests", &src, &dst]);
        assert_eq!(reg.list_tags(&copied).await.unwrap(), vec![tag("v1")]);
        assert_eq!(
            reg.head_manifest(&copied, "v1")
                .await
                .unwrap()
                .unwrap()
                .digest,
            idx
        );
        let repos: Vec<String> = reg
            .list_repos()
            .await
            .unwrap()
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(repos, ["copied/by/skopeo", "mirror/alpine"]);
    }
}
