//! Pull-request helpers: `plan --base REV` (the policy diff, and which
//! planned changes the change introduces versus drift that happens anyway)
//! and `validate --format github` (workflow-command annotations).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use similar::TextDiff;

use crate::config::{self, Diagnostic, Policy};
use crate::model::Timestamp;
use crate::plan::{Change, Plan};

/// What `--base` adds to a plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BaseReport {
    pub revision: String,
    /// Unified diff of the policy files, base → working tree.
    pub policy_diff: String,
    /// Targets of planned changes that the base policy would not make.
    pub introduced: Vec<String>,
    /// Targets of planned changes the base policy makes too (drift).
    pub drift: Vec<String>,
    /// Changes the base policy would make that this one no longer does.
    pub dropped: Vec<Change>,
    /// Why the base policy could not be loaded, if so: every planned change
    /// then counts as introduced (a change that fixes a broken base still
    /// gets its plan).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_invalid: Option<String>,
}

/// Identity of a change across two plans of the same observation.
fn key(c: &Change) -> (String, String, Option<String>) {
    (
        c.action.as_str().to_string(),
        c.target.clone(),
        c.digest.clone(),
    )
}

/// Loads the policy as of `rev` (same folder, same repository as `dir`),
/// observes once for both policies, and plans each against that one
/// observation so the difference is due to the policy change alone.
pub fn plan_with_base(head: &Policy, dir: &Path, rev: &str) -> Result<(Plan, BaseReport), String> {
    let tmp = std::env::temp_dir().join(format!(
        "regimen-base-{}-{}",
        std::process::id(),
        Timestamp::now().0
    ));
    let result = plan_with_base_in(head, dir, rev, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn plan_with_base_in(
    head: &Policy,
    dir: &Path,
    rev: &str,
    tmp: &Path,
) -> Result<(Plan, BaseReport), String> {
    super::source::materialize_rev(dir, rev, tmp)?;
    let (base, base_invalid) = if config::policy_files(tmp)?.is_empty() {
        (Policy::default(), None)
    } else {
        match config::load(tmp) {
            Ok(p) => (p, None),
            Err(d) => (
                Policy::default(),
                Some(format!(
                    "the policy at --base {rev} is invalid ({} error{}; first: {})",
                    d.len(),
                    if d.len() == 1 { "" } else { "s" },
                    d.first().map(|x| x.to_string()).unwrap_or_default()
                )),
            ),
        }
    };
    let policy_diff = diff_dirs(tmp, dir)?;
    // Observe what either policy needs; registries as the change defines them.
    let mut union = head.clone();
    for (n, r) in &base.registries {
        union
            .registries
            .entry(n.clone())
            .or_insert_with(|| r.clone());
    }
    union.mirrors.extend(base.mirrors.iter().cloned());
    union.promotions.extend(base.promotions.iter().cloned());
    union.retags.extend(base.retags.iter().cloned());
    union.retention.extend(base.retention.iter().cloned());
    let registries = crate::registry::open_all(&union);
    let now = Timestamp::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let observed = rt.block_on(crate::observe::observe(&union, &registries, now));
    let plan = crate::plan::plan(head, &observed, now);
    let base_plan = crate::plan::plan(&base, &observed, now);
    let base_keys: BTreeSet<_> = base_plan.changes.iter().map(key).collect();
    let head_keys: BTreeSet<_> = plan.changes.iter().map(key).collect();
    let (drift, introduced): (Vec<&Change>, Vec<&Change>) = plan
        .changes
        .iter()
        .partition(|c| base_keys.contains(&key(c)));
    let report = BaseReport {
        revision: rev.to_string(),
        policy_diff,
        introduced: introduced.iter().map(|c| c.target.clone()).collect(),
        drift: drift.iter().map(|c| c.target.clone()).collect(),
        dropped: base_plan
            .changes
            .iter()
            .filter(|c| !head_keys.contains(&key(c)))
            .cloned()
            .collect(),
        base_invalid,
    };
    Ok((plan, report))
}

/// Unified diff of every policy file under `old` and `new`, by relative path.
pub fn diff_dirs(old: &Path, new: &Path) -> Result<String, String> {
    let rel = |root: &Path| -> Result<BTreeSet<String>, String> {
        Ok(config::policy_files(root)?
            .iter()
            .map(|p| p.strip_prefix(root).unwrap_or(p).display().to_string())
            .collect())
    };
    let names: BTreeSet<String> = rel(old)?.union(&rel(new)?).cloned().collect();
    let mut out = String::new();
    for n in names {
        let a = std::fs::read_to_string(old.join(&n)).ok();
        let b = std::fs::read_to_string(new.join(&n)).ok();
        if a == b {
            continue;
        }
        let an = if a.is_some() {
            format!("a/{n}")
        } else {
            "/dev/null".into()
        };
        let bn = if b.is_some() {
            format!("b/{n}")
        } else {
            "/dev/null".into()
        };
        let (a, b) = (a.unwrap_or_default(), b.unwrap_or_default());
        let diff = TextDiff::from_lines(&a, &b);
        let _ = write!(
            out,
            "{}",
            diff.unified_diff().context_radius(3).header(&an, &bn)
        );
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// Changes as the plan lists them: by action, then target (versions in
/// semver order).
fn listed(changes: &[Change]) -> Vec<&Change> {
    let mut out: Vec<&Change> = changes.iter().collect();
    out.sort_by(|a, b| crate::render::change_order(a, b));
    out
}

fn change_line(c: &Change) -> String {
    format!("{} {}", c.action.as_str(), c.target)
}

/// The `--base` section for text output, printed before the plan.
pub fn text(plan: &Plan, r: &BaseReport) -> String {
    let mut out = String::new();
    if r.policy_diff.is_empty() {
        let _ = writeln!(out, "Policy unchanged since {}.", r.revision);
    } else {
        let _ = writeln!(out, "Policy changes since {}:", r.revision);
        out.push_str(&r.policy_diff);
    }
    if let Some(why) = &r.base_invalid {
        let _ = writeln!(
            out,
            "\nNote: {why}. Every planned change is counted as introduced."
        );
    }
    let _ = writeln!(
        out,
        "\nOf {} planned changes, {} come from this policy change and {} would happen anyway (drift).",
        plan.changes.len(),
        r.introduced.len(),
        r.drift.len()
    );
    let drift: BTreeSet<&String> = r.drift.iter().collect();
    for c in listed(&plan.changes) {
        let mark = if drift.contains(&c.target) {
            "drift     "
        } else {
            "introduced"
        };
        let _ = writeln!(out, "  {mark} {}", change_line(c));
    }
    if !r.dropped.is_empty() {
        let _ = writeln!(out, "No longer planned because of this change:");
        for c in listed(&r.dropped) {
            let _ = writeln!(out, "  dropped    {}", change_line(c));
        }
    }
    out.push('\n');
    out
}

/// The `--base` section for a PR comment, printed before the plan.
/// Within `budget` characters (what a PR comment has left after the plan):
/// every entry when it fits, else each list and the policy diff cut, each
/// saying how much it leaves out.
pub fn markdown(plan: &Plan, r: &BaseReport, budget: usize) -> String {
    let mut out = String::new();
    for cap in [usize::MAX, 50, 10, 0] {
        out = markdown_capped(plan, r, cap);
        if out.chars().count() <= budget {
            break;
        }
    }
    out
}

fn markdown_capped(plan: &Plan, r: &BaseReport, cap: usize) -> String {
    let not_shown = crate::render::not_shown("regimen plan --base");
    let mut out = String::new();
    if let Some(why) = &r.base_invalid {
        let _ = writeln!(
            out,
            "> **Note:** {}. Every planned change is counted as introduced.\n",
            // The base's errors quote its text: shown as text.
            crate::render::plain_text(why)
        );
    }
    let _ = writeln!(
        out,
        "**This change introduces {} of {} planned changes; {} would happen anyway (drift).**\n",
        r.introduced.len(),
        plan.changes.len(),
        r.drift.len()
    );
    let drift: BTreeSet<&String> = r.drift.iter().collect();
    let (dr, intro): (Vec<&Change>, Vec<&Change>) = listed(&plan.changes)
        .into_iter()
        .partition(|c| drift.contains(&c.target));
    for (title, list) in [
        ("Introduced by this change", intro),
        ("Drift (happens with or without this change)", dr),
    ] {
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{title}:");
        for c in list.iter().take(cap) {
            let _ = writeln!(out, "- `{}` `{}`", c.action.as_str(), c.target);
        }
        if list.len() > cap {
            let _ = writeln!(out, "- … {} more {not_shown}", list.len() - cap);
        }
        out.push('\n');
    }
    if !r.dropped.is_empty() {
        let _ = writeln!(out, "No longer planned because of this change:");
        for c in listed(&r.dropped).into_iter().take(cap) {
            let _ = writeln!(out, "- `{}` `{}`", c.action.as_str(), c.target);
        }
        if r.dropped.len() > cap {
            let _ = writeln!(out, "- … {} more {not_shown}", r.dropped.len() - cap);
        }
        out.push('\n');
    }
    if r.policy_diff.is_empty() {
        let _ = writeln!(out, "Policy unchanged since `{}`.\n", r.revision);
    } else {
        // Longer than any run of backticks in the diff, so that no line of
        // it can close the block (policy text may hold fences of both kinds).
        let longest = r
            .policy_diff
            .split(|c| c != '`')
            .map(str::len)
            .max()
            .unwrap_or(0);
        let fence = "`".repeat(longest.max(2) + 1);
        // Cut with the lists: four diff lines per list entry.
        let lines: Vec<&str> = r.policy_diff.lines().collect();
        let keep = cap.saturating_mul(4).min(lines.len());
        let mut diff: String = lines[..keep].iter().map(|l| format!("{l}\n")).collect();
        if keep < lines.len() {
            diff.push_str(&format!(
                "… {} more diff lines {not_shown}\n",
                lines.len() - keep
            ));
        }
        let _ = writeln!(
            out,
            "<details><summary>Policy change since <code>{}</code></summary>\n\n{fence}diff\n{}{fence}\n\n</details>\n",
            html_escape(&r.revision),
            diff
        );
    }
    out
}

/// The plan's JSON with a `base` object added.
pub fn json(plan: &Plan, r: &BaseReport) -> String {
    let mut v = serde_json::to_value(plan).unwrap_or_default();
    if let (Some(obj), Ok(b)) = (v.as_object_mut(), serde_json::to_value(r)) {
        obj.insert("base".into(), b);
    }
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// GitHub Actions workflow commands, one `::error` per problem. `dir` is
/// prefixed so paths are relative to the repository root when `-C` is.
pub fn github_annotations(dir: &Path, diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        let file = if dir == Path::new(".") || dir.as_os_str().is_empty() {
            d.loc.file.to_string()
        } else {
            dir.join(&*d.loc.file).display().to_string()
        };
        let file = file.strip_prefix("./").unwrap_or(&file).to_string();
        let _ = writeln!(
            out,
            "::error file={},line={},col={},title=regimen::{}",
            escape_property(&file),
            d.loc.line,
            d.loc.col,
            escape_data(&d.message)
        );
    }
    out
}

// Per GitHub's workflow-command syntax.
fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The `--base` section of a big PR fits what the comment has left,
    /// cut where it says so; a small one is whole.
    #[test]
    fn the_base_section_fits_its_budget() {
        let mut plan = Plan::default();
        for i in 0..3000 {
            plan.changes.push(Change {
                target: format!("prod/app:build-{i:04}"),
                ..Change::new(crate::plan::Action::Copy)
            });
        }
        let r = BaseReport {
            revision: "origin/main".into(),
            policy_diff: (0..2000).map(|i| format!("+  - tag-{i}\n")).collect(),
            introduced: plan.changes.iter().map(|c| c.target.clone()).collect(),
            drift: Vec::new(),
            dropped: Vec::new(),
            base_invalid: None,
        };
        let md = markdown(&plan, &r, 9_000);
        assert!(md.chars().count() <= 9_000, "{}", md.len());
        assert!(
            md.contains("introduces 3000 of 3000"),
            "the counts are whole"
        );
        assert!(md.contains("more not shown"), "says what it cuts");
        assert!(md.contains("more diff lines not shown"), "the diff too");
        assert_eq!(md.matches("```").count() % 2, 0, "fences closed");
        // Policy text holding fences of both kinds cannot close the diff's.
        let tricky = BaseReport {
            policy_diff: " ~~~~~~~~~~~~~~~~\n ````````````````\n+@octocat **x**\n".into(),
            base_invalid: Some("`x` @octocat **bold** [a](http://evil)".into()),
            ..r.clone()
        };
        let md2 = markdown(&Plan::default(), &tricky, usize::MAX);
        let fence = "`".repeat(17);
        assert!(md2.contains(&format!("{fence}diff\n")), "{md2}");
        assert!(md2.contains("\\`x\\` @\u{200B}octocat \\*\\*bold"), "{md2}");
        let whole = markdown(&plan, &r, usize::MAX);
        assert!(!whole.contains("not shown") && whole.contains("build-2999"));
    }

    /// The base section lists changes as the plan does: by action, then
    /// versions in semver order (`1.2.0` before `1.10.0`).
    #[test]
    fn the_base_section_lists_versions_in_semver_order() {
        let mut plan = Plan::default();
        for (action, tag) in [
            (crate::plan::Action::Delete, "0.9.0"),
            (crate::plan::Action::Copy, "1.10.0"),
            (crate::plan::Action::Copy, "1.2.0"),
        ] {
            plan.changes.push(Change {
                target: format!("prod/app:{tag}"),
                ..Change::new(action)
            });
        }
        let r = BaseReport {
            revision: "main".into(),
            policy_diff: String::new(),
            introduced: plan.changes.iter().map(|c| c.target.clone()).collect(),
            drift: Vec::new(),
            dropped: Vec::new(),
            base_invalid: None,
        };
        let lines = |s: &str| -> Vec<String> {
            s.lines()
                .filter(|l| l.contains("prod/app:"))
                .map(|l| l.trim().to_string())
                .collect()
        };
        assert_eq!(
            lines(&text(&plan, &r)),
            [
                "introduced copy prod/app:1.2.0",
                "introduced copy prod/app:1.10.0",
                "introduced delete prod/app:0.9.0"
            ]
        );
        assert_eq!(
            lines(&markdown(&plan, &r, usize::MAX)),
            [
                "- `copy` `prod/app:1.2.0`",
                "- `copy` `prod/app:1.10.0`",
                "- `delete` `prod/app:0.9.0`"
            ]
        );
    }

    #[test]
    fn annotations_are_escaped_and_located() {
        let d = Diagnostic {
            loc: crate::config::node::Loc {
                file: Arc::from("a,b.yaml"),
                line: 3,
                col: 7,
            },
            message: "unknown key `pruen` (did you mean `prune`?)\n100%".into(),
        };
        insta::assert_snapshot!(github_annotations(Path::new("policy"), &[d]), @"::error file=policy/a%2Cb.yaml,line=3,col=7,title=regimen::unknown key `pruen` (did you mean `prune`?)%0A100%25");
    }
}
