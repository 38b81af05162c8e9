//! One reconcile, as a library call: load the policy of a snapshot,
//! observe, plan, and (unless plan-only) apply, logging the commit, the plan
//! summary and every change. The daemon runs this on each trigger.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::apply::{Outcome, Report, Reporter};
use crate::config::{self, Diagnostic};
use crate::model::Timestamp;
use crate::plan::{Change, Plan};

use super::metrics;
use super::shard::Shard;
use super::source::Snapshot;

#[derive(Clone, Debug, Default)]
pub struct Options {
    pub plan_only: bool,
    pub shard: Option<Shard>,
}

#[derive(Debug)]
pub enum Failure {
    /// The policy has errors: nothing was observed or changed.
    Invalid(Vec<Diagnostic>),
    Error(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Invalid(d) => {
                write!(f, "invalid policy ({} errors)", d.len())?;
                if let Some(first) = d.first() {
                    write!(f, ": {first}")?;
                }
                Ok(())
            }
            Failure::Error(e) => f.write_str(e),
        }
    }
}

pub struct Reconciled {
    pub plan: Plan,
    /// None with `--plan-only`.
    pub report: Option<Report>,
    /// Changes not started because a stop was requested.
    pub not_started: usize,
    /// Whether `on_violation: fail` and the plan has violations.
    pub violation_failure: bool,
}

impl Reconciled {
    /// Whether everything the plan wanted is now in place (or, plan-only,
    /// whether the plan could be made).
    pub fn ok(&self) -> bool {
        !self.violation_failure
            && self.not_started == 0
            && self.report.as_ref().is_none_or(|r| r.ok())
    }
}

/// Logs each change's outcome, counts it, and tells the executor to stop.
struct DaemonReporter<'a> {
    stop: &'a AtomicBool,
    revision: &'a str,
}

impl Reporter for DaemonReporter<'_> {
    fn finished(&self, c: &Change, o: &Outcome, _bytes: u64) {
        let m = metrics::get();
        let (outcome, detail) = match o {
            Outcome::Done => ("done", String::new()),
            Outcome::AlreadyDone => ("already", String::new()),
            Outcome::Stale(w) => ("stale", w.clone()),
            Outcome::Failed(w) => ("failed", w.clone()),
            Outcome::NotStarted => ("not_started", String::new()),
        };
        m.change(c.action.as_str(), outcome);
        match o {
            Outcome::Done | Outcome::AlreadyDone => tracing::info!(
                revision = self.revision,
                action = c.action.as_str(),
                target = %c.target,
                digest = c.digest.as_deref().unwrap_or(""),
                rule = %c.rule,
                outcome,
                "{} {}: {outcome}",
                c.action.as_str(),
                c.target
            ),
            _ => tracing::warn!(
                revision = self.revision,
                action = c.action.as_str(),
                target = %c.target,
                digest = c.digest.as_deref().unwrap_or(""),
                rule = %c.rule,
                outcome,
                detail = %detail,
                "{} {}: {outcome}: {detail}",
                c.action.as_str(),
                c.target
            ),
        }
    }
    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// Loads, observes and plans: the plan carries the snapshot's revision and
/// is cut to the shard. The registries it read go on to the apply (their
/// connections, tokens, and whether each has the referrers API).
pub async fn plan_snapshot(
    snap: &Snapshot,
    shard: Option<Shard>,
) -> Result<(config::Policy, Plan, crate::observe::Registries), Failure> {
    let policy = config::load(&snap.dir).map_err(Failure::Invalid)?;
    // Valid from now on, not only once the reconcile (observe, apply) ends.
    metrics::get().policy_valid(true);
    let registries = crate::registry::open_all(&policy);
    let now = Timestamp::now();
    let observed = crate::observe::observe(&policy, &registries, now).await;
    let mut plan = crate::plan::plan(&policy, &observed, now);
    plan.revision = snap.revision.clone();
    plan.revision_modified = snap.modified;
    if let Some(s) = shard {
        s.retain(&mut plan);
    }
    Ok((policy, plan, registries))
}

/// One reconcile of `snap`. `stop` is read between changes; `applying` is
/// set once the first change may start (until then, dropping the future is
/// safe: only reads happened).
pub async fn reconcile(
    snap: &Snapshot,
    opts: &Options,
    stop: &AtomicBool,
    applying: &AtomicBool,
) -> Result<Reconciled, Failure> {
    let revision = snap.revision.as_deref().unwrap_or("(none)");
    let (policy, plan, registries) = plan_snapshot(snap, opts.shard).await?;
    let s = &plan.summary;
    tracing::info!(
        revision,
        complete = plan.complete,
        copy = s.copy,
        retag = s.retag,
        untag = s.untag,
        delete = s.delete,
        host_changes = s.host_changes(),
        blocked = s.blocked,
        violations = s.violations,
        unobserved = plan.unobserved.len(),
        "{}",
        crate::render::summary_line(&plan)
    );
    for c in &plan.changes {
        tracing::info!(
            revision,
            action = c.action.as_str(),
            target = %c.target,
            source = c.source.as_deref().unwrap_or(""),
            digest = c.digest.as_deref().unwrap_or(""),
            expect = %c.expect,
            rule = %c.rule,
            "planned: {} {}",
            c.action.as_str(),
            c.target
        );
    }
    for b in &plan.blocked {
        tracing::warn!(revision, rule = %b.rule, subject = %b.subject, "blocked: {}", b.reason);
    }
    for u in &plan.unobserved {
        tracing::warn!(revision, subject = %u.subject, "not observed: {}", u.reason);
    }
    // Each one, as `plan` lists them: under `on_violation: fail` they are
    // why the reconcile fails, and a count alone says not what to fix.
    for v in &plan.violations {
        tracing::warn!(
            revision,
            policy = %v.policy,
            kind = v.kind.as_deref().unwrap_or(""),
            subject = %v.subject,
            "violation: {}{} {}: {}",
            v.policy,
            v.kind.as_deref().map(|k| format!("({k})")).unwrap_or_default(),
            v.subject,
            v.message
        );
    }
    let violation_failure = policy
        .policies
        .as_ref()
        .is_some_and(|p| p.on_violation == config::OnViolation::Fail)
        && !plan.violations.is_empty();
    if opts.plan_only || !plan.has_changes() {
        let pending = plan.changes.len();
        metrics::get().plan_gauges(&plan, pending);
        return Ok(Reconciled {
            plan,
            report: None,
            not_started: 0,
            violation_failure,
        });
    }
    applying.store(true, Ordering::SeqCst);
    let hosts = crate::host::Hosts::for_plan(&policy, &plan).await;
    let report = crate::apply::apply(
        &plan,
        &registries,
        &hosts,
        &DaemonReporter { stop, revision },
    )
    .await;
    crate::observe::cache::record_applied(&policy, &report.outcomes);
    let not_started = plan.changes.len().saturating_sub(report.outcomes.len());
    let not_applied = not_started + report.stale + report.failed;
    metrics::get().plan_gauges(&plan, not_applied);
    if not_started > 0 {
        tracing::warn!(
            revision,
            not_started,
            "stopping: {not_started} changes were not started (the next reconcile plans them again)"
        );
    }
    Ok(Reconciled {
        plan,
        report: Some(report),
        not_started,
        violation_failure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Log output captured into a buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_change_outcome_line_has_the_digest() {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .json()
            .with_writer(move || w.clone())
            .finish();
        let stop = AtomicBool::new(false);
        let r = DaemonReporter {
            stop: &stop,
            revision: "abc",
        };
        let c = Change {
            target: "dev/app:1".into(),
            digest: Some("sha256:0123".into()),
            ..Change::new(crate::plan::Action::Copy)
        };
        tracing::subscriber::with_default(sub, || {
            r.finished(&c, &Outcome::Done, 0);
            r.finished(&c, &Outcome::Stale("moved".into()), 0);
            r.finished(&c, &Outcome::Failed("refused".into()), 0);
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        for l in lines {
            assert!(l.contains("\"digest\":\"sha256:0123\""), "{l}");
        }
    }
}
