//! CSV: a header, then one row per image per location (RFC 4180: CRLF line
//! ends, fields quoted when they hold a comma, quote or line break). Lists
//! are joined with spaces; unknown facts are the word `unknown`.

use super::{container_words, opt_word, platform_words, provenance_words, Inventory, LocationKind};

pub const HEADER: [&str; 16] = [
    "location",
    "kind",
    "tags",
    "digest",
    "created",
    "age_days",
    "size_bytes",
    "platforms",
    "base_image",
    "owner",
    "source",
    "referrers",
    "worst_severity",
    "verdicts",
    "violations",
    "containers",
];

fn field(s: &str) -> String {
    // Image labels are written by whoever pushed the image: a cell that a
    // spreadsheet would run as a formula is defused with a leading `'`
    // (OWASP's advice for CSV injection). A lone `-` stays as it is.
    let defused;
    let s = if s.len() > 1 && s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        defused = format!("'{s}");
        defused.as_str()
    } else {
        s
    };
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn render(inv: &Inventory) -> String {
    let mut out = String::new();
    out.push_str(&HEADER.join(","));
    out.push_str("\r\n");
    for r in &inv.images {
        let [base, owner, source, referrers, scan, verdicts] = provenance_words(r);
        let cells = [
            r.location.clone(),
            match r.kind {
                LocationKind::Registry => "registry".into(),
                LocationKind::Host => "host".into(),
            },
            r.tags.join(" "),
            r.digest.clone(),
            opt_word(&r.created),
            opt_word(&r.age_seconds.map(|a| a.max(0) / 86_400)),
            opt_word(&r.size),
            platform_words(r, " "),
            base,
            owner,
            source,
            referrers,
            scan,
            verdicts,
            r.verdicts
                .as_ref()
                .map(|v| {
                    v.iter()
                        .map(|v| format!("{}: {}", v.word(), v.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_else(|| "unknown".into()),
            match &r.containers {
                Some(c) => container_words(c),
                None => String::new(),
            },
        ];
        let line: Vec<String> = cells.iter().map(|c| field(c)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn fields_are_quoted_per_rfc_4180() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn formulas_from_image_labels_are_defused() {
        assert_eq!(
            field("=HYPERLINK(\"http://x\")"),
            "\"'=HYPERLINK(\"\"http://x\"\")\""
        );
        assert_eq!(field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(field("-"), "-");
        assert_eq!(field("team-a"), "team-a");
    }
}
