//! What each tag held when it was last read, kept between runs, so that the
//! next read of the tag can be conditional (`If-None-Match: "<digest>"`). On
//! Distribution a confirmed HEAD (304) skips reading and parsing the
//! manifest: a re-run that changes nothing costs the registries less, with
//! the same requests.
//!
//! A hint never stands in for an answer: the registry confirms the digest
//! (304) or answers in full (the tag moved: 200 with the new digest; gone:
//! 404). A missing, unreadable or outdated file means plain HEADs. What a 304
//! takes from the file is the media type and size of the digest it confirms,
//! which the registry gave for those same bytes before (and which decide, for
//! instance, that a tag holds a single image and no index to read).
//!
//! A conditional HEAD cannot tell a tag whose manifest was lost (Distribution
//! can leave a tag linked to a deleted manifest: a plain HEAD answers 404, a
//! conditional one still 304). So a repo's hints are used for a day after the
//! last read that had none, then one plain read checks every tag again; and
//! an apply that deleted or untagged in a repo drops its hints, so the next
//! read there is plain.
//!
//! One file (`tags.json`) under `$REGIMEN_CACHE_DIR` (empty: no cache), else
//! `$XDG_CACHE_HOME/regimen`, else `~/.cache/regimen`. It holds registry
//! addresses, repository and tag names, digests, media types and sizes;
//! never credentials. HTTP registries only (an OCI layout is read from disk,
//! where there is nothing to save).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::apply::Outcome;
use crate::config::{Desired, Endpoint};
use crate::model::{Digest, ImageRef, RegistryName, RepoAddr, Tag};
use crate::plan::{Action, Change};
use crate::registry::ManifestHead;

/// Bumped when the file's meaning changes; another version is ignored.
const VERSION: u32 = 1;

/// How long after a repo's last plain read its hints are used.
const FRESH_SECS: u64 = 24 * 3600;

/// One file for every policy on the machine: its keys are registry
/// addresses and repos, which mean the same in any policy (and a Git
/// source's policy folder changes with each commit).
const FILE_NAME: &str = "tags.json";

/// Tag → what it held, per repository.
pub type Heads = BTreeMap<Tag, ManifestHead>;

#[derive(Default, Serialize, Deserialize)]
struct File {
    version: u32,
    /// `<registry address>/<repo>` → its tags.
    repos: BTreeMap<String, Entry>,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    /// Unix seconds of the last read of the repo that used no hints.
    checked: u64,
    tags: Heads,
}

/// The hints, for the registries of one policy.
#[derive(Default)]
pub struct HeadCache {
    path: Option<PathBuf>,
    /// Policy registry name → the address that keys its repos in the file
    /// (a renamed registry keeps its hints; one pointed elsewhere loses them).
    addresses: BTreeMap<RegistryName, String>,
    repos: BTreeMap<String, Entry>,
    /// Unix seconds now (a field, so that tests can move the clock).
    now: u64,
}

impl HeadCache {
    /// The saved hints for `desired`'s registries; empty when there are
    /// none or they cannot be read (a debug line says why).
    pub fn load(desired: &Desired) -> HeadCache {
        HeadCache::load_in(cache_dir(), desired, unix_now())
    }

    fn load_in(dir: Option<PathBuf>, desired: &Desired, now: u64) -> HeadCache {
        let addresses = desired
            .registries
            .iter()
            .filter(|(_, r)| !matches!(r.url, Endpoint::OciLayout(_)))
            .map(|(n, r)| (n.clone(), r.url.to_string()))
            .collect();
        let Some(path) = dir.map(|d| d.join(FILE_NAME)) else {
            return HeadCache::default();
        };
        let repos = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<File>(&bytes) {
                Ok(f) if f.version == VERSION => f.repos,
                Ok(_) => BTreeMap::new(),
                Err(e) => {
                    tracing::debug!("ignoring the tag cache {}: {e}", path.display());
                    BTreeMap::new()
                }
            },
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::debug!("ignoring the tag cache {}: {e}", path.display());
                }
                BTreeMap::new()
            }
        };
        HeadCache {
            path: Some(path),
            addresses,
            repos,
            now,
        }
    }

    fn key(&self, repo: &RepoAddr) -> Option<String> {
        let at = self.addresses.get(&repo.registry)?;
        Some(format!("{}/{}", at.trim_end_matches('/'), repo.repo))
    }

    /// What `repo`'s tags held when last read, if known and checked by a
    /// plain read within [`FRESH_SECS`].
    pub fn hints(&self, repo: &RepoAddr) -> Option<&Heads> {
        let e = self.repos.get(&self.key(repo)?)?;
        fresh(e.checked, self.now).then_some(&e.tags)
    }

    /// Records this run's reads (`None`: the repo does not exist) and writes
    /// the file; repos not read this run keep their hints. A read that had
    /// [`HeadCache::hints`] keeps the time of the last plain one. Best effort:
    /// a cache that cannot be written is a debug line, not a failure.
    pub fn save<'a>(&mut self, reads: impl IntoIterator<Item = (&'a RepoAddr, Option<&'a Heads>)>) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let mut changed = false;
        for (repo, heads) in reads {
            let Some(key) = self.key(repo) else { continue };
            let Some(tags) = heads else {
                changed |= self.repos.remove(&key).is_some();
                continue;
            };
            let checked = match self.hints(repo) {
                Some(_) => self.repos.get(&key).map_or(self.now, |e| e.checked),
                None => self.now,
            };
            let entry = Entry {
                checked,
                tags: tags.clone(),
            };
            if self.repos.get(&key) != Some(&entry) {
                self.repos.insert(key, entry);
                changed = true;
            }
        }
        // Hints no longer used (repos not read plainly for a day) go.
        let now = self.now;
        let before = self.repos.len();
        self.repos.retain(|_, e| fresh(e.checked, now));
        changed |= self.repos.len() != before;
        if !changed {
            return;
        }
        let file = File {
            version: VERSION,
            repos: std::mem::take(&mut self.repos),
        };
        if let Err(e) = write(&path, &file) {
            tracing::debug!("cannot write the tag cache {}: {e}", path.display());
        }
        self.repos = file.repos;
    }
}

/// After an apply: the tags its copies and retags put in place hold their
/// digest now, so that the next run asks about those conditionally too. The
/// media type and size come from a tag with the same digest (the same bytes)
/// that the cache has; a digest it has nowhere (a platform-filtered index)
/// gets no hint, and is simply read in full next time.
pub fn record_applied(desired: &Desired, outcomes: &[(Change, Outcome)]) {
    record_applied_in(cache_dir(), desired, outcomes, unix_now())
}

/// Checked by a plain read within [`FRESH_SECS`]; a check "in the future"
/// is a clock that moved back, and is not.
fn fresh(checked: u64, now: u64) -> bool {
    checked <= now && now - checked < FRESH_SECS
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn record_applied_in(
    dir: Option<PathBuf>,
    desired: &Desired,
    outcomes: &[(Change, Outcome)],
    now: u64,
) {
    let relevant = |a: Action| {
        matches!(
            a,
            Action::Copy | Action::Retag | Action::Delete | Action::Untag
        )
    };
    if !outcomes.iter().any(|(c, _)| relevant(c.action)) {
        return;
    }
    let mut cache = HeadCache::load_in(dir, desired, now);
    if cache.path.is_none() {
        return;
    }
    let mut put: BTreeMap<RepoAddr, Heads> = BTreeMap::new();
    let mut forget: Vec<RepoAddr> = Vec::new();
    for (change, outcome) in outcomes {
        let Ok(target) = change.target.parse::<ImageRef>() else {
            continue;
        };
        match change.action {
            // Whatever the outcome: a delete that failed half-way can leave a
            // tag on a deleted manifest, which only a plain read shows.
            Action::Delete | Action::Untag => forget.push(target.repo),
            Action::Copy | Action::Retag
                if matches!(outcome, Outcome::Done | Outcome::AlreadyDone) =>
            {
                // The head the copy read at its source: the bytes it wrote.
                let source = change
                    .source
                    .as_deref()
                    .and_then(|s| s.parse::<ImageRef>().ok());
                let digest = change
                    .digest
                    .as_deref()
                    .and_then(|d| d.parse::<Digest>().ok());
                let head = match (&source, &digest) {
                    (Some(src), Some(d)) => cache
                        .hints(&src.repo)
                        .and_then(|h| h.values().find(|h| &h.digest == d))
                        .cloned(),
                    _ => None,
                };
                if let (Some(tag), Some(head)) = (target.tag(), head) {
                    put.entry(target.repo.clone())
                        .or_default()
                        .insert(tag.clone(), head);
                }
            }
            _ => {}
        }
    }
    let merged: Vec<(RepoAddr, Heads)> = put
        .into_iter()
        .filter(|(repo, _)| !forget.contains(repo))
        .map(|(repo, new)| {
            let mut heads = cache.hints(&repo).cloned().unwrap_or_default();
            heads.extend(new);
            (repo, heads)
        })
        .collect();
    cache.save(
        merged
            .iter()
            .map(|(repo, heads)| (repo, Some(heads)))
            .chain(forget.iter().map(|repo| (repo, None))),
    );
}

/// `$REGIMEN_CACHE_DIR` (empty: none), `$XDG_CACHE_HOME/regimen`, `~/.cache/regimen`.
fn cache_dir() -> Option<PathBuf> {
    dir_from(
        std::env::var_os("REGIMEN_CACHE_DIR"),
        std::env::var_os("XDG_CACHE_HOME"),
        std::env::var_os("HOME"),
    )
}

fn dir_from(
    own: Option<OsString>,
    xdg: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    if let Some(d) = own {
        return (!d.is_empty()).then(|| PathBuf::from(d));
    }
    // The XDG spec: relative values are ignored.
    let absolute = |v: OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    if let Some(d) = xdg.and_then(absolute) {
        return Some(d.join("regimen"));
    }
    home.and_then(absolute)
        .map(|h| h.join(".cache").join("regimen"))
}

/// Write-then-rename: a reader sees the old file or the new one, whole.
fn write(path: &Path, file: &File) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        crate::registry::tmp_suffix()
    ));
    let bytes = serde_json::to_vec(file).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn desired(root: &Path) -> Desired {
        let text = "registries:\n  src: {url: \"http://127.0.0.1:1\"}\n  \
                    dst: {url: \"127.0.0.1:2\"}\n  disk: {url: \"oci:layout\"}\n";
        crate::config::load_texts(root, &[(std::sync::Arc::from("p.yaml"), text.to_string())])
            .unwrap()
    }

    fn head(n: u8) -> ManifestHead {
        ManifestHead {
            digest: format!("sha256:{}", format!("{n:02x}").repeat(32))
                .parse()
                .unwrap(),
            media_type: crate::registry::manifest::MediaType::OCI_MANIFEST.to_string(),
            size: 100 + n as u64,
        }
    }

    fn heads(tags: &[(&str, u8)]) -> Heads {
        tags.iter()
            .map(|(t, n)| (t.parse().unwrap(), head(*n)))
            .collect()
    }

    fn addr(s: &str) -> RepoAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_folder_is_regimens_own_then_xdg_then_home() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(dir_from(os("/c"), os("/x"), os("/h")), Some("/c".into()));
        assert_eq!(
            dir_from(os(""), os("/x"), os("/h")),
            None,
            "empty: no cache"
        );
        assert_eq!(
            dir_from(None, os("/x"), os("/h")),
            Some("/x/regimen".into())
        );
        assert_eq!(
            dir_from(None, os("rel"), os("/h")),
            Some("/h/.cache/regimen".into()),
            "a relative XDG_CACHE_HOME is ignored"
        );
        assert_eq!(dir_from(None, None, os("rel")), None);
    }

    #[test]
    fn reads_saved_come_back_as_hints_for_http_registries_only() {
        let tmp = tempfile::tempdir().unwrap();
        let d = desired(tmp.path());
        let dir = Some(tmp.path().join("cache"));
        let mut c = HeadCache::load_in(dir.clone(), &d, NOW);
        let (src, dst, disk) = (addr("src/a"), addr("dst/a"), addr("disk/a"));
        let (hs, hd) = (heads(&[("1", 1), ("2", 2)]), heads(&[("1", 1)]));
        c.save([(&src, Some(&hs)), (&dst, Some(&hd)), (&disk, Some(&hs))]);
        let c = HeadCache::load_in(dir.clone(), &d, NOW);
        assert_eq!(c.hints(&src), Some(&hs));
        assert_eq!(c.hints(&dst), Some(&hd));
        assert_eq!(c.hints(&disk), None, "an OCI layout is read from disk");
        assert_eq!(c.hints(&addr("src/b")), None);

        // A repo read as missing loses its hints; one not read keeps them.
        let mut c = c;
        c.save([(&dst, None)]);
        let c = HeadCache::load_in(dir.clone(), &d, NOW);
        assert_eq!((c.hints(&src), c.hints(&dst)), (Some(&hs), None));

        // Another policy naming the same registry has the same hints (a
        // `--git` daemon's policy folder changes with every commit).
        let other = tmp.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        assert_eq!(
            HeadCache::load_in(dir, &desired(&other), NOW).hints(&src),
            Some(&hs)
        );
    }

    #[test]
    fn a_file_of_another_version_or_not_json_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let d = desired(tmp.path());
        let dir = tmp.path().join("cache");
        let mut c = HeadCache::load_in(Some(dir.clone()), &d, NOW);
        c.save([(&addr("src/a"), Some(&heads(&[("1", 1)])))]);
        let file = std::fs::read_dir(&dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, text.replace("\"version\":1", "\"version\":99")).unwrap();
        assert_eq!(
            HeadCache::load_in(Some(dir.clone()), &d, NOW).hints(&addr("src/a")),
            None
        );
        std::fs::write(&file, "not json").unwrap();
        assert_eq!(
            HeadCache::load_in(Some(dir.clone()), &d, NOW).hints(&addr("src/a")),
            None
        );
        // ...and replaced whole by the next save, leaving no temporary file.
        let mut c = HeadCache::load_in(Some(dir.clone()), &d, NOW);
        c.save([(&addr("src/a"), Some(&heads(&[("1", 1)])))]);
        assert!(HeadCache::load_in(Some(dir.clone()), &d, NOW)
            .hints(&addr("src/a"))
            .is_some());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn applied_copies_and_retags_become_hints_of_their_targets() {
        let tmp = tempfile::tempdir().unwrap();
        let d = desired(tmp.path());
        let dir = Some(tmp.path().join("cache"));
        let mut c = HeadCache::load_in(dir.clone(), &d, NOW);
        let other = ManifestHead {
            media_type: crate::registry::manifest::MediaType::OCI_INDEX.to_string(),
            ..head(1)
        };
        let lying: Heads = [("x".parse().unwrap(), other)].into_iter().collect();
        c.save([
            (&addr("src/a"), Some(&heads(&[("1", 1), ("2", 2)]))),
            // the same digest under another media type elsewhere: not the copy's source
            (&addr("src/b"), Some(&lying)),
        ]);
        let change = |action, target: &str, n: u8| Change {
            target: target.to_string(),
            source: Some(format!("src/a@{}", head(n).digest)),
            digest: Some(head(n).digest.to_string()),
            ..Change::new(action)
        };
        let outcomes = vec![
            (change(Action::Copy, "dst/a:1", 1), Outcome::Done),
            (
                change(Action::Retag, "dst/a:latest", 1),
                Outcome::AlreadyDone,
            ),
            (
                change(Action::Copy, "dst/a:2", 2),
                Outcome::Failed("no".into()),
            ),
            // a digest its source was not seen with (a filtered index): no hint
            (change(Action::Copy, "dst/a:3", 3), Outcome::Done),
        ];
        record_applied_in(dir.clone(), &d, &outcomes, NOW);
        let c = HeadCache::load_in(dir.clone(), &d, NOW);
        assert_eq!(
            c.hints(&addr("dst/a")),
            Some(&heads(&[("1", 1), ("latest", 1)])),
            "media types from the copy's source"
        );
        assert_eq!(c.hints(&addr("src/a")), Some(&heads(&[("1", 1), ("2", 2)])));

        // A delete or untag in a repo, done or not, drops its hints: a delete
        // that failed half-way may leave a tag on a deleted manifest.
        let outcomes = vec![
            (
                change(Action::Delete, "src/a:2", 2),
                Outcome::Failed("500".into()),
            ),
            (change(Action::Untag, "dst/a:latest", 1), Outcome::Done),
            (change(Action::Copy, "dst/a:9", 1), Outcome::Done),
        ];
        record_applied_in(dir.clone(), &d, &outcomes, NOW);
        let c = HeadCache::load_in(dir, &d, NOW);
        assert_eq!(
            (c.hints(&addr("src/a")), c.hints(&addr("dst/a"))),
            (None, None)
        );
        assert!(c.hints(&addr("src/b")).is_some(), "other repos keep theirs");
    }

    /// Hints are used for a day after the repo's last plain read; reads
    /// that used them do not extend that day, so a plain read comes at least
    /// daily (it finds a tag whose manifest was lost, which a 304 would hide).
    #[test]
    fn hints_last_a_day_after_the_last_plain_read() {
        let tmp = tempfile::tempdir().unwrap();
        let d = desired(tmp.path());
        let dir = Some(tmp.path().join("cache"));
        let a = addr("src/a");
        let h = heads(&[("1", 1)]);
        HeadCache::load_in(dir.clone(), &d, NOW).save([(&a, Some(&h))]);
        let later = NOW + FRESH_SECS - 1;
        let mut c = HeadCache::load_in(dir.clone(), &d, later);
        assert_eq!(c.hints(&a), Some(&h));
        // a read that had hints, with a tag added: the day still counts from NOW
        let h2 = heads(&[("1", 1), ("2", 2)]);
        c.save([(&a, Some(&h2))]);
        let c = HeadCache::load_in(dir.clone(), &d, NOW + FRESH_SECS);
        assert_eq!(c.hints(&a), None, "a day after the plain read");
        // that read is plain, and starts a new day
        let mut c = c;
        c.save([(&a, Some(&h2))]);
        let c = HeadCache::load_in(dir.clone(), &d, NOW + 2 * FRESH_SECS - 1);
        assert_eq!(c.hints(&a), Some(&h2));
        let c = HeadCache::load_in(dir.clone(), &d, NOW);
        assert_eq!(c.hints(&a), None, "checked after now: the clock moved back");

        // Entries past their day leave the file at the next save.
        let b = addr("src/b");
        let mut c = HeadCache::load_in(dir.clone(), &d, NOW + 3 * FRESH_SECS);
        c.save([(&b, Some(&h))]);
        let file: File =
            serde_json::from_slice(&std::fs::read(dir.as_ref().unwrap().join(FILE_NAME)).unwrap())
                .unwrap();
        assert_eq!(file.repos.len(), 1, "only src/b is left");
    }
}
