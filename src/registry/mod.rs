//! The registry trait: the protocol verbs every backend offers, nothing more.
//! Planning never sees a registry; observe and apply talk to it through this trait.

pub mod auth;
pub mod distribution;
pub mod manifest;
pub mod oci_layout;

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use serde::{Deserialize, Serialize};

use crate::model::{Digest, RegistryName, Repo, Tag};

pub use manifest::{Manifest, MediaType};

/// A blob's bytes as they arrive; never a whole layer in memory.
pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// An OCI content descriptor (the JSON shape used in manifests and indexes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Where a foreign (non-distributable) layer is fetched from instead of
    /// the registry (Windows base layers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The repo, manifest or blob does not exist (a fact, not a failure).
    NotFound,
    /// The backend does not offer this verb (e.g. tag DELETE on Distribution).
    Unsupported,
    /// Credentials missing or refused.
    Denied,
    /// Content did not hash to the digest it was written or served under.
    DigestMismatch,
    /// The target changed under a compare-and-swap.
    Conflict,
    /// The registry asked to be left alone for longer than regimen waits
    /// (`Retry-After`): trying again in this run would ignore that.
    Throttled,
    /// Anything else: I/O, protocol, server errors after retries.
    Other,
}

/// A registry error that names what was being done, where.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RegistryError {
    pub kind: ErrorKind,
    pub message: String,
}

impl RegistryError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        RegistryError {
            kind,
            message: message.into(),
        }
    }
    pub fn not_found(what: impl fmt::Display) -> Self {
        Self::new(ErrorKind::NotFound, format!("{what} not found"))
    }
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Other, message)
    }
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// An upload session opened by [`Registry::start_blob`], to be used by one
/// [`Registry::put_blob_in`] of the same blob (or given back with
/// [`Registry::cancel_upload`]). Opaque outside the backend.
#[derive(Debug)]
pub struct UploadSession(pub(crate) String);

/// What [`Registry::start_blob`] found.
#[derive(Debug)]
pub enum BlobStart {
    /// The blob is in the repo now (it was, or it was just mounted).
    Present,
    /// The bytes must be sent; with a session where the backend opened one.
    Upload(Option<UploadSession>),
}

/// What a manifest HEAD tells: enough to compare without downloading.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestHead {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// The protocol verbs. Every method names one HTTP-level operation of the
/// distribution spec (or its OCI-layout equivalent); composition lives in
/// `observe` and `apply`.
#[async_trait]
pub trait Registry: Send + Sync {
    /// The policy name of this registry (used in messages).
    fn name(&self) -> &RegistryName;

    /// Requests this client sends at once (the registry's `concurrency`).
    fn concurrency(&self) -> usize {
        1
    }

    /// Repositories in the registry (catalog). `Unsupported` where there is none.
    async fn list_repos(&self) -> Result<Vec<Repo>>;

    /// Tags of a repository; a missing repository has no tags (`Ok(vec![])`).
    async fn list_tags(&self, repo: &Repo) -> Result<Vec<Tag>> {
        Ok(self.list_tags_if_exists(repo).await?.unwrap_or_default())
    }

    /// Tags of a repository, or `None` when the registry says the repository
    /// does not exist (a mirror must not read a mistyped source as "every tag
    /// gone upstream").
    async fn list_tags_if_exists(&self, repo: &Repo) -> Result<Option<Vec<Tag>>>;

    /// Names the repository gives manifests that are not tags, by digest: an
    /// OCI layout's `org.opencontainers.image.ref.name` may be a full
    /// reference such as `docker.io/team/app:1.0` (skopeo writes those).
    /// They cannot be planned like tags, but they hold their image in place
    /// just the same. Empty where every name is a tag (the distribution API).
    async fn other_names(&self, _repo: &Repo) -> Result<BTreeMap<Digest, Vec<String>>> {
        Ok(BTreeMap::new())
    }

    /// Digest and media type of a manifest by tag or digest; `None` if absent.
    async fn head_manifest(&self, repo: &Repo, reference: &str) -> Result<Option<ManifestHead>>;

    /// [`Registry::head_manifest`] of a tag last seen holding `known`. A
    /// registry that answers conditional requests confirms it without reading
    /// the manifest (`If-None-Match` → 304), which costs it less than a plain
    /// HEAD; the answer is always the registry's, never the belief.
    async fn head_manifest_known(
        &self,
        repo: &Repo,
        reference: &str,
        _known: Option<&ManifestHead>,
    ) -> Result<Option<ManifestHead>> {
        self.head_manifest(repo, reference).await
    }

    /// The manifest's raw bytes and media type; `None` if absent.
    async fn get_manifest(&self, repo: &Repo, reference: &str) -> Result<Option<Manifest>>;

    /// Stores manifest bytes exactly as given, under its digest and, when `tag`
    /// is set, points the tag at it. Returns the digest of the bytes. Every blob
    /// and child the manifest refers to must already be present.
    async fn put_manifest(
        &self,
        repo: &Repo,
        tag: Option<&Tag>,
        manifest: &Manifest,
    ) -> Result<Digest>;

    /// Size of a blob if present.
    async fn head_blob(&self, repo: &Repo, digest: &Digest) -> Result<Option<u64>>;

    /// A stream of the blob's bytes.
    async fn get_blob(&self, repo: &Repo, digest: &Digest) -> Result<BlobStream>;

    /// Writes a blob from a stream; the backend verifies the digest and size
    /// before the blob becomes visible.
    async fn put_blob(
        &self,
        repo: &Repo,
        digest: &Digest,
        size: u64,
        data: BlobStream,
    ) -> Result<()>;

    /// Makes a blob of `from` (same registry) available in `repo` without
    /// transferring it. `Ok(false)` when the registry declined; the caller copies.
    async fn mount_blob(&self, repo: &Repo, from: &Repo, digest: &Digest) -> Result<bool>;

    /// Makes a blob present in `repo` without moving its bytes where it can:
    /// it is there already, or it is mounted from `from` (same registry;
    /// `from == repo` only checks). Otherwise the bytes must be uploaded,
    /// and the backend may hand over an upload session it opened on the way
    /// (the distribution API answers a mount POST that cannot mount with a
    /// fresh session, so checking and starting cost one request).
    async fn start_blob(&self, blob: &Descriptor, repo: &Repo, from: &Repo) -> Result<BlobStart> {
        start_blob_by_head(self, blob, repo, from).await
    }

    /// [`Registry::put_blob`] into a session from [`Registry::start_blob`]
    /// (used for the first attempt; restarts open fresh ones).
    async fn put_blob_in(
        &self,
        repo: &Repo,
        digest: &Digest,
        size: u64,
        data: BlobStream,
        session: Option<UploadSession>,
    ) -> Result<()> {
        if let Some(s) = session {
            self.cancel_upload(repo, s).await;
        }
        self.put_blob(repo, digest, size, data).await
    }

    /// Whether this process found `repo` missing moments ago (its tag list
    /// answered 404), so looking up a manifest there is pointless. Only
    /// ever a hint to save a request: `false` is always a safe answer, and
    /// callers must stay correct when the repo has appeared since (manifest
    /// and blob writes are idempotent).
    fn known_absent(&self, _repo: &Repo) -> bool {
        false
    }

    /// Gives back an unused upload session (best effort).
    async fn cancel_upload(&self, _repo: &Repo, _session: UploadSession) {}

    /// Deletes a manifest by digest (and so every tag on it).
    async fn delete_manifest(&self, repo: &Repo, digest: &Digest) -> Result<()>;

    /// [`Registry::delete_manifest`] when every tag on `digest` is one of
    /// `planned`, else `Conflict` naming the others. Backends that can check
    /// and delete at once (a locked OCI layout) do; others only delete, and
    /// callers look at the tags right before.
    async fn delete_manifest_tagged(
        &self,
        repo: &Repo,
        digest: &Digest,
        planned: &[Tag],
    ) -> Result<()> {
        let _ = planned;
        self.delete_manifest(repo, digest).await
    }

    /// Removes only a tag. `Unsupported` where the registry cannot; callers
    /// fall back to placeholder-then-delete-by-digest.
    async fn delete_tag(&self, repo: &Repo, tag: &Tag) -> Result<()>;

    /// Manifests whose `subject` is `digest` (OCI 1.1 referrers, or the
    /// `sha256-<hex>` tag schema where the registry has no referrers API).
    async fn referrers(&self, repo: &Repo, digest: &Digest) -> Result<Vec<Descriptor>>;

    /// The subject's referrers as the registry itself indexes them (the OCI
    /// 1.1 referrers API, or a layout's `subject` manifests); `None` where
    /// it keeps no such index (then only the `sha256-<hex>` tag schema
    /// lists them, which the tag list shows). The plan asks this of images
    /// already copied, so that a referrer attached later follows them.
    async fn referrers_api(&self, repo: &Repo, digest: &Digest) -> Result<Option<Vec<Descriptor>>> {
        let _ = (repo, digest);
        Ok(None)
    }

    /// [`Registry::referrers`], plus where the list came from: the
    /// `sha256-<hex>` fallback index it was read from (its exact bytes, so a
    /// copier can store the same index at the target without reading it
    /// again), or the referrers API (`fallback` unknown).
    async fn referrers_listed(&self, repo: &Repo, digest: &Digest) -> Result<ReferrerList> {
        Ok(ReferrerList {
            descriptors: self.referrers(repo, digest).await?,
            fallback: FallbackIndex::NotRead,
        })
    }

    /// Whether this backend is the same registry as `other` (blobs may be mounted across repos).
    fn same_registry(&self, other: &dyn Registry) -> bool {
        self.name() == other.name()
    }
}

/// Referrers of one subject, as [`Registry::referrers_listed`] found them.
#[derive(Debug, Clone)]
pub struct ReferrerList {
    pub descriptors: Vec<Descriptor>,
    pub fallback: FallbackIndex,
}

/// The `sha256-<hex>` tag's index behind a [`ReferrerList`].
#[derive(Debug, Clone)]
pub enum FallbackIndex {
    /// The list came from elsewhere (the referrers API, a layout's index).
    NotRead,
    /// The tag was read: absent (or not an index), or these bytes.
    Read(Option<Manifest>),
}

/// Opens the backend for a policy registry. `root` is the policy directory
/// (relative `password_file` paths are resolved against it).
pub fn open(
    name: &RegistryName,
    cfg: &crate::config::Registry,
    root: &std::path::Path,
) -> std::result::Result<std::sync::Arc<dyn Registry>, String> {
    use crate::config::Endpoint;
    match &cfg.url {
        Endpoint::OciLayout(path) => Ok(std::sync::Arc::new(oci_layout::OciLayout::new(
            name.clone(),
            path.clone(),
        ))),
        Endpoint::Http(_) | Endpoint::Https(_) => Ok(std::sync::Arc::new(
            distribution::Distribution::new(name.clone(), cfg, root)?,
        )),
    }
}

/// Opens every registry of the policy.
/// Told about every HTTP attempt a Distribution registry makes: registry
/// name, status code (or `error`), and whether it will be retried. The
/// daemon counts these for `/metrics`; nothing else needs to know.
pub type RequestObserver = fn(&str, &str, bool);

static REQUEST_OBSERVER: std::sync::OnceLock<RequestObserver> = std::sync::OnceLock::new();

pub fn set_request_observer(f: RequestObserver) {
    let _ = REQUEST_OBSERVER.set(f);
}

/// Lets one change stop on a stop request until its first write, and never
/// after it: a change that has begun writing finishes, so no tag is left
/// half-done (blobs that land without a tag are harmless). The executor
/// sets one per change ([`WRITE_GATE`]); backends ask it right before a
/// write is sent, after the write's turn under the registry's `concurrency`
/// and `rate`, where a change can wait long after a stop came.
pub struct WriteGate {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// (begun writing, refused a write): one lock, so that two parallel
    /// blobs of a change cannot see a stop differently.
    state: std::sync::Mutex<(bool, bool)>,
}

tokio::task_local! {
    /// The gate of the change this task is applying, if any.
    pub static WRITE_GATE: std::sync::Arc<WriteGate>;
}

impl WriteGate {
    pub fn new(stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> WriteGate {
        WriteGate {
            stop,
            state: std::sync::Mutex::new((false, false)),
        }
    }

    /// Before a write: an error when nothing was written yet and a stop is
    /// requested (the change then stops, as not started).
    pub fn write(&self) -> Result<(), RegistryError> {
        self.check(true)
    }

    /// Before work that leads to a write (reads for it, a turn in a
    /// registry's queue): as [`WriteGate::write`], without counting as a
    /// write (the backend's check right before the write does; a check here
    /// would let a write that then waits long for its turn count as begun).
    pub fn peek(&self) -> Result<(), RegistryError> {
        self.check(false)
    }

    fn check(&self, writing: bool) -> Result<(), RegistryError> {
        let Ok(mut st) = self.state.lock() else {
            return Ok(());
        };
        if !st.0 && (st.1 || self.stop.load(std::sync::atomic::Ordering::SeqCst)) {
            st.1 = true;
            return Err(RegistryError::other(
                "a stop was requested before the change wrote anything",
            ));
        }
        st.0 |= writing;
        Ok(())
    }

    /// Whether a write was refused (the change wrote nothing).
    pub fn refused(&self) -> bool {
        self.state.lock().map(|st| st.1).unwrap_or(false)
    }
}

/// [`WriteGate::write`] of this task's change; no change, no gate.
pub fn check_write() -> Result<(), RegistryError> {
    WRITE_GATE.try_with(|g| g.write()).unwrap_or(Ok(()))
}

pub(crate) fn observed_request(registry: &str, status: &str, retried: bool) {
    if let Some(f) = REQUEST_OBSERVER.get() {
        f(registry, status, retried);
    }
}

pub fn open_all(policy: &crate::config::Policy) -> crate::observe::Registries {
    policy
        .registries
        .iter()
        .map(|(n, c)| (n.clone(), open(n, c, &policy.root)))
        .collect()
}

/// Removes `tag` from `repo` without touching the image it points at (which
/// other tags may share): DELETE by tag where the registry allows it, else
/// point the tag at a tiny unique placeholder manifest and delete that by
/// digest (the distribution registry refuses DELETE by tag). With `expect`,
/// on the placeholder path, a tag found on another digest by the last look
/// before the placeholder goes on (a new push meanwhile) is left alone: a
/// `Conflict`. (A tag DELETE removes whatever the tag names when it lands.)
pub async fn remove_tag(
    reg: &dyn Registry,
    repo: &Repo,
    tag: &Tag,
    expect: Option<&Digest>,
) -> Result<()> {
    match reg.delete_tag(repo, tag).await {
        Err(e) if e.kind == ErrorKind::Unsupported => {}
        other => return other,
    }
    // Deleting by digest must work, or the tag would be left on the
    // placeholder: probe with a digest that cannot exist.
    let probe = Digest::sha256_of(format!("regimen delete probe {repo} {tag}").as_bytes());
    match reg.delete_manifest(repo, &probe).await {
        Ok(()) => {}
        Err(e) if e.kind == ErrorKind::NotFound => {}
        Err(e) if e.kind == ErrorKind::Unsupported => {
            return Err(RegistryError::new(
                ErrorKind::Unsupported,
                format!(
                    "{}/{repo}:{tag}: the registry allows neither tag nor manifest deletion ({})",
                    reg.name(),
                    e.message
                ),
            ))
        }
        Err(e) => return Err(e),
    }
    // The last look before the placeholder (its blobs first, then the
    // manifest) overwrites the tag.
    match reg.head_manifest(repo, tag.as_str()).await? {
        None => {
            return Err(RegistryError::not_found(format!(
                "{}/{repo}:{tag}",
                reg.name()
            )))
        }
        Some(h) if expect.is_some_and(|d| *d != h.digest) => {
            return Err(RegistryError::new(
                ErrorKind::Conflict,
                format!(
                    "{}/{repo}:{tag} now points at {}: left in place",
                    reg.name(),
                    h.digest
                ),
            ))
        }
        Some(_) => {}
    }
    let m = push_placeholder(reg, repo, tag).await?;
    // A retried DELETE that already took effect answers 404: that is success.
    // Distribution answers 500 when a tag link it walks is being written
    // (by another client: regimen's own writes wait, see the distribution
    // backend's `repo_writes`), after removing the manifest but maybe not
    // yet the tag: deleting again would answer 404 and leave the tag on a
    // manifest that is gone. So the tag is put on the placeholder again
    // (it is ours alone) and the delete made again, unless someone else
    // has put the tag elsewhere meanwhile.
    let mut result = reg.delete_manifest(repo, &m.digest).await;
    for attempt in 1..=3u32 {
        match &result {
            Err(e) if e.kind == ErrorKind::Other => {
                tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt)))
                    .await;
                match reg.head_manifest(repo, tag.as_str()).await? {
                    Some(h) if h.digest != m.digest => {
                        return Err(RegistryError::new(
                            ErrorKind::Other,
                            format!(
                            "{}/{repo}:{tag} was put on {} while regimen removed it: left as is",
                            reg.name(),
                            h.digest
                        ),
                        ))
                    }
                    _ => {
                        reg.put_manifest(repo, Some(tag), &m).await?;
                    }
                }
                result = reg.delete_manifest(repo, &m.digest).await;
            }
            _ => break,
        }
    }
    match result {
        Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RegistryError::new(
            e.kind,
            format!(
                "{}/{repo}:{tag} is left on a regimen placeholder ({}, artifact type {}) \
                 because deleting the placeholder failed: {}. The next apply removes it",
                reg.name(),
                m.digest,
                PLACEHOLDER_ARTIFACT_TYPE,
                e.message
            ),
        )),
        Ok(()) => Ok(()),
    }
}

/// The `artifactType` of the placeholder manifests [`remove_tag`] pushes. A
/// tag found on one is what an untag left when its last step (deleting the
/// placeholder) failed: retention removes it whatever its age.
pub const PLACEHOLDER_ARTIFACT_TYPE: &str = "application/vnd.regimen.placeholder.v1";

/// Points `tag` at a new, unique placeholder manifest (an empty artifact of
/// type [`PLACEHOLDER_ARTIFACT_TYPE`], never shared with another tag or
/// run), pushing the empty blob it needs first. Returns the placeholder.
pub async fn push_placeholder(reg: &dyn Registry, repo: &Repo, tag: &Tag) -> Result<Manifest> {
    const EMPTY: &[u8] = b"{}";
    let empty = Digest::sha256_of(EMPTY);
    if reg.head_blob(repo, &empty).await?.is_none() {
        let s: BlobStream = Box::pin(futures_util::stream::iter([Ok(Bytes::from_static(EMPTY))]));
        reg.put_blob(repo, &empty, EMPTY.len() as u64, s).await?;
    }
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let empty_desc = serde_json::json!({"mediaType": MediaType::OCI_EMPTY, "digest": empty, "size": EMPTY.len()});
    let placeholder = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MediaType::OCI_MANIFEST,
        "artifactType": PLACEHOLDER_ARTIFACT_TYPE,
        "config": empty_desc,
        "layers": [empty_desc],
        "annotations": {
            "dev.regimen.placeholder.tag": tag.as_str(),
            "dev.regimen.placeholder.nonce": format!("{nonce}-{}", std::process::id()),
        },
    });
    let bytes = serde_json::to_vec(&placeholder)
        .map_err(|e| RegistryError::other(format!("placeholder manifest: {e}")))?;
    let m = Manifest::from_bytes(bytes, Some(MediaType::OCI_MANIFEST))?;
    reg.put_manifest(repo, Some(tag), &m).await?;
    Ok(m)
}

/// [`Registry::start_blob`] the plain way: HEAD, then a cross-repo mount
/// when `from` is another repo, else an upload without a session.
pub async fn start_blob_by_head<R: Registry + ?Sized>(
    reg: &R,
    blob: &Descriptor,
    repo: &Repo,
    from: &Repo,
) -> Result<BlobStart> {
    if reg.head_blob(repo, &blob.digest).await?.is_some() {
        return Ok(BlobStart::Present);
    }
    if from != repo && reg.mount_blob(repo, from, &blob.digest).await? {
        return Ok(BlobStart::Present);
    }
    Ok(BlobStart::Upload(None))
}

static TMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Unique among processes sharing a folder (an OCI layout, the tag cache), even two containers that are
/// both PID 1: the PID, a random number drawn once per process, a counter.
pub(crate) fn tmp_suffix() -> String {
    static RUN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        // std's per-process random hash keys, with the time mixed in.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.finish()
    });
    format!(
        "{}-{run:016x}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}
