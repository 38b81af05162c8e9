//! Each subcommand: load, call the library, print, pick the exit code.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{Cli, Command, InventoryFormat, LogFormat, PlanFormat, ValidateFormat};
use crate::apply::{Outcome, Reporter};
use crate::config;
use crate::model::Timestamp;
use crate::plan::{Change, Plan};

pub fn init_logging(cli: &Cli) {
    // The daemon's log is its output: info (each reconcile) by default.
    let daemon = u8::from(matches!(cli.command, Command::Run(_)));
    let level = if cli.quiet {
        "error"
    } else {
        match cli.verbose + daemon {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("REGIMEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("regimen={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // No colour codes in files and log pipelines.
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match cli.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
}

pub fn dispatch(cli: Cli) -> i32 {
    let verbose = cli.verbose > 0;
    match cli.command {
        Command::Validate { dir, format } => validate(&dir.dir, format),
        Command::Schema => schema(),
        Command::Plan {
            dir,
            out,
            format,
            detailed_exitcode,
            target,
            base,
            shard,
        } => plan_cmd(
            &dir.dir,
            out.as_deref(),
            format,
            detailed_exitcode,
            &Scope {
                target,
                shard,
                base,
            },
            verbose,
        ),
        Command::Apply {
            dir,
            auto_approve,
            target,
            shard,
            planfile,
        } => apply_cmd(
            &dir.dir,
            auto_approve,
            &Scope {
                target,
                shard,
                base: None,
            },
            planfile.as_deref(),
            verbose,
        ),
        Command::Run(args) => crate::gitops::run(args),
        Command::Inventory { dir, format, out } => inventory_cmd(&dir.dir, format, out.as_deref()),
    }
}

/// A command's plan and apply run on one thread. They wait on registries far
/// more than they compute, and on a multi-threaded runtime each response
/// crossed threads (about two futex calls per request): a 5,000-tag plan
/// took 0.52 s of CPU, 0.36 s on one thread. Digests and TLS of big blobs
/// share that thread, some hundreds of MB/s, more than most links to a
/// registry carry. `run` (the daemon) keeps its multi-threaded runtime.
fn block_on<F: std::future::Future>(fut: F) -> Result<F::Output, String> {
    Ok(runtime()?.block_on(fut))
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// The registries and the runtime they are used on: `apply` plans and then
/// applies through the same ones (a reqwest pool's connections live on the
/// runtime that made them), keeping connections, tokens and what it learnt
/// of each registry (whether it has the referrers API).
struct Session {
    rt: tokio::runtime::Runtime,
    registries: crate::observe::Registries,
}

impl Session {
    fn open(policy: &config::Policy) -> Result<Session, String> {
        Ok(Session {
            rt: runtime()?,
            registries: crate::registry::open_all(policy),
        })
    }
}

fn print_diagnostics(diags: &[config::Diagnostic]) {
    let mut err = std::io::stderr().lock();
    for d in diags {
        let _ = writeln!(err, "{d}");
    }
    let _ = writeln!(
        err,
        "{} error{} in the policy",
        diags.len(),
        if diags.len() == 1 { "" } else { "s" }
    );
}

fn load(dir: &Path) -> Option<config::Policy> {
    match config::load(dir) {
        Ok(p) => Some(p),
        Err(diags) => {
            print_diagnostics(&diags);
            None
        }
    }
}

fn validate(dir: &Path, format: ValidateFormat) -> i32 {
    if format == ValidateFormat::Github {
        if let Err(diags) = config::load(dir) {
            print!("{}", crate::gitops::pr::github_annotations(dir, &diags));
        }
    }
    match load(dir) {
        Some(p) => {
            println!(
                "The policy is valid: {} registries, {} mirrors, {} promotions, {} retags, {} retention rules, {} hosts.",
                p.registries.len(),
                p.mirrors.len(),
                p.promotions.len(),
                p.retags.len(),
                p.retention.len(),
                p.hosts.len()
            );
            0
        }
        None => 1,
    }
}

/// Observes everything managed and prints the inventory. Exit 1 only on
/// errors: violations are reported, not judged here.
fn inventory_cmd(dir: &Path, format: InventoryFormat, out: Option<&Path>) -> i32 {
    let Some(policy) = load(dir) else { return 1 };
    let registries = crate::registry::open_all(&policy);
    let now = Timestamp::now();
    let observed = match block_on(crate::inventory::observe(&policy, &registries, now)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let inv = crate::inventory::build(&policy, &observed, now);
    for u in &inv.unobserved {
        tracing::warn!("unobserved {}: {}", u.subject, u.reason);
    }
    let text = match format {
        InventoryFormat::Text => crate::inventory::render_text(&inv),
        InventoryFormat::Json => crate::inventory::render_json(&inv),
        InventoryFormat::Csv => crate::inventory::render_csv(&inv),
        InventoryFormat::Html => crate::inventory::render_html(&inv),
    };
    match out {
        Some(path) => match std::fs::write(path, text) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: writing {}: {e}", path.display());
                1
            }
        },
        None => {
            let mut o = std::io::stdout().lock();
            match o.write_all(text.as_bytes()).and_then(|_| o.flush()) {
                Ok(()) => 0,
                // A closed pipe (`| head`) is not the inventory's failure.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        }
    }
}

fn schema() -> i32 {
    match serde_json::to_string_pretty(&config::json_schema()) {
        Ok(s) => {
            println!("{s}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn target_globs(target: &[String]) -> Result<Vec<globset::GlobMatcher>, String> {
    target
        .iter()
        .map(|t| {
            globset::Glob::new(t)
                .map(|g| g.compile_matcher())
                .map_err(|e| format!("--target `{t}`: {}", e.kind()))
        })
        .collect()
}

/// Which part of the plan a command works on.
struct Scope {
    target: Vec<String>,
    shard: Option<String>,
    /// `plan --base REV`.
    base: Option<String>,
}

impl Scope {
    fn cut(&self, plan: &mut Plan) -> Result<(), String> {
        plan.retain_targets(&target_globs(&self.target)?);
        let mut scope: Vec<String> = self
            .target
            .iter()
            .map(|t| format!("--target {t}"))
            .collect();
        if let Some(s) = crate::gitops::parse_shard(self.shard.as_deref())? {
            s.retain(plan);
            scope.extend(self.shard.iter().map(|s| format!("--shard {s}")));
        }
        if !scope.is_empty() {
            plan.scope = Some(scope.join(" "));
        }
        Ok(())
    }
}

/// Observes and plans.
fn make_plan(policy: &config::Policy, scope: &Scope, session: &Session) -> Result<Plan, String> {
    target_globs(&scope.target)?;
    crate::gitops::parse_shard(scope.shard.as_deref())?;
    // libgit2's first use loads OpenSSL and the system CA bundle (tens of
    // milliseconds): do it while the registries are read, not after.
    let root = policy.root.clone();
    let revision = std::thread::spawn(move || git_revision(&root));
    let now = Timestamp::now();
    let observed = session
        .rt
        .block_on(crate::observe::observe(policy, &session.registries, now));
    let mut plan = crate::plan::plan(policy, &observed, now);
    (plan.revision, plan.revision_modified) = revision.join().unwrap_or((None, false));
    scope.cut(&mut plan)?;
    Ok(plan)
}

/// The policy repo's commit, when the directory is in a Git work tree
/// (libgit2: the container image has no git binary), and whether the
/// policy folder has uncommitted changes.
fn git_revision(dir: &Path) -> (Option<String>, bool) {
    crate::gitops::source::revision_state(dir)
}

fn render(plan: &Plan, format: PlanFormat, verbose: bool) -> String {
    match format {
        PlanFormat::Text => crate::render::text(plan, std::io::stdout().is_terminal(), verbose),
        PlanFormat::Json => crate::render::json(plan),
        PlanFormat::Markdown => crate::render::markdown(plan),
    }
}

fn plan_cmd(
    dir: &Path,
    out: Option<&Path>,
    format: PlanFormat,
    detailed: bool,
    scope: &Scope,
    verbose: bool,
) -> i32 {
    let Some(policy) = load(dir) else { return 1 };
    let made = match &scope.base {
        Some(rev) => crate::gitops::pr::plan_with_base(&policy, dir, rev).and_then(|(mut p, b)| {
            (p.revision, p.revision_modified) = git_revision(&policy.root);
            scope.cut(&mut p)?;
            Ok((p, Some(b)))
        }),
        None => Session::open(&policy)
            .and_then(|session| make_plan(&policy, scope, &session))
            .map(|p| (p, None)),
    };
    let (plan, base) = match made {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    use crate::gitops::pr;
    match (&base, format) {
        (None, _) => print!("{}", render(&plan, format, verbose)),
        (Some(b), PlanFormat::Json) => print!("{}", pr::json(&plan, b)),
        (Some(b), PlanFormat::Markdown) => {
            // Summary first (SPEC); the PR attribution and diff after it.
            let md = render(&plan, format, verbose);
            // GitHub's comment limit is 65,536 characters, both parts together.
            let left = 65_000usize.saturating_sub(md.chars().count() + 1);
            print!("{md}\n{}", pr::markdown(&plan, b, left))
        }
        (Some(b), PlanFormat::Text) => {
            print!("{}{}", pr::text(&plan, b), render(&plan, format, verbose))
        }
    }
    if let Some(path) = out {
        if let Err(e) = std::fs::write(path, crate::render::json(&plan)) {
            eprintln!("error: cannot save the plan to {}: {e}", path.display());
            return 1;
        }
        eprintln!(
            "Saved the plan to {}. Apply it with: {}",
            path.display(),
            apply_hint(dir, path)
        );
    }
    exit_code(&policy, &plan, detailed)
}

/// The command that applies a saved plan, ready to paste into a shell:
/// `regimen apply -C 'my policy' plan.json` (`-C` only when DIR is not `.`).
fn apply_hint(dir: &Path, planfile: &Path) -> String {
    let default_dir = dir.components().all(|c| c == std::path::Component::CurDir);
    if default_dir {
        format!("regimen apply {}", shell_word(planfile))
    } else {
        format!(
            "regimen apply -C {} {}",
            shell_word(dir),
            shell_word(planfile)
        )
    }
}

/// A path as one POSIX shell word: as is when it only has characters no
/// shell treats specially, else in single quotes (`'` as `'\''`). A
/// relative path starting with `-` gets `./` so it is not read as a flag.
fn shell_word(path: &Path) -> String {
    let s = path.to_string_lossy();
    let s = if s.starts_with('-') {
        format!("./{s}")
    } else {
        s.into_owned()
    };
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:@%+=,".contains(c));
    if plain {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn exit_code(policy: &config::Policy, plan: &Plan, detailed: bool) -> i32 {
    let fail_on_violation = policy
        .policies
        .as_ref()
        .is_some_and(|p| p.on_violation == config::OnViolation::Fail);
    if fail_on_violation && !plan.violations.is_empty() {
        return 1;
    }
    if detailed && plan.has_changes() {
        2
    } else {
        0
    }
}

/// Why `on_violation: fail` makes this run exit 1, for stderr; `None` when
/// it does not. `list` adds the violations, as `plan` shows them (a saved
/// plan's were never printed by this run).
fn violation_failure(policy: &config::Policy, plan: &Plan, list: bool) -> Option<String> {
    let fail = policy
        .policies
        .as_ref()
        .is_some_and(|p| p.on_violation == config::OnViolation::Fail);
    let n = plan.violations.len();
    if !fail || n == 0 {
        return None;
    }
    let mut s = format!(
        "{n} policy violation{}: `on_violation: fail` makes the exit status 1.\n",
        if n == 1 { "" } else { "s" }
    );
    if list {
        for v in &plan.violations {
            let policy = match &v.kind {
                Some(k) => format!("{}({k})", v.policy),
                None => v.policy.clone(),
            };
            s.push_str(&format!(
                "  ! violation {policy} {}: {}\n",
                v.subject, v.message
            ));
        }
    }
    Some(s)
}

/// One line per change (logs, CI), or a progress bar on a terminal.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    out: Mutex<()>,
    /// Set by SIGTERM/SIGINT: what has begun writing finishes, nothing new starts.
    stop: Arc<AtomicBool>,
}

impl Progress {
    fn new(total: usize) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total as u64);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} changes, {msg}")
            {
                b.set_style(style);
            }
            b
        });
        Progress {
            bar,
            out: Mutex::new(()),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
}

fn outcome_line(c: &Change, o: &Outcome) -> String {
    match o {
        Outcome::Done => format!("{} {}: done", c.action.as_str(), c.target),
        Outcome::AlreadyDone => format!("{} {}: already in place", c.action.as_str(), c.target),
        Outcome::Stale(why) => {
            format!("{} {}: STALE, not done: {why}", c.action.as_str(), c.target)
        }
        Outcome::Failed(why) => format!("{} {}: FAILED: {why}", c.action.as_str(), c.target),
        Outcome::NotStarted => format!("{} {}: not started", c.action.as_str(), c.target),
    }
}

impl Reporter for Progress {
    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn finished(&self, c: &Change, o: &Outcome, bytes: u64) {
        let line = outcome_line(c, o);
        match &self.bar {
            Some(b) => {
                b.inc(1);
                b.set_message(format!("{} copied", human_bytes(bytes)));
                b.println(&line);
            }
            None => {
                let _g = self.out.lock();
                println!("{line}");
            }
        }
        match o {
            Outcome::Done | Outcome::AlreadyDone => {
                tracing::info!(action = c.action.as_str(), target = %c.target, "{line}")
            }
            _ => tracing::warn!(action = c.action.as_str(), target = %c.target, "{line}"),
        }
    }
}

fn human_bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

fn apply_cmd(
    dir: &Path,
    auto_approve: bool,
    scope: &Scope,
    planfile: Option<&Path>,
    verbose: bool,
) -> i32 {
    let Some(policy) = load(dir) else { return 1 };
    let session = match Session::open(&policy) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let plan = match planfile {
        Some(path) => {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: cannot read the plan {}: {e}", path.display());
                    return 1;
                }
            };
            let mut plan: Plan = match serde_json::from_str(&text) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {} is not a saved regimen plan: {e}", path.display());
                    return 1;
                }
            };
            if plan.format_version != crate::plan::FORMAT_VERSION {
                eprintln!(
                    "error: {} has plan format {}, this regimen reads format {}",
                    path.display(),
                    plan.format_version,
                    crate::plan::FORMAT_VERSION
                );
                return 1;
            }
            // The names in a saved plan must still mean the same registries
            // and hosts, or it would copy and delete somewhere else.
            let now = crate::plan::endpoints(&policy);
            let moved = plan.endpoints.moved(&now);
            for (what, then, now) in &moved {
                eprintln!(
                    "error: {} was planned with {what} at {then}; the policy in {} has it at {now}",
                    path.display(),
                    dir.display()
                );
            }
            // A name the policy no longer defines would fail only its own
            // changes, leaving the plan half-applied: refuse it whole.
            let undefined = plan.undefined_names(&now);
            for what in &undefined {
                eprintln!(
                    "error: {} changes {what}, which the policy in {} does not define",
                    path.display(),
                    dir.display()
                );
            }
            if plan.endpoints.is_empty() && !plan.changes.is_empty() {
                // Plans saved before endpoints were recorded (format 1 all
                // the same) have none; their names are still checked above.
                eprintln!(
                    "warning: {} records no registry endpoints (saved by an older regimen, or \
                     edited): only its registry and host names could be checked",
                    path.display()
                );
            } else {
                // regimen records every name a plan's changes use: one
                // missing means an edited plan, whose name is all we can check.
                for what in plan.undefined_names(&plan.endpoints) {
                    eprintln!(
                        "warning: {} records no endpoint for {what} (edited?): only its name \
                         could be checked",
                        path.display()
                    );
                }
            }
            if !moved.is_empty() || !undefined.is_empty() {
                eprintln!("Nothing was applied: make a new plan against this policy.");
                return 1;
            }
            let saved: Vec<String> = plan.changes.iter().map(|c| c.target.clone()).collect();
            if let Err(e) = scope.cut(&mut plan) {
                eprintln!("error: {e}");
                return 1;
            }
            // A --target that selects nothing from a plan that has changes
            // is a typo, not a finished apply.
            if !scope.target.is_empty() && !saved.is_empty() && plan.changes.is_empty() {
                eprintln!(
                    "error: {} matches no change of the saved plan {} that can go alone; its \
                     changes are on: {}{}\nNothing was applied.",
                    scope
                        .target
                        .iter()
                        .map(|t| format!("--target {t}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                    path.display(),
                    saved
                        .iter()
                        .take(10)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", "),
                    if saved.len() > 10 {
                        format!(" and {} more", saved.len() - 10)
                    } else {
                        String::new()
                    }
                );
                return 1;
            }
            plan
        }
        None => {
            let plan = match make_plan(&policy, scope, &session) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {e}");
                    return 1;
                }
            };
            print!("{}", render(&plan, PlanFormat::Text, verbose));
            if !plan.has_changes() {
                if let Some(why) = violation_failure(&policy, &plan, false) {
                    eprint!("{why}");
                }
                return exit_code(&policy, &plan, false);
            }
            if !auto_approve {
                if !std::io::stdin().is_terminal() {
                    eprintln!(
                        "error: not on a terminal: run with --auto-approve to apply without asking"
                    );
                    return 1;
                }
                print!("\nDo you want to apply these changes? Only 'yes' is accepted: ");
                let _ = std::io::stdout().flush();
                let mut answer = String::new();
                let _ = std::io::stdin().lock().read_line(&mut answer);
                if answer.trim() != "yes" {
                    println!("Apply cancelled.");
                    return 1;
                }
            }
            plan
        }
    };
    let registries = &session.registries;
    let progress = Progress::new(plan.changes.len());
    let report = session.rt.block_on(async {
        // A CI job cancelled mid-apply (SIGTERM) or Ctrl-C: changes that
        // have begun writing finish, so no tag is left half-done; a second
        // signal exits at once.
        let stop = progress.stop.clone();
        let bar = progress.bar.clone();
        let signals = tokio::spawn(async move {
            crate::gitops::wait_signal().await;
            let say = "stopping: changes that have begun finish, no more start (signal again to exit now)";
            match &bar {
                Some(b) => b.println(say),
                None => eprintln!("{say}"),
            }
            stop.store(true, Ordering::SeqCst);
            crate::gitops::wait_signal().await;
            eprintln!("second stop request: exiting now");
            std::process::exit(1);
        });
        let hosts = crate::host::Hosts::for_plan(&policy, &plan).await;
        let report = crate::apply::apply(&plan, registries, &hosts, &progress).await;
        signals.abort();
        report
    });
    crate::observe::cache::record_applied(&policy, &report.outcomes);
    if let Some(b) = &progress.bar {
        b.finish_and_clear();
    }
    let not_started = plan.changes.len().saturating_sub(report.outcomes.len());
    if progress.stop_requested() {
        println!(
            "Apply stopped: {} done, {} already in place, {} stale, {} failed, {not_started} not started; {} copied.",
            report.done,
            report.already,
            report.stale,
            report.failed,
            human_bytes(report.bytes)
        );
        eprintln!("Stopped before every change was applied: run `regimen plan` again to see what is left.");
        return 1;
    }
    println!(
        "Apply complete: {} done, {} already in place, {} stale, {} failed; {} copied.",
        report.done,
        report.already,
        report.stale,
        report.failed,
        human_bytes(report.bytes)
    );
    if !report.ok() {
        if report.stale > 0 {
            eprintln!("Stale changes were not applied: run `regimen plan` again to see the current state.");
        }
        return 1;
    }
    if let Some(why) = violation_failure(&policy, &plan, planfile.is_some()) {
        eprint!("{why}");
    }
    exit_code(&policy, &plan, false)
}

#[cfg(test)]
mod tests {
    use super::{apply_hint, shell_word};
    use std::path::Path;

    #[test]
    fn apply_hint_names_the_policy_dir_unless_it_is_the_default() {
        let hint = |d: &str, f: &str| apply_hint(Path::new(d), Path::new(f));
        assert_eq!(hint(".", "plan.json"), "regimen apply plan.json");
        assert_eq!(hint("./", "plan.json"), "regimen apply plan.json");
        assert_eq!(
            hint("policy", "plan.json"),
            "regimen apply -C policy plan.json"
        );
        assert_eq!(
            hint("/srv/my policy", "/tmp/out dir/plan.json"),
            "regimen apply -C '/srv/my policy' '/tmp/out dir/plan.json'"
        );
    }

    #[test]
    fn shell_words_quote_what_a_shell_would_change() {
        let w = |s: &str| shell_word(Path::new(s));
        assert_eq!(w("a/b-1.2_x:y@z"), "a/b-1.2_x:y@z");
        assert_eq!(w("it's"), "'it'\\''s'");
        assert_eq!(w("$HOME/*.json"), "'$HOME/*.json'");
        assert_eq!(w("~/p"), "'~/p'");
        assert_eq!(w("-p.json"), "./-p.json");
        assert_eq!(w(""), "''");
    }
}
