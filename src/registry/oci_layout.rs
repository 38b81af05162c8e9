//! A registry backed by a tree of OCI image layouts: one layout per repository
//! at `ROOT/<repo path>` (repo `mirror/alpine` lives in
//! `ROOT/mirror/alpine/{oci-layout,index.json,blobs/sha256/...}`), so every
//! repository can be read by other tools as `oci:ROOT/mirror/alpine:TAG`.
//!
//! How the protocol verbs map onto a layout:
//!
//! - A tag is an `index.json` entry whose `org.opencontainers.image.ref.name`
//!   annotation is the tag (the tag alone, not a full reference). Putting a tag
//!   replaces any entry with the same ref.name.
//! - Manifests put without a tag that have a `subject` (referrers: signatures,
//!   SBOMs, attestations) get an untagged `index.json` entry so they stay
//!   reachable. Other untagged manifests (the children of an index) are only
//!   written as blobs.
//! - Blobs and manifests are written to a temporary file in the same
//!   directory, verified (size and digest), then renamed into place: a reader
//!   never sees a partial or wrong blob. `index.json` is replaced the same way
//!   (`.index.json.tmp-<pid>-<random>-<n>` then rename), and updates to one repository are
//!   serialised by a per-repository async mutex plus an advisory file lock
//!   (`.regimen.lock` in the layout), so two regimen processes writing one
//!   layout at once never lose an `index.json` update.
//! - Unknown fields of `index.json` and of its entries are preserved.
//! - There is no blob garbage collection: deleting a manifest or tag removes
//!   `index.json` entries; a deleted manifest's own blob is removed when nothing
//!   left in `index.json` reaches it (directly or as a child of an index), but
//!   configs and layers are never removed.
//! - Symlinked directories are not followed when listing repositories, and a
//!   repository cannot be called `<other repo>/blobs` (that is the other
//!   layout's blob store).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256, Sha512};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex as AsyncMutex;

use super::manifest::Parsed;
use super::{
    BlobStream, Descriptor, ErrorKind, Manifest, ManifestHead, MediaType, Registry, RegistryError,
    Result,
};
use crate::model::{Digest, RegistryName, Repo, Tag};

/// The annotation that names a tag in `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
const LAYOUT_FILE: &str = "oci-layout";
/// Advisory lock file of a layout (hidden; other tools ignore it).
const LOCK_FILE: &str = ".regimen.lock";

/// Held while a repo's `index.json` is read, changed and replaced.
struct RepoGuard {
    _held: tokio::sync::OwnedMutexGuard<()>,
    /// The locked file; closing it releases the lock.
    _file: Option<std::fs::File>,
}
const INDEX_FILE: &str = "index.json";
const LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// Blobs larger than this are never sniffed as manifests (registries reject
/// manifests over 4 MiB too).
const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// Write buffer for blob uploads.
const WRITE_BUFFER: usize = 256 * 1024;
/// Read chunk for blob downloads.
const READ_CHUNK: usize = 64 * 1024;

use super::tmp_suffix;

/// A new temporary file, never one another writer has open.
async fn create_new(path: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .await
}

/// What a referrer manifest says about itself (cached: manifests are content
/// addressed, so what a digest's bytes say never changes).
#[derive(Clone, Debug)]
struct ReferrerInfo {
    subject: Digest,
    artifact_type: Option<String>,
    annotations: BTreeMap<String, String>,
}

/// An OCI image-layout tree seen as a registry.
pub struct OciLayout {
    name: RegistryName,
    root: PathBuf,
    locks: StdMutex<HashMap<Repo, Arc<AsyncMutex<()>>>>,
    /// digest → its subject information (`None`: the manifest has no subject).
    subjects: StdMutex<HashMap<Digest, Option<ReferrerInfo>>>,
}

impl fmt::Debug for OciLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OciLayout")
            .field("name", &self.name)
            .field("root", &self.root)
            .finish()
    }
}

/// `index.json`, kept as JSON so unknown fields survive a rewrite. The
/// `manifests` array is taken out for editing; its key keeps its place in `doc`.
struct IndexFile {
    doc: Map<String, Value>,
    manifests: Vec<Value>,
}

impl IndexFile {
    fn empty() -> IndexFile {
        let mut doc = Map::new();
        doc.insert("schemaVersion".into(), Value::from(2));
        doc.insert("mediaType".into(), Value::from(MediaType::OCI_INDEX));
        doc.insert("manifests".into(), Value::Null);
        IndexFile {
            doc,
            manifests: Vec::new(),
        }
    }

    /// An `index.json` without a `manifests` array is unreadable, not empty:
    /// read as "no tags", a mirror's prune would empty its target.
    fn from_doc(mut doc: Map<String, Value>) -> std::result::Result<IndexFile, String> {
        match doc.get_mut("manifests").map(Value::take) {
            Some(Value::Array(manifests)) => Ok(IndexFile { doc, manifests }),
            None => Err("it has no `manifests` list".to_string()),
            Some(Value::Null) => Err("its `manifests` is null, not a list".to_string()),
            Some(_) => Err("its `manifests` is not a list".to_string()),
        }
    }

    fn to_doc(&self) -> Map<String, Value> {
        let mut doc = self.doc.clone();
        doc.insert("manifests".into(), Value::Array(self.manifests.clone()));
        doc
    }

    fn entries(&self) -> &[Value] {
        &self.manifests
    }

    fn entries_mut(&mut self) -> &mut Vec<Value> {
        &mut self.manifests
    }

    fn find_tag(&self, tag: &str) -> Option<&Value> {
        self.entries()
            .iter()
            .find(|e| entry_ref_name(e) == Some(tag))
    }

    fn find_digest(&self, digest: &Digest) -> Option<&Value> {
        self.entries()
            .iter()
            .find(|e| entry_digest(e).as_ref() == Some(digest))
    }
}

fn entry_digest(e: &Value) -> Option<Digest> {
    e.get("digest")?.as_str()?.parse().ok()
}

fn entry_ref_name(e: &Value) -> Option<&str> {
    e.get("annotations")?.get(REF_NAME_ANNOTATION)?.as_str()
}

/// `ref.name`s that are not tags (a full reference such as
/// `docker.io/team/app:1.0`), by the digest they name.
fn foreign_names(entries: &[Value]) -> BTreeMap<Digest, Vec<String>> {
    let mut out: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
    for e in entries {
        let (Some(name), Some(digest)) = (entry_ref_name(e), entry_digest(e)) else {
            continue;
        };
        if name.parse::<Tag>().is_err() {
            let names = out.entry(digest).or_default();
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
    }
    out
}

fn entry_media_type(e: &Value) -> Option<String> {
    e.get("mediaType")?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn entry_size(e: &Value) -> Option<u64> {
    e.get("size")?.as_u64()
}

/// Just enough of a JSON document to tell a manifest from any other blob.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sniff {
    #[serde(default)]
    schema_version: Option<u64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Value>,
    #[serde(default)]
    manifests: Option<Value>,
}

/// The media type of `bytes` if they are a manifest or index; `None` for any
/// other blob (layers, configs).
fn sniff_manifest_media_type(bytes: &[u8]) -> Option<String> {
    let s: Sniff = serde_json::from_slice(bytes).ok()?;
    s.schema_version?;
    if let Some(mt) = s.media_type.filter(|m| !m.is_empty()) {
        return Some(mt);
    }
    if s.manifests.is_some() {
        Some(MediaType::OCI_INDEX.to_string())
    } else if s.config.is_some() {
        Some(MediaType::OCI_MANIFEST.to_string())
    } else {
        None
    }
}

enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    fn for_digest(d: &Digest) -> Option<Hasher> {
        match d.algorithm() {
            "sha256" => Some(Hasher::Sha256(Sha256::new())),
            "sha512" => Some(Hasher::Sha512(Sha512::new())),
            _ => None,
        }
    }
    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }
    fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// The digest of `bytes` in the algorithm of `like`.
fn digest_like(like: &Digest, bytes: &[u8]) -> Option<String> {
    let mut h = Hasher::for_digest(like)?;
    h.update(bytes);
    Some(h.finish())
}

/// Layers that registries never store (Windows foreign layers) are not
/// required to be present.
fn is_non_distributable(media_type: &str) -> bool {
    media_type.contains("nondistributable") || media_type.contains("foreign")
}

enum Ref {
    Tag(Tag),
    Digest(Digest),
}

impl OciLayout {
    /// `delete_manifest`, refusing (`Conflict`) under the repo lock when a
    /// tag not in `planned` is on `digest`: the check and the delete are one
    /// step, so no tag put there meanwhile goes with it.
    async fn delete_manifest_if(
        &self,
        repo: &Repo,
        digest: &Digest,
        planned: Option<&[Tag]>,
    ) -> Result<()> {
        let op = format!("deleting manifest {digest}");
        let _guard = self.lock_repo(repo, false).await?;
        let Some(mut index) = self.read_index(repo).await? else {
            return Err(self.fail(repo, ErrorKind::NotFound, &op, "manifest not found"));
        };
        if let Some(planned) = planned {
            let others: Vec<&str> = index
                .entries()
                .iter()
                .filter(|e| entry_digest(e).as_ref() == Some(digest))
                .filter_map(entry_ref_name)
                .filter(|n| n.parse::<Tag>().is_ok_and(|t| !planned.contains(&t)))
                .collect();
            if !others.is_empty() {
                return Err(self.fail(
                    repo,
                    ErrorKind::Conflict,
                    &op,
                    format!("refused: {digest} is now also tagged {}", others.join(", ")),
                ));
            }
        }
        let mut doomed: HashSet<Digest> = HashSet::from([digest.clone()]);
        // A referrer with a name of its own (an SBOM also tagged
        // `sbom-keep`, an image pushed with a `subject`) is not only
        // describing the image: it stays, and what refers to it too.
        let named: HashSet<Digest> = index
            .entries()
            .iter()
            .filter(|e| entry_ref_name(e).is_some())
            .filter_map(entry_digest)
            .collect();
        let candidates: Vec<(Digest, Option<String>)> = index
            .entries()
            .iter()
            .filter_map(|e| Some((entry_digest(e)?, entry_media_type(e))))
            .filter(|(d, _)| !named.contains(d))
            .collect();
        loop {
            let mut grew = false;
            for (d, mt) in &candidates {
                if doomed.contains(d) {
                    continue;
                }
                if let Some(info) = self.referrer_info(repo, d, mt.clone()).await? {
                    if doomed.contains(&info.subject) {
                        doomed.insert(d.clone());
                        grew = true;
                    }
                }
            }
            if !grew {
                break;
            }
        }

        // A name that is not a tag was never part of any plan: what it names
        // stays (remove that entry by hand, or with the tool that wrote it).
        let held: Vec<String> = foreign_names(index.entries())
            .into_iter()
            .filter(|(d, _)| doomed.contains(d))
            .flat_map(|(d, names)| names.into_iter().map(move |n| format!("`{n}` on {d}")))
            .collect();
        if !held.is_empty() {
            return Err(self.fail(
                repo,
                ErrorKind::Conflict,
                &op,
                format!(
                    "refused: index.json also has the name {}, which is not a tag and keeps the image",
                    held.join(", ")
                ),
            ));
        }
        let entries = index.entries_mut();
        let before = entries.len();
        entries.retain(|e| entry_digest(e).is_none_or(|d| !doomed.contains(&d)));
        let removed = before - entries.len();
        if removed == 0 && self.blob_size(repo, digest).await?.is_none() {
            return Err(self.fail(repo, ErrorKind::NotFound, &op, "manifest not found"));
        }
        // What stays reachable, worked out before anything changes: a
        // manifest that cannot be read fails the delete, not half of it.
        let still = self.reachable(repo, &index).await?;
        if removed > 0 {
            self.write_index(repo, &index).await?;
        }
        for d in doomed.iter().filter(|d| !still.contains(*d)) {
            let path = self.blob_path(repo, d);
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io_err(repo, &op, &path, e)),
            }
        }
        Ok(())
    }

    /// A registry over the layout tree at `root` (need not exist yet).
    pub fn new(name: RegistryName, root: PathBuf) -> OciLayout {
        OciLayout {
            name,
            root,
            locks: StdMutex::new(HashMap::new()),
            subjects: StdMutex::new(HashMap::new()),
        }
    }

    /// The root of the tree.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding the OCI image layout of `repo`.
    pub fn repo_dir(&self, repo: &Repo) -> PathBuf {
        let mut p = self.root.clone();
        // Repo components are validated (no `..`, no empty parts).
        for c in repo.as_str().split('/') {
            p.push(c);
        }
        p
    }

    fn blob_dir(&self, repo: &Repo, digest: &Digest) -> PathBuf {
        self.repo_dir(repo).join("blobs").join(digest.algorithm())
    }

    fn blob_path(&self, repo: &Repo, digest: &Digest) -> PathBuf {
        self.blob_dir(repo, digest).join(digest.hex())
    }

    // ---- errors ---------------------------------------------------------

    fn where_(&self, repo: &Repo) -> String {
        format!("{}/{}", self.name, repo)
    }

    fn io_err(
        &self,
        repo: &Repo,
        op: impl fmt::Display,
        path: &Path,
        e: io::Error,
    ) -> RegistryError {
        let kind = match e.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            io::ErrorKind::PermissionDenied => ErrorKind::Denied,
            _ => ErrorKind::Other,
        };
        RegistryError::new(
            kind,
            format!("{}: {op}: {e} ({})", self.where_(repo), path.display()),
        )
    }

    fn fail(
        &self,
        repo: &Repo,
        kind: ErrorKind,
        op: impl fmt::Display,
        msg: impl fmt::Display,
    ) -> RegistryError {
        RegistryError::new(kind, format!("{}: {op}: {msg}", self.where_(repo)))
    }

    fn wrap(&self, repo: &Repo, op: impl fmt::Display, e: RegistryError) -> RegistryError {
        RegistryError::new(
            e.kind,
            format!("{}: {op}: {}", self.where_(repo), e.message),
        )
    }

    // ---- locking and layout creation -------------------------------------

    fn repo_lock(&self, repo: &Repo) -> Arc<AsyncMutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(repo.clone()).or_default().clone()
    }

    /// Serialises `index.json` updates of `repo`: within this process by an
    /// async mutex, across processes (a daemon and a CI job on one layout)
    /// by an advisory lock on `.regimen.lock` in the layout. With `create`,
    /// the layout folder is made first; without, a missing folder has
    /// nothing to protect.
    async fn lock_repo(&self, repo: &Repo, create: bool) -> Result<RepoGuard> {
        let lock = self.repo_lock(repo);
        let held = lock.lock_owned().await;
        let dir = self.repo_dir(repo);
        if create {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| self.io_err(repo, "creating the image layout", &dir, e))?;
        } else if !exists(&dir).await {
            return Ok(RepoGuard {
                _held: held,
                _file: None,
            });
        }
        let path = dir.join(LOCK_FILE);
        let file = tokio::task::spawn_blocking(move || {
            // Opened for writing where allowed (NFS emulates `flock` with
            // `fcntl`, whose exclusive lock needs it); else read-only, which
            // locally is enough, so a layout shared by two users
            // (group-writable folder) works whoever made the file first. A
            // new file is world-writable for the same reason.
            let mut o = std::fs::OpenOptions::new();
            o.create(true).truncate(false).read(true).write(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o666);
            let f = match o.open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    std::fs::File::open(&path)?
                }
                Err(e) => return Err(e),
            };
            match f.lock() {
                Ok(()) => Ok(Some(f)),
                // Some network and FUSE filesystems have no locks: carry on
                // with the in-process lock only, as before.
                Err(e)
                    if e.kind() == std::io::ErrorKind::Unsupported
                        || e.raw_os_error() == Some(37 /* ENOLCK */)
                        || e.raw_os_error() == Some(9 /* EBADF: NFS, read-only file */) =>
                {
                    tracing::warn!(
                        "{}: no file locks here ({e}): two processes writing this layout at \
                         once may lose an index.json update",
                        path.display()
                    );
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|r| r)
        .map_err(|e| self.io_err(repo, "locking the image layout", &dir.join(LOCK_FILE), e))?;
        Ok(RepoGuard {
            _held: held,
            _file: file,
        })
    }

    /// Creates the layout of `repo` if needed. The caller holds the repo lock.
    async fn ensure_layout_locked(&self, repo: &Repo) -> Result<()> {
        let dir = self.repo_dir(repo);
        let blobs = dir.join("blobs").join("sha256");
        tokio::fs::create_dir_all(&blobs)
            .await
            .map_err(|e| self.io_err(repo, "creating the image layout", &blobs, e))?;
        let layout = dir.join(LAYOUT_FILE);
        if !exists(&layout).await {
            self.write_atomic(
                repo,
                "writing oci-layout",
                &dir,
                LAYOUT_FILE,
                LAYOUT_CONTENT,
            )
            .await?;
        }
        let index = dir.join(INDEX_FILE);
        if !exists(&index).await {
            self.write_index(repo, &IndexFile::empty()).await?;
        }
        Ok(())
    }

    /// Creates the layout of `repo` if needed (takes the repo lock when it does).
    async fn ensure_layout(&self, repo: &Repo) -> Result<()> {
        let dir = self.repo_dir(repo);
        if exists(&dir.join(LAYOUT_FILE)).await && exists(&dir.join(INDEX_FILE)).await {
            return Ok(());
        }
        let _guard = self.lock_repo(repo, true).await?;
        self.ensure_layout_locked(repo).await
    }

    // ---- files ------------------------------------------------------------

    /// Writes `bytes` to `dir/name` through a temporary file and a rename.
    async fn write_atomic(
        &self,
        repo: &Repo,
        op: &str,
        dir: &Path,
        name: &str,
        bytes: &[u8],
    ) -> Result<()> {
        // Hidden, as other tools may list `blobs/sha256/`.
        let tmp = dir.join(format!(".{name}.tmp-{}", tmp_suffix()));
        let target = dir.join(name);
        let res = async {
            let mut f = create_new(&tmp).await?;
            f.write_all(bytes).await?;
            f.sync_all().await?;
            drop(f);
            tokio::fs::rename(&tmp, &target).await
        }
        .await;
        if let Err(e) = res {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(self.io_err(repo, op, &target, e));
        }
        Ok(())
    }

    async fn read_index(&self, repo: &Repo) -> Result<Option<IndexFile>> {
        let path = self.repo_dir(repo).join(INDEX_FILE);
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io_err(repo, "reading index.json", &path, e)),
        };
        let doc: Map<String, Value> = serde_json::from_slice(&bytes).map_err(|e| {
            self.fail(
                repo,
                ErrorKind::Other,
                "reading index.json",
                format!("{} is not a JSON object: {e}", path.display()),
            )
        })?;
        let index = IndexFile::from_doc(doc).map_err(|e| {
            self.fail(
                repo,
                ErrorKind::Other,
                "reading index.json",
                format!("{} is not an image index: {e}", path.display()),
            )
        })?;
        Ok(Some(index))
    }

    async fn write_index(&self, repo: &Repo, index: &IndexFile) -> Result<()> {
        let bytes = serde_json::to_vec(&index.to_doc())
            .map_err(|e| self.fail(repo, ErrorKind::Other, "writing index.json", e))?;
        let dir = self.repo_dir(repo);
        // Renames are durable once their directory is synced: the blobs'
        // before index.json names them, index.json's own before apply
        // reports the write (a power loss then loses neither).
        for alg in ["sha256", "sha512"] {
            sync_dir(&dir.join("blobs").join(alg)).await;
        }
        self.write_atomic(repo, "writing index.json", &dir, INDEX_FILE, &bytes)
            .await?;
        sync_dir(&dir).await;
        Ok(())
    }

    async fn blob_size(&self, repo: &Repo, digest: &Digest) -> Result<Option<u64>> {
        let path = self.blob_path(repo, digest);
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_err(repo, format!("reading blob {digest}"), &path, e)),
        }
    }

    /// Streams `data` into `tmp`, checking size and digest on the way.
    async fn write_verified(
        &self,
        repo: &Repo,
        tmp: &Path,
        digest: &Digest,
        size: u64,
        mut data: BlobStream,
        mut hasher: Hasher,
    ) -> Result<()> {
        let op = format!("writing blob {digest}");
        let file = create_new(tmp)
            .await
            .map_err(|e| self.io_err(repo, &op, tmp, e))?;
        let mut out = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
        let mut written: u64 = 0;
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(|e| {
                self.fail(
                    repo,
                    ErrorKind::Other,
                    &op,
                    format!("reading the source: {e}"),
                )
            })?;
            written += chunk.len() as u64;
            if written > size {
                return Err(self.fail(
                    repo,
                    ErrorKind::DigestMismatch,
                    &op,
                    format!("received more than the expected {size} bytes"),
                ));
            }
            hasher.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(|e| self.io_err(repo, &op, tmp, e))?;
        }
        if written != size {
            return Err(self.fail(
                repo,
                ErrorKind::DigestMismatch,
                &op,
                format!("received {written} bytes, expected {size}"),
            ));
        }
        let got = hasher.finish();
        if got != digest.as_str() {
            return Err(self.fail(
                repo,
                ErrorKind::DigestMismatch,
                &op,
                format!("content hashes to {got}"),
            ));
        }
        out.flush()
            .await
            .map_err(|e| self.io_err(repo, &op, tmp, e))?;
        let file = out.into_inner();
        file.sync_all()
            .await
            .map_err(|e| self.io_err(repo, &op, tmp, e))?;
        Ok(())
    }

    // ---- manifests --------------------------------------------------------

    fn parse_reference(&self, repo: &Repo, reference: &str) -> Result<Ref> {
        let bad = |e: String| {
            self.fail(
                repo,
                ErrorKind::Other,
                format!("resolving `{reference}`"),
                format!("not a tag or digest: {e}"),
            )
        };
        if reference.contains(':') {
            reference.parse::<Digest>().map(Ref::Digest).map_err(bad)
        } else {
            reference.parse::<Tag>().map(Ref::Tag).map_err(bad)
        }
    }

    /// Digest and (when `index.json` says) media type and size of `reference`;
    /// `None` when a tag is not there. Digests are returned as given (the
    /// caller checks the blob).
    async fn resolve(
        &self,
        repo: &Repo,
        reference: &str,
    ) -> Result<Option<(Digest, Option<String>, bool)>> {
        let r = self.parse_reference(repo, reference)?;
        let index = self.read_index(repo).await?;
        match r {
            Ref::Tag(tag) => {
                let Some(index) = index else { return Ok(None) };
                let Some(entry) = index.find_tag(tag.as_str()) else {
                    return Ok(None);
                };
                let digest = entry_digest(entry).ok_or_else(|| {
                    self.fail(
                        repo,
                        ErrorKind::Other,
                        format!("resolving tag {tag}"),
                        "the index.json entry has no valid digest",
                    )
                })?;
                Ok(Some((digest, entry_media_type(entry), true)))
            }
            Ref::Digest(d) => {
                let mt = index
                    .as_ref()
                    .and_then(|i| i.find_digest(&d))
                    .and_then(entry_media_type);
                Ok(Some((d, mt, false)))
            }
        }
    }

    /// Reads and verifies a manifest blob. `None` when the blob is absent or
    /// (for a digest lookup without a known media type) is not a manifest.
    async fn load_manifest(
        &self,
        repo: &Repo,
        digest: &Digest,
        media_type: Option<String>,
        via_tag: bool,
        reference: &str,
    ) -> Result<Option<Manifest>> {
        let op = format!("reading manifest {reference}");
        let path = self.blob_path(repo, digest);
        if media_type.is_none() {
            match self.blob_size(repo, digest).await? {
                None => return Ok(None),
                Some(n) if n > MAX_MANIFEST_SIZE => return Ok(None),
                Some(_) => {}
            }
        }
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !via_tag => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(self.fail(
                    repo,
                    ErrorKind::Other,
                    &op,
                    format!(
                        "index.json names {digest} but its blob is missing ({})",
                        path.display()
                    ),
                ))
            }
            Err(e) => return Err(self.io_err(repo, &op, &path, e)),
        };
        let got = digest_like(digest, &bytes);
        if got.as_deref() != Some(digest.as_str()) {
            return Err(self.fail(
                repo,
                ErrorKind::DigestMismatch,
                &op,
                format!(
                    "blob {} hashes to {}",
                    path.display(),
                    got.unwrap_or_default()
                ),
            ));
        }
        let media_type = match media_type {
            Some(m) => m,
            None => match sniff_manifest_media_type(&bytes) {
                Some(m) => m,
                None => return Ok(None),
            },
        };
        Ok(Some(Manifest {
            media_type,
            bytes: Bytes::from(bytes),
            digest: digest.clone(),
        }))
    }

    /// Checks that everything `manifest` refers to is already stored.
    async fn check_references(&self, repo: &Repo, parsed: &Parsed) -> Result<Vec<String>> {
        let mut missing = Vec::new();
        let wanted: Vec<(&str, &Descriptor)> = match parsed {
            Parsed::Image { config, layers, .. } => std::iter::once(("config", config))
                .chain(
                    layers
                        .iter()
                        .filter(|l| !is_non_distributable(&l.media_type))
                        .map(|l| ("layer", l)),
                )
                .collect(),
            Parsed::Index { manifests, .. } => {
                manifests.iter().map(|m| ("child manifest", m)).collect()
            }
        };
        for (what, d) in wanted {
            match self.blob_size(repo, &d.digest).await? {
                None => missing.push(format!("{what} {} is not present", d.digest)),
                Some(n) if n != d.size => missing.push(format!(
                    "{what} {} is stored with {n} bytes, the manifest says {}",
                    d.digest, d.size
                )),
                Some(_) => {}
            }
        }
        Ok(missing)
    }

    /// The subject of the manifest `digest`, if it has one (cached).
    async fn referrer_info(
        &self,
        repo: &Repo,
        digest: &Digest,
        media_type: Option<String>,
    ) -> Result<Option<ReferrerInfo>> {
        {
            let cache = self.subjects.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(v) = cache.get(digest) {
                return Ok(v.clone());
            }
        }
        let Some(m) = self
            .load_manifest(repo, digest, media_type, false, digest.as_str())
            .await?
        else {
            return Ok(None);
        };
        let info = match m.parse() {
            Ok(p) => p.subject().map(|s| ReferrerInfo {
                subject: s.digest.clone(),
                artifact_type: p.artifact_type(),
                annotations: p.annotations().clone(),
            }),
            Err(_) => None,
        };
        let mut cache = self.subjects.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(digest.clone(), info.clone());
        Ok(info)
    }

    /// An error naming what `parsed` refers to that the repo lacks (`why`
    /// follows the list), if anything.
    async fn require_references(
        &self,
        repo: &Repo,
        op: &str,
        parsed: &Parsed,
        why: &str,
    ) -> Result<()> {
        let missing = self.check_references(repo, parsed).await?;
        if missing.is_empty() {
            return Ok(());
        }
        Err(self.fail(
            repo,
            ErrorKind::Other,
            op,
            format!("{}{why}", missing.join(", ")),
        ))
    }

    /// Writes `manifest`'s blob unless it is there with its size already.
    async fn ensure_manifest_blob(&self, repo: &Repo, op: &str, manifest: &Manifest) -> Result<()> {
        let digest = &manifest.digest;
        if self.blob_size(repo, digest).await? == Some(manifest.bytes.len() as u64) {
            return Ok(());
        }
        let dir = self.blob_dir(repo, digest);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| self.io_err(repo, op, &dir, e))?;
        self.write_atomic(repo, op, &dir, digest.hex(), &manifest.bytes)
            .await
    }

    /// Of entries just removed (a tag deleted or moved): a referrer left
    /// with no entry keeps one without the tag, as a referrer pushed
    /// untagged has, so it still follows its image (and goes with it).
    async fn keep_referrers(
        &self,
        repo: &Repo,
        index: &mut IndexFile,
        removed: Vec<Value>,
    ) -> Result<()> {
        for mut e in removed {
            let Some(d) = entry_digest(&e) else { continue };
            if index.find_digest(&d).is_some() {
                continue;
            }
            // Only a referrer whose image is still here. A blob that is not
            // what its digest says is no referrer to keep; other errors stop.
            let info = match self.referrer_info(repo, &d, entry_media_type(&e)).await {
                Ok(Some(info)) => info,
                Ok(None) => continue,
                Err(err) if err.kind == ErrorKind::DigestMismatch => continue,
                Err(err) => return Err(err),
            };
            if self.blob_size(repo, &info.subject).await?.is_none() {
                continue;
            }
            if let Some(a) = e.get_mut("annotations").and_then(Value::as_object_mut) {
                a.remove(REF_NAME_ANNOTATION);
                if a.is_empty() {
                    if let Some(o) = e.as_object_mut() {
                        o.remove("annotations");
                    }
                }
            }
            index.entries_mut().push(e);
        }
        Ok(())
    }

    /// Every manifest digest reachable from `index.json` entries, following
    /// index children.
    async fn reachable(&self, repo: &Repo, index: &IndexFile) -> Result<HashSet<Digest>> {
        let mut seen = HashSet::new();
        let mut todo: Vec<(Digest, Option<String>)> = index
            .entries()
            .iter()
            .filter_map(|e| Some((entry_digest(e)?, entry_media_type(e))))
            .collect();
        while let Some((d, mt)) = todo.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            let is_index = mt.as_deref().map(MediaType::is_index).unwrap_or(true);
            if !is_index {
                continue;
            }
            let Some(m) = self.load_manifest(repo, &d, mt, false, d.as_str()).await? else {
                continue;
            };
            if let Ok(Parsed::Index { manifests, .. }) = m.parse() {
                todo.extend(
                    manifests
                        .into_iter()
                        .map(|c| (c.digest, Some(c.media_type))),
                );
            }
        }
        Ok(seen)
    }
}

/// fsync of a directory, best effort: some filesystems refuse it, and a
/// write that worked is not failed for that.
async fn sync_dir(dir: &Path) {
    let d = dir.to_path_buf();
    let res = tokio::task::spawn_blocking(move || std::fs::File::open(&d)?.sync_all()).await;
    if let Ok(Err(e)) = res {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::debug!("{}: cannot sync the directory: {e}", dir.display());
        }
    }
}

async fn exists(p: &Path) -> bool {
    tokio::fs::metadata(p).await.is_ok()
}

#[async_trait]
impl Registry for OciLayout {
    fn name(&self) -> &RegistryName {
        &self.name
    }

    async fn list_repos(&self) -> Result<Vec<Repo>> {
        let op_err = |path: &Path, e: io::Error| {
            let kind = if e.kind() == io::ErrorKind::PermissionDenied {
                ErrorKind::Denied
            } else {
                ErrorKind::Other
            };
            RegistryError::new(
                kind,
                format!(
                    "{}: listing repositories: {e} ({})",
                    self.name,
                    path.display()
                ),
            )
        };
        let mut repos = Vec::new();
        let mut stack: Vec<(PathBuf, String)> = vec![(self.root.clone(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            let mut rd = match tokio::fs::read_dir(&dir).await {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(op_err(&dir, e)),
            };
            let is_layout = !rel.is_empty()
                && tokio::fs::metadata(dir.join(LAYOUT_FILE))
                    .await
                    .is_ok_and(|m| m.is_file());
            if is_layout {
                if let Ok(r) = rel.parse::<Repo>() {
                    repos.push(r);
                }
            }
            while let Some(entry) = rd.next_entry().await.map_err(|e| op_err(&dir, e))? {
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if name.starts_with('.') || (is_layout && name == "blobs") {
                    continue;
                }
                // A component that is not a valid repository name cannot
                // start one, nor can anything below it.
                if name.parse::<Repo>().is_err() || name.contains('/') {
                    continue;
                }
                let ft = entry
                    .file_type()
                    .await
                    .map_err(|e| op_err(&entry.path(), e))?;
                if !ft.is_dir() {
                    continue;
                }
                let child_rel = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                stack.push((entry.path(), child_rel));
            }
        }
        repos.sort();
        Ok(repos)
    }

    async fn list_tags_if_exists(&self, repo: &Repo) -> Result<Option<Vec<Tag>>> {
        let Some(index) = self.read_index(repo).await? else {
            return Ok(None);
        };
        let mut tags: Vec<Tag> = index
            .entries()
            .iter()
            .filter_map(entry_ref_name)
            .filter_map(|n| match n.parse::<Tag>() {
                Ok(t) => Some(t),
                Err(_) => {
                    tracing::debug!(registry = %self.name, %repo, ref_name = n, "ignoring index.json entry whose ref.name is not a tag");
                    None
                }
            })
            .collect();
        tags.sort();
        tags.dedup();
        Ok(Some(tags))
    }

    async fn other_names(&self, repo: &Repo) -> Result<BTreeMap<Digest, Vec<String>>> {
        let Some(index) = self.read_index(repo).await? else {
            return Ok(BTreeMap::new());
        };
        Ok(foreign_names(index.entries()))
    }

    async fn head_manifest(&self, repo: &Repo, reference: &str) -> Result<Option<ManifestHead>> {
        let Some((digest, media_type, via_tag)) = self.resolve(repo, reference).await? else {
            return Ok(None);
        };
        match media_type {
            Some(media_type) => match self.blob_size(repo, &digest).await? {
                Some(size) => Ok(Some(ManifestHead {
                    digest,
                    media_type,
                    size,
                })),
                None if via_tag => Err(self.fail(
                    repo,
                    ErrorKind::Other,
                    format!("reading manifest {reference}"),
                    format!("index.json names {digest} but its blob is missing"),
                )),
                None => Ok(None),
            },
            // Unknown media type: read the (small) blob to tell.
            None => Ok(self
                .load_manifest(repo, &digest, None, via_tag, reference)
                .await?
                .map(|m| m.head())),
        }
    }

    async fn get_manifest(&self, repo: &Repo, reference: &str) -> Result<Option<Manifest>> {
        let Some((digest, media_type, via_tag)) = self.resolve(repo, reference).await? else {
            return Ok(None);
        };
        self.load_manifest(repo, &digest, media_type, via_tag, reference)
            .await
    }

    async fn put_manifest(
        &self,
        repo: &Repo,
        tag: Option<&Tag>,
        manifest: &Manifest,
    ) -> Result<Digest> {
        super::check_write()?;
        let digest = &manifest.digest;
        let op = match tag {
            Some(t) => format!("putting manifest {digest} as {t}"),
            None => format!("putting manifest {digest}"),
        };
        let got = digest_like(digest, &manifest.bytes);
        if got.as_deref() != Some(digest.as_str()) {
            return Err(self.fail(
                repo,
                ErrorKind::DigestMismatch,
                &op,
                format!("the manifest bytes hash to {}", got.unwrap_or_default()),
            ));
        }
        let parsed = manifest.parse().map_err(|e| self.wrap(repo, &op, e))?;
        self.require_references(
            repo,
            &op,
            &parsed,
            "; blobs and child manifests must be stored before the manifest",
        )
        .await?;

        // The manifest blob.
        self.ensure_layout(repo).await?;
        self.ensure_manifest_blob(repo, &op, manifest).await?;

        // The index.json entry, for tags and referrers.
        let subject = parsed.subject().map(|s| s.digest.clone());
        if tag.is_none() && subject.is_none() {
            return Ok(digest.clone());
        }
        let mut desc = manifest.descriptor();
        if subject.is_some() {
            desc.artifact_type = parsed.artifact_type();
        }
        if let Some(t) = tag {
            desc.annotations
                .insert(REF_NAME_ANNOTATION.to_string(), t.to_string());
        }
        let entry =
            serde_json::to_value(&desc).map_err(|e| self.fail(repo, ErrorKind::Other, &op, e))?;

        let _guard = self.lock_repo(repo, true).await?;
        self.ensure_layout_locked(repo).await?;
        // A delete by another process that held the lock meanwhile may have
        // removed this manifest's blob (nothing named it yet), or, for an
        // index, a child manifest's: the entry must not name what is gone.
        self.ensure_manifest_blob(repo, &op, manifest).await?;
        if manifest.is_index() {
            self.require_references(repo, &op, &parsed, ": deleted meanwhile by another writer")
                .await?;
        }
        let mut index = self
            .read_index(repo)
            .await?
            .unwrap_or_else(IndexFile::empty);
        match tag {
            Some(t) => {
                let entries = index.entries_mut();
                let same: Vec<usize> = entries
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| entry_ref_name(e) == Some(t.as_str()))
                    .map(|(i, _)| i)
                    .collect();
                if same.len() == 1 && entry_digest(&entries[same[0]]).as_ref() == Some(digest) {
                    return Ok(digest.clone()); // already so: nothing to write
                }
                // Replace in place (keeps the order of entries stable), dropping duplicates.
                let mut first = None;
                let mut removed = Vec::new();
                for (n, &i) in same.iter().enumerate() {
                    let i = i - n;
                    if first.is_none() {
                        first = Some(i);
                    }
                    removed.push(entries.remove(i));
                }
                match first {
                    Some(i) => entries.insert(i, entry),
                    None => entries.push(entry),
                }
                self.keep_referrers(repo, &mut index, removed).await?;
            }
            None => {
                if index.find_digest(digest).is_some() {
                    return Ok(digest.clone());
                }
                index.entries_mut().push(entry);
            }
        }
        self.write_index(repo, &index).await?;
        tracing::debug!(registry = %self.name, %repo, %digest, tag = ?tag.map(|t| t.as_str()), "index.json updated");
        Ok(digest.clone())
    }

    async fn head_blob(&self, repo: &Repo, digest: &Digest) -> Result<Option<u64>> {
        self.blob_size(repo, digest).await
    }

    async fn get_blob(&self, repo: &Repo, digest: &Digest) -> Result<BlobStream> {
        let path = self.blob_path(repo, digest);
        let file = tokio::fs::File::open(&path).await.map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                self.fail(
                    repo,
                    ErrorKind::NotFound,
                    format!("reading blob {digest}"),
                    "blob not found",
                )
            } else {
                self.io_err(repo, format!("reading blob {digest}"), &path, e)
            }
        })?;
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
            file, READ_CHUNK,
        )))
    }

    async fn put_blob(
        &self,
        repo: &Repo,
        digest: &Digest,
        size: u64,
        data: BlobStream,
    ) -> Result<()> {
        super::check_write()?;
        let op = format!("writing blob {digest}");
        let Some(hasher) = Hasher::for_digest(digest) else {
            return Err(self.fail(
                repo,
                ErrorKind::Unsupported,
                &op,
                "unsupported digest algorithm",
            ));
        };
        // Already stored (verified when it was written): nothing to do.
        if self.blob_size(repo, digest).await? == Some(size) {
            return Ok(());
        }
        self.ensure_layout(repo).await?;
        let dir = self.blob_dir(repo, digest);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| self.io_err(repo, &op, &dir, e))?;
        let tmp = dir.join(format!(".upload-{}", tmp_suffix()));
        if let Err(e) = self
            .write_verified(repo, &tmp, digest, size, data, hasher)
            .await
        {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        let target = self.blob_path(repo, digest);
        if let Err(e) = tokio::fs::rename(&tmp, &target).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(self.io_err(repo, &op, &target, e));
        }
        Ok(())
    }

    async fn mount_blob(&self, repo: &Repo, from: &Repo, digest: &Digest) -> Result<bool> {
        super::check_write()?;
        if repo == from {
            return Ok(self.blob_size(repo, digest).await?.is_some());
        }
        let op = format!("mounting blob {digest} from {from}");
        let src = self.blob_path(from, digest);
        let Some(src_size) = self.blob_size(from, digest).await? else {
            return Ok(false);
        };
        if self.blob_size(repo, digest).await? == Some(src_size) {
            return Ok(true);
        }
        self.ensure_layout(repo).await?;
        let dir = self.blob_dir(repo, digest);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| self.io_err(repo, &op, &dir, e))?;
        let dst = self.blob_path(repo, digest);
        // Blobs are immutable (only ever replaced by rename), so sharing the inode is safe.
        match tokio::fs::hard_link(&src, &dst).await {
            Ok(()) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // A wrong-sized leftover: replace it through the copy below.
                if self.blob_size(repo, digest).await? == Some(src_size) {
                    return Ok(true);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(_) => {} // e.g. another filesystem: copy instead
        }
        let tmp = dir.join(format!(".upload-{}", tmp_suffix()));
        let res = async {
            tokio::fs::copy(&src, &tmp).await?;
            tokio::fs::File::open(&tmp).await?.sync_all().await?;
            tokio::fs::rename(&tmp, &dst).await
        }
        .await;
        match res {
            Ok(()) => Ok(true),
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                if e.kind() == io::ErrorKind::NotFound
                    && self.blob_size(from, digest).await?.is_none()
                {
                    return Ok(false);
                }
                Err(self.io_err(repo, &op, &dst, e))
            }
        }
    }

    /// Removes every `index.json` entry of `digest` and of its referrers
    /// (transitively: a signature of an SBOM of the image goes too). The
    /// manifest blobs of what was removed are deleted when nothing left in
    /// `index.json` reaches them; their configs and layers are left in place
    /// (no blob garbage collection).
    async fn delete_manifest(&self, repo: &Repo, digest: &Digest) -> Result<()> {
        super::check_write()?;
        self.delete_manifest_if(repo, digest, None).await
    }

    async fn delete_manifest_tagged(
        &self,
        repo: &Repo,
        digest: &Digest,
        planned: &[Tag],
    ) -> Result<()> {
        super::check_write()?;
        self.delete_manifest_if(repo, digest, Some(planned)).await
    }

    /// Removes only the tag's `index.json` entry; the manifest blob stays
    /// (another tag, an index or a digest reference may still use it).
    async fn delete_tag(&self, repo: &Repo, tag: &Tag) -> Result<()> {
        super::check_write()?;
        let op = format!("deleting tag {tag}");
        let _guard = self.lock_repo(repo, false).await?;
        let Some(mut index) = self.read_index(repo).await? else {
            return Err(self.fail(repo, ErrorKind::NotFound, &op, "tag not found"));
        };
        let entries = index.entries_mut();
        let mut removed = Vec::new();
        entries.retain(|e| {
            let this = entry_ref_name(e) == Some(tag.as_str());
            if this {
                removed.push(e.clone());
            }
            !this
        });
        if removed.is_empty() {
            return Err(self.fail(repo, ErrorKind::NotFound, &op, "tag not found"));
        }
        self.keep_referrers(repo, &mut index, removed).await?;
        self.write_index(repo, &index).await
    }

    /// A layout indexes its referrers itself: `index.json` holds each
    /// manifest whose `subject` is the image.
    async fn referrers_api(&self, repo: &Repo, digest: &Digest) -> Result<Option<Vec<Descriptor>>> {
        self.referrers(repo, digest).await.map(Some)
    }

    async fn referrers(&self, repo: &Repo, digest: &Digest) -> Result<Vec<Descriptor>> {
        let Some(index) = self.read_index(repo).await? else {
            return Ok(Vec::new());
        };
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for e in index.entries() {
            let Some(d) = entry_digest(e) else { continue };
            if !seen.insert(d.clone()) {
                continue;
            }
            let mt = entry_media_type(e);
            let Some(info) = self.referrer_info(repo, &d, mt.clone()).await? else {
                continue;
            };
            if &info.subject != digest {
                continue;
            }
            let size = match entry_size(e) {
                Some(s) => s,
                None => self.blob_size(repo, &d).await?.unwrap_or(0),
            };
            out.push(Descriptor {
                media_type: mt.unwrap_or_else(|| MediaType::OCI_MANIFEST.to_string()),
                digest: d,
                size,
                artifact_type: info.artifact_type,
                annotations: info.annotations,
                platform: None,
                urls: Vec::new(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;

    fn reg(dir: &Path) -> OciLayout {
        OciLayout::new("local".parse().unwrap(), dir.to_path_buf())
    }
    fn repo(s: &str) -> Repo {
        s.parse().unwrap()
    }
    fn tag(s: &str) -> Tag {
        s.parse().unwrap()
    }
    fn stream(b: &[u8]) -> BlobStream {
        let chunks: Vec<std::result::Result<Bytes, io::Error>> =
            b.chunks(7).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        Box::pin(futures_util::stream::iter(chunks))
    }
    async fn put(r: &OciLayout, repo: &Repo, b: &[u8]) -> Descriptor {
        let d = Digest::sha256_of(b);
        r.put_blob(repo, &d, b.len() as u64, stream(b))
            .await
            .unwrap();
        Descriptor {
            media_type: "application/octet-stream".into(),
            digest: d,
            size: b.len() as u64,
            artifact_type: None,
            annotations: BTreeMap::new(),
            platform: None,
            urls: Vec::new(),
        }
    }
    fn desc_json(mt: &str, d: &Descriptor) -> Value {
        serde_json::json!({"mediaType": mt, "digest": d.digest.as_str(), "size": d.size})
    }
    /// An image manifest over fresh config and layer blobs (distinct per `seed`).
    async fn image(r: &OciLayout, repo: &Repo, seed: &str) -> Manifest {
        let config = put(r, repo, format!("{{\"seed\":\"{seed}\"}}").as_bytes()).await;
        let layer = put(r, repo, format!("layer {seed}").as_bytes()).await;
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MediaType::OCI_MANIFEST,
            "config": desc_json(MediaType::OCI_CONFIG, &config),
            "layers": [desc_json("application/vnd.oci.image.layer.v1.tar", &layer)],
        });
        Manifest::from_bytes(serde_json::to_vec(&m).unwrap(), None).unwrap()
    }
    async fn referrer(r: &OciLayout, repo: &Repo, subject: &Manifest, at: &str) -> Manifest {
        let empty = put(r, repo, b"{}").await;
        let payload = put(
            r,
            repo,
            format!("payload for {}", subject.digest).as_bytes(),
        )
        .await;
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MediaType::OCI_MANIFEST,
            "artifactType": at,
            "config": desc_json(MediaType::OCI_EMPTY, &empty),
            "layers": [desc_json(at, &payload)],
            "subject": desc_json(&subject.media_type, &subject.descriptor()),
            "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
        });
        Manifest::from_bytes(serde_json::to_vec(&m).unwrap(), None).unwrap()
    }
    fn read_index_json(dir: &Path, repo: &str) -> Value {
        serde_json::from_slice(&std::fs::read(dir.join(repo).join("index.json")).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn roundtrip_blob_manifest_tag() {
        let tmp = tempfile::tempdir().unwrap();
        let r = reg(tmp.path());
        let rp = repo("mirror/alpine");
        let m = image(&r, &rp, "a").await;
        let d = r.put_manifest(&rp, Some(&tag("3.20")), &m).await.unwrap();
        assert_eq!(d, m.digest);

        let layout = std::fs::read(tmp.path().join("mirror/alpine/oci-layout")).unwrap();
        assert_eq!(layout, LAYOUT_CONTENT);
        let idx = read_index_json(tmp.path(), "mirror/alpine");
        assert_eq!(
            idx["manifests"][0]["annotations"][REF_NAME_ANNOTATION],
            "3.20"
        );
        assert_eq!(idx["manifests"][0]["digest"], d.as_str());

        assert_eq!(r.list_tags(&rp).await.unwrap(), vec![tag("3.20")]);
        let head = r.head_manifest(&rp, "3.20").await.unwrap().unwrap();
        assert_eq!(
            head,
            ManifestHead {
                digest: d.clone(),
                media_type: MediaType::OCI_MANIFEST.into(),
                size: m.bytes.len() as u64
            }
        );
        assert_eq!(
            r.head_manifest(&rp, d.as_str()).await.unwrap().unwrap(),
            head
        );
        assert_eq!(r.get_manifest(&rp, "3.20").await.unwrap().unwrap(), m);
        assert_eq!(r.get_manifest(&rp, d.as_str()).await.unwrap().unwrap(), m);
        assert!(r.get_manifest(&rp, "nope").await.unwrap().is_none());

        // Blobs stream back; a layer is not a manifest.
        let Parsed::Image { layers, config, .. } = m.parse().unwrap() else {
            panic!()
        };
        let got: Vec<Bytes> = r
            .get_blob(&rp, &layers[0].digest)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(got.concat(), b"layer a");
        assert_eq!(
            r.head_blob(&rp, &config.digest).await.unwrap(),
            Some(config.size)
        );
        assert!(r
            .head_manifest(&rp, layers[0].digest.as_str())
            .await
            .unwrap()
            .is_none());
        assert!(r
            .head_manifest(&rp, config.digest.as_str())
            .await
            .unwrap()
            .is_none());
        let err = r
            .get_blob(&rp, &Digest::sha256_of(b"missing"))
            .await
            .err()
            .unwrap();
        assert!(err.is_not_found());
        assert!(
            err.message.starts_with("local/mirror/alpine: reading blob"),
            "{}",
            err.message
        );

        // Putting the same tag again changes nothing.
        r.put_manifest(&rp, Some(&tag("3.20")), &m).await.unwrap();
        assert_eq!(
            read_index_json(tmp.path(), "mirror/alpine")["manifests"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn an_index_json_without_a_manifests_list_is_an_error_not_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let r = reg(tmp.path());
        let rp = repo("team/api");
        let a = image(&r, &rp, "a").await;
        r.put_manifest(&rp, Some(&tag("1.0")), &a).await.unwrap();
        let path = tmp.path().join("team/api/index.json");
        for (doc, why) in [
            (r#"{"schemaVersion":2}"#, "no `manifests` list"),
            (r#"{"schemaVersion":2,"manifests":null}"#, "null"),
            (r#"{"schemaVersion":2,"manifests":{}}"#, "not a list"),
            (r#"{"schemaVersion":2,"manifests":"x"}"#, "not a list"),
        ] {
            std::fs::write(&path, doc).unwrap();
            let err = r.list_tags_if_exists(&rp).await.unwrap_err();
            assert!(
                err.message.contains("index.json is not an image index")
                    && err.message.contains(why),
                "{doc}: {}",
                err.message
            );
            assert!(r.head_manifest(&rp, "1.0").await.is_err(), "{doc}");
            // Nothing is written over it.
            assert!(
                r.put_manifest(&rp, Some(&tag("2.0")), &a).await.is_err(),
                "{doc}"
            );
            assert!(r.delete_tag(&rp, &tag("1.0")).await.is_err(), "{doc}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), doc);
        }
    }

    #[tokio::test]
    async fn missing_repo_is_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let r = reg(&tmp.path().join("does-not-exist"));
        let rp = repo("a/b");
        assert!(r.list_tags(&rp).await.unwrap().is_empty());
        assert!(r.list_repos().await.unwrap().is_empty());
        assert!(r.head_manifest(&rp, "latest").await.unwrap().is_none());
        assert!(r
            .get_manifest(&rp, Digest::sha256_of(b"x").as_str())
            .await
            .unwrap()
            .is_none());
        assert!(r
            .head_blob(&rp, &Digest::sha256_of(b"x"))
            .await
            .unwrap()
            .is_none());
        assert!(r
            .referrers(&rp, &Digest::sha256_of(b"x"))
            .await
            .unwrap()
            .is_empty());
        assert!(r
            .delete_tag(&rp, &tag("latest"))
            .await
            .unwrap_err()
            .is_not_found());
        assert!(r.head_manifest(&rp, "Not A Tag").await.is_err());
    }

    #[tokio::test]
    async fn digest_mismatch_rejected_and_nothing_visible() {
        let tmp = tempfile::tempdir().unwrap();
        let r = reg(tmp.path());
        let rp = repo("x");
        let d = Digest::sha256_of(b"expected");
        let err = r
            .put_blob(&rp, &d, 8, stream(b"tampered"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::DigestMismatch);
        assert!(
            err.message.starts_with("local/x: writing blob sha256:"),
            "{}",
            err.message
        );
        // Wrong size, both ways.
        let err = r
            .put_blob(&rp, &d, 7, stream(b"expected"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::DigestMismatch);
        let err = r
            .put_blob(&rp, &d, 9, stream(b"expected"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::DigestMismatch);
        assert!(r.head_blob(&rp, &d).await.unwrap().is_none());
        let left: Vec<_> = std::fs::read_dir(tmp.path().join("x/blobs/sha256"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");

        // A manifest whose bytes do not match its digest.
        let mut m = image(&r, &rp, "a").await;
        m.digest = Digest::sha256_of(b"other");
        let err = r.put_manifest(&rp, Some(&tag("t")), &m).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::DigestMismatch);
        assert!(r.list_tags(&rp).await.unwrap().is_empty());

        // A manifest whose blobs are missing.
        let other = reg(&tmp.path().join("elsewhere"));
        let m = image(&other, &rp, "b").await;
        let err = r.put_manifest(&rp, Some(&tag("t")), &m).await.unwrap_err();
        assert!(
            err.message.contains("config sha256:") && err.message.contains("must be stored before"),
            "{}",
            err.message
        );
        assert!(r
            .head_manifest(&rp, m.digest.as_str())
            .await
            .unwrap()
            .is_none());
        // An index whose child is missing.
        let idx = serde_json::json!({"schemaVersion": 2, "mediaType": MediaType::OCI_INDEX,
            "manifests": [desc_json(MediaType::OCI_MANIFEST, &m.descriptor())]});
        let idx = Manifest::from_bytes(serde_json::to_vec(&idx).unwrap(), None).unwrap();
        let err = r.put_manifest(&rp, None, &idx).await.unwrap_err();
        assert!(err.message.contains("child manifest"), "{}", err.message);
    }

    #[tokio::test]
    async fn tag_replace() {
        let tmp = tempfile::tempdir().unwrap();
        let r = reg(tmp.path());
        let rp = repo("team/api");
        let a = image(&r, &rp, "a").await;
        let b = image(&r, &rp, "b").await;
        r.put_manifest(&rp, Some(&tag("stable")), &a).await.unwrap();
        r.put_manifest(&rp, Some(&tag("other")), &a).await.unwrap();
        r.put_manifest(&rp, Some(&tag("stable")), &b).await.unwrap();
        assert_eq!(
            r.list_tags(&rp).await.unwrap(),
            vec![tag("other"), tag("stable")]
        );
        assert_eq!(
            r.head_manifest(&rp, "stable")
                .await
                .unwrap()
                .unwrap()
                .digest,
            b.digest
        );
        assert_eq!(
            r.head_manifest(&rp, "other").await.unwrap().unwrap().digest,
            a.digest
        );
        let idx = read_index_json(tmp.path(), "team/api");
        assert_eq!(idx["manifests"].as_array().unwrap().len(), 2);
        // Replaced in place: `stable` stays first.
        assert_eq!(
            idx["manifests"][0]["annotations"][REF_NAME_ANNOTATION],
            "stable"
        );
    }

    #[tokio::test]
    async fn unknown_fields_survive() {
        let tmp = tempfile::tempdir().unwrap();
        let r = reg(tmp.path());
        let rp = repo("keep");
        let a = image(&r, &rp, "a").await;
        let b = image(&r, &rp, "b").await;
        let idx = serde_json::json!({
            "schemaVersion": 2,
            "x-extra": {"kept": true},
            "annotations": {"top": "level"},
            "manifests": [{"mediaType": MediaType::OCI_MANIFEST, "digest": a.digest.as_str(), "size": a.bytes.len(),
                "x-entry": 1, "annotations": {REF_NAME_ANNOTATION: "old", "note": "mine"},
                "platform": {"os": "linux", "architecture": "arm64"}}]
        });
        std::fs::write(
            tmp.path().join("keep/index.json"),
            serde_json::to_vec(&idx).unwrap(),
        )
        .unwrap();
        r.put_manifest(&rp, Some(&tag("new")), &b).await.unwrap();
        let got = read_index_json(tmp.path(), "keep");
        assert_eq!(got["x-extra"]["kept"], true);
        assert_eq!(got["annotations"]["top"], "level");
        assert_eq!(got["manifests"][0]["x-entry"], 1);
        assert_eq!(got["manifests"][0]["annotations"]["note"], "mine");
        assert_eq!(got["manifests"][0]["platform"]["architecture"], "arm64");
        assert_eq!(
            r.list_tags(&rp).await.unwrap(),
            vec![tag("new"), tag("old")]
        );
    }

    #[tokio::test]
    async fn delete_tag_keeps_other_tag_on_same_digest() {
        let tmp = tempfile::tempdir().unwrap();
        let r = reg(tmp.path());
        let rp = repo("team/api");
        let a = image(&r, &rp, "a").await;
        r.put_manifest(&rp, Some(&tag("1.0")), &a).await.unwrap();
        r.put_manifest(&rp, Some(&tag("stable")), &a).await.unwrap();
        r.delete_tag(&rp, &tag("1.0")).await.unwrap();
        assert_eq!(r.list_tags(&rp).await.unwrap(), vec![tag("stable")]);
        assert_eq!(r.get_manifest(&rp, "stable").await.unwrap().unwrap(), a);
        assert!(r
            .head_manifest(&rp, a.digest.as_str())
            .await
            .unwrap()
            .is_some());
        let err = r.delete_tag(&rp, &tag("1.0")).await.unwrap_err();
        assert!(err.is_not_found());
        assert!(
            err.message.starts_with("local/team/api: deleting tag 1.0"),
            "{}",
            err.message
        );
    }

    /// A signature someone also tagged stays a referrer of its image when
    /// that tag is deleted or moved: it still follows the image.
    #[tokio::test]
    async fn a_tagged_referrer_stays_a_referrer_without_its_tag() {
        let tmp = tempfile::tempdir().unwrap();
        let r = reg(tmp.path());
        let (rp, elsewhere) = (repo("team/api"), repo("team/other"));
        async fn listed(r: &OciLayout, rp: &Repo, subject: &Digest) -> Vec<Digest> {
            let refs = r.referrers(rp, subject).await.unwrap();
            refs.into_iter().map(|d| d.digest).collect()
        }
        let a = image(&r, &rp, "a").await;
        r.put_manifest(&rp, Some(&tag("1.0")), &a).await.unwrap();
        // The same signature made elsewhere, then put here tagged first (an
        // untagged put after that finds the digest listed already).
        let a_there = image(&r, &elsewhere, "a").await;
        r.put_manifest(&elsewhere, Some(&tag("1.0")), &a_there)
            .await
            .unwrap();
        // A signature of `a` made in `elsewhere`, its blobs copied here.
        let sign = |payload: &'static [u8]| {
            let (r, rp, elsewhere, subject) = (&r, &rp, &elsewhere, a.digest.clone());
            async move {
                let sig = crate::testkit::push_referrer(
                    r,
                    elsewhere,
                    &subject,
                    "application/x-sig",
                    payload,
                )
                .await
                .unwrap();
                for blob in [&b"{}"[..], payload] {
                    crate::testkit::push_blob(r, rp, blob).await.unwrap();
                }
                let m = r.get_manifest(elsewhere, sig.as_str()).await.unwrap();
                (sig, m.unwrap())
            }
        };
        let (sig, m) = sign(b"s").await;
        r.put_manifest(&rp, Some(&tag("sig-archive")), &m)
            .await
            .unwrap();
        r.put_manifest(&rp, None, &m).await.unwrap();
        assert_eq!(listed(&r, &rp, &a.digest).await, vec![sig.clone()]);
        r.delete_tag(&rp, &tag("sig-archive")).await.unwrap();
        assert_eq!(
            listed(&r, &rp, &a.digest).await,
            vec![sig.clone()],
            "tag deleted"
        );
        // Another signature, here only under a tag, which then moves.
        let (sig2, m2) = sign(b"t").await;
        r.put_manifest(&rp, Some(&tag("sig-3")), &m2).await.unwrap();
        r.put_manifest(&rp, Some(&tag("sig-3")), &a).await.unwrap();
        let mut both = vec![sig, sig2];
        both.sort();
        let mut now = listed(&r, &rp, &a.digest).await;
        now.sort();
        assert_eq!(now, both, "tag moved");
        assert_eq!(
            r.list_tags(&rp).await.unwrap(),
            vec![tag("1.0"), tag("sig-3")]
        );
    }

    /// The check and the delete are one step under the repo lock: a tag the
    /// caller did not plan for keeps the image.
    #[tokio::test]
    async fn delete_manifest_tagged_refuses_an_unplanned_tag() {
        let tmp = tempfile::tempdir().unwrap();
        let r = reg(tmp.path());
        let rp = repo("team/api");
        let a = image(&r, &rp, "a").await;
        r.put_manifest(&rp, Some(&tag("pr-1")), &a).await.unwrap();
        r.put_manifest(&rp, Some(&tag("keep-1")), &a).await.unwrap();
        let err = r
            .delete_manifest_tagged(&rp, &a.digest, &[tag("pr-1")])
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Conflict, "{err}");
        assert!(err.message.contains("keep-1"), "{err}");
        assert_eq!(r.list_tags(&rp).await.unwrap().len(), 2);
        r.delete_manifest_tagged(&rp, &a.digest, &[tag("pr-1"), tag("keep-1")])
            .await
            .unwrap();
        assert!(r.list_tags(&rp).await.unwrap().is_empty());
    }

    /// Adds an `index.json` entry for `digest` named `name`, as skopeo would.
    fn add_entry_named(dir: &Path, repo: &str, digest: &Digest, name: &str) {
        let path = dir.join(repo).join("index.json");
        let mut index: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let list = index["manifests"].as_array_mut().unwrap();
        let mut entry = list
            .iter()
            .find(|e| entry_digest(e).as_ref() == Some(digest))
            .unwrap()
            .clone();
        entry["annotations"] = serde_json::json!({ REF_NAME_ANNOTATION: name });
        list.push(entry);
        std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
    }

    #[tokio::test]
    async fn names_that_are_not_tags_are_reported_and_never_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let r = reg(tmp.path());
        let rp = repo("team/api");
        let a = image(&r, &rp, "a").await;
        r.put_manifest(&rp, Some(&tag("pr-1")), &a).await.unwrap();
        let b = image(&r, &rp, "b").await;
        r.put_manifest(&rp, Some(&tag("pr-2")), &b).await.unwrap();
        let sbom = referrer(&r, &rp, &b, "application/vnd.cyclonedx+json").await;
        r.put_manifest(&rp, None, &sbom).await.unwrap();
        add_entry_named(tmp.path(), "team/api", &a.digest, "docker.io/team/api:1.0");
        add_entry_named(tmp.path(), "team/api", &sbom.digest, "example.com/sbom:b");

        assert_eq!(
            r.list_tags(&rp).await.unwrap(),
            vec![tag("pr-1"), tag("pr-2")]
        );
        let names = r.other_names(&rp).await.unwrap();
        assert_eq!(names[&a.digest], ["docker.io/team/api:1.0"]);
        assert_eq!(names[&sbom.digest], ["example.com/sbom:b"]);
        assert_eq!(names.len(), 2);

        // Deleting the image so named is refused, naming it; nothing is removed.
        let before = read_index_json(tmp.path(), "team/api");
        let err = r.delete_manifest(&rp, &a.digest).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Conflict, "{}", err.message);
        assert!(
            err.message.contains("docker.io/team/api:1.0"),
            "{}",
            err.message
        );
        assert_eq!(read_index_json(tmp.path(), "team/api"), before);
        // A referrer with a name of its own outlives the image it describes.
        r.delete_manifest(&rp, &b.digest).await.unwrap();
        assert!(r
            .head_manifest(&rp, b.digest.as_str())
            .await
            .unwrap()
            .is_none());
        assert_eq!(
            r.other_names(&rp).await.unwrap()[&sbom.digest],
            ["example.com/sbom:b"]
        );
        // Untagging leaves the other name alone.
        r.delete_tag(&rp, &tag("pr-1")).await.unwrap();
        assert_eq!(
            r.other_names(&rp).await.unwrap()[&a.digest],
            ["docker.io/team/api:1.0"]
        );
        assert!(r
            .head_manifest(&rp, a.digest.as_str())
            .await
            .unwrap()
            .is_some());
    }

    #[tokio::test]
    async fn referrers_found_and_deleted_with_subject() {
        let tmp = tempfile::tempdir().unwrap();
        let r = reg(tmp.path());
        let rp = repo("team/api");
        let a = image(&r, &rp, "a").await;
        r.put_manifest(&rp, Some(&tag("1.0")), &a).await.unwrap();
        let sbom = referrer(&r, &rp, &a, "application/vnd.cyclonedx+json").await;
        r.put_manifest(&rp, None, &sbom).await.unwrap();
        let sig = referrer(
            &r,
            &rp,
            &sbom,
            "application/vnd.dev.cosign.artifact.sig.v1+json",
        )
        .await;
        r.put_manifest(&rp, None, &sig).await.unwrap();
        // Untagged referrers are recorded, so not listed as tags.
        assert_eq!(r.list_tags(&rp).await.unwrap(), vec![tag("1.0")]);
        assert_eq!(
            read_index_json(tmp.path(), "team/api")["manifests"]
                .as_array()
                .unwrap()
                .len(),
            3
        );

        let refs = r.referrers(&rp, &a.digest).await.unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].digest, sbom.digest);
        assert_eq!(refs[0].size, sbom.bytes.len() as u64);
        assert_eq!(refs[0].media_type, MediaType::OCI_MANIFEST);
        assert_eq!(
            refs[0].artifact_type.as_deref(),
            Some("application/vnd.cyclonedx+json")
        );
        assert_eq!(
            refs[0].annotations["org.opencontainers.image.created"],
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(
            r.referrers(&rp, &sbom.digest).await.unwrap()[0].digest,
            sig.digest
        );
        assert!(r.referrers(&rp, &sig.digest).await.unwrap().is_empty());

        // Deleting the image takes its referrers (transitively) along.
        r.delete_manifest(&rp, &a.digest).await.unwrap();
        assert!(r.list_tags(&rp).await.unwrap().is_empty());
        assert_eq!(
            read_index_json(tmp.path(), "team/api")["manifests"]
                .as_array()
                .unwrap()
                .len(),
            0
        );
        assert!(r.referrers(&rp, &a.digest).await.unwrap().is_empty());
        for m in [&a, &sbom, &sig] {
            assert!(r
                .head_manifest(&rp, m.digest.as_str())
                .await
                .unwrap()
                .is_none());
        }
        assert!(r
            .delete_manifest(&rp, &a.digest)
            .await
            .unwrap_err()
            .is_not_found());
    }

    #[tokio::test]
    async fn delete_keeps_children_of_remaining_index() {
        let tmp = tempfile::tempdir().unwrap();
        let r = reg(tmp.path());
        let rp = repo("multi");
        let a = image(&r, &rp, "a").await;
        r.put_manifest(&rp, None, &a).await.unwrap();
        assert!(r.list_tags(&rp).await.unwrap().is_empty());
        let idx = serde_json::json!({"schemaVersion": 2, "mediaType": MediaType::OCI_INDEX,
            "manifests": [desc_json(MediaType::OCI_MANIFEST, &a.descriptor())]});
        let idx = Manifest::from_bytes(serde_json::to_vec(&idx).unwrap(), None).unwrap();
        r.put_manifest(&rp, Some(&tag("latest")), &idx)
            .await
            .unwrap();
        assert_eq!(
            r.get_manifest(&rp, "latest")
                .await
                .unwrap()
                .unwrap()
                .media_type,
            MediaType::OCI_INDEX
        );
        // The child is reachable by digest (media type sniffed from the JSON).
        assert_eq!(
            r.get_manifest(&rp, a.digest.as_str())
                .await
                .unwrap()
                .unwrap(),
            a
        );
        // Deleting the child alone leaves it: the index still needs it.
        r.delete_manifest(&rp, &a.digest).await.unwrap();
        assert!(r
            .head_manifest(&rp, a.digest.as_str())
            .await
            .unwrap()
            .is_some());
        r.delete_manifest(&rp, &idx.digest).await.unwrap();
        assert!(r.head_manifest(&rp, "latest").await.unwrap().is_none());
        assert!(r
            .head_manifest(&rp, idx.digest.as_str())
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_tags_all_survive() {
        let tmp = tempfile::tempdir().unwrap();
        let r = Arc::new(reg(tmp.path()));
        let rp = repo("busy");
        let mut manifests = Vec::new();
        for i in 0..20 {
            manifests.push(image(&r, &rp, &format!("m{i}")).await);
        }
        let mut tasks = Vec::new();
        for (i, m) in manifests.into_iter().enumerate() {
            let r = r.clone();
            let rp = rp.clone();
            tasks.push(tokio::spawn(async move {
                r.put_manifest(&rp, Some(&tag(&format!("t{i}"))), &m).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(r.list_tags(&rp).await.unwrap().len(), 20);
        let stray: Vec<_> = std::fs::read_dir(tmp.path().join("busy"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(stray.is_empty());
    }

    #[tokio::test]
    async fn list_repos_nested() {
        let tmp = tempfile::tempdir().unwrap();
        let r = reg(tmp.path());
        for rp in ["mirror/alpine", "mirror", "a/b/c", "zeta"] {
            let rp = repo(rp);
            put(&r, &rp, b"x").await;
        }
        // Not repositories: hidden, no layout, not a valid name.
        std::fs::create_dir_all(tmp.path().join(".cache/x")).unwrap();
        std::fs::write(tmp.path().join(".cache/x/oci-layout"), LAYOUT_CONTENT).unwrap();
        std::fs::create_dir_all(tmp.path().join("empty/dir")).unwrap();
        std::fs::create_dir_all(tmp.path().join("Upper")).unwrap();
        std::fs::write(tmp.path().join("Upper/oci-layout"), LAYOUT_CONTENT).unwrap();
        let got: Vec<String> = r
            .list_repos()
            .await
            .unwrap()
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(got, ["a/b/c", "mirror", "mirror/alpine", "zeta"]);
    }

    #[tokio::test]
    async fn mount_between_repos() {
        let tmp = tempfile::tempdir().unwrap();
        let r = reg(tmp.path());
        let (src, dst) = (repo("src"), repo("dst/x"));
        let d = put(&r, &src, b"shared layer").await.digest;
        assert!(r.mount_blob(&dst, &src, &d).await.unwrap());
        assert_eq!(r.head_blob(&dst, &d).await.unwrap(), Some(12));
        assert!(r.mount_blob(&dst, &src, &d).await.unwrap());
        assert!(!r
            .mount_blob(&dst, &src, &Digest::sha256_of(b"nope"))
            .await
            .unwrap());
        assert!(tmp.path().join("dst/x/oci-layout").is_file());
    }
}
