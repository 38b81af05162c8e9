//! Registry credentials and the token dance of the distribution auth spec.
//!
//! Credentials come from the policy's `auth:` (user name literal or from an
//! environment variable; password from an environment variable or a file) or,
//! when the policy gives none, from docker's `config.json` (`auths`,
//! `credHelpers`, `credsStore`). Secrets live in [`Secret`], whose `Debug`
//! and `Display` never show the value; no error message built here contains one.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::Deserialize;

use crate::config::Auth;

/// A password or token. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The value, for building an `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What we authenticate with.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Anonymous,
    Basic {
        username: String,
        password: Secret,
    },
    /// Docker's identity token (`auths.<host>.identitytoken`, or a credential
    /// helper answering user `<token>`): an OAuth2 refresh token, traded at
    /// the token server for access tokens (`az acr login` leaves one).
    IdentityToken(Secret),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credentials::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

impl Credentials {
    /// `Basic base64(user:pass)`, or `None` when anonymous (or a token).
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Credentials::Anonymous | Credentials::IdentityToken(_) => None,
            Credentials::Basic { username, password } => Some(format!(
                "Basic {}",
                B64.encode(format!("{username}:{}", password.expose()))
            )),
        }
    }
    pub fn is_anonymous(&self) -> bool {
        matches!(self, Credentials::Anonymous)
    }
    pub fn identity_token(&self) -> Option<&Secret> {
        match self {
            Credentials::IdentityToken(t) => Some(t),
            _ => None,
        }
    }
}

/// Credentials from the policy's `auth:` block. `password_file` is resolved
/// against `root` (the policy directory) when relative. Errors name the
/// variable or file, never a value.
pub fn from_policy(auth: &Auth, root: &Path) -> Result<Credentials, String> {
    let username = match (&auth.username, &auth.username_env) {
        (Some(u), _) => Some(u.clone()),
        (None, Some(var)) => Some(std::env::var(var).map_err(|_| {
            format!("auth: environment variable `{var}` (username_env) is not set")
        })?),
        (None, None) => None,
    };
    let password = match (&auth.password_env, &auth.password_file) {
        (Some(var), _) => Some(std::env::var(var).map_err(|_| {
            format!("auth: environment variable `{var}` (password_env) is not set")
        })?),
        (None, Some(file)) => {
            let path: PathBuf = if file.is_absolute() {
                file.clone()
            } else {
                root.join(file)
            };
            let s = std::fs::read_to_string(&path)
                .map_err(|e| format!("auth: cannot read password_file {}: {e}", path.display()))?;
            Some(s.trim_end_matches(['\r', '\n']).to_string())
        }
        (None, None) => None,
    };
    match (username, password) {
        (Some(username), Some(password)) => Ok(Credentials::Basic {
            username,
            password: Secret(password),
        }),
        (None, None) => Ok(Credentials::Anonymous),
        (Some(_), None) => {
            Err("auth: a username is given but no password_env or password_file".into())
        }
        (None, Some(_)) => Err("auth: a password is given but no username or username_env".into()),
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

/// Docker Hub's names (its API host included).
const HUB_HOSTS: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];
/// The key docker uses for Docker Hub in `auths`, `credHelpers` and when
/// asking a credential helper.
pub const HUB_SERVER: &str = "https://index.docker.io/v1/";

fn is_hub(host: &str) -> bool {
    let h = host.strip_suffix(":443").unwrap_or(host);
    HUB_HOSTS.iter().any(|x| h.eq_ignore_ascii_case(x))
}

/// The server address docker files `host`'s credentials under, and hands
/// a credential helper: `https://index.docker.io/v1/` for Docker Hub, else
/// the host itself.
pub fn server_key(host: &str) -> &str {
    if is_hub(host) {
        HUB_SERVER
    } else {
        host
    }
}

/// The key forms docker uses for `host` (`host`, `https://host`, Docker Hub's v1 URL).
fn host_matches(key: &str, host: &str) -> bool {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.split('/').next().unwrap_or(k);
    if k == host {
        return true;
    }
    is_hub(k) && is_hub(host)
}

/// The entry of `map` for `host`: the exact key docker would use first,
/// else any key naming the same host.
fn entry_for<'a, V>(map: &'a BTreeMap<String, V>, host: &str) -> Option<(&'a String, &'a V)> {
    map.get_key_value(server_key(host))
        .or_else(|| map.iter().find(|(k, _)| host_matches(k, host)))
}

/// Credentials found in docker's config, and why they are anonymous when a
/// credential store was configured but could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub creds: Credentials,
    /// Set when the global `credsStore` could not be asked (e.g. its
    /// `docker-credential-X` is not installed): said again on a later 401.
    pub note: Option<String>,
}

impl Found {
    fn plain(creds: Credentials) -> Found {
        Found { creds, note: None }
    }
}

/// Default credentials for `host` from docker's config: a credential helper
/// for the host, else `auths`, else the global `credsStore`, else anonymous.
/// Blocking (may run `docker-credential-<helper>`); call from `spawn_blocking`.
pub fn from_docker_config(host: &str) -> Result<Credentials, String> {
    from_docker_config_noted(host).map(|f| f.creds)
}

/// [`from_docker_config`], with the note on an unusable `credsStore`.
pub fn from_docker_config_noted(host: &str) -> Result<Found, String> {
    match docker_config_path() {
        Some(path) => lookup(&path, host, &|prog, server| {
            run_helper_once(prog, server, HELPER_TIMEOUT)
        }),
        None => Ok(Found::plain(Credentials::Anonymous)),
    }
}

/// A helper's answer for one server, reused for a minute: every repo of a
/// registry looks its credentials up, and a helper that hangs must cost its
/// timeout once per run, not once per repo; a daemon still asks again
/// later, so rotated credentials are picked up.
fn run_helper_once(
    prog: &str,
    server: &str,
    timeout: std::time::Duration,
) -> Result<Credentials, HelperError> {
    const REUSE: std::time::Duration = std::time::Duration::from_secs(60);
    type Answer = (std::time::Instant, Result<Credentials, HelperError>);
    type Slot = std::sync::Arc<std::sync::Mutex<Option<Answer>>>;
    static ASKED: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<(String, String), Slot>>,
    > = std::sync::OnceLock::new();
    let slot = ASKED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry((prog.to_string(), server.to_string()))
        .or_default()
        .clone();
    // Held while asking: those who ask meanwhile wait for this answer.
    let mut last = slot.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((at, answer)) = last.as_ref() {
        if at.elapsed() < REUSE {
            return answer.clone();
        }
    }
    let answer = run_helper(prog, server, timeout);
    *last = Some((std::time::Instant::now(), answer.clone()));
    answer
}

/// [`from_docker_config`] with the config file given.
pub fn from_docker_config_file(path: &Path, host: &str) -> Result<Credentials, String> {
    lookup(path, host, &|prog, server| {
        run_helper(prog, server, HELPER_TIMEOUT)
    })
    .map(|f| f.creds)
}

/// Why `config.json` could not be read as a docker config, without the
/// text at fault (it may be a password): where, and what kind of problem.
fn config_error(path: &Path, e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Syntax => "is not valid JSON",
        Category::Eof => "ends early (its JSON is incomplete)",
        Category::Data => {
            "has a value of the wrong type there (`auths` maps a \
             registry to {\"auth\": \"<base64 user:password>\"} or {\"username\": \"…\", \
             \"password\": \"…\"}, strings; `credHelpers` maps a registry to a helper name; \
             `credsStore` is a helper name)"
        }
        Category::Io => "could not be read",
    };
    format!(
        "{}:{}:{}: docker's config {what}; fix it (or run `docker login` again), or give the \
         registry an `auth:` block in the policy",
        path.display(),
        e.line(),
        e.column()
    )
}

/// A way to ask a credential helper: `(program, server) → answer`.
type Ask<'a> = &'a dyn Fn(&str, &str) -> Result<Credentials, HelperError>;

/// The lookup behind [`from_docker_config_file`], with the helper runner given.
fn lookup(path: &Path, host: &str, ask: Ask<'_>) -> Result<Found, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Found::plain(Credentials::Anonymous))
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let cfg: DockerConfig = serde_json::from_str(&text).map_err(|e| config_error(path, &e))?;
    let server = server_key(host);
    if let Some((key, helper)) = entry_for(&cfg.cred_helpers, host) {
        let prog = format!("docker-credential-{helper}");
        return match ask(&prog, server) {
            Ok(c) => Ok(Found::plain(c)),
            // The helper knows nothing for this registry: anonymous, as with docker.
            Err(HelperError::NoCredentials) => Ok(Found::plain(Credentials::Anonymous)),
            Err(e) => Err(format!(
                "{}: `credHelpers.{key}`: {}",
                path.display(),
                e.describe(&prog, server)
            )),
        };
    }
    if let Some((key, a)) = entry_for(&cfg.auths, host) {
        // As docker: an identity token stands in for the password.
        if let Some(t) = a.identitytoken.as_deref().filter(|s| !s.is_empty()) {
            return Ok(Found::plain(Credentials::IdentityToken(Secret(
                t.to_string(),
            ))));
        }
        if let Some(enc) = a.auth.as_deref().filter(|s| !s.is_empty()) {
            let raw = B64
                .decode(enc.trim())
                .map_err(|_| format!("{}: `auths.{key}.auth` is not base64", path.display()))?;
            let raw = String::from_utf8(raw)
                .map_err(|_| format!("{}: `auths.{key}.auth` is not UTF-8", path.display()))?;
            let (u, p) = raw.split_once(':').ok_or_else(|| {
                format!(
                    "{}: `auths.{key}.auth` is not user:password",
                    path.display()
                )
            })?;
            return Ok(Found::plain(Credentials::Basic {
                username: u.to_string(),
                password: Secret(p.to_string()),
            }));
        }
        if let (Some(u), Some(p)) = (&a.username, &a.password) {
            return Ok(Found::plain(Credentials::Basic {
                username: u.clone(),
                password: Secret(p.clone()),
            }));
        }
    }
    if let Some(store) = cfg.creds_store.as_deref().filter(|s| !s.is_empty()) {
        let prog = format!("docker-credential-{store}");
        return match ask(&prog, server) {
            Ok(c) => Ok(Found::plain(c)),
            // The global store simply has nothing for this host.
            Err(HelperError::NoCredentials) => Ok(Found::plain(Credentials::Anonymous)),
            // The store could not be asked: anonymous still (docker's own
            // pulls of public images work without it), but said.
            Err(e) => {
                let why = format!(
                    "{}: `credsStore`: {}; going on without credentials",
                    path.display(),
                    e.describe(&prog, server)
                );
                tracing::warn!("registry {host}: {why}");
                Ok(Found {
                    creds: Credentials::Anonymous,
                    note: Some(format!(
                        "the credential helper {prog} (credsStore in {}) could not be run: {}",
                        path.display(),
                        e.short()
                    )),
                })
            }
        };
    }
    Ok(Found::plain(Credentials::Anonymous))
}

/// Longest wait for a credential helper's answer.
pub const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Most bytes read from a credential helper.
const HELPER_OUTPUT_MAX: u64 = 1 << 20;

/// Why a credential helper gave no credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelperError {
    /// It ran and has nothing for this server ("credentials not found").
    NoCredentials,
    /// `docker-credential-X` is not on `PATH` (or not runnable).
    Missing(String),
    /// It did not answer in time; it was killed.
    TimedOut(std::time::Duration),
    /// It failed (exit status given).
    Failed(String),
    /// Its answer is not `{"Username": …, "Secret": …}`.
    Unreadable,
}

impl HelperError {
    fn short(&self) -> String {
        match self {
            HelperError::NoCredentials => "it has no credentials for this registry".into(),
            HelperError::Missing(e) => format!("it is not installed or not runnable ({e})"),
            HelperError::TimedOut(d) => format!("it did not answer within {}s", d.as_secs()),
            HelperError::Failed(status) => format!("it failed ({status})"),
            HelperError::Unreadable => {
                "its answer is not JSON {\"Username\": …, \"Secret\": …}".into()
            }
        }
    }

    fn describe(&self, prog: &str, server: &str) -> String {
        let fix = match self {
            HelperError::Missing(_) => "install it or put it on PATH",
            HelperError::TimedOut(_) => {
                "check that it can run without a prompt (an unlocked keychain, no GUI dialog)"
            }
            _ => "check it with `echo SERVER | PROG get`",
        };
        format!(
            "credential helper {prog} asked for {server}: {}; {}",
            self.short(),
            fix.replace("SERVER", server).replace("PROG", prog)
        )
    }
}

#[derive(Deserialize)]
struct HelperOut {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// `PROG get` with the server URL on stdin, killed after `timeout`.
pub fn run_helper(
    prog: &str,
    server: &str,
    timeout: std::time::Duration,
) -> Result<Credentials, HelperError> {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    use std::time::Instant;
    let started = Instant::now();
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(prog)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Its own process group, so a timeout kills what it started too.
        .process_group(0)
        .spawn()
        .map_err(|e| HelperError::Missing(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    // Read on a thread: the helper (or a process it left behind) may hold
    // its output open for ever.
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout.take(HELPER_OUTPUT_MAX).read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    }
    let kill = |child: &mut std::process::Child| {
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) on the helper's own process group (its pid,
            // set by `process_group(0)`); no memory is involved.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        HelperError::TimedOut(timeout)
    };
    let out = match rx.recv_timeout(timeout) {
        Ok(out) => out,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return Err(kill(&mut child)),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Vec::new(),
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() >= timeout => return Err(kill(&mut child)),
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(5)),
            Err(e) => return Err(HelperError::Failed(e.to_string())),
        }
    };
    if !status.success() {
        // docker-credential-helpers print this (exit 1) for an unknown server.
        let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
        if text.contains("credentials not found") {
            return Err(HelperError::NoCredentials);
        }
        return Err(HelperError::Failed(status.to_string()));
    }
    let h: HelperOut = serde_json::from_slice(&out).map_err(|_| HelperError::Unreadable)?;
    // The credential helpers' convention for an identity token.
    if h.username == "<token>" {
        return Ok(Credentials::IdentityToken(Secret(h.secret)));
    }
    Ok(Credentials::Basic {
        username: h.username,
        password: Secret(h.secret),
    })
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Vec<String>,
        /// `error="insufficient_scope"`, `invalid_token`, … when given.
        error: Option<String>,
    },
}

/// One `WWW-Authenticate` value may hold several challenges, comma-joined
/// (`Basic realm="r", Bearer realm="…",service="…"`, RFC 9110 §11.6.1): each
/// starts with a scheme word followed by a space, where a parameter is a
/// `key=value`. Commas inside quoted values are not separators.
pub fn split_challenges(header: &str) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    let (mut cur, mut quoted, mut escaped) = (String::new(), false, false);
    for c in header.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    let mut out: Vec<String> = Vec::new();
    for p in parts {
        let t = p.trim();
        if t.is_empty() {
            continue;
        }
        // `Scheme rest` (a space before any `=`) starts a challenge; a bare
        // word with no `=` (`Negotiate`) is one too.
        let starts = match (t.find(' '), t.find('=')) {
            (Some(sp), Some(eq)) => sp < eq,
            (_, None) => true,
            (None, Some(_)) => false,
        };
        match out.last_mut() {
            Some(last) if !starts => {
                last.push(',');
                last.push_str(t);
            }
            _ => out.push(t.to_string()),
        }
    }
    out
}

/// Parses `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    read_challenge(header).ok()
}

/// [`parse_challenge`], saying why a challenge cannot be answered: an
/// unsupported scheme (named) or a Bearer challenge without a realm.
pub fn read_challenge(header: &str) -> Result<Challenge, String> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Ok(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        let token = !scheme.is_empty()
            && scheme.len() <= 40
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
        return Err(if token {
            format!(
                "the registry asks for `{scheme}` authentication, which regimen does not \
                 support (only Basic and Bearer tokens)"
            )
        } else {
            "the registry's WWW-Authenticate challenge is empty or malformed".into()
        });
    }
    let params = parse_params(rest);
    let realm = params
        .get("realm")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            "the registry's Bearer challenge is malformed: it names no token realm".to_string()
        })?
        .clone();
    Ok(Challenge::Bearer {
        realm,
        service: params.get("service").cloned(),
        scope: params
            .get("scope")
            .map(|s| {
                s.split(' ')
                    .filter(|x| !x.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        error: params.get("error").cloned().filter(|e| !e.is_empty()),
    })
}

/// Whether a token for scope `have` also grants scope `want`: the same
/// resource (`repository:team/api`), and every action of `want` among
/// those of `have`, in any order (`pull,push` covers `push,pull` and `pull`).
pub fn scope_covers(have: &str, want: &str) -> bool {
    let split = |s: &str| -> Option<(String, Vec<String>)> {
        let (resource, actions) = s.rsplit_once(':')?;
        Some((
            resource.to_string(),
            actions.split(',').map(str::to_string).collect(),
        ))
    };
    match (split(have), split(want)) {
        (Some((r1, a1)), Some((r2, a2))) => {
            r1 == r2
                && a2
                    .iter()
                    .all(|a| a1.contains(a) || a1.iter().any(|x| x == "*"))
        }
        _ => have == want,
    }
}

/// `repository:team/api:pull,push` → `push on repo team/api`, for messages.
pub fn describe_scope(scope: &str) -> String {
    let clean = |s: &str| -> String { s.chars().filter(|c| !c.is_control()).take(200).collect() };
    let mut parts = scope.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("repository"), Some(name), Some(actions)) => {
            let acts: Vec<&str> = actions.split(',').filter(|a| !a.is_empty()).collect();
            // `pull,push` is asked for a push: the push is what is missing.
            let main: Vec<&str> = if acts.len() > 1 {
                acts.iter().copied().filter(|a| *a != "pull").collect()
            } else {
                acts
            };
            format!("{} on repo {}", clean(&main.join(" and ")), clean(name))
        }
        (Some("registry"), Some("catalog"), _) => "listing the catalog".into(),
        _ => format!("scope `{}`", clean(scope)),
    }
}

/// `k="v, with commas",k2=v2` → map (keys lowercased).
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next().is_none() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            val.push(n)
                        }
                    }
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), val.trim().to_string());
    }
    out
}

/// A token endpoint's answer.
#[derive(Debug)]
pub struct TokenResponse {
    pub token: Option<String>,
    /// Seconds; `None` when missing or not a non-negative number.
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    /// Reads `{"token"|"access_token": "…", "expires_in": N}`. Errors never
    /// quote the body (it may hold a token).
    pub fn from_slice(body: &[u8]) -> Result<TokenResponse, &'static str> {
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|_| "the answer is not JSON")?;
        let obj = v.as_object().ok_or("the answer is not a JSON object")?;
        let pick = |k: &str| {
            obj.get(k)
                .and_then(|t| t.as_str())
                .filter(|t| !t.is_empty())
                .map(String::from)
        };
        let expires_in = obj.get("expires_in").and_then(|e| {
            e.as_u64()
                .or_else(|| e.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
        });
        Ok(TokenResponse {
            token: pick("token").or_else(|| pick("access_token")),
            expires_in,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn several_challenges_in_one_header_are_split() {
        let h = r#"Basic realm="a, b", Bearer realm="https://auth/token",service="reg",scope="repository:x:pull,push""#;
        assert_eq!(
            split_challenges(h),
            vec![
                r#"Basic realm="a, b""#.to_string(),
                r#"Bearer realm="https://auth/token",service="reg",scope="repository:x:pull,push""#
                    .to_string(),
            ]
        );
        assert_eq!(
            split_challenges(r#"Negotiate, Basic realm="r""#),
            vec!["Negotiate".to_string(), r#"Basic realm="r""#.to_string()]
        );
        assert_eq!(split_challenges(r#"Bearer realm="r",service="s""#).len(), 1);
    }

    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push repository:c:pull""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: vec![
                    "repository:a/b:pull,push".into(),
                    "repository:c:pull".into()
                ],
                error: None,
            }
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn unanswerable_challenges_say_why() {
        let e = read_challenge("Negotiate").unwrap_err();
        assert!(
            e.contains("`Negotiate` authentication") && e.contains("not support"),
            "{e}"
        );
        let e = read_challenge(r#"Bearer service="x""#).unwrap_err();
        assert!(e.contains("malformed") && e.contains("realm"), "{e}");
        let e = read_challenge("\u{1b}[31m").unwrap_err();
        assert!(e.contains("malformed") && !e.contains('\u{1b}'), "{e}");
        let Ok(Challenge::Bearer { error, .. }) = read_challenge(
            r#"Bearer realm="https://a/t",scope="repository:x:pull,push",error="insufficient_scope""#,
        ) else {
            panic!("a Bearer challenge");
        };
        assert_eq!(error.as_deref(), Some("insufficient_scope"));
        assert_eq!(
            describe_scope("repository:team/api:pull,push"),
            "push on repo team/api"
        );
        assert_eq!(
            describe_scope("repository:team/api:pull"),
            "pull on repo team/api"
        );
        assert_eq!(describe_scope("registry:catalog:*"), "listing the catalog");
    }

    #[test]
    fn scopes_cover_the_same_actions_in_any_order() {
        assert!(scope_covers(
            "repository:team/api:pull,push",
            "repository:team/api:push,pull"
        ));
        assert!(scope_covers(
            "repository:team/api:pull,push",
            "repository:team/api:pull"
        ));
        assert!(!scope_covers(
            "repository:team/api:pull",
            "repository:team/api:pull,push"
        ));
        assert!(!scope_covers(
            "repository:team/api:pull,push",
            "repository:team/web:pull"
        ));
        assert!(!scope_covers(
            "repository:team/api:pull,push",
            "repository:team/api:delete"
        ));
        assert!(scope_covers("registry:catalog:*", "registry:catalog:*"));
    }

    #[test]
    fn token_answers_are_read_without_quoting_them() {
        let t = TokenResponse::from_slice(br#"{"access_token":"abc","expires_in":1e30}"#).unwrap();
        assert_eq!(t.token.as_deref(), Some("abc"));
        assert_eq!(t.expires_in, Some(u64::MAX));
        let t = TokenResponse::from_slice(br#"{"token":"abc","expires_in":-5}"#).unwrap();
        assert_eq!(t.expires_in, None);
        let t = TokenResponse::from_slice(br#"{"token":12345678901}"#).unwrap();
        assert_eq!(t.token, None);
        let e = TokenResponse::from_slice(b"tok-s3cr3t").unwrap_err();
        assert!(!e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn a_malformed_docker_config_is_located_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.json");
        let enc = B64.encode("user:S3cr3t-pw");
        for (text, line, col) in [
            (
                "{\"auths\":{\"127.0.0.1:45101\":{\"username\":\"user\",\n\"password\":98765432101}}}"
                    .to_string(),
                2,
                22,
            ),
            (format!("{{\"auths\":{{\"h\":\"{enc}\"}}}}"), 1, 16 + enc.len()),
            (format!("{{\"auths\":{{\"h\":{{\"auth\":\"{enc}"), 1, 23 + enc.len()),
        ] {
            std::fs::write(&cfg, &text).unwrap();
            let e = from_docker_config_file(&cfg, "h").unwrap_err();
            for secret in ["98765432101", enc.as_str(), "S3cr3t"] {
                assert!(!e.contains(secret), "{e}");
            }
            assert!(
                e.starts_with(&format!("{}:{line}:{col}: ", cfg.display())),
                "{e}"
            );
            assert!(e.contains("auth:"), "says what to do: {e}");
        }
    }

    type Asked = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

    /// A fake `ask`: records the server asked for, answers `answer`.
    fn asker(
        answer: Result<Credentials, HelperError>,
    ) -> (
        Asked,
        impl Fn(&str, &str) -> Result<Credentials, HelperError>,
    ) {
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let a2 = asked.clone();
        (asked, move |prog: &str, server: &str| {
            a2.lock()
                .unwrap()
                .push((prog.to_string(), server.to_string()));
            answer.clone()
        })
    }

    #[test]
    fn docker_hub_is_asked_for_by_its_v1_url() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.json");
        let alice = Credentials::Basic {
            username: "alice".into(),
            password: Secret::new("pw"),
        };
        std::fs::write(&cfg, r#"{"credsStore":"desktop"}"#).unwrap();
        for host in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
            let (asked, ask) = asker(Ok(alice.clone()));
            assert_eq!(lookup(&cfg, host, &ask).unwrap().creds, alice);
            assert_eq!(
                *asked.lock().unwrap(),
                vec![("docker-credential-desktop".into(), HUB_SERVER.into())]
            );
        }
        let (asked, ask) = asker(Ok(alice.clone()));
        lookup(&cfg, "reg.example:5000", &ask).unwrap();
        assert_eq!(asked.lock().unwrap()[0].1, "reg.example:5000");

        // credHelpers under docker's key for the Hub, and `auths` preferring it.
        std::fs::write(
            &cfg,
            format!(
                r#"{{"credHelpers":{{"{HUB_SERVER}":"hub"}},"auths":{{"docker.io":{{"auth":"{}"}},"{HUB_SERVER}":{{"auth":"{}"}}}}}}"#,
                B64.encode("old:x"),
                B64.encode("bob:y")
            ),
        )
        .unwrap();
        let (asked, ask) = asker(Ok(alice.clone()));
        assert_eq!(lookup(&cfg, "docker.io", &ask).unwrap().creds, alice);
        assert_eq!(
            *asked.lock().unwrap(),
            vec![("docker-credential-hub".into(), HUB_SERVER.into())]
        );
        std::fs::write(
            &cfg,
            format!(
                r#"{{"auths":{{"docker.io":{{"auth":"{}"}},"{HUB_SERVER}":{{"auth":"{}"}}}}}}"#,
                B64.encode("old:x"),
                B64.encode("bob:y")
            ),
        )
        .unwrap();
        let (_, ask) = asker(Err(HelperError::Unreadable));
        assert_eq!(
            lookup(&cfg, "registry-1.docker.io", &ask).unwrap().creds,
            Credentials::Basic {
                username: "bob".into(),
                password: Secret::new("y")
            }
        );
    }

    #[test]
    fn helpers_without_credentials_are_anonymous_a_missing_store_is_noted() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.json");
        std::fs::write(&cfg, r#"{"credHelpers":{"reg.example":"pass"}}"#).unwrap();
        let (_, ask) = asker(Err(HelperError::NoCredentials));
        assert_eq!(
            lookup(&cfg, "reg.example", &ask).unwrap(),
            Found::plain(Credentials::Anonymous)
        );
        let (_, ask) = asker(Err(HelperError::TimedOut(HELPER_TIMEOUT)));
        let e = lookup(&cfg, "reg.example", &ask).unwrap_err();
        assert!(
            e.contains("docker-credential-pass") && e.contains("did not answer within 30s"),
            "{e}"
        );

        std::fs::write(&cfg, r#"{"credsStore":"gone"}"#).unwrap();
        let (_, ask) = asker(Err(HelperError::NoCredentials));
        assert_eq!(
            lookup(&cfg, "reg.example", &ask).unwrap(),
            Found::plain(Credentials::Anonymous)
        );
        let (_, ask) = asker(Err(HelperError::Missing("No such file".into())));
        let f = lookup(&cfg, "reg.example", &ask).unwrap();
        assert_eq!(f.creds, Credentials::Anonymous);
        let note = f.note.unwrap();
        assert!(
            note.contains("docker-credential-gone") && note.contains("could not be run"),
            "{note}"
        );
    }

    /// A shell script standing in for `docker-credential-X`.
    fn script(dir: &Path, body: &str) -> String {
        use std::os::unix::fs::PermissionsExt as _;
        let p = dir.join("docker-credential-test");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.to_str().unwrap().to_string()
    }

    /// A hanging helper costs its timeout once (not once per repo), and
    /// what it started dies with it.
    #[test]
    fn a_hanging_helper_is_asked_once_and_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let p = script(
            dir.path(),
            &format!("sleep 100 & echo $! > {}; sleep 100", pids.display()),
        );
        let short = std::time::Duration::from_millis(300);
        let started = std::time::Instant::now();
        for _ in 0..4 {
            assert_eq!(
                run_helper_once(&p, "hang.example", short),
                Err(HelperError::TimedOut(short))
            );
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "asked more than once"
        );
        let child = std::fs::read_to_string(&pids).unwrap();
        let gone = (0..50).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            std::fs::read_to_string(format!("/proc/{}/stat", child.trim()))
                .map_or(true, |st| st.contains(") Z "))
        });
        assert!(gone, "the helper's child {child} outlived it");
    }

    #[test]
    fn helper_runs_are_read_and_time_out() {
        let dir = tempfile::tempdir().unwrap();
        let t = std::time::Duration::from_secs(5);
        let p = script(
            dir.path(),
            r#"read s; [ "$1" = get ] && printf '{"Username":"u","Secret":"%s-pw"}' "$s""#,
        );
        assert_eq!(
            run_helper(&p, "reg.example", t).unwrap(),
            Credentials::Basic {
                username: "u".into(),
                password: Secret::new("reg.example-pw")
            }
        );
        // The helpers' way of handing over an identity token.
        let p = script(
            dir.path(),
            r#"printf '{"Username":"<token>","Secret":"refresh-1"}'"#,
        );
        assert_eq!(
            run_helper(&p, "acr.example", t).unwrap(),
            Credentials::IdentityToken(Secret::new("refresh-1"))
        );
        let p = script(
            dir.path(),
            "echo 'credentials not found in native keychain'; exit 1",
        );
        assert_eq!(run_helper(&p, "x", t), Err(HelperError::NoCredentials));
        let p = script(dir.path(), "echo oops; exit 3");
        assert!(matches!(
            run_helper(&p, "x", t),
            Err(HelperError::Failed(_))
        ));
        let p = script(dir.path(), "echo not-json");
        assert_eq!(run_helper(&p, "x", t), Err(HelperError::Unreadable));
        let p = script(dir.path(), "sleep 30");
        let started = std::time::Instant::now();
        let short = std::time::Duration::from_millis(300);
        assert_eq!(
            run_helper(&p, "x", short),
            Err(HelperError::TimedOut(short))
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(matches!(
            run_helper("/nonexistent/docker-credential-x", "x", t),
            Err(HelperError::Missing(_))
        ));
    }

    #[test]
    fn secrets_are_redacted() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: Secret::new("hunter2"),
        };
        let s = format!(
            "{c:?} {:?} {}",
            Secret::new("hunter2"),
            Secret::new("hunter2")
        );
        assert!(!s.contains("hunter2"), "{s}");
        assert_eq!(
            c.basic_header().unwrap(),
            format!("Basic {}", B64.encode("u:hunter2"))
        );
    }

    #[test]
    fn docker_hub_keys_match() {
        assert!(host_matches("https://index.docker.io/v1/", "docker.io"));
        assert!(host_matches("https://reg.example:5000", "reg.example:5000"));
        assert!(!host_matches("reg.example", "reg.example:5000"));
    }

    #[test]
    fn docker_config_auths_and_helpers() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.json");
        let enc = B64.encode("carol:pa:ss");
        let acr = B64.encode("00000000-0000-0000-0000-000000000000:");
        std::fs::write(
            &cfg,
            format!(
                r#"{{"auths":{{"https://reg.example:5000":{{"auth":"{enc}"}},"other.example":{{}},
                "acr.example":{{"auth":"{acr}","identitytoken":"refresh-2"}}}},
                "credHelpers":{{"helped.example":"regimen-surely-missing"}}}}"#
            ),
        )
        .unwrap();
        assert_eq!(
            from_docker_config_file(&cfg, "reg.example:5000").unwrap(),
            Credentials::Basic {
                username: "carol".into(),
                password: Secret::new("pa:ss")
            }
        );
        assert_eq!(
            from_docker_config_file(&cfg, "other.example").unwrap(),
            Credentials::Anonymous
        );
        // `az acr login`'s entry: the identity token, not the empty password.
        assert_eq!(
            from_docker_config_file(&cfg, "acr.example").unwrap(),
            Credentials::IdentityToken(Secret::new("refresh-2"))
        );
        assert_eq!(
            from_docker_config_file(&cfg, "unknown.example").unwrap(),
            Credentials::Anonymous
        );
        let e = from_docker_config_file(&cfg, "helped.example").unwrap_err();
        assert!(
            e.contains("docker-credential-regimen-surely-missing"),
            "{e}"
        );
        assert_eq!(
            from_docker_config_file(&dir.path().join("none.json"), "x").unwrap(),
            Credentials::Anonymous
        );
    }

    #[test]
    fn policy_password_file_is_relative_to_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        let auth = Auth {
            username: Some("bob".into()),
            password_file: Some("pw".into()),
            ..Auth::default()
        };
        let c = from_policy(&auth, dir.path()).unwrap();
        assert_eq!(
            c,
            Credentials::Basic {
                username: "bob".into(),
                password: Secret::new("s3cret")
            }
        );
        let bad = Auth {
            username: Some("bob".into()),
            password_env: Some("REGIMEN_TEST_SURELY_UNSET_VAR".into()),
            ..Auth::default()
        };
        let e = from_policy(&bad, dir.path()).unwrap_err();
        assert!(
            e.contains("REGIMEN_TEST_SURELY_UNSET_VAR") && e.contains("password_env"),
            "{e}"
        );
    }
}
