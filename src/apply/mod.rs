//! The executor: applies a plan's changes in the fixed safe order, each one
//! after a compare-and-swap re-read of its target.

pub mod copy;
mod hosts;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::{Mutex, OnceCell};

use crate::model::{Digest, ImageRef, Reference, RegistryName, Repo, Tag};
use crate::observe::Registries;
use crate::plan::{order, Action, Change, Plan};
use crate::registry::{Descriptor, ManifestHead, MediaType, Registry, RegistryError};

use copy::{Copier, Side};

/// How one change ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// The target was already in the desired state.
    AlreadyDone,
    /// The target was not as the plan expected: nothing done.
    Stale(String),
    Failed(String),
    /// A stop was requested before the change wrote anything: it was left
    /// out (not in the report; the next plan has it again).
    NotStarted,
}

/// Told about each change as it happens (progress bar or log lines).
pub trait Reporter: Send + Sync {
    fn started(&self, _change: &Change) {}
    fn finished(&self, change: &Change, outcome: &Outcome, bytes_total: u64);
    /// When true, no further change is started: one that has not written
    /// anything yet (still reading, or waiting for a registry's
    /// `concurrency`) stops before its first write; one that has begun
    /// writing finishes, so a stopping daemon never leaves a tag half-done.
    fn stop_requested(&self) -> bool {
        false
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub done: usize,
    pub already: usize,
    pub stale: usize,
    pub failed: usize,
    pub bytes: u64,
    pub outcomes: Vec<(Change, Outcome)>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.stale == 0 && self.failed == 0
    }
}

/// Changes in flight at once within one phase.
const CHANGES_IN_FLIGHT: usize = 16;
/// Deletions in flight at once: many, so that those of one repo share its
/// fresh reads ([`RepoReads`]); each is a few requests, and every request
/// still waits for the registry's own `concurrency` limit. A tag put on a
/// digest while its deletion waits is caught by the last look right before
/// the delete ([`tagged_since`]). Measured on 1,000 deletions among 2,000
/// tags: 256 took 43 s and 34k requests, 64 took 73 s and 86k.
const DELETES_IN_FLIGHT: usize = 256;

/// Applies the plan's changes phase by phase in the fixed order (copies,
/// retags, …, deletions); changes within a phase run concurrently.
pub async fn apply(
    plan: &Plan,
    registries: &Registries,
    hosts: &crate::host::Hosts,
    reporter: &dyn Reporter,
) -> Report {
    let copier = Copier::default();
    let indexes = IndexChildren::default();
    let reads = RepoReads::default();
    // Within an action, referrer tags come after the images they refer to:
    // the images' own referrer pushes land first, and the tag then settles
    // on the source's bytes.
    let mut phases: std::collections::BTreeMap<(u8, bool, u32), Vec<&Change>> =
        std::collections::BTreeMap::new();
    let putting = putters(&plan.changes);
    for (c, key) in plan.changes.iter().zip(phase_keys(&plan.changes, &putting)) {
        phases.entry(key).or_default().push(c);
    }
    let mut report = Report::default();
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut host_use: Option<HostUse> = None;
    for ((action_order, _, _), phase) in phases {
        // Before the first registry deletion, once: what the managed hosts'
        // containers use now (one may have started on an image since the plan).
        if host_use.is_none() && phase.iter().any(|c| c.action.deletes_from_registry()) {
            host_use = Some(hosts.used_digests().await);
        }
        let in_flight = if action_order == order(Action::Delete) {
            DELETES_IN_FLIGHT
        } else {
            CHANGES_IN_FLIGHT
        };
        // Prerequisites ran in an earlier wave: their outcomes are in.
        let landed: HashMap<&str, &Outcome> = report
            .outcomes
            .iter()
            .filter(|(p, _)| matches!(p.action, Action::Copy | Action::Retag))
            .map(|(p, o)| (p.target.as_str(), o))
            .collect();
        let phase: Vec<(&Change, Option<Outcome>)> = phase
            .into_iter()
            .map(|c| (c, unmet_after(c, &putting, &landed)))
            .collect();
        let mut done = futures_util::stream::iter(phase)
            // Checked as each change is pulled in (`in_flight` at once, so
            // those pulled also check before their first write, see
            // `Cx::stopping`); the rest are left out of the report (not
            // done, not failed).
            .take_while(|_| std::future::ready(!reporter.stop_requested()))
            .map(|(c, unmet)| {
                let gate = Arc::new(copy::Gate::new(stopping.clone()));
                let (copier, indexes, reads, host_use) =
                    (&copier, &indexes, &reads, host_use.as_ref());
                async move {
                    if let Some(outcome) = unmet {
                        return (c, outcome);
                    }
                    reporter.started(c);
                    let cx = Cx {
                        copier,
                        indexes,
                        reads,
                        host_use,
                        reporter,
                        gate: &gate,
                    };
                    let outcome = crate::registry::WRITE_GATE
                        .scope(gate.clone(), apply_one(c, registries, hosts, cx))
                        .await
                        .unwrap_or_else(Outcome::Failed);
                    // A write its gate refused: the change wrote nothing.
                    let outcome = match outcome {
                        Outcome::Failed(_) | Outcome::Stale(_) if gate.refused() => {
                            Outcome::NotStarted
                        }
                        o => o,
                    };
                    (c, outcome)
                }
            })
            .buffer_unordered(in_flight);
        loop {
            let next = tokio::select! {
                n = done.next() => n,
                // The gates read a flag of their own (a registry backend
                // asks them from inside a request); it follows the reporter.
                () = watch_stop(reporter), if !stopping.load(std::sync::atomic::Ordering::SeqCst) => {
                    stopping.store(true, std::sync::atomic::Ordering::SeqCst);
                    continue;
                }
            };
            let Some((c, outcome)) = next else { break };
            match &outcome {
                Outcome::Done => report.done += 1,
                Outcome::AlreadyDone => report.already += 1,
                Outcome::Stale(_) => report.stale += 1,
                Outcome::Failed(_) => report.failed += 1,
                // Left out of the report, as those never pulled are.
                Outcome::NotStarted => continue,
            }
            reporter.finished(c, &outcome, copier.bytes_copied());
            report.outcomes.push((c.clone(), outcome));
        }
    }
    report.bytes = copier.bytes_copied();
    report
}

/// When each change runs: by action (copies, retags, …, deletions), referrer
/// tags after the images of their action, and a change that reads a tag
/// another change of the plan puts in place (`after`) in a wave after that
/// one, so it can go only once that one has landed (see [`unmet_after`]).
fn phase_keys(changes: &[Change], putting: &HashMap<&str, usize>) -> Vec<(u8, bool, u32)> {
    let mut keys: Vec<(u8, bool, u32)> = changes
        .iter()
        .map(|c| (order(c.action), is_referrer_target(c), 0))
        .collect();
    // Each pass moves a change behind its prerequisite; chains are short,
    // and a cycle (never planned) stops at the bound.
    for _ in 0..changes.len() {
        let mut moved = false;
        for (i, c) in changes.iter().enumerate() {
            let Some(&p) = c.after.as_deref().and_then(|t| putting.get(t)) else {
                continue;
            };
            let (o, r, w) = keys[p];
            let behind = (o, r, w.saturating_add(1));
            if p != i && keys[i] < behind {
                keys[i] = behind;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    keys
}

/// The change that puts each tag in place (copies and retags), by target.
fn putters(changes: &[Change]) -> HashMap<&str, usize> {
    let mut out = HashMap::new();
    for (i, c) in changes.iter().enumerate() {
        if matches!(c.action, Action::Copy | Action::Retag) {
            out.entry(c.target.as_str()).or_insert(i);
        }
    }
    out
}

/// For a change whose `after` change of this plan did not land (stale,
/// failed, or left out by a stop): its outcome without running it. It reads
/// the image where that change was to put it; without it, a `latest` would
/// name a release the repo does not have, a `prod` differ from `stable`.
fn unmet_after(
    c: &Change,
    putting: &HashMap<&str, usize>,
    landed: &HashMap<&str, &Outcome>,
) -> Option<Outcome> {
    let after = c.after.as_deref()?;
    if !putting.contains_key(after) {
        return None; // not part of this plan (cut by --target when planned)
    }
    match landed.get(after) {
        Some(Outcome::Done | Outcome::AlreadyDone) => None,
        Some(Outcome::Stale(why) | Outcome::Failed(why)) => Some(Outcome::Stale(format!(
            "not done: it needs {after} first, which this apply did not put in place ({why})"
        ))),
        Some(Outcome::NotStarted) | None => Some(Outcome::NotStarted),
    }
}

/// Returns once `reporter` asks for a stop (looked at every 50 ms).
async fn watch_stop(reporter: &dyn Reporter) {
    while !reporter.stop_requested() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn is_referrer_target(c: &Change) -> bool {
    c.target
        .parse::<ImageRef>()
        .ok()
        .and_then(|r| r.tag().map(|t| t.is_referrer_tag()))
        .unwrap_or(false)
}

fn registry<'r>(registries: &'r Registries, r: &ImageRef) -> Result<&'r Arc<dyn Registry>, String> {
    match registries.get(&r.repo.registry) {
        Some(Ok(reg)) => Ok(reg),
        Some(Err(e)) => Err(e.clone()),
        None => Err(format!(
            "registry `{}` is not defined in the policy",
            r.repo.registry
        )),
    }
}

fn parse<T: std::str::FromStr<Err = String>>(what: &str, s: Option<&str>) -> Result<T, String> {
    s.ok_or_else(|| format!("the change has no {what}"))?
        .parse()
        .map_err(|e| format!("bad {what}: {e}"))
}

/// What the changes of one apply share.
#[derive(Clone, Copy)]
struct Cx<'a> {
    copier: &'a Copier,
    indexes: &'a IndexChildren,
    reads: &'a RepoReads,
    /// What hosts' containers use, read before the deletions.
    host_use: Option<&'a HostUse>,
    reporter: &'a dyn Reporter,
    /// This change's: its registry writes ask it too (see [`copy::Gate`]).
    gate: &'a copy::Gate,
}

impl Cx<'_> {
    /// Checked right before a change's first write: the changes pulled in
    /// (up to [`DELETES_IN_FLIGHT`]) may still be waiting for a registry's
    /// `concurrency` when a stop comes, and must not all run after it.
    fn stopping(&self) -> bool {
        self.reporter.stop_requested()
    }
}

/// Registry digests containers on the managed hosts use (with which
/// container where), or why some host could not be read.
type HostUse = Result<BTreeMap<String, String>, String>;

/// A deletion of `digest` the hosts forbid: stale when a container uses it,
/// failed when a host could not be read (unknown is not "no containers").
fn host_veto(host_use: Option<&HostUse>, target: &str, digests: &[&Digest]) -> Option<Outcome> {
    match host_use? {
        Err(why) => Some(Outcome::Failed(format!(
            "{target}: not deleted: {why}; what its containers use is unknown (remove a \
             decommissioned host from the policy)"
        ))),
        Ok(used) => digests.iter().find_map(|d| {
            used.get(d.as_str()).map(|who| {
                Outcome::Stale(format!(
                    "{target}: {} is now used by {who}; it stays",
                    d.as_str()
                ))
            })
        }),
    }
}

async fn apply_one(
    c: &Change,
    registries: &Registries,
    hosts: &crate::host::Hosts,
    cx: Cx<'_>,
) -> Result<Outcome, String> {
    let copier = cx.copier;
    match c.action {
        Action::Copy | Action::Retag => {}
        Action::Untag => return untag(c, registries, cx).await,
        Action::Delete => return delete(c, registries, cx).await,
        Action::Pull | Action::RemoveImage | Action::StopContainer => {
            if cx.stopping() {
                return Ok(Outcome::NotStarted);
            }
            return hosts::apply_one(c, hosts).await;
        }
    }
    let target: ImageRef = parse("target", Some(&c.target))?;
    if c.action == Action::Copy && matches!(target.reference, Some(Reference::Digest(_))) {
        return copy_referrer(c, &target, registries, cx).await;
    }
    let Some(Reference::Tag(tag)) = target.reference.clone() else {
        return Err(format!("target `{}` has no tag", c.target));
    };
    let digest: Digest = parse("digest", c.digest.as_deref())?;
    let source: ImageRef = parse("source", c.source.as_deref())?;
    // What lands must be what the plan shows: an unfiltered copy of
    // `source@X` yields X, so a plan whose `digest` says otherwise (edited)
    // is refused rather than applied as `source` says.
    if let (Some(Reference::Digest(from)), None) = (&source.reference, &c.only_platforms) {
        if from != &digest {
            return Err(format!(
                "the plan copies {} but shows digest {digest} for it (was the plan edited?): not applied",
                c.source.as_deref().unwrap_or_default()
            ));
        }
    }
    let dst_reg = registry(registries, &target)?;
    let src_reg = registry(registries, &source)?;
    let err = |e: RegistryError| e.to_string();

    // Compare-and-swap: re-read the target before copying (so a stale or
    // already-done change moves no bytes). A repo this run found missing
    // moments ago skips this early look: the copy engine's check right
    // before the tag write still guards the change.
    let current = if c.expect == "absent" && dst_reg.known_absent(&target.repo.repo) {
        None
    } else {
        dst_reg
            .head_manifest(&target.repo.repo, tag.as_str())
            .await
            .map_err(err)?
            .map(|h| h.digest)
    };
    if current.as_ref() == Some(&digest) {
        return Ok(Outcome::AlreadyDone);
    }
    let expected_now = match (&current, c.expect.as_str()) {
        (None, "absent") => true,
        (Some(cur), exp) => cur.as_str() == exp,
        (None, _) => false,
    };
    // Nothing written yet: a stop that came while this change waited for
    // the registry need not cost the reads of its copy either.
    if cx.stopping() {
        return Ok(Outcome::NotStarted);
    }
    let gate = cx.gate;
    let src = Side {
        reg: src_reg,
        repo: &source.repo.repo,
        gate: None,
    };
    let dst = Side {
        reg: dst_reg,
        repo: &target.repo.repo,
        gate: Some(gate),
    };
    // A referrer tag that this run's own referrer pushes (or anyone's) have
    // changed is still written when nothing it lists would be lost.
    let expected_now = expected_now
        || (tag.is_referrer_tag()
            && current.is_some()
            && copy::referrers_kept(
                &dst,
                &tag,
                current.as_ref(),
                &copy::fetch_manifest(&src, &digest).await.map_err(err)?,
            )
            .await
            .map_err(err)?);
    if !expected_now {
        let found = current
            .map(|d| d.to_string())
            .unwrap_or_else(|| "absent".into());
        return Ok(Outcome::Stale(format!(
            "{} expected {}, found {found}",
            c.target, c.expect
        )));
    }
    // A filtered copy reads the source's full index (named in `source`).
    let fetch = match &source.reference {
        Some(Reference::Digest(d)) => d.clone(),
        _ => digest.clone(),
    };
    let copied = copier
        .copy_image(
            &src,
            &dst,
            &fetch,
            c.with_referrers,
            c.only_platforms.as_deref(),
            Some((&tag, current.as_ref())),
        )
        .await;
    if gate.refused() {
        return Ok(Outcome::NotStarted);
    }
    let (manifest, tagged) = match copied {
        Err(e) if e.kind == crate::registry::ErrorKind::Conflict => {
            return Ok(Outcome::Stale(e.message))
        }
        other => other.map_err(err)?,
    };
    if tag.is_referrer_tag() && c.with_referrers {
        // A `sha256-<hex>` index lists referrers; signatures of those
        // (an SBOM's signature) follow them, as on a first copy.
        let listed = copier.copy_listed_referrers(&src, &dst, &manifest).await;
        if gate.refused() {
            return Ok(Outcome::NotStarted);
        }
        listed.map_err(err)?;
    }
    if tagged {
        // Put under the tag directly, after everything under it (the digest
        // was checked against the plan's when it was fetched).
        return Ok(Outcome::Done);
    }
    if manifest.digest != digest {
        return Ok(Outcome::Stale(format!(
            "{}: the source now yields {}, the plan said {}",
            c.target, manifest.digest, digest
        )));
    }
    // The manifest and everything under it are in place: now the tag, if it
    // is still where the plan found it (a copy can take minutes).
    match copy::check_tag(&dst, &tag, current.as_ref(), &manifest).await {
        Ok(true) => return Ok(Outcome::AlreadyDone),
        Ok(false) => {}
        Err(e) if e.kind == crate::registry::ErrorKind::Conflict => {
            return Ok(Outcome::Stale(e.message))
        }
        Err(e) => return Err(err(e)),
    }
    if gate.peek().is_err() {
        return Ok(Outcome::NotStarted);
    }
    dst_reg
        .put_manifest(&target.repo.repo, Some(&tag), &manifest)
        .await
        .map_err(err)?;
    Ok(Outcome::Done)
}

/// Removes one tag and nothing else (tag DELETE, else a unique placeholder
/// deleted by digest); shared by every backend.
pub use crate::registry::remove_tag;

async fn untag(c: &Change, registries: &Registries, cx: Cx<'_>) -> Result<Outcome, String> {
    let host_use = cx.host_use;
    let target: ImageRef = parse("target", Some(&c.target))?;
    let Some(Reference::Tag(tag)) = target.reference.clone() else {
        return Err(format!("target `{}` has no tag", c.target));
    };
    let reg = registry(registries, &target)?;
    let current = reg
        .head_manifest(&target.repo.repo, tag.as_str())
        .await
        .map_err(|e| e.to_string())?
        .map(|h| h.digest);
    match current {
        None => return Ok(Outcome::AlreadyDone),
        Some(d) if d.as_str() != c.expect => {
            return Ok(Outcome::Stale(format!(
                "{} expected {}, found {d}",
                c.target, c.expect
            )))
        }
        Some(d) => {
            if let Some(veto) = host_veto(host_use, &c.target, &[&d]) {
                return Ok(veto);
            }
        }
    }
    // The plan untags because other tags keep the image: one of them must
    // still be on it, or the image would be left with no tag at all.
    if !c.kept_by.is_empty() {
        let mut still = false;
        for t in &c.kept_by {
            let head = reg
                .head_manifest(&target.repo.repo, t)
                .await
                .map_err(|e| e.to_string())?;
            if head.is_some_and(|h| h.digest.as_str() == c.expect) {
                still = true;
                break;
            }
        }
        if !still {
            return Ok(Outcome::Stale(format!(
                "{}: {} no longer has its other tag{} {}: untagging would leave it with none",
                target.repo,
                c.expect,
                if c.kept_by.len() == 1 { "" } else { "s" },
                c.kept_by.join(", ")
            )));
        }
    }
    if cx.stopping() {
        return Ok(Outcome::NotStarted);
    }
    let expect: Option<Digest> = c.expect.parse().ok();
    match remove_tag(reg.as_ref(), &target.repo.repo, &tag, expect.as_ref()).await {
        Ok(()) => Ok(Outcome::Done),
        // Removed by someone else meanwhile (as the plan wanted), if a
        // last look agrees: a registry may answer 404 for a verb it lacks.
        Err(e) if e.is_not_found() => {
            match reg.head_manifest(&target.repo.repo, tag.as_str()).await {
                Ok(None) => Ok(Outcome::AlreadyDone),
                _ => Err(e.to_string()),
            }
        }
        // Pushed again meanwhile: the new image keeps its tag.
        Err(e) if e.kind == crate::registry::ErrorKind::Conflict => Ok(Outcome::Stale(e.message)),
        Err(e) => Err(e.to_string()),
    }
}

/// A referrer attached to a source image after it was copied, copied on its
/// own by digest (with its blobs and its own referrers). Done once the
/// target lists it as a referrer of its subject: a registry with the
/// referrers API indexes it as it lands, one without gets it added to the
/// subject's `sha256-<hex>` index.
async fn copy_referrer(
    c: &Change,
    target: &ImageRef,
    registries: &Registries,
    cx: Cx<'_>,
) -> Result<Outcome, String> {
    let digest: Digest = parse("digest", c.digest.as_deref())?;
    let source: ImageRef = parse("source", c.source.as_deref())?;
    let by_digest =
        |r: &ImageRef| matches!(&r.reference, Some(Reference::Digest(d)) if *d == digest);
    if !by_digest(target) || !by_digest(&source) {
        return Err(format!(
            "the plan copies {} to {} but shows digest {digest} (was the plan edited?): not applied",
            c.source.as_deref().unwrap_or_default(),
            c.target
        ));
    }
    let err = |e: RegistryError| e.to_string();
    let src = copy::Side {
        reg: registry(registries, &source)?,
        repo: &source.repo.repo,
        gate: None,
    };
    let dst = copy::Side {
        reg: registry(registries, target)?,
        repo: &target.repo.repo,
        gate: Some(cx.gate),
    };
    let manifest = copy::fetch_manifest(&src, &digest).await.map_err(err)?;
    let subject = manifest
        .parse()
        .map_err(err)?
        .subject()
        .map(|s| s.digest.clone());
    let listed = || async {
        match &subject {
            Some(s) => Ok::<_, RegistryError>(
                dst.reg
                    .referrers(dst.repo, s)
                    .await?
                    .iter()
                    .any(|r| r.digest == digest),
            ),
            None => Ok(dst
                .reg
                .head_manifest(dst.repo, digest.as_str())
                .await?
                .is_some()),
        }
    };
    if listed().await.map_err(err)? {
        return Ok(Outcome::AlreadyDone);
    }
    // Planned for an image at the target: if that is gone since (deleted,
    // its tag moved and the image collected), the referrer would describe
    // nothing there.
    if let Some(s) = &subject {
        if dst
            .reg
            .head_manifest(dst.repo, s.as_str())
            .await
            .map_err(err)?
            .is_none()
        {
            return Ok(Outcome::Stale(format!(
                "{}: its subject {s} is no longer there",
                c.target
            )));
        }
    }
    if cx.stopping() {
        return Ok(Outcome::NotStarted);
    }
    let copied = cx
        .copier
        .copy_image(&src, &dst, &digest, c.with_referrers, None, None)
        .await;
    if cx.gate.refused() {
        return Ok(Outcome::NotStarted);
    }
    copied.map_err(err)?;
    // Already stored there by digest (the copy then writes nothing) but not
    // listed: storing it again is what lists it.
    if !listed().await.map_err(err)? {
        cx.gate.peek().map_err(err)?;
        dst.reg
            .put_manifest(dst.repo, None, &manifest)
            .await
            .map_err(err)?;
    }
    Ok(Outcome::Done)
}

/// Deletes a digest (and its referrers) once every tag on it is as planned,
/// no other tag has appeared on it since, and no tagged index lists it.
async fn delete(c: &Change, registries: &Registries, cx: Cx<'_>) -> Result<Outcome, String> {
    let (indexes, reads) = (cx.indexes, cx.reads);
    let target: ImageRef = parse("target", Some(&c.target))?;
    let digest: Digest = parse("digest", c.digest.as_deref())?;
    let reg = registry(registries, &target)?;
    let repo = &target.repo.repo;
    let err = |e: RegistryError| e.to_string();
    if let Some(tag) = target.tag().filter(|t| t.is_referrer_tag()) {
        if cx.stopping() {
            return Ok(Outcome::NotStarted);
        }
        // What the orphaned list names may be tagged on its own: those stay.
        let read = reads.read(reg.as_ref(), &target.repo, FINAL_READ_AGE).await;
        let (state, heads) = read.as_ref().as_ref().map_err(|e| e.clone())?;
        let view = RepoView {
            state,
            heads,
            indexes,
        };
        return delete_orphan_referrers(reg.as_ref(), &target, tag, &digest, view)
            .await
            .map_err(err);
    }
    let mut planned: Vec<String> = c.also_tags.clone();
    if let Some(t) = target.tag() {
        planned.push(t.to_string());
    }
    // A first look at the repo's tags, to skip early what has changed; the
    // last one, right before the delete (with the index check), is what
    // keeps a tag safe.
    let read = reads.read(reg.as_ref(), &target.repo, FINAL_READ_AGE).await;
    // The shared read may have waited long for the registry: a stop that
    // came meanwhile spares the rest of this deletion's reads.
    if cx.stopping() {
        return Ok(Outcome::NotStarted);
    }
    let (state, heads) = read.as_ref().as_ref().map_err(|e| e.clone())?;
    if let Some(stale) = tags_changed(state, &planned, &target, &digest) {
        return Ok(stale);
    }
    let on_digest = state.tags.values().any(|d| *d == digest);
    if !on_digest
        && reg
            .head_manifest(repo, digest.as_str())
            .await
            .map_err(err)?
            .is_none()
    {
        return Ok(Outcome::AlreadyDone);
    }
    // A container on a managed host that started on it (or, for an index,
    // on one of its platforms) since the plan keeps it.
    if let Some(veto) = host_veto(cx.host_use, &c.target, &[&digest]) {
        return Ok(veto);
    }
    if cx
        .host_use
        .is_some_and(|u| u.as_ref().is_ok_and(|u| !u.is_empty()))
        && target
            .tag()
            .and_then(|t| heads.get(t))
            .is_some_and(|h| MediaType::is_index(&h.media_type))
    {
        let children = indexes
            .children(reg.as_ref(), repo, &digest)
            .await
            .map_err(err)?;
        let children: Vec<&Digest> = children.iter().map(|c| &c.digest).collect();
        if let Some(veto) = host_veto(cx.host_use, &c.target, &children) {
            return Ok(veto);
        }
    }
    // The image first, and only once it is gone its referrers (signatures,
    // SBOMs), then the fallback referrers tag: an image whose delete fails
    // keeps everything that describes it. Its referrers are listed before
    // it goes (a registry may stop listing them after).
    let referrers = reg.referrers(repo, &digest).await.map_err(err)?;
    if cx.stopping() {
        return Ok(Outcome::NotStarted);
    }
    // The shared read may be long past by now (deletions queue for the
    // registry's `concurrency`, hundreds at once): a tag that existed then
    // and was moved onto this digest since (a roll-back of `stable`) is in
    // no list of new names. So the last check and the delete go a few
    // deletions of the repo at a time (as many as the registry takes
    // requests: no long queue between check and delete), against a
    // read finished at most `FINAL_READ_AGE` before, or as long before as
    // it took to make (shared by the deletions that follow it meanwhile).
    let turn = reads.turn(reg.as_ref(), &target.repo).await;
    let fresh = reads.read(reg.as_ref(), &target.repo, FINAL_READ_AGE).await;
    if cx.stopping() {
        return Ok(Outcome::NotStarted);
    }
    let (state, heads) = fresh.as_ref().as_ref().map_err(|e| e.clone())?;
    if let Some(stale) = tags_changed(state, &planned, &target, &digest) {
        return Ok(stale);
    }
    if let Some(stale) = listed_by_index(indexes, reg.as_ref(), &target, heads, &digest)
        .await
        .map_err(err)?
    {
        return Ok(stale);
    }
    // Then a cheap list of the repo's tags, and a HEAD of each name the
    // read did not have, so a tag put on this digest meanwhile keeps it.
    if let Some(found) = tagged_since(reg.as_ref(), indexes, repo, state, &digest)
        .await
        .map_err(err)?
    {
        return Ok(kept_since(&target.repo, &digest, found));
    }
    let planned_tags: Vec<Tag> = planned.iter().filter_map(|t| t.parse().ok()).collect();
    match reg
        .delete_manifest_tagged(repo, &digest, &planned_tags)
        .await
    {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {}
        // Tagged since, seen where the backend checks and deletes at once.
        Err(e) if e.kind == crate::registry::ErrorKind::Conflict => {
            return Ok(Outcome::Stale(e.message))
        }
        Err(e) => return Err(err(e)),
    }
    drop(turn);
    for r in referrers {
        let view = RepoView {
            state,
            heads,
            indexes,
        };
        delete_with_referrers(reg.as_ref(), repo, &r.digest, view)
            .await
            .map_err(|e| {
                format!(
                    "{}: {digest} is deleted, but not its referrer {}: {e}; its referrers tag \
                     {} stays listing it (a retention rule with `untagged_referrers: true` \
                     removes what is left)",
                    target.repo,
                    r.digest,
                    digest.referrers_tag()
                )
            })?;
    }
    delete_referrer_tags(reg.as_ref(), repo, &digest, state)
        .await
        .map_err(err)?;
    Ok(Outcome::Done)
}

/// An index pushed since the plan may list `digest` as a platform:
/// deleting it would break that index (children are never deleted on their
/// own). `Some(Stale)` naming its tags then.
async fn listed_by_index(
    indexes: &IndexChildren,
    reg: &dyn Registry,
    target: &ImageRef,
    heads: &BTreeMap<Tag, ManifestHead>,
    digest: &Digest,
) -> Result<Option<Outcome>, RegistryError> {
    let parents = indexes
        .tags_listing(reg, &target.repo.repo, heads, digest)
        .await?;
    Ok((!parents.is_empty()).then(|| {
        Outcome::Stale(format!(
            "{}: {digest} is now listed by the index tagged {}",
            target.repo,
            parents
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }))
}

/// How long ago the repo read a deletion last checks may have finished. Up
/// to `DELETES_IN_FLIGHT` deletions share reads, and on a slow registry one
/// may run long after the read it began with.
const FINAL_READ_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// The compare-and-swap of a deletion against a read of its repo: every
/// planned tag still on `digest` (or already gone), no other tag on it, and
/// no other name (an OCI layout's full reference) keeping it. `Some(Stale)`
/// when the repo changed.
fn tags_changed(
    state: &crate::observe::RepoState,
    planned: &[String],
    target: &ImageRef,
    digest: &Digest,
) -> Option<Outcome> {
    for t in planned {
        if let Ok(tag) = t.parse::<crate::model::Tag>() {
            if let Some(d) = state.tags.get(&tag) {
                if d != digest {
                    return Some(Outcome::Stale(format!(
                        "{}:{t} expected {digest}, found {d}",
                        target.repo
                    )));
                }
            }
        }
    }
    let unexpected: Vec<&str> = state
        .tags
        .iter()
        .filter(|(t, d)| *d == digest && !planned.iter().any(|p| p == t.as_str()))
        .map(|(t, _)| t.as_str())
        .collect();
    if !unexpected.is_empty() {
        return Some(Outcome::Stale(format!(
            "{}: {digest} is now also tagged {}",
            target.repo,
            unexpected.join(", ")
        )));
    }
    state.other_names.get(digest).map(|names| {
        Outcome::Stale(format!(
            "{}: {digest} is also named {} (not a tag), which keeps it",
            target.repo,
            names.join(", ")
        ))
    })
}

/// Cosign's tags for an image: its signatures, attestations and SBOM, each
/// a manifest made for that one image (they name it in their payload).
const COSIGN_SUFFIXES: [&str; 3] = [".sig", ".att", ".sbom"];

/// Once `digest` is gone, the tags that only describe it: its fallback
/// referrers tag (`sha256-<hex>`), looked for always (it may have been
/// pushed after `listed`, the repo's referrer tags when read), and cosign's
/// `sha256-<hex>.sig` / `.att` / `.sbom` where `listed` has them (a HEAD
/// each would cost every deletion three requests for tags most images
/// never have).
async fn delete_referrer_tags(
    reg: &dyn Registry,
    repo: &Repo,
    digest: &Digest,
    state: &crate::observe::RepoState,
) -> Result<(), RegistryError> {
    let base = digest.referrers_tag();
    let cosign = COSIGN_SUFFIXES
        .iter()
        .filter_map(|suffix| format!("{}{suffix}", base.as_str()).parse::<Tag>().ok())
        .filter(|t| state.referrer_tags.contains(t));
    for tag in std::iter::once(base.clone()).chain(cosign) {
        if let Some(h) = reg.head_manifest(repo, tag.as_str()).await? {
            if kept_by_tags(state, &h.digest) {
                // A signature also tagged `sig-archive` (say): only this tag goes.
                match crate::registry::remove_tag(reg, repo, &tag, Some(&h.digest)).await {
                    // Put on another index meanwhile: not this image's any more.
                    Err(e) if e.kind == crate::registry::ErrorKind::Conflict => {}
                    other => other?,
                }
            } else {
                delete_gone_ok(reg, repo, &h.digest).await?;
            }
        }
    }
    Ok(())
}

/// Whether a tag of its own (not a referrers-scheme tag) holds `digest`: a
/// referrer someone tagged (an SBOM kept as `sbom-1.0`, an image pushed with
/// a `subject`) lives on when what it describes is deleted. Deleting it by
/// digest would delete that tag too.
fn kept_by_tags(state: &crate::observe::RepoState, digest: &Digest) -> bool {
    state.tags.values().any(|d| d == digest)
}

/// The stale outcome for what [`tagged_since`] found keeping `digest`.
fn kept_since(
    repo: &crate::model::RepoAddr,
    digest: &Digest,
    (t, by_index): (Tag, bool),
) -> Outcome {
    Outcome::Stale(if by_index {
        format!("{repo}: {digest} is now listed by the index tagged {t}")
    } else {
        format!("{repo}: {digest} is now also tagged {t}")
    })
}

/// A tag of `repo` that `read` did not list and that now points at
/// `digest`, or at an index listing it (`true`), if any.
async fn tagged_since(
    reg: &dyn Registry,
    indexes: &IndexChildren,
    repo: &Repo,
    read: &crate::observe::RepoState,
    digest: &Digest,
) -> Result<Option<(Tag, bool)>, RegistryError> {
    let Some(now) = reg.list_tags_if_exists(repo).await? else {
        return Ok(None);
    };
    for t in now {
        if read.tags.contains_key(&t) || read.referrer_tags.contains(&t) || t.is_referrer_tag() {
            continue;
        }
        let Some(head) = reg.head_manifest(repo, t.as_str()).await? else {
            continue;
        };
        if &head.digest == digest {
            return Ok(Some((t, false)));
        }
        // A multi-arch image pushed meanwhile that reuses this one as a platform.
        if MediaType::is_index(&head.media_type) {
            let one = BTreeMap::from([(t.clone(), head)]);
            if !indexes
                .tags_listing(reg, repo, &one, digest)
                .await?
                .is_empty()
            {
                return Ok(Some((t, true)));
            }
        }
    }
    Ok(None)
}

/// Deletes a manifest by digest; already gone is fine.
async fn delete_gone_ok(
    reg: &dyn Registry,
    repo: &Repo,
    digest: &Digest,
) -> Result<(), RegistryError> {
    match reg.delete_manifest(repo, digest).await {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

/// Deletes `digest`, then, once it is gone, its referrers the same way (a
/// signature of an SBOM follows the SBOM): a failed delete never leaves a
/// manifest that stays without what refers to it.
fn delete_with_referrers<'a>(
    reg: &'a dyn Registry,
    repo: &'a Repo,
    digest: &'a Digest,
    read: RepoView<'a>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), RegistryError>> + Send + 'a>> {
    Box::pin(async move {
        // Tagged on its own: it stays, and with it what describes it.
        if kept_by_tags(read.state, digest) {
            tracing::info!(%repo, %digest, "a referrer of a deleted image has tags of its own: kept");
            return Ok(());
        }
        // Listed by a tagged index (a referrers list kept under a tag of its
        // own, say): children of an index are never deleted on their own.
        let parents = read
            .indexes
            .tags_listing(reg, repo, read.heads, digest)
            .await?;
        if !parents.is_empty() {
            tracing::info!(%repo, %digest, parents = ?parents, "a referrer of a deleted image is listed by a tagged index: kept");
            return Ok(());
        }
        let referrers = reg.referrers(repo, digest).await?;
        delete_gone_ok(reg, repo, digest).await?;
        for r in &referrers {
            delete_with_referrers(reg, repo, &r.digest, read).await?;
        }
        // Its own fallback tag (an SBOM's signatures' list), and cosign's
        // tags for it where the repo's read listed them.
        delete_referrer_tags(reg, repo, digest, read.state).await
    })
}

/// A fresh read of a repo, and the index children read this apply: what
/// deleting referrers checks each one against.
#[derive(Clone, Copy)]
struct RepoView<'a> {
    state: &'a crate::observe::RepoState,
    heads: &'a BTreeMap<Tag, ManifestHead>,
    indexes: &'a IndexChildren,
}

/// Deletes a referrers-schema tag whose subject is gone: each artifact it
/// lists, then the tag's index. Re-checks that the subject is still absent.
async fn delete_orphan_referrers(
    reg: &dyn Registry,
    target: &ImageRef,
    tag: &crate::model::Tag,
    digest: &Digest,
    read: RepoView<'_>,
) -> Result<Outcome, RegistryError> {
    let repo = &target.repo.repo;
    let current = reg
        .head_manifest(repo, tag.as_str())
        .await?
        .map(|h| h.digest);
    match current {
        None => return Ok(Outcome::AlreadyDone),
        Some(d) if &d != digest => {
            return Ok(Outcome::Stale(format!(
                "{target} expected {digest}, found {d}"
            )));
        }
        Some(_) => {}
    }
    // Deleting by digest takes every tag on it: one that also has an
    // ordinary tag (the list kept as `refs-archive`, or an image someone
    // tagged `sha256-…`) is no orphan to delete (the plan untags those).
    let also = read
        .state
        .tags
        .iter()
        .find(|(_, d)| *d == digest)
        .map(|(t, _)| (t.clone(), false));
    let also = match also {
        Some(t) => Some(t),
        None => tagged_since(reg, read.indexes, repo, read.state, digest).await?,
    };
    if let Some(found) = also {
        return Ok(kept_since(&target.repo, digest, found));
    }
    if let Some(subject) = tag.referrer_subject() {
        if reg.head_manifest(repo, subject.as_str()).await?.is_some() {
            return Ok(Outcome::Stale(format!(
                "{target}: its subject {subject} exists again"
            )));
        }
    }
    let index = reg.get_manifest(repo, digest.as_str()).await?;
    if let (Some(index), Some(subject)) = (index, tag.referrer_subject()) {
        if let Ok(crate::registry::manifest::Parsed::Index { manifests, .. }) = index.parse() {
            for m in manifests {
                // Only what names the gone image as its subject goes with
                // it: the index is just a list, and a stale or crafted entry
                // may name an image that lives on.
                let names_subject = match reg.get_manifest(repo, m.digest.as_str()).await? {
                    Some(listed) => listed
                        .parse()
                        .ok()
                        .is_some_and(|p| p.subject().map(|s| &s.digest) == Some(&subject)),
                    None => false,
                };
                if names_subject {
                    delete_with_referrers(reg, repo, &m.digest, read).await?;
                }
            }
        }
    }
    match reg.delete_manifest(repo, digest).await {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(Outcome::Done),
    }
}

/// A repo's tags and their HEADs, or why they could not be read.
type RepoRead = Arc<Result<(crate::observe::RepoState, BTreeMap<Tag, ManifestHead>), String>>;

/// Fresh reads of whole repos, shared by the deletions that wait on them:
/// a read is used while it finished at most a second ago, or as long ago as
/// it took to make, and the deletions of one repo that come meanwhile share
/// the next one, instead of each listing and HEADing every tag (retention of
/// thousands of tags in a repo of thousands would otherwise cost millions of
/// requests). Right before its delete, each deletion also lists the tags and
/// reads any new name ([`tagged_since`]).
#[derive(Default)]
struct RepoReads {
    repos: std::sync::Mutex<HashMap<crate::model::RepoAddr, Arc<Mutex<Option<SharedRead>>>>>,
    /// Per repo: held from a deletion's last check through its delete, as
    /// many at once as the registry takes requests (so none queues between
    /// its check and its delete for long).
    turns: std::sync::Mutex<HashMap<crate::model::RepoAddr, Arc<tokio::sync::Semaphore>>>,
}

struct SharedRead {
    started: tokio::time::Instant,
    finished: tokio::time::Instant,
    read: RepoRead,
}

impl RepoReads {
    /// A turn for a last check and delete in the repo; `None` only if the
    /// turns were closed (never: they live as long as the apply).
    async fn turn(
        &self,
        reg: &dyn Registry,
        repo: &crate::model::RepoAddr,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let turns = {
            let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
            turns
                .entry(repo.clone())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(reg.concurrency().max(1))))
                .clone()
        };
        turns.acquire_owned().await.ok()
    }

    async fn read(
        &self,
        reg: &dyn Registry,
        repo: &crate::model::RepoAddr,
        max_age: std::time::Duration,
    ) -> RepoRead {
        let slot = {
            let mut repos = self.repos.lock().unwrap_or_else(|p| p.into_inner());
            repos.entry(repo.clone()).or_default().clone()
        };
        // Held while reading: those who start meanwhile wait, then share
        // the read the first of them makes.
        let mut last = slot.lock().await;
        // A big repo's read takes longer than any fixed bound (and
        // Distribution's DELETE itself reads every tag of the repo): a read
        // stays good for as long as it took, so reads never crowd out the
        // deletions they serve.
        let will_do = |r: &&SharedRead| {
            r.finished.elapsed() <= max_age.max(r.finished.duration_since(r.started))
        };
        if let Some(r) = last.as_ref().filter(will_do) {
            return r.read.clone();
        }
        let started = tokio::time::Instant::now();
        let read: RepoRead = Arc::new(
            crate::observe::read_repo_heads(reg, repo)
                .await
                .map_err(|e| e.to_string()),
        );
        *last = Some(SharedRead {
            started,
            finished: tokio::time::Instant::now(),
            read: read.clone(),
        });
        read
    }
}

/// How deep nested indexes are followed looking for a child.
const INDEX_DEPTH: usize = 4;

/// The children of index manifests read during one apply, by registry, repo
/// and index digest. Bytes never change under a digest, so each index is
/// read once per run however many deletions in its repo look at it (and a
/// deletion still sees every index tagged since: tags are re-read each time).
#[derive(Default)]
struct IndexChildren {
    read: Mutex<HashMap<IndexKey, Arc<OnceCell<Vec<Descriptor>>>>>,
}

/// An index manifest: registry, repo, digest.
type IndexKey = (RegistryName, Repo, Digest);

impl IndexChildren {
    async fn children(
        &self,
        reg: &dyn Registry,
        repo: &Repo,
        index: &Digest,
    ) -> Result<Vec<Descriptor>, RegistryError> {
        let cell = self
            .read
            .lock()
            .await
            .entry((reg.name().clone(), repo.clone(), index.clone()))
            .or_default()
            .clone();
        let children = cell
            .get_or_try_init(|| async {
                // Gone since its tag was read: it lists nothing any more.
                let Some(m) = reg.get_manifest(repo, index.as_str()).await? else {
                    return Ok::<_, RegistryError>(Vec::new());
                };
                if &m.digest != index {
                    return Err(RegistryError::new(
                        crate::registry::ErrorKind::DigestMismatch,
                        format!(
                            "{}/{repo}@{index}: the registry served content with digest {}",
                            reg.name(),
                            m.digest
                        ),
                    ));
                }
                Ok(match m.parse()? {
                    crate::registry::manifest::Parsed::Index { manifests, .. } => manifests,
                    crate::registry::manifest::Parsed::Image { .. } => Vec::new(),
                })
            })
            .await?;
        Ok(children.clone())
    }

    /// Tags (from `heads`, a fresh read of the repo) of indexes that list
    /// `digest`, directly or through a nested index. Only tags whose HEAD
    /// says index are read, each index once per run.
    async fn tags_listing(
        &self,
        reg: &dyn Registry,
        repo: &Repo,
        heads: &BTreeMap<Tag, ManifestHead>,
        digest: &Digest,
    ) -> Result<Vec<Tag>, RegistryError> {
        // Owned, so that the stream's closures take no borrowed arguments
        // (which a boxed `Send` future around this cannot be proven to be).
        let candidates: Vec<(Tag, Digest)> = heads
            .iter()
            .filter(|(_, h)| MediaType::is_index(&h.media_type) && &h.digest != digest)
            .map(|(t, h)| (t.clone(), h.digest.clone()))
            .collect();
        let found: Vec<Option<Tag>> = futures_util::stream::iter(candidates)
            .map(|(tag, top)| async move {
                let mut todo = vec![(top, 0)];
                while let Some((index, depth)) = todo.pop() {
                    for child in self.children(reg, repo, &index).await? {
                        if &child.digest == digest {
                            return Ok::<_, RegistryError>(Some(tag));
                        }
                        if depth + 1 < INDEX_DEPTH && MediaType::is_index(&child.media_type) {
                            todo.push((child.digest, depth + 1));
                        }
                    }
                }
                Ok(None)
            })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        let mut tags: Vec<Tag> = found.into_iter().flatten().collect();
        tags.sort();
        Ok(tags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::oci_layout::OciLayout;
    use crate::testkit::{push_image, ImageSpec};

    /// The last look before a delete: a tag put on the digest after the
    /// shared read is found (and one put elsewhere is not).
    #[tokio::test]
    async fn a_tag_put_on_the_digest_after_the_read_is_found() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = OciLayout::new("dev".parse().unwrap(), tmp.path().join("dev"));
        let addr: crate::model::RepoAddr = "dev/ci/app".parse().unwrap();
        let repo = &addr.repo;
        let img = |n: &str| ImageSpec::new("2026-01-01T00:00:00Z").with_layer("v", n.to_string());
        let doomed = push_image(&reg, repo, Some(&"pr-1".parse().unwrap()), &img("1"))
            .await
            .unwrap();
        let other = push_image(&reg, repo, Some(&"pr-2".parse().unwrap()), &img("2"))
            .await
            .unwrap();
        let (read, _) = crate::observe::read_repo_heads(&reg, &addr).await.unwrap();
        let indexes = IndexChildren::default();
        assert_eq!(
            tagged_since(&reg, &indexes, repo, &read, &doomed)
                .await
                .unwrap(),
            None
        );
        let m = reg
            .get_manifest(repo, other.as_str())
            .await
            .unwrap()
            .unwrap();
        reg.put_manifest(repo, Some(&"elsewhere".parse().unwrap()), &m)
            .await
            .unwrap();
        assert_eq!(
            tagged_since(&reg, &indexes, repo, &read, &doomed)
                .await
                .unwrap(),
            None
        );
        let m = reg
            .get_manifest(repo, doomed.as_str())
            .await
            .unwrap()
            .unwrap();
        reg.put_manifest(repo, Some(&"keep-1".parse().unwrap()), &m)
            .await
            .unwrap();
        assert_eq!(
            tagged_since(&reg, &indexes, repo, &read, &doomed)
                .await
                .unwrap(),
            Some(("keep-1".parse().unwrap(), false))
        );
        // A new multi-arch image reusing it as a platform keeps it too.
        let (read, _) = crate::observe::read_repo_heads(&reg, &addr).await.unwrap();
        let fresh = IndexChildren::default();
        assert_eq!(
            tagged_since(&reg, &fresh, repo, &read, &doomed)
                .await
                .unwrap(),
            None
        );
        // The same bytes as `pr-1`'s image, as one of its platforms.
        crate::testkit::push_index(
            &reg,
            repo,
            Some(&"multi".parse().unwrap()),
            &[img("1"), img("2")],
        )
        .await
        .unwrap();
        assert_eq!(
            tagged_since(&reg, &fresh, repo, &read, &doomed)
                .await
                .unwrap(),
            Some(("multi".parse().unwrap(), true))
        );
    }
}
