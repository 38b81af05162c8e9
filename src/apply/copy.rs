//! The copy engine, written once over the registry trait: blobs before
//! manifests, children before their index, everything digest-checked, blobs
//! streamed and never fetched twice in one run.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::{stream, StreamExt, TryStreamExt};
use tokio::sync::{Mutex, OnceCell};

use crate::model::{Digest, RegistryName, Repo, Tag};
use crate::registry::manifest::{filter_index, Parsed};
use crate::registry::{
    BlobStart, Descriptor, ErrorKind, FallbackIndex, Manifest, Registry, RegistryError,
    UploadSession,
};

/// Blobs and children in flight at once within one image.
const PARALLEL: usize = 8;

/// One side of a copy.
#[derive(Clone)]
pub struct Side<'a> {
    pub reg: &'a Arc<dyn Registry>,
    pub repo: &'a Repo,
    /// On a destination: asked before each write (see [`Gate`]).
    pub gate: Option<&'a Gate>,
}

pub use crate::registry::WriteGate as Gate;

impl Side<'_> {
    fn gate(&self) -> Result<(), RegistryError> {
        self.gate.map_or(Ok(()), Gate::peek)
    }
}

impl Side<'_> {
    fn at(&self) -> String {
        format!("{}/{}", self.reg.name(), self.repo)
    }
}

/// Set once a blob has landed at a destination registry: the repo it is in.
type Landing = Arc<OnceCell<Repo>>;

/// Shared state of one apply run.
#[derive(Default)]
pub struct Copier {
    /// Bytes of blobs that landed at a destination (not of failed uploads).
    pub bytes: Arc<AtomicU64>,
    /// Blobs known present at a destination this run: `(registry, repo, digest)`.
    present: Mutex<HashSet<AtDest>>,
    /// Per destination registry and blob: where it first landed this run.
    /// Concurrent copies of one blob wait on one transfer, then mount from it,
    /// so a blob is fetched from the source once per run.
    landed: Mutex<HashMap<(RegistryName, Digest), Landing>>,
    /// Top manifests and referrer lists read from a source this run, by
    /// (registry, repo, digest): a thousand tags on one image read it once.
    read: Mutex<HashMap<SourceKey, Arc<OnceCell<SourceRead>>>>,
    /// Referrers copied whole (with their own referrers) this run, by
    /// destination `(registry, repo, digest)`: the tags of one signed image,
    /// copied at once, each bring its signature, which is read and written
    /// once while the others wait for it.
    referrers_copied: Mutex<HashMap<ReferrerCopy, Arc<OnceCell<()>>>>,
}

/// A source image's top manifest and the referrers of it (first) and, for
/// an index, of each of its manifests, as listed: cosign `--recursive` and
/// per-platform scans attach to the platform manifests.
type SourceRead = (Manifest, Vec<(Digest, crate::registry::ReferrerList)>);

/// Content at a destination: registry, repo, digest.
type AtDest = (RegistryName, Repo, Digest);

/// A referrer copied from a source (registry, repo) to a destination.
type ReferrerCopy = (RegistryName, Repo, AtDest);

/// A source image: registry, repo, digest, and whether its referrers were listed.
type SourceKey = (RegistryName, Repo, Digest, bool);

impl Copier {
    pub fn bytes_copied(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Copies the image `digest` (index children, blobs, and optionally its
    /// referrers) from `src` to `dst`. Returns the manifest as stored at the
    /// destination, and whether it was stored under `tag` already.
    ///
    /// With `tag` given, no platform filter and no referrers to copy, the top
    /// manifest is stored with one PUT under the tag (after everything under
    /// it), saving the PUT by digest; otherwise it is stored by digest and left
    /// untagged.
    pub async fn copy_image(
        &self,
        src: &Side<'_>,
        dst: &Side<'_>,
        digest: &Digest,
        referrers: bool,
        only_platforms: Option<&[String]>,
        tag: Option<(&Tag, Option<&Digest>)>,
    ) -> Result<(Manifest, bool), RegistryError> {
        let cell = self
            .read
            .lock()
            .await
            .entry((
                src.reg.name().clone(),
                src.repo.clone(),
                digest.clone(),
                referrers,
            ))
            .or_default()
            .clone();
        let (m, listed) = cell
            .get_or_try_init(|| async {
                let m = fetch_manifest(src, digest).await?;
                // Referrers are listed first: only an image without any may
                // be put under its tag directly (they must land before it).
                let mut subjects = Vec::new();
                if referrers {
                    subjects.push(digest.clone());
                    if let Ok(Parsed::Index { manifests, .. }) = m.parse() {
                        subjects.extend(manifests.into_iter().map(|c| c.digest));
                    }
                }
                let listed: Vec<_> = stream::iter(subjects)
                    .map(|s| async move {
                        let l = src.reg.referrers_listed(src.repo, &s).await?;
                        Ok::<_, RegistryError>((s, l))
                    })
                    .buffered(PARALLEL)
                    .try_collect()
                    .await?;
                Ok::<_, RegistryError>((m, listed))
            })
            .await?
            .clone();
        let m = match only_platforms {
            Some(wanted) if m.is_index() => {
                let bytes = filter_index(&m.bytes, wanted).ok_or_else(|| {
                    RegistryError::other(format!(
                        "{}@{digest}: no platform matches {}",
                        src.at(),
                        wanted.join(", ")
                    ))
                })?;
                Manifest::from_bytes(bytes, Some(&m.media_type))?
            }
            _ => m,
        };
        // A filtered index is a new manifest: the source's referrers of the
        // full one do not describe it, and those of platform manifests the
        // filter left out have no subject at the target.
        let kept: std::collections::BTreeSet<Digest> = match m.parse() {
            Ok(Parsed::Index { manifests, .. }) => {
                manifests.into_iter().map(|c| c.digest).collect()
            }
            _ => Default::default(),
        };
        let listed: Vec<_> = listed
            .into_iter()
            .filter(|(s, l)| {
                !l.descriptors.is_empty()
                    && ((s == digest && m.digest == *digest) || kept.contains(s))
            })
            .collect();
        let top_tag = tag.filter(|_| listed.is_empty() && only_platforms.is_none());
        let tagged = self.copy_tree(src, dst, m.clone(), top_tag).await?;
        for (subject, list) in listed {
            let copied: std::collections::BTreeSet<Digest> =
                list.descriptors.iter().map(|r| r.digest.clone()).collect();
            self.copy_referrer_list(src, dst, list.descriptors, std::slice::from_ref(&subject))
                .await?;
            self.settle_referrers_tag(src, dst, &subject, &copied, list.fallback)
                .await?;
        }
        Ok((m, tagged))
    }

    /// For a referrers index (`sha256-<hex>` tag): the referrers of each
    /// listed manifest, recursively (signatures of an SBOM it lists).
    pub async fn copy_listed_referrers(
        &self,
        src: &Side<'_>,
        dst: &Side<'_>,
        index: &Manifest,
    ) -> Result<(), RegistryError> {
        if let Ok(Parsed::Index { manifests, .. }) = index.parse() {
            for m in manifests {
                self.copy_referrers(src, dst, std::slice::from_ref(&m.digest))
                    .await?;
            }
        }
        Ok(())
    }

    /// The referrers of the last of `chain` (the subjects above it first).
    async fn copy_referrers(
        &self,
        src: &Side<'_>,
        dst: &Side<'_>,
        chain: &[Digest],
    ) -> Result<(), RegistryError> {
        let Some(subject) = chain.last() else {
            return Ok(());
        };
        let refs = src.reg.referrers(src.repo, subject).await?;
        self.copy_referrer_list(src, dst, refs, chain).await
    }

    /// `refs`, referrers of the last of `chain`, each with its own referrers.
    /// One already in `chain` (a registry listing a subject among its own
    /// referrers' referrers) is not followed again.
    async fn copy_referrer_list(
        &self,
        src: &Side<'_>,
        dst: &Side<'_>,
        refs: Vec<Descriptor>,
        chain: &[Digest],
    ) -> Result<(), RegistryError> {
        for r in refs {
            if chain.contains(&r.digest) {
                continue;
            }
            let key = (
                src.reg.name().clone(),
                src.repo.clone(),
                (dst.reg.name().clone(), dst.repo.clone(), r.digest.clone()),
            );
            let once = self
                .referrers_copied
                .lock()
                .await
                .entry(key)
                .or_default()
                .clone();
            once.get_or_try_init(|| async {
                let m = fetch_manifest(src, &r.digest).await?;
                self.copy_tree(src, dst, m, None).await?;
                // Signatures of signatures follow too.
                let chain: Vec<Digest> = chain.iter().chain([&r.digest]).cloned().collect();
                Box::pin(self.copy_referrers(src, dst, &chain)).await
            })
            .await?;
        }
        Ok(())
    }

    /// Puts `m` and everything under it at `dst`, children first; `m` itself
    /// under `tag` if given, else by digest. Returns whether `m` was put
    /// under `tag` (not when it was already present by digest).
    fn copy_tree<'s>(
        &'s self,
        src: &'s Side<'_>,
        dst: &'s Side<'_>,
        m: Manifest,
        tag: Option<(&'s Tag, Option<&'s Digest>)>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, RegistryError>> + Send + 's>>
    {
        Box::pin(async move {
            // Already there by digest: nothing to copy. A repo this run found
            // missing cannot hold it (or holds it from this run's own copies,
            // whose blobs are in `present`: the PUT below is then idempotent).
            if !dst.reg.known_absent(dst.repo)
                && dst
                    .reg
                    .head_manifest(dst.repo, m.digest.as_str())
                    .await?
                    .is_some()
            {
                return Ok(false);
            }
            match m.parse()? {
                Parsed::Index { manifests, .. } => {
                    stream::iter(manifests)
                        .map(|child| async move {
                            let cm = fetch_manifest(src, &child.digest).await?;
                            self.copy_tree(src, dst, cm, None).await
                        })
                        .buffer_unordered(PARALLEL)
                        .try_collect::<Vec<bool>>()
                        .await?;
                }
                Parsed::Image { config, layers, .. } => {
                    let blobs: Vec<Descriptor> = std::iter::once(config).chain(layers).collect();
                    stream::iter(blobs)
                        .map(|b| self.copy_blob(src, dst, b))
                        .buffer_unordered(PARALLEL)
                        .try_collect::<Vec<()>>()
                        .await?;
                }
            }
            if let Some((t, expect)) = tag {
                if check_tag(dst, t, expect, &m).await? {
                    // Someone put exactly this there meanwhile: no write
                    // (immutable-tag registries refuse even the same one).
                    return Ok(true);
                }
            }
            dst.gate()?;
            dst.reg
                .put_manifest(dst.repo, tag.map(|(t, _)| t), &m)
                .await?;
            Ok(tag.is_some())
        })
    }

    async fn copy_blob(
        &self,
        src: &Side<'_>,
        dst: &Side<'_>,
        b: Descriptor,
    ) -> Result<(), RegistryError> {
        // A foreign layer (Windows base images) is fetched by clients from
        // its `urls`; registries usually do not hold it. Copied when the
        // source has it, else left to its URLs, as skopeo does.
        if !b.urls.is_empty() && src.reg.head_blob(src.repo, &b.digest).await?.is_none() {
            return Ok(());
        }
        let key = (dst.reg.name().clone(), dst.repo.clone(), b.digest.clone());
        if self.present.lock().await.contains(&key) {
            return Ok(());
        }
        let cell = self
            .landed
            .lock()
            .await
            .entry((dst.reg.name().clone(), b.digest.clone()))
            .or_default()
            .clone();
        // The first copy of this blob to this registry in the run: is it
        // there (or can it be mounted from the source repo, same registry)?
        // Else move the bytes. One request decides (`start_blob`).
        let landed_in = cell
            .get_or_try_init(|| async {
                let from = if src.reg.same_registry(dst.reg.as_ref()) {
                    src.repo
                } else {
                    dst.repo
                };
                self.land_blob(src, dst, &b, from).await?;
                Ok::<Repo, RegistryError>(dst.repo.clone())
            })
            .await?;
        // Landed in another repo of this registry this run: mount from there.
        if landed_in != dst.repo {
            self.land_blob(src, dst, &b, landed_in).await?;
        }
        self.present.lock().await.insert(key);
        Ok(())
    }

    /// Makes `b` present at `dst`: already there, mounted from `from`, or
    /// streamed from the source.
    async fn land_blob(
        &self,
        src: &Side<'_>,
        dst: &Side<'_>,
        b: &Descriptor,
        from: &Repo,
    ) -> Result<(), RegistryError> {
        // The first write of a copy (a mount or an upload), usually.
        dst.gate()?;
        match dst.reg.start_blob(b, dst.repo, from).await? {
            BlobStart::Present => Ok(()),
            BlobStart::Upload(session) => self.stream_blob(src, dst, b, session).await,
        }
    }
}

impl Copier {
    /// GET from the source streamed into a PUT at the destination. A stream
    /// cannot be replayed, so a failed transfer (dropped connection, failed
    /// upload) is retried here from a fresh GET, a few times.
    async fn stream_blob(
        &self,
        src: &Side<'_>,
        dst: &Side<'_>,
        b: &Descriptor,
        mut session: Option<UploadSession>,
    ) -> Result<(), RegistryError> {
        const ATTEMPTS: u32 = 3;
        let mut attempt = 1;
        loop {
            let data = match src.reg.get_blob(src.repo, &b.digest).await {
                Ok(d) => d,
                Err(e) => {
                    if let Some(s) = session.take() {
                        dst.reg.cancel_upload(dst.repo, s).await;
                    }
                    return Err(e);
                }
            };
            // Counted per attempt, and into the run's total only once the
            // blob has landed: a failed upload moved nothing that stays.
            let sent = Arc::new(AtomicU64::new(0));
            let counter = sent.clone();
            let counted: crate::registry::BlobStream = Box::pin(data.inspect(move |chunk| {
                if let Ok(c) = chunk {
                    counter.fetch_add(c.len() as u64, Ordering::Relaxed);
                }
            }));
            match dst
                .reg
                .put_blob_in(dst.repo, &b.digest, b.size, counted, session.take())
                .await
            {
                Ok(()) => {
                    self.bytes
                        .fetch_add(sent.load(Ordering::Relaxed), Ordering::Relaxed);
                    return Ok(());
                }
                Err(e)
                    if attempt < ATTEMPTS
                        && matches!(e.kind, ErrorKind::Other | ErrorKind::DigestMismatch) =>
                {
                    tracing::warn!(blob = %b.digest, attempt, "blob copy failed, retrying: {e}");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Compare-and-swap right before a tag write: the tag must still be where
/// the plan found it (`None`: absent), or already on `writing` (then
/// `Ok(true)`: there is nothing to write); else a `Conflict` error.
pub async fn check_tag(
    dst: &Side<'_>,
    tag: &Tag,
    expect: Option<&Digest>,
    writing: &Manifest,
) -> Result<bool, RegistryError> {
    let now = dst
        .reg
        .head_manifest(dst.repo, tag.as_str())
        .await?
        .map(|h| h.digest);
    let writing_digest = &writing.digest;
    if now.as_ref() == Some(writing_digest) {
        return Ok(true);
    }
    if now.as_ref() != expect && !referrers_kept(dst, tag, now.as_ref(), writing).await? {
        let found = now
            .map(|d| d.to_string())
            .unwrap_or_else(|| "absent".into());
        return Err(RegistryError::new(
            ErrorKind::Conflict,
            format!("{}:{tag} changed while copying: now {found}", dst.at()),
        ));
    }
    Ok(false)
}

/// For a referrer tag found changed: whether what it lists now is all in
/// `writing`, so writing loses nothing. Pushing a referrer to a registry
/// without the referrers API updates its `sha256-<hex>` index as it lands
/// (this run's own copies do), so the index seen can be a subset of the
/// source's that is about to replace it.
pub async fn referrers_kept(
    dst: &Side<'_>,
    tag: &Tag,
    now: Option<&Digest>,
    writing: &Manifest,
) -> Result<bool, RegistryError> {
    let Some(now) = now.filter(|_| tag.is_referrer_tag()) else {
        return Ok(false);
    };
    let Some(current) = dst.reg.get_manifest(dst.repo, now.as_str()).await? else {
        return Ok(false);
    };
    Ok(current.entries()?.is_subset(&writing.entries()?))
}

/// After a subject's referrers landed: where the source keeps them under the
/// `sha256-<hex>` tag schema, the target's tag gets the source's index bytes
/// when it lists nothing more (or is absent: a registry with the referrers
/// API makes no such tag), so the next run finds the two tags equal, one
/// HEAD each, rather than two indexes to compare or a tag to add.
impl Copier {
    async fn settle_referrers_tag(
        &self,
        src: &Side<'_>,
        dst: &Side<'_>,
        subject: &Digest,
        copied: &std::collections::BTreeSet<Digest>,
        fallback: FallbackIndex,
    ) -> Result<(), RegistryError> {
        let tag = subject.referrers_tag();
        // The index the list was just read from, if that is where it came from.
        let want = match fallback {
            FallbackIndex::Read(m) => m,
            FallbackIndex::NotRead => src.reg.get_manifest(src.repo, tag.as_str()).await?,
        };
        let Some(want) = want else {
            return Ok(());
        };
        let want_entries = match want.entries() {
            Ok(e) if want.is_index() && copied.iter().all(|d| e.contains(d)) => e,
            _ => return Ok(()), // not the index just copied from (changed since)
        };
        // Entries that are not referrers of this image (stale or
        // hand-written ones, not copied as its referrers) are copied as
        // what they are, so the tag lands as at the source now, not on the
        // next run. One the source does not have leaves the tag as it is.
        for d in want_entries.difference(copied) {
            let m = match fetch_manifest(src, d).await {
                Ok(m) => m,
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e),
            };
            self.copy_tree(src, dst, m, None).await?;
        }
        // Read right before the write: a referrer someone attached at the target
        // meanwhile is not overwritten.
        if let Some(have) = dst.reg.get_manifest(dst.repo, tag.as_str()).await? {
            if have.digest == want.digest || !have.entries()?.is_subset(&want_entries) {
                return Ok(());
            }
        }
        dst.gate()?;
        dst.reg.put_manifest(dst.repo, Some(&tag), &want).await?;
        Ok(())
    }
}

/// Reads a manifest by digest and checks the bytes hash to it.
pub async fn fetch_manifest(src: &Side<'_>, digest: &Digest) -> Result<Manifest, RegistryError> {
    let m = src
        .reg
        .get_manifest(src.repo, digest.as_str())
        .await?
        .ok_or_else(|| RegistryError::not_found(format!("{}@{digest}", src.at())))?;
    if &m.digest != digest {
        return Err(RegistryError::new(
            ErrorKind::DigestMismatch,
            format!(
                "{}@{digest}: the registry served content with digest {}",
                src.at(),
                m.digest
            ),
        ));
    }
    Ok(m)
}
