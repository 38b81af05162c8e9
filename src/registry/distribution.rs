//! The distribution (HTTP) backend: the OCI distribution API over reqwest.
//!
//! Every request goes through [`Distribution::send`], which applies, in order:
//! authentication (anonymous, basic, or a bearer token fetched from the
//! `WWW-Authenticate` challenge and cached per scope set), the per-registry
//! rate limit, the per-registry concurrency semaphore, and retries with
//! backoff for 429/502/503/504 and dropped connections (`Retry-After`
//! honoured). A 401 is answered by re-authenticating once; a second 401 (or a
//! 403) is a `Denied` error, never a retry storm.
//!
//! Blob uploads: blobs up to [`SMALL_BLOB`] bytes are buffered and verified
//! locally, so a failed upload restarts its session (POST again) and resends.
//! Larger blobs are streamed straight from the source in one monolithic PUT
//! (memory stays flat); a stream cannot be replayed, so a failed large upload
//! cancels its session and returns an `Other` error whose message says it
//! may be retried: re-fetching the source stream is the caller's job (the
//! copy engine retries the whole blob copy).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use reqwest::header::{
    HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, IF_NONE_MATCH,
};
use reqwest::{Method, Response, StatusCode, Url};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256, Sha512};
use tokio::sync::{Mutex as AsyncMutex, OnceCell, Semaphore};

use super::auth::{self, Challenge, Credentials, Secret, TokenResponse};
use super::manifest::MediaType;
use super::{
    BlobStart, BlobStream, Descriptor, ErrorKind, FallbackIndex, Manifest, ManifestHead,
    ReferrerList, Registry, RegistryError, Result, UploadSession,
};
use crate::model::{Digest, RegistryName, Repo, Tag};

/// Blobs up to this size are buffered so their upload can be retried whole.
pub const SMALL_BLOB: u64 = 4 * 1024 * 1024;
/// Default page size for tags and catalog listing.
const PAGE_SIZE: usize = 1000;
/// Attempts per request (first try included).
const ATTEMPTS: u32 = 5;
/// Tries of a read the registry answers with 500 (see `send`).
const READ_500_ATTEMPTS: u32 = 3;
/// Upload sessions tried per (replayable) blob.
const UPLOAD_SESSIONS: u32 = 3;
/// Longest single wait, whatever `Retry-After` says.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// How long a response may keep the client waiting between reads, and a
/// streamed upload go without the registry taking more of it.
const IDLE: Duration = Duration::from_secs(120);
/// Once the last byte of a streamed upload is handed over, the registry
/// gets `IDLE` plus this long per byte to answer: committing a big blob
/// (hashing it again, moving it in object storage) takes time in proportion.
const COMMIT_BYTES_PER_SEC: u64 = 16 << 20;
/// Longest a bearer token is used, whatever its `expires_in` says.
const MAX_TOKEN_LIFE: u64 = 24 * 60 * 60;

/// The first ask of the referrers API in a run, and how it went.
enum ReferrersProbe {
    NotYet,
    /// It answered (whether or not the API exists: see `referrers_api`).
    Answered,
    /// It failed: later asks fail alike, without a request.
    Failed(RegistryError),
}

const REFERRERS_UNKNOWN: u8 = 0;
const REFERRERS_YES: u8 = 1;
const REFERRERS_NO: u8 = 2;

/// Where credentials come from.
enum CredSource {
    Fixed(Credentials),
    /// Docker's config.json, read on the first challenge.
    DockerConfig(OnceCell<auth::Found>),
}

/// What the registry asked for, learned from its first challenge.
#[derive(Clone)]
enum Scheme {
    Unknown,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

struct Token {
    value: Secret,
    expires: Instant,
}

/// A shared "one request every `interval`" limiter.
struct Rate {
    interval: Duration,
    next: std::sync::Mutex<Instant>,
}

impl Rate {
    async fn wait(&self) {
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let at = (*next).max(now);
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at.into()).await;
    }
}

/// A request body: replayable bytes, or a stream that can be sent once.
enum Body {
    Empty,
    Bytes(Bytes),
    Stream(Option<BlobStream>, u64),
}

struct Req {
    method: Method,
    url: Url,
    scopes: Vec<String>,
    headers: Vec<(reqwest::header::HeaderName, String)>,
    body: Body,
    attempts: u32,
}

impl Req {
    fn new(method: Method, url: Url, scopes: Vec<String>) -> Req {
        Req {
            method,
            url,
            scopes,
            headers: Vec::new(),
            body: Body::Empty,
            attempts: ATTEMPTS,
        }
    }
    fn header(mut self, k: reqwest::header::HeaderName, v: impl Into<String>) -> Req {
        self.headers.push((k, v.into()));
        self
    }
    fn replayable(&self) -> bool {
        !matches!(self.body, Body::Stream(..))
    }
}

/// How far a streamed upload has got: the registry takes more of it only as
/// fast as it reads, so a registry that stopped reading shows as no progress.
struct Progress {
    len: u64,
    state: std::sync::Mutex<(u64, tokio::time::Instant)>,
}

impl Progress {
    fn new(len: u64) -> Progress {
        Progress {
            len,
            state: std::sync::Mutex::new((0, tokio::time::Instant::now())),
        }
    }

    /// The clock starts when the request goes, not while it waits its turn.
    fn start(&self) -> &Progress {
        self.sent(0);
        self
    }

    fn sent(&self, n: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *s = (s.0 + n, tokio::time::Instant::now());
    }

    /// Until when the registry may stay silent: `idle` after the last chunk
    /// it took, and once it has them all, the time to commit that many bytes.
    fn deadline(&self, idle: Duration) -> tokio::time::Instant {
        let (sent, at) = *self.state.lock().unwrap_or_else(|e| e.into_inner());
        let commit = if sent >= self.len {
            Duration::from_secs(self.len / COMMIT_BYTES_PER_SEC)
        } else {
            Duration::ZERO
        };
        at + idle + commit
    }

    fn stalled_text(&self, idle: Duration) -> String {
        let (sent, at) = *self.state.lock().unwrap_or_else(|e| e.into_inner());
        if sent >= self.len {
            format!(
                "all {} bytes sent, then no answer for {}s",
                self.len,
                at.elapsed().as_secs()
            )
        } else {
            format!(
                "the upload stalled at {sent} of {} bytes: nothing moved for {}s (the registry \
                 stopped taking it, or the source stopped sending)",
                self.len,
                idle.as_secs()
            )
        }
    }
}

/// `fut`'s output, or `None` once `progress` has stood still past its
/// deadline (checked again whenever the deadline comes, as it moves on).
async fn until_idle<F: std::future::Future>(
    fut: F,
    progress: &Progress,
    idle: Duration,
) -> Option<F::Output> {
    tokio::pin!(fut);
    loop {
        let deadline = progress.deadline(idle);
        tokio::select! {
            out = &mut fut => return Some(out),
            _ = tokio::time::sleep_until(deadline) => {
                if progress.deadline(idle) <= tokio::time::Instant::now() {
                    return None;
                }
            }
        }
    }
}

/// A failed request: the error, and whether trying again later might help.
struct Failure {
    err: RegistryError,
    transient: bool,
}

impl From<Failure> for RegistryError {
    fn from(f: Failure) -> RegistryError {
        f.err
    }
}

impl From<RegistryError> for Failure {
    fn from(err: RegistryError) -> Failure {
        Failure {
            err,
            transient: false,
        }
    }
}

/// Serialises updates of one subject's referrers tag index.
type SubjectLock = Arc<AsyncMutex<()>>;

/// A registry spoken to over the distribution API.
pub struct Distribution {
    name: RegistryName,
    base: Url,
    host: String,
    client: reqwest::Client,
    /// For streamed uploads: no read timeout (see `send`).
    upload_client: reqwest::Client,
    /// How long a streamed upload may go without progress.
    idle: Duration,
    permits: Semaphore,
    concurrency: usize,
    rate: Option<Rate>,
    creds: CredSource,
    scheme: std::sync::Mutex<Scheme>,
    /// The first look at `/v2/` when credentials are configured: learns the
    /// scheme and, for Basic, checks the credentials once for everyone.
    probe: OnceCell<()>,
    /// Held by the one login attempt (Basic check or token fetch) made
    /// while the credentials are not yet known good: refusals stay few.
    login: AsyncMutex<()>,
    /// The registry took the configured credentials once this run.
    accepted: std::sync::atomic::AtomicBool,
    /// The registry refused the configured credentials this run: what it
    /// said. Later requests fail at once with it.
    refused: std::sync::Mutex<Option<String>>,
    tokens: AsyncMutex<HashMap<String, Token>>,
    /// One token fetch per scope set at a time: the requests that start
    /// together (a plan's HEADs on one repo, a copy's blobs) and those that
    /// meet the same expired token share one fetch, not one each.
    token_fetches: std::sync::Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
    referrers_api: AtomicU8,
    /// Held by the one request that finds out whether the registry has the
    /// referrers API: a plan asks it of every copied image at once, and a
    /// registry without it should see one such request, not one per image.
    referrers_probe: AsyncMutex<ReferrersProbe>,
    page_size: usize,
    backoff: Duration,
    tag_index_locks: std::sync::Mutex<HashMap<(Repo, Digest), SubjectLock>>,
    /// Per repo: a manifest DELETE alone, tag writes together. Distribution
    /// deletes a manifest by walking every tag link of the repo, and a link
    /// another request is writing meanwhile fails the walk half-way (500,
    /// `invalid checksum digest format`), which can leave a tag on the
    /// deleted manifest: in the tag list, but never found.
    repo_writes: std::sync::Mutex<HashMap<Repo, Arc<tokio::sync::RwLock<()>>>>,
    /// manifest digest → the digest its `subject` names and its artifact type
    /// (`None`: none, or not a readable manifest). Content addressed, so it
    /// never changes.
    subjects: std::sync::Mutex<HashMap<Digest, Subject>>,
}

/// A manifest's `subject` digest and artifact type (`artifactType`, else its
/// config's media type).
type Subject = (Option<Digest>, Option<String>);

impl fmt::Debug for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Distribution")
            .field("name", &self.name)
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

fn scope_pull(repo: &Repo) -> String {
    format!("repository:{repo}:pull")
}
fn scope_push(repo: &Repo) -> String {
    format!("repository:{repo}:pull,push")
}
fn scope_delete(repo: &Repo) -> String {
    format!("repository:{repo}:delete")
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The media type without parameters (`; charset=…`).
fn bare_media_type(ct: Option<&str>) -> Option<String> {
    ct.map(|c| c.split(';').next().unwrap_or("").trim().to_string())
        .filter(|c| !c.is_empty())
}

/// `host[:port]` of a URL, for messages.
fn host_port(u: &Url) -> String {
    u.host_str().map_or(String::new(), |h| match u.port() {
        Some(p) => format!("{h}:{p}"),
        None => h.to_string(),
    })
}

/// Whether `bytes` hash to `d` (sha256 or sha512).
fn digest_matches(d: &Digest, bytes: &[u8]) -> bool {
    match d.algorithm() {
        "sha256" => hex::encode(Sha256::digest(bytes)) == d.hex(),
        "sha512" => hex::encode(Sha512::digest(bytes)) == d.hex(),
        _ => false,
    }
}

/// The `rel="next"` target of a `Link` header.
fn next_link(h: &HeaderMap) -> Option<String> {
    for v in h.get_all("link") {
        let Ok(v) = v.to_str() else { continue };
        for part in v.split(',') {
            let part = part.trim();
            let Some(start) = part.find('<') else {
                continue;
            };
            let Some(end) = part.find('>') else { continue };
            if part[end..].contains("rel=\"next\"") || part[end..].contains("rel=next") {
                return Some(part[start + 1..end].to_string());
            }
        }
    }
    None
}

/// `Retry-After` as seconds or as an HTTP date (a date in the past is no
/// wait). Callers cap it at [`MAX_WAIT`].
fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = header_str(h, "retry-after")?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// A later request's reason, after the registry refused the credentials.
fn refused_text(first: &str) -> String {
    format!("the registry refused the configured credentials earlier in this run ({first}); fix them and run again")
}

/// Every value of header `name`.
fn header_values(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(String::from)
        .collect()
}

/// The challenge to answer among a 401's `WWW-Authenticate` values (Bearer
/// first, then Basic), or why none can be answered.
fn pick_challenge(values: &[String]) -> std::result::Result<Challenge, String> {
    let mut problem = None;
    let mut basic = false;
    for v in values.iter().flat_map(|v| auth::split_challenges(v)) {
        match auth::read_challenge(&v) {
            Ok(c @ Challenge::Bearer { .. }) => return Ok(c),
            Ok(Challenge::Basic) => basic = true,
            Err(e) => {
                problem.get_or_insert(e);
            }
        }
    }
    if basic {
        return Ok(Challenge::Basic);
    }
    Err(problem.unwrap_or_else(|| "the 401 carries no WWW-Authenticate challenge".into()))
}

/// How long a token answered with `expires_in` is used: renewed a quarter
/// of its life (at most 15 s) early, never longer than [`MAX_TOKEN_LIFE`].
fn token_life(expires_in: Option<u64>) -> Duration {
    let life = expires_in.unwrap_or(60).clamp(10, MAX_TOKEN_LIFE);
    Duration::from_secs(life - life.min(60) / 4)
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}
#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// Where Podman/skopeo and Docker look for a registry's own CA files:
/// `DIR/HOST[:PORT]/*.crt`.
const CERTS_D: [&str; 2] = ["/etc/containers/certs.d", "/etc/docker/certs.d"];

/// The CA certificates in `DIR/HOST/*.crt` for each of `dirs` (PEM, one or
/// more per file). A missing folder is fine; an unreadable file is an error.
fn certs_d_cas(
    dirs: &[&Path],
    host: &str,
) -> std::result::Result<Vec<reqwest::Certificate>, String> {
    let mut out = Vec::new();
    for dir in dirs {
        let dir = dir.join(host);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .collect();
        files.sort();
        for f in files {
            let pem = std::fs::read(&f)
                .map_err(|e| format!("cannot read the CA file {}: {e}", f.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("the CA file {} is not PEM certificates: {e}", f.display()))?;
            if certs.is_empty() {
                return Err(format!("the CA file {} holds no certificate", f.display()));
            }
            out.extend(certs);
        }
    }
    Ok(out)
}

impl Distribution {
    /// The backend for a policy registry. `root` is the policy directory
    /// (relative `password_file` paths are resolved against it).
    pub fn new(
        name: RegistryName,
        cfg: &crate::config::Registry,
        root: &Path,
    ) -> std::result::Result<Distribution, String> {
        Distribution::with_idle(name, cfg, root, IDLE)
    }

    /// `new`, waiting `idle` (not `IDLE`) on a silent registry: tests.
    fn with_idle(
        name: RegistryName,
        cfg: &crate::config::Registry,
        root: &Path,
        idle: Duration,
    ) -> std::result::Result<Distribution, String> {
        use crate::config::Endpoint;
        let (scheme, host) = match &cfg.url {
            Endpoint::Http(h) => ("http", h),
            Endpoint::Https(h) => ("https", h),
            Endpoint::OciLayout(p) => {
                return Err(format!(
                    "registry `{name}`: {} is an OCI layout, not a distribution registry",
                    p.display()
                ))
            }
        };
        let host = host.trim_end_matches('/').to_string();
        // Docker Hub's API lives on another host than its name.
        let api_host = match host.as_str() {
            "docker.io" | "index.docker.io" => "registry-1.docker.io",
            h => h,
        };
        let base = Url::parse(&format!("{scheme}://{api_host}/"))
            .map_err(|e| format!("registry `{name}`: `{host}` is not a host: {e}"))?;
        let creds = match &cfg.auth {
            Some(a) => {
                CredSource::Fixed(auth::from_policy(a, root).map_err(|e| match &cfg.loc {
                    Some(loc) => format!("registry `{name}` ({loc}): {e}"),
                    None => format!("registry `{name}`: {e}"),
                })?)
            }
            None => CredSource::DockerConfig(OnceCell::new()),
        };
        // Trusted over https: the system's CAs (`SSL_CERT_FILE`/`SSL_CERT_DIR`
        // when set), the public web roots, and the registry's own CA files
        // where Podman and Docker keep them.
        let cas = if scheme == "https" {
            certs_d_cas(&CERTS_D.map(Path::new), api_host)
                .map_err(|e| format!("registry `{name}`: {e}"))?
        } else {
            Vec::new()
        };
        let build = |read_timeout: Option<Duration>| {
            let mut client = reqwest::Client::builder()
                .user_agent(concat!("regimen/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(64);
            if let Some(t) = read_timeout {
                client = client.read_timeout(t);
            }
            for ca in &cas {
                client = client.add_root_certificate(ca.clone());
            }
            if scheme != "https" {
                // Plain HTTP: loading the system's CA bundle would only cost
                // time (the public roots still cover a redirect to https storage).
                client = client.tls_built_in_native_certs(false);
            }
            client
                .build()
                .map_err(|e| format!("registry `{name}`: cannot build an HTTP client: {e}"))
        };
        let client = build(Some(idle))?;
        // reqwest's read timeout runs from the send to the response headers
        // without a reset, so it would fail every upload that takes longer;
        // streamed uploads have their own watch instead (`until_idle`).
        let upload_client = build(None)?;
        let concurrency = cfg
            .concurrency
            .unwrap_or(crate::config::Registry::DEFAULT_CONCURRENCY)
            .max(1) as usize;
        let rate = cfg
            .rate
            .filter(|r| *r > 0.0)
            .and_then(|r| Duration::try_from_secs_f64(1.0 / r).ok())
            .map(|interval| Rate {
                interval,
                next: std::sync::Mutex::new(Instant::now()),
            });
        Ok(Distribution {
            name,
            base,
            host,
            client,
            upload_client,
            idle,
            permits: Semaphore::new(concurrency),
            concurrency,
            rate,
            creds,
            scheme: std::sync::Mutex::new(Scheme::Unknown),
            probe: OnceCell::new(),
            login: AsyncMutex::new(()),
            accepted: std::sync::atomic::AtomicBool::new(false),
            refused: std::sync::Mutex::new(None),
            tokens: AsyncMutex::new(HashMap::new()),
            token_fetches: std::sync::Mutex::new(HashMap::new()),
            referrers_api: AtomicU8::new(REFERRERS_UNKNOWN),
            referrers_probe: AsyncMutex::new(ReferrersProbe::NotYet),
            page_size: PAGE_SIZE,
            backoff: Duration::from_millis(200),
            tag_index_locks: std::sync::Mutex::new(HashMap::new()),
            repo_writes: std::sync::Mutex::new(HashMap::new()),
            subjects: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Page size (`n`) for tags and catalog listing.
    pub fn with_page_size(mut self, n: usize) -> Self {
        self.page_size = n.max(1);
        self
    }

    /// First wait between retries (doubles each time).
    pub fn with_backoff(mut self, d: Duration) -> Self {
        self.backoff = d;
        self
    }

    /// `base` with an absolute API path (`/v2/...`; a query is added by the
    /// caller). Setting the path skips re-parsing the host, which `join`
    /// would do for each of a plan's thousands of requests.
    fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(path);
        url
    }

    fn fail(
        &self,
        kind: ErrorKind,
        method: &Method,
        url: &Url,
        detail: impl fmt::Display,
    ) -> RegistryError {
        RegistryError::new(
            kind,
            format!("registry {}: {method} {}: {detail}", self.name, url.path()),
        )
    }

    async fn credentials(&self) -> Result<Credentials> {
        match &self.creds {
            CredSource::Fixed(c) => Ok(c.clone()),
            CredSource::DockerConfig(cell) => {
                let host = self.host.clone();
                let name = self.name.clone();
                cell.get_or_try_init(|| async move {
                    tokio::task::spawn_blocking(move || auth::from_docker_config_noted(&host))
                        .await
                        .map_err(|e| RegistryError::other(format!("registry {name}: {e}")))?
                        .map_err(|e| {
                            RegistryError::new(ErrorKind::Denied, format!("registry {name}: {e}"))
                        })
                })
                .await
                .map(|f| f.creds.clone())
            }
        }
    }

    /// "none are configured", and why when a credential store could not be asked.
    fn none_configured(&self) -> String {
        let note = match &self.creds {
            CredSource::DockerConfig(cell) => cell.get().and_then(|f| f.note.clone()),
            CredSource::Fixed(_) => None,
        };
        match note {
            Some(n) => format!("none are configured: {n}"),
            None => "none are configured: give the registry an `auth:` block, or `docker login` it"
                .into(),
        }
    }

    /// What the registry said when it refused the configured credentials this run.
    fn refused_reason(&self) -> Option<String> {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Remembers a refusal of the configured credentials, unless they were
    /// taken before this run (then the 401 is about this request alone).
    fn remember_refusal(&self, what: &str) {
        if self.accepted.load(Ordering::SeqCst) {
            return;
        }
        let mut r = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some(what.to_string());
        }
    }

    /// Once per run, when credentials are configured: `GET /v2/` to learn
    /// the scheme; for Basic, one request with the credentials checks them
    /// (a refusal is remembered), so concurrent requests do not each
    /// present a wrong password. Any failure here is left to the request
    /// itself to meet and report.
    async fn probe(&self) {
        self.probe
            .get_or_init(|| async {
                let Ok(creds) = self.credentials().await else {
                    return;
                };
                let Some(basic) = creds.basic_header() else {
                    return;
                };
                if !matches!(self.scheme(), Scheme::Unknown) {
                    return;
                }
                let url = self.url("/v2/");
                let Ok(resp) = self.probe_get(&url, None).await else {
                    return;
                };
                if resp.status() != StatusCode::UNAUTHORIZED {
                    return;
                }
                let ch = header_values(resp.headers(), "www-authenticate");
                match pick_challenge(&ch) {
                    Ok(Challenge::Basic) => {
                        *self.scheme.lock().unwrap_or_else(|e| e.into_inner()) = Scheme::Basic;
                        let Ok(resp) = self.probe_get(&url, Some(basic)).await else {
                            return;
                        };
                        if resp.status() == StatusCode::UNAUTHORIZED {
                            self.remember_refusal(&format!(
                                "401 Unauthorized to GET {} with them: check the user name and password",
                                url.path()
                            ));
                        } else if resp.status().is_success() {
                            self.accepted.store(true, Ordering::SeqCst);
                        }
                    }
                    Ok(Challenge::Bearer { realm, service, .. }) => {
                        *self.scheme.lock().unwrap_or_else(|e| e.into_inner()) =
                            Scheme::Bearer { realm, service };
                    }
                    Err(_) => {}
                }
            })
            .await;
    }

    async fn probe_get(&self, url: &Url, auth: Option<String>) -> reqwest::Result<Response> {
        if let Some(r) = &self.rate {
            r.wait().await;
        }
        let _permit = self.permits.acquire().await;
        let mut rb = self.client.get(url.clone());
        if let Some(a) = auth {
            rb = rb.header(AUTHORIZATION, a);
        }
        let r = rb.send().await;
        let status = match &r {
            Ok(r) => r.status().as_str().to_string(),
            Err(_) => "error".into(),
        };
        super::observed_request(self.name.as_str(), &status, false);
        r
    }

    fn scheme(&self) -> Scheme {
        self.scheme
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn scope_key(scopes: &[String]) -> String {
        let mut s = scopes.to_vec();
        s.sort();
        s.join(" ")
    }

    /// The `Authorization` value for a request needing `scopes`, if any.
    async fn auth_header(&self, scopes: &[String]) -> Result<Option<String>> {
        match self.scheme() {
            Scheme::Unknown => Ok(None),
            Scheme::Basic => Ok(self.credentials().await?.basic_header()),
            Scheme::Bearer { realm, service } => {
                let key = Self::scope_key(scopes);
                if let Some(h) = self.cached_token(&key, None).await {
                    return Ok(Some(h));
                }
                let slot = self.token_fetch_slot(&key);
                let _one = slot.lock().await;
                // Fetched meanwhile by the request that held the slot.
                if let Some(h) = self.cached_token(&key, None).await {
                    return Ok(Some(h));
                }
                let t = self.fetch_token(&realm, service.as_deref(), scopes).await?;
                let h = format!("Bearer {}", t.value.expose());
                self.tokens.lock().await.insert(key, t);
                Ok(Some(h))
            }
        }
    }

    /// `Bearer <token>` for the scope set `key` while its token lives,
    /// unless it is the header `refused` (the one a 401 just turned down).
    async fn cached_token(&self, key: &str, refused: Option<&str>) -> Option<String> {
        let tokens = self.tokens.lock().await;
        let t = tokens.get(key).filter(|t| t.expires > Instant::now())?;
        let h = format!("Bearer {}", t.value.expose());
        (Some(h.as_str()) != refused).then_some(h)
    }

    /// The lock that one fetch of the scope set `key`'s token holds.
    fn token_fetch_slot(&self, key: &str) -> Arc<AsyncMutex<()>> {
        self.token_fetches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    /// Learns from a 401's challenge; afterwards `auth_header` answers it.
    /// `sent` is the `Authorization` the 401 answered: when another request
    /// has already replaced that token, its replacement is used, not fetched again.
    async fn answer_challenge(
        &self,
        ch: Challenge,
        scopes: &[String],
        sent: Option<&str>,
    ) -> Result<()> {
        match ch {
            Challenge::Basic => {
                *self.scheme.lock().unwrap_or_else(|e| e.into_inner()) = Scheme::Basic;
            }
            Challenge::Bearer {
                realm,
                service,
                scope,
                ..
            } => {
                *self.scheme.lock().unwrap_or_else(|e| e.into_inner()) = Scheme::Bearer {
                    realm: realm.clone(),
                    service: service.clone(),
                };
                // What the registry wants beyond the request's scopes.
                // Distribution's challenge may say `push,pull` for our
                // `pull,push`: the same scope, not one more to ask.
                let mut all: Vec<String> = scopes.to_vec();
                for s in scope {
                    if !all.iter().any(|a| auth::scope_covers(a, &s)) {
                        all.push(s);
                    }
                }
                let key = Self::scope_key(scopes);
                let slot = self.token_fetch_slot(&key);
                let _one = slot.lock().await;
                // Renewed meanwhile by another request the same token failed.
                if all.len() == scopes.len() && self.cached_token(&key, sent).await.is_some() {
                    return Ok(());
                }
                let t = self.fetch_token(&realm, service.as_deref(), &all).await?;
                self.tokens.lock().await.insert(key, t);
            }
        }
        Ok(())
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<Token> {
        let mut url = Url::parse(realm).map_err(|_| {
            RegistryError::other(format!(
                "registry {}: the token realm `{realm}` is not a URL",
                self.name
            ))
        })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scopes {
                q.append_pair("scope", s);
            }
        }
        let creds = self.credentials().await?;
        let what = format!(
            "registry {}: token request to {}",
            self.name,
            url.host_str().unwrap_or("?")
        );
        // Until the credentials are known good, one token request at a time
        // presents them: a refusal is met once, not once per repository.
        let _gate = if creds.is_anonymous() || self.accepted.load(Ordering::SeqCst) {
            None
        } else {
            Some(self.login.lock().await)
        };
        if let Some(first) = self.refused_reason().filter(|_| !creds.is_anonymous()) {
            return Err(RegistryError::new(
                ErrorKind::Denied,
                format!("{what}: not sent: {}", refused_text(&first)),
            ));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let rb = match creds.identity_token() {
                // OAuth2's refresh-token grant, as docker trades an identity
                // token: a form POST to the realm itself.
                Some(token) => {
                    let mut form = Url::parse("form:").map_err(|e| {
                        RegistryError::other(format!("{what}: cannot build the form: {e}"))
                    })?;
                    {
                        let mut q = form.query_pairs_mut();
                        q.append_pair("grant_type", "refresh_token")
                            .append_pair("client_id", "regimen")
                            .append_pair("refresh_token", token.expose());
                        if let Some(s) = service {
                            q.append_pair("service", s);
                        }
                        q.append_pair("scope", &scopes.join(" "));
                    }
                    let body = form.query().unwrap_or("").to_string();
                    let realm_url = Url::parse(realm)
                        .map_err(|e| RegistryError::other(format!("{what}: bad realm: {e}")))?;
                    self.client
                        .post(realm_url)
                        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                        .body(body)
                }
                None => {
                    let mut rb = self.client.get(url.clone());
                    if let Some(h) = creds.basic_header() {
                        rb = rb.header(AUTHORIZATION, h);
                    }
                    rb
                }
            };
            let resp = match rb.send().await {
                Ok(r) => r,
                Err(e) if attempt < ATTEMPTS => {
                    tracing::debug!("{what}: {e}; retrying");
                    tokio::time::sleep(self.backoff * 2u32.pow(attempt - 1)).await;
                    continue;
                }
                Err(e) => return Err(RegistryError::other(format!("{what}: {e}"))),
            };
            let status = resp.status();
            if matches!(status.as_u16(), 429 | 502 | 503 | 504) && attempt < ATTEMPTS {
                let wait = retry_after(resp.headers())
                    .unwrap_or(self.backoff * 2u32.pow(attempt - 1))
                    .min(MAX_WAIT);
                tokio::time::sleep(wait).await;
                continue;
            }
            if status == StatusCode::FORBIDDEN && !creds.is_anonymous() {
                // Known credentials, refused this scope (GitLab, for one,
                // answers 403 for a push the account may not make): not a
                // wrong password, so other requests still go.
                let why = if self.accepted.load(Ordering::SeqCst) {
                    "the account lacks that right; check its permissions on the repository"
                } else {
                    "credentials refused, or the account lacks that right: check the user \
                     name and password (or token) and its permissions on the repository"
                };
                return Err(RegistryError::new(
                    ErrorKind::Denied,
                    format!("{what}: {status} for {} ({why})", scopes.join(" ")),
                ));
            }
            let refused_grant =
                status == StatusCode::BAD_REQUEST && creds.identity_token().is_some();
            if status == StatusCode::UNAUTHORIZED
                || status == StatusCode::FORBIDDEN
                || refused_grant
            {
                if creds.is_anonymous() {
                    return Err(RegistryError::new(
                        ErrorKind::Denied,
                        format!(
                            "{what}: {status} (the token server wants credentials; {})",
                            self.none_configured()
                        ),
                    ));
                }
                let refused = format!(
                    "{status} from the token server {}: check the user name and password (or token)",
                    url.host_str().unwrap_or("?")
                );
                self.remember_refusal(&refused);
                return Err(RegistryError::new(
                    ErrorKind::Denied,
                    format!("{what}: {status} (credentials refused: check the user name and password or token)"),
                ));
            }
            if !status.is_success() {
                return Err(RegistryError::other(format!("{what}: {status}")));
            }
            let body = resp
                .bytes()
                .await
                .map_err(|e| RegistryError::other(format!("{what}: unreadable answer: {e}")))?;
            let body = TokenResponse::from_slice(&body)
                .map_err(|e| RegistryError::other(format!("{what}: unreadable answer: {e}")))?;
            let value = body
                .token
                .ok_or_else(|| RegistryError::other(format!("{what}: answer has no token")))?;
            if !creds.is_anonymous() {
                self.accepted.store(true, Ordering::SeqCst);
            }
            let now = Instant::now();
            return Ok(Token {
                value: Secret::new(value),
                // Renew early: a token must outlive the request that starts with it.
                expires: now.checked_add(token_life(body.expires_in)).unwrap_or(now),
            });
        }
    }

    /// The one place requests are sent: auth, limits, retries.
    async fn send(&self, req: &mut Req) -> std::result::Result<Response, Failure> {
        self.probe().await;
        if let Some(first) = self.refused_reason() {
            return Err(self
                .fail(
                    ErrorKind::Denied,
                    &req.method,
                    &req.url,
                    format!("not sent: {}", refused_text(&first)),
                )
                .into());
        }
        let mut attempt = 0u32;
        let mut reauthed = false;
        loop {
            attempt += 1;
            let auth = self.auth_header(&req.scopes).await?;
            let auth = auth.filter(|_| req.url.origin() == self.base.origin());
            let sent_basic = auth.as_deref().is_some_and(|a| a.starts_with("Basic "));
            let sent_auth = auth.clone();
            let client = match req.body {
                Body::Stream(..) => &self.upload_client,
                _ => &self.client,
            };
            let mut rb = client.request(req.method.clone(), req.url.clone());
            for (k, v) in &req.headers {
                rb = rb.header(k, v);
            }
            // Credentials go to the registry itself only, never to another
            // origin a `Link` or `Location` header names (blob storage, CDNs).
            if let Some(a) = auth {
                rb = rb.header(AUTHORIZATION, a);
            }
            let mut progress = None;
            rb = match &mut req.body {
                Body::Empty => rb,
                Body::Bytes(b) => rb.header(CONTENT_LENGTH, b.len()).body(b.clone()),
                Body::Stream(s, len) => match s.take() {
                    Some(s) => {
                        let p = Arc::new(Progress::new(*len));
                        progress = Some(p.clone());
                        rb.header(CONTENT_LENGTH, *len)
                            .body(reqwest::Body::wrap_stream(s.inspect(move |chunk| {
                                if let Ok(c) = chunk {
                                    p.sent(c.len() as u64)
                                }
                            })))
                    }
                    None => {
                        return Err(Failure {
                            err: self.fail(
                                ErrorKind::Other,
                                &req.method,
                                &req.url,
                                "the upload stream was consumed by a failed attempt; retry the blob copy",
                            ),
                            transient: true,
                        })
                    }
                },
            };
            let result = {
                if let Some(r) = &self.rate {
                    r.wait().await;
                }
                let _permit = self.permits.acquire().await.map_err(|_| {
                    self.fail(
                        ErrorKind::Other,
                        &req.method,
                        &req.url,
                        "registry client closed",
                    )
                })?;
                // Its turn has come: a change stopped meanwhile that has
                // written nothing yet does not begin now.
                if !matches!(req.method, Method::GET | Method::HEAD) {
                    super::check_write()?;
                }
                match &progress {
                    None => rb.send().await,
                    Some(p) => match until_idle(rb.send(), p.start(), self.idle).await {
                        Some(r) => r,
                        None => {
                            return Err(Failure {
                                err: self.fail(
                                    ErrorKind::Other,
                                    &req.method,
                                    &req.url,
                                    p.stalled_text(self.idle),
                                ),
                                transient: true,
                            })
                        }
                    },
                }
            };
            let can_retry = attempt < req.attempts && req.replayable();
            let resp = match result {
                Ok(r) => r,
                Err(e) => {
                    let chain = error_chain(&e);
                    let untrusted = is_certificate_error(&chain);
                    let plain_http = is_plain_http_answer(&chain);
                    let transient =
                        !e.is_builder() && !e.is_redirect() && !untrusted && !plain_http;
                    super::observed_request(self.name.as_str(), "error", transient && can_retry);
                    if transient && can_retry {
                        tracing::debug!(
                            "registry {}: {} {}: {e}; retrying",
                            self.name,
                            req.method,
                            req.url.path()
                        );
                        tokio::time::sleep(self.backoff * 2u32.pow(attempt - 1)).await;
                        continue;
                    }
                    let detail = if attempt > 1 {
                        format!("{chain} after {attempt} attempts")
                    } else if plain_http {
                        // The answer to the TLS hello was plain HTTP.
                        let at = e.url().unwrap_or(&req.url);
                        if at.host_str() == self.base.host_str() && at.port() == self.base.port() {
                            format!(
                                "{chain} (the server speaks plain HTTP: use `http://{}` as the registry's url)",
                                host_port(&self.base)
                            )
                        } else {
                            format!(
                                "{chain} (the server at {} speaks plain HTTP, not HTTPS)",
                                host_port(at)
                            )
                        }
                    } else if untrusted {
                        format!(
                            "{chain} (to trust a private CA, add it to the system's trust \
                             store, set SSL_CERT_FILE to a bundle with it, or put it in \
                             /etc/containers/certs.d/{}/ca.crt)",
                            host_port(&self.base)
                        )
                    } else {
                        chain
                    };
                    return Err(Failure {
                        err: self.fail(ErrorKind::Other, &req.method, &req.url, detail),
                        transient,
                    });
                }
            };
            let status = resp.status();
            // A 500 on a read is tried again, twice: Distribution answers one
            // while another request rewrites the link file it reads (the same
            // image put under several tags at once). A write's 500 is not: it
            // may have half-happened.
            let busy = matches!(status.as_u16(), 429 | 502 | 503 | 504)
                || (status == StatusCode::INTERNAL_SERVER_ERROR
                    && matches!(req.method, Method::GET | Method::HEAD)
                    && attempt < READ_500_ATTEMPTS);
            super::observed_request(self.name.as_str(), status.as_str(), can_retry && busy);
            if sent_basic && status != StatusCode::UNAUTHORIZED {
                self.accepted.store(true, Ordering::SeqCst);
            }
            if status == StatusCode::UNAUTHORIZED {
                let ch = pick_challenge(&header_values(resp.headers(), "www-authenticate"));
                let creds_given = !self.credentials().await?.is_anonymous();
                match ch {
                    Ok(ch) if !reauthed && req.replayable() => {
                        if ch == Challenge::Basic
                            && self.credentials().await?.identity_token().is_some()
                        {
                            return Err(self
                                .fail(
                                    ErrorKind::Denied,
                                    &req.method,
                                    &req.url,
                                    "401 Unauthorized (the registry asks for a user name and \
                                     password; docker's config.json has only an identity token \
                                     for it, which only a token server takes: give the registry \
                                     an `auth:` block)",
                                )
                                .into());
                        }
                        if ch == Challenge::Basic && !creds_given {
                            return Err(self
                                .fail(
                                    ErrorKind::Denied,
                                    &req.method,
                                    &req.url,
                                    format!(
                                        "401 Unauthorized (the registry wants credentials; {})",
                                        self.none_configured()
                                    ),
                                )
                                .into());
                        }
                        self.answer_challenge(ch, &req.scopes, sent_auth.as_deref())
                            .await?;
                        reauthed = true;
                        attempt -= 1;
                        continue;
                    }
                    Ok(ch) if !reauthed && creds_given => {
                        // A consumed upload stream (e.g. the token expired
                        // mid-upload): refresh for the next try, which the
                        // caller makes with a fresh stream.
                        self.answer_challenge(ch, &req.scopes, sent_auth.as_deref())
                            .await?;
                        return Err(Failure {
                            err: self.fail(
                                ErrorKind::Other,
                                &req.method,
                                &req.url,
                                "401 Unauthorized during a streamed upload; credentials refreshed, retry the blob copy",
                            ),
                            transient: true,
                        });
                    }
                    Ok(ch) => {
                        let detail = self.unauthorized(&ch, creds_given, &req.scopes);
                        if sent_basic && ch == Challenge::Basic {
                            self.remember_refusal(&format!(
                                "401 Unauthorized to {} {} with them",
                                req.method,
                                req.url.path()
                            ));
                        }
                        return Err(self
                            .fail(ErrorKind::Denied, &req.method, &req.url, detail)
                            .into());
                    }
                    Err(problem) => {
                        return Err(self
                            .fail(
                                ErrorKind::Denied,
                                &req.method,
                                &req.url,
                                format!("401 Unauthorized: {problem}"),
                            )
                            .into());
                    }
                }
            }
            let asked = retry_after(resp.headers()).filter(|_| busy);
            if let Some(asked) = asked.filter(|a| *a > MAX_WAIT) {
                // Waiting that long, request after request, would stall the
                // run; trying sooner is what the registry said not to do.
                return Err(Failure {
                    err: self.fail(
                        ErrorKind::Throttled,
                        &req.method,
                        &req.url,
                        format!(
                            "{status}: the registry asks to wait {}s before trying again \
                             (regimen waits at most {}s): run again later",
                            asked.as_secs(),
                            MAX_WAIT.as_secs()
                        ),
                    ),
                    transient: false,
                });
            }
            if busy && can_retry {
                let wait = asked.unwrap_or(self.backoff * 2u32.pow(attempt - 1));
                tracing::debug!(
                    "registry {}: {} {}: {status}; retrying in {wait:?}",
                    self.name,
                    req.method,
                    req.url.path()
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            if busy && status != StatusCode::INTERNAL_SERVER_ERROR {
                if req.attempts == 1 {
                    // An upload's PUT is restarted by its caller, with a new
                    // session: the wait the registry asked for comes first.
                    tokio::time::sleep(asked.unwrap_or(self.backoff)).await;
                }
                let detail = if attempt > 1 {
                    format!("{status} after {attempt} attempts")
                } else {
                    status.to_string()
                };
                return Err(Failure {
                    err: self.fail(ErrorKind::Other, &req.method, &req.url, detail),
                    transient: true,
                });
            }
            return Ok(resp);
        }
    }

    /// Why a 401 that answering `ch` did not cure happened, in words.
    fn unauthorized(&self, ch: &Challenge, creds_given: bool, scopes: &[String]) -> String {
        match ch {
            Challenge::Basic if creds_given => {
                "401 Unauthorized (credentials refused: check the user name and password)".into()
            }
            Challenge::Basic => format!(
                "401 Unauthorized (the registry wants credentials; {})",
                self.none_configured()
            ),
            Challenge::Bearer { scope, error, .. } => {
                let asked = if scope.is_empty() { scopes } else { scope };
                let what = if asked.is_empty() {
                    "this request".to_string()
                } else {
                    asked
                        .iter()
                        .map(|s| auth::describe_scope(s))
                        .collect::<Vec<_>>()
                        .join(" and ")
                };
                let error: String = error
                    .as_deref()
                    .unwrap_or("")
                    .chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(60)
                    .collect();
                match (error.as_str(), creds_given) {
                    ("insufficient_scope", true) => format!(
                        "401 Unauthorized (insufficient_scope: the registry's token does not allow \
                         {what}: the account lacks that permission there)"
                    ),
                    ("insufficient_scope", false) => format!(
                        "401 Unauthorized (insufficient_scope: an anonymous token does not allow \
                         {what}; {})",
                        self.none_configured()
                    ),
                    (_, false) => format!(
                        "401 Unauthorized (the registry wants credentials for {what}; {})",
                        self.none_configured()
                    ),
                    ("", true) => format!(
                        "401 Unauthorized (the registry did not accept the token its token server \
                         granted for {what})"
                    ),
                    (e, true) => format!(
                        "401 Unauthorized ({e}: the registry did not accept the token its token \
                         server granted for {what})"
                    ),
                }
            }
        }
    }

    /// The error for an unexpected status, with the registry's error code.
    async fn status_error(&self, method: &Method, url: &Url, resp: Response) -> RegistryError {
        let status = resp.status();
        // Bounded: an upload's answer comes on the client without a read timeout.
        let body = match tokio::time::timeout(self.idle, resp.bytes()).await {
            Ok(Ok(b)) => b,
            _ => Bytes::new(),
        };
        self.body_error(method, url, status, &body)
    }

    /// [`Self::status_error`] for a body already read.
    fn body_error(
        &self,
        method: &Method,
        url: &Url,
        status: StatusCode,
        body: &[u8],
    ) -> RegistryError {
        let entry = serde_json::from_slice::<ErrorBody>(body)
            .ok()
            .and_then(|b| b.errors.into_iter().next());
        let code = entry.as_ref().map(|e| e.code.as_str()).unwrap_or("");
        let kind = match (status.as_u16(), code) {
            (_, "UNSUPPORTED") => ErrorKind::Unsupported,
            (_, "DIGEST_INVALID" | "SIZE_INVALID") => ErrorKind::DigestMismatch,
            (_, "NAME_UNKNOWN" | "MANIFEST_UNKNOWN" | "BLOB_UNKNOWN") => ErrorKind::NotFound,
            (_, "DENIED" | "UNAUTHORIZED") => ErrorKind::Denied,
            (404, _) => ErrorKind::NotFound,
            (401 | 403, _) => ErrorKind::Denied,
            (405 | 501, _) => ErrorKind::Unsupported,
            _ => ErrorKind::Other,
        };
        let detail = match entry {
            Some(e) if !e.code.is_empty() => format!("{status} ({}: {})", e.code, e.message),
            // Go's answer to plain HTTP on a TLS port.
            _ if status == StatusCode::BAD_REQUEST
                && url.scheme() == "http"
                && String::from_utf8_lossy(body).contains("HTTP request to an HTTPS server") =>
            {
                format!(
                    "{status} (the server at {} speaks HTTPS, not plain HTTP: write the \
                     registry's url as https://)",
                    host_port(url)
                )
            }
            _ => status.to_string(),
        };
        self.fail(kind, method, url, detail)
    }

    async fn simple(
        &self,
        method: Method,
        path: &str,
        scopes: Vec<String>,
    ) -> Result<(Req, Response)> {
        let mut req = Req::new(method, self.url(path), scopes);
        let resp = self.send(&mut req).await?;
        Ok((req, resp))
    }

    /// Every name of a paged list (`tags` or `repositories`); `None` on 404.
    async fn paged(
        &self,
        path: &str,
        key: &str,
        scopes: Vec<String>,
    ) -> Result<Option<Vec<String>>> {
        let mut url = self.url(path);
        url.query_pairs_mut()
            .append_pair("n", &self.page_size.to_string());
        let mut out: Vec<String> = Vec::new();
        let mut pages = 0usize;
        // A server that ignores `n` sends everything on the first page and
        // may still link a next one: a repeat then ends the list. One that
        // honours `n` but ignores `last` repeats its first page forever: that
        // list cannot be read whole, and a part read as the whole would make
        // the rest look deleted.
        let mut ignores_n = false;
        let mut seen_urls: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut seen_names: std::collections::HashSet<String> = std::collections::HashSet::new();
        loop {
            if !seen_urls.insert(url.to_string()) {
                if ignores_n {
                    break;
                }
                return Err(self.repeats(&url, pages));
            }
            pages += 1;
            let mut req = Req::new(Method::GET, url.clone(), scopes.clone());
            let resp = self.send(&mut req).await?;
            if resp.status() == StatusCode::NOT_FOUND {
                if pages == 1 {
                    return Ok(None);
                }
                // Half a list is not the list: read as complete, it would
                // make every later tag look deleted (prune, retention).
                return Err(self.fail(
                    ErrorKind::Other,
                    &req.method,
                    &req.url,
                    format!("page {pages} of the list is gone (404): the list is incomplete"),
                ));
            }
            if !resp.status().is_success() {
                return Err(self.status_error(&req.method, &req.url, resp).await);
            }
            let next = next_link(resp.headers());
            let body = self
                .json_body((&req.method, &req.url), resp, "list")
                .await?;
            let before = out.len();
            if let Some(arr) = body.get(key).and_then(|v| v.as_array()) {
                if pages == 1 {
                    ignores_n = arr.len() > self.page_size;
                }
                for name in arr.iter().filter_map(|v| v.as_str()) {
                    if seen_names.insert(name.to_string()) {
                        out.push(name.to_string());
                    }
                }
            }
            match next {
                Some(_) if out.len() == before && !ignores_n => {
                    return Err(self.repeats(&req.url, pages));
                }
                Some(n) if out.len() > before => {
                    url = self.next_page(&req, &n)?;
                }
                _ => break,
            }
        }
        Ok(Some(out))
    }

    /// `GET /v2/<repo>/referrers/<digest>`, every page (`Link`): the list,
    /// or `None` where the registry has no such route.
    async fn referrers_pages(
        &self,
        repo: &Repo,
        digest: &Digest,
    ) -> Result<Option<Vec<Descriptor>>> {
        let mut url = self.url(&format!("/v2/{repo}/referrers/{digest}"));
        let mut out: Vec<Descriptor> = Vec::new();
        let mut seen_urls = std::collections::HashSet::new();
        let mut pages = 0usize;
        loop {
            if !seen_urls.insert(url.to_string()) {
                return Err(self.repeats(&url, pages));
            }
            pages += 1;
            let mut req = Req::new(Method::GET, url.clone(), vec![scope_pull(repo)])
                .header(ACCEPT, MediaType::OCI_INDEX);
            let resp = self.send(&mut req).await?;
            let status = resp.status();
            let is_index = bare_media_type(header_str(resp.headers(), "content-type"))
                .is_some_and(|m| m == MediaType::OCI_INDEX);
            if status.is_success() && is_index {
                self.referrers_api.store(REFERRERS_YES, Ordering::Relaxed);
                let next = next_link(resp.headers());
                let body = self
                    .json_body((&req.method, &req.url), resp, "index")
                    .await?;
                for d in descriptors(&body) {
                    if !out.iter().any(|o| o.digest == d.digest) {
                        out.push(d);
                    }
                }
                match next {
                    Some(n) => {
                        url = self.next_page(&req, &n)?;
                        continue;
                    }
                    None => return Ok(Some(out)),
                }
            }
            if pages > 1 {
                // Half a list is not the list.
                return Err(self.fail(
                    ErrorKind::Other,
                    &req.method,
                    &req.url,
                    format!("page {pages} of the referrers list answered {status}: the list is incomplete"),
                ));
            }
            return match status.as_u16() {
                404 | 400 | 405 | 501 | 200..=299 => {
                    let body = resp.bytes().await.unwrap_or_default();
                    let code = serde_json::from_slice::<ErrorBody>(&body)
                        .ok()
                        .and_then(|b| b.errors.into_iter().next())
                        .map(|e| e.code)
                        .unwrap_or_default();
                    if self.referrers_api.load(Ordering::Relaxed) == REFERRERS_YES
                        || (status == StatusCode::NOT_FOUND && code == "NAME_UNKNOWN")
                    {
                        // The API exists; the repository does not.
                        return Ok(Some(Vec::new()));
                    }
                    // An unknown route (Distribution 2.8: plain `404 page not found`).
                    self.referrers_api.store(REFERRERS_NO, Ordering::Relaxed);
                    Ok(None)
                }
                _ => Err(self.status_error(&req.method, &req.url, resp).await),
            };
        }
    }

    /// A response's JSON body (`what` names it in the error).
    async fn json_body(
        &self,
        (method, url): (&Method, &Url),
        resp: reqwest::Response,
        what: &str,
    ) -> Result<Value> {
        resp.json().await.map_err(|e| {
            self.fail(
                ErrorKind::Other,
                method,
                url,
                format!("unreadable {what}: {e}"),
            )
        })
    }

    /// The next page a `Link` header names, relative to the registry.
    fn next_page(&self, req: &Req, next: &str) -> Result<Url> {
        // Relative to the request (RFC 8288), which for the usual
        // `</v2/...>` is the registry's root.
        req.url.join(next).map_err(|e| {
            self.fail(
                ErrorKind::Other,
                &req.method,
                &req.url,
                format!("bad Link header: {e}"),
            )
        })
    }

    fn repeats(&self, url: &Url, page: usize) -> RegistryError {
        self.fail(
            ErrorKind::Other,
            &Method::GET,
            url,
            format!(
                "the registry sends page {page} of the list again instead of the next (it ignores `last`): the list cannot be read whole"
            ),
        )
    }

    async fn get_manifest_inner(&self, repo: &Repo, reference: &str) -> Result<Option<Manifest>> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let mut req = Req::new(Method::GET, self.url(&path), vec![scope_pull(repo)])
            .header(ACCEPT, MediaType::ALL_MANIFESTS.join(", "));
        let resp = self.send(&mut req).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.status_error(&req.method, &req.url, resp).await);
        }
        let ct = bare_media_type(header_str(resp.headers(), "content-type"));
        let served: Option<Digest> =
            header_str(resp.headers(), "docker-content-digest").and_then(|s| s.parse().ok());
        let bytes = resp.bytes().await.map_err(|e| {
            self.fail(
                ErrorKind::Other,
                &req.method,
                &req.url,
                format!("reading body: {}", error_chain(&e)),
            )
        })?;
        let m = Manifest::from_bytes(bytes, ct.as_deref())
            .map_err(|e| self.fail(ErrorKind::Other, &req.method, &req.url, e.message))?;
        if let Some(d) = &served {
            if !digest_matches(d, &m.bytes) {
                return Err(self.fail(
                    ErrorKind::DigestMismatch,
                    &req.method,
                    &req.url,
                    format!(
                        "the registry says {d} but the content hashes to {}",
                        m.digest
                    ),
                ));
            }
        }
        if let Ok(want) = reference.parse::<Digest>() {
            if !digest_matches(&want, &m.bytes) {
                return Err(self.fail(
                    ErrorKind::DigestMismatch,
                    &req.method,
                    &req.url,
                    format!("asked for {want}, the content hashes to {}", m.digest),
                ));
            }
        }
        Ok(Some(m))
    }

    /// PUT of manifest bytes, without referrers bookkeeping. Returns whether
    /// the registry said it processed a subject (`OCI-Subject`).
    /// The lock of `repo`'s tag writes and deletions (see `repo_writes`).
    fn repo_writes(&self, repo: &Repo) -> Arc<tokio::sync::RwLock<()>> {
        let mut locks = self
            .repo_writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        locks.entry(repo.clone()).or_default().clone()
    }

    async fn put_manifest_raw(&self, repo: &Repo, reference: &str, m: &Manifest) -> Result<bool> {
        // A PUT under a tag writes a tag link: not while a DELETE walks them.
        let lock = (!reference.contains(':')).then(|| self.repo_writes(repo));
        let _shared = match &lock {
            Some(l) => Some(l.read().await),
            None => None,
        };
        let path = format!("/v2/{repo}/manifests/{reference}");
        let mut req = Req::new(Method::PUT, self.url(&path), vec![scope_push(repo)])
            .header(CONTENT_TYPE, m.media_type.clone());
        req.body = Body::Bytes(m.bytes.clone());
        let mut resp = self.send(&mut req).await?;
        // Distribution 2.8 answers 400 DIGEST_INVALID to the same manifest
        // PUT at the same moment into two repos (a race in its blob store);
        // the bytes are ours and hash right, so asking again is safe.
        for wait in [100, 400] {
            if resp.status() != StatusCode::BAD_REQUEST {
                break;
            }
            let status = resp.status();
            let body = resp.bytes().await.unwrap_or_default();
            let e = self.body_error(&req.method, &req.url, status, &body);
            if e.kind != ErrorKind::DigestMismatch {
                return Err(e);
            }
            tracing::debug!(%repo, reference, "manifest PUT answered DIGEST_INVALID; once more");
            tokio::time::sleep(Duration::from_millis(wait)).await;
            resp = self.send(&mut req).await?;
        }
        if !resp.status().is_success() {
            return Err(self.status_error(&req.method, &req.url, resp).await);
        }
        if let Some(d) = header_str(resp.headers(), "docker-content-digest")
            .and_then(|s| s.parse::<Digest>().ok())
        {
            if d.algorithm() == m.digest.algorithm() && d != m.digest {
                return Err(self.fail(
                    ErrorKind::DigestMismatch,
                    &req.method,
                    &req.url,
                    format!("stored as {d}, expected {}", m.digest),
                ));
            }
        }
        Ok(resp.headers().contains_key("oci-subject"))
    }

    /// Adds `desc` to the `sha256-<hex>` referrers tag index of `subject`.
    async fn add_to_tag_index(&self, repo: &Repo, subject: &Digest, desc: Value) -> Result<()> {
        let lock = {
            let mut locks = self
                .tag_index_locks
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            locks
                .entry((repo.clone(), subject.clone()))
                .or_default()
                .clone()
        };
        let _guard = lock.lock().await;
        let tag = subject.referrers_tag();
        let mut index = match self.get_manifest_inner(repo, tag.as_str()).await? {
            Some(m) if m.is_index() => {
                serde_json::from_slice::<Value>(&m.bytes).unwrap_or_else(|_| empty_index())
            }
            _ => empty_index(),
        };
        if !index.get("manifests").is_some_and(|v| v.is_array()) {
            index["manifests"] = json!([]);
        }
        let Some(list) = index["manifests"].as_array_mut() else {
            return Err(RegistryError::other(format!(
                "{}/{repo}: the referrers index {tag} has no manifest list",
                self.name
            )));
        };
        if list.iter().any(|e| e.get("digest") == desc.get("digest")) {
            return Ok(());
        }
        list.push(desc);
        let bytes = serde_json::to_vec(&index)
            .map_err(|e| RegistryError::other(format!("registry {}: {e}", self.name)))?;
        let m = Manifest::from_bytes(bytes, Some(MediaType::OCI_INDEX))?;
        self.put_manifest_raw(repo, tag.as_str(), &m).await?;
        Ok(())
    }

    /// The digest the `subject` of manifest `digest` names; `None` when the
    /// manifest is absent, unreadable or has no subject (cached).
    async fn subject_of(&self, repo: &Repo, digest: &Digest) -> Result<Subject> {
        if let Some(s) = self
            .subjects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
        {
            return Ok(s.clone());
        }
        let Some(m) = self.get_manifest_inner(repo, digest.as_str()).await? else {
            // Absent here (maybe present later): not cached.
            return Ok((None, None));
        };
        let subject = match m.parse() {
            Ok(p) => (p.subject().map(|s| s.digest.clone()), p.artifact_type()),
            Err(_) => (None, None),
        };
        self.subjects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(digest.clone(), subject.clone());
        Ok(subject)
    }

    /// One upload session: POST (unless `session` is one already opened),
    /// then PUT of `body` to the session.
    async fn upload(
        &self,
        repo: &Repo,
        digest: &Digest,
        body: Body,
        session: Option<Url>,
    ) -> std::result::Result<(), Failure> {
        let loc = match session {
            Some(loc) => loc,
            None => {
                let path = format!("/v2/{repo}/blobs/uploads/");
                let mut post = Req::new(Method::POST, self.url(&path), vec![scope_push(repo)])
                    .header(CONTENT_LENGTH, "0");
                let resp = self.send(&mut post).await?;
                if resp.status() != StatusCode::ACCEPTED && !resp.status().is_success() {
                    let transient = resp.status().is_server_error();
                    let err = self.status_error(&post.method, &post.url, resp).await;
                    return Err(Failure { err, transient });
                }
                self.location(&post, &resp)?
            }
        };
        let mut put_url = loc.clone();
        put_url
            .query_pairs_mut()
            .append_pair("digest", digest.as_str());
        let mut put = Req::new(Method::PUT, put_url, vec![scope_push(repo)])
            .header(CONTENT_TYPE, "application/octet-stream");
        put.body = body;
        // The session restarts on failure, never the PUT alone.
        put.attempts = 1;
        let result = self.send(&mut put).await;
        let failure = match result {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => {
                let transient = resp.status().is_server_error();
                Failure {
                    err: self.status_error(&put.method, &put.url, resp).await,
                    transient,
                }
            }
            Err(f) => f,
        };
        self.cancel_session(repo, loc).await;
        Err(failure)
    }

    fn location(&self, req: &Req, resp: &Response) -> std::result::Result<Url, Failure> {
        let loc = header_str(resp.headers(), "location").ok_or_else(|| {
            Failure::from(self.fail(
                ErrorKind::Other,
                &req.method,
                &req.url,
                "no Location in the answer",
            ))
        })?;
        req.url.join(loc).map_err(|e| {
            Failure::from(self.fail(
                ErrorKind::Other,
                &req.method,
                &req.url,
                format!("bad Location: {e}"),
            ))
        })
    }

    /// Best-effort DELETE of an upload session.
    async fn cancel_session(&self, repo: &Repo, loc: Url) {
        let mut req = Req::new(Method::DELETE, loc, vec![scope_push(repo)]);
        req.attempts = 1;
        if let Err(f) = self.send(&mut req).await {
            tracing::debug!("{}", f.err);
        }
    }
}

/// How long a tag list's 404 is trusted to say a repo does not exist.
const ABSENT_TRUSTED: Duration = Duration::from_secs(300);

/// Repos whose tag list answered 404, per (registry name, base URL, repo),
/// with when: planning and applying open their own backends, and the apply
/// half of `regimen apply` may skip looking up manifests in a repo the plan
/// half just found missing. Only ever a hint that saves requests (writes are
/// idempotent, and the tag write's compare-and-swap still looks).
type AbsentRepos = HashMap<(String, String, Repo), Instant>;

fn absent_repos() -> std::sync::MutexGuard<'static, AbsentRepos> {
    static ABSENT: std::sync::LazyLock<std::sync::Mutex<AbsentRepos>> =
        std::sync::LazyLock::new(Default::default);
    ABSENT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads a stream whole, stopping once it is longer than `size`.
async fn read_small(data: &mut BlobStream, size: u64) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(size as usize);
    while let Some(chunk) = data.next().await {
        buf.extend_from_slice(&chunk?);
        if buf.len() as u64 > size {
            break;
        }
    }
    Ok(buf.freeze())
}

fn empty_index() -> Value {
    json!({"schemaVersion": 2, "mediaType": MediaType::OCI_INDEX, "manifests": []})
}

/// An error with its causes (reqwest hides the interesting part in `source`).
/// Whether a request failed because the server's certificate was refused
/// (rustls: "invalid peer certificate: UnknownIssuer", "... Expired", a
/// wrong name): no retry mends that, and the user has to act.
fn is_certificate_error(chain: &str) -> bool {
    chain.contains("invalid peer certificate")
}

/// An `https://` request answered in plain HTTP (the port serves HTTP):
/// asking again gets the same answer.
fn is_plain_http_answer(chain: &str) -> bool {
    // rustls: the first record is not a TLS record; OpenSSL says it so.
    chain.contains("InvalidContentType") || chain.contains("wrong version number")
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let cs = c.to_string();
        if !s.contains(&cs) {
            s.push_str(": ");
            s.push_str(&cs);
        }
        cur = c.source();
    }
    strip_url_queries(&s)
}

/// Removes query strings from URLs inside a message: pre-signed blob URLs
/// (S3, GCS) carry credentials there, and errors end up in plans and logs.
fn strip_url_queries(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("http") {
        let (before, url_on) = rest.split_at(i);
        out.push_str(before);
        let end = url_on
            .find(|c: char| c.is_whitespace() || c == ')' || c == '"')
            .unwrap_or(url_on.len());
        let (url, after) = url_on.split_at(end);
        out.push_str(url.split('?').next().unwrap_or(url));
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Passes a blob through, failing at the end when it does not hash to its digest.
struct Verified {
    inner: Pin<Box<dyn Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send>>,
    hasher: Option<Sha256>,
    expected: Digest,
    /// `registry NAME: GET /v2/…`: a bad blob names where it came from,
    /// not only the upload it broke.
    what: String,
    done: bool,
}

impl Stream for Verified {
    type Item = std::result::Result<Bytes, std::io::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => {
                if let Some(h) = self.hasher.as_mut() {
                    h.update(&b);
                }
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.done = true;
                if let Some(h) = self.hasher.take() {
                    let got = hex::encode(h.finalize());
                    if got != self.expected.hex() {
                        return Poll::Ready(Some(Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "{}: blob {} arrived with digest sha256:{got}",
                                self.what, self.expected
                            ),
                        ))));
                    }
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[async_trait]
impl Registry for Distribution {
    fn concurrency(&self) -> usize {
        self.concurrency
    }

    fn name(&self) -> &RegistryName {
        &self.name
    }

    async fn list_repos(&self) -> Result<Vec<Repo>> {
        let names = self
            .paged(
                "/v2/_catalog",
                "repositories",
                vec!["registry:catalog:*".into()],
            )
            .await?
            .ok_or_else(|| {
                RegistryError::new(
                    ErrorKind::Unsupported,
                    format!("registry {}: no catalog (GET /v2/_catalog: 404)", self.name),
                )
            })?;
        Ok(names.into_iter().filter_map(|n| n.parse().ok()).collect())
    }

    async fn list_tags_if_exists(&self, repo: &Repo) -> Result<Option<Vec<Tag>>> {
        let listed = self
            .paged(
                &format!("/v2/{repo}/tags/list"),
                "tags",
                vec![scope_pull(repo)],
            )
            .await?;
        let key = (self.name.to_string(), self.base.to_string(), repo.clone());
        if listed.is_none() {
            absent_repos().insert(key, Instant::now());
        } else {
            absent_repos().remove(&key);
        }
        let Some(names) = listed else {
            return Ok(None);
        };
        let mut tags: Vec<Tag> = names.into_iter().filter_map(|n| n.parse().ok()).collect();
        tags.sort();
        tags.dedup();
        Ok(Some(tags))
    }

    async fn head_manifest(&self, repo: &Repo, reference: &str) -> Result<Option<ManifestHead>> {
        self.head_manifest_known(repo, reference, None).await
    }

    async fn head_manifest_known(
        &self,
        repo: &Repo,
        reference: &str,
        known: Option<&ManifestHead>,
    ) -> Result<Option<ManifestHead>> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let mut req = Req::new(Method::HEAD, self.url(&path), vec![scope_pull(repo)])
            .header(ACCEPT, MediaType::ALL_MANIFESTS.join(", "));
        if let Some(k) = known {
            // A manifest's ETag is its digest (distribution spec; Distribution,
            // Harbor, GitLab, Zot): a match means the tag still holds those exact
            // bytes, so their media type and size are known too.
            req = req.header(IF_NONE_MATCH, format!("\"{}\"", k.digest));
        }
        let resp = self.send(&mut req).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if resp.status() == StatusCode::NOT_MODIFIED {
            // A 304 may repeat the digest; if it names another, it confirms nothing.
            let h = resp.headers();
            let named = header_str(h, "docker-content-digest")
                .or_else(|| header_str(h, "etag"))
                .map(|v| v.trim_start_matches("W/").trim_matches('"').to_string());
            return match known {
                Some(k) if named.as_ref().is_some_and(|n| *n != k.digest.as_str()) => Err(self
                    .fail(
                        ErrorKind::DigestMismatch,
                        &req.method,
                        &req.url,
                        format!(
                        "asked whether the tag still holds {}, the registry answered 304 naming {}",
                        k.digest,
                        named.unwrap_or_default()
                    ),
                    )),
                Some(k) => Ok(Some(k.clone())),
                None => Err(self.fail(
                    ErrorKind::Other,
                    &req.method,
                    &req.url,
                    "the registry answered 304 Not Modified to a request that was not conditional",
                )),
            };
        }
        if !resp.status().is_success() {
            return Err(self.status_error(&req.method, &req.url, resp).await);
        }
        let h = resp.headers();
        let digest: Option<Digest> =
            header_str(h, "docker-content-digest").and_then(|s| s.parse().ok());
        let mt = bare_media_type(header_str(h, "content-type"))
            .filter(|m| m != "application/json" && m != "application/octet-stream");
        let size = header_str(h, "content-length").and_then(|s| s.parse::<u64>().ok());
        match (digest, mt, size) {
            (Some(digest), Some(media_type), Some(size)) => {
                if let Ok(want) = reference.parse::<Digest>() {
                    if want != digest {
                        return Err(self.fail(
                            ErrorKind::DigestMismatch,
                            &req.method,
                            &req.url,
                            format!("asked for {want}, the registry answered {digest}"),
                        ));
                    }
                }
                Ok(Some(ManifestHead {
                    digest,
                    media_type,
                    size,
                }))
            }
            // Not enough in the headers: fetch and hash.
            _ => Ok(self
                .get_manifest_inner(repo, reference)
                .await?
                .map(|m| m.head())),
        }
    }

    async fn get_manifest(&self, repo: &Repo, reference: &str) -> Result<Option<Manifest>> {
        self.get_manifest_inner(repo, reference).await
    }

    async fn put_manifest(
        &self,
        repo: &Repo,
        tag: Option<&Tag>,
        manifest: &Manifest,
    ) -> Result<Digest> {
        let reference = match tag {
            Some(t) => t.as_str().to_string(),
            None => manifest.digest.as_str().to_string(),
        };
        let processed = self.put_manifest_raw(repo, &reference, manifest).await?;
        let parsed = manifest.parse().ok();
        if let Some((p, subject)) = parsed.as_ref().and_then(|p| p.subject().map(|s| (p, s))) {
            if processed {
                self.referrers_api.store(REFERRERS_YES, Ordering::Relaxed);
            } else {
                // No `OCI-Subject`: the registry has no referrers API (or
                // this answer lost the header on the way: an API seen
                // working stays in use); keep the tag schema index up to
                // date so others find this one either way.
                let _ = self.referrers_api.compare_exchange(
                    REFERRERS_UNKNOWN,
                    REFERRERS_NO,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                let mut desc = json!({
                    "mediaType": manifest.media_type,
                    "digest": manifest.digest,
                    "size": manifest.bytes.len(),
                });
                if let Some(at) = p.artifact_type() {
                    desc["artifactType"] = json!(at);
                }
                if !p.annotations().is_empty() {
                    desc["annotations"] = json!(p.annotations());
                }
                self.add_to_tag_index(repo, &subject.digest, desc).await?;
            }
        }
        Ok(manifest.digest.clone())
    }

    async fn head_blob(&self, repo: &Repo, digest: &Digest) -> Result<Option<u64>> {
        let (req, resp) = self
            .simple(
                Method::HEAD,
                &format!("/v2/{repo}/blobs/{digest}"),
                vec![scope_pull(repo)],
            )
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.status_error(&req.method, &req.url, resp).await);
        }
        Ok(Some(
            header_str(resp.headers(), "content-length")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
        ))
    }

    async fn get_blob(&self, repo: &Repo, digest: &Digest) -> Result<BlobStream> {
        let (req, resp) = self
            .simple(
                Method::GET,
                &format!("/v2/{repo}/blobs/{digest}"),
                vec![scope_pull(repo)],
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_error(&req.method, &req.url, resp).await);
        }
        let what = format!("registry {}: GET {}", self.name, req.url.path());
        let label = what.clone();
        let inner = resp.bytes_stream().map(move |r| {
            r.map_err(|e| std::io::Error::other(format!("{label}: {}", error_chain(&e))))
        });
        Ok(Box::pin(Verified {
            inner: Box::pin(inner),
            hasher: (digest.algorithm() == "sha256").then(Sha256::new),
            expected: digest.clone(),
            what,
            done: false,
        }))
    }

    async fn put_blob(
        &self,
        repo: &Repo,
        digest: &Digest,
        size: u64,
        data: BlobStream,
    ) -> Result<()> {
        self.put_blob_in(repo, digest, size, data, None).await
    }

    async fn start_blob(&self, blob: &Descriptor, repo: &Repo, from: &Repo) -> Result<BlobStart> {
        // A big blob is looked for first: a registry that cannot mount
        // answers the POST below with a session even when it has the blob,
        // and re-sending a big layer costs far more than a HEAD.
        if blob.size > SMALL_BLOB {
            return super::start_blob_by_head(self, blob, repo, from).await;
        }
        let digest = &blob.digest;
        // A mount POST checks and starts at once: `201` when the blob is (now)
        // in `repo`, else `202` with a fresh upload session (Distribution
        // falls back to a session whatever stopped the mount, including a
        // blob absent from `from`; the OCI spec says the same). `from ==
        // repo` is a mount onto itself: "is it here already?".
        let mut url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        url.query_pairs_mut()
            .append_pair("mount", digest.as_str())
            .append_pair("from", from.as_str());
        let scopes = if from == repo {
            vec![scope_push(repo)]
        } else {
            vec![scope_push(repo), scope_pull(from)]
        };
        let mut req = Req::new(Method::POST, url, scopes).header(CONTENT_LENGTH, "0");
        let resp = self.send(&mut req).await?;
        match resp.status() {
            StatusCode::CREATED => {
                match header_str(resp.headers(), "docker-content-digest")
                    .and_then(|s| s.parse::<Digest>().ok())
                {
                    Some(d) if &d == digest => Ok(BlobStart::Present),
                    Some(d) => Err(self.fail(
                        ErrorKind::DigestMismatch,
                        &req.method,
                        &req.url,
                        format!("mounted {d}, expected {digest}"),
                    )),
                    // A 201 that does not say which blob: believe only a HEAD.
                    None => super::start_blob_by_head(self, blob, repo, repo).await,
                }
            }
            StatusCode::ACCEPTED => {
                let loc = self.location(&req, &resp).map_err(|f| f.err)?;
                Ok(BlobStart::Upload(Some(UploadSession(loc.to_string()))))
            }
            // Some registries refuse a mount outright (or the token lacks
            // pull on `from`): the plain way still works.
            status => {
                tracing::debug!(%status, "mount POST refused; looking for the blob with HEAD");
                super::start_blob_by_head(self, blob, repo, from).await
            }
        }
    }

    fn known_absent(&self, repo: &Repo) -> bool {
        absent_repos()
            .get(&(self.name.to_string(), self.base.to_string(), repo.clone()))
            .is_some_and(|at| at.elapsed() <= ABSENT_TRUSTED)
    }

    async fn cancel_upload(&self, repo: &Repo, session: UploadSession) {
        if let Ok(loc) = Url::parse(&session.0) {
            self.cancel_session(repo, loc).await;
        }
    }

    async fn put_blob_in(
        &self,
        repo: &Repo,
        digest: &Digest,
        size: u64,
        mut data: BlobStream,
        session: Option<UploadSession>,
    ) -> Result<()> {
        let mut session = match session.map(|s| Url::parse(&s.0)) {
            Some(Ok(u)) => Some(u),
            Some(Err(e)) => {
                return Err(RegistryError::other(format!(
                    "registry {}: uploading {digest} to {repo}: bad upload session: {e}",
                    self.name
                )))
            }
            None => None,
        };
        if size <= SMALL_BLOB {
            // Small: buffer, check, and keep the bytes for a session restart.
            let bytes = match read_small(&mut data, size).await {
                Ok(b) if b.len() as u64 == size && digest_matches(digest, &b) => b,
                got => {
                    if let Some(loc) = session.take() {
                        self.cancel_session(repo, loc).await;
                    }
                    return Err(match got {
                        Err(e) => RegistryError::other(format!(
                            "registry {}: uploading {digest} to {repo}: reading the source: {e}",
                            self.name
                        )),
                        Ok(b) => RegistryError::new(
                            ErrorKind::DigestMismatch,
                            format!(
                                "registry {}: uploading {digest} to {repo}: the source gave {} bytes hashing to {}",
                                self.name,
                                b.len(),
                                Digest::sha256_of(&b)
                            ),
                        ),
                    });
                }
            };
            let mut attempt = 0;
            loop {
                attempt += 1;
                match self
                    .upload(repo, digest, Body::Bytes(bytes.clone()), session.take())
                    .await
                {
                    Ok(()) => return Ok(()),
                    Err(f) if f.transient && attempt < UPLOAD_SESSIONS => {
                        tracing::debug!("{}; restarting the upload session", f.err);
                        tokio::time::sleep(self.backoff * 2u32.pow(attempt - 1)).await;
                    }
                    Err(f) => return Err(f.err),
                }
            }
        }
        self.upload(repo, digest, Body::Stream(Some(data), size), session)
            .await
            .map_err(|f| {
                if f.transient {
                    RegistryError::new(
                        f.err.kind,
                        format!("{} (upload of {digest} may be retried)", f.err.message),
                    )
                } else {
                    f.err
                }
            })
    }

    async fn mount_blob(&self, repo: &Repo, from: &Repo, digest: &Digest) -> Result<bool> {
        let mut url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        url.query_pairs_mut()
            .append_pair("mount", digest.as_str())
            .append_pair("from", from.as_str());
        let mut req = Req::new(Method::POST, url, vec![scope_push(repo), scope_pull(from)])
            .header(CONTENT_LENGTH, "0");
        let resp = self.send(&mut req).await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                if let Ok(loc) = self.location(&req, &resp) {
                    self.cancel_session(repo, loc).await;
                }
                Ok(false)
            }
            // Refused outright (404, 405, 400, or 403 for lacking pull on
            // `from`): declined, so the blob is copied the plain way (which
            // says so if pushing is what is refused).
            status => {
                tracing::debug!(%status, "mount POST refused; the blob will be uploaded");
                Ok(false)
            }
        }
    }

    async fn delete_manifest(&self, repo: &Repo, digest: &Digest) -> Result<()> {
        let lock = self.repo_writes(repo);
        let _alone = lock.write().await;
        let (req, resp) = self
            .simple(
                Method::DELETE,
                &format!("/v2/{repo}/manifests/{digest}"),
                vec![scope_delete(repo)],
            )
            .await?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(self.status_error(&req.method, &req.url, resp).await)
    }

    async fn delete_tag(&self, repo: &Repo, tag: &Tag) -> Result<()> {
        let lock = self.repo_writes(repo);
        let _alone = lock.write().await;
        let (req, resp) = self
            .simple(
                Method::DELETE,
                &format!("/v2/{repo}/manifests/{tag}"),
                vec![scope_delete(repo)],
            )
            .await?;
        if resp.status().is_success() {
            return Ok(());
        }
        let status = resp.status();
        let mut err = self.status_error(&req.method, &req.url, resp).await;
        // Distribution refuses DELETE by tag (400 DIGEST_INVALID / 405 UNSUPPORTED).
        if matches!(status.as_u16(), 400 | 405 | 501) {
            err.kind = ErrorKind::Unsupported;
        }
        Err(err)
    }

    async fn referrers(&self, repo: &Repo, digest: &Digest) -> Result<Vec<Descriptor>> {
        Ok(self.referrers_listed(repo, digest).await?.descriptors)
    }

    async fn referrers_api(&self, repo: &Repo, digest: &Digest) -> Result<Option<Vec<Descriptor>>> {
        // Until one answer says whether the API exists, ask one at a time;
        // a probe that failed fails the rest of the run's asks alike (a
        // registry or proxy refusing the route is asked once, not per image).
        let mut probing = None;
        match self.referrers_api.load(Ordering::Relaxed) {
            REFERRERS_NO => return Ok(None),
            REFERRERS_YES => {}
            _ => {
                let probe = self.referrers_probe.lock().await;
                match &*probe {
                    ReferrersProbe::Failed(e) => {
                        return Err(RegistryError::new(e.kind, e.message.clone()))
                    }
                    _ if self.referrers_api.load(Ordering::Relaxed) == REFERRERS_NO => {
                        return Ok(None)
                    }
                    ReferrersProbe::NotYet => probing = Some(probe),
                    ReferrersProbe::Answered => {}
                }
            }
        }
        let answer = self.referrers_pages(repo, digest).await;
        if let Some(mut probe) = probing {
            *probe = match &answer {
                Err(e) => ReferrersProbe::Failed(RegistryError::new(
                    e.kind,
                    format!("{e} (asking whether the registry has the referrers API)"),
                )),
                Ok(_) => ReferrersProbe::Answered,
            };
        }
        answer
    }

    async fn referrers_listed(&self, repo: &Repo, digest: &Digest) -> Result<ReferrerList> {
        if let Some(descriptors) = self.referrers_api(repo, digest).await? {
            return Ok(ReferrerList {
                descriptors,
                fallback: FallbackIndex::NotRead,
            });
        }
        // Always asked, never inferred from a tag list: a pull-through cache
        // lists only what it holds, and a signature pushed after the list
        // was read must still follow the copy.
        let tag = digest.referrers_tag();
        Ok(match self.get_manifest_inner(repo, tag.as_str()).await? {
            Some(m) if m.is_index() => {
                let body: Value = serde_json::from_slice(&m.bytes).unwrap_or(Value::Null);
                // The tag is only a list someone wrote: an entry counts as a
                // referrer of `digest` only when its own manifest says so (a
                // stale or crafted entry naming a tagged image must never be
                // deleted with this one).
                // Its artifact type too is the manifest's own: gates judge
                // reports and SBOMs by it, and an entry may claim any type.
                let mut verified = Vec::new();
                for mut d in descriptors(&body) {
                    let (subject, artifact_type) = self.subject_of(repo, &d.digest).await?;
                    if subject.as_ref() == Some(digest) {
                        if d.artifact_type != artifact_type {
                            tracing::debug!(registry = %self.name, %repo, entry = %d.digest, listed = ?d.artifact_type, manifest = ?artifact_type, "a referrers index entry's artifactType is not its manifest's: the manifest's counts");
                        }
                        d.artifact_type = artifact_type;
                        verified.push(d);
                    } else {
                        tracing::debug!(registry = %self.name, %repo, subject = %digest, entry = %d.digest, "ignoring a referrers index entry whose manifest's subject is not the image");
                    }
                }
                ReferrerList {
                    descriptors: verified,
                    fallback: FallbackIndex::Read(Some(m)),
                }
            }
            _ => ReferrerList {
                descriptors: Vec::new(),
                fallback: FallbackIndex::Read(None),
            },
        })
    }
}

fn descriptors(index: &Value) -> Vec<Descriptor> {
    index
        .get("manifests")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|d| serde_json::from_value(d.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Auth, Endpoint};
    use crate::registry::manifest::Parsed;

    #[test]
    fn bearer_is_answered_when_one_header_offers_basic_too() {
        let c = pick_challenge(&[
            r#"Basic realm="r", Bearer realm="https://a/token",service="s""#.to_string(),
        ])
        .unwrap();
        assert!(
            matches!(&c, Challenge::Bearer { realm, service, .. }
                if realm == "https://a/token" && service.as_deref() == Some("s")),
            "{c:?}"
        );
    }

    #[test]
    fn error_messages_never_carry_url_queries() {
        let m = strip_url_queries(
            "error sending request for url (https://bucket.s3.amazonaws.com/blob?X-Amz-Signature=secret&X-Amz-Security-Token=t): timed out",
        );
        assert_eq!(
            m,
            "error sending request for url (https://bucket.s3.amazonaws.com/blob): timed out"
        );
        assert!(!m.contains("secret"));
    }
    use crate::testkit::{self, ImageSpec};
    use futures_util::TryStreamExt;
    use std::process::{Child, Command, Stdio};

    /// A Debian `docker-registry` on a free loopback port, killed on drop.
    struct TestRegistry {
        child: Child,
        addr: String,
        _dir: tempfile::TempDir,
    }

    impl Drop for TestRegistry {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    const BIN: &str = "/usr/bin/docker-registry";

    async fn start(htpasswd: Option<(&str, &str)>) -> TestRegistry {
        start_with(htpasswd, true).await
    }

    async fn start_with(htpasswd: Option<(&str, &str)>, delete: bool) -> TestRegistry {
        assert!(
            Path::new(BIN).exists(),
            "{BIN} is missing: apt-get install -y docker-registry"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: {delete}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, pass)) = htpasswd {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .expect("htpasswd (apache2-utils) is needed");
            assert!(out.status.success());
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).unwrap();
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                file.display()
            ));
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting docker-registry");
        let reg = TestRegistry {
            child,
            addr,
            _dir: dir,
        };
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if client
                .get(format!("http://{}/v2/", reg.addr))
                .send()
                .await
                .is_ok()
            {
                return reg;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("docker-registry did not answer on {}", reg.addr);
    }

    fn cfg(addr: &str, auth: Option<Auth>) -> crate::config::Registry {
        crate::config::Registry {
            url: Endpoint::Http(addr.to_string()),
            auth,
            concurrency: None,
            rate: None,
            loc: None,
        }
    }

    fn dist(addr: &str) -> Distribution {
        Distribution::new("dev".parse().unwrap(), &cfg(addr, None), Path::new("."))
            .unwrap()
            .with_backoff(Duration::from_millis(20))
    }

    #[test]
    fn certs_d_cas_reads_each_hosts_crt_files() {
        let pem = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/tls/ca.crt"))
            .unwrap();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let dirs = [a.path(), b.path()];
        let host = "reg.example:5000";
        assert!(certs_d_cas(&dirs, host).unwrap().is_empty(), "no folders");
        for d in dirs {
            std::fs::create_dir_all(d.join(host)).unwrap();
        }
        std::fs::write(a.path().join(host).join("ca.crt"), &pem).unwrap();
        // Docker's client certificate files sit beside them and are not CAs.
        std::fs::write(b.path().join(host).join("client.key"), "not a cert").unwrap();
        std::fs::write(b.path().join(host).join("client.cert"), "not a cert").unwrap();
        assert_eq!(certs_d_cas(&dirs, host).unwrap().len(), 1);
        std::fs::write(
            b.path().join(host).join("extra.crt"),
            [&pem[..], &pem[..]].concat(),
        )
        .unwrap();
        assert_eq!(certs_d_cas(&dirs, host).unwrap().len(), 3);
        assert!(certs_d_cas(&dirs, "other:5000").unwrap().is_empty());
        std::fs::write(b.path().join(host).join("bad.crt"), "garbage").unwrap();
        let err = certs_d_cas(&dirs, host).err().unwrap();
        assert!(
            err.contains("bad.crt") && err.contains("no certificate"),
            "{err}"
        );
    }

    #[test]
    fn request_urls_keep_the_base_and_the_whole_path() {
        let d = dist("127.0.0.1:5000");
        for path in [
            "/v2/",
            "/v2/team/api/manifests/1.0-rc.1",
            "/v2/a/b/c/blobs/sha256:0123abcd",
            "/v2/team/api/manifests/sha256-0123abcd.sig",
        ] {
            let url = d.url(path);
            assert_eq!(url.as_str(), format!("http://127.0.0.1:5000{path}"));
            assert_eq!(url, d.base.join(path).unwrap());
        }
    }

    fn repo(s: &str) -> Repo {
        s.parse().unwrap()
    }
    fn tag(s: &str) -> Tag {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn push_and_read_back_images_indexes_and_referrers() {
        let r = start(None).await;
        let d = dist(&r.addr);
        let app = repo("team/api");
        let img = testkit::push_image(
            &d,
            &app,
            Some(&tag("1.0")),
            &ImageSpec::new("2024-01-01T00:00:00Z"),
        )
        .await
        .unwrap();
        let docker = testkit::push_docker_image(
            &d,
            &app,
            Some(&tag("docker")),
            &ImageSpec::new("2024-01-02T00:00:00Z").with_label("k", "v"),
        )
        .await
        .unwrap();
        let idx = testkit::push_index(
            &d,
            &app,
            Some(&tag("multi")),
            &[
                ImageSpec::new("2024-01-03T00:00:00Z").with_platform("linux", "amd64"),
                ImageSpec::new("2024-01-03T00:00:00Z").with_platform("linux", "arm64"),
            ],
        )
        .await
        .unwrap();
        let sig = testkit::push_referrer(&d, &app, &img, "application/vnd.example.sig", b"signed")
            .await
            .unwrap();
        let sbom = testkit::push_referrer(&d, &app, &img, "application/vnd.example.sbom", b"sbom")
            .await
            .unwrap();

        let tags = d.list_tags(&app).await.unwrap();
        let names: Vec<&str> = tags.iter().map(|t| t.as_str()).collect();
        assert!(names.contains(&"1.0") && names.contains(&"docker") && names.contains(&"multi"));
        assert!(names.contains(&img.referrers_tag().as_str()), "{names:?}");

        let h = d.head_manifest(&app, "1.0").await.unwrap().unwrap();
        assert_eq!(h.digest, img);
        assert_eq!(h.media_type, MediaType::OCI_MANIFEST);
        let h = d.head_manifest(&app, "docker").await.unwrap().unwrap();
        assert_eq!(
            (h.digest, h.media_type.as_str()),
            (docker.clone(), MediaType::DOCKER_MANIFEST)
        );
        let m = d.get_manifest(&app, idx.as_str()).await.unwrap().unwrap();
        assert_eq!(m.digest, idx);
        assert_eq!(m.media_type, MediaType::OCI_INDEX);
        assert!(d.get_manifest(&app, "nope").await.unwrap().is_none());
        assert!(d.head_manifest(&app, "nope").await.unwrap().is_none());

        // Blobs stream back and verify.
        let Parsed::Image { config, .. } = d
            .get_manifest(&app, "docker")
            .await
            .unwrap()
            .unwrap()
            .parse()
            .unwrap()
        else {
            panic!("not an image")
        };
        let bytes: Vec<Bytes> = d
            .get_blob(&app, &config.digest)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let all: Vec<u8> = bytes.concat();
        assert_eq!(Digest::sha256_of(&all), config.digest);
        assert_eq!(
            d.head_blob(&app, &config.digest).await.unwrap(),
            Some(config.size)
        );

        // Referrers through the tag schema (Distribution 2.8 has no API).
        let refs = d.referrers(&app, &img).await.unwrap();
        let mut got: Vec<(Digest, Option<String>)> = refs
            .into_iter()
            .map(|r| (r.digest, r.artifact_type))
            .collect();
        got.sort();
        let mut want = vec![
            (sig, Some("application/vnd.example.sig".to_string())),
            (sbom, Some("application/vnd.example.sbom".to_string())),
        ];
        want.sort();
        assert_eq!(got, want);
        assert_eq!(d.referrers_api.load(Ordering::Relaxed), REFERRERS_NO);
        // A fresh client finds them too (probe, then fallback).
        assert_eq!(dist(&r.addr).referrers(&app, &img).await.unwrap().len(), 2);
        assert!(d.referrers(&app, &docker).await.unwrap().is_empty());
        // The list hands back the fallback index it came from, byte for byte
        // what the tag serves, so a copier need not read it again.
        let listed = d.referrers_listed(&app, &img).await.unwrap();
        let FallbackIndex::Read(Some(index)) = listed.fallback else {
            panic!("fallback index not handed back: {:?}", listed.fallback)
        };
        let tagged = d.head_manifest(&app, img.referrers_tag().as_str()).await;
        assert_eq!(index.digest, tagged.unwrap().unwrap().digest);
        assert!(matches!(
            d.referrers_listed(&app, &docker).await.unwrap().fallback,
            FallbackIndex::Read(None)
        ));

        assert!(d.list_tags(&repo("no/such")).await.unwrap().is_empty());
        let repos = d.list_repos().await.unwrap();
        assert_eq!(repos, vec![app.clone()]);

        // Delete by digest.
        d.delete_manifest(&app, &docker).await.unwrap();
        assert!(d
            .head_manifest(&app, docker.as_str())
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn pages_tags_and_catalog() {
        let r = start(None).await;
        let d = dist(&r.addr).with_page_size(7);
        let spec = ImageSpec::new("2024-01-01T00:00:00Z");
        let first = repo("many/r00");
        let digest = testkit::push_image(&d, &first, Some(&tag("t00")), &spec)
            .await
            .unwrap();
        let m = d
            .get_manifest(&first, digest.as_str())
            .await
            .unwrap()
            .unwrap();
        for i in 1..30 {
            d.put_manifest(&first, Some(&tag(&format!("t{i:02}"))), &m)
                .await
                .unwrap();
        }
        for i in 1..10 {
            testkit::push_image(&d, &repo(&format!("many/r{i:02}")), Some(&tag("x")), &spec)
                .await
                .unwrap();
        }
        let tags = d.list_tags(&first).await.unwrap();
        let want: Vec<String> = (0..30).map(|i| format!("t{i:02}")).collect();
        assert_eq!(tags.iter().map(|t| t.to_string()).collect::<Vec<_>>(), want);
        let repos = d.list_repos().await.unwrap();
        assert_eq!(repos.len(), 10, "{repos:?}");
        // The catalog really pages (Distribution honours `n` there).
        let mut url = d.url("/v2/_catalog");
        url.query_pairs_mut().append_pair("n", "7");
        let resp = reqwest::get(url).await.unwrap();
        assert!(next_link(resp.headers()).is_some());
        // Distribution 2.8 ignores `n` on tags/list; tag paging is covered
        // against the fake server below.
    }

    #[tokio::test]
    async fn mounts_across_repos() {
        let r = start(None).await;
        let d = dist(&r.addr);
        let a = repo("src/a");
        let b = repo("dst/b");
        let blob = testkit::push_blob(&d, &a, b"some layer bytes")
            .await
            .unwrap();
        assert_eq!(d.head_blob(&b, &blob).await.unwrap(), None);
        assert!(d.mount_blob(&b, &a, &blob).await.unwrap());
        assert_eq!(d.head_blob(&b, &blob).await.unwrap(), Some(16));
        let missing = Digest::sha256_of(b"never pushed");
        assert!(!d.mount_blob(&b, &a, &missing).await.unwrap());
    }

    #[tokio::test]
    async fn large_blob_streams_and_bad_digest_is_refused() {
        let r = start(None).await;
        let d = dist(&r.addr);
        let a = repo("big/one");
        let data = testkit::pseudo_random_bytes(7, (SMALL_BLOB as usize) + 123_457);
        let digest = testkit::push_blob(&d, &a, &data).await.unwrap();
        assert_eq!(
            d.head_blob(&a, &digest).await.unwrap(),
            Some(data.len() as u64)
        );
        let back: Vec<Bytes> = d
            .get_blob(&a, &digest)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(back.concat(), data);
        // Wrong digest, streamed: the registry refuses it.
        let wrong = Digest::sha256_of(b"other");
        let s: BlobStream = Box::pin(futures_util::stream::iter([Ok(Bytes::from(data.clone()))]));
        let e = d
            .put_blob(&a, &wrong, data.len() as u64, s)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::DigestMismatch, "{e}");
        // Wrong digest, small: caught before upload.
        let s: BlobStream = Box::pin(futures_util::stream::iter([Ok(Bytes::from_static(b"abc"))]));
        let e = d.put_blob(&a, &wrong, 3, s).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::DigestMismatch, "{e}");
    }

    #[tokio::test]
    async fn delete_tag_falls_back_to_placeholder_and_keeps_other_tags() {
        let r = start(None).await;
        let d = dist(&r.addr);
        let app = repo("team/web");
        let img = testkit::push_image(
            &d,
            &app,
            Some(&tag("keep")),
            &ImageSpec::new("2024-01-01T00:00:00Z"),
        )
        .await
        .unwrap();
        let m = d.get_manifest(&app, img.as_str()).await.unwrap().unwrap();
        d.put_manifest(&app, Some(&tag("drop")), &m).await.unwrap();
        let e = d.delete_tag(&app, &tag("drop")).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
        // Expected on another image (pushed again since the plan): kept.
        let other = Digest::sha256_of(b"the image the plan saw");
        let e = crate::registry::remove_tag(&d, &app, &tag("drop"), Some(&other))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
        assert_eq!(
            d.head_manifest(&app, "drop").await.unwrap().unwrap().digest,
            img
        );
        crate::registry::remove_tag(&d, &app, &tag("drop"), Some(&img))
            .await
            .unwrap();
        let tags = d.list_tags(&app).await.unwrap();
        assert_eq!(tags, vec![tag("keep")]);
        assert_eq!(
            d.head_manifest(&app, "keep").await.unwrap().unwrap().digest,
            img
        );
        assert!(d.get_manifest(&app, img.as_str()).await.unwrap().is_some());
        let e = crate::registry::remove_tag(&d, &app, &tag("drop"), None)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    }

    #[tokio::test]
    async fn delete_disabled_leaves_the_tag_alone() {
        let r = start_with(None, false).await;
        let d = dist(&r.addr);
        let app = repo("team/web");
        let img = testkit::push_image(
            &d,
            &app,
            Some(&tag("drop")),
            &ImageSpec::new("2024-01-01T00:00:00Z"),
        )
        .await
        .unwrap();
        let e = crate::registry::remove_tag(&d, &app, &tag("drop"), None)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
        assert_eq!(
            d.head_manifest(&app, "drop").await.unwrap().unwrap().digest,
            img
        );
        let e = d.delete_manifest(&app, &img).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
    }

    #[tokio::test]
    async fn basic_auth_with_htpasswd() {
        let r = start(Some(("alice", "correct horse"))).await;
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("pw"), "correct horse\n").unwrap();
        let good = Auth {
            username: Some("alice".into()),
            password_file: Some("pw".into()),
            ..Auth::default()
        };
        let d = Distribution::new(
            "auth".parse().unwrap(),
            &cfg(&r.addr, Some(good)),
            root.path(),
        )
        .unwrap();
        let app = repo("private/app");
        let img = testkit::push_image(
            &d,
            &app,
            Some(&tag("1")),
            &ImageSpec::new("2024-01-01T00:00:00Z"),
        )
        .await
        .unwrap();
        assert_eq!(
            d.head_manifest(&app, "1").await.unwrap().unwrap().digest,
            img
        );
        assert_eq!(d.list_tags(&app).await.unwrap(), vec![tag("1")]);
        assert!(!format!("{d:?}").contains("correct horse"));

        std::fs::write(root.path().join("bad"), "wrong").unwrap();
        let bad = Auth {
            username: Some("alice".into()),
            password_file: Some("bad".into()),
            ..Auth::default()
        };
        let d = Distribution::new(
            "auth".parse().unwrap(),
            &cfg(&r.addr, Some(bad)),
            root.path(),
        )
        .unwrap();
        let started = Instant::now();
        let e = d.list_tags(&app).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Denied, "{e}");
        assert!(
            e.message.contains("registry auth") && e.message.contains("401"),
            "{e}"
        );
        assert!(!e.message.contains("wrong"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

/// Protocol edge cases against a tiny scripted HTTP server.
#[cfg(test)]
mod fake_server_tests {
    use super::*;
    use crate::config::{Auth, Endpoint};
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::AtomicUsize;

    struct FakeReq {
        method: String,
        target: String,
        headers: HashMap<String, String>,
        body: Vec<u8>,
    }

    /// `status == 0` drops the connection without answering.
    struct FakeResp {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    fn resp(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> FakeResp {
        FakeResp {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.into(),
        }
    }

    type Handler = Arc<dyn Fn(&FakeReq) -> FakeResp + Send + Sync>;

    fn serve(handler: Handler) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let h = handler.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let mut line = String::new();
                    if r.read_line(&mut line).is_err() {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let method = parts.next().unwrap_or("").to_string();
                    let target = parts.next().unwrap_or("").to_string();
                    let mut headers = HashMap::new();
                    loop {
                        let mut l = String::new();
                        if r.read_line(&mut l).unwrap_or(0) == 0 || l.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':') {
                            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                        }
                    }
                    let len: usize = headers
                        .get("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    let _ = r.read_exact(&mut body);
                    let out = h(&FakeReq {
                        method,
                        target,
                        headers,
                        body,
                    });
                    if out.status == 0 {
                        let _ = s.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                    let reason = StatusCode::from_u16(out.status)
                        .ok()
                        .and_then(|c| c.canonical_reason())
                        .unwrap_or("");
                    let mut head = format!(
                        "HTTP/1.1 {} {reason}\r\ncontent-length: {}\r\nconnection: close\r\n",
                        out.status,
                        out.body.len()
                    );
                    for (k, v) in &out.headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = s.write_all(head.as_bytes());
                    let _ = s.write_all(&out.body);
                });
            }
        });
        addr
    }

    /// [`serve`], the handler also given the server's own address (for a
    /// token realm on the same server).
    fn serve_at(handler: impl Fn(&FakeReq, &str) -> FakeResp + Send + Sync + 'static) -> String {
        let own: Arc<std::sync::OnceLock<String>> = Arc::new(std::sync::OnceLock::new());
        let seen = own.clone();
        let addr = serve(Arc::new(move |r: &FakeReq| {
            handler(r, seen.get().map(String::as_str).unwrap_or(""))
        }));
        own.set(addr.clone()).unwrap();
        addr
    }

    /// A 401 sending the client to the token realm `path` on `addr`.
    fn bearer_challenge(addr: &str, path: &str) -> FakeResp {
        let realm = format!(r#"Bearer realm="http://{addr}{path}",service="fake""#);
        resp(401, &[("www-authenticate", &realm)], "")
    }

    fn dist(addr: &str, auth: Option<Auth>) -> Distribution {
        let cfg = crate::config::Registry {
            url: Endpoint::Http(addr.to_string()),
            auth,
            concurrency: Some(2),
            rate: None,
            loc: None,
        };
        Distribution::new("dev".parse().unwrap(), &cfg, Path::new("."))
            .unwrap()
            .with_backoff(Duration::from_millis(10))
    }

    fn repo() -> Repo {
        "team/api".parse().unwrap()
    }

    /// A conditional HEAD answered 304 confirms the head asked about (the
    /// same bytes: their media type and size); answered 200, the tag holds
    /// something else and that is what counts; a 304 to a HEAD that asked
    /// nothing is the registry's error, not a confirmation of anything.
    #[tokio::test]
    async fn a_304_confirms_only_what_was_asked() {
        let known = ManifestHead {
            digest: Digest::sha256_of(b"the image the cache names"),
            media_type: MediaType::OCI_INDEX.to_string(),
            size: 1234,
        };
        let now = Digest::sha256_of(b"what the tag holds now");
        let (asked, holds) = (format!("\"{}\"", known.digest), now.to_string());
        let addr = serve(Arc::new(move |r: &FakeReq| {
            match (r.target.as_str(), r.headers.get("if-none-match")) {
                ("/v2/team/api/manifests/same", Some(v)) if *v == asked => resp(304, &[], ""),
                ("/v2/team/api/manifests/moved", Some(_)) => resp(
                    200,
                    &[
                        ("docker-content-digest", holds.as_str()),
                        ("content-type", MediaType::OCI_MANIFEST),
                    ],
                    "",
                ),
                ("/v2/team/api/manifests/liar", None) => resp(304, &[], ""),
                ("/v2/team/api/manifests/other", Some(_)) => {
                    resp(304, &[("etag", "\"sha256:0000\"")], "")
                }
                _ => resp(404, &[], ""),
            }
        }));
        let d = dist(&addr, None);
        let head = |tag: &'static str, k: Option<ManifestHead>| {
            let d = &d;
            async move { d.head_manifest_known(&repo(), tag, k.as_ref()).await }
        };
        assert_eq!(
            head("same", Some(known.clone())).await.unwrap(),
            Some(known.clone())
        );
        let moved = head("moved", Some(known.clone())).await.unwrap().unwrap();
        assert_eq!(
            (moved.digest, moved.media_type.as_str()),
            (now, MediaType::OCI_MANIFEST)
        );
        let e = head("liar", None).await.unwrap_err().to_string();
        assert!(e.contains("304") && e.contains("not conditional"), "{e}");
        let e = head("other", Some(known.clone()))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("304 naming sha256:0000"), "{e}");
    }

    /// A registry that takes a PUT's body 256 KiB per `pace` (none of it,
    /// when `None`) and then answers 201; any other request gets 204.
    fn slow_reader(pace: Option<Duration>) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let (mut first, mut len) = (String::new(), 0usize);
                    r.read_line(&mut first).unwrap();
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                            break;
                        }
                        let line = line.to_ascii_lowercase();
                        if let Some(v) = line.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    if first.starts_with("PUT ") {
                        let Some(pace) = pace else {
                            std::thread::sleep(Duration::from_secs(60));
                            return;
                        };
                        let (mut buf, mut got) = (vec![0u8; 256 << 10], 0);
                        while got < len {
                            match r.read(&mut buf) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got += n,
                            }
                            std::thread::sleep(pace);
                        }
                        let _ = write!(s, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
                    } else {
                        let _ = write!(s, "HTTP/1.1 204 No Content\r\n\r\n");
                    }
                });
            }
        });
        addr
    }

    fn zeros(size: usize) -> BlobStream {
        let chunk = Bytes::from(vec![0u8; 64 << 10]);
        Box::pin(futures_util::stream::iter(
            (0..size / chunk.len()).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
        ))
    }

    fn dist_idle(addr: &str, idle: Duration) -> Distribution {
        let cfg = crate::config::Registry {
            url: Endpoint::Http(addr.to_string()),
            auth: None,
            concurrency: Some(2),
            rate: None,
            loc: None,
        };
        Distribution::with_idle("dev".parse().unwrap(), &cfg, Path::new("."), idle).unwrap()
    }

    /// An upload that takes longer than the idle timeout succeeds as long
    /// as the registry keeps taking it (reqwest's read timeout would count
    /// from the send and fail it).
    #[tokio::test]
    async fn a_slow_upload_that_keeps_moving_is_not_cut_off() {
        let addr = slow_reader(Some(Duration::from_millis(20)));
        let d = dist_idle(&addr, Duration::from_millis(300));
        let session = UploadSession(format!("http://{addr}/v2/team/api/blobs/uploads/1"));
        let digest = Digest::sha256_of(b"not checked by this server");
        let started = std::time::Instant::now();
        d.put_blob_in(&repo(), &digest, 16 << 20, zeros(16 << 20), Some(session))
            .await
            .unwrap();
        assert!(started.elapsed() > Duration::from_millis(600));
    }

    /// The idle clock of an upload starts when it is sent: waiting for its
    /// turn (the registry's `concurrency`) longer than that is no stall.
    #[tokio::test]
    async fn an_upload_waiting_its_turn_is_not_a_stalled_one() {
        let addr = slow_reader(Some(Duration::from_millis(1)));
        let d = dist_idle(&addr, Duration::from_millis(300));
        let held = d.permits.acquire_many(2).await.unwrap();
        let session = UploadSession(format!("http://{addr}/v2/team/api/blobs/uploads/1"));
        let digest = Digest::sha256_of(b"queued");
        let repo = repo();
        let put = d.put_blob_in(&repo, &digest, 8 << 20, zeros(8 << 20), Some(session));
        let release = async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            drop(held);
        };
        let (put, ()) = tokio::join!(put, release);
        put.unwrap();
    }

    /// A registry that stops taking an upload fails it after the idle
    /// timeout, with an error that says so (and may be retried).
    #[tokio::test]
    async fn an_upload_the_registry_stops_taking_fails_after_the_idle_timeout() {
        let addr = slow_reader(None);
        let d = dist_idle(&addr, Duration::from_millis(300));
        let session = UploadSession(format!("http://{addr}/v2/team/api/blobs/uploads/1"));
        let digest = Digest::sha256_of(b"never stored");
        let repo = repo();
        let put = d.put_blob_in(&repo, &digest, 256 << 20, zeros(256 << 20), Some(session));
        let err = tokio::time::timeout(Duration::from_secs(20), put)
            .await
            .expect("the stalled upload ends on its own")
            .unwrap_err();
        assert!(
            err.message.contains("the upload stalled at"),
            "{}",
            err.message
        );
        assert!(err.message.contains("may be retried"), "{}", err.message);
    }

    const BODY: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;

    fn manifest_ok() -> FakeResp {
        let d = Digest::sha256_of(BODY).to_string();
        resp(
            200,
            &[
                ("content-type", MediaType::OCI_MANIFEST),
                ("docker-content-digest", &d),
            ],
            BODY,
        )
    }

    #[tokio::test]
    async fn the_referrers_tag_is_asked_even_when_the_tag_list_lacks_it() {
        // A pull-through cache lists only what it holds; a signature may be
        // pushed after the list was read: neither may hide referrers.
        let subject = Digest::sha256_of(b"subject");
        let gets = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen = gets.clone();
        let addr = serve(Arc::new(move |r: &FakeReq| {
            seen.lock().unwrap().push(r.target.clone());
            if r.target.contains("/tags/list") {
                resp(200, &[], r#"{"name":"team/api","tags":["v1"]}"#)
            } else {
                // No referrers API (Distribution 2.8), no such tag.
                resp(404, &[], "404 page not found")
            }
        }));
        let d = dist(&addr, None);
        d.list_tags(&repo()).await.unwrap();
        assert!(d.referrers(&repo(), &subject).await.unwrap().is_empty());
        let tag = subject.referrers_tag();
        assert!(
            gets.lock()
                .unwrap()
                .iter()
                .any(|t| t.ends_with(&format!("/manifests/{tag}"))),
            "{:?}",
            gets.lock().unwrap()
        );
    }

    /// A plan asks every copied image's referrers at once: a registry
    /// without the API sees one such request in all; one with it answers
    /// each, and its index is what is returned.
    #[tokio::test]
    async fn the_referrers_api_is_probed_once_and_read_where_it_exists() {
        let a = Digest::sha256_of(b"a");
        let b = Digest::sha256_of(b"b");
        for has_api in [false, true] {
            let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let seen = asked.clone();
            let sbom = Digest::sha256_of(b"sbom");
            let index = format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{sbom}","size":10,"artifactType":"application/spdx+json"}}]}}"#
            );
            let addr = serve(Arc::new(move |r: &FakeReq| {
                if r.target.contains("/referrers/") {
                    seen.fetch_add(1, Ordering::SeqCst);
                    if has_api {
                        return resp(
                            200,
                            &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
                            index.clone(),
                        );
                    }
                }
                resp(404, &[], "404 page not found")
            }));
            let d = Arc::new(dist(&addr, None));
            let lists: Vec<_> = futures_util::future::join_all((0..8).map(|i| {
                let d = d.clone();
                let subject = if i % 2 == 0 { a.clone() } else { b.clone() };
                async move { d.referrers_api(&repo(), &subject).await.unwrap() }
            }))
            .await;
            if has_api {
                assert_eq!(asked.load(Ordering::SeqCst), 8);
                for l in lists {
                    let l = l.expect("the API answered");
                    assert_eq!(l.len(), 1);
                    assert_eq!(l[0].digest, sbom);
                    assert_eq!(l[0].artifact_type.as_deref(), Some("application/spdx+json"));
                }
            } else {
                assert_eq!(asked.load(Ordering::SeqCst), 1);
                assert!(lists.iter().all(Option::is_none), "{lists:?}");
            }
        }
    }

    /// A registry (or a proxy before it) that refuses the referrers route
    /// is asked once per run: the rest fail alike without a request.
    #[tokio::test]
    async fn a_failed_referrers_probe_is_not_repeated_per_image() {
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = asked.clone();
        let addr = serve(Arc::new(move |r: &FakeReq| {
            if r.target.contains("/referrers/") {
                seen.fetch_add(1, Ordering::SeqCst);
                return resp(403, &[], r#"{"errors":[{"code":"DENIED","message":"no"}]}"#);
            }
            resp(404, &[], "404 page not found")
        }));
        let d = Arc::new(dist(&addr, None));
        let answers: Vec<_> = futures_util::future::join_all((0..6).map(|i| {
            let d = d.clone();
            async move {
                d.referrers_api(&repo(), &Digest::sha256_of(&[i as u8]))
                    .await
            }
        }))
        .await;
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        for a in answers {
            let e = a.expect_err("refused");
            assert!(e.message.contains("403"), "{e}");
        }
    }

    /// A referrers list the registry pages (`Link`) is read whole.
    #[tokio::test]
    async fn a_paged_referrers_list_is_read_whole() {
        let (one, two) = (Digest::sha256_of(b"one"), Digest::sha256_of(b"two"));
        let page = |d: &Digest| {
            format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":10}}]}}"#
            )
        };
        let (p1, p2) = (page(&one), page(&two));
        let addr = serve(Arc::new(move |r: &FakeReq| {
            let ct = ("Content-Type", "application/vnd.oci.image.index.v1+json");
            if r.target.contains("/referrers/") && r.target.contains("page=2") {
                resp(200, &[ct], p2.clone())
            } else if r.target.contains("/referrers/") {
                let link = format!("<{}?page=2>; rel=\"next\"", r.target);
                resp(200, &[ct, ("Link", link.as_str())], p1.clone())
            } else {
                resp(404, &[], "404 page not found")
            }
        }));
        let d = dist(&addr, None);
        let got: Vec<Digest> = d
            .referrers_api(&repo(), &Digest::sha256_of(b"subject"))
            .await
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|r| r.digest)
            .collect();
        assert_eq!(got, [one, two]);
    }

    #[tokio::test]
    async fn fallback_index_entries_count_only_when_their_subject_is_the_image() {
        // The `sha256-<A>` tag lists a signature of A, a kept image K (no
        // subject: stale or crafted), a referrer of another image, and a
        // manifest that is gone. Only the signature is A's referrer: what
        // is listed here is deleted with A.
        let a = Digest::sha256_of(b"image A");
        let other = Digest::sha256_of(b"image B");
        let referrer_of = |subject: &Digest, n: &str| {
            serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": MediaType::OCI_MANIFEST,
                "artifactType": "application/vnd.example.sig",
                "config": {"mediaType": MediaType::OCI_EMPTY, "digest": Digest::sha256_of(b"{}"), "size": 2},
                "layers": [],
                "subject": {"mediaType": MediaType::OCI_MANIFEST, "digest": subject, "size": 100},
                "annotations": {"n": n},
            }))
            .unwrap()
        };
        let sig = referrer_of(&a, "sig");
        let foreign = referrer_of(&other, "foreign");
        let manifests: HashMap<Digest, Vec<u8>> = [sig.clone(), BODY.to_vec(), foreign.clone()]
            .into_iter()
            .map(|b| (Digest::sha256_of(&b), b))
            .collect();
        let gone = Digest::sha256_of(b"gone");
        let entry = |d: &Digest, size: usize| {
            json!({"mediaType": MediaType::OCI_MANIFEST, "digest": d, "size": size,
                   "artifactType": "application/vnd.example.sig"})
        };
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MediaType::OCI_INDEX,
            "manifests": [
                entry(&Digest::sha256_of(&sig), sig.len()),
                entry(&Digest::sha256_of(BODY), BODY.len()),
                entry(&Digest::sha256_of(&foreign), foreign.len()),
                entry(&gone, 10),
            ],
        }))
        .unwrap();
        let fallback = format!("/v2/team/api/manifests/{}", a.referrers_tag());
        let addr = serve(Arc::new(move |r: &FakeReq| {
            if r.target == fallback {
                let d = Digest::sha256_of(&index).to_string();
                return resp(
                    200,
                    &[
                        ("content-type", MediaType::OCI_INDEX),
                        ("docker-content-digest", &d),
                    ],
                    index.clone(),
                );
            }
            let by_digest = r
                .target
                .strip_prefix("/v2/team/api/manifests/")
                .and_then(|d| d.parse::<Digest>().ok())
                .and_then(|d| manifests.get(&d).map(|b| (d, b.clone())));
            match by_digest {
                Some((d, b)) => resp(
                    200,
                    &[
                        ("content-type", MediaType::OCI_MANIFEST),
                        ("docker-content-digest", d.as_str()),
                    ],
                    b,
                ),
                // No referrers API (Distribution 2.8), nothing else.
                None => resp(404, &[], "404 page not found"),
            }
        }));
        let d = dist(&addr, None);
        let got: Vec<Digest> = d
            .referrers(&repo(), &a)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.digest)
            .collect();
        assert_eq!(got, vec![Digest::sha256_of(&sig)]);
        // The index the list came from is still handed back whole.
        let listed = d.referrers_listed(&repo(), &a).await.unwrap();
        assert_eq!(listed.descriptors.len(), 1);
        assert!(matches!(listed.fallback, FallbackIndex::Read(Some(_))));
    }

    #[tokio::test]
    async fn a_missing_repo_is_known_absent_after_listing() {
        let addr = serve(Arc::new(|r: &FakeReq| {
            if r.target.starts_with("/v2/team/api/") {
                resp(200, &[], r#"{"name":"team/api","tags":["v1"]}"#)
            } else {
                resp(
                    404,
                    &[],
                    r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#,
                )
            }
        }));
        let d = dist(&addr, None);
        let gone: Repo = "team/gone".parse().unwrap();
        assert!(!d.known_absent(&gone), "not listed yet");
        assert!(d.list_tags(&gone).await.unwrap().is_empty());
        assert!(d.known_absent(&gone));
        d.list_tags(&repo()).await.unwrap();
        assert!(!d.known_absent(&repo()));
    }

    fn blob_of(data: &[u8], size: u64) -> Descriptor {
        Descriptor {
            media_type: "application/octet-stream".into(),
            digest: Digest::sha256_of(data),
            size,
            artifact_type: None,
            annotations: Default::default(),
            platform: None,
            urls: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_refused_or_vague_mount_falls_back_to_head() {
        let present = blob_of(b"present", 7);
        let absent = blob_of(b"absent", 6);
        let p = present.digest.to_string();
        let heads = Arc::new(AtomicUsize::new(0));
        let h = heads.clone();
        let addr = serve(Arc::new(move |r: &FakeReq| match r.method.as_str() {
            // team/api refuses mounts; team/vague says 201 without a digest.
            "POST" if r.target.starts_with("/v2/team/api/") => resp(405, &[], ""),
            "POST" => resp(201, &[], ""),
            "HEAD" => {
                h.fetch_add(1, Ordering::SeqCst);
                if r.target.ends_with(&p) {
                    resp(200, &[("content-length", "7")], "")
                } else {
                    resp(404, &[], "")
                }
            }
            _ => resp(500, &[], ""),
        }));
        let d = dist(&addr, None);
        let vague: Repo = "team/vague".parse().unwrap();
        for r in [repo(), vague] {
            assert!(matches!(
                d.start_blob(&present, &r, &r).await.unwrap(),
                BlobStart::Present
            ));
            assert!(matches!(
                d.start_blob(&absent, &r, &r).await.unwrap(),
                BlobStart::Upload(None)
            ));
        }
        assert_eq!(heads.load(Ordering::SeqCst), 4);
        // From another repo, the refused mount is a decline: upload it.
        let other: Repo = "team/other".parse().unwrap();
        assert!(matches!(
            d.start_blob(&absent, &repo(), &other).await.unwrap(),
            BlobStart::Upload(None)
        ));
        assert!(!d.mount_blob(&repo(), &other, &absent.digest).await.unwrap());
    }

    #[tokio::test]
    async fn a_big_blob_is_looked_for_before_any_mount() {
        let big = blob_of(b"big", SMALL_BLOB + 1);
        let posts = Arc::new(AtomicUsize::new(0));
        let n = posts.clone();
        let addr = serve(Arc::new(move |r: &FakeReq| match r.method.as_str() {
            "HEAD" => resp(200, &[("content-length", "3")], ""),
            _ => {
                n.fetch_add(1, Ordering::SeqCst);
                resp(202, &[("location", "/v2/team/api/blobs/uploads/s1")], "")
            }
        }));
        let d = dist(&addr, None);
        assert!(matches!(
            d.start_blob(&big, &repo(), &repo()).await.unwrap(),
            BlobStart::Present
        ));
        assert_eq!(posts.load(Ordering::SeqCst), 0, "no session opened");
    }

    #[tokio::test]
    async fn start_blob_session_is_used_by_the_upload() {
        let data = b"layer bytes".to_vec();
        let digest = Digest::sha256_of(&data);
        let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let log = seen.clone();
        let addr = serve(Arc::new(move |r: &FakeReq| {
            log.lock()
                .unwrap()
                .push(format!("{} {}", r.method, r.target));
            match r.method.as_str() {
                "POST" if r.target.contains("mount=") => resp(
                    202,
                    &[("location", "/v2/team/api/blobs/uploads/s1?_state=x")],
                    "",
                ),
                "PUT" if r.target.starts_with("/v2/team/api/blobs/uploads/s1?") => {
                    resp(201, &[], "")
                }
                _ => resp(500, &[], ""),
            }
        }));
        let d = dist(&addr, None);
        let blob = Descriptor {
            media_type: "application/octet-stream".into(),
            digest: digest.clone(),
            size: data.len() as u64,
            artifact_type: None,
            annotations: Default::default(),
            platform: None,
            urls: Vec::new(),
        };
        let BlobStart::Upload(session) = d.start_blob(&blob, &repo(), &repo()).await.unwrap()
        else {
            panic!("expected an upload");
        };
        let s: BlobStream = Box::pin(futures_util::stream::iter([Ok(Bytes::from(data.clone()))]));
        d.put_blob_in(&repo(), &digest, data.len() as u64, s, session)
            .await
            .unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen[0].starts_with("POST /v2/team/api/blobs/uploads/?mount=sha256%3A"));
        assert!(seen[0].ends_with("&from=team%2Fapi"));
        assert!(seen[1].contains(&format!("digest={}", digest.as_str().replace(':', "%3A"))));
    }

    #[tokio::test]
    async fn pages_tags_by_link_header() {
        let addr = serve(Arc::new(|r: &FakeReq| {
            assert_eq!(r.method, "GET");
            let (tags, next) = if r.target.contains("last=c") {
                (r#"["d","e"]"#, None)
            } else {
                (
                    r#"["a","b","c"]"#,
                    Some(r#"</v2/team/api/tags/list?n=3&last=c>; rel="next""#),
                )
            };
            let body = format!(r#"{{"name":"team/api","tags":{tags}}}"#);
            match next {
                Some(l) => resp(200, &[("link", l)], body),
                None => resp(200, &[], body),
            }
        }));
        let d = dist(&addr, None).with_page_size(3);
        let tags = d.list_tags(&repo()).await.unwrap();
        assert_eq!(
            tags.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c", "d", "e"]
        );
    }

    /// A `Link` that gives only the query is relative to the list's own path.
    #[tokio::test]
    async fn a_query_only_link_pages_the_same_list() {
        let addr = serve(Arc::new(|r: &FakeReq| {
            if !r.target.starts_with("/v2/team/api/tags/list") {
                return resp(404, &[], "");
            }
            if r.target.contains("last=b") {
                resp(200, &[], r#"{"name":"team/api","tags":["c"]}"#)
            } else {
                resp(
                    200,
                    &[("link", r#"<?n=2&last=b>; rel="next""#)],
                    r#"{"name":"team/api","tags":["a","b"]}"#,
                )
            }
        }));
        let d = dist(&addr, None).with_page_size(2);
        let tags = d.list_tags(&repo()).await.unwrap();
        assert_eq!(
            tags.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
    }

    #[tokio::test]
    async fn a_list_page_gone_midway_is_an_error_not_a_shorter_list() {
        let addr = serve(Arc::new(|r: &FakeReq| {
            if r.target.contains("last=c") {
                resp(404, &[], r#"{"errors":[{"code":"NAME_UNKNOWN"}]}"#)
            } else {
                let next = r#"</v2/team/api/tags/list?n=3&last=c>; rel="next""#;
                let body = r#"{"name":"team/api","tags":["a","b","c"]}"#;
                resp(200, &[("link", next)], body.to_string())
            }
        }));
        let d = dist(&addr, None).with_page_size(3);
        let err = d.list_tags_if_exists(&repo()).await.unwrap_err();
        assert!(
            err.to_string().contains("page 2 of the list is gone (404)"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_server_repeating_its_first_page_is_an_error_one_ignoring_n_is_not() {
        // Honours n=3, ignores `last`: page 1 again and again.
        let addr = serve(Arc::new(|_r: &FakeReq| {
            let next = r#"</v2/team/api/tags/list?n=3&last=c>; rel="next""#;
            let body = r#"{"name":"team/api","tags":["a","b","c"]}"#;
            resp(200, &[("link", next)], body.to_string())
        }));
        let d = dist(&addr, None).with_page_size(3);
        let err = d.list_tags(&repo()).await.unwrap_err();
        assert!(err.to_string().contains("ignores `last`"), "{err}");
        // Ignores n: everything at once, then the same again: that is the list.
        let addr = serve(Arc::new(|_r: &FakeReq| {
            let next = r#"</v2/team/api/tags/list?n=3&last=e>; rel="next""#;
            let body = r#"{"name":"team/api","tags":["a","b","c","d","e"]}"#;
            resp(200, &[("link", next)], body.to_string())
        }));
        let d = dist(&addr, None).with_page_size(3);
        assert_eq!(d.list_tags(&repo()).await.unwrap().len(), 5);
    }

    #[tokio::test]
    async fn retries_503_429_and_dropped_connections() {
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        let addr = serve(Arc::new(move |_r: &FakeReq| {
            match n2.fetch_add(1, Ordering::SeqCst) {
                0 => resp(503, &[], ""),
                1 => resp(0, &[], ""),
                2 => resp(429, &[("retry-after", "1")], ""),
                _ => manifest_ok(),
            }
        }));
        let d = dist(&addr, None);
        let t = Instant::now();
        let m = d.get_manifest(&repo(), "1.0").await.unwrap().unwrap();
        assert_eq!(m.digest, Digest::sha256_of(BODY));
        assert_eq!(n.load(Ordering::SeqCst), 4);
        assert!(
            t.elapsed() >= Duration::from_secs(1),
            "Retry-After honoured"
        );
    }

    /// A registry asking for a longer wait than regimen makes is not asked
    /// again sooner: one request, and an error that says to run later.
    #[tokio::test]
    async fn a_retry_after_longer_than_the_longest_wait_ends_at_once() {
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        let addr = serve(Arc::new(move |_r: &FakeReq| {
            n2.fetch_add(1, Ordering::SeqCst);
            resp(429, &[("retry-after", "3600")], "")
        }));
        let d = dist(&addr, None);
        let e = d.get_manifest(&repo(), "1.0").await.unwrap_err();
        assert!(e.message.contains("asks to wait 3600s"), "{e}");
        assert!(e.message.contains("run again later"), "{e}");
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    /// Distribution answers a read with 500 while another request rewrites
    /// the link file it reads: a read is asked again, a write is not (it may
    /// have half-happened), and a lasting 500 ends in its own error.
    #[tokio::test]
    async fn a_read_answered_500_is_asked_again_a_write_is_not() {
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        let addr = serve(Arc::new(move |r: &FakeReq| {
            let k = n2.fetch_add(1, Ordering::SeqCst);
            match (r.method.as_str(), k) {
                ("GET", 0) => resp(500, &[], "{\"errors\":[{\"code\":\"UNKNOWN\"}]}"),
                ("GET", _) => manifest_ok(),
                _ => resp(500, &[], "{\"errors\":[{\"code\":\"UNKNOWN\"}]}"),
            }
        }));
        let d = dist(&addr, None);
        let m = d.get_manifest(&repo(), "1.0").await.unwrap().unwrap();
        assert_eq!(m.digest, Digest::sha256_of(BODY));
        assert_eq!(n.load(Ordering::SeqCst), 2, "one more GET");
        n.store(0, Ordering::SeqCst);
        assert!(d
            .put_manifest(&repo(), Some(&"1.0".parse().unwrap()), &m)
            .await
            .is_err());
        assert_eq!(n.load(Ordering::SeqCst), 1, "a PUT is sent once");
        n.store(10, Ordering::SeqCst);
        let lasting = serve(Arc::new(|_r: &FakeReq| resp(500, &[], "")));
        let d = dist(&lasting, None);
        let e = d.head_manifest(&repo(), "1.0").await.unwrap_err();
        assert!(e.message.contains("500"), "{}", e.message);
    }

    /// `http://` to a TLS port: Go's TLS server answers plain HTTP with a
    /// bare 400; the error says to write `https://`.
    #[tokio::test]
    async fn plain_http_to_a_tls_port_says_to_use_https() {
        let addr = serve(Arc::new(|_r: &FakeReq| {
            resp(
                400,
                &[],
                "Client sent an HTTP request to an HTTPS server.\n",
            )
        }));
        let e = dist(&addr, None).list_tags(&repo()).await.unwrap_err();
        assert!(
            e.message
                .contains("speaks HTTPS, not plain HTTP: write the registry's url as https://"),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn rate_limit_spaces_requests() {
        let addr = serve(Arc::new(|_r: &FakeReq| manifest_ok()));
        let cfg = crate::config::Registry {
            url: Endpoint::Http(addr),
            auth: None,
            concurrency: Some(4),
            rate: Some(20.0),
            loc: None,
        };
        let d = Distribution::new("dev".parse().unwrap(), &cfg, Path::new(".")).unwrap();
        let rp = repo();
        let t = Instant::now();
        let all =
            futures_util::future::join_all((0..10).map(|_| d.head_manifest(&rp, "1.0"))).await;
        assert!(all.iter().all(|r| r.as_ref().is_ok_and(|h| h.is_some())));
        assert!(
            t.elapsed() >= Duration::from_millis(440),
            "{:?}",
            t.elapsed()
        );
    }

    #[tokio::test]
    async fn gives_up_with_a_clear_error() {
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        let addr = serve(Arc::new(move |_r: &FakeReq| {
            n2.fetch_add(1, Ordering::SeqCst);
            resp(503, &[], "")
        }));
        let d = dist(&addr, None);
        let e = d.get_manifest(&repo(), "1.0").await.unwrap_err();
        assert_eq!(
            e.message,
            "registry dev: GET /v2/team/api/manifests/1.0: 503 Service Unavailable after 5 attempts"
        );
        assert_eq!(n.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn https_to_a_plain_http_port_is_not_retried_and_says_so() {
        // A plain HTTP server answers the TLS hello with an HTTP error.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let conns = Arc::new(AtomicUsize::new(0));
        let seen = conns.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                seen.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n");
            }
        });
        let cfg = crate::config::Registry {
            url: Endpoint::Https(addr.clone()),
            auth: None,
            concurrency: None,
            rate: None,
            loc: None,
        };
        let d = Distribution::new("dev".parse().unwrap(), &cfg, Path::new("."))
            .unwrap()
            .with_backoff(Duration::from_millis(10));
        let e = d.list_tags(&repo()).await.unwrap_err();
        assert!(
            e.message.contains(&format!(
                "the server speaks plain HTTP: use `http://{addr}` as the registry's url"
            )),
            "{}",
            e.message
        );
        assert!(!e.message.contains("attempts"), "{}", e.message);
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn wrong_digest_is_a_mismatch() {
        let addr = serve(Arc::new(|_r: &FakeReq| {
            resp(
                200,
                &[
                    ("content-type", MediaType::OCI_MANIFEST),
                    (
                        "docker-content-digest",
                        &Digest::sha256_of(b"x").to_string(),
                    ),
                ],
                BODY,
            )
        }));
        let d = dist(&addr, None);
        let e = d.get_manifest(&repo(), "1.0").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::DigestMismatch, "{e}");
        let want = Digest::sha256_of(b"y");
        let e = d.get_manifest(&repo(), want.as_str()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::DigestMismatch, "{e}");
        // A blob served with the wrong bytes fails at the end of its stream.
        let s = d.get_blob(&repo(), &want).await.unwrap();
        let r: std::result::Result<Vec<Bytes>, _> =
            futures_util::TryStreamExt::try_collect(s).await;
        assert!(r.is_err());
    }

    #[tokio::test]
    async fn bearer_token_flow_caches_per_scope() {
        let tokens = Arc::new(AtomicUsize::new(0));
        let t2 = tokens.clone();
        let addr_cell: Arc<std::sync::OnceLock<String>> = Arc::new(std::sync::OnceLock::new());
        let a2 = addr_cell.clone();
        let expected_basic = format!("Basic {}", {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode("bob:pw")
        });
        let addr = serve(Arc::new(move |r: &FakeReq| {
            if r.target.starts_with("/token") {
                t2.fetch_add(1, Ordering::SeqCst);
                assert_eq!(r.headers.get("authorization"), Some(&expected_basic));
                assert!(r.target.contains("service=fake"), "{}", r.target);
                assert!(
                    r.target.contains("scope=repository%3Ateam%2Fapi%3Apull"),
                    "{}",
                    r.target
                );
                return resp(200, &[], r#"{"token":"tok123","expires_in":300}"#);
            }
            if r.headers.get("authorization").map(String::as_str) == Some("Bearer tok123") {
                return manifest_ok();
            }
            let realm = format!(
                r#"Bearer realm="http://{}/token",service="fake",scope="repository:team/api:pull""#,
                a2.get().unwrap()
            );
            resp(401, &[("www-authenticate", &realm)], "")
        }));
        addr_cell.set(addr.clone()).unwrap();
        let auth = bob_with("REGIMEN_FAKE_PW", "pw");
        let d = dist(&addr, Some(auth));
        for _ in 0..3 {
            assert!(d.get_manifest(&repo(), "1.0").await.unwrap().is_some());
        }
        assert_eq!(tokens.load(Ordering::SeqCst), 1);
        assert!(!format!("{d:?}").contains("tok123"));
    }

    /// Requests that start together on one scope set share one token, and
    /// those that meet the same expired (revoked) token share its renewal:
    /// against a real `docker-registry` a plan asked one token per HEAD.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_requests_share_one_token_fetch_and_one_renewal() {
        let issued = Arc::new(AtomicUsize::new(0));
        // Tokens numbered below this are refused as expired.
        let valid_from = Arc::new(AtomicUsize::new(1));
        let (i2, v2) = (issued.clone(), valid_from.clone());
        let addr_cell: Arc<std::sync::OnceLock<String>> = Arc::new(std::sync::OnceLock::new());
        let a2 = addr_cell.clone();
        let addr = serve(Arc::new(move |r: &FakeReq| {
            if r.target.starts_with("/token") {
                // Slow enough that the others arrive while it is fetched.
                std::thread::sleep(Duration::from_millis(100));
                let n = i2.fetch_add(1, Ordering::SeqCst) + 1;
                return resp(
                    200,
                    &[],
                    format!(r#"{{"token":"tok{n}","expires_in":300}}"#),
                );
            }
            let n: Option<usize> = r
                .headers
                .get("authorization")
                .and_then(|h| h.strip_prefix("Bearer tok"))
                .and_then(|n| n.parse().ok());
            if n.is_some_and(|n| n >= v2.load(Ordering::SeqCst)) {
                return manifest_ok();
            }
            let mut ch = format!(
                r#"Bearer realm="http://{}/token",service="fake",scope="repository:team/api:pull""#,
                a2.get().unwrap()
            );
            if n.is_some() {
                ch.push_str(r#",error="invalid_token""#);
            }
            resp(401, &[("www-authenticate", &ch)], "")
        }));
        addr_cell.set(addr.clone()).unwrap();
        let auth = bob_with("REGIMEN_FAKE_PW3", "pw");
        let d = dist(&addr, Some(auth));
        async fn all(d: &Distribution) {
            futures_util::future::join_all((0..8).map(|_| async {
                d.get_manifest(&repo(), "1.0").await.unwrap().unwrap();
            }))
            .await;
        }
        all(&d).await;
        assert_eq!(issued.load(Ordering::SeqCst), 1, "one token for 8 requests");
        // tok1 expires at the registry before its `expires_in` says.
        valid_from.store(2, Ordering::SeqCst);
        all(&d).await;
        assert_eq!(
            issued.load(Ordering::SeqCst),
            2,
            "one renewal for 8 refusals"
        );
    }

    /// Distribution's challenge lists a scope's actions in any order
    /// (`push,pull`): renewing a `pull,push` token asks that scope once.
    #[tokio::test]
    async fn a_renewal_asks_a_reordered_challenge_scope_once() {
        let asked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let a_log = asked.clone();
        let addr_cell: Arc<std::sync::OnceLock<String>> = Arc::new(std::sync::OnceLock::new());
        let a2 = addr_cell.clone();
        let m = Manifest::from_bytes(BODY.to_vec(), None).unwrap();
        let digest = m.digest.to_string();
        let addr = serve(Arc::new(move |r: &FakeReq| {
            if r.target.starts_with("/token") {
                let mut log = a_log.lock().unwrap();
                log.push(r.target.clone());
                return resp(200, &[], format!(r#"{{"token":"tok{}"}}"#, log.len()));
            }
            // The first token is refused as expired.
            if r.headers.get("authorization").map(String::as_str) == Some("Bearer tok2") {
                return resp(201, &[("docker-content-digest", digest.as_str())], "");
            }
            let ch = format!(
                r#"Bearer realm="http://{}/token",service="fake",scope="repository:team/api:push,pull",error="invalid_token""#,
                a2.get().unwrap()
            );
            resp(401, &[("www-authenticate", &ch)], "")
        }));
        addr_cell.set(addr.clone()).unwrap();
        let auth = bob_with("REGIMEN_FAKE_PW4", "pw");
        let d = dist(&addr, Some(auth));
        d.put_manifest(&repo(), Some(&"1.0".parse().unwrap()), &m)
            .await
            .unwrap();
        let asked = asked.lock().unwrap().clone();
        assert_eq!(asked.len(), 2, "{asked:?}");
        for t in &asked {
            assert_eq!(t.matches("scope=").count(), 1, "{t}");
        }
    }

    /// Distribution's race on the same manifest PUT into two repos at once:
    /// a 400 DIGEST_INVALID for bytes that hash right is asked again.
    #[tokio::test]
    async fn a_manifest_put_answered_digest_invalid_is_asked_again() {
        let puts = Arc::new(AtomicUsize::new(0));
        let p2 = puts.clone();
        let m = Manifest::from_bytes(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#.to_vec(),
            None,
        )
        .unwrap();
        let digest = m.digest.to_string();
        let addr = serve(Arc::new(move |r: &FakeReq| {
            if r.method != "PUT" {
                return resp(404, &[], "");
            }
            if p2.fetch_add(1, Ordering::SeqCst) == 0 {
                return resp(
                    400,
                    &[("content-type", "application/json")],
                    r#"{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content"}]}"#,
                );
            }
            resp(201, &[("docker-content-digest", digest.as_str())], "")
        }));
        let d = dist(&addr, None);
        d.put_manifest(&repo(), Some(&"1.0".parse().unwrap()), &m)
            .await
            .unwrap();
        assert_eq!(puts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn refused_token_is_denied_once() {
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        let addr_cell: Arc<std::sync::OnceLock<String>> = Arc::new(std::sync::OnceLock::new());
        let a2 = addr_cell.clone();
        let addr = serve(Arc::new(move |r: &FakeReq| {
            n2.fetch_add(1, Ordering::SeqCst);
            if r.target.starts_with("/token") {
                return resp(401, &[], "");
            }
            let realm = format!(
                r#"Bearer realm="http://{}/token",service="fake""#,
                a2.get().unwrap()
            );
            resp(401, &[("www-authenticate", &realm)], "")
        }));
        addr_cell.set(addr.clone()).unwrap();
        let auth = bob_with("REGIMEN_FAKE_PW2", "nope");
        let d = dist(&addr, Some(auth));
        let e = d.list_tags(&repo()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Denied, "{e}");
        assert!(e.message.contains("credentials refused"), "{e}");
        assert_eq!(n.load(Ordering::SeqCst), 2, "no retry storm");
    }

    /// Docker's identity token (as `az acr login` leaves) is traded at the
    /// realm by a refresh-token POST; the access token it gives is used, and
    /// a refused grant is one clear error.
    #[tokio::test]
    async fn an_identity_token_is_traded_for_access_tokens() {
        let addr = serve_at(|r: &FakeReq, own: &str| {
            if r.target.starts_with("/oauth2/token") {
                let body = String::from_utf8_lossy(&r.body);
                let form: HashMap<String, String> = Url::parse(&format!("form:?{body}"))
                    .unwrap()
                    .query_pairs()
                    .into_owned()
                    .collect();
                let want = [
                    ("grant_type", "refresh_token"),
                    ("refresh_token", "refresh-xyz"),
                    ("service", "fake"),
                    ("scope", "repository:team/api:pull"),
                ];
                return if r.method == "POST"
                    && want
                        .iter()
                        .all(|(k, v)| form.get(*k).map(String::as_str) == Some(*v))
                {
                    resp(200, &[], r#"{"access_token":"at-1","expires_in":300}"#)
                } else {
                    resp(400, &[], r#"{"error":"invalid_grant"}"#)
                };
            }
            if r.headers.get("authorization").map(String::as_str) == Some("Bearer at-1") {
                return resp(200, &[], r#"{"name":"team/api","tags":["1.0"]}"#);
            }
            bearer_challenge(own, "/oauth2/token")
        });
        let mut d = dist(&addr, None);
        d.creds = CredSource::Fixed(Credentials::IdentityToken(Secret::new("refresh-xyz")));
        assert_eq!(d.list_tags(&repo()).await.unwrap().len(), 1);
        // A registry that takes Basic only cannot use an identity token.
        let basic = serve(Arc::new(|_r: &FakeReq| {
            resp(401, &[("www-authenticate", r#"Basic realm="r""#)], "")
        }));
        let mut d = dist(&basic, None);
        d.creds = CredSource::Fixed(Credentials::IdentityToken(Secret::new("refresh-xyz")));
        let e = d.list_tags(&repo()).await.unwrap_err();
        assert!(e.message.contains("only an identity token"), "{e}");
        let mut d = dist(&addr, None);
        d.creds = CredSource::Fixed(Credentials::IdentityToken(Secret::new("expired")));
        let e = d.list_tags(&repo()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Denied, "{e}");
        assert!(e.message.contains("credentials refused"), "{e}");
        assert!(
            !e.message.contains("expired"),
            "the token stays secret: {e}"
        );
    }

    /// A token server refusing one scope (push) with 403 says the account
    /// lacks the right, and the credentials still serve the scopes it has.
    #[tokio::test]
    async fn a_forbidden_scope_is_not_a_wrong_password() {
        let addr = serve_at(|r: &FakeReq, own: &str| {
            if r.target.starts_with("/token") {
                return if r.target.contains("push") {
                    resp(403, &[], "access forbidden")
                } else {
                    resp(200, &[], r#"{"token":"pull-only"}"#)
                };
            }
            if r.headers.get("authorization").map(String::as_str) == Some("Bearer pull-only") {
                return resp(200, &[], r#"{"name":"team/api","tags":["1.0"]}"#);
            }
            bearer_challenge(own, "/token")
        });
        let auth = bob_with("REGIMEN_FAKE_PW_403", "right");
        let d = dist(&addr, Some(auth));
        assert_eq!(d.list_tags(&repo()).await.unwrap().len(), 1);
        let other: Repo = "team/other".parse().unwrap();
        let e = d
            .mount_blob(&repo(), &other, &Digest::sha256_of(b"x"))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Denied, "{e}");
        assert!(e.message.contains("lacks that right"), "{e}");
        assert!(!e.message.contains("password"), "{e}");
        let tags = d.list_tags(&"team/third".parse().unwrap()).await.unwrap();
        assert_eq!(tags.len(), 1);
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert("retry-after", v.parse().unwrap());
            retry_after(&m)
        };
        assert_eq!(h("7"), Some(Duration::from_secs(7)));
        let soon = std::time::SystemTime::now() + Duration::from_secs(20);
        let w = h(&httpdate::fmt_http_date(soon)).unwrap();
        assert!(
            w > Duration::from_secs(17) && w <= Duration::from_secs(20),
            "{w:?}"
        );
        assert_eq!(h("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(h("soon"), None);
    }

    #[test]
    fn token_lifetimes_are_capped() {
        assert_eq!(
            token_life(Some(u64::MAX)),
            Duration::from_secs(MAX_TOKEN_LIFE - 15)
        );
        assert_eq!(token_life(Some(300)), Duration::from_secs(285));
        assert_eq!(token_life(None), Duration::from_secs(45));
        assert_eq!(token_life(Some(0)), Duration::from_secs(8));
    }

    #[tokio::test]
    async fn a_huge_expires_in_is_a_long_lived_token_not_a_panic() {
        let tokens = Arc::new(AtomicUsize::new(0));
        let t2 = tokens.clone();
        let addr_cell: Arc<std::sync::OnceLock<String>> = Arc::new(std::sync::OnceLock::new());
        let a2 = addr_cell.clone();
        let addr = serve(Arc::new(move |r: &FakeReq| {
            if r.target.starts_with("/token") {
                t2.fetch_add(1, Ordering::SeqCst);
                return resp(
                    200,
                    &[],
                    r#"{"token":"tok","expires_in":18446744073709551615}"#,
                );
            }
            if r.headers.get("authorization").map(String::as_str) == Some("Bearer tok") {
                return manifest_ok();
            }
            let realm = format!(r#"Bearer realm="http://{}/token""#, a2.get().unwrap());
            resp(401, &[("www-authenticate", &realm)], "")
        }));
        addr_cell.set(addr.clone()).unwrap();
        let d = dist(&addr, None);
        for _ in 0..2 {
            assert!(d.get_manifest(&repo(), "1.0").await.unwrap().is_some());
        }
        assert_eq!(tokens.load(Ordering::SeqCst), 1);
    }

    /// A registry that answers every request with 401 and `challenge`,
    /// except the token endpoint, which grants `tok`.
    fn challenging(challenge: &'static str) -> String {
        let addr_cell: Arc<std::sync::OnceLock<String>> = Arc::new(std::sync::OnceLock::new());
        let a2 = addr_cell.clone();
        let addr = serve(Arc::new(move |r: &FakeReq| {
            if r.target.starts_with("/token") {
                return resp(200, &[], r#"{"token":"tok"}"#);
            }
            let ch = challenge.replace("ADDR", a2.get().map_or("", String::as_str));
            resp(401, &[("www-authenticate", &ch)], "")
        }));
        addr_cell.set(addr.clone()).unwrap();
        addr
    }

    fn bob() -> Auth {
        bob_with("REGIMEN_FAKE_PW3", "pw")
    }

    /// User `bob` with his password in the environment variable `var`.
    fn bob_with(var: &str, password: &str) -> Auth {
        std::env::set_var(var, password);
        Auth {
            username: Some("bob".into()),
            password_env: Some(var.into()),
            ..Auth::default()
        }
    }

    #[tokio::test]
    async fn a_401_that_is_no_refusal_says_what_happened() {
        let scope = r#"Bearer realm="http://ADDR/token",service="fake",scope="repository:team/api:pull,push",error="insufficient_scope""#;
        let d = dist(&challenging(scope), Some(bob()));
        let e = d
            .put_manifest(
                &repo(),
                Some(&"1.0".parse().unwrap()),
                &Manifest::from_bytes(BODY, None).unwrap(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Denied, "{e}");
        assert!(
            e.message
                .contains("the registry's token does not allow push on repo team/api"),
            "{e}"
        );
        assert!(!e.message.contains("refused"), "{e}");

        let d = dist(&challenging(scope), None);
        let e = d.list_tags(&repo()).await.unwrap_err();
        assert!(
            e.message
                .contains("anonymous token does not allow push on repo team/api")
                && e.message.contains("none are configured"),
            "{e}"
        );

        let d = dist(&challenging("Negotiate"), Some(bob()));
        let e = d.list_tags(&repo()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Denied, "{e}");
        assert!(
            e.message
                .contains("`Negotiate` authentication, which regimen does not support"),
            "{e}"
        );
        assert!(!e.message.contains("refused"), "{e}");

        let d = dist(&challenging(r#"Bearer service="fake""#), Some(bob()));
        let e = d.list_tags(&repo()).await.unwrap_err();
        assert!(
            e.message
                .contains("Bearer challenge is malformed: it names no token realm"),
            "{e}"
        );

        let d = dist(
            &challenging(r#"Bearer realm="http://ADDR/token""#),
            Some(bob()),
        );
        let e = d.list_tags(&repo()).await.unwrap_err();
        assert!(
            e.message.contains(
                "did not accept the token its token server granted for pull on repo team/api"
            ),
            "{e}"
        );
    }

    #[tokio::test]
    async fn refused_credentials_are_remembered_for_the_run() {
        // Basic: many repos at once, one wrong password.
        let refused = Arc::new(AtomicUsize::new(0));
        let r2 = refused.clone();
        let addr = serve(Arc::new(move |r: &FakeReq| {
            if r.headers.contains_key("authorization") {
                r2.fetch_add(1, Ordering::SeqCst);
            }
            resp(401, &[("www-authenticate", r#"Basic realm="x""#)], "")
        }));
        let d = dist(&addr, Some(bob()));
        let repos: Vec<Repo> = (0..20)
            .map(|i| format!("team/r{i}").parse().unwrap())
            .collect();
        let all = futures_util::future::join_all(repos.iter().map(|r| d.list_tags(r))).await;
        for r in &all {
            let e = r.as_ref().unwrap_err();
            assert_eq!(e.kind, ErrorKind::Denied, "{e}");
            assert!(e.message.contains("401 Unauthorized"), "{e}");
            assert!(
                e.message.contains("check the user name and password"),
                "{e}"
            );
        }
        assert_eq!(refused.load(Ordering::SeqCst), 1, "one refused login");

        // Bearer: the token endpoint refuses them.
        let tokens = Arc::new(AtomicUsize::new(0));
        let t2 = tokens.clone();
        let addr_cell: Arc<std::sync::OnceLock<String>> = Arc::new(std::sync::OnceLock::new());
        let a2 = addr_cell.clone();
        let addr = serve(Arc::new(move |r: &FakeReq| {
            if r.target.starts_with("/token") {
                t2.fetch_add(1, Ordering::SeqCst);
                return resp(401, &[], "");
            }
            let realm = format!(r#"Bearer realm="http://{}/token""#, a2.get().unwrap());
            resp(401, &[("www-authenticate", &realm)], "")
        }));
        addr_cell.set(addr.clone()).unwrap();
        let d = dist(&addr, Some(bob()));
        let all = futures_util::future::join_all(repos.iter().map(|r| d.list_tags(r))).await;
        for r in &all {
            let e = r.as_ref().unwrap_err();
            assert_eq!(e.kind, ErrorKind::Denied, "{e}");
            assert!(e.message.contains("credentials"), "{e}");
        }
        assert_eq!(
            tokens.load(Ordering::SeqCst),
            1,
            "one refused token request"
        );
    }

    #[tokio::test]
    async fn a_401_after_the_credentials_worked_is_not_remembered() {
        // Taken at /v2/ and for team/ok, refused for team/no (no access there).
        let addr = serve(Arc::new(move |r: &FakeReq| {
            let authed = r.headers.contains_key("authorization");
            if authed && !r.target.contains("team/no") {
                return resp(
                    200,
                    &[("content-type", "application/json")],
                    r#"{"tags":["1"]}"#,
                );
            }
            resp(401, &[("www-authenticate", r#"Basic realm="x""#)], "")
        }));
        let d = dist(&addr, Some(bob()));
        let no: Repo = "team/no".parse().unwrap();
        let ok: Repo = "team/ok".parse().unwrap();
        assert!(d.list_tags(&no).await.is_err());
        assert_eq!(d.list_tags(&ok).await.unwrap().len(), 1);
    }
}
