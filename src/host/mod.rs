//! Docker/Podman hosts over the Docker Engine API (bollard): what an engine
//! holds, and the few mutations the plan may ask for (pull, remove an
//! image, stop a container). Podman's compatible API serves the same calls.

pub mod address;

use std::collections::BTreeMap;
use std::sync::Arc;

use bollard::models::{ContainerSummary, ImageSummary};
use bollard::query_parameters::{
    CreateImageOptions, InspectContainerOptions, ListContainersOptions, ListImagesOptions,
    RemoveImageOptions, StopContainerOptions, TagImageOptions,
};
use bollard::Docker;
use futures_util::{StreamExt, TryStreamExt};

use crate::config::{Host, Policy};
use crate::model::Timestamp;
use crate::observe::{HostContainer, HostImage, HostState};
use crate::registry::auth::Credentials;

/// Seconds an engine call may take before the host counts as unreachable.
const TIMEOUT_SECS: u64 = 120;
/// Seconds a container gets to exit after SIGTERM when stopped.
const STOP_GRACE_SECS: i32 = 10;

/// An engine connection for one policy host.
pub struct Engine {
    name: String,
    docker: Docker,
}

/// The policy's hosts, opened, with what apply needs to act on them: the
/// engine-side names of policy registries and their credentials.
#[derive(Default)]
pub struct Hosts {
    pub engines: BTreeMap<String, Result<Arc<Engine>, String>>,
    pub addrs: address::Addresses,
    registries: BTreeMap<crate::model::RegistryName, crate::config::Registry>,
    root: std::path::PathBuf,
}

impl Hosts {
    /// Opens the policy's hosts; with `only`, just those (apply opens the
    /// hosts its changes touch, no others).
    pub async fn open(policy: &Policy, only: Option<&std::collections::BTreeSet<String>>) -> Hosts {
        let mut engines = BTreeMap::new();
        for (name, h) in &policy.hosts {
            if only.is_some_and(|o| !o.contains(name)) {
                continue;
            }
            engines.insert(name.clone(), Engine::open(name, h).await.map(Arc::new));
        }
        Hosts {
            engines,
            addrs: address::Addresses::from_policy(policy),
            registries: policy.registries.clone(),
            root: policy.root.clone(),
        }
    }

    /// Opens the hosts a plan's changes touch; every host of the policy
    /// when the plan deletes from registries, since apply then re-reads
    /// what their containers use (see [`Hosts::used_digests`]).
    pub async fn for_plan(policy: &Policy, plan: &crate::plan::Plan) -> Hosts {
        if plan
            .changes
            .iter()
            .any(|c| c.action.deletes_from_registry())
        {
            return Hosts::open(policy, None).await;
        }
        let names = plan
            .changes
            .iter()
            .filter_map(|c| split_target(&c.target).map(|(h, _)| h.to_string()))
            .collect();
        Hosts::open(policy, Some(&names)).await
    }

    /// Registry digests that containers on the opened hosts use now, each
    /// with which container on which host; an error naming each host that
    /// could not be read (what it runs is then unknown).
    pub async fn used_digests(&self) -> Result<BTreeMap<String, String>, String> {
        let reads =
            futures_util::future::join_all(self.engines.iter().map(|(name, e)| async move {
                match e {
                    Ok(e) => e.used_digests().await,
                    Err(why) => Err(why.clone()),
                }
                .map_err(|why| {
                    if why.contains(&format!("host {name}")) {
                        why
                    } else {
                        format!("host {name}: {why}")
                    }
                })
            }))
            .await;
        let mut used = BTreeMap::new();
        let mut unknown = Vec::new();
        for r in reads {
            match r {
                Ok(u) => {
                    for (d, who) in u {
                        used.entry(d).or_insert(who);
                    }
                }
                Err(why) => unknown.push(why),
            }
        }
        if unknown.is_empty() {
            Ok(used)
        } else {
            Err(unknown.join("; "))
        }
    }

    pub fn engine(&self, name: &str) -> Result<&Engine, String> {
        match self.engines.get(name) {
            Some(Ok(e)) => Ok(e),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!("host `{name}` is not defined in the policy")),
        }
    }

    /// What the engine should present to a registry when pulling: the
    /// policy's `auth:`, else the docker config regimen itself would use.
    /// Credentials the engine pulls from `registry` with. Ones that cannot
    /// be read (an unset `password_env`) are an error, not an anonymous pull
    /// that fails later with a bare 401.
    pub fn credentials(
        &self,
        registry: &crate::model::RegistryName,
    ) -> Result<Credentials, String> {
        let Some(cfg) = self.registries.get(registry) else {
            return Ok(Credentials::Anonymous);
        };
        let found = match (&cfg.auth, &cfg.url) {
            (Some(a), _) => crate::registry::auth::from_policy(a, &self.root),
            (None, crate::config::Endpoint::Http(h) | crate::config::Endpoint::Https(h)) => {
                crate::registry::auth::from_docker_config(h)
            }
            (None, crate::config::Endpoint::OciLayout(_)) => Ok(Credentials::Anonymous),
        };
        found.map_err(|e| format!("registry `{registry}`: {e}"))
    }
}

/// `host:NAME/rest` → `(NAME, rest)`.
pub fn split_target(target: &str) -> Option<(&str, &str)> {
    target.strip_prefix("host:")?.split_once('/')
}

fn err(host: &str, what: &str, e: bollard::errors::Error) -> String {
    let detail = match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => format!("{status_code}: {}", message.trim()),
        other => with_causes(&other),
    };
    format!("host {host}: {what}: {detail}")
}

/// An error and its causes, `outer: inner: …`: bollard's connection errors
/// say only `client error (Connect)` at the top, and the reason (refused,
/// a TLS alert, an untrusted certificate) is in the chain.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let m = c.to_string();
        if !m.is_empty() && !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cause = c.source();
    }
    s
}

/// What a failed TLS handshake means in policy terms: rustls says
/// `invalid peer certificate` when `tls.ca` did not sign the engine's
/// certificate, and the engine answers a client certificate it does not
/// accept with a certificate alert.
fn tls_hint(reason: &str, tls: &crate::config::HostTls) -> String {
    if reason.contains("invalid peer certificate") {
        format!(
            " (the engine's certificate is not signed by tls.ca {})",
            tls.ca.display()
        )
    } else if reason.contains("fatal alert")
        && ["Certificate", "UnknownCA", "AccessDenied"]
            .iter()
            .any(|a| reason.contains(a))
    {
        format!(
            " (the engine refused the client certificate tls.cert {}: is it signed by a CA the engine trusts?)",
            tls.cert.display()
        )
    } else {
        String::new()
    }
}

/// An engine client over mutual TLS that trusts only `tls.ca`, as `docker
/// --tlsverify --tlscacert` does. bollard's `connect_with_ssl` adds every
/// system CA to it, so a publicly issued certificate for the engine's name
/// would pass, and one unreadable system certificate fails every host.
fn connect_tls(
    name: &str,
    endpoint: &str,
    tls: &crate::config::HostTls,
    version: &bollard::ClientVersion,
) -> Result<Docker, bollard::errors::Error> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let invalid =
        |field: &str, path: &std::path::Path, kind: &str| bollard::errors::Error::IOError {
            err: std::io::Error::other(format!(
                "tls.{field} file {} is not {kind}",
                path.display()
            )),
        };
    let certs = |field: &str, path: &std::path::Path| {
        CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .ok()
            .filter(|certs| !certs.is_empty())
            .ok_or_else(|| invalid(field, path, "a PEM certificate"))
    };
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs("ca", &tls.ca)?);
    if added == 0 {
        return Err(invalid("ca", &tls.ca, "a CA certificate"));
    }
    let chain = certs("cert", &tls.cert)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|_| invalid("key", &tls.key, "a PEM private key"))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|b| {
        b.with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
    })
    .map_err(|e| bollard::errors::Error::IOError {
        err: std::io::Error::other(format!(
            "host {name}: tls.cert {} and tls.key {}: {e}",
            tls.cert.display(),
            tls.key.display()
        )),
    })?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    let client = Arc::new(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https),
    );
    let transport = move |req: bollard::BollardRequest| {
        let client = Arc::clone(&client);
        async move {
            client
                .request(req)
                .await
                .map_err(bollard::errors::Error::from)
        }
    };
    // The engine is addressed as https://HOST:PORT whichever form the policy used.
    let addr = endpoint
        .strip_prefix("tcp://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .unwrap_or(endpoint);
    Docker::connect_with_custom_transport(
        transport,
        Some(format!("https://{addr}")),
        TIMEOUT_SECS,
        version,
    )
}

/// Checks the `tls:` files before connecting, so that a missing or mixed-up
/// file is reported as that (field and path), not as a failed handshake.
fn check_tls_files(host: &str, tls: &crate::config::HostTls) -> Result<(), String> {
    let files = [
        (
            "ca",
            &tls.ca,
            "a PEM certificate",
            "-----BEGIN CERTIFICATE-----",
        ),
        (
            "cert",
            &tls.cert,
            "a PEM certificate",
            "-----BEGIN CERTIFICATE-----",
        ),
        ("key", &tls.key, "a PEM private key", "PRIVATE KEY-----"),
    ];
    for (field, path, kind, marker) in files {
        let bytes = std::fs::read(path).map_err(|e| {
            format!(
                "host {host}: cannot read tls.{field} file {}: {e}",
                path.display()
            )
        })?;
        // Only the PEM markers are looked at; nothing of the file is shown.
        if !String::from_utf8_lossy(&bytes).contains(marker) {
            return Err(format!(
                "host {host}: tls.{field} file {} is not {kind}",
                path.display()
            ));
        }
    }
    Ok(())
}

/// `409` from the engine: a conflict, such as an image a container uses.
fn is_conflict(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            ..
        }
    )
}

/// The engine's message of an error answer.
fn message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => {
            message.trim().to_string()
        }
        other => with_causes(other),
    }
}

/// How a removal ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Removal {
    Done,
    /// The engine refused: a container uses the image (its message).
    InUse(String),
}

/// A container's state at apply time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerNow {
    /// Up: running or paused.
    pub running: bool,
    pub paused: bool,
    pub started: Option<Timestamp>,
}

/// `404` from the engine: the object is not there.
fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl Engine {
    /// Connects and agrees on an API version with the engine (old Podman
    /// speaks 1.41; new Docker refuses very old clients).
    pub async fn open(name: &str, h: &Host) -> Result<Engine, String> {
        let version = bollard::API_DEFAULT_VERSION;
        let docker = if let Some(path) = h.endpoint.strip_prefix("unix://") {
            Docker::connect_with_unix(path, TIMEOUT_SECS, version)
        } else if let Some(tls) = &h.tls {
            check_tls_files(name, tls)?;
            connect_tls(name, &h.endpoint, tls, version)
        } else {
            Docker::connect_with_http(&h.endpoint, TIMEOUT_SECS, version)
        }
        .map_err(|e| {
            format!(
                "host {name}: cannot connect to {}: {}",
                h.endpoint,
                with_causes(&e)
            )
        })?;
        let docker = docker.negotiate_version().await.map_err(|e| {
            let reason = err(name, &format!("cannot reach {}", h.endpoint), e);
            match &h.tls {
                Some(tls) => format!("{reason}{}", tls_hint(&reason, tls)),
                None => reason,
            }
        })?;
        Ok(Engine {
            name: name.to_string(),
            docker,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The engine's image and container lists (containers in any state).
    async fn lists(&self) -> Result<(Vec<ImageSummary>, Vec<ContainerSummary>), String> {
        let images = self
            .docker
            // `digests=true` is left out: Podman 4.3 answers it with an empty
            // body, and both engines list RepoDigests without it.
            .list_images(Some(ListImagesOptions {
                all: false,
                ..Default::default()
            }))
            .await
            .map_err(|e| err(&self.name, "listing images", e))?;
        let summaries = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                ..Default::default()
            }))
            .await
            .map_err(|e| err(&self.name, "listing containers", e))?;
        Ok((images, summaries))
    }

    /// Images and containers, with each container's start time.
    pub async fn observe(&self) -> Result<HostState, String> {
        let (images, summaries) = self.lists().await?;
        // The list has no start time; inspect has. A few at a time: a build
        // host can have hundreds of stopped containers.
        let inspected: Vec<Option<HostContainer>> = futures_util::stream::iter(summaries)
            .map(|c| self.inspect(c))
            .buffered(8)
            .try_collect()
            .await?;
        let containers = inspected.into_iter().flatten().collect();
        Ok(HostState {
            images: images.into_iter().map(host_image).collect(),
            containers,
        })
    }

    /// One listed container with its state; `None` when it was removed
    /// between list and inspect (it no longer exists).
    async fn inspect(
        &self,
        c: bollard::models::ContainerSummary,
    ) -> Result<Option<HostContainer>, String> {
        let Some(id) = c.id.clone() else {
            return Ok(None);
        };
        let state = match self
            .docker
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
        {
            Ok(i) => i.state,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(err(&self.name, &format!("inspecting container {id}"), e)),
        };
        let paused = state.as_ref().and_then(|s| s.paused).unwrap_or(false);
        // Docker and Podman both say `Running` of a paused container; an
        // engine that does not is still up.
        let running = state.as_ref().and_then(|s| s.running).unwrap_or(false) || paused;
        let started = state
            .as_ref()
            .and_then(|s| s.started_at.as_deref())
            .and_then(Timestamp::parse_rfc3339)
            .filter(|t| t.0 > 0);
        Ok(Some(HostContainer {
            name: c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_else(|| id.clone()),
            id,
            image: c.image.unwrap_or_default(),
            image_id: c.image_id.unwrap_or_default(),
            running,
            paused,
            started,
        }))
    }

    /// The image an engine name (or ID) resolves to, if any: its ID, names
    /// and repo digests.
    pub async fn inspect_image(&self, name: &str) -> Result<Option<HostImage>, String> {
        match self.docker.inspect_image(name).await {
            Ok(i) => Ok(Some(HostImage {
                id: normal_id(&i.id.unwrap_or_default()),
                // As listed by `observe` (the plan's names compare with these).
                tags: engine_names(i.repo_tags.unwrap_or_default()),
                repo_digests: i.repo_digests.unwrap_or_default(),
                created: None,
                size: i.size.unwrap_or(0).max(0) as u64,
                labels: Default::default(),
                containers: None,
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(err(&self.name, &format!("inspecting image {name}"), e)),
        }
    }

    /// Pulls `repo@digest` (exactly that content, whatever the tag does
    /// meanwhile) and, when given, names it `repo:tag`.
    pub async fn pull(
        &self,
        repo: &str,
        digest: &str,
        tag: Option<&str>,
        creds: &Credentials,
    ) -> Result<(), String> {
        let by_digest = format!("{repo}@{digest}");
        let credentials = match creds {
            Credentials::Anonymous => None,
            Credentials::Basic { username, password } => Some(bollard::auth::DockerCredentials {
                username: Some(username.clone()),
                password: Some(password.expose().to_string()),
                serveraddress: repo.split('/').next().map(str::to_string),
                ..Default::default()
            }),
            Credentials::IdentityToken(token) => Some(bollard::auth::DockerCredentials {
                identitytoken: Some(token.expose().to_string()),
                serveraddress: repo.split('/').next().map(str::to_string),
                ..Default::default()
            }),
        };
        let mut stream = self.docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(by_digest.clone()),
                ..Default::default()
            }),
            None,
            credentials,
        );
        while let Some(msg) = stream.next().await {
            let info = msg.map_err(|e| err(&self.name, &format!("pulling {by_digest}"), e))?;
            if let Some(detail) = info.error_detail {
                return Err(format!(
                    "host {}: pulling {by_digest}: {}",
                    self.name,
                    detail.message.unwrap_or_default()
                ));
            }
        }
        if let Some(tag) = tag {
            self.docker
                .tag_image(
                    &by_digest,
                    Some(TagImageOptions {
                        repo: Some(repo.to_string()),
                        tag: Some(tag.to_string()),
                    }),
                )
                .await
                .map_err(|e| err(&self.name, &format!("tagging {repo}:{tag}"), e))?;
        }
        Ok(())
    }

    /// Removes an image: each of its names first (so no `--force` is
    /// needed, which on Podman would also remove containers), then the ID.
    /// The engine refusing because a container uses the image (409: one
    /// created meanwhile, or a Podman external container such as buildah's,
    /// which the API does not list) is [`Removal::InUse`], not an error.
    pub async fn remove_image(&self, id: &str, names: &[String]) -> Result<Removal, String> {
        let plain = RemoveImageOptions {
            force: false,
            noprune: false,
            ..Default::default()
        };
        for n in names {
            match self.docker.remove_image(n, Some(plain.clone()), None).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) if is_conflict(&e) => return Ok(Removal::InUse(message(&e))),
                Err(e) => return Err(err(&self.name, &format!("removing {n}"), e)),
            }
        }
        match self.docker.remove_image(id, Some(plain), None).await {
            Ok(_) => Ok(Removal::Done),
            // The last name's removal already deleted it.
            Err(e) if is_not_found(&e) => Ok(Removal::Done),
            Err(e) if is_conflict(&e) => Ok(Removal::InUse(message(&e))),
            Err(e) => Err(err(&self.name, &format!("removing image {id}"), e)),
        }
    }

    /// A container as it is now, `None` when it is gone.
    pub async fn container(&self, id: &str) -> Result<Option<ContainerNow>, String> {
        match self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(i) => {
                let state = i.state.as_ref();
                let paused = state.and_then(|s| s.paused).unwrap_or(false);
                Ok(Some(ContainerNow {
                    running: state.and_then(|s| s.running).unwrap_or(false) || paused,
                    paused,
                    started: state
                        .and_then(|s| s.started_at.as_deref())
                        .and_then(Timestamp::parse_rfc3339)
                        .filter(|t| t.0 > 0),
                }))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(err(&self.name, &format!("inspecting container {id}"), e)),
        }
    }

    /// Registry digests (`sha256:…`, from the repo digests of the images)
    /// that some container on this engine uses, in any state, each with
    /// the first such container's name; images in use by containers the
    /// engine counts but does not list (Podman's external ones) count too.
    pub async fn used_digests(&self) -> Result<BTreeMap<String, String>, String> {
        let (images, containers) = self.lists().await?;
        let mut used = BTreeMap::new();
        for i in images {
            let listed: Vec<String> = containers
                .iter()
                .filter(|c| {
                    c.image_id
                        .as_deref()
                        .is_some_and(|id| crate::observe::same_id(id, &i.id))
                })
                .map(|c| {
                    c.names
                        .as_ref()
                        .and_then(|n| n.first())
                        .map(|n| n.trim_start_matches('/').to_string())
                        .or_else(|| c.id.clone())
                        .unwrap_or_default()
                })
                .collect();
            let counted = u64::try_from(i.containers).unwrap_or(0);
            let who = match listed.first() {
                Some(name) => format!("container {name}"),
                None if counted > 0 => {
                    "a container the engine does not list (external, e.g. buildah's)".to_string()
                }
                None => continue,
            };
            for rd in &i.repo_digests {
                if let Some((_, d)) = rd.split_once('@') {
                    used.entry(d.to_string())
                        .or_insert_with(|| format!("{who} on host {}", self.name));
                }
            }
        }
        Ok(used)
    }

    /// IDs of containers (any state) created from this image.
    pub async fn users_of(&self, image_id: &str) -> Result<Vec<String>, String> {
        let all = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                ..Default::default()
            }))
            .await
            .map_err(|e| err(&self.name, "listing containers", e))?;
        Ok(all
            .into_iter()
            .filter(|c| {
                c.image_id
                    .as_deref()
                    .is_some_and(|i| crate::observe::same_id(i, image_id))
            })
            .filter_map(|c| c.id)
            .collect())
    }

    /// Stops a container; a paused one is unpaused first (engines refuse
    /// to stop a paused container: Podman's "container state improper").
    pub async fn stop_container(&self, id: &str, paused: bool) -> Result<(), String> {
        if paused {
            match self.docker.unpause_container(id).await {
                Ok(()) => {}
                // Unpaused meanwhile: stop it as it is.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409 | 500,
                    ..
                }) => {}
                Err(e) => return Err(err(&self.name, &format!("unpausing container {id}"), e)),
            }
        }
        self.docker
            .stop_container(
                id,
                Some(StopContainerOptions {
                    t: Some(STOP_GRACE_SECS),
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| err(&self.name, &format!("stopping container {id}"), e))
    }
}

/// Image IDs as `sha256:<hex>` (Podman leaves the prefix off in places).
fn normal_id(id: &str) -> String {
    if id.is_empty() || id.contains(':') {
        id.to_string()
    } else {
        format!("sha256:{id}")
    }
}

/// An image's names as the engine lists them, tags first: Podman also
/// lists `repo@sha256:…` there for an image pulled by digest (as every
/// `present` pull is), and the first name is the one plans, violations and
/// the inventory show. The digest names stay (removing an image removes
/// each of its names).
fn engine_names(mut names: Vec<String>) -> Vec<String> {
    names.retain(|t| t != "<none>:<none>");
    names.sort_by_key(|t| t.contains('@'));
    names
}

/// An engine's listed image as observed.
fn host_image(i: bollard::models::ImageSummary) -> HostImage {
    HostImage {
        id: normal_id(&i.id),
        tags: engine_names(i.repo_tags),
        repo_digests: i
            .repo_digests
            .into_iter()
            .filter(|t| t != "<none>@<none>")
            .collect(),
        // A reproducible build's placeholder time is no age.
        created: Timestamp(i.created).as_created(),
        size: i.size.max(0) as u64,
        // Labels (base name, owner, source) are the image author's text and
        // the inventory prints them: escaped like a registry image's, so they
        // cannot drive the terminal.
        labels: i
            .labels
            .into_iter()
            .map(|(k, v)| (crate::observe::printable(&k), crate::observe::printable(&v)))
            .collect(),
        // Docker answers -1 (not counted).
        containers: u64::try_from(i.containers).ok(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tags_come_before_digest_names() {
        let names = super::engine_names(vec![
            "reg:5000/team/api@sha256:aa".into(),
            "<none>:<none>".into(),
            "reg:5000/team/api:1.0.0".into(),
            "quay.io/x/api:2".into(),
        ]);
        assert_eq!(
            names,
            [
                "reg:5000/team/api:1.0.0",
                "quay.io/x/api:2",
                "reg:5000/team/api@sha256:aa"
            ]
        );
    }

    use super::*;
    use crate::observe::BASE_NAME;

    #[test]
    fn host_image_labels_are_escaped() {
        let evil = "x\u{1b}]0;pwned\u{7}\u{1b}[2K\rNo changes.";
        let i = bollard::models::ImageSummary {
            id: "sha256:ab".into(),
            created: 1, // Jib's epoch + 1 s
            labels: [
                (BASE_NAME.to_string(), evil.to_string()),
                ("k\u{1b}[31m".to_string(), "v".to_string()),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let img = host_image(i);
        assert_eq!(img.created, None);
        for (k, v) in &img.labels {
            assert!(!k.chars().any(char::is_control), "{k:?}");
            assert!(!v.chars().any(char::is_control), "{v:?}");
        }
        assert_eq!(
            img.labels[BASE_NAME],
            r"x\u{1b}]0;pwned\u{7}\u{1b}[2K\u{d}No changes."
        );
    }
}
