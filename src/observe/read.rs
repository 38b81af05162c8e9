//! The I/O side of observing: concurrent reads through the registry trait.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::{stream, StreamExt, TryStreamExt};

use super::{Fact, ImageInfo, Observed, ReferrerInfo, RepoState};
use crate::config::Desired;
use crate::model::{Digest, RegistryName, RepoAddr, Tag, Timestamp};
use crate::registry::manifest::Parsed;
use crate::registry::{ManifestHead, Registry, RegistryError};

/// The opened registries, by policy name. A registry that could not be
/// opened maps to the reason, and everything in it is unobserved.
pub type Registries = BTreeMap<RegistryName, Result<Arc<dyn Registry>, String>>;

/// How many reads run at once across one observe pass (each registry's own
/// limit applies on top, inside its backend).
const PARALLEL: usize = 16;

/// Reads what the policy needs from the registries.
pub async fn observe(desired: &Desired, registries: &Registries, now: Timestamp) -> Observed {
    let mut needs = crate::plan::needs(desired);
    let mut observed = Observed::default();
    // Hosts first: retention must know what they run before deleting anything.
    if !desired.hosts.is_empty() {
        let hosts = crate::host::Hosts::open(desired, None).await;
        observed.hosts = super::observe_hosts(&hosts).await;
    }

    // Catalogs next: wildcard retention globs expand through them.
    for name in &needs.catalogs {
        let fact = match registries.get(name) {
            Some(Ok(reg)) => match reg.list_repos().await {
                Ok(repos) => Fact::Known(repos),
                Err(e) => Fact::Unknown {
                    reason: format!("catalog: {e}"),
                },
            },
            Some(Err(reason)) => Fact::Unknown {
                reason: reason.clone(),
            },
            None => Fact::Unknown {
                reason: format!("registry `{name}` is not defined"),
            },
        };
        observed.catalogs.insert(name.clone(), fact);
    }
    for rule in &desired.retention {
        let (repos, _) = crate::plan::retention_repos(rule, &observed);
        needs.created_of_all_tags.extend(repos.iter().cloned());
        needs.repos.extend(repos);
    }

    // Whether each source registry indexes referrers itself (the OCI 1.1
    // API), asked once while the tags are read rather than after them: the
    // plan asks it of every image already copied.
    let probes =
        futures_util::future::join_all(referrer_sources(desired).into_iter().filter_map(|from| {
            let reg = registries.get(&from.registry)?.as_ref().ok()?.clone();
            Some(async move {
                // Any digest will do: a registry with the API answers an
                // empty list, one without has no such route.
                let _ = reg.referrers_api(&from.repo, &Digest::sha256_of(b"")).await;
            })
        }));
    let mut cache = super::cache::HeadCache::load(desired);
    let (repo_reads, _) = futures_util::join!(
        read_repos_hinted(registries, needs.repos.iter().cloned(), &mut cache),
        probes
    );
    observed.repos.extend(repo_reads);
    read_orphans(desired, registries, &mut observed).await;

    // Creation times of every tag where selectors order by them, and digests the policy names.
    let mut want: Vec<(RepoAddr, Digest)> = Vec::new();
    for repo in &needs.created_of_all_tags {
        if let Some(Fact::Known(s)) = observed.repos.get(repo) {
            want.extend(s.tags.values().map(|d| (repo.clone(), d.clone())));
        }
    }
    want.extend(needs.digests.iter().cloned());
    read_details(registries, &mut observed, want).await;

    // Then the details the plan will look at, now that tags are known.
    // `wanted` runs every rule once (as long as planning itself), so it is
    // asked again only after something was read; asked of the same facts it
    // would answer the same.
    let mut w = crate::plan::wanted(desired, &observed, now);
    let mut read_any = !w.details.is_empty() || !w.indexes.is_empty();
    read_details(registries, &mut observed, std::mem::take(&mut w.details)).await;
    read_indexes(registries, &mut observed, std::mem::take(&mut w.indexes)).await;

    // Scan reports of the candidates that vulnerability gates judge. A
    // promotion fed by another (`staging → prod` after `dev → staging`)
    // only sees its candidates once the first one's gates could be judged:
    // a few more rounds, each reading only what is new.
    for _ in 0..3 {
        if read_any {
            w = crate::plan::wanted(desired, &observed, now);
        }
        let details: Vec<_> = std::mem::take(&mut w.details)
            .into_iter()
            .filter(|k| !observed.images.contains_key(k))
            .collect();
        let reports: Vec<_> = std::mem::take(&mut w.reports)
            .into_iter()
            .filter(|k| !observed.reports.contains_key(k))
            .collect();
        let indexes: Vec<_> = std::mem::take(&mut w.indexes)
            .into_iter()
            .filter(|k| !observed.indexes.contains_key(k))
            .collect();
        read_any = !(details.is_empty() && reports.is_empty() && indexes.is_empty());
        if !read_any {
            break;
        }
        read_details(registries, &mut observed, details).await;
        read_indexes(registries, &mut observed, indexes).await;
        read_reports(registries, &mut observed, reports).await;
    }

    // Referrer tags of what the rules keep in sync (one HEAD each, like any
    // tag), then, only where the sides differ, what each lists.
    // Images already copied also get the referrers their source registry
    // indexes itself (one request each where it has the referrers API; one
    // in all where it has not).
    if read_any {
        w = crate::plan::wanted(desired, &observed, now);
    }
    let (tags, api) = (
        std::mem::take(&mut w.referrer_tags),
        std::mem::take(&mut w.api_referrers),
    );
    if !tags.is_empty() || !api.is_empty() {
        read_referrer_tags(registries, &mut observed, tags).await;
        read_api_referrers(registries, &mut observed, api).await;
        w = crate::plan::wanted(desired, &observed, now);
    }
    read_referrer_entries(registries, &mut observed, w.referrer_entries).await;
    read_listed_referrers(registries, &mut observed, w.listed_referrers).await;
    observed
}

/// One source repo per registry that rules follow referrers from.
fn referrer_sources(desired: &Desired) -> Vec<RepoAddr> {
    let mut by_registry: BTreeMap<&RegistryName, &RepoAddr> = BTreeMap::new();
    let froms = desired
        .mirrors
        .iter()
        .filter(|m| m.referrers)
        .map(|m| &m.from)
        .chain(desired.promotions.iter().map(|p| &p.from));
    for from in froms {
        by_registry.entry(&from.registry).or_insert(from);
    }
    by_registry.into_values().cloned().collect()
}

async fn read_api_referrers(
    registries: &Registries,
    observed: &mut Observed,
    want: Vec<(RepoAddr, Digest)>,
) {
    let got = read_each(registries, want, |reg, repo, digest| async move {
        let list = reg
            .referrers_api(&repo.repo, &digest)
            .await
            .map_err(|e| e.to_string())?;
        Ok(list.map(|l| {
            l.into_iter()
                .map(|d| super::ReferrerInfo {
                    digest: d.digest,
                    artifact_type: d.artifact_type.unwrap_or_default(),
                })
                .collect()
        }))
    })
    .await;
    observed.api_referrers.extend(got);
}

async fn read_listed_referrers(
    registries: &Registries,
    observed: &mut Observed,
    want: Vec<(RepoAddr, Digest)>,
) {
    let got = read_each(registries, want, |reg, repo, digest| async move {
        match reg.referrers(&repo.repo, &digest).await {
            Ok(l) => Ok(l.into_iter().map(|d| d.digest).collect()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    observed.listed_referrers.extend(got);
}

/// Orders reads round-robin over the registries they go to. Sorted input
/// would otherwise fill the `PARALLEL` window with one registry's reads while
/// the next registry idles (a mirror's source and target then take turns
/// instead of working at once).
fn across_registries<T>(
    items: impl IntoIterator<Item = T>,
    repo_of: impl Fn(&T) -> &RepoAddr,
) -> Vec<T> {
    let mut queues: BTreeMap<RegistryName, std::collections::VecDeque<T>> = BTreeMap::new();
    for item in items {
        let registry = repo_of(&item).registry.clone();
        queues.entry(registry).or_default().push_back(item);
    }
    let mut out = Vec::new();
    while !queues.is_empty() {
        queues.retain(|_, q| match q.pop_front() {
            Some(item) => {
                out.push(item);
                true
            }
            None => false,
        });
    }
    out
}

/// Reads one fact per `(repo, key)`, a few at a time, through the repo's
/// registry; a registry that could not be opened makes each fact unknown.
async fn read_each<K, T, F, Fut>(
    registries: &Registries,
    want: Vec<(RepoAddr, K)>,
    read: F,
) -> Vec<((RepoAddr, K), Fact<T>)>
where
    F: Fn(Arc<dyn Registry>, RepoAddr, K) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
    K: Clone,
{
    stream::iter(across_registries(want, |(repo, _)| repo))
        .map(|(repo, key)| {
            let read = &read;
            async move {
                let fact = match registries.get(&repo.registry) {
                    Some(Ok(reg)) => match read(reg.clone(), repo.clone(), key.clone()).await {
                        Ok(t) => Fact::Known(t),
                        Err(reason) => Fact::Unknown { reason },
                    },
                    Some(Err(reason)) => Fact::Unknown {
                        reason: reason.clone(),
                    },
                    None => Fact::Unknown {
                        reason: format!("registry `{}` is not defined", repo.registry),
                    },
                };
                ((repo, key), fact)
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await
}

async fn read_referrer_tags(
    registries: &Registries,
    observed: &mut Observed,
    want: Vec<(RepoAddr, crate::model::Tag)>,
) {
    let got = read_each(registries, want, |reg, repo, tag| async move {
        match reg.head_manifest(&repo.repo, tag.as_str()).await {
            Ok(Some(h)) => Ok(h.digest),
            // Listed a moment ago, gone now: nothing to compare.
            Ok(None) => Err(format!("{repo}:{tag} vanished while being read")),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    observed.referrer_tags.extend(got);
}

async fn read_referrer_entries(
    registries: &Registries,
    observed: &mut Observed,
    want: Vec<(RepoAddr, Digest)>,
) {
    let got = read_each(registries, want, |reg, repo, digest| async move {
        match reg.get_manifest(&repo.repo, digest.as_str()).await {
            Ok(Some(m)) if m.digest == digest => m.entries().map_err(|e| e.to_string()),
            Ok(Some(m)) => Err(format!(
                "{repo}@{digest}: the registry served content with digest {}",
                m.digest
            )),
            Ok(None) => Err(format!("{repo}@{digest} vanished while being read")),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    observed.referrer_entries.extend(got);
}

pub(crate) async fn read_reports(
    registries: &Registries,
    observed: &mut Observed,
    want: Vec<(RepoAddr, Digest)>,
) {
    let got = read_each(registries, want, |reg, repo, digest| async move {
        read_report(reg.as_ref(), &repo, &digest).await
    })
    .await;
    observed.reports.extend(got);
}

/// A scan-report referrer: its manifest, then every layer (the report
/// itself), digest-verified and parsed. A report without its own time takes
/// the referrer's `org.opencontainers.image.created` annotation.
async fn read_report(
    reg: &dyn Registry,
    repo: &RepoAddr,
    digest: &Digest,
) -> Result<Vec<crate::scan::Report>, String> {
    let m = reg
        .get_manifest(&repo.repo, digest.as_str())
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("report {} is gone", digest.short()))?;
    let (layers, annotations) = match m.parse().map_err(|e| e.to_string())? {
        Parsed::Image {
            layers,
            annotations,
            ..
        } => (layers, annotations),
        Parsed::Index { .. } => {
            return Err(format!(
                "report {} is an index, not an artifact",
                digest.short()
            ))
        }
    };
    let annotated = annotations
        .get("org.opencontainers.image.created")
        .and_then(|s| Timestamp::parse_created(s));
    if layers.is_empty() {
        return Err(format!("report {} has no layers", digest.short()));
    }
    let mut out = Vec::new();
    for layer in &layers {
        if layer.size > crate::scan::MAX_REPORT_BYTES as u64 {
            return Err(format!(
                "report {} is larger than {} MiB",
                digest.short(),
                crate::scan::MAX_REPORT_BYTES >> 20
            ));
        }
        let bytes = read_blob_max(reg, repo, &layer.digest, crate::scan::MAX_REPORT_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        if !digest_matches(&bytes, &layer.digest) {
            return Err(format!(
                "report {}: blob {} does not match its digest",
                digest.short(),
                layer.digest.short()
            ));
        }
        let parsed =
            crate::scan::parse(&bytes).map_err(|e| format!("report {}: {e}", digest.short()))?;
        out.extend(parsed.into_iter().map(|mut r| {
            r.created = r.created.or(annotated);
            r
        }));
    }
    Ok(out)
}

/// The manifests under `want`, for their index bytes alone: one GET each
/// (a filtered mirror computes its filtered index from them), where
/// [`image_info`] would also read every child manifest and config, and on a
/// registry that counts manifest GETs as pulls, count each of them.
async fn read_indexes(
    registries: &Registries,
    observed: &mut Observed,
    mut want: Vec<(RepoAddr, Digest)>,
) {
    want.sort();
    want.dedup();
    want.retain(|k| !observed.images.contains_key(k) && !observed.indexes.contains_key(k));
    let got = read_each(registries, want, |reg, repo, digest| async move {
        let m = reg
            .get_manifest(&repo.repo, digest.as_str())
            .await
            .map_err(|e| e.to_string())?;
        let Some(m) = m else { return Ok(None) };
        if m.digest != digest {
            return Err(format!(
                "{repo}@{digest}: the registry served content with digest {}",
                m.digest
            ));
        }
        Ok(Some(match m.parse().map_err(|e| e.to_string())? {
            Parsed::Index { .. } => Some(
                String::from_utf8(m.bytes.to_vec())
                    .map_err(|_| format!("{repo}@{digest}: the index is not UTF-8 JSON"))?,
            ),
            Parsed::Image { .. } => None,
        }))
    })
    .await;
    for (k, f) in got {
        match f {
            Fact::Known(Some(bytes)) => {
                observed.indexes.insert(k, Fact::Known(bytes));
            }
            // Gone since its tag was read: not read, as for image details.
            Fact::Known(None) => {}
            Fact::Unknown { reason } => {
                observed.indexes.insert(k, Fact::Unknown { reason });
            }
        }
    }
}

pub(crate) async fn read_details(
    registries: &Registries,
    observed: &mut Observed,
    mut want: Vec<(RepoAddr, Digest)>,
) {
    want.sort();
    want.dedup();
    want.retain(|k| !observed.images.contains_key(k));
    let got = stream::iter(across_registries(want, |(repo, _)| repo))
        .map(|(repo, digest)| async move {
            let fact = match registries.get(&repo.registry) {
                Some(Ok(reg)) => match image_info(reg.as_ref(), &repo, &digest).await {
                    Ok(Some(i)) => Some(Fact::Known(i)),
                    Ok(None) => None,
                    Err(e) => Some(Fact::Unknown {
                        reason: e.to_string(),
                    }),
                },
                _ => None,
            };
            ((repo, digest), fact)
        })
        .buffer_unordered(PARALLEL)
        .collect::<Vec<_>>()
        .await;
    for (k, f) in got {
        if let Some(f) = f {
            observed.images.insert(k, f);
        }
    }
}

/// [`read_repo_heads`] of each repo, a few at a time across the registries.
pub async fn read_repos(
    registries: &Registries,
    repos: impl IntoIterator<Item = RepoAddr>,
) -> Vec<(RepoAddr, Fact<RepoState>)> {
    read_repos_hinted(registries, repos, &mut super::cache::HeadCache::default()).await
}

/// [`read_repos`], each tag's HEAD conditional on what `cache` says it held
/// last time; what was read then goes back into the cache.
pub(crate) async fn read_repos_hinted(
    registries: &Registries,
    repos: impl IntoIterator<Item = RepoAddr>,
    cache: &mut super::cache::HeadCache,
) -> Vec<(RepoAddr, Fact<RepoState>)> {
    let hints = &*cache;
    let want = repos.into_iter().map(|r| (r, ())).collect();
    let reads = read_each(registries, want, |reg, repo, ()| async move {
        read_repo_hinted(reg.as_ref(), &repo, hints.hints(&repo))
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    cache.save(reads.iter().filter_map(|((repo, ()), fact)| {
        let (state, heads) = fact.known()?;
        Some((repo, (!state.missing).then_some(heads)))
    }));
    reads
        .into_iter()
        .map(|((repo, ()), fact)| {
            let fact = match fact {
                Fact::Known((state, _)) => Fact::Known(state),
                Fact::Unknown { reason } => Fact::Unknown { reason },
            };
            (repo, fact)
        })
        .collect()
}

/// Whole reads of a repo tried while its tag list names a tag whose
/// manifest is not found (a delete in progress answers so for a moment).
const REPO_READS: u32 = 3;
/// First wait before reading such a repo again (grows with each read).
const REREAD_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// Tags and their digests: one tag list, then one manifest HEAD per tag.
/// A listed tag whose manifest is not found makes the read an error (after
/// reading again a few times): that is unknown, never "the tag is gone" (a
/// mirror would prune it, a delete would miss that it holds an image).
/// Each tag's HEAD is kept besides its digest (its media type tells an index
/// from an image without reading it).
pub async fn read_repo_heads(
    reg: &dyn Registry,
    repo: &RepoAddr,
) -> Result<(RepoState, BTreeMap<Tag, ManifestHead>), RegistryError> {
    read_repo_hinted(reg, repo, None).await
}

/// [`read_repo_heads`] with what each tag held last time, to ask conditionally.
async fn read_repo_hinted(
    reg: &dyn Registry,
    repo: &RepoAddr,
    hints: Option<&BTreeMap<Tag, ManifestHead>>,
) -> Result<RepoRead, RegistryError> {
    let mut attempt = 1;
    loop {
        let vanished = match read_repo_once(reg, repo, hints).await? {
            Ok(read) => return Ok(read),
            Err(vanished) => vanished,
        };
        let names = vanished
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if attempt >= REPO_READS {
            let (is, its) = if vanished.len() == 1 {
                ("is", "its manifest is")
            } else {
                ("are", "their manifests are")
            };
            return Err(RegistryError::other(format!(
                "{repo}: tag {names} {is} in the tag list but {its} not found (read {REPO_READS} times; the registry is mid-change or inconsistent)"
            )));
        }
        tracing::debug!(%repo, tags = %names, attempt, "listed tags not found; reading the repo again");
        tokio::time::sleep(REREAD_WAIT * attempt).await;
        attempt += 1;
    }
}

/// What one whole read of a repo gives: its state and each tag's HEAD.
type RepoRead = (RepoState, BTreeMap<Tag, ManifestHead>);

/// One [`read_repo_heads`]: the read, or the listed tags whose manifest was not found.
async fn read_repo_once(
    reg: &dyn Registry,
    repo: &RepoAddr,
    hints: Option<&BTreeMap<Tag, ManifestHead>>,
) -> Result<Result<RepoRead, Vec<Tag>>, RegistryError> {
    let listed = reg.list_tags_if_exists(&repo.repo).await?;
    let missing = listed.is_none();
    let (referrer_tags, tags): (Vec<_>, Vec<_>) = listed
        .unwrap_or_default()
        .into_iter()
        .partition(|t| t.is_referrer_tag());
    let heads = stream::iter(tags)
        .map(|tag| async move {
            let known = hints.and_then(|h| h.get(&tag));
            let head = reg
                .head_manifest_known(&repo.repo, tag.as_str(), known)
                .await?;
            Ok::<_, RegistryError>((tag, head))
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<_>>()
        .await?;
    let mut vanished: Vec<Tag> = heads
        .iter()
        .filter(|(_, d)| d.is_none())
        .map(|(t, _)| t.clone())
        .collect();
    if !vanished.is_empty() {
        vanished.sort();
        return Ok(Err(vanished));
    }
    let other_names = if missing {
        BTreeMap::new()
    } else {
        reg.other_names(&repo.repo).await?
    };
    let heads: BTreeMap<Tag, ManifestHead> = heads
        .into_iter()
        .filter_map(|(t, h)| Some((t, h?)))
        .collect();
    let state = RepoState {
        tags: heads
            .iter()
            .map(|(t, h)| (t.clone(), h.digest.clone()))
            .collect(),
        referrer_tags: referrer_tags.into_iter().collect(),
        missing,
        other_names,
        single_images: heads
            .values()
            .filter(|h| {
                h.media_type == crate::registry::manifest::MediaType::OCI_MANIFEST
                    || h.media_type == crate::registry::manifest::MediaType::DOCKER_MANIFEST
            })
            .map(|h| h.digest.clone())
            .collect(),
    };
    Ok(Ok((state, heads)))
}

/// Small JSON blobs (configs) are read whole, up to this size.
const MAX_CONFIG: usize = 4 << 20;

pub async fn read_small_blob(
    reg: &dyn Registry,
    repo: &RepoAddr,
    digest: &Digest,
) -> Result<Vec<u8>, RegistryError> {
    read_blob_max(reg, repo, digest, MAX_CONFIG).await
}

async fn read_blob_max(
    reg: &dyn Registry,
    repo: &RepoAddr,
    digest: &Digest,
    max: usize,
) -> Result<Vec<u8>, RegistryError> {
    let mut s = reg.get_blob(&repo.repo, digest).await?;
    let mut buf = Vec::new();
    while let Some(chunk) = s.next().await {
        let chunk = chunk
            .map_err(|e| RegistryError::other(format!("{repo}: reading blob {digest}: {e}")))?;
        buf.extend_from_slice(&chunk);
        if buf.len() > max {
            return Err(RegistryError::other(format!(
                "{repo}: blob {digest} is larger than {max} bytes"
            )));
        }
    }
    Ok(buf)
}

fn digest_matches(bytes: &[u8], d: &Digest) -> bool {
    use sha2::Digest as _;
    match d.algorithm() {
        "sha512" => hex::encode(sha2::Sha512::digest(bytes)) == d.hex(),
        _ => Digest::sha256_of(bytes) == *d,
    }
}

/// Config labels overlaid with the manifest's annotations.
fn labels_of(config: &[u8], annotations: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = serde_json::from_slice::<serde_json::Value>(config)
        .ok()
        .and_then(|v| v.get("config")?.get("Labels")?.as_object().cloned())
        .map(|m| {
            m.into_iter()
                .filter_map(|(k, v)| Some((k, v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    out.extend(annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// The base-image annotation, else the config label of the same name. An
/// empty one (buildah writes `""` when it built from scratch) is none.
fn base_of(config: &[u8], annotations: &BTreeMap<String, String>) -> Option<String> {
    if let Some(b) = annotations.get(super::BASE_NAME).and_then(|b| named(b)) {
        return Some(b);
    }
    let v: serde_json::Value = serde_json::from_slice(config).ok()?;
    v.get("config")?
        .get("Labels")?
        .get(super::BASE_NAME)?
        .as_str()
        .and_then(named)
}

/// A base-image name, unless it is blank.
pub(crate) fn named(b: &str) -> Option<String> {
    let b = b.trim();
    (!b.is_empty()).then(|| b.to_string())
}

fn created_of(config: &[u8], annotations: &BTreeMap<String, String>) -> Option<Timestamp> {
    let v: serde_json::Value = serde_json::from_slice(config).ok()?;
    v.get("created")
        .and_then(|c| c.as_str())
        .and_then(image_time)
        .or_else(|| {
            annotations
                .get("org.opencontainers.image.created")
                .and_then(|s| image_time(s))
        })
}

/// An image's creation time. Reproducible builds (ko, Bazel, Nix, Jib, `SOURCE_DATE_EPOCH=0`)
/// write the Unix epoch, a second after it or year 1 there: that is no age at all, so it is
/// unknown (see [`Timestamp::as_created`]).
fn image_time(s: &str) -> Option<Timestamp> {
    Timestamp::parse_created(s)
}

/// Reads an image's creation time, platforms, size and referrers; `None` if absent.
pub async fn image_info(
    reg: &dyn Registry,
    repo: &RepoAddr,
    digest: &Digest,
) -> Result<Option<ImageInfo>, RegistryError> {
    let Some(m) = reg.get_manifest(&repo.repo, digest.as_str()).await? else {
        return Ok(None);
    };
    let mut info = ImageInfo {
        media_type: m.media_type.clone(),
        size: m.bytes.len() as u64,
        ..Default::default()
    };
    match m.parse()? {
        Parsed::Image {
            config,
            layers,
            annotations,
            artifact_type,
            ..
        } => {
            info.artifact_type = artifact_type;
            info.size += config.size + layers.iter().map(|l| l.size).sum::<u64>();
            let cfg = read_small_blob(reg, repo, &config.digest).await?;
            info.created = created_of(&cfg, &annotations);
            info.base_name = base_of(&cfg, &annotations);
            info.labels = labels_of(&cfg, &annotations);
        }
        Parsed::Index {
            manifests,
            annotations,
            ..
        } => {
            info.index_manifest = String::from_utf8(m.bytes.to_vec()).ok();
            info.created = annotations
                .get("org.opencontainers.image.created")
                .and_then(|s| image_time(s));
            info.base_name = annotations.get(super::BASE_NAME).and_then(|b| named(b));
            let index_annotations = annotations;
            for child in &manifests {
                if let Some(p) = &child.platform {
                    info.platforms.push(p.to_string());
                }
                info.size += child.size;
                let Some(cm) = reg.get_manifest(&repo.repo, child.digest.as_str()).await? else {
                    continue;
                };
                if let Ok(Parsed::Image {
                    config,
                    layers,
                    annotations,
                    ..
                }) = cm.parse()
                {
                    info.size += config.size + layers.iter().map(|l| l.size).sum::<u64>();
                    if info.created.is_none() || child.platform.is_some() {
                        let cfg = read_small_blob(reg, repo, &config.digest).await?;
                        let c = created_of(&cfg, &annotations);
                        info.created = info.created.max(c);
                        if info.base_name.is_none() {
                            info.base_name = base_of(&cfg, &annotations);
                        }
                        if info.labels.is_empty() {
                            info.labels = labels_of(&cfg, &annotations);
                            info.labels.extend(index_annotations.clone());
                        }
                    }
                }
            }
            if info.labels.is_empty() {
                info.labels = index_annotations;
            }
        }
    }
    info.referrers = reg
        .referrers(&repo.repo, digest)
        .await?
        .into_iter()
        .map(|d| ReferrerInfo {
            artifact_type: d.artifact_type.clone().unwrap_or(d.media_type.clone()),
            digest: d.digest,
        })
        .collect();
    // Labels and annotations are whoever built the image's words: they reach
    // terminals and PR comments, so no control characters (a label could
    // retitle a terminal, erase a line and print "No changes." over it).
    info.base_name = info.base_name.as_deref().map(printable);
    info.labels = std::mem::take(&mut info.labels)
        .into_iter()
        .map(|(k, v)| (printable(&k), printable(&v)))
        .collect();
    for r in &mut info.referrers {
        r.artifact_type = printable(&r.artifact_type);
    }
    Ok(Some(info))
}

/// `s` with control characters written as escapes (`\u{1b}`), so text from
/// registries prints as text, and invisible ones too (a label with a
/// bidirectional override displays reversed), except the zero-width joiner
/// emoji are made of.
pub fn printable(s: &str) -> String {
    escaped(s, |c| {
        c.is_control() || (is_invisible(c) && c != '\u{200D}')
    })
}

/// Characters that change how text around them reads without showing:
/// bidirectional overrides and isolates (text can display reversed),
/// zero-width ones (two names can look the same).
pub fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// `s` with the characters `hide` picks written as `\u{…}` escapes.
pub fn escaped(s: &str, hide: impl Fn(char) -> bool) -> String {
    if !s.chars().any(&hide) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if hide(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// For retention rules with `untagged_referrers`: referrer tags whose subject
/// is neither tagged nor present any more. A read that fails leaves the tag
/// out (unknown is never "gone").
async fn read_orphans(desired: &Desired, registries: &Registries, observed: &mut Observed) {
    let repos: std::collections::BTreeSet<RepoAddr> = desired
        .retention
        .iter()
        .filter(|r| r.delete.untagged_referrers == Some(true))
        .flat_map(|r| crate::plan::retention_repos(r, observed).0)
        .collect();
    for repo in repos {
        let (Some(Fact::Known(state)), Some(Ok(reg))) =
            (observed.repos.get(&repo), registries.get(&repo.registry))
        else {
            continue;
        };
        let tagged: std::collections::BTreeSet<&Digest> = state.tags.values().collect();
        let mut found = Vec::new();
        for tag in &state.referrer_tags {
            let Some(subject) = tag.referrer_subject() else {
                continue;
            };
            if tagged.contains(&subject) {
                continue;
            }
            if !matches!(
                reg.head_manifest(&repo.repo, subject.as_str()).await,
                Ok(None)
            ) {
                continue;
            }
            if let Ok(Some(h)) = reg.head_manifest(&repo.repo, tag.as_str()).await {
                found.push(super::Orphan {
                    tag: tag.clone(),
                    digest: h.digest,
                    subject,
                });
            }
        }
        if !found.is_empty() {
            observed.orphans.insert(repo, found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::BASE_NAME;

    #[test]
    fn a_blank_base_name_is_no_base_name() {
        let label = |v: &str| format!(r#"{{"config":{{"Labels":{{"{BASE_NAME}":"{v}"}}}}}}"#);
        let ann = |v: &str| BTreeMap::from([(BASE_NAME.to_string(), v.to_string())]);
        let none = BTreeMap::new();
        // buildah from scratch: `""` in both places.
        assert_eq!(base_of(label("").as_bytes(), &ann("")), None);
        assert_eq!(base_of(label(" ").as_bytes(), &none), None);
        // A blank annotation does not hide the label.
        assert_eq!(
            base_of(label("debian:12").as_bytes(), &ann("")).as_deref(),
            Some("debian:12")
        );
        assert_eq!(
            base_of(b"{}", &ann("docker.io/library/alpine:3.19")).as_deref(),
            Some("docker.io/library/alpine:3.19")
        );
    }

    #[test]
    fn labels_cannot_display_reversed() {
        // `gnp.exe` after a right-to-left override shows as `exe.png`.
        assert_eq!(printable(":+1: \u{202E}gnp.exe"), r":+1: \u{202e}gnp.exe");
        assert_eq!(printable("a\u{200B}b"), r"a\u{200b}b");
        // Emoji joined by a zero-width joiner stay emoji.
        assert_eq!(printable("👩\u{200D}💻"), "👩\u{200D}💻");
    }

    #[test]
    fn labels_print_as_text_not_terminal_commands() {
        let evil = "x\u{1b}]0;pwned\u{7}\u{1b}[2K\rFAKE: No changes.\nnext";
        let shown = printable(evil);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert_eq!(
            shown,
            r"x\u{1b}]0;pwned\u{7}\u{1b}[2K\u{d}FAKE: No changes.\u{a}next"
        );
        assert_eq!(printable("debian:12 é"), "debian:12 é");
    }

    #[test]
    fn reads_alternate_between_registries() {
        let repos: Vec<RepoAddr> = ["dst/a", "dst/b", "dst/c", "src/a", "src/b", "zz/a"]
            .iter()
            .map(|s| s.parse().expect("repo address"))
            .collect();
        let order: Vec<String> = across_registries(repos, |r| r)
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(order, ["dst/a", "src/a", "zz/a", "dst/b", "src/b", "dst/c"]);
    }
}
