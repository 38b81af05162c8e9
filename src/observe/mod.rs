//! Reading the real world into `Observed`: every fact is `Known` or
//! `Unknown { reason }`, and the planner never reads an unknown as absent.

pub mod cache;
mod hosts;
mod read;
pub(crate) use read::named;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Digest, RepoAddr, Tag, Timestamp};

pub use hosts::observe_hosts;
pub use read::{
    escaped, is_invisible, observe, printable, read_repo_heads, read_repos, Registries,
};
pub(crate) use read::{read_details, read_reports};

/// A fact that was either read or could not be.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Fact<T> {
    Known(T),
    Unknown { reason: String },
}

impl<T> Fact<T> {
    pub fn known(&self) -> Option<&T> {
        match self {
            Fact::Known(t) => Some(t),
            Fact::Unknown { .. } => None,
        }
    }
}

/// What was observed of the registries (and, later, hosts).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub repos: BTreeMap<RepoAddr, Fact<RepoState>>,
    /// Registry catalogs, read where retention globs have wildcards.
    pub catalogs: BTreeMap<crate::model::RegistryName, Fact<Vec<crate::model::Repo>>>,
    /// Referrer tags whose subject image is gone, per repo (read only for
    /// retention rules with `untagged_referrers`): `(tag, its digest, subject)`.
    pub orphans: BTreeMap<RepoAddr, Vec<Orphan>>,
    /// Details of images by (repo, digest), read where the plan needs them.
    pub images: BTreeMap<(RepoAddr, Digest), Fact<ImageInfo>>,
    /// Manifests of platform-filtered mirrors' sources by (repo, digest):
    /// the index's bytes, or `None` for a single-platform image. One GET
    /// each, where [`Observed::images`] would read every child and config.
    pub indexes: BTreeMap<(RepoAddr, Digest), Fact<Option<String>>>,
    /// Docker/Podman hosts of `hosts:`, by name.
    pub hosts: BTreeMap<String, Fact<HostState>>,
    /// Scan reports by (repo, referrer digest): what the referrer's report
    /// layers say, or why they could not be read or parsed. Read for
    /// candidates of promotions with `require.vulnerabilities`.
    pub reports: BTreeMap<(RepoAddr, Digest), Fact<Vec<crate::scan::Report>>>,
    /// Digests of referrer tags (`sha256-<hex>`, `sha256-<hex>.sig`, …) whose
    /// subject a rule copies with its referrers, by (repo, tag), both sides.
    pub referrer_tags: BTreeMap<(RepoAddr, Tag), Fact<Digest>>,
    /// What a referrer tag's manifest lists (an index's manifests, a cosign
    /// signature's layers), by (repo, digest); read only where the two sides
    /// of a rule hold different digests under one referrer tag.
    pub referrer_entries: BTreeMap<(RepoAddr, Digest), Fact<std::collections::BTreeSet<Digest>>>,
    /// Referrers a source registry indexes itself (the OCI 1.1 referrers
    /// API, a layout's `subject` manifests) by (repo, subject); `None` where
    /// it keeps no such index. Read for images a rule has already copied,
    /// so that a referrer attached since follows them.
    pub api_referrers: BTreeMap<(RepoAddr, Digest), Fact<Option<Vec<ReferrerInfo>>>>,
    /// Referrers the target lists for such an image (API or tag schema),
    /// read only where the source's own index lists some.
    pub listed_referrers: BTreeMap<(RepoAddr, Digest), Fact<std::collections::BTreeSet<Digest>>>,
}

/// What a Docker/Podman engine holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostState {
    pub images: Vec<HostImage>,
    pub containers: Vec<HostContainer>,
}

/// One image in an engine's store, with the names the engine shows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostImage {
    /// The engine's image ID (`sha256:` of the config).
    pub id: String,
    /// `host:port/repo:tag` names.
    pub tags: Vec<String>,
    /// `host:port/repo@sha256:…`: the registry manifests it was pulled as.
    pub repo_digests: Vec<String>,
    pub created: Option<Timestamp>,
    pub size: u64,
    /// Image labels (owner and source for `inventory`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Containers of any kind the engine counts on this image, when it
    /// says: Podman counts its "external" (buildah) containers here, which
    /// it does not list; Docker leaves it unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<u64>,
}

/// One container, running or not.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostContainer {
    pub id: String,
    pub name: String,
    /// The image as the container was created from it (name or ID).
    pub image: String,
    pub image_id: String,
    /// Up: running, or paused (frozen, still holding its resources).
    pub running: bool,
    /// Paused: it must be unpaused before it can be stopped.
    #[serde(default)]
    pub paused: bool,
    pub started: Option<Timestamp>,
}

impl HostState {
    /// Containers (of any state) created from this image.
    pub fn users<'a>(&'a self, image: &'a HostImage) -> impl Iterator<Item = &'a HostContainer> {
        self.containers
            .iter()
            .filter(move |c| same_id(&c.image_id, &image.id))
    }

    /// Containers on this image that the engine counts but does not list
    /// (Podman's external containers: buildah's working containers).
    pub fn unlisted_users(&self, image: &HostImage) -> u64 {
        image
            .containers
            .unwrap_or(0)
            .saturating_sub(self.users(image).count() as u64)
    }

    /// Why an image is in use, if it is: the first container on it, or the
    /// count of those the engine does not list.
    pub fn use_of(&self, image: &HostImage) -> Option<String> {
        if let Some(c) = self.users(image).next() {
            return Some(format!("container {}", c.name));
        }
        match self.unlisted_users(image) {
            0 => None,
            n => Some(format!(
                "{n} container{} the engine does not list (external, e.g. buildah's)",
                if n == 1 { "" } else { "s" }
            )),
        }
    }
}

/// Engines differ on whether IDs carry `sha256:`.
pub fn same_id(a: &str, b: &str) -> bool {
    a.trim_start_matches("sha256:") == b.trim_start_matches("sha256:")
}

/// A repository's tags and where they point. An absent repository is known
/// and empty, and `missing`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RepoState {
    pub tags: BTreeMap<Tag, Digest>,
    /// The registry said the repository does not exist (not merely empty).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missing: bool,
    /// Tags of the referrers tag schema (`sha256-<hex>`, `sha256-<hex>.sig`):
    /// listed, not read, since they are artifacts rather than images.
    #[serde(default)]
    pub referrer_tags: std::collections::BTreeSet<Tag>,
    /// Names of digests that are not tags (see
    /// [`crate::registry::Registry::other_names`]): such a digest is never
    /// deleted, only untagged.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other_names: BTreeMap<Digest, Vec<String>>,
    /// Digests whose tag HEAD said a single-image manifest (not an index):
    /// a platform filter has nothing to read in them.
    #[serde(skip)]
    pub single_images: std::collections::BTreeSet<Digest>,
}

/// What the planner may need to know about one image.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub media_type: String,
    /// Config `created` (the newest among an index's children), or the
    /// `org.opencontainers.image.created` annotation.
    pub created: Option<Timestamp>,
    /// `os/arch[/variant]` of each child of an index (empty for a single image).
    pub platforms: Vec<String>,
    /// Total bytes: manifest, config and layers (all children for an index).
    pub size: u64,
    pub referrers: Vec<ReferrerInfo>,
    /// The raw index JSON, for platform-filtered mirrors.
    pub index_manifest: Option<String>,
    /// `org.opencontainers.image.base.name`: the manifest's (an index's, else
    /// its first child's) annotation, else the config label of that name.
    #[serde(default)]
    pub base_name: Option<String>,
    /// Config labels overlaid with manifest annotations (the manifest's, else
    /// an index's first child's): owner and source for `inventory`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// An image manifest's `artifactType`, where it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl ImageInfo {
    /// Whether this is a placeholder an unfinished untag left under a tag
    /// (see [`crate::registry::remove_tag`]), not an image.
    pub fn is_regimen_placeholder(&self) -> bool {
        self.artifact_type.as_deref() == Some(crate::registry::PLACEHOLDER_ARTIFACT_TYPE)
    }
}

/// The annotation (or config label) naming an image's base image.
pub const BASE_NAME: &str = "org.opencontainers.image.base.name";

/// A referrers-schema tag whose subject no longer exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orphan {
    pub tag: Tag,
    pub digest: Digest,
    pub subject: Digest,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferrerInfo {
    pub digest: Digest,
    pub artifact_type: String,
}

impl Observed {
    pub fn repo(&self, r: &RepoAddr) -> Option<&Fact<RepoState>> {
        self.repos.get(r)
    }
    pub fn image(&self, r: &RepoAddr, d: &Digest) -> Option<&Fact<ImageInfo>> {
        self.images.get(&(r.clone(), d.clone()))
    }
    pub fn referrer_tag(&self, r: &RepoAddr, t: &Tag) -> Option<&Fact<Digest>> {
        self.referrer_tags.get(&(r.clone(), t.clone()))
    }
    pub fn referrer_entries(
        &self,
        r: &RepoAddr,
        d: &Digest,
    ) -> Option<&Fact<std::collections::BTreeSet<Digest>>> {
        self.referrer_entries.get(&(r.clone(), d.clone()))
    }
}
