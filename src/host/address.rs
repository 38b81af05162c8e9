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
    hosts: BTreeMap<RegistryName, String>,
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
                let h = match &r.url {
                    Endpoint::Http(h) | Endpoint::Https(h) => h,
                    Endpoint::OciLayout(_) => return None,
                };
                Some((name.clone(), canonical_domain(h.trim_end_matches('/'))))
            })
            .collect();
        Addresses { hosts }
    }

    /// The engine-side repository name (`host:port/team/api`), or `None` for
    /// a registry engines cannot pull from (an OCI layout).
    pub fn engine_repo(&self, repo: &RepoAddr) -> Option<String> {
        let host = self.hosts.get(&repo.registry)?;
        Some(format!("{host}/{}", repo.repo))
    }

    /// The engine-side reference of a policy address.
    pub fn to_engine(&self, r: &ImageRef) -> Option<String> {
        let repo = self.engine_repo(&r.repo)?;
        Some(match &r.reference {
            Some(reference) => format!("{repo}{reference}"),
            None => repo,
        })
    }

    /// The policy address of an engine name, when it lies in a policy registry.
    pub fn from_engine(&self, name: &str) -> Option<ImageRef> {
        let n = EngineName::parse(name)?;
        let registry = self
            .hosts
            .iter()
            .find(|(_, h)| **h == n.domain)
            .map(|(r, _)| r.clone())?;
        let repo = n.path.parse().ok()?;
        Some(ImageRef {
            repo: RepoAddr { registry, repo },
            reference: n.reference,
        })
    }

    /// `(policy repo, digest)` of an engine repo-digest (`host/repo@sha256:…`).
    pub fn repo_digest(&self, name: &str) -> Option<(RepoAddr, Digest)> {
        let r = self.from_engine(name)?;
        match r.reference {
            Some(Reference::Digest(d)) => Some((r.repo, d)),
            _ => None,
        }
    }
}

impl EngineName {
    /// Parses an engine image name with Docker's normalisation: no domain
    /// means Docker Hub, and a one-segment Hub path is under `library/`.
    pub fn parse(name: &str) -> Option<EngineName> {
        let (rest, reference) = match name.split_once('@') {
            Some((n, d)) => (n, Some(Reference::Digest(d.parse().ok()?))),
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
        hosts.insert("prod".parse().unwrap(), "127.0.0.1:5001".to_string());
        hosts.insert("hub".parse().unwrap(), "docker.io".to_string());
        Addresses { hosts }
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
