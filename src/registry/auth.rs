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
    Basic { username: String, password: Secret },
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
        }
    }
}

impl Credentials {
    /// `Basic base64(user:pass)`, or `None` when anonymous.
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Credentials::Anonymous => None,
            Credentials::Basic { username, password } => Some(format!(
                "Basic {}",
                B64.encode(format!("{username}:{}", password.expose()))
            )),
        }
    }
    pub fn is_anonymous(&self) -> bool {
        matches!(self, Credentials::Anonymous)
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
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json"))
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
    let hub = ["docker.io", "index.docker.io", "registry-1.docker.io"];
    hub.contains(&k) && hub.contains(&host)
}

/// Default credentials for `host` from docker's config: a credential helper
/// for the host, else `auths`, else the global `credsStore`, else anonymous.
/// Blocking (may run `docker-credential-<helper>`); call from `spawn_blocking`.
pub fn from_docker_config(host: &str) -> Result<Credentials, String> {
    match docker_config_path() {
        Some(path) => from_docker_config_file(&path, host),
        None => Ok(Credentials::Anonymous),
    }
}

/// [`from_docker_config`] with the config file given.
pub fn from_docker_config_file(path: &Path, host: &str) -> Result<Credentials, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Credentials::Anonymous),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let cfg: DockerConfig = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a docker config: {e}", path.display()))?;
    if let Some((_, helper)) = cfg.cred_helpers.iter().find(|(k, _)| host_matches(k, host)) {
        return run_helper(helper, host);
    }
    if let Some((key, a)) = cfg.auths.iter().find(|(k, _)| host_matches(k, host)) {
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
            return Ok(Credentials::Basic {
                username: u.to_string(),
                password: Secret(p.to_string()),
            });
        }
        if let (Some(u), Some(p)) = (&a.username, &a.password) {
            return Ok(Credentials::Basic {
                username: u.clone(),
                password: Secret(p.clone()),
            });
        }
    }
    if let Some(store) = cfg.creds_store.as_deref().filter(|s| !s.is_empty()) {
        return match run_helper(store, host) {
            Ok(c) => Ok(c),
            // The global store simply has nothing for this host.
            Err(_) => Ok(Credentials::Anonymous),
        };
    }
    Ok(Credentials::Anonymous)
}

#[derive(Deserialize)]
struct HelperOut {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// `docker-credential-<helper> get` with the server URL on stdin.
fn run_helper(helper: &str, host: &str) -> Result<Credentials, String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let prog = format!("docker-credential-{helper}");
    let mut child = Command::new(&prog)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run credential helper {prog}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(host.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("credential helper {prog}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "credential helper {prog} has no credentials for {host}"
        ));
    }
    let h: HelperOut = serde_json::from_slice(&out.stdout)
        .map_err(|_| format!("credential helper {prog} gave unreadable output"))?;
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
    },
}

/// Parses `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    let realm = params.get("realm")?.clone();
    Some(Challenge::Bearer {
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
    })
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
#[derive(Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

#[cfg(test)]
mod tests {
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
            }
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
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
        std::fs::write(
            &cfg,
            format!(
                r#"{{"auths":{{"https://reg.example:5000":{{"auth":"{enc}"}},"other.example":{{}}}},
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
        assert!(e.contains("REGIMEN_TEST_SURELY_UNSET_VAR"), "{e}");
    }
}
