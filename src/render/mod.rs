//! Plan output (SPEC "Plan output"): Terraform-like text, a Markdown PR
//! comment, and JSON (the saved-plan format).
//!
//! Text and Markdown share one line model: changes are grouped by rule (in
//! the order the plan applies them), each group lists its changes and then
//! what is blocked under the same rule, columns aligned within the group.
//! Within a group, tags that read as versions are listed in semver order
//! (`1.2.0` before `1.10.0`, see [`target_order`]); JSON keeps the plan's order.

mod markdown;
mod text;

use crate::plan::{Action, Blocked, Change, Plan};

/// The sentence for a complete plan with nothing to do.
pub const NO_CHANGES: &str = "No changes. Registries and hosts match the policy.";

/// The sentence for a plan with nothing to do: only a whole plan may say
/// that everything matches the policy.
pub fn no_changes(plan: &Plan) -> String {
    match &plan.scope {
        Some(scope) => {
            format!("No changes within {scope} (the rest of the policy was not planned).")
        }
        None => NO_CHANGES.to_string(),
    }
}

/// The warning for a plan made while something could not be observed.
pub const INCOMPLETE: &str =
    "The plan is incomplete: nothing is deleted or overwritten where regimen could not look.";

/// Terraform-like text; ANSI colours only when `color`. `verbose` adds sizes,
/// the reason for copies and retags, and the retention counts and keep
/// reasons (also when nothing changes).
pub fn text(plan: &Plan, color: bool, verbose: bool) -> String {
    text::render(plan, color, verbose)
}

/// A pull-request comment: summary first, details collapsible per rule.
pub use markdown::{not_shown, plain_text, COMMENT_BUDGET};

pub fn markdown(plan: &Plan) -> String {
    markdown::render(plan)
}

/// The plan as pretty JSON plus a newline (also the saved-plan format).
pub fn json(plan: &Plan) -> String {
    match serde_json::to_string_pretty(plan) {
        Ok(mut s) => {
            s.push('\n');
            s
        }
        // Plain data with string keys; serialisation cannot fail in practice.
        Err(e) => format!("{{\"error\": {:?}}}\n", e.to_string()),
    }
}

/// `Plan: 1 to copy, …; 1 blocked, 0 violations.`
pub fn summary_line(plan: &Plan) -> String {
    let s = &plan.summary;
    format!(
        "Plan: {} to copy, {} to retag, {} to untag, {} to delete, {} host changes; {} blocked, {} violations.",
        s.copy,
        s.retag,
        s.untag,
        s.delete,
        s.host_changes(),
        s.blocked,
        s.violations
    )
}

/// Nothing to do, nothing blocked, nothing violated (unobserved may remain).
fn is_quiet(plan: &Plan) -> bool {
    plan.changes.is_empty() && plan.blocked.is_empty() && plan.violations.is_empty()
}

/// The no-changes sentence of an incomplete plan: it cannot claim that
/// everything matches, only that what could be read does.
/// `listed` says where the unobserved list is (`above`, `below`).
fn no_changes_incomplete(plan: &Plan, listed: &str) -> String {
    format!(
        "No changes in what could be read; {} could not be observed (listed {listed}).",
        unobserved_count(plan)
    )
}

/// `1 repository and 2 hosts`: what could not be observed, by kind.
fn unobserved_count(plan: &Plan) -> String {
    let (mut repos, mut images, mut catalogs, mut hosts) = (0u32, 0u32, 0u32, 0u32);
    for u in &plan.unobserved {
        if u.subject.starts_with("host:") {
            hosts += 1;
        } else if u.subject.ends_with(" (catalog)") {
            catalogs += 1;
        } else if u.subject.contains('@') {
            images += 1;
        } else {
            repos += 1;
        }
    }
    let parts: Vec<String> = [
        (repos, "repository", "repositories"),
        (images, "image", "images"),
        (catalogs, "registry catalog", "registry catalogs"),
        (hosts, "host", "hosts"),
    ]
    .iter()
    .filter(|(n, _, _)| *n > 0)
    .map(|(n, one, many)| plural(*n, one, many))
    .collect();
    match parts.as_slice() {
        [] => "something".to_string(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// How a line is marked (and coloured).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Add,
    Change,
    Remove,
    Warn,
}

impl Kind {
    fn symbol(self) -> char {
        match self {
            Kind::Add => '+',
            Kind::Change => '~',
            Kind::Remove => '-',
            Kind::Warn => '!',
        }
    }
}

/// One display line: `SYM WORD SUBJECT   DETAIL`.
#[derive(Clone, Debug)]
struct Line {
    kind: Kind,
    word: &'static str,
    subject: String,
    detail: String,
}

/// The minimum width of the action word column (`delete`).
const WORD_WIDTH: usize = 6;

/// Gap between the subject column and the detail.
const GAP: &str = "   ";

/// Column widths for a block of lines.
struct Widths {
    word: usize,
    subject: usize,
}

fn widths(lines: &[Line]) -> Widths {
    Widths {
        word: lines
            .iter()
            .map(|l| l.word.len())
            .max()
            .unwrap_or(0)
            .max(WORD_WIDTH),
        subject: lines
            .iter()
            .map(|l| l.subject.chars().count())
            .max()
            .unwrap_or(0),
    }
}

/// Pads `s` with spaces to `width` characters.
fn pad(s: &str, width: usize) -> String {
    let n = s.chars().count();
    let mut out = s.to_string();
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(n)));
    out
}

/// The rule's changes and blocked items, in plan order.
struct Group<'a> {
    rule: &'a str,
    changes: Vec<&'a Change>,
    blocked: Vec<&'a Blocked>,
}

impl Group<'_> {
    fn lines(&self, verbose: bool) -> Vec<Line> {
        let mut lines: Vec<Line> = self
            .changes
            .iter()
            .map(|c| change_line(c, verbose))
            .collect();
        lines.extend(self.blocked.iter().map(|b| blocked_line(b)));
        lines
    }
}

/// Groups by rule: rules in the order their first change applies, then
/// rules that only have blocked items, in the plan's order.
fn groups(plan: &Plan) -> Vec<Group<'_>> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    for c in &plan.changes {
        match position(&groups, &c.rule) {
            Some(i) => groups[i].changes.push(c),
            None => groups.push(Group {
                rule: &c.rule,
                changes: vec![c],
                blocked: Vec::new(),
            }),
        }
    }
    for b in &plan.blocked {
        match position(&groups, &b.rule) {
            Some(i) => groups[i].blocked.push(b),
            None => groups.push(Group {
                rule: &b.rule,
                changes: Vec::new(),
                blocked: vec![b],
            }),
        }
    }
    for g in &mut groups {
        g.changes.sort_by(|a, b| change_order(a, b));
        g.blocked
            .sort_by(|a, b| target_order(&a.subject, &b.subject));
    }
    groups
}

/// The order changes are listed in: by action in the executor's order,
/// then by target (see [`target_order`]).
pub fn change_order(a: &crate::plan::Change, b: &crate::plan::Change) -> std::cmp::Ordering {
    crate::plan::order(a.action)
        .cmp(&crate::plan::order(b.action))
        .then_with(|| target_order(&a.target, &b.target))
}

/// The order subjects are listed in: by repository; the repo itself, then
/// tags that read as versions in semver order (`1.2.0` before `1.10.0`),
/// then other tags, then digests, each by text (as plain text order puts
/// them, but for versions). A total order, whatever the strings.
fn target_order(a: &str, b: &str) -> std::cmp::Ordering {
    use crate::config::selector::parse_version;
    let key = |r: &str| {
        let (repo, tag) = split_ref(r);
        let version = tag.and_then(parse_version);
        let class = match (tag, &version) {
            (None, _) if r.contains('@') => 3,
            (None, _) => 0,
            (Some(_), Some(_)) => 1,
            (Some(_), None) => 2,
        };
        (repo.to_string(), class, version)
    };
    let (ra, ca, va) = key(a);
    let (rb, cb, vb) = key(b);
    ra.cmp(&rb)
        .then(ca.cmp(&cb))
        .then_with(|| match (&va, &vb) {
            (Some(x), Some(y)) => x.cmp_precedence(y),
            _ => std::cmp::Ordering::Equal,
        })
        .then_with(|| a.cmp(b))
}

fn position(groups: &[Group<'_>], rule: &str) -> Option<usize> {
    groups.iter().position(|g| g.rule == rule)
}

/// `# rule api-to-prod` (`# rules a, b` for a change several rules agree on).
fn rule_title(rule: &str) -> String {
    if rule.is_empty() {
        "(no rule)".to_string()
    } else if rule.contains(", ") {
        format!("rules {rule}")
    } else {
        format!("rule {rule}")
    }
}

/// `sha256:ab12cd34ef56` from a full digest; other strings unchanged.
fn short_digest(d: &str) -> String {
    match d.split_once(':') {
        Some((algo, hex)) if hex.len() > 12 && hex.chars().all(|c| c.is_ascii_hexdigit()) => {
            format!("{algo}:{}", &hex[..12])
        }
        _ => d.to_string(),
    }
}

/// A reference with its digest (if any) shortened: `dev/x@sha256:77cc88dd99ee`.
fn short_ref(r: &str) -> String {
    match r.split_once('@') {
        Some((repo, d)) => format!("{repo}@{}", short_digest(d)),
        None => r.to_string(),
    }
}

/// `REG/REPO` and the tag of `REG/REPO:TAG` (no tag for `REG/REPO@DIGEST`).
fn split_ref(r: &str) -> (&str, Option<&str>) {
    if let Some((repo, _)) = r.split_once('@') {
        return (repo, None);
    }
    let last_slash = r.rfind('/').map_or(0, |i| i + 1);
    match r[last_slash..].rfind(':') {
        Some(i) => (&r[..last_slash + i], Some(&r[last_slash + i + 1..])),
        None => (r, None),
    }
}

/// The copy's subject: `staging/team/api:1.4.2 -> prod/team/api:1.4.2`
/// when the content comes from another repository, else just the target.
fn copy_subject(c: &Change) -> String {
    let Some(source) = c.source.as_deref() else {
        return short_ref(&c.target);
    };
    let (src_repo, src_tag) = split_ref(source);
    let (dst_repo, dst_tag) = split_ref(&c.target);
    if src_repo == dst_repo {
        return short_ref(&c.target);
    }
    let from = if source.contains('@') {
        match dst_tag {
            Some(tag) => format!("{src_repo}:{tag}"),
            None => short_ref(source),
        }
    } else {
        match src_tag {
            Some(_) => source.to_string(),
            None => src_repo.to_string(),
        }
    };
    format!("{from} -> {}", short_ref(&c.target))
}

/// `48.2 MB` (decimal units, like registries and Docker show them).
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn plural(n: u32, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// The copy's parenthesis: only what is known.
fn copy_notes(c: &Change, verbose: bool) -> Vec<String> {
    let mut notes = Vec::new();
    match &c.only_platforms {
        Some(only) if !only.is_empty() => notes.push(format!("filtered to {}", only.join(", "))),
        _ => {
            if let Some(n) = c.platforms.filter(|n| *n > 0) {
                notes.push(plural(n, "platform", "platforms"));
            }
        }
    }
    if let Some(n) = c.referrers.filter(|n| *n > 0) {
        if c.with_referrers {
            notes.push(plural(n, "referrer", "referrers"));
        }
    }
    if !c.with_referrers {
        notes.push("without referrers".to_string());
    }
    // An untagged copy (a referrer attached after its image was copied):
    // what it is and whose, which the digests alone do not say.
    if split_ref(&c.target).1.is_none() && !c.reason.is_empty() && !verbose {
        notes.push(c.reason.clone());
    }
    if verbose {
        if let Some(size) = c.size.filter(|s| *s > 0) {
            notes.push(human_bytes(size));
        }
    }
    notes
}

/// `DIGEST (note, note)`, leaving out what is empty.
fn with_notes(head: String, notes: &[String]) -> String {
    match (head.is_empty(), notes.is_empty()) {
        (_, true) => head,
        (true, false) => format!("({})", notes.join(", ")),
        (false, false) => format!("{head} ({})", notes.join(", ")),
    }
}

/// The digest a removal concerns, unless the target already names it.
fn removed_digest(c: &Change) -> String {
    if c.target.contains('@') {
        return String::new();
    }
    match c.digest.as_deref() {
        Some(d) => short_digest(d),
        None if c.expect.contains(':') => short_digest(&c.expect),
        None => String::new(),
    }
}

/// `also removes tags a, b`: what else a delete or an image removal takes
/// with it, so the plan shows everything that goes (empty when nothing).
fn also_removes(c: &Change) -> String {
    let (others, one, many): (&[String], _, _) = match c.action {
        Action::Delete => (&c.also_tags, "tag", "tags"),
        // The image's names as the engine lists them; the first is the one
        // the target shows (in the policy's address form where it maps).
        Action::RemoveImage => (c.also_tags.get(1..).unwrap_or_default(), "name", "names"),
        _ => (&[], "", ""),
    };
    match others {
        [] => String::new(),
        [only] => format!("also removes {one} {only}"),
        _ => format!("also removes {many} {}", others.join(", ")),
    }
}

/// `first; second`, leaving out what is empty.
fn joined(first: &str, second: &str) -> String {
    match (first.is_empty(), second.is_empty()) {
        (_, true) => first.to_string(),
        (true, false) => second.to_string(),
        (false, false) => format!("{first}; {second}"),
    }
}

fn verbose_reason(detail: String, c: &Change, verbose: bool) -> String {
    if verbose && !c.reason.is_empty() {
        format!("{detail}  # {}", c.reason)
    } else {
        detail
    }
}

fn change_line(c: &Change, verbose: bool) -> Line {
    let reason = || {
        if c.reason.is_empty() {
            Vec::new()
        } else {
            vec![c.reason.clone()]
        }
    };
    let (kind, word, subject, detail) = match c.action {
        Action::Copy => {
            let digest = c.digest.as_deref().map(short_digest).unwrap_or_default();
            let detail = with_notes(digest, &copy_notes(c, verbose));
            (
                Kind::Add,
                "copy",
                copy_subject(c),
                verbose_reason(detail, c, verbose),
            )
        }
        Action::Retag => {
            let new = c
                .digest
                .as_deref()
                .map_or_else(|| "?".to_string(), short_digest);
            let detail = format!("{} -> {new}", short_digest(&c.expect));
            (
                Kind::Change,
                "retag",
                short_ref(&c.target),
                verbose_reason(detail, c, verbose),
            )
        }
        Action::Untag => (
            Kind::Remove,
            "untag",
            short_ref(&c.target),
            with_notes(removed_digest(c), &reason()),
        ),
        Action::Delete => {
            let note = joined(&c.reason, &also_removes(c));
            let notes: Vec<String> = Some(note).filter(|n| !n.is_empty()).into_iter().collect();
            (
                Kind::Remove,
                "delete",
                short_ref(&c.target),
                with_notes(removed_digest(c), &notes),
            )
        }
        Action::Pull => (Kind::Add, "pull", short_ref(&c.target), c.reason.clone()),
        Action::RemoveImage => (
            Kind::Remove,
            "remove",
            short_ref(&c.target),
            joined(&c.reason, &also_removes(c)),
        ),
        Action::StopContainer => (Kind::Warn, "stop", short_ref(&c.target), c.reason.clone()),
    };
    Line {
        kind,
        word,
        subject,
        detail,
    }
}

fn blocked_line(b: &Blocked) -> Line {
    Line {
        kind: Kind::Warn,
        word: "blocked",
        subject: b.subject.clone(),
        detail: b.reason.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Kept, RetentionRepo, Unobserved, Violation};

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn change(action: Action, target: &str, rule: &str, reason: &str) -> Change {
        Change {
            target: target.to_string(),
            expect: "absent".to_string(),
            rule: rule.to_string(),
            reason: reason.to_string(),
            ..Change::new(action)
        }
    }

    fn sample() -> Plan {
        let ab =
            "sha256:ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12".to_string();
        let old =
            "sha256:99aa00bb11cc99aa00bb11cc99aa00bb11cc99aa00bb11cc99aa00bb11cc99aa".to_string();
        let gone =
            "sha256:77cc88dd99ee77cc88dd99ee77cc88dd99ee77cc88dd99ee77cc88dd99ee77cc".to_string();
        let mut plan = Plan {
            revision: Some("3f2c9e1a7b0d4c5e6f708192a3b4c5d6e7f80912".to_string()),
            ..Plan::default()
        };
        plan.changes.push(Change {
            source: Some(format!("staging/team/api@{ab}")),
            digest: Some(ab.clone()),
            platforms: Some(2),
            referrers: Some(3),
            size: Some(48_213_500),
            ..change(
                Action::Copy,
                "prod/team/api:1.4.2",
                "api-to-prod",
                "promotion of staging/team/api:1.4.2",
            )
        });
        plan.changes.push(Change {
            source: Some(format!("docker-hub/library/alpine@{}", digest('e'))),
            digest: Some(digest('f')),
            platforms: Some(1),
            referrers: Some(0),
            only_platforms: Some(vec!["linux/amd64".to_string()]),
            ..change(
                Action::Copy,
                "mirror/library/alpine:3.20",
                "mirror-alpine",
                "mirror of docker-hub/library/alpine:3.20",
            )
        });
        plan.changes.push(Change {
            source: Some(format!("prod/team/api@{ab}")),
            digest: Some(ab.clone()),
            expect: old.clone(),
            ..change(
                Action::Retag,
                "prod/team/api:stable",
                "api-stable",
                "stable follows the newest 1.x",
            )
        });
        plan.changes.push(Change {
            digest: Some(gone.clone()),
            expect: gone.clone(),
            also_tags: vec!["pr-118-rebuild".to_string(), "sha-77cc88d".to_string()],
            ..change(
                Action::Delete,
                "dev/team/api:pr-118",
                "dev-retention",
                "96d old",
            )
        });
        plan.changes.push(Change {
            digest: Some(digest('d')),
            expect: digest('d'),
            also_tags: vec!["pr-119-alias".to_string()],
            ..change(
                Action::Delete,
                "dev/team/api:pr-119",
                "dev-retention",
                "95d old",
            )
        });
        plan.changes.push(Change {
            digest: Some(digest('c')),
            expect: digest('c'),
            ..change(
                Action::Untag,
                "dev/team/api:pr-7",
                "dev-retention",
                "pull request closed",
            )
        });
        plan.changes.push(Change {
            digest: Some(ab.clone()),
            ..change(
                Action::Pull,
                "host:build-01/prod/team/api:1.4.2",
                "build-hosts",
                "wanted on build-01",
            )
        });
        plan.changes.push(Change {
            digest: Some(old.clone()),
            expect: old.clone(),
            also_tags: vec![
                "registry.example.com/team/api:1.3.0".to_string(),
                "registry.example.com/team/api:old-stable".to_string(),
            ],
            ..change(
                Action::RemoveImage,
                "host:build-01/prod/team/api:1.3.0",
                "build-hosts",
                "unused for 14d",
            )
        });
        plan.changes.push(Change {
            expect: "running".to_string(),
            ..change(
                Action::StopContainer,
                "host:build-01/old-api",
                "build-hosts",
                "runs disallowed image prod/team/api:0.9",
            )
        });
        plan.blocked.push(Blocked {
            target: None,
            rule: "api-to-prod".to_string(),
            subject: "staging/team/api:1.5.0".to_string(),
            reason: "critical vulnerability CVE-2026-1234 (trivy)".to_string(),
        });
        plan.blocked.push(Blocked {
            target: None,
            rule: "api-stable".to_string(),
            subject: "prod/team/api:latest".to_string(),
            reason:
                "conflict: api-stable wants sha256:ab12cd34ef56, api-pin wants sha256:99aa00bb11cc"
                    .to_string(),
        });
        plan.violations.push(Violation {
            kind: None,
            policy: "max_age".to_string(),
            subject: "prod/team/web:2.0.1".to_string(),
            message: "built 412d ago, older than 365d | base image outdated".to_string(),
        });
        plan.unobserved.push(Unobserved {
            subject: "dev/team/worker".to_string(),
            reason: "listing tags: 503 Service Unavailable".to_string(),
        });
        plan.resolved.push(crate::plan::Resolved {
            violation: Violation {
                kind: None,
                policy: "max_age".to_string(),
                subject: "dev/team/api:pr-119-alias".to_string(),
                message: "created 400d ago, max_age 365d".to_string(),
            },
            by: "dev/team/api:pr-119".to_string(),
        });
        plan.retention = vec![
            retention_repo("dev-retention", "dev/team/api", 14, 6),
            retention_repo("dev-retention", "dev/team/web", 4, 0),
        ];
        plan.kept.push(kept(
            "dev-retention",
            "dev/team/api:pr-120",
            "keep.newest: one of the 10 newest",
        ));
        plan.finish();
        plan
    }

    fn retention_repo(rule: &str, repo: &str, tags: u32, deleting: u32) -> RetentionRepo {
        RetentionRepo {
            rule: rule.to_string(),
            repo: repo.to_string(),
            tags,
            deleting,
        }
    }

    fn kept(rule: &str, subject: &str, reason: &str) -> Kept {
        Kept {
            rule: rule.to_string(),
            subject: subject.to_string(),
            reason: reason.to_string(),
        }
    }

    /// A plan with nothing to do whose retention rule keeps everything.
    fn all_kept() -> Plan {
        let mut plan = Plan {
            retention: vec![retention_repo("dev-cleanup", "dev/team/api", 10, 0)],
            ..Plan::default()
        };
        for (tag, reason) in [
            ("pr-1", "keep.newest: one of the 10 newest"),
            ("pr-2", "keep.newest: one of the 10 newest"),
            ("stable-old", "target of api-stable"),
        ] {
            plan.kept
                .push(kept("dev-cleanup", &format!("dev/team/api:{tag}"), reason));
        }
        plan.finish();
        plan
    }

    /// Nothing to do, but a repository and a host could not be read.
    fn unobserved_only() -> Plan {
        let mut plan = Plan::default();
        plan.unobserved.push(Unobserved {
            subject: "dev/team/worker".to_string(),
            reason: "listing tags: 503 Service Unavailable".to_string(),
        });
        plan.unobserved.push(Unobserved {
            subject: "host:build-01".to_string(),
            reason: "cannot connect to unix:///var/run/docker.sock".to_string(),
        });
        plan.finish();
        plan
    }

    #[test]
    fn sample_is_incomplete() {
        let plan = sample();
        assert!(!plan.complete);
        assert_eq!(plan.summary.host_changes(), 3);
    }

    #[test]
    fn text_plan() {
        insta::assert_snapshot!("text_plan", text(&sample(), false, false));
    }

    #[test]
    fn text_plan_verbose() {
        insta::assert_snapshot!("text_plan_verbose", text(&sample(), false, true));
    }

    #[test]
    fn text_plan_color() {
        insta::assert_snapshot!("text_plan_color", text(&sample(), true, false));
    }

    #[test]
    fn markdown_plan() {
        insta::assert_snapshot!("markdown_plan", markdown(&sample()));
    }

    #[test]
    fn json_plan() {
        insta::assert_snapshot!("json_plan", json(&sample()));
    }

    #[test]
    fn versions_are_listed_in_semver_order_and_json_keeps_the_plan_order() {
        let mut plan = Plan::default();
        for tag in ["1.10.0", "1.2.0", "latest", "v1.9.0", "1.2.0-rc.1"] {
            plan.changes
                .push(change(Action::Copy, &format!("prod/api:{tag}"), "m", ""));
        }
        for tag in ["1.10.0", "1.9.0"] {
            plan.blocked.push(Blocked {
                target: None,
                rule: "m".to_string(),
                subject: format!("prod/api:{tag}"),
                reason: "held".to_string(),
            });
        }
        plan.finish();
        let order = |out: &str, word: &str| -> Vec<String> {
            out.lines()
                .filter_map(|l| l.trim_start().strip_prefix(word))
                .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
                .collect()
        };
        let shown = text(&plan, false, false);
        assert_eq!(
            order(&shown, "+ copy"),
            [
                "prod/api:1.2.0-rc.1",
                "prod/api:1.2.0",
                "prod/api:v1.9.0",
                "prod/api:1.10.0",
                "prod/api:latest"
            ],
            "{shown}"
        );
        assert_eq!(
            order(&shown, "! blocked"),
            ["prod/api:1.9.0", "prod/api:1.10.0"],
            "{shown}"
        );
        let md = markdown(&plan);
        assert_eq!(order(&md, "+ copy"), order(&shown, "+ copy"), "{md}");
        let blocked_rows: Vec<&str> = md.lines().filter(|l| l.contains("`prod/api:1.")).collect();
        assert!(blocked_rows[0].contains("1.9.0"), "{md}");
        // JSON (saved plans) keeps the plan's own order.
        let v: serde_json::Value = serde_json::from_str(&json(&plan)).unwrap();
        let targets: Vec<&str> = v["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["target"].as_str().unwrap())
            .collect();
        assert_eq!(
            targets,
            [
                "prod/api:1.10.0",
                "prod/api:1.2.0",
                "prod/api:1.2.0-rc.1",
                "prod/api:latest",
                "prod/api:v1.9.0"
            ]
        );
    }

    #[test]
    fn target_order_is_total_over_odd_subjects() {
        let mut subjects = vec![
            "b/x:1.10.0",
            "b/x",
            "b/x@sha256:00",
            "b/x:edge",
            "b/x:1.9",
            "a/y:2",
            "b/x:1.9.0",
            "host:web/b/x:1",
            "b/x:v1.9.0",
            "b/x:1.9.0+build",
            "",
        ];
        subjects.sort_by(|a, b| target_order(a, b));
        for w in subjects.windows(2) {
            assert_ne!(
                target_order(w[0], w[1]),
                std::cmp::Ordering::Greater,
                "{w:?}"
            );
        }
        assert_eq!(
            subjects,
            [
                "",
                "a/y:2",
                "b/x",
                "b/x:1.9",
                "b/x:1.9.0",
                "b/x:1.9.0+build",
                "b/x:v1.9.0",
                "b/x:1.10.0",
                "b/x:edge",
                "b/x@sha256:00",
                "host:web/b/x:1",
            ]
        );
    }

    #[test]
    fn text_empty() {
        let mut plan = Plan::default();
        plan.finish();
        let out = text(&plan, false, false);
        assert_eq!(out, format!("{NO_CHANGES}\n"));
        insta::assert_snapshot!("text_empty", out);
    }

    /// GitHub refuses comments over 65,536 characters: a plan of thousands
    /// of changes and violations still gives one that fits, whole in its
    /// structure, saying what it leaves out.
    #[test]
    fn a_huge_plan_fits_in_one_pr_comment() {
        let mut plan = Plan::default();
        for i in 0..5000 {
            let mut c = change(
                Action::Copy,
                &format!("prod/many:build-{i:05}"),
                "m",
                "mirror",
            );
            c.digest = Some(digest('a'));
            plan.changes.push(c);
            for policy in ["max_age", "base_images"] {
                plan.violations.push(Violation {
                    kind: None,
                    policy: policy.to_string(),
                    subject: format!("dev/many:build-{i:05}"),
                    message: "created 400d ago, max_age 180d".to_string(),
                });
            }
        }
        plan.finish();
        let md = markdown(&plan);
        assert!(
            md.chars().count() <= markdown::COMMENT_BUDGET,
            "{}",
            md.len()
        );
        assert!(md.contains(&summary_line(&plan)), "the summary is whole");
        assert!(md.contains("build-00000"), "the first entries are shown");
        assert!(!md.contains("build-04999"), "not all of them");
        assert!(md.contains("more not shown"), "says so");
        assert_eq!(
            md.matches("<details>").count(),
            md.matches("</details>").count()
        );
        assert_eq!(md.matches("```").count() % 2, 0, "fences closed");
        assert!(
            md.contains("<details><summary>Policy violations — 10000</summary>"),
            "collapsed"
        );
        // A small plan is untouched.
        assert!(!markdown(&sample()).contains("more not shown"));
    }

    /// Text from image labels and rules is text: no links, emphasis or
    /// mentions in a PR comment.
    #[test]
    fn markdown_shows_label_text_as_text() {
        let mut plan = Plan::default();
        plan.violations.push(Violation {
            kind: None,
            policy: "base_images".to_string(),
            subject: "prod/app:1".to_string(),
            message: "base [pwn](http://evil) matches none of prod/base/*, mirror/* cc @team; \
                      from prod/base@sha256:ab"
                .to_string(),
        });
        plan.finish();
        let md = markdown(&plan);
        assert!(md.contains(r"\[pwn\](http://evil)"), "{md}");
        assert!(md.contains(r"prod/base/\*, mirror/\*"), "{md}");
        assert!(md.contains("@\u{200B}team"), "{md}");
        assert!(
            md.contains("prod/base@sha256:ab"),
            "a digest reference stays: {md}"
        );
        // A label of kilobytes is cut, and does not push the other rows out.
        for i in 0..30 {
            plan.violations.push(Violation {
                kind: None,
                policy: "base_images".to_string(),
                subject: format!("prod/app:{i}"),
                message: format!("base docker.io/x:{}", "[a](b)*".repeat(1500)),
            });
        }
        let md = markdown(&plan);
        assert!(!md.contains("more not shown"), "{}", md.len());
        assert!(md.contains("prod/app:29"));
    }

    #[test]
    fn markdown_empty() {
        let mut plan = Plan::default();
        plan.finish();
        insta::assert_snapshot!("markdown_empty", markdown(&plan));
    }

    #[test]
    fn incomplete_without_changes_does_not_claim_a_match() {
        let plan = unobserved_only();
        assert!(!plan.complete);
        let said =
            "No changes in what could be read; 1 repository and 1 host could not be observed";
        for verbose in [false, true] {
            let out = text(&plan, false, verbose);
            assert!(!out.contains("match the policy"), "{out}");
            assert!(out.contains(&format!("{said} (listed above).\n")), "{out}");
            assert!(out.contains(INCOMPLETE), "{out}");
            assert!(out.contains("host:build-01"), "{out}");
            assert!(out.ends_with("0 blocked, 0 violations.\n"), "{out}");
        }
        let md = markdown(&plan);
        assert!(!md.contains("match the policy"), "{md}");
        assert!(md.contains(&format!("{said} (listed below).\n")), "{md}");
        insta::assert_snapshot!("text_incomplete_no_changes", text(&plan, false, false));
        insta::assert_snapshot!("markdown_incomplete_no_changes", md);
    }

    #[test]
    fn unobserved_are_counted_by_kind() {
        let mut plan = Plan::default();
        for subject in [
            "dev/a",
            "dev/b",
            format!("dev/a@{}", digest('a')).as_str(),
            "dev (catalog)",
            "host:h1",
            "host:h2",
        ] {
            plan.unobserved.push(Unobserved {
                subject: subject.to_string(),
                reason: "timeout".to_string(),
            });
        }
        plan.finish();
        assert_eq!(
            no_changes_incomplete(&plan, "above"),
            "No changes in what could be read; 2 repositories, 1 image, 1 registry catalog \
             and 2 hosts could not be observed (listed above)."
        );
        plan.unobserved.retain(|u| u.subject == "dev/a");
        assert_eq!(unobserved_count(&plan), "1 repository");
    }

    #[test]
    fn complete_without_changes_keeps_its_wording() {
        let mut plan = Plan::default();
        plan.finish();
        assert_eq!(text(&plan, false, true), format!("{NO_CHANGES}\n"));
        assert_eq!(
            markdown(&plan),
            format!("### regimen plan\n\n{NO_CHANGES}\n")
        );
    }

    #[test]
    fn host_prune_keeps_have_a_host_heading_not_retention() {
        let mut plan = all_kept();
        plan.kept.push(kept(
            "host:build-01",
            "host:build-01/prod/base/os:12",
            "keep matches prod/base/os:12",
        ));
        plan.finish();
        let out = text(&plan, false, true);
        let (retention, hosts) = out
            .split_once("# host prune\n")
            .unwrap_or_else(|| panic!("no host heading:\n{out}"));
        assert!(retention.contains("# retention\n"), "{out}");
        assert!(!retention.contains("host:build-01"), "{out}");
        assert!(
            hosts.starts_with(
                "  = keep   host:build-01/prod/base/os:12   keep matches prod/base/os:12 (host:build-01)\n"
            ),
            "{out}"
        );
        // Host keeps alone: no retention heading at all.
        let mut only_host = Plan::default();
        only_host.kept.push(kept(
            "host:build-01",
            "host:build-01/prod/base/os:12",
            "keep matches prod/base/os:12",
        ));
        only_host.finish();
        let out = text(&only_host, false, true);
        assert!(!out.contains("# retention"), "{out}");
        assert!(out.contains("# host prune\n"), "{out}");
    }

    #[test]
    fn no_changes_still_show_retention_counts_and_keep_reasons() {
        let plan = all_kept();
        assert!(!plan.has_changes());
        // Without -v: the sentence alone.
        assert_eq!(text(&plan, false, false), format!("{NO_CHANGES}\n"));
        let out = text(&plan, false, true);
        assert!(
            out.contains("  dev-cleanup: deletes 0 of 10 tags in dev/team/api\n"),
            "{out}"
        );
        assert!(
            out.contains("  = keep   dev/team/api:pr-1         keep.newest: one of the 10 newest (dev-cleanup)\n"),
            "{out}"
        );
        assert!(out.ends_with(&format!("\n{NO_CHANGES}\n")), "{out}");
        insta::assert_snapshot!("text_no_changes_verbose_retention", out);
        let md = markdown(&plan);
        assert!(
            md.contains("| dev-cleanup | `dev/team/api` | 0 of 10 tags |\n"),
            "{md}"
        );
        insta::assert_snapshot!("markdown_no_changes_retention", md);
    }

    #[test]
    fn deletes_and_removals_name_everything_that_goes() {
        let plan = sample();
        let out = text(&plan, false, false);
        for line in [
            "  - delete dev/team/api:pr-118   sha256:77cc88dd99ee (96d old; also removes tags pr-118-rebuild, sha-77cc88d)\n",
            "  - delete dev/team/api:pr-119   sha256:dddddddddddd (95d old; also removes tag pr-119-alias)\n",
            "  - remove host:build-01/prod/team/api:1.3.0   unused for 14d; also removes name registry.example.com/team/api:old-stable\n",
        ] {
            assert!(out.contains(line), "{line}\nnot in\n{out}");
        }
        let md = markdown(&plan);
        for line in [
            "- delete dev/team/api:pr-118   sha256:77cc88dd99ee (96d old; also removes tags pr-118-rebuild, sha-77cc88d)\n",
            "- delete dev/team/api:pr-119   sha256:dddddddddddd (95d old; also removes tag pr-119-alias)\n",
            "- remove host:build-01/prod/team/api:1.3.0   unused for 14d; also removes name registry.example.com/team/api:old-stable\n",
        ] {
            assert!(md.contains(line), "{line}\nnot in\n{md}");
        }
        // A single-name image, or a dangling one, has nothing else to remove.
        let mut one = Change {
            also_tags: vec!["registry.example.com/team/api:1.3.0".to_string()],
            ..change(
                Action::RemoveImage,
                "host:b/prod/team/api:1.3.0",
                "host:b",
                "unused",
            )
        };
        assert_eq!(change_line(&one, false).detail, "unused");
        one.also_tags.clear();
        assert_eq!(change_line(&one, false).detail, "unused");
    }

    #[test]
    fn spec_example_lines() {
        let mut plan = sample();
        plan.changes.retain(|c| c.rule == "api-to-prod");
        plan.blocked.clear();
        plan.finish();
        let out = text(&plan, false, false);
        assert!(out.contains(
            "  + copy   staging/team/api:1.4.2 -> prod/team/api:1.4.2   sha256:ab12cd34ef56 (2 platforms, 3 referrers)\n"
        ));
    }

    #[test]
    fn refs_split_and_shorten() {
        assert_eq!(
            split_ref("prod/team/api:1.4.2"),
            ("prod/team/api", Some("1.4.2"))
        );
        assert_eq!(split_ref("prod/team/api"), ("prod/team/api", None));
        assert_eq!(
            split_ref(&format!("prod/x@{}", digest('a'))),
            ("prod/x", None)
        );
        assert_eq!(short_digest(&digest('a')), "sha256:aaaaaaaaaaaa");
        assert_eq!(short_digest("absent"), "absent");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(48_213_500), "48.2 MB");
    }
}
