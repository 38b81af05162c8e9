//! `regimen run`: the reconciler daemon. Triggers (start, interval poll,
//! cron schedule, file watch) feed one queue that coalesces them; a single
//! loop runs one reconcile at a time. SIGTERM/SIGINT stop it between changes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use super::reconcile::{self, Failure, Options};
use super::source::{Snapshot, Source};
use super::{http, metrics};

/// What the loop owes: at most one pending reconcile, however many
/// triggers arrived while one was running.
#[derive(Default)]
pub struct Queue {
    pending: Mutex<Pending>,
    notify: Notify,
}

#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    any: bool,
    /// Reconcile even if the source has not changed (schedule, watch, start).
    pub force: bool,
    pub reasons: Vec<&'static str>,
}

impl Queue {
    pub fn push(&self, force: bool, reason: &'static str) {
        if let Ok(mut p) = self.pending.lock() {
            p.any = true;
            p.force |= force;
            if !p.reasons.contains(&reason) {
                p.reasons.push(reason);
            }
        }
        // Stores a permit when nobody waits: a push is never lost.
        self.notify.notify_one();
    }

    pub async fn next(&self) -> Pending {
        loop {
            if let Ok(mut p) = self.pending.lock() {
                if p.any {
                    return std::mem::take(&mut *p);
                }
            }
            self.notify.notified().await;
        }
    }
}

pub struct Config {
    pub source: Source,
    pub interval: Duration,
    pub schedule: Option<croner::Cron>,
    pub watch: Option<PathBuf>,
    pub listen: Option<std::net::SocketAddr>,
    pub options: Options,
    pub once: bool,
}

/// Runs until stopped (or after one reconcile with `once`); the exit code.
pub async fn run(cfg: Config) -> i32 {
    let m = metrics::get();
    m.set_interval(cfg.interval);
    crate::registry::set_request_observer(metrics::registry_request);
    let queue = Arc::new(Queue::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (stop_tx, mut stop_rx) = watch::channel(false);

    if let Some(addr) = cfg.listen {
        match http::serve(addr).await {
            Ok(bound) => {
                tracing::info!(listen = %bound, "serving /healthz, /readyz, /metrics on {bound}")
            }
            Err(e) => {
                tracing::error!("cannot listen on {addr}: {e}");
                return 1;
            }
        }
    }
    spawn_signals(stop.clone(), stop_tx);
    let has_schedule = cfg.schedule.is_some();
    if !cfg.once {
        spawn_interval(queue.clone(), cfg.interval);
        if let Some(cron) = cfg.schedule {
            spawn_schedule(queue.clone(), cron);
        }
        if let Some(dir) = &cfg.watch {
            if let Err(e) = spawn_watch(queue.clone(), dir.clone()) {
                tracing::error!("--watch {}: {e}", dir.display());
                return 1;
            }
        }
    }
    tracing::info!(
        source = %cfg.source.describe(),
        interval = %humantime::format_duration(cfg.interval),
        plan_only = cfg.options.plan_only,
        shard = cfg.options.shard.map(|s| s.to_string()).unwrap_or_default(),
        "regimen run: reconciling {}",
        cfg.source.describe()
    );
    queue.push(true, "start");
    let source = Arc::new(Mutex::new(cfg.source));
    let mut last_version: Option<String> = None;
    // The last look at the source failed: that failure is what `/readyz`
    // and the metrics show, so the next good read reconciles (with a
    // schedule, an unchanged commit would otherwise wait for it).
    let mut source_failed = false;
    let mut code = 0;
    loop {
        let pending = tokio::select! {
            p = queue.next() => p,
            _ = stop_rx.changed() => break,
        };
        if stop.load(Ordering::SeqCst) {
            break;
        }
        m.checked();
        // The reconcile's duration includes reading the source (a slow fetch
        // is part of it), and a failed read is timed too.
        let t0 = Instant::now();
        let read = tokio::select! {
            r = read_source(&source) => Some(r),
            // A Git server that stopped answering holds a fetch for minutes
            // (libgit2's timeouts); nothing has been changed yet, so a stop
            // need not wait for it. Its thread is left behind: the process
            // exits, the cache's lock goes with it, and a Git lock file it
            // leaves is cleared by the next start.
            _ = stop_rx.changed() => None,
        };
        let Some(read) = read else {
            tracing::info!("stop requested while reading the policy source: nothing was changed");
            break;
        };
        let snap = match read {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the policy source: {e}");
                m.finished("error", Some(e), t0.elapsed(), None);
                code = 1;
                source_failed = true;
                if cfg.once {
                    break;
                }
                continue;
            }
        };
        let changed = last_version.as_deref() != Some(snap.version.as_str());
        // With a schedule the interval only looks for new commits; without
        // one, every interval is also a full reconcile (drift correction).
        if !pending.force && !changed && has_schedule && !source_failed {
            continue;
        }
        source_failed = false;
        // Say what the interval found: a new commit (or edited files). A
        // watch, schedule or start needs no such word.
        let mut reasons = pending.reasons.clone();
        if changed && last_version.is_some() && !pending.force {
            reasons.push(if snap.in_use.is_some() {
                "commit"
            } else {
                "files"
            });
        }
        last_version = Some(snap.version.clone());
        code = one(&snap, &cfg.options, &stop, &mut stop_rx, &reasons, t0).await;
        if cfg.once || stop.load(Ordering::SeqCst) {
            break;
        }
    }
    if stop.load(Ordering::SeqCst) {
        tracing::info!("stopped");
        return 0;
    }
    code
}

async fn read_source(source: &Arc<Mutex<Source>>) -> Result<Snapshot, String> {
    let s = source.clone();
    // git2 and file reads block: keep them off the async workers.
    tokio::task::spawn_blocking(move || match s.lock() {
        Ok(mut src) => src.snapshot(),
        Err(_) => Err("the source is unavailable after an earlier panic".into()),
    })
    .await
    .map_err(|e| format!("reading the source: {e}"))?
}

/// One reconcile with its logs and metrics; the exit code it stands for.
async fn one(
    snap: &Snapshot,
    opts: &Options,
    stop: &AtomicBool,
    stop_rx: &mut watch::Receiver<bool>,
    reasons: &[&'static str],
    t0: Instant,
) -> i32 {
    let m = metrics::get();
    // Outside Git (a plain `-C` folder) there is no revision.
    let revision = snap
        .revision
        .clone()
        .unwrap_or_else(|| "(none)".to_string());
    // What `/readyz` shows: a folder with uncommitted edits is not its commit.
    let shown = if snap.modified {
        format!("{revision} (with uncommitted changes)")
    } else {
        revision.clone()
    };
    tracing::info!(revision = %revision, revision_modified = snap.modified, trigger = %reasons.join(","), "reconcile started");
    m.started();
    let applying = AtomicBool::new(false);
    let fut = reconcile::reconcile(snap, opts, stop, &applying);
    tokio::pin!(fut);
    let result = loop {
        tokio::select! {
            r = &mut fut => break Some(r),
            _ = stop_rx.changed() => {
                // Before the first change nothing is in flight: stop now.
                // During apply, the executor stops between changes.
                if !applying.load(Ordering::SeqCst) {
                    break None;
                }
            }
        }
    };
    let took = t0.elapsed();
    match result {
        None => {
            tracing::info!(revision = %revision, "stopped before applying anything");
            m.finished("stopped", None, took, None);
            0
        }
        Some(Err(Failure::Invalid(diags))) => {
            for d in &diags {
                tracing::error!(revision = %revision, file = %d.loc.file, line = d.loc.line, col = d.loc.col, "{d}");
            }
            let msg = format!(
                "invalid policy at revision {revision}: {} error{}; nothing was changed",
                diags.len(),
                if diags.len() == 1 { "" } else { "s" }
            );
            tracing::error!(revision = %revision, errors = diags.len(), "{msg}");
            m.policy_valid(false);
            m.finished("invalid_policy", Some(msg), took, Some(&shown));
            1
        }
        Some(Err(Failure::Error(e))) => {
            tracing::error!(revision = %revision, "reconcile failed: {e}");
            m.finished("error", Some(e), took, Some(&shown));
            1
        }
        Some(Ok(r)) => {
            m.policy_valid(true);
            let ok = r.ok();
            let (done, already, stale, failed) = r
                .report
                .as_ref()
                .map(|x| (x.done, x.already, x.stale, x.failed))
                .unwrap_or_default();
            // Cut short by a stop, with nothing else wrong: not a failure
            // (the next start plans the rest again).
            let stopped = r.not_started > 0
                && stop.load(Ordering::SeqCst)
                && !r.violation_failure
                && stale == 0
                && failed == 0;
            // Something could not be observed (a registry or host down): what
            // could be seen was reconciled, the rest was not, so this is no
            // success for `last_success_timestamp_seconds` or `/readyz`.
            let incomplete = ok && !r.plan.complete;
            let result = match (ok, stopped) {
                (true, _) if incomplete => "incomplete",
                (true, _) => "success",
                (false, true) => "stopped",
                (false, false) => "failed",
            };
            // A failed reconcile is a warning (alerts filter on the level).
            macro_rules! finished_line {
                ($level:ident) => {
                    tracing::$level!(
                        revision = %revision,
                        result,
                        planned = r.plan.changes.len(),
                        done,
                        already,
                        stale,
                        failed,
                        not_started = r.not_started,
                        seconds = took.as_secs_f64(),
                        "reconcile finished: {} planned, {done} done, {already} already in place, {stale} stale, {failed} failed",
                        r.plan.changes.len()
                    )
                };
            }
            if result == "failed" || result == "incomplete" {
                finished_line!(warn);
            } else {
                finished_line!(info);
            }
            if incomplete {
                let u = &r.plan.unobserved;
                let why = format!(
                    "incomplete: {} could not be observed (first: {}: {})",
                    u.len(),
                    u.first().map(|x| x.subject.as_str()).unwrap_or("?"),
                    u.first().map(|x| x.reason.as_str()).unwrap_or("?"),
                );
                tracing::warn!(revision, "reconcile {why}");
                m.finished("incomplete", Some(why), took, Some(&shown));
                // As `apply` exits: what could be seen was reconciled.
                0
            } else if ok {
                m.finished("success", None, took, Some(&shown));
                0
            } else if stopped {
                m.finished(
                    "stopped",
                    Some(format!(
                        "stopped with {} changes not started",
                        r.not_started
                    )),
                    took,
                    Some(&shown),
                );
                0
            } else {
                let why = if r.violation_failure {
                    format!(
                        "{} policy violations (logged above) under on_violation: fail",
                        r.plan.violations.len()
                    )
                } else {
                    format!(
                        "{stale} stale, {failed} failed, {} not started",
                        r.not_started
                    )
                };
                tracing::warn!(revision, "reconcile failed: {why}");
                m.finished("failed", Some(why), took, Some(&shown));
                1
            }
        }
    }
}

fn spawn_signals(stop: Arc<AtomicBool>, tx: watch::Sender<bool>) {
    tokio::spawn(async move {
        wait_signal().await;
        tracing::info!("stop requested: finishing the change in flight, then exiting (signal again to exit now)");
        stop.store(true, Ordering::SeqCst);
        let _ = tx.send(true);
        wait_signal().await;
        tracing::warn!("second stop request: exiting now");
        std::process::exit(1);
    });
}

/// Returns at the next SIGTERM or SIGINT (Ctrl-C).
pub async fn wait_signal() {
    #[cfg(unix)]
    {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match term {
            Ok(mut t) => {
                tokio::select! {
                    _ = t.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn spawn_interval(queue: Arc<Queue>, every: Duration) {
    tokio::spawn(async move {
        let mut t = tokio::time::interval(every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t.tick().await; // the first tick is now: the start trigger covers it
        loop {
            t.tick().await;
            queue.push(false, "interval");
        }
    });
}

fn spawn_schedule(queue: Arc<Queue>, cron: croner::Cron) {
    tokio::spawn(async move {
        // The next time strictly after the last one fired, so a wake-up a
        // hair early (wall clock vs timer) never fires one time twice.
        let mut after = chrono::Utc::now();
        loop {
            let Ok(next) = cron.find_next_occurrence(&after, false) else {
                tracing::warn!("--schedule: no next time found; the schedule stops");
                return;
            };
            let wait = (next - chrono::Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait).await;
            queue.push(true, "schedule");
            after = next.max(chrono::Utc::now());
        }
    });
}

/// Quiet time after the last file event before reconciling: editors write
/// files in several steps, and a `git pull` touches many files.
const DEBOUNCE: Duration = Duration::from_millis(500);

/// A path (relative to the policy folder) that is a policy file, or the
/// `..data` symlink of a Kubernetes ConfigMap or Secret volume, which the
/// kubelet swaps to update every file at once (its files link through it,
/// and only hidden paths see events).
fn is_policy_file(rel: &std::path::Path) -> bool {
    if rel == std::path::Path::new("..data") {
        return true;
    }
    let visible = rel
        .components()
        .all(|c| !c.as_os_str().to_string_lossy().starts_with('.'));
    let yaml = rel.extension().is_some_and(|e| e == "yaml" || e == "yml");
    visible && yaml
}

fn spawn_watch(queue: Arc<Queue>, dir: PathBuf) -> Result<(), String> {
    use notify::Watcher as _;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    // Absolute, so event paths strip to policy-relative ones (the folder
    // itself may sit below a hidden one, e.g. a temp dir).
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let root = dir.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        // Only policy files count: `*.yaml`/`*.yml`, not hidden, not below a
        // hidden folder (.git churns). An `oci:` registry in the folder, a
        // README or a log file written there is not policy, and reacting to
        // it would reconcile after every apply (or for ever).
        let relevant = ev.paths.iter().any(|p| {
            let rel = p.strip_prefix(&root).unwrap_or(p);
            is_policy_file(rel)
        });
        if relevant {
            let _ = tx.send(());
        }
    })
    .map_err(|e| e.to_string())?;
    watcher
        .watch(&dir, notify::RecursiveMode::Recursive)
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _keep = watcher;
        while rx.recv().await.is_some() {
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
            queue.push(true, "watch");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_policy_files_wake_the_watch() {
        use std::path::Path;
        for yes in ["policy.yaml", "teams/api.yml", "..data"] {
            assert!(is_policy_file(Path::new(yes)), "{yes}");
        }
        for no in [
            "out/prod/api/blobs/sha256/ab12",
            "out/prod/api/index.json",
            "README.md",
            "regimen.log",
            ".git/index",
            ".hidden/p.yaml",
            "teams/.p.yaml",
            "..data_tmp",
            "..2026_11_24_13_00_00.123/policy.yaml",
        ] {
            assert!(!is_policy_file(Path::new(no)), "{no}");
        }
    }

    #[tokio::test]
    async fn triggers_during_a_run_coalesce_into_one() {
        let q = Queue::default();
        q.push(false, "interval");
        q.push(true, "watch");
        q.push(false, "interval");
        let p = q.next().await;
        assert!(p.force);
        assert_eq!(p.reasons, vec!["interval", "watch"]);
        // Nothing more is owed.
        let more = tokio::time::timeout(Duration::from_millis(50), q.next()).await;
        assert!(more.is_err());
    }
}
