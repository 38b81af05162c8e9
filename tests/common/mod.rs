//! Shared harness for tests against real registries: Debian's `docker-registry`
//! started on loopback (optionally behind htpasswd, or token auth backed by
//! the token server in [`token`]), `skopeo` as the
//! independent reader/writer, and a tiny raw-HTTP client for what skopeo
//! cannot do (pushing referrers by digest and their `sha256-<hex>` tag index).
//!
//! Nothing here is skipped when a tool is missing: the tests panic and say to
//! run `scripts/test.sh`, which installs the tools.

#![allow(dead_code)]

pub mod podman;
pub mod proxy;
pub mod tls;
pub mod token;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A `docker-registry serve` on 127.0.0.1, killed when dropped.
pub struct TestRegistry {
    pub port: u16,
    /// `127.0.0.1:PORT`
    pub host: String,
    /// `(user, password)` when started with htpasswd auth; under token auth,
    /// the token server's account that skopeo seeds and reads with.
    pub creds: Option<(String, String)>,
    child: Child,
    tempdir: tempfile::TempDir,
    /// Serving HTTPS.
    tls: bool,
    /// Set when started with token auth: mints the harness's own tokens.
    bearer: Option<std::sync::Arc<token::Issuer>>,
}

/// How a [`TestRegistry`] authenticates.
enum RegistryAuth<'a> {
    Anonymous,
    Htpasswd(String, String),
    Token(&'a token::TokenServer),
}

impl TestRegistry {
    /// An anonymous registry (pull and push without credentials).
    pub fn start() -> TestRegistry {
        Self::launch(None)
    }

    /// A registry that requires basic auth as `user`/`pass` (htpasswd, bcrypt).
    pub fn start_with_htpasswd(user: &str, pass: &str) -> TestRegistry {
        Self::launch(Some((user.to_string(), pass.to_string())))
    }

    /// An anonymous registry serving HTTPS (and so HTTP/2) with this leaf
    /// certificate and key (PEM files).
    pub fn start_tls(cert: &Path, key: &Path) -> TestRegistry {
        Self::launch_with(None, Some((cert, key)))
    }

    /// A registry with `auth: token:` trusting `server`'s tokens (bearer
    /// token flow). `admin` (user, password) is an account of `server`
    /// that skopeo uses to seed and read it (give it pull, push and delete).
    pub fn start_with_token(server: &token::TokenServer, admin: (&str, &str)) -> TestRegistry {
        let mut reg = Self::launch_auth(RegistryAuth::Token(server), None);
        reg.creds = Some((admin.0.to_string(), admin.1.to_string()));
        reg
    }

    fn launch(creds: Option<(String, String)>) -> TestRegistry {
        Self::launch_with(creds, None)
    }

    fn launch_with(creds: Option<(String, String)>, tls: Option<(&Path, &Path)>) -> TestRegistry {
        let auth = match creds {
            Some((u, p)) => RegistryAuth::Htpasswd(u, p),
            None => RegistryAuth::Anonymous,
        };
        Self::launch_auth(auth, tls)
    }

    fn launch_auth(auth_kind: RegistryAuth<'_>, tls: Option<(&Path, &Path)>) -> TestRegistry {
        if !Path::new(REGISTRY_BIN).exists() {
            panic!(
                "{REGISTRY_BIN} is missing: run `bash scripts/test.sh`, which installs the \
                 `docker-registry` and `apache2-utils` packages the tests need"
            );
        }
        // The free port can be taken between `free_port` and the registry's
        // bind (by any connection's ephemeral port): then another one is tried.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::try_launch(&auth_kind, tls) {
                Ok(reg) => return reg,
                Err(log) if attempt < 5 && log.contains("address already in use") => continue,
                Err(log) => panic!("{log}"),
            }
        }
    }

    fn try_launch(
        auth_kind: &RegistryAuth<'_>,
        tls: Option<(&Path, &Path)>,
    ) -> Result<TestRegistry, String> {
        let tempdir = tempfile::tempdir().unwrap();
        let dir = tempdir.path();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");

        let mut auth = String::new();
        let mut creds = None;
        let mut bearer = None;
        if let RegistryAuth::Token(server) = auth_kind {
            auth = server.registry_auth_yaml();
            bearer = Some(server.issuer.clone());
        }
        if let RegistryAuth::Htpasswd(user, pass) = auth_kind {
            creds = Some((user.clone(), pass.clone()));
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .unwrap_or_else(|e| {
                    panic!("htpasswd is required ({e}): run `bash scripts/test.sh`, which installs apache2-utils")
                });
            assert!(
                out.status.success(),
                "htpasswd: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let file = dir.join("htpasswd");
            std::fs::write(&file, &out.stdout).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: regimen-test\n    path: {}\n",
                file.display()
            );
        }
        let config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {host}\n{tls}\
             {auth}",
            dir.join("data").display(),
            tls = tls
                .map(|(c, k)| format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    c.display(),
                    k.display()
                ))
                .unwrap_or_default(),
        );
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {REGISTRY_BIN}: {e}"));
        let mut reg = TestRegistry {
            port,
            host,
            creds,
            child,
            tempdir,
            tls: tls.is_some(),
            bearer,
        };
        reg.wait_ready()?;
        Ok(reg)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!(
                    "docker-registry exited ({status}) before answering:\n{}",
                    self.log()
                ));
            }
            if let Ok(r) = try_http(&self.host, "GET", "/v2/", &[], &[]) {
                // A TLS listener answers plain HTTP with a 400 ("client sent an
                // HTTP request to an HTTPS server"): it is up.
                if r.status == 200 || r.status == 401 || (self.tls && r.status == 400) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "docker-registry on {} did not answer GET /v2/ within 10 s:\n{}",
                    self.host,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` for [`TestRegistry::start_tls`]).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host)
    }

    /// The registry's combined stdout/stderr so far (includes the access log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn log_path(&self) -> PathBuf {
        self.tempdir.path().join("registry.log")
    }

    /// `--creds USER:PASS` (or `--no-creds`) for skopeo reading this registry.
    pub fn skopeo_creds(&self, flag: &str) -> Vec<String> {
        match &self.creds {
            Some((u, p)) => vec![format!("--{flag}creds"), format!("{u}:{p}")],
            None => vec![format!("--{flag}no-creds")],
        }
    }

    /// The raw manifest bytes of `repo:reference`, read by skopeo.
    pub fn raw_manifest(&self, repo: &str, reference: &str) -> String {
        let sep = if reference.starts_with("sha256:") {
            "@"
        } else {
            ":"
        };
        let mut args = vec!["inspect".to_string(), "--raw".to_string()];
        args.push("--tls-verify=false".to_string());
        args.extend(self.skopeo_creds(""));
        args.push(format!("docker://{}/{repo}{sep}{reference}", self.host));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        skopeo(&args)
    }

    /// The digest of `repo:reference` as skopeo reads it (sha256 of the raw bytes).
    pub fn digest(&self, repo: &str, reference: &str) -> String {
        sha256_digest(self.raw_manifest(repo, reference).as_bytes())
    }

    /// Tags of `repo` over the API; `None` when the repository is unknown.
    pub fn tags(&self, repo: &str) -> Option<Vec<String>> {
        let r = self.request("GET", &format!("/v2/{repo}/tags/list"), &[], &[]);
        match r.status {
            200 => {
                let v: Value = serde_json::from_slice(&r.body).unwrap();
                let mut tags: Vec<String> = v["tags"]
                    .as_array()
                    .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default();
                tags.sort();
                Some(tags)
            }
            404 => None,
            s => panic!(
                "GET tags of {repo} on {}: HTTP {s}: {}",
                self.host,
                String::from_utf8_lossy(&r.body)
            ),
        }
    }

    /// One HTTP request to this registry, with basic auth when it has
    /// credentials, or a token of its own minting under token auth.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        let mut h: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(issuer) = &self.bearer {
            let repo = token::repo_of(path).unwrap_or_default();
            h.push((
                "Authorization".into(),
                format!("Bearer {}", issuer.admin_token(&repo)),
            ));
        } else if let Some((u, p)) = &self.creds {
            h.push((
                "Authorization".into(),
                format!("Basic {}", base64(format!("{u}:{p}").as_bytes())),
            ));
        }
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        try_http(&self.host, method, path, &h, body)
            .unwrap_or_else(|e| panic!("{method} http://{}{path}: {e}", self.host))
    }

    /// Uploads a blob (POST then PUT) unless the repository already has it.
    pub fn push_blob(&self, repo: &str, digest: &str, bytes: &[u8]) {
        if self
            .request("HEAD", &format!("/v2/{repo}/blobs/{digest}"), &[], &[])
            .status
            == 200
        {
            return;
        }
        let r = self.request("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], &[]);
        assert_eq!(r.status, 202, "start upload to {repo}: {}", r.text());
        let loc = r.header("location").expect("upload Location").to_string();
        let path = loc
            .strip_prefix(&format!("http://{}", self.host))
            .unwrap_or(&loc)
            .to_string();
        let sep = if path.contains('?') { '&' } else { '?' };
        let r = self.request(
            "PUT",
            &format!("{path}{sep}digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            bytes,
        );
        assert_eq!(r.status, 201, "finish upload of {digest}: {}", r.text());
    }

    /// Stores manifest bytes under `reference` (a tag or their digest).
    pub fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
        let r = self.request(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            bytes,
        );
        assert_eq!(
            r.status,
            201,
            "PUT manifest {repo}:{reference}: {}",
            r.text()
        );
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on right now (bind 127.0.0.1:0, then release).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Runs skopeo; panics with its stderr on failure. skopeo must be present
/// (scripts/test.sh installs it): a missing tool fails the test.
pub fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is required: run `bash scripts/test.sh`, which installs it");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Copies `oci:LAYOUT:TAG` (every platform, digests preserved) to
/// `docker://HOST/DEST_REPO:TAG`.
pub fn seed_from_layout(reg: &TestRegistry, layout_dir: &Path, tag: &str, dest_repo: &str) {
    let mut args = vec![
        "copy".to_string(),
        "--all".to_string(),
        "--preserve-digests".to_string(),
        "--dest-tls-verify=false".to_string(),
    ];
    if let Some((u, p)) = &reg.creds {
        args.push("--dest-creds".to_string());
        args.push(format!("{u}:{p}"));
    }
    args.push(format!("oci:{}:{tag}", layout_dir.display()));
    args.push(format!("docker://{}/{dest_repo}:{tag}", reg.host));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    skopeo(&args);
}

/// Every tag of an OCI layout (`org.opencontainers.image.ref.name` in index.json).
pub fn layout_tags(layout_dir: &Path) -> Vec<String> {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout_dir.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .map(str::to_string)
        .collect()
}

/// Copies the referrers of an OCI layout (index.json entries with a
/// `subject`) to `dest_repo`: each manifest and its blobs by digest, and for
/// each subject the `sha256-<hex>` tag-schema index listing its referrers
/// (Distribution 2.8 has no referrers API). skopeo cannot copy by digest
/// from a layout, so this speaks HTTP itself. Returns `(subject, referrer)` pairs.
pub fn seed_referrers_from_layout(
    reg: &TestRegistry,
    layout_dir: &Path,
    dest_repo: &str,
) -> Vec<(String, String)> {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout_dir.join("index.json")).unwrap()).unwrap();
    let mut by_subject: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    let mut pairs = vec![];
    for entry in index["manifests"].as_array().unwrap() {
        let digest = entry["digest"].as_str().unwrap();
        let bytes = read_blob(layout_dir, digest);
        let m: Value = serde_json::from_slice(&bytes).unwrap();
        let Some(subject) = m["subject"]["digest"].as_str() else {
            continue;
        };
        let media_type = m["mediaType"]
            .as_str()
            .or(entry["mediaType"].as_str())
            .unwrap()
            .to_string();
        for d in std::iter::once(&m["config"]).chain(m["layers"].as_array().unwrap().iter()) {
            let bd = d["digest"].as_str().unwrap();
            reg.push_blob(dest_repo, bd, &read_blob(layout_dir, bd));
        }
        reg.push_manifest(dest_repo, digest, &media_type, &bytes);
        let artifact_type = m["artifactType"]
            .as_str()
            .or(m["config"]["mediaType"].as_str())
            .unwrap();
        let mut desc = json!({
            "mediaType": media_type,
            "digest": digest,
            "size": bytes.len(),
            "artifactType": artifact_type,
        });
        if let Some(a) = m.get("annotations") {
            desc["annotations"] = a.clone();
        }
        by_subject
            .entry(subject.to_string())
            .or_default()
            .push(desc);
        pairs.push((subject.to_string(), digest.to_string()));
    }
    for (subject, manifests) in by_subject {
        let idx = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        let tag = subject.replace(':', "-");
        reg.push_manifest(
            dest_repo,
            &tag,
            "application/vnd.oci.image.index.v1+json",
            serde_json::to_vec(&idx).unwrap().as_slice(),
        );
    }
    pairs
}

fn read_blob(layout_dir: &Path, digest: &str) -> Vec<u8> {
    let (alg, hex) = digest.split_once(':').unwrap();
    std::fs::read(layout_dir.join("blobs").join(alg).join(hex))
        .unwrap_or_else(|e| panic!("blob {digest} in {}: {e}", layout_dir.display()))
}

/// Copies the tree `from` into `to` (tests work on private copies of the
/// committed examples, never on the originals).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// `sha256:<hex>` of the bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    regimen::model::Digest::sha256_of(bytes).to_string()
}

/// A response read to the end of the connection.
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        format!(
            "HTTP {} {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// One HTTP/1.0 request on a fresh connection (the server closes it after
/// the response, so the body is everything until EOF; no chunking).
pub fn try_http(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method != "GET" && method != "HEAD" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    s.flush()?;
    let mut raw = vec![];
    s.read_to_end(&mut raw)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed HTTP response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// A docker `config.json` in `dir/docker` whose `auths` has `user:pass`
/// for `host`; the folder, for `DOCKER_CONFIG`.
pub fn docker_config(dir: &Path, host: &str, user: &str, pass: &str) -> PathBuf {
    let cfg = dir.join("docker");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(
        cfg.join("config.json"),
        serde_json::json!({"auths": {host: {"auth": base64(format!("{user}:{pass}").as_bytes())}}})
            .to_string(),
    )
    .unwrap();
    cfg
}

pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The regimen binary, with no ambient docker credentials (every registry in
/// these tests is anonymous or has explicit `auth:` in its policy).
#[allow(dead_code)]
pub fn regimen() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("regimen").unwrap();
    c.env("DOCKER_CONFIG", empty_docker_config());
    // The tag cache on, as users have it, but out of the tester's home: the
    // folder scripts/test.sh made for the run, else one for this test process.
    if std::env::var_os("REGIMEN_CACHE_DIR").is_none() {
        c.env(
            "REGIMEN_CACHE_DIR",
            std::env::temp_dir().join(format!("regimen-test-cache-{}", std::process::id())),
        );
    }
    c
}

/// A docker config directory without a config.json.
#[allow(dead_code)]
pub fn empty_docker_config() -> PathBuf {
    let dir = std::env::temp_dir().join("regimen-test-empty-docker-config");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Exit code and stdout+stderr.
#[allow(dead_code)]
pub fn run(cmd: &mut assert_cmd::Command) -> (i32, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// `regimen ARGS…`: exit code and stdout+stderr.
#[allow(dead_code)]
pub fn run_args(args: &[&str]) -> (i32, String) {
    run(regimen().args(args))
}

/// Exit code, the JSON plan on stdout, and stdout+stderr.
#[allow(dead_code)]
pub fn json_plan(cmd: &mut assert_cmd::Command) -> (i32, serde_json::Value, String) {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let v = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("plan JSON: {e}\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    (out.status.code().unwrap_or(-1), v, stdout + &stderr)
}

/// The registry at `host` opened through regimen's own distribution backend.
#[allow(dead_code)]
pub fn open(host: &str) -> std::sync::Arc<dyn regimen::registry::Registry> {
    let root = std::env::temp_dir();
    let text = format!("registries:\n  seed: {{url: \"http://{host}\"}}\n");
    let policy = regimen::config::load_texts(&root, &[(std::sync::Arc::from("seed.yaml"), text)])
        .unwrap_or_else(|e| panic!("seed policy: {e:?}"));
    regimen::registry::open_all(&policy)
        .into_iter()
        .next()
        .unwrap()
        .1
        .unwrap_or_else(|e| panic!("open {host}: {e}"))
}

/// Runs an async test step on a fresh multi-threaded runtime (for the
/// synchronous tests that drive child processes).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// `git -C dir ARGS` with a test identity; panics with git's stderr on
/// failure; returns stdout, trimmed.
pub fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=test", "-c", "user.email=test@example.com"])
        .args(args)
        .output()
        .expect("git is required: run scripts/test.sh");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `regimen run --git URL --plan-only --once` on the `policy` folder of
/// branch `main`, with no ambient Git credentials: the run both Git auth
/// tests (http and ssh) make, each adding the variables it tests.
pub fn git_plan_once(url: &str, cache: &Path) -> assert_cmd::Command {
    git_plan_once_path(url, cache, "policy")
}

/// [`git_plan_once`] of the folder `path` of the repository.
pub fn git_plan_once_path(url: &str, cache: &Path, path: &str) -> assert_cmd::Command {
    let mut cmd = regimen();
    cmd.args([
        "--log-format",
        "text",
        "run",
        "--git",
        url,
        "--branch",
        "main",
        "--path",
        path,
        "--plan-only",
        "--once",
        "--cache-dir",
    ])
    .arg(cache)
    .env_remove("REGIMEN_GIT_TOKEN")
    .env_remove("REGIMEN_GIT_USERNAME")
    .env_remove("REGIMEN_GIT_PASSWORD")
    .env_remove("REGIMEN_GIT_SSH_KEY")
    .env_remove("REGIMEN_GIT_SSH_PASSPHRASE")
    .env_remove("REGIMEN_GIT_SSH_KNOWN_HOSTS")
    .env_remove("SSH_AUTH_SOCK")
    .timeout(Duration::from_secs(60));
    cmd
}

/// A bare repo `policy.git` under a temp root with one commit of
/// `policy/regimen.yaml` (an empty OCI-layout registry); returns the root
/// and the commit's sha.
pub fn policy_remote() -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir_all(work.join("policy")).unwrap();
    git(
        tmp.path(),
        &["init", "-q", "--bare", "-b", "main", "policy.git"],
    );
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(
        work.join("policy/regimen.yaml"),
        "registries:\n  dev: {url: oci:dev}\n",
    )
    .unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "policy"]);
    let sha = git(&work, &["rev-parse", "HEAD"]);
    let bare = tmp.path().join("policy.git");
    git(&work, &["push", "-q", bare.to_str().unwrap(), "main"]);
    (tmp, sha)
}

/// The tags of `repo` in an OCI-layout registry, sorted.
pub async fn oci_tags(reg: &regimen::registry::oci_layout::OciLayout, repo: &str) -> Vec<String> {
    use regimen::registry::Registry as _;
    let mut v: Vec<String> = reg
        .list_tags(&repo.parse().unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.to_string())
        .collect();
    v.sort();
    v
}

/// A creation time `days` ago, from one "now" per test process, so two
/// images built from the same spec are byte-identical (same digest).
pub fn ago(days: i64) -> String {
    use regimen::model::Timestamp;
    static NOW: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let now = *NOW.get_or_init(|| Timestamp::now().0);
    Timestamp(now - days * 86_400).to_rfc3339()
}

/// A tag from text the test knows is valid.
pub fn tag(s: &str) -> regimen::model::Tag {
    s.parse().unwrap()
}
