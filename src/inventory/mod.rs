//! `regimen inventory`: every image in the managed registries and on the
//! hosts, one row per image per location, with what is known about it and
//! what the policies say. Building the rows is pure (from `Observed`);
//! `collect` does the reading and the renderers only format.
//!
//! Unknown is not clean: a fact that could not be read is `null` in JSON and
//! `unknown` in the other formats, never empty.

mod collect;
mod csv;
mod html;
mod kinds;
mod text;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::{Desired, Severity};
use crate::host::address::Addresses;
use crate::model::{Digest, RepoAddr, Timestamp};
use crate::observe::{same_id, Fact, HostState, ImageInfo, Observed};

pub use collect::observe;
pub use csv::render as render_csv;
pub use html::render as render_html;
pub use kinds::{referrer_kind, ReferrerKind};
pub use text::render as render_text;

/// Changes only with a documented migration, like the plan's.
pub const FORMAT_VERSION: &str = "1";

/// The owner annotation/label when `policies.owner_label` is not set.
pub const AUTHORS: &str = "org.opencontainers.image.authors";
pub const SOURCE: &str = "org.opencontainers.image.source";

#[derive(Clone, Debug, Serialize)]
pub struct Inventory {
    pub format_version: &'static str,
    pub generated: String,
    /// False when a registry, repo, host or image could not be read.
    pub complete: bool,
    pub summary: Summary,
    pub unobserved: Vec<Unobserved>,
    pub images: Vec<Row>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Rows (one per image per location).
    pub images: usize,
    /// Rows with at least one violation.
    pub violating: usize,
    /// Rows not judged (`verdicts: null`): neither clean nor violating.
    pub not_judged: usize,
    /// Per registry (policy name) and per host (`host:NAME`).
    pub locations: Vec<LocationCount>,
    pub age_histogram: Vec<AgeBucket>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LocationCount {
    pub location: String,
    pub kind: LocationKind,
    pub images: usize,
    pub violating: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct AgeBucket {
    pub bucket: &'static str,
    pub count: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Unobserved {
    pub subject: String,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LocationKind {
    Registry,
    Host,
}

/// One image in one location.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// `REGISTRY/REPO`, or `host:NAME`.
    pub location: String,
    pub kind: LocationKind,
    /// Registry: the repo's tags. Host: the engine's names, as policy
    /// addresses where they lie in a policy registry.
    pub tags: Vec<String>,
    /// Registry: the manifest digest. Host: the engine's image ID.
    pub digest: String,
    /// Host: the registry manifests it was pulled as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo_digests: Option<Vec<String>>,
    pub created: Option<String>,
    pub age_seconds: Option<i64>,
    pub size: Option<u64>,
    /// `os/arch` of an index's children; `[]` for a single-platform image.
    pub platforms: Option<Vec<String>>,
    pub base_image: Option<String>,
    pub owner: Option<String>,
    pub source: Option<String>,
    pub referrers: Option<ReferrerCounts>,
    pub scan: Scan,
    /// `[]`: no policy broken; `null`: not judged (details unknown).
    pub verdicts: Option<Vec<Verdict>>,
    /// Host: containers created from it (running or not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<ContainerUse>>,
    /// Why facts shown as `null` are unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReferrerCounts {
    pub sbom: usize,
    pub signature: usize,
    pub scan: usize,
    pub other: usize,
}

impl ReferrerCounts {
    pub fn words(&self) -> String {
        let parts: Vec<String> = [
            ("sbom", self.sbom),
            ("signature", self.signature),
            ("scan", self.scan),
            ("other", self.other),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(w, n)| {
            if *n == 1 {
                w.to_string()
            } else {
                format!("{w}×{n}")
            }
        })
        .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(" ")
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanStatus {
    Scanned,
    NoReport,
    Unknown,
}

#[derive(Clone, Debug, Serialize)]
pub struct Scan {
    pub status: ScanStatus,
    /// Of the latest report: `critical` … `negligible`, or `none` (no findings).
    pub worst_severity: Option<String>,
    pub findings: Option<usize>,
    pub tools: Vec<String>,
    /// When the latest report was made, where it says.
    pub created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Scan {
    /// No scan report is attached.
    pub(crate) fn no_report() -> Scan {
        Scan {
            status: ScanStatus::NoReport,
            worst_severity: None,
            findings: None,
            tools: Vec::new(),
            created: None,
            reason: None,
        }
    }

    fn unknown(reason: impl Into<String>) -> Scan {
        Scan {
            status: ScanStatus::Unknown,
            reason: Some(reason.into()),
            ..Scan::no_report()
        }
    }

    /// One word for tables: the severity, `none`, `no report` or `unknown`.
    pub fn word(&self) -> String {
        match self.status {
            ScanStatus::Scanned => self
                .worst_severity
                .clone()
                .unwrap_or_else(|| "unknown".into()),
            ScanStatus::NoReport => "no report".into(),
            ScanStatus::Unknown => "unknown".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub policy: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub message: String,
}

impl Verdict {
    pub fn word(&self) -> String {
        match &self.kind {
            Some(k) => format!("{}({k})", self.policy),
            None => self.policy.clone(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ContainerUse {
    pub name: String,
    pub running: bool,
    pub started: Option<String>,
    /// Running containers: seconds since they started.
    pub running_for_seconds: Option<i64>,
}

/// Words for a row's verdicts: `ok`, `unknown`, or the broken policies.
pub fn verdict_words(v: &Option<Vec<Verdict>>) -> String {
    match v {
        None => "unknown".into(),
        Some(v) if v.is_empty() => "ok".into(),
        Some(v) => v.iter().map(Verdict::word).collect::<Vec<_>>().join(" "),
    }
}

pub fn container_words(c: &[ContainerUse]) -> String {
    if c.is_empty() {
        return "none".into();
    }
    c.iter()
        .map(|c| match (c.running, c.running_for_seconds) {
            (true, Some(s)) => format!("{} (running {})", c.name, crate::model::Duration::human(s)),
            (true, None) => format!("{} (running)", c.name),
            (false, _) => format!("{} (stopped)", c.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Platforms as words joined by `sep`: `single` for a plain image.
pub fn platform_words(r: &Row, sep: &str) -> String {
    match &r.platforms {
        Some(p) if p.is_empty() => "single".into(),
        Some(p) => p.join(sep),
        None => "unknown".into(),
    }
}

/// The columns every tabular format shares, in order: base image, owner,
/// source, referrer kinds, worst scan severity, verdicts.
pub fn provenance_words(r: &Row) -> [String; 6] {
    [
        opt_word(&r.base_image),
        opt_word(&r.owner),
        opt_word(&r.source),
        r.referrers
            .as_ref()
            .map(|c| c.words())
            .unwrap_or_else(|| "unknown".into()),
        r.scan.word(),
        verdict_words(&r.verdicts),
    ]
}

pub fn opt_word<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Bytes as `12.3 MB` (decimal, like registries' UIs).
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < UNITS.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

const BUCKETS: [(&str, i64); 7] = [
    ("< 1d", 86_400),
    ("1-7d", 7 * 86_400),
    ("7-30d", 30 * 86_400),
    ("30-90d", 90 * 86_400),
    ("90-180d", 180 * 86_400),
    ("180d-1y", 365 * 86_400),
    ("> 1y", i64::MAX),
];

/// Builds the inventory from what was observed.
pub fn build(desired: &Desired, observed: &Observed, now: Timestamp) -> Inventory {
    let checker = crate::plan::policy::Checker::new(desired);
    let owner_label = desired
        .policies
        .as_ref()
        .and_then(|p| p.owner_label.clone())
        .unwrap_or_else(|| AUTHORS.to_string());
    let judges_age = checker
        .as_ref()
        .is_some_and(crate::plan::policy::Checker::judges_age);
    let mut rows = Vec::new();
    let mut unobserved = Vec::new();

    for repo in crate::plan::policy::managed_repos(desired, observed) {
        let state = match observed.repos.get(&repo) {
            Some(Fact::Known(s)) => s,
            Some(Fact::Unknown { reason }) => {
                unobserved.push(Unobserved {
                    subject: repo.to_string(),
                    reason: reason.clone(),
                });
                continue;
            }
            None => {
                unobserved.push(Unobserved {
                    subject: repo.to_string(),
                    reason: "not read".into(),
                });
                continue;
            }
        };
        let mut by_digest: BTreeMap<&Digest, Vec<String>> = BTreeMap::new();
        for (tag, d) in &state.tags {
            by_digest.entry(d).or_default().push(tag.to_string());
        }
        // Ordered by tag text, not digest, so output is stable across pushes.
        let mut groups: Vec<(&Digest, Vec<String>)> = by_digest.into_iter().collect();
        groups.sort_by(|a, b| a.1.cmp(&b.1));
        for (digest, tags) in groups {
            // An unfinished untag's placeholder is no image (retention removes it).
            if matches!(observed.image(&repo, digest), Some(Fact::Known(i)) if i.is_regimen_placeholder())
            {
                continue;
            }
            let mut row = Row {
                location: repo.to_string(),
                kind: LocationKind::Registry,
                tags,
                digest: digest.to_string(),
                repo_digests: None,
                created: None,
                age_seconds: None,
                size: None,
                platforms: None,
                base_image: None,
                owner: None,
                source: None,
                referrers: None,
                scan: Scan::unknown("image details unknown"),
                verdicts: None,
                containers: None,
                unknown: None,
            };
            match observed.image(&repo, digest) {
                Some(Fact::Known(info)) => {
                    fill_from_registry(&mut row, &repo, info, observed, &owner_label);
                    row.created = info.created.map(|c| c.to_rfc3339());
                    row.age_seconds = info.created.map(|c| age_secs(now, c));
                    row.size = Some(info.size);
                    let verdicts = match &checker {
                        Some(c) => c
                            .image(info, now)
                            .into_iter()
                            .map(|v| Verdict {
                                policy: v.policy.to_string(),
                                kind: v.kind.map(str::to_string),
                                message: v.message,
                            })
                            .collect(),
                        None => Vec::new(),
                    };
                    judge(&mut row, verdicts, judges_age && info.created.is_none());
                }
                Some(Fact::Unknown { reason }) => {
                    row.unknown = Some(reason.clone());
                    unobserved.push(Unobserved {
                        subject: format!("{repo}@{digest}"),
                        reason: reason.clone(),
                    });
                }
                None => {
                    row.unknown = Some("image details not read".into());
                    unobserved.push(Unobserved {
                        subject: format!("{repo}@{digest}"),
                        reason: "image details not read".into(),
                    });
                }
            }
            rows.push(row);
        }
    }

    let addrs = Addresses::from_policy(desired);
    let host_violations = crate::plan::policy::host_violations(desired, observed, now);
    for name in desired.hosts.keys() {
        match observed.hosts.get(name) {
            Some(Fact::Known(state)) => {
                rows.extend(host_rows(
                    name,
                    state,
                    &addrs,
                    &host_violations,
                    observed,
                    Judging {
                        owner_label: &owner_label,
                        judges_age,
                    },
                    now,
                ));
            }
            Some(Fact::Unknown { reason }) => unobserved.push(Unobserved {
                subject: format!("host:{name}"),
                reason: reason.clone(),
            }),
            None => unobserved.push(Unobserved {
                subject: format!("host:{name}"),
                reason: "not read".into(),
            }),
        }
    }

    Inventory {
        format_version: FORMAT_VERSION,
        generated: now.to_rfc3339(),
        complete: unobserved.is_empty(),
        summary: summarize(&rows),
        unobserved,
        images: rows,
    }
}

/// Facts an image's registry copy tells: platforms, base, owner, source,
/// referrers and the latest scan report.
fn fill_from_registry(
    row: &mut Row,
    repo: &RepoAddr,
    info: &ImageInfo,
    observed: &Observed,
    owner_label: &str,
) {
    row.platforms = Some(info.platforms.clone());
    row.base_image = info.base_name.clone();
    row.owner = row.owner.take().or_else(|| {
        info.labels
            .get(owner_label)
            .or_else(|| info.labels.get(AUTHORS))
            .cloned()
    });
    row.source = row
        .source
        .take()
        .or_else(|| info.labels.get(SOURCE).cloned());
    let mut counts = ReferrerCounts::default();
    for r in &info.referrers {
        match referrer_kind(&r.artifact_type) {
            ReferrerKind::Sbom => counts.sbom += 1,
            ReferrerKind::Signature => counts.signature += 1,
            ReferrerKind::Scan => counts.scan += 1,
            ReferrerKind::Other => counts.other += 1,
        }
    }
    row.referrers = Some(counts);
    row.scan = latest_scan(repo, info, observed);
}

/// The worst severity of the newest scan report attached (by the time the
/// report gives, else its referrer's `created` annotation). Findings without
/// a severity count as critical, as in the gates.
/// Seconds since `t`; a time in the future (clock skew, or a made-up date)
/// is age 0 in every format, as the text and CSV views show it.
fn age_secs(now: Timestamp, t: Timestamp) -> i64 {
    now.0.saturating_sub(t.0).max(0)
}

fn latest_scan(repo: &RepoAddr, info: &ImageInfo, observed: &Observed) -> Scan {
    let scans: Vec<&Digest> = info
        .referrers
        .iter()
        .filter(|r| referrer_kind(&r.artifact_type) == ReferrerKind::Scan)
        .map(|r| &r.digest)
        .collect();
    if scans.is_empty() {
        return Scan::no_report();
    }
    let mut unreadable = Vec::new();
    let mut readable: Vec<(Option<Timestamp>, &Vec<crate::scan::Report>)> = Vec::new();
    for d in scans {
        match observed.reports.get(&(repo.clone(), d.clone())) {
            Some(Fact::Known(reports)) => {
                readable.push((reports.iter().filter_map(|r| r.created).max(), reports));
            }
            Some(Fact::Unknown { reason }) => unreadable.push(reason.clone()),
            None => unreadable.push(format!("report {} not read", d.short())),
        }
    }
    let Some((created, reports, worst)) = newest_reports(&readable) else {
        return Scan::unknown(unreadable.join("; "));
    };
    // A report that cannot be read may be the newest, or the one with the
    // finding: what the others say is not the verdict (never shown as clean).
    if !unreadable.is_empty() {
        return Scan::unknown(format!(
            "unreadable: {}; the readable reports alone are not the verdict",
            unreadable.join("; ")
        ));
    }
    let findings: Vec<&crate::scan::Finding> = reports.iter().flat_map(|r| &r.findings).collect();
    let mut tools: Vec<String> = reports.iter().map(|r| r.tool.clone()).collect();
    tools.sort();
    tools.dedup();
    Scan {
        status: ScanStatus::Scanned,
        worst_severity: Some(
            worst
                .map(crate::scan::severity_name)
                .unwrap_or("none")
                .to_string(),
        ),
        findings: Some(findings.len()),
        tools,
        created: created.map(|c| c.to_rfc3339()),
        reason: None,
    }
}

type Reports<'a> = (Option<Timestamp>, &'a Vec<crate::scan::Report>);

/// The newest of an image's readable scan reports, with its worst severity.
/// Reports with no time or the same time cannot be ordered: of those tied
/// newest, the worst stands, so the verdict does not hang on push order and
/// a tied report's finding is never hidden behind a clean one.
fn newest_reports<'a>(
    readable: &[Reports<'a>],
) -> Option<(
    Option<Timestamp>,
    &'a Vec<crate::scan::Report>,
    Option<Severity>,
)> {
    let newest = readable.iter().map(|(c, _)| *c).max()?;
    readable
        .iter()
        .filter(|(c, _)| *c == newest)
        .map(|&(c, reports)| {
            let worst = reports
                .iter()
                .flat_map(|r| &r.findings)
                .map(|f| f.severity.unwrap_or(Severity::Critical))
                .max();
            let count: usize = reports.iter().map(|r| r.findings.len()).sum();
            (c, reports, worst, count)
        })
        .max_by_key(|&(_, _, worst, count)| (worst, count))
        .map(|(c, reports, worst, _)| (c, reports, worst))
}

/// What a host row is read and judged by.
#[derive(Clone, Copy)]
struct Judging<'a> {
    owner_label: &'a str,
    /// `max_age` is set: an image of unknown age is then not judged.
    judges_age: bool,
}

fn host_rows(
    name: &str,
    state: &HostState,
    addrs: &Addresses,
    violations: &[crate::plan::policy::HostViolation],
    observed: &Observed,
    judging: Judging<'_>,
    now: Timestamp,
) -> Vec<Row> {
    let Judging {
        owner_label,
        judges_age,
    } = judging;
    let mut rows = Vec::new();
    for img in &state.images {
        let tags = img
            .tags
            .iter()
            .map(|t| {
                addrs
                    .from_engine(t)
                    .map(|a| a.to_string())
                    .unwrap_or(t.clone())
            })
            .collect();
        let containers = state
            .users(img)
            .map(|c| ContainerUse {
                name: c.name.clone(),
                running: c.running,
                started: c.started.map(|s| s.to_rfc3339()),
                running_for_seconds: c.started.filter(|_| c.running).map(|s| age_secs(now, s)),
            })
            .collect();
        let mut verdicts: Vec<Verdict> = violations
            .iter()
            .filter(|v| v.host == name)
            .filter(|v| v.image_id.as_deref().is_some_and(|i| same_id(i, &img.id)))
            .map(|v| Verdict {
                policy: v.violation.policy.clone(),
                kind: v.violation.kind.clone(),
                message: match &v.container {
                    Some(c) => format!("container {}: {}", c.name, v.violation.message),
                    None => v.violation.message.clone(),
                },
            })
            .collect();
        verdicts.dedup();
        let mut row = Row {
            location: format!("host:{name}"),
            kind: LocationKind::Host,
            tags,
            digest: img.id.clone(),
            repo_digests: Some(img.repo_digests.clone()),
            created: img.created.map(|c| c.to_rfc3339()),
            age_seconds: img.created.map(|c| age_secs(now, c)),
            size: Some(img.size),
            platforms: None,
            base_image: img
                .labels
                .get(crate::observe::BASE_NAME)
                .and_then(|b| crate::observe::named(b)),
            owner: img
                .labels
                .get(owner_label)
                .or_else(|| img.labels.get(AUTHORS))
                .cloned(),
            source: img.labels.get(SOURCE).cloned(),
            referrers: None,
            scan: Scan::unknown("not pulled from a read policy registry"),
            verdicts: None,
            containers: Some(containers),
            unknown: None,
        };
        judge(&mut row, verdicts, judges_age && img.created.is_none());
        // What the registry copy it was pulled as says (referrers, scans).
        let registry_copy = img.repo_digests.iter().find_map(|n| {
            let (repo, d) = addrs.repo_digest(n)?;
            match observed.image(&repo, &d)? {
                Fact::Known(info) => Some((repo, info)),
                Fact::Unknown { .. } => None,
            }
        });
        if let Some((repo, info)) = registry_copy {
            let base = row.base_image.take();
            fill_from_registry(&mut row, &repo, info, observed, owner_label);
            row.base_image = base.or(row.base_image.take());
        }
        rows.push(row);
    }
    rows
}

/// Why `max_age` could not judge an image.
const AGE_UNKNOWN: &str =
    "creation time unknown (none given, or a reproducible build's placeholder before 2013): max_age not judged";

/// Sets a row's verdicts. An image `max_age` cannot judge (its age unknown)
/// and nothing else found broken is not judged (`null`), never `ok`.
fn judge(row: &mut Row, verdicts: Vec<Verdict>, age_unknown: bool) {
    if age_unknown {
        row.unknown = Some(match row.unknown.take() {
            Some(u) => format!("{u}; {AGE_UNKNOWN}"),
            None => AGE_UNKNOWN.to_string(),
        });
    }
    row.verdicts = (!age_unknown || !verdicts.is_empty()).then_some(verdicts);
}

fn summarize(rows: &[Row]) -> Summary {
    let mut locations: BTreeMap<(LocationKind, String), (usize, usize)> = BTreeMap::new();
    for r in rows {
        let loc = match r.kind {
            LocationKind::Host => r.location.clone(),
            LocationKind::Registry => r
                .location
                .split_once('/')
                .map(|(reg, _)| reg.to_string())
                .unwrap_or(r.location.clone()),
        };
        let e = locations.entry((r.kind, loc)).or_default();
        e.0 += 1;
        e.1 += usize::from(violating(r));
    }
    let mut hist: Vec<AgeBucket> = BUCKETS
        .iter()
        .map(|(b, _)| AgeBucket {
            bucket: b,
            count: 0,
        })
        .chain(std::iter::once(AgeBucket {
            bucket: "unknown",
            count: 0,
        }))
        .collect();
    for r in rows {
        let i = match r.age_seconds {
            Some(a) => BUCKETS
                .iter()
                .position(|(_, max)| a < *max)
                .unwrap_or(BUCKETS.len() - 1),
            None => BUCKETS.len(),
        };
        if let Some(b) = hist.get_mut(i) {
            b.count += 1;
        }
    }
    Summary {
        images: rows.len(),
        violating: rows.iter().filter(|r| violating(r)).count(),
        not_judged: rows.iter().filter(|r| r.verdicts.is_none()).count(),
        locations: locations
            .into_iter()
            .map(|((kind, location), (images, violating))| LocationCount {
                location,
                kind,
                images,
                violating,
            })
            .collect(),
        age_histogram: hist,
    }
}

pub fn violating(r: &Row) -> bool {
    r.verdicts.as_ref().is_some_and(|v| !v.is_empty())
}

/// The JSON form (pretty, trailing newline).
pub fn render_json(inv: &Inventory) -> String {
    match serde_json::to_string_pretty(inv) {
        Ok(s) => s + "\n",
        // Only plain data above; serialization cannot fail, but say so if it does.
        Err(e) => format!("{{\"error\": \"{e}\"}}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{ReferrerInfo, RepoState};

    const NOW: Timestamp = Timestamp(1_800_000_000);

    fn desired() -> Desired {
        let text = "registries:\n  prod: {url: \"http://127.0.0.1:1\"}\n\
                    retention:\n  - name: r\n    repos: [prod/a, prod/b]\n    delete: {older_than: 3650d}\n\
                    policies:\n  max_age: 30d\n";
        crate::config::load_texts(
            std::path::Path::new("/"),
            &[(std::sync::Arc::from("p.yaml"), text.to_string())],
        )
        .unwrap()
    }

    fn digest(n: u8) -> Digest {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
            .parse()
            .unwrap()
    }

    #[test]
    fn unknown_facts_stay_unknown() {
        let d = desired();
        let a: RepoAddr = "prod/a".parse().unwrap();
        let b: RepoAddr = "prod/b".parse().unwrap();
        let mut o = Observed::default();
        let mut state = RepoState::default();
        state.tags.insert("1".parse().unwrap(), digest(1));
        state.tags.insert("2".parse().unwrap(), digest(2));
        o.repos.insert(a.clone(), Fact::Known(state));
        o.repos.insert(
            b.clone(),
            Fact::Unknown {
                reason: "503".into(),
            },
        );
        o.images.insert(
            (a.clone(), digest(1)),
            Fact::Unknown {
                reason: "timeout".into(),
            },
        );
        o.images.insert(
            (a.clone(), digest(2)),
            Fact::Known(ImageInfo {
                created: Some(Timestamp(NOW.0 - 40 * 86_400)),
                referrers: vec![
                    ReferrerInfo {
                        digest: digest(9),
                        artifact_type: "application/sarif+json".into(),
                    },
                    ReferrerInfo {
                        digest: digest(8),
                        artifact_type: "application/sarif+json".into(),
                    },
                ],
                ..Default::default()
            }),
        );
        o.reports.insert(
            (a.clone(), digest(9)),
            Fact::Unknown {
                reason: "report 9 is gone".into(),
            },
        );
        // A readable, clean report beside it does not make the image clean.
        o.reports.insert(
            (a.clone(), digest(8)),
            Fact::Known(vec![crate::scan::Report {
                tool: "trivy".into(),
                created: Some(NOW),
                findings: Vec::new(),
            }]),
        );
        let inv = build(&d, &o, NOW);
        assert!(!inv.complete);
        let subjects: Vec<&str> = inv.unobserved.iter().map(|u| u.subject.as_str()).collect();
        assert_eq!(
            subjects,
            [format!("prod/a@{}", digest(1)).as_str(), "prod/b"]
        );

        let unread = &inv.images[0];
        assert_eq!(unread.tags, ["1"]);
        assert_eq!(unread.verdicts, None, "not judged is not clean");
        assert_eq!(unread.referrers, None);
        assert_eq!(unread.scan.status, ScanStatus::Unknown);
        assert_eq!(unread.unknown.as_deref(), Some("timeout"));
        assert_eq!(verdict_words(&unread.verdicts), "unknown");

        let read = &inv.images[1];
        assert_eq!(read.scan.status, ScanStatus::Unknown, "unreadable report");
        assert_eq!(read.scan.word(), "unknown");
        assert_eq!(read.owner, None);
        assert_eq!(read.verdicts.as_ref().map(Vec::len), Some(1));
        assert_eq!(inv.summary.violating, 1);
        let hist: Vec<(&str, usize)> = inv
            .summary
            .age_histogram
            .iter()
            .map(|b| (b.bucket, b.count))
            .filter(|(_, n)| *n > 0)
            .collect();
        assert_eq!(hist, [("30-90d", 1), ("unknown", 1)]);

        let csv = render_csv(&inv);
        assert!(
            csv.contains(
                ",unknown,unknown,unknown,unknown,unknown,unknown,unknown,unknown,unknown,unknown,"
            ),
            "{csv}"
        );
        let html = render_html(&inv);
        assert!(html.contains("Incomplete") && html.contains("prod/b"));
    }

    #[test]
    fn an_image_of_unknown_age_is_not_judged_by_max_age() {
        let text = "registries:\n  prod: {url: \"http://127.0.0.1:1\"}\n\
                    hosts:\n  h1:\n    endpoint: unix:///run/docker.sock\n\
                    retention:\n  - name: r\n    repos: [prod/a]\n    delete: {older_than: 3650d}\n\
                    policies:\n  max_age: 30d\n";
        let d = crate::config::load_texts(
            std::path::Path::new("/"),
            &[(std::sync::Arc::from("p.yaml"), text.to_string())],
        )
        .unwrap();
        let a: RepoAddr = "prod/a".parse().unwrap();
        let mut o = Observed::default();
        let mut state = RepoState::default();
        state.tags.insert("nix".parse().unwrap(), digest(1));
        state.tags.insert("new".parse().unwrap(), digest(2));
        o.repos.insert(a.clone(), Fact::Known(state));
        // No `created` (or a placeholder, which observe makes `None`).
        o.images
            .insert((a.clone(), digest(1)), Fact::Known(ImageInfo::default()));
        o.images.insert(
            (a.clone(), digest(2)),
            Fact::Known(ImageInfo {
                created: Some(NOW),
                ..Default::default()
            }),
        );
        o.hosts.insert(
            "h1".into(),
            Fact::Known(HostState {
                images: vec![crate::observe::HostImage {
                    id: format!("sha256:{}", "c".repeat(64)),
                    tags: vec!["jib/app:1".into()],
                    ..Default::default()
                }],
                containers: Vec::new(),
            }),
        );
        let inv = build(&d, &o, NOW);
        let row = |tag: &str| inv.images.iter().find(|r| r.tags[0] == tag).unwrap();
        assert_eq!(row("new").verdicts, Some(Vec::new()));
        for unknown in ["nix", "jib/app:1"] {
            let r = row(unknown);
            assert_eq!(r.verdicts, None, "{unknown}: not judged is not clean");
            assert_eq!(verdict_words(&r.verdicts), "unknown");
            assert!(r.unknown.as_deref().unwrap().contains("max_age not judged"));
        }
        assert_eq!((inv.summary.violating, inv.summary.not_judged), (0, 2));
        let json: serde_json::Value = serde_json::from_str(&render_json(&inv)).unwrap();
        assert_eq!(json["summary"]["not_judged"], 2);
        assert!(render_text(&inv).contains("0 violating, 2 not judged"));
        assert!(render_html(&inv).contains("2 not judged"));
        let csv = render_csv(&inv);
        let nix = csv.lines().find(|l| l.contains(",nix,")).unwrap();
        assert!(nix.contains(",unknown,"), "{nix}");
    }

    #[test]
    fn a_future_creation_time_is_age_zero_everywhere() {
        assert_eq!(age_secs(NOW, Timestamp(NOW.0 + 86_400)), 0);
        assert_eq!(age_secs(NOW, Timestamp(NOW.0 - 100)), 100);
    }

    #[test]
    fn tied_newest_scan_reports_give_the_worst_verdict() {
        use crate::scan::{Finding, Report};
        let report = |created: Option<Timestamp>, severity: Option<Severity>| {
            vec![Report {
                tool: "trivy".into(),
                created,
                findings: severity
                    .map(|s| Finding {
                        id: "CVE-2026-1".into(),
                        severity: Some(s),
                        fixed: None,
                        package: "p".into(),
                    })
                    .into_iter()
                    .collect(),
            }]
        };
        let critical = report(None, Some(Severity::Critical));
        let clean = report(None, None);
        // No times: whichever order they were pushed in, the finding shows.
        for order in [[&critical, &clean], [&clean, &critical]] {
            let readable: Vec<Reports<'_>> = order.iter().map(|r| (None, *r)).collect();
            let (_, _, worst) = newest_reports(&readable).unwrap();
            assert_eq!(worst, Some(Severity::Critical));
        }
        // Equal times alike.
        let high = report(Some(NOW), Some(Severity::High));
        let clean_now = report(Some(NOW), None);
        for order in [[&high, &clean_now], [&clean_now, &high]] {
            let readable: Vec<Reports<'_>> = order.iter().map(|r| (Some(NOW), *r)).collect();
            let (_, _, worst) = newest_reports(&readable).unwrap();
            assert_eq!(worst, Some(Severity::High));
        }
        // A newer clean report still supersedes an older finding.
        let older = report(Some(Timestamp(NOW.0 - 10)), Some(Severity::Critical));
        let readable: Vec<Reports<'_>> = vec![(Some(NOW), &clean_now), (older[0].created, &older)];
        let (created, _, worst) = newest_reports(&readable).unwrap();
        assert_eq!((created, worst), (Some(NOW), None));
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(2_912), "2.9 kB");
        assert_eq!(human_size(2_004_768), "2.0 MB");
    }
}
