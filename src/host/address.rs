//! Policy addresses (`prod/team/api:stable`) ↔ the names a Docker/Podman
//! engine shows (`registry.example.com/team/api:stable`,
//! `…/team/api@sha256:…`). Pure, so the planner can match host images to
//! policy rules whatever name they were pulled under.

use std::collections::BTreeMap;

use crate::config::{Endpoint, Policy};
use crate::model::{Digest, ImageRef, Reference, RegistryName, RepoAddr};

/// Docker Hub's canonical name as engines report it.
const DOCKER_HUB: &str = "docker.io";

/// The engine-side host of each policy registry that hosts can pull from
/// (OCI-layout registries have none).
#[derive(Clone, Debug, Default)]
pub struct Addresses {
    hosts: BTreeMap<RegistryName, PolicyHost>,
}

/// A policy registry's host as hosts pull from it, and the port it means.
#[derive(Clone, Debug)]
struct PolicyHost {
    /// `host[:port]` as the policy writes it (the name hosts pull by).
    domain: String,
    /// The port requests go to: the written one, else the scheme's default.
    port: u16,
    /// The scheme's default port (80 for `http://`, 443 for `https://`).
    default_port: u16,
}

impl PolicyHost {
    fn new(domain: String, default_port: u16) -> PolicyHost {
        let port = split_port(&domain).1.unwrap_or(default_port);
        PolicyHost {
            domain,
            port,
            default_port,
        }
    }

    /// Whether an engine's domain names this registry. Ports are compared,
    /// not text: `127.0.0.1` is `http://127.0.0.1:80` (and
    /// `https://127.0.0.1:443`); `127.0.0.1:80` is `http://127.0.0.1`.
    /// Host names compare as DNS does, without case.
    fn is(&self, engine_domain: &str) -> bool {
        let (host, _) = split_port(&self.domain);
        let (e_host, e_port) = split_port(engine_domain);
        if !host.eq_ignore_ascii_case(e_host) {
            return false;
        }
        match e_port {
            Some(p) => p == self.port,
            // No port: the engine asks the default port of its scheme.
            None => self.port == self.default_port,
        }
    }
}

/// Where an `http://` or `https://` registry is: its host as engines name it
/// (lower case, Docker Hub's aliases as one) and the port requests go to
/// (the written one, else the scheme's default). `None` for a layout.
pub fn host_and_port(url: &Endpoint) -> Option<(String, u16)> {
    let (h, default_port) = match url {
        Endpoint::Http(h) => (h, 80),
        Endpoint::Https(h) => (h, 443),
        Endpoint::OciLayout(_) => return None,
    };
    let domain = canonical_domain(h.trim_end_matches('/'));
    let (host, port) = split_port(&domain);
    Some((host.to_string(), port.unwrap_or(default_port)))
}

/// `host` and the port of `host[:port]` (`[v6]:port` too). A port that is
/// not a number stays part of the host.
fn split_port(domain: &str) -> (&str, Option<u16>) {
    match domain.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && (!h.contains(':') || h.ends_with(']')) => {
            match p.parse::<u16>() {
                Ok(port) => (h, Some(port)),
                Err(_) => (domain, None),
            }
        }
        _ => (domain, None),
    }
}

/// A name as an engine shows it, split: `domain/path` and tag or digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineName {
    pub domain: String,
    pub path: String,
    pub reference: Option<Reference>,
}

impl Addresses {
    pub fn from_policy(p: &Policy) -> Addresses {
        let hosts = p
            .registries
            .iter()
            .filter_map(|(name, r)| {
                let (h, default_port) = match &r.url {
                    Endpoint::Http(h) => (h, 80),
                    Endpoint::Https(h) => (h, 443),
                    Endpoint::OciLayout(_) => return None,
                };
                let domain = canonical_domain(h.trim_end_matches('/'));
                Some((name.clone(), PolicyHost::new(domain, default_port)))
            })
            .collect();
        Addresses { hosts }
    }

    /// The engine-side repository name (`host:port/team/api`), or `None` for
    /// a registry engines cannot pull from (an OCI layout).
    pub fn engine_repo(&self, repo: &RepoAddr) -> Option<String> {
        let host = self.hosts.get(&repo.registry)?;
        Some(format!("{}/{}", host.domain, repo.repo))
    }

    /// The engine-side reference of a policy address.
    pub fn to_engine(&self, r: &ImageRef) -> Option<String> {
        let repo = self.engine_repo(&r.repo)?;
        Some(match &r.reference {
            Some(reference) => format!("{repo}{reference}"),
            None => repo,
        })
    }

    /// The policy address of an engine name, when it lies in a policy registry
    /// (the first by name when several policy registries are that registry).
    pub fn from_engine(&self, name: &str) -> Option<ImageRef> {
        self.from_engine_all(name).into_iter().next()
    }

    /// Every policy address of an engine name: two policy registries may
    /// name one registry (`http://127.0.0.1` and `http://127.0.0.1:80`).
    pub fn from_engine_all(&self, name: &str) -> Vec<ImageRef> {
        let Some(n) = EngineName::parse(name) else {
            return Vec::new();
        };
        let Ok(repo) = n.path.parse::<crate::model::Repo>() else {
            return Vec::new();
        };
        self.hosts
            .iter()
            .filter(|(_, h)| h.is(&n.domain))
            .map(|(registry, _)| ImageRef {
                repo: RepoAddr {
                    registry: registry.clone(),
                    repo: repo.clone(),
                },
                reference: n.reference.clone(),
            })
            .collect()
    }

    /// `(policy repo, digest)` of an engine repo-digest (`host/repo@sha256:…`).
    pub fn repo_digest(&self, name: &str) -> Option<(RepoAddr, Digest)> {
        self.repo_digests(name).into_iter().next()
    }

    /// [`Addresses::repo_digest`] in every policy registry that is the engine's.
    pub fn repo_digests(&self, name: &str) -> Vec<(RepoAddr, Digest)> {
        self.from_engine_all(name)
            .into_iter()
            .filter_map(|r| match r.reference {
                Some(Reference::Digest(d)) => Some((r.repo, d)),
                _ => None,
            })
            .collect()
    }
}

impl EngineName {
    /// Parses an engine image name with Docker's normalisation: no domain
    /// means Docker Hub, and a one-segment Hub path is under `library/`.
    pub fn parse(name: &str) -> Option<EngineName> {
        let (rest, reference) = match name.split_once('@') {
            // `repo:tag@digest` names the digest; the tag is a label the
            // engine ignores, and kept it would be read as part of the path.
            Some((n, d)) => (strip_tag(n)?, Some(Reference::Digest(d.parse().ok()?))),
            None => {
                let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
                match name[last_slash..].rfind(':') {
                    Some(i) => {
                        let (n, t) = name.split_at(last_slash + i);
                        (n, Some(Reference::Tag(t[1..].parse().ok()?)))
                    }
                    None => (name, None),
                }
            }
        };
        if rest.is_empty() {
            return None;
        }
        let (domain, path) = match rest.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (canonical_domain(first), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), rest.to_string()),
        };
        let path = if domain == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        Some(EngineName {
            domain,
            path,
            reference,
        })
    }
}

/// `host:port/repo:tag` → `host:port/repo` (a port is not a tag: it is
/// followed by a `/`). `None` for an invalid tag.
fn strip_tag(name: &str) -> Option<&str> {
    let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    match name[last_slash..].rfind(':') {
        Some(i) => {
            let (n, t) = name.split_at(last_slash + i);
            t[1..].parse::<crate::model::Tag>().ok()?;
            Some(n)
        }
        None => Some(name),
    }
}

fn canonical_domain(h: &str) -> String {
    match h {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_string()
        }
        h => h.to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> Addresses {
        let mut hosts = BTreeMap::new();
        hosts.insert(
            "prod".parse().unwrap(),
            PolicyHost::new("127.0.0.1:5001".to_string(), 443),
        );
        hosts.insert(
            "hub".parse().unwrap(),
            PolicyHost::new("docker.io".to_string(), 443),
        );
        Addresses { hosts }
    }

    fn from_urls(urls: &[(&str, &str)]) -> Addresses {
        let yaml: String = urls
            .iter()
            .map(|(n, u)| format!("  {n}: {{url: \"{u}\"}}\n"))
            .collect();
        let files = [(
            std::sync::Arc::from("p.yaml"),
            format!("registries:\n{yaml}"),
        )];
        let p = crate::config::load_texts(std::path::Path::new("."), &files).unwrap();
        Addresses::from_policy(&p)
    }

    #[test]
    fn a_name_with_tag_and_digest_maps_by_its_digest() {
        let d = format!("sha256:{}", "a".repeat(64));
        let a = addrs();
        let got: Vec<String> = a
            .from_engine_all(&format!("127.0.0.1:5001/base/x:1@{d}"))
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(got, [format!("prod/base/x@{d}")]);
        let n = EngineName::parse(&format!("debian:12@{d}")).unwrap();
        assert_eq!(n.path, "library/debian");
        assert!(EngineName::parse(&format!("debian:b@d!@{d}")).is_none());
    }

    #[test]
    fn default_ports_match_names_without_a_port() {
        let a = from_urls(&[
            ("plain", "http://127.0.0.1:80"),
            ("tls", "https://reg.example.com:443"),
            ("bare", "reg2.example.com"),
            ("odd", "http://10.0.0.1:443"),
            ("v6", "http://[::1]:80"),
        ]);
        let at = |name: &str| a.from_engine(name).map(|r| r.to_string());
        for (engine, want) in [
            ("127.0.0.1/t7/app:pr-1", Some("plain/t7/app:pr-1")),
            ("127.0.0.1:80/t7/app:pr-1", Some("plain/t7/app:pr-1")),
            ("127.0.0.1:5000/t7/app:pr-1", None),
            ("reg.example.com/team/api:1", Some("tls/team/api:1")),
            ("reg.example.com:443/team/api:1", Some("tls/team/api:1")),
            ("reg.example.com:80/team/api:1", None),
            ("reg2.example.com:443/x:1", Some("bare/x:1")),
            ("REG2.example.com/x:1", Some("bare/x:1")),
            // Port 443 over plain HTTP is not the engine's default.
            ("10.0.0.1/x:1", None),
            ("10.0.0.1:443/x:1", Some("odd/x:1")),
            ("[::1]/x:1", Some("v6/x:1")),
            ("[::1]:80/x:1", Some("v6/x:1")),
        ] {
            assert_eq!(at(engine).as_deref(), want, "{engine}");
        }
        let digest = format!("127.0.0.1/t7/app@sha256:{}", "b".repeat(64));
        assert_eq!(
            a.repo_digest(&digest).unwrap().0.to_string(),
            "plain/t7/app"
        );
        // Hosts still pull by the name the policy writes.
        let r: ImageRef = "plain/t7/app:pr-1".parse().unwrap();
        assert_eq!(a.to_engine(&r).as_deref(), Some("127.0.0.1:80/t7/app:pr-1"));
    }

    #[test]
    fn policy_addresses_map_both_ways() {
        let a = addrs();
        let r: ImageRef = "prod/team/api:stable".parse().unwrap();
        assert_eq!(
            a.to_engine(&r).as_deref(),
            Some("127.0.0.1:5001/team/api:stable")
        );
        assert_eq!(a.from_engine("127.0.0.1:5001/team/api:stable"), Some(r));
        let (repo, d) = a
            .repo_digest(&format!(
                "127.0.0.1:5001/team/api@sha256:{}",
                "a".repeat(64)
            ))
            .unwrap();
        assert_eq!(repo.to_string(), "prod/team/api");
        assert_eq!(d.hex(), "a".repeat(64));
    }

    #[test]
    fn docker_hub_short_names_normalise() {
        let a = addrs();
        assert_eq!(
            a.from_engine("alpine:3.19").unwrap().to_string(),
            "hub/library/alpine:3.19"
        );
        assert_eq!(
            a.from_engine("docker.io/library/alpine:3.19")
                .unwrap()
                .to_string(),
            "hub/library/alpine:3.19"
        );
        assert_eq!(
            a.from_engine("index.docker.io/org/x:1")
                .unwrap()
                .to_string(),
            "hub/org/x:1"
        );
    }

    #[test]
    fn foreign_and_odd_names_are_not_policy_addresses() {
        let a = addrs();
        assert_eq!(a.from_engine("quay.io/org/x:1"), None);
        assert_eq!(a.from_engine("localhost/built:latest"), None);
        assert_eq!(a.from_engine("<none>:<none>"), None);
        assert_eq!(a.from_engine(""), None);
        // A port is not a tag.
        let n = EngineName::parse("127.0.0.1:5001/team/api").unwrap();
        assert_eq!(n.domain, "127.0.0.1:5001");
        assert_eq!(n.reference, None);
    }
}
