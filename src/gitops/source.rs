//! Where the daemon reads the policy from: a local directory, or a Git
//! remote fetched into a bare cache clone. A Git snapshot is always one
//! whole commit's tree written to a fresh directory (never a work tree that
//! a checkout may have half-updated), so `oci:` paths in the policy resolve
//! against that commit's files.

use std::cell::RefCell;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use base64::Engine as _;
use git2::{
    CertificateCheckStatus, Cred, CredentialType, FetchOptions, RemoteCallbacks, Repository,
};
use hmac::{Hmac, Mac};
use sha2::Digest as _;

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
    /// A folder whose files differ from its Git HEAD (`-C` with edits not
    /// committed): the policy read is not `revision` alone.
    pub modified: bool,
    /// For a Git commit's tree in a cache: a shared lock that keeps other
    /// daemons on the cache from removing the tree while this one reads it.
    pub in_use: Option<std::sync::Arc<std::fs::File>>,
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
    let (revision, modified) = revision_state(dir);
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
        modified,
        in_use: None,
    })
}

/// Starts libgit2 on first use, not at process start: its start-up loads
/// OpenSSL and the system CA bundle, some 25 ms of CPU before anything else
/// could run, which most commands (and every run outside Git) never need.
/// Every use of `git2` in regimen goes through here first.
fn git() {
    static START: std::sync::Once = std::sync::Once::new();
    START.call_once(|| {
        // libgit2 waits for ever on a Git server that accepts a connection
        // and never answers; a daemon must give up and try again at its next
        // interval (and stay stoppable). SAFETY: these set C globals of
        // libgit2 that only libgit2 calls made after this `Once` read.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(30_000);
            let _ = git2::opts::set_server_timeout_in_milliseconds(120_000);
        }
    });
}

/// The HEAD commit of the Git work tree `dir` is in, and, with `status`,
/// whether the files under `dir` differ from it (edited, staged, new and
/// not ignored): the policy read is then not that commit's.
pub fn head_state(dir: &Path, status: bool) -> Option<(String, bool)> {
    // Outside any work tree libgit2 is never started: its start-up loads the
    // system CA bundle through OpenSSL, CPU a run outside Git has no use for.
    let abs = std::fs::canonicalize(dir).ok()?;
    if !abs.ancestors().any(|a| a.join(".git").exists()) {
        return None;
    }
    git();
    let repo = Repository::discover(dir).ok()?;
    let head = repo.head().ok()?.peel_to_commit().ok()?;
    let modified = status && modified_under(&repo, &abs);
    Some((head.id().to_string(), modified))
}

/// A plan's `revision` and `revision_modified` for the policy folder
/// `dir`: its HEAD commit (none outside Git) and whether files under it
/// differ from that commit.
pub fn revision_state(dir: &Path) -> (Option<String>, bool) {
    match head_state(dir, true) {
        Some((sha, modified)) => (Some(sha), modified),
        None => (None, false),
    }
}

/// Whether anything under `dir` differs from HEAD; false when that cannot
/// be told (a bare repository, a status error).
fn modified_under(repo: &Repository, dir: &Path) -> bool {
    let Some(rel) = repo
        .workdir()
        .and_then(|w| std::fs::canonicalize(w).ok())
        .and_then(|w| dir.strip_prefix(&w).ok().map(Path::to_path_buf))
    else {
        return false;
    };
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false);
    if !rel.as_os_str().is_empty() {
        opts.pathspec(rel);
    }
    repo.statuses(Some(&mut opts)).is_ok_and(|s| !s.is_empty())
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
        // `./policy`, `policy/`, `/policy` and `.` say the folder as a
        // shell would: the same folder as `policy` (or the whole tree).
        let path = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect::<Vec<_>>()
            .join("/");
        let mut h = Fnv::new();
        // One cache per URL, branch and folder: `trees/<sha>` holds only the
        // `--path` folder, so a cache shared across folders would serve one
        // folder's policy for another (and daemons would clean up each
        // other's trees).
        h.write(cache_key_url(&url).as_bytes());
        h.write(b"\0");
        h.write(branch.as_bytes());
        if !path.is_empty() {
            // The whole repository keeps its earlier cache name.
            h.write(b"\0");
            h.write(path.as_bytes());
        }
        let cache = root.join(format!("git-{:016x}", h.finish()));
        GitSource {
            url,
            branch,
            path,
            cache,
            current: None,
        }
    }

    fn snapshot(&mut self) -> Result<Snapshot, String> {
        let shown = redact_url(&self.url);
        let bare = self.cache.join("repo.git");
        git();
        let _held = CacheLock::take(&self.cache)?;
        // Holding the cache's lock, no other regimen is inside it: a Git
        // `*.lock` file there was left by one that was killed mid-fetch (a
        // pod's SIGKILL after its grace period), and would fail every later
        // fetch ("failed to lock file") for as long as the cache lives.
        clear_stale_git_locks(&bare);
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
            let (cbs, host_key_error) = callbacks(ssh_port(&self.url));
            let mut fo = FetchOptions::new();
            fo.remote_callbacks(cbs);
            // A branch deleted on the remote must not live on in the cache.
            fo.prune(git2::FetchPrune::On);
            // FETCH_HEAD would record the URL, a query token and all, in a
            // cache that often sits on a shared volume; nothing reads it.
            fo.update_fetchhead(false);
            remote
                .fetch(&[&refspec], Some(&mut fo), None)
                .map_err(|e| {
                    // libgit2 replaces a refused host key's message with a generic one.
                    let why = host_key_error
                        .borrow_mut()
                        .take()
                        .unwrap_or_else(|| e.message().to_string())
                        // libgit2 may quote the URL, credentials and all.
                        .replace(self.url.as_str(), &shown);
                    format!("git fetch {shown} {}: {why}", self.branch)
                })?;
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
        // Taken before the tree is looked at, under the cache lock: a daemon
        // cleaning up (also under it) then sees the tree in use.
        let in_use = TreeLock::shared(&self.cache, &sha)?;
        if !dest.is_dir() {
            let root = commit
                .tree()
                .map_err(|e| format!("commit {sha}: {}", e.message()))?;
            let tree = if self.path.is_empty() {
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
            let tmp = trees.join(format!(".{sha}.tmp"));
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(&tmp)
                .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
            if let Err(e) = write_tree(&repo, &tree, &tmp) {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
            // Whole or nothing: the tree appears under its final name only once written.
            std::fs::rename(&tmp, &dest)
                .map_err(|e| format!("cannot move {} into place: {e}", tmp.display()))?;
        }
        // Older commits' trees, unless another daemon on this cache (a
        // replica on the same volume) is still reconciling from one. This
        // one's last tree is let go first (its reconciles run one at a time).
        self.current = None;
        if let Ok(rd) = std::fs::read_dir(&trees) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name == sha {
                    continue;
                }
                // A `.SHA.tmp` is only ever written under the cache lock, held here.
                if name.starts_with('.') {
                    let _ = std::fs::remove_dir_all(e.path());
                    continue;
                }
                if let Some(_unused) = TreeLock::unused(&self.cache, &name) {
                    let _ = std::fs::remove_dir_all(e.path());
                    let _ = std::fs::remove_file(TreeLock::path(&self.cache, &name));
                }
            }
        }
        let snap = Snapshot {
            dir: dest,
            revision: Some(sha.clone()),
            version: sha,
            modified: false,
            in_use: Some(std::sync::Arc::new(in_use)),
        };
        self.current = Some(snap.clone());
        Ok(snap)
    }
}

/// An exclusive `flock` on `CACHE/lock`, released when dropped or when the
/// process dies however it dies: daemons sharing a cache (replicas on one
/// volume) take turns fetching.
struct CacheLock(#[allow(dead_code)] std::fs::File);

impl CacheLock {
    fn take(cache: &Path) -> Result<CacheLock, String> {
        use std::os::fd::AsRawFd;
        let path = cache.join("lock");
        let file = open_lock_file(&path)?;
        loop {
            // SAFETY: flock on a descriptor this function owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(CacheLock(file));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(format!("cannot lock {}: {e}", path.display()));
            }
        }
    }
}

/// A lock file at `path` (created, with its folder, if missing), open to lock.
fn open_lock_file(path: &Path) -> Result<std::fs::File, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

/// `CACHE/inuse/<sha>`: held shared by each daemon reading `trees/<sha>`,
/// tried exclusively by one about to remove it. Both happen under the
/// [`CacheLock`], so a tree is never removed between a daemon choosing it
/// and locking it.
struct TreeLock;

impl TreeLock {
    fn path(cache: &Path, sha: &str) -> PathBuf {
        cache.join("inuse").join(sha)
    }

    fn open(cache: &Path, sha: &str) -> Result<std::fs::File, String> {
        open_lock_file(&Self::path(cache, sha))
    }

    /// A shared lock on the tree `sha`, held while it is read.
    fn shared(cache: &Path, sha: &str) -> Result<std::fs::File, String> {
        let file = Self::open(cache, sha)?;
        file.lock_shared()
            .map_err(|e| format!("cannot lock {}: {e}", Self::path(cache, sha).display()))?;
        Ok(file)
    }

    /// An exclusive lock on the tree `sha` if no daemon holds it (then it
    /// may be removed), `None` when one does or the lock cannot be had.
    fn unused(cache: &Path, sha: &str) -> Option<std::fs::File> {
        let file = Self::open(cache, sha).ok()?;
        file.try_lock().ok()?;
        Some(file)
    }
}

/// Removes Git's `*.lock` files from a bare repository's refs and top level
/// (call only while holding its [`CacheLock`]).
fn clear_stale_git_locks(bare: &Path) {
    fn walk(dir: &Path, depth: usize) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() && depth > 0 {
                walk(&p, depth - 1);
            } else if t.is_file() && p.extension().is_some_and(|x| x == "lock") {
                tracing::warn!(file = %p.display(), "removing a Git lock file left by an interrupted fetch");
                let _ = std::fs::remove_file(&p);
            }
        }
    }
    // Top level (`packed-refs.lock`, `config.lock`, `HEAD.lock`, …) and refs.
    walk(bare, 0);
    walk(&bare.join("refs"), 16);
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
/// `REGIMEN_GIT_SSH_PASSPHRASE`) for ssh. An ssh host key must be listed in
/// a known_hosts file (see [`check_ssh_host_key`]); `ssh_port` is the
/// remote's port, which libgit2 does not pass to the check. The returned
/// cell holds why a host key was refused.
fn callbacks(ssh_port: u16) -> (RemoteCallbacks<'static>, Rc<RefCell<Option<String>>>) {
    let mut cbs = RemoteCallbacks::new();
    let mut tries = 0;
    let mut gave_password = false;
    let mut gave_key = false;
    cbs.credentials(move |_url, user_from_url, allowed| {
        // libgit2 asks again after a refusal: the same secret will not do
        // better, so give up at once (ssh may legitimately ask for a
        // username first, then the key).
        tries += 1;
        if gave_key && allowed.contains(CredentialType::SSH_KEY) {
            return Err(git2::Error::from_str(
                "authentication failed (the ssh server refused the key in REGIMEN_GIT_SSH_KEY)",
            ));
        }
        if tries > 3 || (gave_password && allowed.contains(CredentialType::USER_PASS_PLAINTEXT)) {
            return Err(git2::Error::from_str(
                "authentication failed (credentials from REGIMEN_GIT_* refused)",
            ));
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if allowed.contains(CredentialType::SSH_KEY) {
            if let Some(key) = env("REGIMEN_GIT_SSH_KEY") {
                gave_key = true;
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
        if allowed.contains(CredentialType::SSH_KEY) {
            return Err(git2::Error::from_str(
                "the ssh remote wants a key: set REGIMEN_GIT_SSH_KEY to a private key file",
            ));
        }
        Err(git2::Error::from_str(
            "the remote wants credentials: set REGIMEN_GIT_TOKEN (https) or REGIMEN_GIT_SSH_KEY (ssh)",
        ))
    });
    let refused = Rc::new(RefCell::new(None));
    let slot = refused.clone();
    cbs.certificate_check(move |cert, host| {
        // TLS certificates keep libgit2's own check against the system CAs.
        let Some(hostkey) = cert.as_hostkey() else {
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let key_type = hostkey.hostkey_type().map_or("unknown", |t| t.name());
        let checked = match hostkey.hostkey() {
            Some(key) => check_ssh_host_key(host, ssh_port, key_type, key),
            None => Err(format!("the ssh host key of {host} could not be read")),
        };
        checked
            .map(|()| CertificateCheckStatus::CertificateOk)
            .map_err(|why| {
                let e = git2::Error::from_str(&why);
                *slot.borrow_mut() = Some(why);
                e
            })
    });
    (cbs, refused)
}

/// Accepts the ssh host key only if a known_hosts file lists it for the
/// host: `REGIMEN_GIT_SSH_KNOWN_HOSTS`, else `~/.ssh/known_hosts` and the
/// system's `/etc/ssh/ssh_known_hosts` (as OpenSSH reads them). There is
/// deliberately no way to accept an unknown key: a daemon that applies
/// whatever policy it fetched must not trust whoever answers.
fn check_ssh_host_key(host: &str, port: u16, key_type: &str, key: &[u8]) -> Result<(), String> {
    let shown = known_hosts_name(host, port);
    let fp = ssh_fingerprint(key);
    let files = known_hosts_files(
        std::env::var_os("REGIMEN_GIT_SSH_KNOWN_HOSTS").filter(|v| !v.is_empty()),
        std::env::var_os("HOME").map(PathBuf::from),
        Path::new(SYSTEM_KNOWN_HOSTS),
    );
    if files.is_empty() {
        return Err(format!(
            "cannot verify the ssh host key of {shown} ({key_type} {fp}): no known_hosts \
             file; check that fingerprint with the server's owner, then set \
             REGIMEN_GIT_SSH_KNOWN_HOSTS to a known_hosts file with the key \
             (`{shown} {key_type} <base64 key>`)"
        ));
    }
    // One text: a key listed in either file is known, one revoked in
    // either is refused.
    let mut text = String::new();
    for f in &files {
        let t = std::fs::read_to_string(f).map_err(|e| {
            format!(
                "cannot read the known_hosts file {} (set REGIMEN_GIT_SSH_KNOWN_HOSTS to a \
                 readable one): {e}",
                f.display()
            )
        })?;
        text.push_str(&t);
        text.push('\n');
    }
    let file = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(" and ");
    match known_hosts_check(&text, host, port, key) {
        KnownHost::Match => Ok(()),
        KnownHost::Unknown => Err(format!(
            "ssh host {shown} is not in the known_hosts file {file}: its host key is {key_type} \
             {fp}; check that fingerprint with the server's owner, then add the key to the file \
             REGIMEN_GIT_SSH_KNOWN_HOSTS names (`{shown} {key_type} <base64 key>`)"
        )),
        KnownHost::Changed => Err(format!(
            "the ssh host key of {shown} ({key_type} {fp}) does not match the known_hosts file \
             {file}: refusing to connect (the key changed, or someone is in between)"
        )),
        // libgit2 only steers the key type choice by ~/.ssh/known_hosts,
        // so the server may offer a type the file does not list.
        KnownHost::OtherTypes(types) => Err(format!(
            "the known_hosts file {file} lists {shown} only with {} keys, but the server \
             offered {key_type} {fp}; check that fingerprint with the server's owner, then add \
             the host's {key_type} key to the file (e.g. from `ssh-keyscan -t {key_type}`)",
            types.join(", ")
        )),
        KnownHost::Revoked => Err(format!(
            "the ssh host key of {shown} ({key_type} {fp}) is marked @revoked in {file}"
        )),
    }
}

/// The system-wide known_hosts file OpenSSH reads after the user's.
const SYSTEM_KNOWN_HOSTS: &str = "/etc/ssh/ssh_known_hosts";

/// Which known_hosts files to read: the one `REGIMEN_GIT_SSH_KNOWN_HOSTS`
/// names (even if missing: reading it then says so), else those of
/// `~/.ssh/known_hosts` and the system file that exist.
fn known_hosts_files(
    named: Option<OsString>,
    home: Option<PathBuf>,
    system: &Path,
) -> Vec<PathBuf> {
    if let Some(f) = named {
        return vec![PathBuf::from(f)];
    }
    home.map(|h| h.join(".ssh/known_hosts"))
        .into_iter()
        .chain([system.to_path_buf()])
        .filter(|f| f.is_file())
        .collect()
}

/// What a known_hosts file says about a host's key.
#[derive(Debug, PartialEq, Eq)]
enum KnownHost {
    Match,
    /// The host has an entry of this key's type with another key.
    Changed,
    /// The host is listed only with keys of other types (these).
    OtherTypes(Vec<String>),
    /// No entry names the host.
    Unknown,
    Revoked,
}

/// Looks `host`'s key (the raw SSH wire blob) up in OpenSSH known_hosts
/// text: `[@revoked] patterns keytype base64 [comment]`, patterns being
/// comma-separated names with `*`/`?` wildcards and `!` negation, `[host]:port`
/// for a port other than 22, or one hashed `|1|salt|hmac` name.
/// `@cert-authority` lines are skipped: libgit2 hands over plain keys only.
fn known_hosts_check(text: &str, host: &str, port: u16, key: &[u8]) -> KnownHost {
    let name = known_hosts_name(host, port);
    let b64 = base64::engine::general_purpose::STANDARD;
    let key_type = blob_key_type(key);
    let (mut matched, mut same_type) = (false, false);
    let mut listed: Vec<String> = vec![];
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(mut first) = fields.next() else {
            continue;
        };
        if first.starts_with('#') {
            continue;
        }
        let mut revoked = false;
        if let Some(marker) = first.strip_prefix('@') {
            if marker != "revoked" {
                continue;
            }
            revoked = true;
            let Some(next) = fields.next() else { continue };
            first = next;
        }
        let (Some(line_type), Some(encoded)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Ok(line_key) = b64.decode(encoded) else {
            continue;
        };
        let same_key = line_key == key;
        if revoked {
            // A revoked key is refused whatever host it is listed under.
            if same_key {
                return KnownHost::Revoked;
            }
            continue;
        }
        if host_patterns_match(first, &name) {
            matched |= same_key;
            same_type |= line_type == key_type;
            if !listed.iter().any(|t| t == line_type) {
                listed.push(line_type.to_string());
            }
        }
    }
    if matched {
        KnownHost::Match
    } else if same_type {
        KnownHost::Changed
    } else if !listed.is_empty() {
        KnownHost::OtherTypes(listed)
    } else {
        KnownHost::Unknown
    }
}

/// The key type a raw SSH public key blob names first (`ssh-ed25519`, …).
fn blob_key_type(key: &[u8]) -> &str {
    let Some(len) = key.get(..4) else { return "" };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    key.get(4..4 + len)
        .and_then(|t| std::str::from_utf8(t).ok())
        .unwrap_or("")
}

/// The host as known_hosts writes it: `host`, or `[host]:port` off port 22.
fn known_hosts_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

fn host_patterns_match(patterns: &str, name: &str) -> bool {
    if let Some(hashed) = patterns.strip_prefix("|1|") {
        return hashed_host_matches(hashed, name);
    }
    let mut hit = false;
    for p in patterns.split(',') {
        match p.strip_prefix('!') {
            // A negated match excludes the host even if another pattern names it.
            Some(neg) if glob_match(&neg.to_ascii_lowercase(), name) => return false,
            Some(_) => {}
            None => hit |= glob_match(&p.to_ascii_lowercase(), name),
        }
    }
    hit
}

/// `salt|hash` (base64 both): HMAC-SHA1 keyed with the salt over the name.
fn hashed_host_matches(hashed: &str, name: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// `*` any run of characters, `?` one character (OpenSSH's `match_pattern`).
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            // Let the last `*` swallow one more character and retry.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// `SHA256:<base64, unpadded>`, as `ssh-keygen -l` and `ssh` print it.
fn ssh_fingerprint(key: &[u8]) -> String {
    let digest = sha2::Sha256::digest(key);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// The port of an `ssh://` URL (22 when absent, and for the scp-like
/// `user@host:path` form, which cannot name one).
fn ssh_port(url: &str) -> u16 {
    let Some((_, rest)) = url.split_once("://") else {
        return 22;
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = match hostport.rsplit_once(']') {
        Some((_, after)) => after.strip_prefix(':'),
        None => hostport.rsplit_once(':').map(|(_, p)| p),
    };
    port.and_then(|p| p.parse().ok()).unwrap_or(22)
}

fn default_cache_root() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("regimen")
}

/// The URL without a `user:password@` part and with query values hidden
/// (`?private_token=***`: some Git hosts take tokens there), for logs and
/// `/readyz`. A password may hold `/`, `?`, `#` or `@` (unencoded), and a
/// path `@`, so where the userinfo ends is not always knowable: then
/// everything up to the last `@` is hidden (`scheme://***@…`), whatever it
/// was. Never prints a character that could belong to a password.
pub fn redact_url(url: &str) -> String {
    let out = match url.split_once("://") {
        Some((scheme, rest)) => match rest.rfind('@') {
            None => url.to_string(),
            Some(at) => {
                let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                if at < authority_end {
                    // Every `@` is in the authority: the userinfo is up to the last one.
                    format!("{scheme}://{}", &rest[at + 1..])
                } else {
                    // An `@` past a `/`, `?` or `#`: a password holding one of
                    // those, or an `@` in the path. Assume the worst.
                    format!("{scheme}://***@{}", &rest[at + 1..])
                }
            }
        },
        // scp-like `user@host:path`: a plain user name is no secret, but
        // anything more (`user:password@`, a `/`) before an `@` may be.
        None => match url.rsplit_once('@') {
            Some((user, host))
                if !user
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+')) =>
            {
                format!("***@{host}")
            }
            _ => url.to_string(),
        },
    };
    hide_query_values(&out)
}

/// `?k=v&…` becomes `?k=***&…`.
fn hide_query_values(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let hidden: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) => format!("{k}=***"),
            None => pair.to_string(),
        })
        .collect();
    format!("{base}?{}", hidden.join("&"))
}

/// What names a remote's cache: the URL as Git reads it (the authority
/// ends at the first `/`, `?` or `#`; its userinfo at the last `@` in it),
/// without userinfo and query values, so rotating a token keeps the cache
/// while two repositories never share one. Only ever hashed, never shown.
fn cache_key_url(url: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((u, q)) => (u, Some(q)),
        None => (url, None),
    };
    let mut out = url.to_string();
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_at(rest.find(['/', '#']).unwrap_or(rest.len()));
        if let Some((_, host)) = authority.rsplit_once('@') {
            out = format!("{scheme}://{host}{path}");
        }
    }
    match query {
        Some(q) => hide_query_values(&format!("{out}?{q}")),
        None => out,
    }
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
    git();
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

    /// Commits `policy.yaml` with `text` on `main` of the repository at `dir`.
    fn commit(dir: &Path, text: &str) {
        let repo = Repository::open(dir)
            .or_else(|_| Repository::init(dir))
            .unwrap();
        std::fs::write(dir.join("policy.yaml"), text).unwrap();
        let mut index = repo.index().unwrap();
        index.add_path(Path::new("policy.yaml")).unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
        let parent = repo
            .find_reference("refs/heads/main")
            .ok()
            .and_then(|r| r.peel_to_commit().ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        repo.commit(Some("refs/heads/main"), &sig, &sig, "c", &tree, &parents)
            .unwrap();
    }

    /// Two daemons on one cache (replicas on a volume): the one that moves
    /// to a new commit does not remove the tree the other still reconciles
    /// from; once that one lets go of it, the next cleanup removes it.
    #[test]
    fn a_tree_in_use_by_another_daemon_on_the_cache_is_not_removed() {
        git();
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        commit(&src, "registries: {}\n");
        let url = format!("file://{}", src.display());
        let cache = tmp.path().join("cache");
        let source = || {
            GitSource::new(
                url.clone(),
                "main".into(),
                String::new(),
                Some(cache.clone()),
            )
        };
        let mut a = source();
        let first = a.snapshot().unwrap();
        commit(&src, "registries: {}\n# two\n");
        let mut b = source();
        let second = b.snapshot().unwrap();
        assert_ne!(first.revision, second.revision);
        assert!(
            first.dir.join("policy.yaml").is_file(),
            "removed while daemon A reads it"
        );
        // A is done with it and moves on: the old tree goes.
        drop(first);
        let again = a.snapshot().unwrap();
        assert_eq!(again.revision, second.revision);
        let trees: Vec<String> = std::fs::read_dir(a.cache.join("trees"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(trees, [second.revision.clone().unwrap()]);
        assert!(second.dir.join("policy.yaml").is_file());
    }

    #[test]
    fn a_path_is_the_folder_however_written() {
        for (written, folder) in [
            ("./policy", "policy"),
            ("policy/", "policy"),
            ("/policy", "policy"),
            ("./a/./b/", "a/b"),
            (".", ""),
            ("./", ""),
            ("", ""),
        ] {
            let g = GitSource::new("file:///x".into(), "main".into(), written.into(), None);
            assert_eq!(g.path, folder, "{written}");
        }
    }

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
        assert_eq!(
            redact_url("https://u:p@git.example.com/p.git?private_token=abc&x"),
            "https://git.example.com/p.git?private_token=***&x"
        );
    }

    #[test]
    fn passwords_with_url_delimiters_are_never_shown() {
        for (url, want) in [
            (
                "http://bob:se/cret@host/repo.git",
                "http://***@host/repo.git",
            ),
            (
                "http://bob:se?cret@host/repo.git",
                "http://***@host/repo.git",
            ),
            (
                "http://bob:se#cret@host/repo.git",
                "http://***@host/repo.git",
            ),
            ("http://bob:se@cret@host/repo.git", "http://host/repo.git"),
            (
                "http://bob:a/b?c#d@e@host:8080/r.git",
                "http://***@host:8080/r.git",
            ),
            (
                "http://bob:s/x@host/p.git?t=1",
                "http://***@host/p.git?t=***",
            ),
            // An `@` in the path cannot be told from one ending a password.
            ("https://host/org/repo@v1.git", "https://***@v1.git"),
            ("https://bob:pw@host/org/repo@v1.git", "https://***@v1.git"),
            ("https://host/org/repo.git", "https://host/org/repo.git"),
            // scp-like: a plain user is shown, anything more is not.
            ("git@host:org/repo.git", "git@host:org/repo.git"),
            ("bob:secret@host:org/repo.git", "***@host:org/repo.git"),
            ("bob:se/cret@host:org/repo.git", "***@host:org/repo.git"),
        ] {
            let got = redact_url(url);
            assert_eq!(got, want, "{url}");
            for secret in ["secret", "cret", "pw", "se@"] {
                assert!(!got.contains(secret), "{url} -> {got}");
            }
        }
    }

    #[test]
    fn cache_keys_ignore_credentials_but_keep_repositories_apart() {
        assert_eq!(
            cache_key_url("https://a:1@host/org/repo.git?private_token=x"),
            cache_key_url("https://b:2@host/org/repo.git?private_token=y")
        );
        assert_eq!(
            cache_key_url("https://host/org/repo.git"),
            "https://host/org/repo.git"
        );
        assert_ne!(
            cache_key_url("https://one/org/repo@v1.git"),
            cache_key_url("https://two/org/repo@v1.git")
        );
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

    const ED25519: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIMxGovZBRwocwrGsHh2dlx2qfhehKAlPXog0WbVIXLEk";
    const ECDSA: &str = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBMQT9owYXLM7U1dJejAPJ8ofFhjGps9Uafm67tVMjRX2H0iMFuAc1tnsljPBGrA9obMKSzp5u8Z9NBt/Sc/1C6Q=";

    fn blob(b64: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    }

    #[test]
    fn fingerprint_is_what_ssh_keygen_prints() {
        // `ssh-keygen -lf` of that key.
        assert_eq!(
            ssh_fingerprint(&blob(ED25519)),
            "SHA256:wJVtMQ7kFhGcyztKAcZ+JdA7dZLNF88ZiJc9C+mJL4o"
        );
        assert_eq!(blob_key_type(&blob(ED25519)), "ssh-ed25519");
        assert_eq!(blob_key_type(&blob(ECDSA)), "ecdsa-sha2-nistp256");
        assert_eq!(blob_key_type(b"\xff"), "");
    }

    #[test]
    fn known_hosts_plain_and_with_port() {
        let key = blob(ED25519);
        let text = format!(
            "# comment\n\ngit.example.com,10.0.0.1 ssh-ed25519 {ED25519} me@laptop\n\
             [git.example.com]:2222 ssh-ed25519 {ED25519}\n"
        );
        let check = |h: &str, p: u16| known_hosts_check(&text, h, p, &key);
        assert_eq!(check("git.example.com", 22), KnownHost::Match);
        assert_eq!(check("GIT.example.com", 22), KnownHost::Match);
        assert_eq!(check("10.0.0.1", 22), KnownHost::Match);
        assert_eq!(check("git.example.com", 2222), KnownHost::Match);
        // Another port is another host, as for ssh.
        assert_eq!(check("10.0.0.1", 2222), KnownHost::Unknown);
        assert_eq!(check("other.example.com", 22), KnownHost::Unknown);
        assert_eq!(known_hosts_name("::1", 2222), "[::1]:2222");
    }

    #[test]
    fn known_hosts_wrong_key_other_types_revoked() {
        let key = blob(ED25519);
        let other = blob(ECDSA);
        let text = format!("git.example.com ecdsa-sha2-nistp256 {ECDSA}\n");
        assert_eq!(
            known_hosts_check(&text, "git.example.com", 22, &key),
            KnownHost::OtherTypes(vec!["ecdsa-sha2-nistp256".into()])
        );
        // Same type, another key: changed.
        let wrong = {
            let mut k = key.clone();
            let last = k.len() - 1;
            k[last] ^= 1;
            k
        };
        let text = format!("git.example.com ssh-ed25519 {ED25519}\n");
        assert_eq!(
            known_hosts_check(&text, "git.example.com", 22, &wrong),
            KnownHost::Changed
        );
        // Any listed key of the host will do.
        let text = format!(
            "git.example.com ecdsa-sha2-nistp256 {ECDSA}\ngit.example.com ssh-ed25519 {ED25519}\n"
        );
        assert_eq!(
            known_hosts_check(&text, "git.example.com", 22, &key),
            KnownHost::Match
        );
        assert_eq!(
            known_hosts_check(&text, "git.example.com", 22, &other),
            KnownHost::Match
        );
        // Revoked wins over a match, whatever host it is listed for.
        let text =
            format!("git.example.com ssh-ed25519 {ED25519}\n@revoked * ssh-ed25519 {ED25519}\n");
        assert_eq!(
            known_hosts_check(&text, "git.example.com", 22, &key),
            KnownHost::Revoked
        );
        // CA lines and garbage are not keys of the host.
        let text = format!(
            "@cert-authority git.example.com ssh-ed25519 {ED25519}\n\
             git.example.com ssh-ed25519 !!notbase64\ngit.example.com\n"
        );
        assert_eq!(
            known_hosts_check(&text, "git.example.com", 22, &key),
            KnownHost::Unknown
        );
    }

    #[test]
    fn known_hosts_files_user_then_system_unless_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let system = dir.path().join("ssh_known_hosts");
        let files = |named: Option<&str>| {
            known_hosts_files(named.map(OsString::from), Some(home.clone()), &system)
        };
        assert!(files(None).is_empty(), "neither exists");
        std::fs::write(&system, "").unwrap();
        assert_eq!(files(None), vec![system.clone()]);
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        std::fs::write(home.join(".ssh/known_hosts"), "").unwrap();
        assert_eq!(
            files(None),
            vec![home.join(".ssh/known_hosts"), system.clone()]
        );
        // A named file is the only one, even when missing (reading it says so).
        assert_eq!(files(Some("/nope")), vec![PathBuf::from("/nope")]);
    }

    #[test]
    fn known_hosts_patterns() {
        let key = blob(ED25519);
        let text = format!("*.example.com,!evil.example.com ssh-ed25519 {ED25519}\n");
        let check = |h: &str| known_hosts_check(&text, h, 22, &key);
        assert_eq!(check("git.example.com"), KnownHost::Match);
        assert_eq!(check("evil.example.com"), KnownHost::Unknown);
        assert_eq!(check("example.com"), KnownHost::Unknown);
        assert!(glob_match("git?.ex*.com", "git1.example.com"));
        assert!(glob_match("*a*b", "xxaxxab"));
        assert!(!glob_match("git?.example.com", "git.example.com"));
        assert!(glob_match("*", ""));
    }

    #[test]
    fn known_hosts_hashed_names() {
        // `ssh-keygen -H` of "git.example.com KEY" and "[git.example.com]:2222 KEY".
        let key = blob(ED25519);
        let text = format!(
            "|1|5rA8yZNn1LxR3yrXulKmsmZkv6Y=|fwMtGC0m1iA/AmxWDYBuSqSWex8= ssh-ed25519 {ED25519}\n\
             |1|b3J6QVlpvpxhU6GkDZMQbe2bAPA=|EullmgJYwxLjgmVXcxfB1OkLU88= ssh-ed25519 {ED25519}\n"
        );
        let check = |h: &str, p: u16| known_hosts_check(&text, h, p, &key);
        assert_eq!(check("git.example.com", 22), KnownHost::Match);
        assert_eq!(check("git.example.com", 2222), KnownHost::Match);
        assert_eq!(check("git.example.com", 2223), KnownHost::Unknown);
        assert_eq!(check("gitx.example.com", 22), KnownHost::Unknown);
        assert!(!host_patterns_match("|1|bad", "git.example.com"));
    }

    #[test]
    fn ssh_ports() {
        assert_eq!(ssh_port("ssh://git@host:2222/org/repo.git"), 2222);
        assert_eq!(ssh_port("ssh://host/org/repo.git"), 22);
        assert_eq!(ssh_port("ssh://git@[::1]:2200/repo"), 2200);
        assert_eq!(ssh_port("ssh://git@[::1]/repo"), 22);
        assert_eq!(ssh_port("git@host:org/repo.git"), 22);
        assert_eq!(ssh_port("https://host:8443/repo"), 8443);
    }
}
