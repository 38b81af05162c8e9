//! The plan as a pull-request comment: summary first, then one collapsible
//! block per rule with a `diff` listing, blocked items and violations as
//! tables, and what could not be observed as a list.

use super::{
    groups, is_quiet, no_changes, no_changes_incomplete, pad, summary_line, widths, Line, GAP,
    INCOMPLETE,
};
use crate::plan::Plan;

pub(super) fn render(plan: &Plan) -> String {
    let mut out = String::from("### regimen plan\n\n");
    let quiet = is_quiet(plan);
    if quiet && plan.unobserved.is_empty() && plan.complete {
        out.push_str(&no_changes(plan));
        out.push_str("\n\n");
        // The per-repo retention counts are always there, changes or not.
        retention(plan, &mut out);
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
            html(rule)
        ));
        out.push_str("```diff\n");
        let lines: Vec<Line> = g
            .changes
            .iter()
            .map(|c| super::change_line(c, false))
            .collect();
        let w = widths(&lines);
        for l in &lines {
            out.push_str(&diff_line(l, w.word, w.subject));
        }
        out.push_str("```\n\n</details>\n\n");
    }

    if !plan.blocked.is_empty() {
        out.push_str("#### Blocked\n\n| Rule | Subject | Reason |\n|---|---|---|\n");
        for b in &plan.blocked {
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                cell(&b.rule),
                code(&b.subject),
                cell(&b.reason)
            ));
        }
        out.push('\n');
    }

    if !plan.violations.is_empty() {
        out.push_str("#### Policy violations\n\n| Policy | Subject | Message |\n|---|---|---|\n");
        for v in &plan.violations {
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                code(&v.policy),
                code(&v.subject),
                cell(&v.message)
            ));
        }
        out.push('\n');
    }

    retention(plan, &mut out);

    if !plan.unobserved.is_empty() {
        out.push_str("#### Could not observe\n\n");
        for u in &plan.unobserved {
            out.push_str(&format!(
                "- {} — {}\n",
                inline_code(&u.subject),
                html(&one_line(&u.reason))
            ));
        }
        out.push('\n');
    }

    finish(plan, out)
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
fn retention(plan: &Plan, out: &mut String) {
    if plan.retention.is_empty() {
        return;
    }
    out.push_str("#### Retention\n\n| Rule | Repository | Deletes |\n|---|---|---|\n");
    for r in &plan.retention {
        out.push_str(&format!(
            "| {} | {} | {} of {} tags |\n",
            cell(&r.rule),
            inline_code(&r.repo),
            r.deleting,
            r.tags
        ));
    }
    out.push('\n');
}

fn footer(plan: &Plan, out: &mut String) {
    if let Some(rev) = plan.revision.as_deref().filter(|r| !r.is_empty()) {
        if !out.ends_with("\n\n") {
            out.push('\n');
        }
        out.push_str(&format!("<sub>Policy revision {}</sub>\n", html(rev)));
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

/// A table cell: one line, HTML and `|` escaped.
fn cell(s: &str) -> String {
    html(&one_line(s)).replace('|', "\\|")
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
