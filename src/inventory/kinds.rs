//! Referrer artifact types sorted into the kinds an inventory shows.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReferrerKind {
    Sbom,
    Signature,
    Scan,
    Other,
}

impl ReferrerKind {
    pub fn name(self) -> &'static str {
        match self {
            ReferrerKind::Sbom => "sbom",
            ReferrerKind::Signature => "signature",
            ReferrerKind::Scan => "scan",
            ReferrerKind::Other => "other",
        }
    }
}

/// By artifact type: there is no registry of these, so well-known words
/// (SPDX, CycloneDX, cosign, Notary, SARIF, Trivy, Grype) decide.
pub fn referrer_kind(artifact_type: &str) -> ReferrerKind {
    let t = artifact_type.to_ascii_lowercase();
    if crate::scan::DEFAULT_ARTIFACT_TYPES.contains(&t.as_str())
        || ["sarif", "trivy", "grype", "vuln"]
            .iter()
            .any(|w| t.contains(w))
    {
        ReferrerKind::Scan
    } else if ["spdx", "cyclonedx", "syft", "sbom"]
        .iter()
        .any(|w| t.contains(w))
    {
        ReferrerKind::Sbom
    } else if ["signature", "cosign", "notary", ".sig"]
        .iter()
        .any(|w| t.contains(w))
    {
        ReferrerKind::Signature
    } else {
        ReferrerKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_types_are_classified() {
        for (t, k) in [
            ("application/vnd.cyclonedx+json", ReferrerKind::Sbom),
            ("application/spdx+json", ReferrerKind::Sbom),
            (
                "application/vnd.dev.cosign.artifact.sig.v1+json",
                ReferrerKind::Signature,
            ),
            (
                "application/vnd.cncf.notary.signature",
                ReferrerKind::Signature,
            ),
            ("application/sarif+json", ReferrerKind::Scan),
            (
                "application/vnd.aquasec.trivy.report+json",
                ReferrerKind::Scan,
            ),
            ("application/vnd.in-toto+json", ReferrerKind::Other),
        ] {
            assert_eq!(referrer_kind(t), k, "{t}");
        }
    }
}
