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

fn cells(r: &Row) -> [String; 13] {
    let [base, owner, source, referrers, scan, verdicts] = provenance_words(r);
    [
        r.location.clone(),
        if r.tags.is_empty() {
            "<none>".into()
        } else {
            r.tags.join(",")
        },
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
