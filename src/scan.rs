//! Vulnerability scan reports, parsed: SARIF 2.1.0 (as Trivy and Grype emit
//! it), Trivy JSON and Grype JSON. Pure: bytes in, [`Report`]s out; observe
//! fetches the bytes, the planner judges the findings.
//!
//! The format is recognised from the content, not from the artifact type,
//! since tools attach the same report under many types (`oras attach` with
//! `application/json` layers, for one).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Severity;
use crate::model::Timestamp;

/// Artifact types read as scan reports when `require.vulnerabilities` has no
/// `artifact_types`: SARIF's registered type, and the types Trivy and Grype
/// reports are commonly attached under (neither tool registers one).
pub const DEFAULT_ARTIFACT_TYPES: &[&str] = &[
    "application/sarif+json",
    "application/vnd.aquasec.trivy.report+json",
    "application/vnd.aquasec.trivy.report.v1+json",
    "application/vnd.anchore.grype+json",
    "application/vnd.anchore.grype.report+json",
];

/// Reports larger than this are refused rather than read into memory.
pub const MAX_REPORT_BYTES: usize = 64 << 20;

/// One scanner's findings about one image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Normalised tool name (`trivy`, `grype`, or the SARIF driver name in lower case).
    pub tool: String,
    /// When the scan ran, where the report says so.
    pub created: Option<Timestamp>,
    pub findings: Vec<Finding>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// `CVE-2026-1234`, `GHSA-…`, as the tool names it.
    pub id: String,
    /// `None` when the report gives no usable severity (Trivy and Grype's
    /// `UNKNOWN`); gates treat that as critical.
    #[serde(with = "severity_opt")]
    pub severity: Option<Severity>,
    /// Whether a fixed version exists: `None` when the report does not say
    /// (then `ignore_unfixed` keeps the finding).
    pub fixed: Option<bool>,
    pub package: String,
}

mod severity_opt {
    use super::{severity_name, severity_word, Severity};
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(s: &Option<Severity>, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s.map(severity_name).unwrap_or("unknown"))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Severity>, D::Error> {
        let s = String::deserialize(d)?;
        Ok(severity_word(&s))
    }
}

pub fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Negligible => "negligible",
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

/// A severity word in any case (`CRITICAL`, `Critical`); `unknown` and
/// anything else is `None`.
fn severity_word(s: &str) -> Option<Severity> {
    match s.trim().to_ascii_lowercase().as_str() {
        "negligible" => Some(Severity::Negligible),
        "low" => Some(Severity::Low),
        "medium" | "moderate" => Some(Severity::Medium),
        "high" => Some(Severity::High),
        "critical" => Some(Severity::Critical),
        _ => None,
    }
}

/// CVSS v3 qualitative ranges. `0.0` is what Trivy writes for `UNKNOWN`, so
/// it reads as unknown rather than "none".
fn severity_of_score(score: f64) -> Option<Severity> {
    if !score.is_finite() || score <= 0.0 {
        None
    } else if score >= 9.0 {
        Some(Severity::Critical)
    } else if score >= 7.0 {
        Some(Severity::High)
    } else if score >= 4.0 {
        Some(Severity::Medium)
    } else {
        Some(Severity::Low)
    }
}

/// SARIF levels are coarse (`error` is Trivy's and Grype's word for both
/// high and critical), so each maps to the highest severity it may mean.
fn severity_of_level(level: &str) -> Option<Severity> {
    match level {
        "error" => Some(Severity::Critical),
        "warning" => Some(Severity::Medium),
        "note" => Some(Severity::Low),
        "none" => Some(Severity::Negligible),
        _ => None,
    }
}

/// Normalised tool names, so `Trivy` SARIF and Trivy JSON count as one scanner.
fn tool_name(name: &str) -> String {
    let l = name.trim().to_ascii_lowercase();
    if l.contains("trivy") {
        "trivy".into()
    } else if l.contains("grype") || l.contains("anchore") {
        "grype".into()
    } else if l.is_empty() {
        "unnamed scanner".into()
    } else {
        l
    }
}

/// Parses a report in any of the three formats. A SARIF log with several
/// runs gives one report per run.
pub fn parse(bytes: &[u8]) -> Result<Vec<Report>, String> {
    if bytes.len() > MAX_REPORT_BYTES {
        return Err(format!(
            "report is larger than {} MiB",
            MAX_REPORT_BYTES >> 20
        ));
    }
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("report is not valid JSON: {e}"))?;
    let Some(obj) = v.as_object() else {
        return Err("report is not a JSON object".into());
    };
    let mut reports = if obj.contains_key("runs") {
        sarif(&v)
    } else if obj.contains_key("SchemaVersion") || obj.contains_key("ArtifactName") {
        trivy(&v).map(|r| vec![r])
    } else if obj.contains_key("matches") && obj.contains_key("descriptor") {
        grype(&v).map(|r| vec![r])
    } else {
        Err("not a SARIF, Trivy JSON or Grype JSON report".into())
    }?;
    // What a report names reaches terminals and PR comments as text.
    let printable = crate::observe::printable;
    for r in &mut reports {
        r.tool = printable(&r.tool);
        for f in &mut r.findings {
            f.id = printable(&f.id);
            f.package = printable(&f.package);
        }
    }
    Ok(reports)
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn time_at(v: &Value, path: &[&str]) -> Result<Option<Timestamp>, String> {
    match str_at(v, path) {
        None | Some("") => Ok(None),
        // A placeholder before any image existed is no time, as for images.
        Some(s) => Timestamp::parse_rfc3339(s)
            .map(Timestamp::as_created)
            .ok_or_else(|| format!("`{}` is not an RFC 3339 time: `{s}`", path.join("."))),
    }
}

/// `Key: value` from a SARIF help text (both tools write one per line).
fn help_field<'a>(help: &'a str, key: &str) -> Option<&'a str> {
    help.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

fn sarif(v: &Value) -> Result<Vec<Report>, String> {
    if let Some(ver) = v.get("version").and_then(Value::as_str) {
        if !ver.starts_with("2.") {
            return Err(format!("SARIF version {ver} is not supported (2.1.0 is)"));
        }
    }
    let runs = v
        .get("runs")
        .and_then(Value::as_array)
        .ok_or("SARIF `runs` is not a list")?;
    let mut out = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let driver = run
            .get("tool")
            .and_then(|t| t.get("driver"))
            .ok_or_else(|| format!("SARIF run {i} has no `tool.driver`"))?;
        let name = driver
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("SARIF run {i} has no `tool.driver.name`"))?;
        let rules: Vec<&Value> = driver
            .get("rules")
            .and_then(Value::as_array)
            .map(|r| r.iter().collect())
            .unwrap_or_default();
        let by_id: BTreeMap<&str, &Value> = rules
            .iter()
            .filter_map(|r| Some((r.get("id")?.as_str()?, *r)))
            .collect();
        let mut created = None;
        if let Some(invs) = run.get("invocations").and_then(Value::as_array) {
            for inv in invs {
                let t = time_at(inv, &["endTimeUtc"])?.or(time_at(inv, &["startTimeUtc"])?);
                created = created.max(t);
            }
        }
        let results = match run.get("results") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.iter().collect(),
            Some(_) => return Err(format!("SARIF run {i}: `results` is not a list")),
        };
        let mut findings = Vec::new();
        for (j, res) in results.iter().enumerate() {
            let rule_id = res
                .get("ruleId")
                .and_then(Value::as_str)
                .or_else(|| str_at(res, &["rule", "id"]));
            let rule = rule_id.and_then(|id| by_id.get(id).copied()).or_else(|| {
                res.get("ruleIndex")
                    .and_then(Value::as_u64)
                    .and_then(|k| rules.get(k as usize).copied())
            });
            let Some(rule_id) = rule_id.or_else(|| rule.and_then(|r| r["id"].as_str())) else {
                return Err(format!("SARIF run {i}, result {j}: no `ruleId`"));
            };
            findings.push(sarif_finding(rule_id, rule, res));
        }
        out.push(Report {
            tool: tool_name(name),
            created,
            findings,
        });
    }
    if out.is_empty() {
        return Err("SARIF log has no runs".into());
    }
    Ok(out)
}

/// One SARIF result: the severity from the tool's own words first (Trivy's
/// rule tags, both tools' `Severity:` help line), then the CVSS
/// `security-severity`, then the coarse level.
fn sarif_finding(rule_id: &str, rule: Option<&Value>, res: &Value) -> Finding {
    let help = rule
        .and_then(|r| str_at(r, &["help", "text"]))
        .unwrap_or("");
    let props = rule.and_then(|r| r.get("properties"));
    let tag_sev = props
        .and_then(|p| p.get("tags"))
        .and_then(Value::as_array)
        .and_then(|tags| {
            tags.iter()
                .filter_map(Value::as_str)
                .find_map(severity_word)
        });
    let score = props
        .and_then(|p| p.get("security-severity"))
        .and_then(|s| {
            s.as_f64()
                .or_else(|| s.as_str().and_then(|t| t.trim().parse().ok()))
        });
    let level = res
        .get("level")
        .and_then(Value::as_str)
        .or_else(|| rule.and_then(|r| str_at(r, &["defaultConfiguration", "level"])));
    let severity = tag_sev
        .or_else(|| help_field(help, "Severity").and_then(severity_word))
        .or_else(|| score.and_then(severity_of_score))
        .or_else(|| level.and_then(severity_of_level));
    // Trivy writes `Fixed Version:`, Grype `Fix Version:`; empty means none.
    let fixed = help_field(help, "Fixed Version")
        .or_else(|| help_field(help, "Fix Version"))
        .map(|f| !f.is_empty());
    // Grype's rule IDs carry the package (`CVE-…-openssl`); the help text's
    // first line names the vulnerability itself.
    let id = help
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("Vulnerability "))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(rule_id);
    Finding {
        id: id.to_string(),
        severity,
        fixed,
        package: help_field(help, "Package").unwrap_or("").to_string(),
    }
}

fn trivy(v: &Value) -> Result<Report, String> {
    let results = match v.get("Results") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().collect(),
        Some(_) => return Err("Trivy `Results` is not a list".into()),
    };
    let mut findings = Vec::new();
    for (i, r) in results.iter().enumerate() {
        let vulns = match r.get("Vulnerabilities") {
            None | Some(Value::Null) => continue,
            Some(Value::Array(a)) => a,
            Some(_) => return Err(format!("Trivy Results[{i}].Vulnerabilities is not a list")),
        };
        for (j, vu) in vulns.iter().enumerate() {
            let id = vu
                .get("VulnerabilityID")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    format!("Trivy Results[{i}].Vulnerabilities[{j}] has no VulnerabilityID")
                })?;
            let fixed_version = vu.get("FixedVersion").and_then(Value::as_str).unwrap_or("");
            let status = vu.get("Status").and_then(Value::as_str).unwrap_or("");
            findings.push(Finding {
                id: id.to_string(),
                severity: vu
                    .get("Severity")
                    .and_then(Value::as_str)
                    .and_then(severity_word),
                fixed: trivy_fixed(fixed_version, status),
                package: vu
                    .get("PkgName")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            });
        }
    }
    Ok(Report {
        tool: "trivy".into(),
        created: time_at(v, &["CreatedAt"])?,
        findings,
    })
}

fn grype(v: &Value) -> Result<Report, String> {
    let matches = match v.get("matches") {
        Some(Value::Array(a)) => a,
        Some(Value::Null) => &Vec::new(),
        _ => return Err("Grype `matches` is not a list".into()),
    };
    let mut findings = Vec::new();
    for (i, m) in matches.iter().enumerate() {
        let vu = m
            .get("vulnerability")
            .ok_or_else(|| format!("Grype matches[{i}] has no `vulnerability`"))?;
        let id = vu
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("Grype matches[{i}].vulnerability has no `id`"))?;
        let fixed = match str_at(vu, &["fix", "state"]).unwrap_or("") {
            "fixed" => Some(true),
            "not-fixed" | "wont-fix" => Some(false),
            _ => vu
                .get("fix")
                .and_then(|f| f.get("versions"))
                .and_then(Value::as_array)
                .filter(|a| !a.is_empty())
                .map(|_| true),
        };
        findings.push(Finding {
            id: id.to_string(),
            severity: vu
                .get("severity")
                .and_then(Value::as_str)
                .and_then(severity_word),
            fixed,
            package: str_at(m, &["artifact", "name"]).unwrap_or("").to_string(),
        });
    }
    Ok(Report {
        tool: tool_name(str_at(v, &["descriptor", "name"]).unwrap_or("grype")),
        created: time_at(v, &["descriptor", "timestamp"])?,
        findings,
    })
}

/// Trivy's fix state: a fixed version or `Status: fixed` is fixed; the
/// states that say no fix exists are unfixed; anything else (`unknown`,
/// `under_investigation`, or no `Status` and no fixed version, as older
/// Trivy writes) is not known, which `ignore_unfixed` keeps.
fn trivy_fixed(fixed_version: &str, status: &str) -> Option<bool> {
    if !fixed_version.is_empty() || status == "fixed" {
        return Some(true);
    }
    match status {
        "affected" | "will_not_fix" | "fix_deferred" | "end_of_life" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/scans")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn one(name: &str) -> Report {
        let mut r = parse(&fixture(name)).unwrap();
        assert_eq!(r.len(), 1);
        r.remove(0)
    }

    fn find<'a>(r: &'a Report, id: &str) -> &'a Finding {
        r.findings
            .iter()
            .find(|f| f.id == id)
            .unwrap_or_else(|| panic!("{id} not in {:?}", r.findings))
    }

    #[test]
    fn trivy_json() {
        let r = one("trivy-critical.json");
        assert_eq!(r.tool, "trivy");
        assert_eq!(
            r.created,
            Timestamp::parse_rfc3339("2026-03-02T09:14:27.412705Z")
        );
        assert_eq!(r.findings.len(), 4);
        let c = find(&r, "CVE-2026-1234");
        assert_eq!(c.severity, Some(Severity::Critical));
        assert_eq!(c.fixed, Some(true));
        assert_eq!(c.package, "libssl3");
        let u = find(&r, "CVE-2025-9999");
        assert_eq!(u.severity, None, "UNKNOWN stays unknown");
        assert_eq!(u.fixed, Some(false));
        assert_eq!(find(&r, "CVE-2024-26461").severity, Some(Severity::Low));
    }

    #[test]
    fn trivy_fix_state_not_given_is_unknown_not_unfixed() {
        // `ignore_unfixed` drops only findings known to have no fix.
        let report = |status: &str, fixed: &str| {
            let doc = format!(
                r#"{{"SchemaVersion":2,"ArtifactName":"x","Results":[{{"Target":"t","Vulnerabilities":[
                {{"VulnerabilityID":"CVE-1","PkgName":"p","Severity":"CRITICAL"{status}{fixed}}}]}}]}}"#
            );
            parse(doc.as_bytes())
                .unwrap()
                .remove(0)
                .findings
                .remove(0)
                .fixed
        };
        assert_eq!(
            report("", ""),
            None,
            "older Trivy: no Status, no FixedVersion"
        );
        assert_eq!(report(r#","Status":"unknown""#, ""), None);
        assert_eq!(report(r#","Status":"under_investigation""#, ""), None);
        assert_eq!(report(r#","Status":"affected""#, ""), Some(false));
        assert_eq!(report(r#","Status":"will_not_fix""#, ""), Some(false));
        assert_eq!(report(r#","Status":"fixed""#, ""), Some(true));
        assert_eq!(report("", r#","FixedVersion":"1.2""#), Some(true));
    }

    #[test]
    fn trivy_sarif_prefers_the_vendor_severity_tag_over_cvss() {
        let r = one("trivy-low.sarif.json");
        assert_eq!(r.tool, "trivy");
        // CVSS 7.5 but Debian rates it LOW, which is what Trivy gates on.
        let f = find(&r, "CVE-2023-50495");
        assert_eq!(f.severity, Some(Severity::Low));
        assert_eq!(f.package, "libtinfo6");
        assert_eq!(f.fixed, Some(false));
        assert_eq!(find(&r, "CVE-2024-2511").fixed, Some(true));
        assert!(r
            .findings
            .iter()
            .all(|f| f.severity <= Some(Severity::Low) && f.severity.is_some()));
    }

    #[test]
    fn grype_json() {
        let r = one("grype-high.json");
        assert_eq!(r.tool, "grype");
        assert_eq!(
            r.created,
            Timestamp::parse_rfc3339("2026-03-02T10:01:44.918273+01:00")
        );
        let h = find(&r, "CVE-2025-0665");
        assert_eq!(h.severity, Some(Severity::High));
        assert_eq!(h.fixed, Some(false));
        assert_eq!(h.package, "curl");
        let n = find(&r, "CVE-2011-3374");
        assert_eq!(n.severity, Some(Severity::Negligible));
        assert_eq!(n.fixed, None, "state unknown, no versions");
        assert_eq!(find(&r, "GHSA-4374-p667-p6c8").fixed, Some(true));
    }

    #[test]
    fn grype_sarif_takes_the_id_and_severity_from_the_help_text() {
        let r = one("grype-critical.sarif.json");
        assert_eq!(r.tool, "grype");
        let c = find(&r, "CVE-2026-1234");
        assert_eq!(c.severity, Some(Severity::Critical));
        assert_eq!(c.package, "libssl3");
        assert_eq!(c.fixed, Some(true));
        assert_eq!(find(&r, "CVE-2024-26461").fixed, Some(false));
    }

    #[test]
    fn sarif_falls_back_to_score_then_level() {
        let doc = serde_json::json!({"version": "2.1.0", "runs": [{
        "tool": {"driver": {"name": "Acme Scanner", "rules": [
            {"id": "A-1", "properties": {"security-severity": "9.1"}},
            {"id": "A-2", "properties": {"security-severity": 5}},
            {"id": "A-3", "defaultConfiguration": {"level": "note"}},
            {"id": "A-4"}
        ]}},
        "invocations": [{"executionSuccessful": true, "endTimeUtc": "2026-01-02T03:04:05Z"}],
        "results": [
            {"ruleId": "A-1", "message": {"text": "x"}},
            {"ruleId": "A-2", "message": {"text": "x"}},
            {"ruleIndex": 2, "message": {"text": "x"}},
            {"ruleId": "A-4", "level": "error", "message": {"text": "x"}},
            {"ruleId": "NO-RULE", "message": {"text": "x"}}
        ]}]});
        let r = parse(doc.to_string().as_bytes()).unwrap().remove(0);
        assert_eq!(r.tool, "acme scanner");
        assert_eq!(r.created, Timestamp::parse_rfc3339("2026-01-02T03:04:05Z"));
        let sev: Vec<_> = r
            .findings
            .iter()
            .map(|f| (f.id.as_str(), f.severity))
            .collect();
        assert_eq!(
            sev,
            [
                ("A-1", Some(Severity::Critical)),
                ("A-2", Some(Severity::Medium)),
                ("A-3", Some(Severity::Low)),
                ("A-4", Some(Severity::Critical)),
                ("NO-RULE", None),
            ]
        );
        assert!(r.findings.iter().all(|f| f.fixed.is_none()));
    }

    #[test]
    fn empty_reports_are_clean() {
        let t = parse(br#"{"SchemaVersion": 2, "ArtifactName": "x", "Results": null}"#).unwrap();
        assert!(t[0].findings.is_empty());
        let g = parse(br#"{"matches": [], "descriptor": {"name": "grype"}}"#).unwrap();
        assert!(g[0].findings.is_empty() && g[0].created.is_none());
        let s = parse(br#"{"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "Trivy"}}, "results": []}]}"#).unwrap();
        assert_eq!(s[0].tool, "trivy");
    }

    #[test]
    fn malformed_reports_are_clear_errors() {
        for (doc, want) in [
            (&b""[..], "not valid JSON"),
            (b"[1,2]", "not a JSON object"),
            (
                b"{\"bomFormat\": \"CycloneDX\"}",
                "not a SARIF, Trivy JSON or Grype JSON",
            ),
            (
                b"{\"version\": \"1.0.0\", \"runs\": []}",
                "SARIF version 1.0.0",
            ),
            (
                b"{\"version\": \"2.1.0\", \"runs\": {}}",
                "`runs` is not a list",
            ),
            (b"{\"version\": \"2.1.0\", \"runs\": []}", "no runs"),
            (b"{\"runs\": [{\"tool\": {}}]}", "no `tool.driver`"),
            (
                b"{\"runs\": [{\"tool\": {\"driver\": {\"name\": \"x\"}}, \"results\": [{}]}]}",
                "no `ruleId`",
            ),
            (
                b"{\"SchemaVersion\": 2, \"Results\": 3}",
                "`Results` is not a list",
            ),
            (
                b"{\"SchemaVersion\": 2, \"Results\": [{\"Vulnerabilities\": [{}]}]}",
                "no VulnerabilityID",
            ),
            (
                b"{\"SchemaVersion\": 2, \"CreatedAt\": \"yesterday\"}",
                "not an RFC 3339 time",
            ),
            (
                b"{\"matches\": [{}], \"descriptor\": {}}",
                "no `vulnerability`",
            ),
            (
                b"{\"matches\": 1, \"descriptor\": {}}",
                "`matches` is not a list",
            ),
        ] {
            let e = parse(doc).unwrap_err();
            assert!(e.contains(want), "{:?}: {e}", String::from_utf8_lossy(doc));
        }
        assert!(parse(&vec![b' '; MAX_REPORT_BYTES + 1])
            .unwrap_err()
            .contains("larger than"));
    }
}
