//! Terraform-like plan text.

use super::{
    groups, is_quiet, no_changes, no_changes_incomplete, pad, rule_title, summary_line, widths,
    Kind, Line, GAP, INCOMPLETE,
};
use crate::plan::{Kept, Plan};

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const RED_BOLD: &str = "\x1b[1;31m";

/// Wraps `s` in an ANSI style when colouring.
struct Paint {
    on: bool,
}

impl Paint {
    fn style(&self, code: &str, s: &str) -> String {
        if self.on {
            format!("{code}{s}{RESET}")
        } else {
            s.to_string()
        }
    }

    fn kind(&self, kind: Kind, s: &str) -> String {
        let code = match kind {
            Kind::Add => GREEN,
            Kind::Change => YELLOW,
            Kind::Remove => RED,
            Kind::Warn => RED_BOLD,
        };
        self.style(code, s)
    }
}

pub(super) fn render(plan: &Plan, color: bool, verbose: bool) -> String {
    let quiet = is_quiet(plan);
    let retention = verbose && (!plan.retention.is_empty() || !plan.kept.is_empty());
    // Complete and nothing to do: the sentence alone (after the retention
    // counts with `-v`), like Terraform.
    let all_match = quiet && plan.unobserved.is_empty() && plan.complete;
    if all_match && !retention {
        return format!("{}\n", no_changes(plan));
    }
    let paint = Paint { on: color };
    let mut sections: Vec<String> = Vec::new();

    for g in groups(plan) {
        let mut s = paint.style(BOLD, &format!("# {}", rule_title(g.rule)));
        s.push('\n');
        let lines = g.lines(verbose);
        let w = widths(&lines);
        for l in &lines {
            s.push_str(&line(&paint, l, w.word, w.subject));
        }
        sections.push(s);
    }

    if !plan.violations.is_empty() {
        let mut s = paint.style(BOLD, "# policy violations");
        s.push('\n');
        let pw = plan
            .violations
            .iter()
            .map(|v| v.policy.chars().count())
            .max()
            .unwrap_or(0);
        let sw = plan
            .violations
            .iter()
            .map(|v| v.subject.chars().count())
            .max()
            .unwrap_or(0);
        for v in &plan.violations {
            let head = format!(
                "{} {}",
                paint.style(RED_BOLD, "! violation"),
                pad(&v.policy, pw)
            );
            let row = format!("  {head} {}{GAP}{}", pad(&v.subject, sw), v.message);
            s.push_str(row.trim_end());
            s.push('\n');
        }
        sections.push(s);
    }

    if verbose && !plan.resolved.is_empty() {
        // What `on_violation` no longer counts, and which change ends it.
        let mut s = paint.style(BOLD, "# policy violations this plan ends");
        s.push('\n');
        for r in &plan.resolved {
            let v = &r.violation;
            let by = if r.by == v.subject {
                String::new()
            } else {
                format!(" (by {})", r.by)
            };
            s.push_str(&format!(
                "  = {} {}{GAP}{}{by}\n",
                v.policy, v.subject, v.message
            ));
        }
        sections.push(s);
    }

    if retention {
        // Host prune keeps (rule `host:NAME`) under their own heading.
        let (host_kept, reg_kept): (Vec<&Kept>, Vec<&Kept>) =
            plan.kept.iter().partition(|k| k.rule.starts_with("host:"));
        if !plan.retention.is_empty() || !reg_kept.is_empty() {
            let mut s = paint.style(BOLD, "# retention");
            s.push('\n');
            for r in &plan.retention {
                s.push_str(&format!(
                    "  {}: deletes {} of {} tags in {}\n",
                    r.rule, r.deleting, r.tags, r.repo
                ));
            }
            keep_lines(&mut s, &reg_kept);
            sections.push(s);
        }
        if !host_kept.is_empty() {
            let mut s = paint.style(BOLD, "# host prune");
            s.push('\n');
            keep_lines(&mut s, &host_kept);
            sections.push(s);
        }
    }

    if !plan.unobserved.is_empty() {
        let mut s = paint.style(BOLD, "# could not observe");
        s.push('\n');
        let sw = plan
            .unobserved
            .iter()
            .map(|u| u.subject.chars().count())
            .max()
            .unwrap_or(0);
        for u in &plan.unobserved {
            let row = format!(
                "  {} {}{GAP}{}",
                paint.style(YELLOW, "?"),
                pad(&u.subject, sw),
                u.reason
            );
            s.push_str(row.trim_end());
            s.push('\n');
        }
        sections.push(s);
    }

    let mut out = sections.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    if all_match {
        out.push_str(&paint.style(GREEN, &no_changes(plan)));
        out.push('\n');
        return out;
    }
    if quiet {
        // Something could not be read: no claim that it matches.
        out.push_str(&paint.style(YELLOW, &no_changes_incomplete(plan, "above")));
        out.push('\n');
    }
    if !plan.complete {
        out.push_str(&paint.style(YELLOW, INCOMPLETE));
        out.push('\n');
    }
    let summary = summary_line(plan);
    match summary.strip_prefix("Plan:") {
        Some(rest) if color => out.push_str(&format!("{}{rest}", paint.style(BOLD, "Plan:"))),
        _ => out.push_str(&summary),
    }
    out.push('\n');
    out
}

/// `  + copy   SUBJECT   DETAIL`, padded to the group's columns.
fn line(paint: &Paint, l: &Line, word_width: usize, subject_width: usize) -> String {
    let mark = format!("{} {}", l.kind.symbol(), l.word);
    let mark_pad = " ".repeat(word_width.saturating_sub(l.word.len()));
    let row = if l.detail.is_empty() {
        format!("  {}{mark_pad} {}", paint.kind(l.kind, &mark), l.subject)
    } else {
        format!(
            "  {}{mark_pad} {}{GAP}{}",
            paint.kind(l.kind, &mark),
            pad(&l.subject, subject_width),
            l.detail
        )
    };
    format!("{}\n", row.trim_end())
}

/// `= keep SUBJECT  REASON (RULE)` lines, subjects padded to one width.
fn keep_lines(s: &mut String, kept: &[&Kept]) {
    let sw = kept
        .iter()
        .map(|k| k.subject.chars().count())
        .max()
        .unwrap_or(0);
    for k in kept {
        let row = format!(
            "  = keep   {}{GAP}{} ({})",
            pad(&k.subject, sw),
            k.reason,
            k.rule
        );
        s.push_str(row.trim_end());
        s.push('\n');
    }
}
