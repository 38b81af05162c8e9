//! CSV: a header, then one row per image per location (RFC 4180: CRLF line
//! ends, fields quoted when they hold a comma, quote or line break). Lists
//! are joined with spaces; unknown facts are the word `unknown`; a repo or
//! host that could not be read is a last row of kind `unobserved`.

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
            match (&r.verdicts, &r.unknown) {
                (Some(v), _) => v
                    .iter()
                    .map(|v| format!("{}: {}", v.word(), v.message))
                    .collect::<Vec<_>>()
                    .join("; "),
                (None, Some(why)) => format!("unknown: {why}"),
                (None, None) => "unknown".into(),
            },
            match &r.containers {
                Some(c) => container_words(c),
                None => String::new(),
            },
        ];
        let line: Vec<String> = cells.iter().map(|c| field(c)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    // A CSV has no header block to say it is incomplete: a repo or host that
    // could not be read is a row of kind `unobserved`, with the reason in
    // `violations`, so a spreadsheet sorted or filtered by kind shows it.
    // (An image whose details are unknown is already a row of `unknown`s.)
    for u in &inv.unobserved {
        let has_row = |r: &super::Row| format!("{}@{}", r.location, r.digest) == u.subject;
        if inv.images.iter().any(has_row) {
            continue;
        }
        let mut cells: Vec<String> = vec![u.subject.clone(), "unobserved".into()];
        cells.extend(["", ""].map(String::from));
        cells.extend(std::iter::repeat_n("unknown".to_string(), 10));
        cells.push(format!("unobserved: {}", u.reason));
        cells.push(String::new());
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
    fn unread_locations_are_rows_of_kind_unobserved() {
        use super::super::{Inventory, Summary, Unobserved};
        let inv = Inventory {
            format_version: super::super::FORMAT_VERSION,
            generated: "2026-01-01T00:00:00Z".into(),
            complete: false,
            summary: Summary {
                images: 0,
                violating: 0,
                not_judged: 0,
                locations: Vec::new(),
                age_histogram: Vec::new(),
            },
            unobserved: vec![
                Unobserved {
                    subject: "prod/b".into(),
                    reason: "503, try later".into(),
                },
                Unobserved {
                    subject: "host:gone".into(),
                    reason: "cannot connect".into(),
                },
            ],
            images: Vec::new(),
        };
        let csv = super::render(&inv);
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(
            lines[1],
            "prod/b,unobserved,,,unknown,unknown,unknown,unknown,unknown,unknown,unknown,unknown,unknown,unknown,\"unobserved: 503, try later\","
        );
        assert!(lines[2].starts_with("host:gone,unobserved,"), "{csv}");
        // As many cells as the header (no quoted comma in this one).
        assert_eq!(lines[2].matches(',').count(), super::HEADER.len() - 1);
    }

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
