//! The plan as a pull-request comment: summary first, then one collapsible
//! block per rule with a `diff` listing, blocked items and violations as
//! tables, and what could not be observed as a list.

use super::{
    groups, is_quiet, no_changes, no_changes_incomplete, pad, summary_line, widths, Line, GAP,
    INCOMPLETE,
};
use crate::plan::Plan;

/// What the plan's comment may take: GitHub refuses comments over 65,536
/// characters, and a `--base` section goes before the plan.
pub const COMMENT_BUDGET: usize = 56_000;

/// Lists longer than this are collapsed in `<details>`.
const OPEN_ROWS: usize = 10;

pub(super) fn render(plan: &Plan) -> String {
    render_within(plan, COMMENT_BUDGET)
}

/// The comment within `budget` characters: every line when it fits, else
/// each list cut to fewer entries (each cut says how many are not shown)
/// until it does. The summary line is always whole.
pub(super) fn render_within(plan: &Plan, budget: usize) -> String {
    let mut out = String::new();
    for cap in [usize::MAX, 200, 50, 10, 0] {
        out = render_capped(plan, cap);
        if out.chars().count() <= budget {
            break;
        }
    }
    out
}

/// `… N more not shown`, for a list cut at `cap` entries.
fn more(n: usize, cap: usize) -> Option<String> {
    (n > cap).then(|| format!("… {} more {}", n - cap, not_shown("regimen plan")))
}

/// Why a PR comment leaves entries out, and which `command` lists them all.
pub fn not_shown(command: &str) -> String {
    format!("not shown (a PR comment's size is limited; `{command}` lists them all)")
}

fn render_capped(plan: &Plan, cap: usize) -> String {
    let mut out = String::from("### regimen plan\n\n");
    let quiet = is_quiet(plan);
    if quiet && plan.unobserved.is_empty() && plan.complete {
        out.push_str(&no_changes(plan));
        out.push_str("\n\n");
        // The per-repo retention counts are always there, changes or not.
        retention(plan, &mut out, cap);
        return finish(plan, out);
    }

    out.push_str(&format!("**{}**\n\n", summary_line(plan)));
    if !plan.complete {
        out.push_str(&format!("> **Warning:** {INCOMPLETE}\n\n"));
    }
    if quiet {
        // Something could not be read: no claim that it matches.
        out.push_str(&no_changes_incomplete(plan, "below"));
        out.push_str("\n\n");
    }

    for g in groups(plan).iter().filter(|g| !g.changes.is_empty()) {
        let n = g.changes.len();
        let count = if n == 1 {
            "1 change".to_string()
        } else {
            format!("{n} changes")
        };
        let rule = if g.rule.is_empty() {
            "(no rule)"
        } else {
            g.rule
        };
        out.push_str(&format!(
            "<details><summary>{} — {count}</summary>\n\n",
            no_mention(&html(rule))
        ));
        out.push_str("```diff\n");
        let lines: Vec<Line> = g
            .changes
            .iter()
            .map(|c| super::change_line(c, false))
            .collect();
        let w = widths(&lines);
        for l in lines.iter().take(cap) {
            out.push_str(&diff_line(l, w.word, w.subject));
        }
        if let Some(m) = more(lines.len(), cap) {
            out.push_str(&format!("  {m}\n"));
        }
        out.push_str("```\n\n</details>\n\n");
    }

    let mut blocked: Vec<&crate::plan::Blocked> = plan.blocked.iter().collect();
    blocked.sort_by(|a, b| {
        a.rule
            .cmp(&b.rule)
            .then_with(|| super::target_order(&a.subject, &b.subject))
    });
    let rows: Vec<String> = blocked
        .iter()
        .map(|b| {
            format!(
                "| {} | {} | {} |\n",
                cell(&b.rule),
                code(&b.subject),
                cell(&b.reason)
            )
        })
        .collect();
    table(
        &mut out,
        "Blocked",
        "| Rule | Subject | Reason |",
        &rows,
        cap,
    );

    let rows: Vec<String> = plan
        .violations
        .iter()
        .map(|v| {
            format!(
                "| {} | {} | {} |\n",
                code(&v.policy),
                code(&v.subject),
                cell(&v.message)
            )
        })
        .collect();
    table(
        &mut out,
        "Policy violations",
        "| Policy | Subject | Message |",
        &rows,
        cap,
    );

    retention(plan, &mut out, cap);

    if !plan.unobserved.is_empty() {
        out.push_str("#### Could not observe\n\n");
        for u in plan.unobserved.iter().take(cap) {
            out.push_str(&format!(
                "- {} — {}\n",
                inline_code(&u.subject),
                text(&one_line(&u.reason))
            ));
        }
        if let Some(m) = more(plan.unobserved.len(), cap) {
            out.push_str(&format!("- {m}\n"));
        }
        out.push('\n');
    }

    finish(plan, out)
}

/// A titled table of `rows` (at most `cap`), collapsed when long.
fn table(out: &mut String, title: &str, header: &str, rows: &[String], cap: usize) {
    if rows.is_empty() {
        return;
    }
    let collapsed = rows.len() > OPEN_ROWS;
    if collapsed {
        out.push_str(&format!(
            "<details><summary>{title} — {}</summary>\n\n",
            rows.len()
        ));
    } else {
        out.push_str(&format!("#### {title}\n\n"));
    }
    out.push_str(header);
    out.push('\n');
    out.push_str(&"|---".repeat(header.matches(" | ").count() + 1));
    out.push_str("|\n");
    for r in rows.iter().take(cap) {
        out.push_str(r);
    }
    if let Some(m) = more(rows.len(), cap) {
        out.push_str(&format!("\n{m}\n"));
    }
    out.push('\n');
    if collapsed {
        out.push_str("</details>\n\n");
    }
}

/// The footer, and one trailing newline, not a blank line.
fn finish(plan: &Plan, mut out: String) -> String {
    footer(plan, &mut out);
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// Per retention rule and repo, how many of its tags go (every repo a rule
/// covers, also those where nothing goes).
fn retention(plan: &Plan, out: &mut String, cap: usize) {
    if plan.retention.is_empty() {
        return;
    }
    out.push_str("#### Retention\n\n| Rule | Repository | Deletes |\n|---|---|---|\n");
    for r in plan.retention.iter().take(cap) {
        out.push_str(&format!(
            "| {} | {} | {} of {} tags |\n",
            cell(&r.rule),
            inline_code(&r.repo),
            r.deleting,
            r.tags
        ));
    }
    if let Some(m) = more(plan.retention.len(), cap) {
        out.push_str(&format!("\n{m}\n"));
    }
    out.push('\n');
}

fn footer(plan: &Plan, out: &mut String) {
    if let Some(rev) = plan.revision.as_deref().filter(|r| !r.is_empty()) {
        if !out.ends_with("\n\n") {
            out.push('\n');
        }
        let modified = if plan.revision_modified {
            ", with uncommitted changes to the policy"
        } else {
            ""
        };
        out.push_str(&format!(
            "<sub>Policy revision {}{modified}</sub>\n",
            html(rev)
        ));
    }
}

/// `+ copy   SUBJECT   DETAIL` at column 0 so `diff` highlighting applies.
fn diff_line(l: &Line, word_width: usize, subject_width: usize) -> String {
    let row = format!(
        "{} {} {}{GAP}{}",
        l.kind.symbol(),
        pad(l.word, word_width),
        pad(&l.subject, subject_width),
        l.detail
    );
    format!("{}\n", one_line(row.trim_end()))
}

fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// Text safe inside HTML (`<summary>`).
fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// [`text`], one line: for Markdown written elsewhere (the `--base` section).
pub fn plain_text(s: &str) -> String {
    text(&one_line(s))
}

/// Free text from rules, registries and image labels as plain text in
/// Markdown: HTML escaped, Markdown's own marks escaped (a label's
/// `[text](url)` would be a link, `*glob*` emphasis), and no mentions.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in no_mention(&html(s)).chars() {
        if matches!(c, '\\' | '`' | '*' | '_' | '[' | ']' | '~' | '#') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `@name` broken so that it mentions nobody: a mention is `@` after a
/// non-word character, and a zero-width space after it leaves
/// `image@sha256:…` as it is and `@team` unlinked.
fn no_mention(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev: Option<char> = None;
    for c in s.chars() {
        out.push(c);
        if c == '@' && !prev.is_some_and(|p| p.is_alphanumeric()) {
            out.push('\u{200B}');
        }
        prev = Some(c);
    }
    out
}

/// Longest cell text shown: one label of kilobytes must not push every
/// other row out of the comment's budget.
const CELL_CHARS: usize = 300;

/// A table cell: one line, plain text, `|` escaped, cut at [`CELL_CHARS`].
fn cell(s: &str) -> String {
    let line = one_line(s);
    let line = match line.char_indices().nth(CELL_CHARS) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line,
    };
    text(&line).replace('|', "\\|")
}

/// A table cell as inline code (plain when it holds a backtick).
fn code(s: &str) -> String {
    if s.contains('`') || s.is_empty() {
        cell(s)
    } else {
        format!("`{}`", one_line(s).replace('|', "\\|"))
    }
}

/// Inline code outside tables (plain when it holds a backtick).
fn inline_code(s: &str) -> String {
    if s.contains('`') || s.is_empty() {
        html(&one_line(s))
    } else {
        format!("`{}`", one_line(s))
    }
}
