//! The validated policy (the *desired* state). Doc comments here are the
//! descriptions editors show from `schemas/regimen.schema.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;

use super::node::Loc;
use super::selector::TagSelector;
use crate::model::{Duration, ImageRef, RegistryName, RepoAddr};

/// One policy file's sections. Every file below the policy directory has this
/// shape; sections from all files are merged.
#[derive(Clone, Debug, Default, JsonSchema)]
#[schemars(title = "regimen policy file")]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Registries by name; image addresses are `NAME/REPO[:TAG|@DIGEST]`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Registry>")]
    #[schemars(extend("propertyNames" = {"pattern": "^[A-Za-z0-9_-]{1,64}$"}))]
    pub registries: BTreeMap<RegistryName, Registry>,
    /// Keep TO a copy of FROM.
    #[serde(default)]
    pub mirrors: Vec<Mirror>,
    /// Copy FROM to TO when requirements hold; never moves an existing TO tag.
    #[serde(default)]
    pub promotions: Vec<Promotion>,
    /// Tags that must point where stated.
    #[serde(default)]
    pub retags: Vec<Retag>,
    /// Delete what no keep condition protects.
    #[serde(default)]
    pub retention: Vec<Retention>,
    /// Docker/Podman hosts by name.
    #[serde(default)]
    #[schemars(extend("propertyNames" = {"pattern": "^[A-Za-z0-9_.-]{1,64}$"}))]
    pub hosts: BTreeMap<String, Host>,
    /// Rules every image obeys.
    #[serde(default)]
    pub policies: Option<Policies>,
    /// The policy directory (where `oci:` paths are resolved).
    #[schemars(skip)]
    pub root: PathBuf,
}

/// Where a registry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `http://host[:port]` — plain HTTP.
    Http(String),
    /// `https://host[:port]` or bare `host[:port]`.
    Https(String),
    /// `oci:PATH` — OCI image layouts, one per repo, under PATH.
    OciLayout(PathBuf),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Http(h) => write!(f, "http://{h}"),
            Endpoint::Https(h) => write!(f, "https://{h}"),
            Endpoint::OciLayout(p) => write!(f, "oci:{}", p.display()),
        }
    }
}

/// What the loader takes as a duration (`Duration`'s parser), for the schema.
pub const DURATION_PATTERN: &str = r"^\s*[0-9]+[smhdw]\s*$";
/// Registry addresses the loader takes: `oci:PATH`, or host[:port] with an
/// optional http:// or https://.
pub const URL_PATTERN: &str =
    r"^\s*(oci:.*\S|(https?://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:[0-9]+)?/?)\s*$";
/// Docker endpoints the loader takes; `tcp://` needs its port.
pub const ENDPOINT_PATTERN: &str = r"^(unix://[^?#]+|tcp://[^/?#@]+:[0-9]+/?|https?://[^/?#@]+/?)$";

#[derive(Clone, Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// `http://host:port` (plain), `https://host` or bare `host[:port]` (https), or `oci:PATH`.
    #[schemars(with = "String", extend("pattern" = URL_PATTERN))]
    pub url: Endpoint,
    /// Credentials; default: docker config.json (`$DOCKER_CONFIG`, credHelpers), else anonymous.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// Requests in flight to this registry (default 8).
    #[serde(default = "defaults::concurrency")]
    #[schemars(range(min = 1, max = 256))]
    pub concurrency: Option<u32>,
    /// Optional ceiling, requests per second.
    #[serde(default)]
    #[schemars(range(min = 0.001))]
    pub rate: Option<f64>,
    #[schemars(skip)]
    pub loc: Option<Loc>,
}

impl Registry {
    pub const DEFAULT_CONCURRENCY: u32 = 8;
}

/// The `default` values the JSON schema shows. The loader applies the
/// defaults (in `decode.rs`, from the same constants); the `#[serde(default =
/// ...)]` attributes here only feed `schemars` (these types are never
/// deserialized by serde). A test checks the two agree.
mod defaults {
    use super::*;

    pub fn concurrency() -> u32 {
        Registry::DEFAULT_CONCURRENCY
    }
    pub fn referrers() -> bool {
        Mirror::DEFAULT_REFERRERS
    }
    pub fn platforms() -> &'static str {
        "all"
    }
    pub fn min_keep() -> u32 {
        Retention::DEFAULT_MIN_KEEP
    }
    pub fn scanners() -> u32 {
        VulnGate::DEFAULT_SCANNERS
    }
    pub fn artifact_types() -> &'static [&'static str] {
        crate::scan::DEFAULT_ARTIFACT_TYPES
    }
    pub fn owner_label() -> &'static str {
        crate::inventory::AUTHORS
    }
    pub fn no() -> bool {
        false
    }
}

/// Registry credentials. Passwords come from the environment or a file, never a literal.
#[derive(Clone, Debug, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// Environment variable holding the user name.
    #[serde(default)]
    pub username_env: Option<String>,
    /// The user name itself.
    #[serde(default)]
    pub username: Option<String>,
    /// Environment variable holding the password or token.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password or token (relative to the policy directory).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// The JSON-schema shape of a `tags:` selector.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum TagSelectorDoc {
    /// Exactly these tags (a plain whole number such as `7` is the tag `7`).
    List(Vec<TagDoc>),
    Map(TagSelectorMap),
}

/// One tag as written.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum TagDoc {
    Text(String),
    Number(u64),
}

/// `exclude:` as written: a list of regexes, or one.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum ExcludeDoc {
    List(Vec<String>),
    One(String),
}

/// All given keys must hold.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct TagSelectorMap {
    /// A semver range (`>=1.0.0`, `~1.4`); tags that are not versions are ignored; a leading `v` is allowed.
    semver: Option<String>,
    /// Include tags matching this regex (anchor it yourself: `^pr-`).
    regex: Option<String>,
    /// Include tags matching this glob (`release-*`).
    glob: Option<String>,
    /// Drop tags matching any of these regexes (one regex may be given alone).
    exclude: Option<ExcludeDoc>,
    /// Only the N highest (by semver; tags that are not versions by creation time).
    #[schemars(range(min = 1))]
    latest: Option<u32>,
}

/// `platforms:` of a mirror.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Platforms {
    #[default]
    All,
    /// `os/arch[/variant]` entries.
    Only(Vec<String>),
}

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum PlatformsDoc {
    /// `all` (default).
    All(AllKeyword),
    /// Only these platforms (`linux/amd64`, `linux/arm64/v8`): copies a filtered index with a new digest.
    Only(#[schemars(length(min = 1))] Vec<String>),
}

#[derive(JsonSchema)]
#[allow(dead_code)]
enum AllKeyword {
    #[serde(rename = "all")]
    All,
}

#[derive(Clone, Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// Rule name shown in plans (default `mirror:FROM->TO`).
    pub name: Option<String>,
    /// `REGISTRY/REPO` to copy from.
    #[schemars(with = "String")]
    pub from: RepoAddr,
    /// `REGISTRY/REPO` to keep the copy in.
    #[schemars(with = "String")]
    pub to: RepoAddr,
    /// Which tags (default: all).
    #[serde(default)]
    #[schemars(with = "Option<TagSelectorDoc>")]
    pub tags: TagSelector,
    /// `all` (default) or a list of `os/arch[/variant]`.
    #[serde(default = "defaults::platforms")]
    #[schemars(with = "Option<PlatformsDoc>")]
    pub platforms: Platforms,
    /// Signatures, SBOMs and attestations follow the image (default true).
    #[serde(default = "defaults::referrers")]
    #[schemars(with = "Option<bool>")]
    pub referrers: bool,
    /// Delete TO tags whose FROM tag no longer exists (only tags this rule selects; default false).
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub prune: bool,
    #[schemars(skip)]
    pub loc: Loc,
}

impl Mirror {
    pub const DEFAULT_REFERRERS: bool = true;

    pub fn rule_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("mirror:{}->{}", self.from, self.to))
    }
}

#[derive(Clone, Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Promotion {
    /// Unique rule name.
    pub name: String,
    #[schemars(with = "String")]
    pub from: RepoAddr,
    #[schemars(with = "String")]
    pub to: RepoAddr,
    /// Which tags are candidates (default: all).
    #[serde(default)]
    #[schemars(with = "Option<TagSelectorDoc>")]
    pub tags: TagSelector,
    /// What must hold before a tag is promoted.
    #[serde(default)]
    pub require: Require,
    /// Move a TO tag that points at another digest (default false: shown as blocked).
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub overwrite: bool,
    #[schemars(skip)]
    pub loc: Loc,
}

#[derive(Clone, Debug, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Require {
    /// The image was created at least this long ago (`24h`).
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("pattern" = DURATION_PATTERN))]
    pub min_age: Option<Duration>,
    /// Artifact types that must be attached as referrers (`application/vnd.cyclonedx+json`).
    #[serde(default)]
    pub referrers: Vec<String>,
    /// Gates on attached scan reports.
    #[serde(default)]
    pub vulnerabilities: Option<VulnGate>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Negligible,
    Low,
    Medium,
    High,
    Critical,
}

#[derive(Clone, Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VulnGate {
    /// Highest severity allowed.
    pub max_severity: Severity,
    /// Reports from this many distinct scanners are required (default 1).
    #[serde(default = "defaults::scanners")]
    #[schemars(range(min = 1))]
    pub scanners: Option<u32>,
    /// Ignore findings that have no fixed version (default false).
    #[serde(default = "defaults::no")]
    pub ignore_unfixed: Option<bool>,
    /// Reports older than this do not count.
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("pattern" = DURATION_PATTERN))]
    pub max_report_age: Option<Duration>,
    /// Referrer artifact types read as scan reports (default: `application/sarif+json`,
    /// `application/vnd.aquasec.trivy.report+json`, `application/vnd.aquasec.trivy.report.v1+json`,
    /// `application/vnd.anchore.grype+json`, `application/vnd.anchore.grype.report+json`).
    #[serde(default = "defaults::artifact_types")]
    #[schemars(length(min = 1))]
    pub artifact_types: Option<Vec<String>>,
}

impl VulnGate {
    pub const DEFAULT_SCANNERS: u32 = 1;

    /// The referrer artifact types this gate reads as scan reports.
    pub fn report_types(&self) -> Vec<&str> {
        match &self.artifact_types {
            Some(t) => t.iter().map(String::as_str).collect(),
            None => crate::scan::DEFAULT_ARTIFACT_TYPES.to_vec(),
        }
    }
}

#[derive(Clone, Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retag {
    /// Rule name shown in plans (default `retag:TAG`).
    pub name: Option<String>,
    /// `REGISTRY/REPO:TAG` that must point where stated.
    #[schemars(with = "String")]
    pub tag: ImageRef,
    #[serde(flatten)]
    #[schemars(with = "RetagSourceDoc")]
    pub source: RetagSource,
    #[schemars(skip)]
    pub loc: Loc,
}

impl Retag {
    pub fn rule_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("retag:{}", self.tag))
    }
}

#[derive(Clone, Debug)]
pub enum RetagSource {
    /// `REG/REPO:TAG` or `REG/REPO@sha256:…`, possibly another repo (copied first).
    From(ImageRef),
    /// The newest matching tag of a repo.
    Newest { repo: RepoAddr, tags: TagSelector },
}

#[derive(JsonSchema)]
#[allow(dead_code)]
enum RetagSourceDoc {
    /// `REG/REPO:TAG` or `REG/REPO@sha256:…`.
    #[serde(rename = "from")]
    From(String),
    /// Follow the newest matching tag.
    #[serde(rename = "newest")]
    Newest(NewestDoc),
}

#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct NewestDoc {
    /// `REGISTRY/REPO`.
    repo: String,
    tags: Option<TagSelectorDoc>,
}

#[derive(Clone, Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Unique rule name.
    pub name: String,
    /// Globs over `REGISTRY/REPO` (`dev/team/*`); the registry part is a name, wildcards use the catalog.
    #[schemars(with = "Vec<String>", length(min = 1))]
    pub repos: Vec<RepoGlob>,
    /// All given conditions must hold for a tag to be deleted (required: without one, the rule would delete everything not kept).
    pub delete: DeleteWhen,
    /// Any one protects a tag.
    #[serde(default)]
    pub keep: Keep,
    /// Never leave a repo with fewer tags than this (default 1).
    #[serde(default = "defaults::min_keep")]
    #[schemars(with = "Option<u32>")]
    pub min_keep: u32,
    /// Over this many deletions, the rule's deletions are blocked, not applied.
    #[serde(default)]
    pub max_deletes: Option<u32>,
    #[schemars(skip)]
    pub loc: Loc,
}

impl Retention {
    pub const DEFAULT_MIN_KEEP: u32 = 1;
}

/// A `REGISTRY/REPO-GLOB` pattern.
#[derive(Clone, Debug)]
pub struct RepoGlob {
    pub registry: RegistryName,
    pub pattern: String,
    pub matcher: globset::GlobMatcher,
}

impl RepoGlob {
    pub fn is_literal(&self) -> bool {
        !self.pattern.contains(['*', '?', '[', '{'])
    }
}

#[derive(Clone, Debug, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteWhen {
    /// Created longer ago than this.
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("pattern" = DURATION_PATTERN))]
    pub older_than: Option<Duration>,
    /// Only tags matching this selector.
    #[serde(default)]
    #[schemars(with = "Option<TagSelectorDoc>")]
    pub tags: Option<TagSelector>,
    /// Also delete referrers whose subject is gone (default false).
    #[serde(default = "defaults::no")]
    pub untagged_referrers: Option<bool>,
}

#[derive(Clone, Debug, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Keep {
    /// Tag globs that are always kept.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub tags: Vec<globset::GlobMatcher>,
    /// Keep the N newest tags (by created).
    #[serde(default)]
    pub newest: Option<u32>,
    /// Keep anything created more recently than this.
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("pattern" = DURATION_PATTERN))]
    pub younger_than: Option<Duration>,
}

#[derive(Clone, Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// Docker Engine API: `unix:///var/run/docker.sock` or `tcp://host:port`.
    #[schemars(extend("pattern" = ENDPOINT_PATTERN))]
    pub endpoint: String,
    /// TLS files for `tcp://` endpoints.
    #[serde(default)]
    pub tls: Option<HostTls>,
    #[serde(default)]
    pub images: HostImages,
    #[serde(default)]
    pub containers: HostContainers,
    #[schemars(skip)]
    pub loc: Loc,
}

#[derive(Clone, Debug, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Debug, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostImages {
    /// Images pulled when missing or when the tag moved.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub present: Vec<ImageRef>,
    /// Remove images older than this, except kept ones and any a container uses.
    #[serde(default)]
    pub prune: Option<HostPrune>,
}

#[derive(Clone, Debug, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostPrune {
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("pattern" = DURATION_PATTERN))]
    pub older_than: Option<Duration>,
    /// Address globs (`prod/base/*`) never pruned.
    #[serde(default)]
    pub keep: Vec<String>,
}

#[derive(Clone, Debug, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostContainers {
    /// Running containers started longer ago are stopped.
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("pattern" = DURATION_PATTERN))]
    pub max_age: Option<Duration>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnViolation {
    #[default]
    Warn,
    Fail,
    Enforce,
}

#[derive(Clone, Debug, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    /// Hosts may run images from these registries only.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub registries: Option<Vec<RegistryName>>,
    /// `org.opencontainers.image.base.name` must match one of these address globs.
    #[serde(default)]
    pub base_images: Option<Vec<String>>,
    /// Images older than this (config `created`) violate.
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("pattern" = DURATION_PATTERN))]
    pub max_age: Option<Duration>,
    /// `warn` (default), `fail` (exit 1) or `enforce`.
    #[serde(default)]
    pub on_violation: OnViolation,
    /// The label or annotation naming an image's owner in `inventory`
    /// (default `org.opencontainers.image.authors`).
    #[serde(default = "defaults::owner_label")]
    pub owner_label: Option<String>,
    #[schemars(skip)]
    pub loc: Option<Loc>,
}
