//! The text table: one line per image per location, then what could not be
//! read, then a summary line.

use super::{container_words, human_size, platform_words, provenance_words, Inventory, Row};
use crate::model::{Digest, Duration};

const COLUMNS: [&str; 13] = [
    "LOCATION",
    "TAGS",
    "DIGEST",
    "AGE",
    "SIZE",
    "PLATFORMS",
    "BASE",
    "OWNER",
    "SOURCE",
    "REFERRERS",
    "SCAN",
    "VERDICTS",
    "CONTAINERS",
];

/// A digest as the plan shows it (`sha256:` and 12 hex digits).
fn short(d: &str) -> String {
    d.parse::<Digest>()
        .map(|d| d.short())
        .unwrap_or_else(|_| d.to_string())
}

/// Tags a row shows before `+N more`.
const SHOWN_TAGS: usize = 3;
/// The widest a cell other than the location gets: every row is padded to
/// the widest cell, so one image with thousands of tags (or a long label)
/// would make every line that wide. JSON and CSV keep the full values.
const MAX_CELL: usize = 60;

fn tag_words(tags: &[String]) -> String {
    match tags.len() {
        0 => "<none>".into(),
        n if n <= SHOWN_TAGS => tags.join(","),
        n => format!("{},+{} more", tags[..SHOWN_TAGS].join(","), n - SHOWN_TAGS),
    }
}

/// `s`, cut to [`MAX_CELL`] characters with `…` when longer.
fn capped(s: String) -> String {
    if s.chars().count() <= MAX_CELL {
        return s;
    }
    let mut cut: String = s.chars().take(MAX_CELL - 1).collect();
    cut.push('…');
    cut
}

fn cells(r: &Row) -> [String; 13] {
    let mut c = full_cells(r);
    for cell in c.iter_mut().skip(1) {
        *cell = capped(std::mem::take(cell));
    }
    c
}

fn full_cells(r: &Row) -> [String; 13] {
    let [base, owner, source, referrers, scan, verdicts] = provenance_words(r);
    [
        r.location.clone(),
        tag_words(&r.tags),
        short(&r.digest),
        r.age_seconds
            .map(Duration::human)
            .unwrap_or_else(|| "unknown".into()),
        r.size.map(human_size).unwrap_or_else(|| "unknown".into()),
        platform_words(r, ","),
        base,
        owner,
        source,
        referrers,
        scan,
        verdicts,
        r.containers
            .as_deref()
            .map(container_words)
            .unwrap_or_else(|| "-".into()),
    ]
}

pub fn render(inv: &Inventory) -> String {
    let rows: Vec<[String; 13]> = inv.images.iter().map(cells).collect();
    let mut widths = COLUMNS.map(|c| c.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(widths.iter()).enumerate() {
            l.push_str(c);
            if i + 1 < cells.len() {
                l.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&COLUMNS.map(String::from));
    for r in &rows {
        line(r);
    }
    for u in &inv.unobserved {
        out.push_str(&format!("? unobserved {}: {}\n", u.subject, u.reason));
    }
    for r in inv.images.iter() {
        for v in r.verdicts.iter().flatten() {
            let subject = match (r.kind, r.tags.first()) {
                (super::LocationKind::Registry, Some(t)) => format!("{}:{t}", r.location),
                (super::LocationKind::Host, Some(t)) => format!("{}/{t}", r.location),
                // As plans name a host image without a name: by its short ID.
                (super::LocationKind::Host, None) => format!(
                    "{}/{}",
                    r.location,
                    short(&r.digest).trim_start_matches("sha256:")
                ),
                (_, None) => format!("{}@{}", r.location, short(&r.digest)),
            };
            out.push_str(&format!("! {} {subject}: {}\n", v.word(), v.message));
        }
    }
    let places: Vec<String> = inv
        .summary
        .locations
        .iter()
        .map(|l| format!("{} {}", l.location, l.images))
        .collect();
    out.push_str(&format!(
        "Inventory: {} image{} ({}), {} violating{}{}.\n",
        inv.summary.images,
        if inv.summary.images == 1 { "" } else { "s" },
        if places.is_empty() {
            "nothing observed".to_string()
        } else {
            places.join(", ")
        },
        inv.summary.violating,
        if inv.summary.not_judged > 0 {
            format!(", {} not judged", inv.summary.not_judged)
        } else {
            String::new()
        },
        if inv.complete {
            ""
        } else {
            "; incomplete: some locations could not be read"
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::super::{Inventory, LocationKind, Row, Scan, Summary};

    fn row(tags: Vec<String>, owner: &str) -> Row {
        Row {
            location: "prod/team/api".into(),
            kind: LocationKind::Registry,
            tags,
            digest: format!("sha256:{}", "a".repeat(64)),
            repo_digests: None,
            created: None,
            age_seconds: Some(86_400),
            size: Some(1),
            platforms: Some(Vec::new()),
            base_image: None,
            owner: Some(owner.into()),
            source: None,
            referrers: None,
            scan: Scan::no_report(),
            verdicts: Some(Vec::new()),
            containers: None,
            unknown: None,
        }
    }

    #[test]
    fn many_tags_and_long_labels_do_not_widen_every_line() {
        let many: Vec<String> = (0..5_000).map(|i| format!("build-{i:05}")).collect();
        let inv = Inventory {
            format_version: super::super::FORMAT_VERSION,
            generated: "2026-01-01T00:00:00Z".into(),
            complete: true,
            summary: Summary {
                images: 3,
                violating: 0,
                not_judged: 0,
                locations: Vec::new(),
                age_histogram: Vec::new(),
            },
            unobserved: Vec::new(),
            images: vec![
                row(many, "a"),
                row(vec!["1".into()], &"x".repeat(10_000)),
                row(vec!["1".into(), "2".into()], "b"),
            ],
        };
        let text = super::render(&inv);
        assert!(text.len() < 2_000, "{} bytes", text.len());
        assert!(
            text.contains("build-00000,build-00001,build-00002,+4997 more"),
            "{text}"
        );
        assert!(text.contains(&format!("{}…", "x".repeat(59))), "{text}");
        assert!(text.contains("1,2 "), "{text}");
    }
}
