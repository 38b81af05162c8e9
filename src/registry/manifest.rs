//! Manifests as raw bytes plus just enough parsing to walk them. The bytes are
//! what gets copied; the parse is only for finding children and blobs.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;

use super::{Descriptor, RegistryError};
use crate::model::Digest;

pub struct MediaType;

impl MediaType {
    pub const OCI_MANIFEST: &'static str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &'static str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &'static str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_EMPTY: &'static str = "application/vnd.oci.empty.v1+json";
    pub const OCI_LAYER: &'static str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const DOCKER_MANIFEST: &'static str =
        "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &'static str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &'static str = "application/vnd.docker.container.image.v1+json";

    /// Every manifest media type we read and write, for `Accept` headers.
    pub const ALL_MANIFESTS: [&'static str; 4] = [
        Self::OCI_MANIFEST,
        Self::OCI_INDEX,
        Self::DOCKER_MANIFEST,
        Self::DOCKER_LIST,
    ];

    pub fn is_index(mt: &str) -> bool {
        mt == Self::OCI_INDEX || mt == Self::DOCKER_LIST
    }
}

/// A manifest exactly as stored: its bytes, the media type it was served
/// with, and the digest of those bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub media_type: String,
    pub bytes: Bytes,
    pub digest: Digest,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    #[serde(default)]
    subject: Option<Descriptor>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// The structure of a manifest, for walking.
// Short-lived (parsed, walked, dropped) and never stored in bulk: boxing
// the image variant would only add an allocation per parse.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Parsed {
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
        subject: Option<Descriptor>,
        artifact_type: Option<String>,
        annotations: BTreeMap<String, String>,
    },
    Index {
        manifests: Vec<Descriptor>,
        subject: Option<Descriptor>,
        artifact_type: Option<String>,
        annotations: BTreeMap<String, String>,
    },
}

impl Manifest {
    /// Wraps bytes, computing their digest. The media type comes from the
    /// caller (the registry's Content-Type) or, failing that, from the JSON.
    pub fn from_bytes(
        bytes: impl Into<Bytes>,
        media_type: Option<&str>,
    ) -> Result<Manifest, RegistryError> {
        let bytes = bytes.into();
        let digest = Digest::sha256_of(&bytes);
        let media_type = match media_type.filter(|m| !m.is_empty() && *m != "application/json") {
            Some(m) => m.to_string(),
            None => {
                let raw: Raw = serde_json::from_slice(&bytes).map_err(|e| {
                    RegistryError::other(format!("manifest {digest} is not valid JSON: {e}"))
                })?;
                raw.media_type.unwrap_or_else(|| {
                    if raw.manifests.is_empty() {
                        MediaType::OCI_MANIFEST.to_string()
                    } else {
                        MediaType::OCI_INDEX.to_string()
                    }
                })
            }
        };
        Ok(Manifest {
            media_type,
            bytes,
            digest,
        })
    }

    pub fn is_index(&self) -> bool {
        MediaType::is_index(&self.media_type)
    }

    /// What a referrer tag's manifest lists: an index's manifests (the OCI
    /// fallback tag), or an image's layers (cosign's `.sig`, one per signature).
    pub fn entries(&self) -> Result<std::collections::BTreeSet<Digest>, RegistryError> {
        Ok(match self.parse()? {
            Parsed::Index { manifests, .. } => manifests.into_iter().map(|d| d.digest).collect(),
            Parsed::Image { layers, .. } => layers.into_iter().map(|d| d.digest).collect(),
        })
    }

    pub fn parse(&self) -> Result<Parsed, RegistryError> {
        let raw: Raw = serde_json::from_slice(&self.bytes).map_err(|e| {
            RegistryError::other(format!("manifest {} cannot be read: {e}", self.digest))
        })?;
        if self.is_index() {
            Ok(Parsed::Index {
                manifests: raw.manifests,
                subject: raw.subject,
                artifact_type: raw.artifact_type,
                annotations: raw.annotations,
            })
        } else {
            let config = raw.config.ok_or_else(|| {
                RegistryError::other(format!(
                    "manifest {} ({}) has no config",
                    self.digest, self.media_type
                ))
            })?;
            Ok(Parsed::Image {
                config,
                layers: raw.layers,
                subject: raw.subject,
                artifact_type: raw.artifact_type,
                annotations: raw.annotations,
            })
        }
    }

    /// What a HEAD would have told about this manifest.
    pub fn head(&self) -> super::ManifestHead {
        super::ManifestHead {
            digest: self.digest.clone(),
            media_type: self.media_type.clone(),
            size: self.bytes.len() as u64,
        }
    }

    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.bytes.len() as u64,
            artifact_type: None,
            annotations: BTreeMap::new(),
            platform: None,
            urls: Vec::new(),
        }
    }
}

impl Parsed {
    pub fn subject(&self) -> Option<&Descriptor> {
        match self {
            Parsed::Image { subject, .. } | Parsed::Index { subject, .. } => subject.as_ref(),
        }
    }
    pub fn annotations(&self) -> &BTreeMap<String, String> {
        match self {
            Parsed::Image { annotations, .. } | Parsed::Index { annotations, .. } => annotations,
        }
    }
    /// The artifact type as the referrers API reports it: `artifactType`, else the config media type.
    pub fn artifact_type(&self) -> Option<String> {
        match self {
            Parsed::Image {
                artifact_type,
                config,
                ..
            } => artifact_type
                .clone()
                .or_else(|| Some(config.media_type.clone())),
            Parsed::Index { artifact_type, .. } => artifact_type.clone(),
        }
    }
}

/// The index with only the children of the wanted platforms (`os/arch[/variant]`,
/// in any case), or `None` when none match or `bytes` is not an index.
/// Deterministic, so plan and apply compute the same digest; an index that
/// loses no child is its own bytes (same digest, its referrers still apply).
pub fn filter_index(bytes: &[u8], wanted: &[String]) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let manifests = v.get_mut("manifests")?.as_array_mut()?;
    let before = manifests.len();
    manifests.retain(|m| {
        let Some(p) = m.get("platform") else {
            return false;
        };
        let os = p.get("os").and_then(|x| x.as_str()).unwrap_or("");
        let arch = p.get("architecture").and_then(|x| x.as_str()).unwrap_or("");
        let variant = p.get("variant").and_then(|x| x.as_str());
        let same = |a: Option<&str>, b: Option<&str>| match (a, b) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        };
        wanted.iter().any(|w| {
            let parts: Vec<&str> = w.split('/').collect();
            same(parts.first().copied(), Some(os))
                && same(parts.get(1).copied(), Some(arch))
                && (parts.len() < 3 || same(parts.get(2).copied(), variant))
        })
    });
    if manifests.is_empty() {
        return None;
    }
    if manifests.len() == before {
        return Some(bytes.to_vec());
    }
    serde_json::to_vec(&v).ok()
}

#[cfg(test)]
mod tests {
    use super::filter_index;

    const INDEX: &str = r#"{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.index.v1+json",
  "manifests": [
    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:aa", "size": 1,
     "platform": {"os": "linux", "architecture": "amd64"}},
    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:bb", "size": 1,
     "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}
  ]
}"#;

    fn kept(bytes: &[u8]) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn an_index_that_loses_no_child_keeps_its_bytes() {
        let all = ["linux/amd64".to_string(), "linux/arm64".to_string()];
        assert_eq!(
            filter_index(INDEX.as_bytes(), &all).unwrap(),
            INDEX.as_bytes(),
            "pretty-printed, and still the same digest"
        );
        let one = filter_index(INDEX.as_bytes(), &["linux/arm64/v8".to_string()]).unwrap();
        assert_eq!(kept(&one), ["sha256:bb"]);
    }

    #[test]
    fn platforms_match_in_any_case() {
        let one = filter_index(INDEX.as_bytes(), &["Linux/AMD64".to_string()]).unwrap();
        assert_eq!(kept(&one), ["sha256:aa"]);
        assert!(filter_index(INDEX.as_bytes(), &["linux/s390x".to_string()]).is_none());
    }
}
