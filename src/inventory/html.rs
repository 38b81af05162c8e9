//! A single-file HTML report that opens offline: inline CSS, no scripts, no
//! external resources. Summary (counts per registry and host, an age
//! histogram, violations), then the full table.

use super::{
    container_words, human_size, opt_word, verdict_words, violating, Inventory, LocationKind,
};
use crate::model::Duration;

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d2330;background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px} h2{font-size:16px;margin:0 0 10px}
.meta{color:#5b6475;margin-bottom:18px}
.warn{background:#fff4d6;border:1px solid #e6c25a;padding:8px 12px;border-radius:6px;margin-bottom:16px}
.grid{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:16px;margin-bottom:20px}
.card{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:14px 16px}
.big{font-size:28px;font-weight:600}
table{border-collapse:collapse;width:100%;background:#fff}
#images{font-size:12.5px}
th,td{text-align:left;padding:5px 7px;border-bottom:1px solid #e6e9ef;vertical-align:top}
td{overflow-wrap:anywhere} td.nw,.pill{white-space:nowrap}
th{background:#eef1f5;font-weight:600;position:sticky;top:0}
td.mono,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
.bar{display:flex;align-items:center;gap:8px;margin:3px 0}
.bar .l{width:64px;color:#5b6475} .bar .b{background:#4c78c8;height:14px;border-radius:3px}
.bar .n{color:#5b6475;font-size:12px}
.sev-critical{background:#b3261e;color:#fff} .sev-high{background:#e8710a;color:#fff}
.sev-medium{background:#f2c14e} .sev-low{background:#cde4ff} .sev-negligible,.sev-none{background:#dcefdc}
.sev-unknown,.unk{background:#e4e4e4;color:#555}
.pill{display:inline-block;padding:0 6px;border-radius:9px;font-size:12px}
.ok{color:#1e7a34} .bad{color:#b3261e;font-weight:600}
tr.violating td:first-child{border-left:3px solid #b3261e}
ul.v{margin:0;padding-left:18px} ul.v li{margin:2px 0}
"#;

fn unk(s: String) -> String {
    if s == "unknown" {
        "<span class=\"pill unk\">unknown</span>".into()
    } else {
        esc(&s)
    }
}

pub fn render(inv: &Inventory) -> String {
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<title>regimen inventory</title><style>");
    h.push_str(STYLE);
    h.push_str("</style></head><body>\n");
    h.push_str("<h1>regimen inventory</h1>\n");
    h.push_str(&format!(
        "<div class=\"meta\">generated {} · {} image{} · {} violating{}</div>\n",
        esc(&inv.generated),
        inv.summary.images,
        if inv.summary.images == 1 { "" } else { "s" },
        inv.summary.violating,
        if inv.summary.not_judged > 0 {
            format!(" · {} not judged", inv.summary.not_judged)
        } else {
            String::new()
        }
    ));
    if !inv.complete {
        h.push_str("<div class=\"warn\" id=\"unobserved\"><b>Incomplete:</b> not everything could be read.<ul class=\"v\">");
        for u in &inv.unobserved {
            h.push_str(&format!(
                "<li><span class=\"mono\">{}</span>: {}</li>",
                esc(&u.subject),
                esc(&u.reason)
            ));
        }
        h.push_str("</ul></div>\n");
    }

    // Summary: locations, age histogram, violations.
    h.push_str(
        "<section id=\"summary\" class=\"grid\">\n<div class=\"card\"><h2>Locations</h2><table>",
    );
    h.push_str("<tr><th>location</th><th>kind</th><th>images</th><th>violating</th></tr>");
    for l in &inv.summary.locations {
        h.push_str(&format!(
            "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            esc(&l.location),
            match l.kind {
                LocationKind::Registry => "registry",
                LocationKind::Host => "host",
            },
            l.images,
            if l.violating > 0 { "bad" } else { "ok" },
            l.violating
        ));
    }
    h.push_str("</table></div>\n<div class=\"card\"><h2>Age</h2>");
    let max = inv
        .summary
        .age_histogram
        .iter()
        .map(|b| b.count)
        .max()
        .unwrap_or(0)
        .max(1);
    for b in &inv.summary.age_histogram {
        h.push_str(&format!(
            "<div class=\"bar\"><span class=\"l\">{}</span><span class=\"b\" style=\"width:{}px\"></span><span class=\"n\">{}</span></div>",
            esc(b.bucket),
            b.count * 220 / max,
            b.count
        ));
    }
    h.push_str("</div>\n<div class=\"card\" id=\"violations\"><h2>Violations</h2>");
    let violations: Vec<String> = inv
        .images
        .iter()
        .flat_map(|r| {
            r.verdicts.iter().flatten().map(move |v| {
                format!(
                    "<li><b>{}</b> <span class=\"mono\">{}{}</span>: {}</li>",
                    esc(&v.word()),
                    esc(&r.location),
                    esc(&r.tags.first().map(|t| format!(" {t}")).unwrap_or_default()),
                    esc(&v.message)
                )
            })
        })
        .collect();
    if violations.is_empty() {
        h.push_str("<p class=\"ok\">None.</p>");
    } else {
        h.push_str("<ul class=\"v\">");
        h.push_str(&violations.concat());
        h.push_str("</ul>");
    }
    h.push_str("</div>\n</section>\n");

    // The table.
    h.push_str("<table id=\"images\"><thead><tr>");
    for c in [
        "location",
        "tags",
        "digest",
        "age",
        "size",
        "platforms",
        "base image",
        "owner",
        "source",
        "referrers",
        "scan",
        "verdicts",
        "containers",
    ] {
        h.push_str(&format!("<th>{c}</th>"));
    }
    h.push_str("</tr></thead><tbody>\n");
    for r in &inv.images {
        let sev = r.scan.word();
        let sev_class = match sev.as_str() {
            "no report" | "unknown" => "sev-unknown".to_string(),
            s => format!("sev-{s}"),
        };
        h.push_str(&format!(
            "<tr class=\"{}\"><td class=\"mono nw\">{}</td><td class=\"mono nw\">{}</td><td class=\"mono nw\" title=\"{}\">{}</td><td class=\"nw\">{}</td><td class=\"nw\">{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td><td><span class=\"pill {}\">{}</span></td><td class=\"{}\">{}</td><td>{}</td></tr>\n",
            if violating(r) { "violating" } else { "" },
            esc(&r.location),
            r.tags.iter().map(|t| esc(t)).collect::<Vec<_>>().join("<br>"),
            esc(&r.digest),
            esc(r.digest.get(..19).unwrap_or(&r.digest)),
            unk(r.age_seconds.map(Duration::human).unwrap_or_else(|| "unknown".into())),
            unk(r.size.map(human_size).unwrap_or_else(|| "unknown".into())),
            unk(match &r.platforms {
                Some(p) if p.is_empty() => "single".into(),
                Some(p) => p.join(" "),
                None => "unknown".into(),
            }),
            unk(opt_word(&r.base_image)),
            unk(opt_word(&r.owner)),
            unk(opt_word(&r.source)),
            unk(r.referrers.as_ref().map(|c| c.words()).unwrap_or_else(|| "unknown".into())),
            sev_class,
            esc(&sev),
            if violating(r) { "bad" } else if r.verdicts.is_some() { "ok" } else { "" },
            match &r.verdicts {
                // One broken policy per line.
                Some(v) if !v.is_empty() => v
                    .iter()
                    .map(|v| esc(&v.word()).replace('(', "<wbr>("))
                    .collect::<Vec<_>>()
                    .join("<br>"),
                _ => unk(verdict_words(&r.verdicts)),
            },
            esc(&r.containers.as_deref().map(container_words).unwrap_or_else(|| "-".into())),
        ));
    }
    h.push_str("</tbody></table>\n</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            super::esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
