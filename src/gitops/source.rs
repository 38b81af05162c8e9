//! Where the daemon reads the policy from: a local directory, or a Git
//! remote fetched into a bare cache clone. A Git snapshot is always one
//! whole commit's tree written to a fresh directory (never a work tree that
//! a checkout may have half-updated), so `oci:` paths in the policy resolve
//! against that commit's files.

use std::path::{Path, PathBuf};

use git2::{Cred, CredentialType, FetchOptions, RemoteCallbacks, Repository};

/// One readable version of the policy.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The directory to load the policy from.
    pub dir: PathBuf,
    /// The commit it came from, when known.
    pub revision: Option<String>,
    /// Changes whenever the policy may have changed (the commit, plus the
    /// files' contents for a local directory).
    pub version: String,
}

pub enum Source {
    Dir(PathBuf),
    Git(GitSource),
}

impl Source {
    /// The current snapshot: fetches a Git remote first.
    pub fn snapshot(&mut self) -> Result<Snapshot, String> {
        match self {
            Source::Dir(d) => dir_snapshot(d),
            Source::Git(g) => g.snapshot(),
        }
    }

    /// For logs: the directory, or the remote without credentials.
    pub fn describe(&self) -> String {
        match self {
            Source::Dir(d) => d.display().to_string(),
            Source::Git(g) => format!(
                "{} (branch {}, path /{})",
                redact_url(&g.url),
                g.branch,
                g.path
            ),
        }
    }
}

fn dir_snapshot(dir: &Path) -> Result<Snapshot, String> {
    let revision = head_revision(dir);
    // Content hash: an edit without a commit (or outside Git) is a new version too.
    let mut h = Fnv::new();
    for f in crate::config::policy_files(dir)? {
        h.write(f.to_string_lossy().as_bytes());
        h.write(&std::fs::read(&f).unwrap_or_default());
    }
    Ok(Snapshot {
        dir: dir.to_path_buf(),
        version: format!("{}:{:016x}", revision.as_deref().unwrap_or("-"), h.finish()),
        revision,
    })
}

/// The HEAD commit of the Git work tree `dir` is in, if any.
pub fn head_revision(dir: &Path) -> Option<String> {
    let repo = Repository::discover(dir).ok()?;
    let head = repo.head().ok()?.peel_to_commit().ok()?;
    Some(head.id().to_string())
}

pub struct GitSource {
    pub url: String,
    pub branch: String,
    /// Folder inside the repository that holds the policy.
    pub path: String,
    /// `CACHE/repo.git` (bare) and `CACHE/trees/<sha>` (materialized commits).
    pub cache: PathBuf,
    current: Option<Snapshot>,
}

impl GitSource {
    pub fn new(
        url: String,
        branch: String,
        path: String,
        cache_root: Option<PathBuf>,
    ) -> GitSource {
        let root = cache_root.unwrap_or_else(default_cache_root);
        let mut h = Fnv::new();
        h.write(redact_url(&url).as_bytes());
        let cache = root.join(format!("git-{:016x}", h.finish()));
        GitSource {
            url,
            branch,
            path: path.trim_matches('/').to_string(),
            cache,
            current: None,
        }
    }

    fn snapshot(&mut self) -> Result<Snapshot, String> {
        let shown = redact_url(&self.url);
        let bare = self.cache.join("repo.git");
        let repo = match Repository::open_bare(&bare) {
            Ok(r) => r,
            Err(_) => {
                std::fs::create_dir_all(&self.cache)
                    .map_err(|e| format!("cannot create {}: {e}", self.cache.display()))?;
                Repository::init_bare(&bare)
                    .map_err(|e| format!("cannot create {}: {}", bare.display(), e.message()))?
            }
        };
        let local_ref = format!("refs/remotes/origin/{}", self.branch);
        let refspec = format!("+refs/heads/{}:{local_ref}", self.branch);
        {
            let mut remote = repo
                .remote_anonymous(&self.url)
                .map_err(|e| format!("git remote {shown}: {}", e.message()))?;
            let mut fo = FetchOptions::new();
            fo.remote_callbacks(callbacks());
            remote
                .fetch(&[&refspec], Some(&mut fo), None)
                .map_err(|e| format!("git fetch {shown} {}: {}", self.branch, e.message()))?;
        }
        let commit = repo
            .find_reference(&local_ref)
            .and_then(|r| r.peel_to_commit())
            .map_err(|e| {
                format!(
                    "git {shown}: branch `{}` not found: {}",
                    self.branch,
                    e.message()
                )
            })?;
        let sha = commit.id().to_string();
        if let Some(cur) = &self.current {
            if cur.revision.as_deref() == Some(sha.as_str()) && cur.dir.is_dir() {
                return Ok(cur.clone());
            }
        }
        let trees = self.cache.join("trees");
        let dest = trees.join(&sha);
        if !dest.is_dir() {
            let tmp = trees.join(format!(".{sha}.tmp"));
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(&tmp)
                .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
            let root = commit
                .tree()
                .map_err(|e| format!("commit {sha}: {}", e.message()))?;
            let tree = if self.path.is_empty() || self.path == "." {
                root
            } else {
                root.get_path(Path::new(&self.path))
                    .and_then(|e| e.to_object(&repo))
                    .and_then(|o| o.peel_to_tree())
                    .map_err(|_| {
                        format!(
                            "commit {sha} of {shown} has no folder `{}` (--path)",
                            self.path
                        )
                    })?
            };
            write_tree(&repo, &tree, &tmp)?;
            // Whole or nothing: the tree appears under its final name only once written.
            std::fs::rename(&tmp, &dest)
                .map_err(|e| format!("cannot move {} into place: {e}", tmp.display()))?;
        }
        // Older commits' trees are no longer read by anyone.
        if let Ok(rd) = std::fs::read_dir(&trees) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy() != sha {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let snap = Snapshot {
            dir: dest,
            revision: Some(sha.clone()),
            version: sha,
        };
        self.current = Some(snap.clone());
        Ok(snap)
    }
}

/// Writes a Git tree's files under `dir`. Symlinks and submodules are
/// skipped: the policy must not reach outside its own commit.
fn write_tree(repo: &Repository, tree: &git2::Tree<'_>, dir: &Path) -> Result<(), String> {
    for entry in tree.iter() {
        let Ok(name) = entry.name() else { continue };
        if name.contains('/') || name == ".." || name == "." {
            continue;
        }
        let path = dir.join(name);
        match entry.kind() {
            Some(git2::ObjectType::Tree) => {
                let sub = entry
                    .to_object(repo)
                    .and_then(|o| o.peel_to_tree())
                    .map_err(|e| format!("{}: {}", path.display(), e.message()))?;
                std::fs::create_dir_all(&path)
                    .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                write_tree(repo, &sub, &path)?;
            }
            Some(git2::ObjectType::Blob) if entry.filemode() != 0o120000 => {
                let blob = repo
                    .find_blob(entry.id())
                    .map_err(|e| format!("{}: {}", path.display(), e.message()))?;
                std::fs::write(&path, blob.content())
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Credentials from the environment, never from flags (they would show in
/// `ps`): `REGIMEN_GIT_TOKEN` (with `REGIMEN_GIT_USERNAME`, default
/// `x-access-token`) or `REGIMEN_GIT_USERNAME` + `REGIMEN_GIT_PASSWORD` for
/// https; `REGIMEN_GIT_SSH_KEY` (a private key file, optional
/// `REGIMEN_GIT_SSH_PASSPHRASE`) for ssh.
fn callbacks() -> RemoteCallbacks<'static> {
    let mut cbs = RemoteCallbacks::new();
    let mut tries = 0;
    let mut gave_password = false;
    cbs.credentials(move |_url, user_from_url, allowed| {
        // libgit2 asks again after a refusal: the same secret will not do
        // better, so give up at once (ssh may legitimately ask for a
        // username first, then the key).
        tries += 1;
        if tries > 3 || (gave_password && allowed.contains(CredentialType::USER_PASS_PLAINTEXT)) {
            return Err(git2::Error::from_str(
                "authentication failed (credentials from REGIMEN_GIT_* refused)",
            ));
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if allowed.contains(CredentialType::SSH_KEY) {
            if let Some(key) = env("REGIMEN_GIT_SSH_KEY") {
                return Cred::ssh_key(
                    user_from_url.unwrap_or("git"),
                    None,
                    Path::new(&key),
                    env("REGIMEN_GIT_SSH_PASSPHRASE").as_deref(),
                );
            }
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            if let Some(token) = env("REGIMEN_GIT_TOKEN") {
                let user = env("REGIMEN_GIT_USERNAME")
                    .or_else(|| user_from_url.map(str::to_string))
                    .unwrap_or_else(|| "x-access-token".into());
                gave_password = true;
                return Cred::userpass_plaintext(&user, &token);
            }
            if let (Some(u), Some(p)) = (env("REGIMEN_GIT_USERNAME"), env("REGIMEN_GIT_PASSWORD"))
            {
                gave_password = true;
                return Cred::userpass_plaintext(&u, &p);
            }
        }
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(user_from_url.unwrap_or("git"));
        }
        Err(git2::Error::from_str(
            "the remote wants credentials: set REGIMEN_GIT_TOKEN (https) or REGIMEN_GIT_SSH_KEY (ssh)",
        ))
    });
    cbs
}

fn default_cache_root() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("regimen")
}

/// The URL without a `user:password@` part, for logs and cache names.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if let Some((_, host)) = authority.rsplit_once('@') {
            return format!("{scheme}://{host}{path}");
        }
    }
    url.to_string()
}

/// FNV-1a (64 bit): stable across runs and builds, unlike std's hasher.
pub struct Fnv(u64);

impl Fnv {
    pub fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv {
    fn default() -> Self {
        Fnv::new()
    }
}

/// Writes the policy folder `sub` (relative to the repository root) of
/// revision `rev` of the repository containing `dir` into `dest`.
pub fn materialize_rev(dir: &Path, rev: &str, dest: &Path) -> Result<(), String> {
    let repo = Repository::discover(dir).map_err(|e| {
        format!(
            "{} is not in a Git repository: {}",
            dir.display(),
            e.message()
        )
    })?;
    let commit = repo
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| format!("--base {rev}: {}", e.message()))?;
    let workdir = repo
        .workdir()
        .ok_or_else(|| "the repository has no work tree".to_string())?;
    let abs = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let wd = std::fs::canonicalize(workdir).map_err(|e| format!("{}: {e}", workdir.display()))?;
    let sub = abs.strip_prefix(&wd).unwrap_or(Path::new(""));
    let root = commit.tree().map_err(|e| e.message().to_string())?;
    std::fs::create_dir_all(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    if sub.as_os_str().is_empty() {
        return write_tree(&repo, &root, dest);
    }
    match root.get_path(sub) {
        Ok(entry) => {
            let tree = entry
                .to_object(&repo)
                .and_then(|o| o.peel_to_tree())
                .map_err(|e| e.message().to_string())?;
            write_tree(&repo, &tree, dest)
        }
        // The policy folder is new in this change: the base had no policy.
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_credentials() {
        assert_eq!(
            redact_url("https://bot:s3cret@git.example.com/org/policy.git"),
            "https://git.example.com/org/policy.git"
        );
        assert_eq!(
            redact_url("file:///srv/policy.git"),
            "file:///srv/policy.git"
        );
        assert_eq!(redact_url("git@host:org/repo"), "git@host:org/repo");
    }

    // FNV-1a 64 of "prod/team/api", computed independently.
    const FNV_PROD_TEAM_API: u64 = 1489350246992746175;

    #[test]
    fn fnv_is_stable() {
        let mut h = Fnv::new();
        h.write(b"prod/team/api");
        // Fixed forever: shard assignment depends on it.
        assert_eq!(h.finish(), FNV_PROD_TEAM_API);
    }
}
