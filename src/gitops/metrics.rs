//! The daemon's Prometheus metrics and the readiness state `/readyz` reads.
//! One process-wide instance: the registry backends report their requests
//! through a plain function hook, without knowing about the daemon.

use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    last_success: Gauge<f64, AtomicU64>,
    changes: Family<Labels, Counter>,
    drift: Gauge,
    blocked: Gauge,
    violations: Gauge,
    unobserved: Gauge,
    /// NaN until a policy was read (a daemon that never reached its Git
    /// source does not know whether the policy is valid: "0" would page).
    policy_valid: Gauge<f64, std::sync::atomic::AtomicU64>,
    duration: Histogram,
    requests: Family<Labels, Counter>,
    retries: Family<Labels, Counter>,
    pub state: Mutex<Health>,
}

/// What `/readyz` decides on.
#[derive(Debug, Default)]
pub struct Health {
    pub in_progress_since: Option<Instant>,
    /// Whether the last finished reconcile succeeded, and its message if not.
    pub last: Option<Result<(), String>>,
    /// Last time the source was checked (a poll or a reconcile).
    pub last_check: Option<Instant>,
    pub interval: Duration,
    pub revision: Option<String>,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics, created on first use.
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The hook `registry::set_request_observer` calls for each HTTP attempt.
pub fn registry_request(registry: &str, status: &str, retried: bool) {
    let m = get();
    let l = labels(&[("registry", registry), ("status", status)]);
    m.requests.get_or_create(&l).inc();
    if retried {
        m.retries.get_or_create(&l).inc();
    }
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("regimen");
        let reconciles = Family::<Labels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by result (success, failed, stopped, invalid_policy, error)",
            reconciles.clone(),
        );
        let last_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time the last successful reconcile finished",
            last_success.clone(),
        );
        let changes = Family::<Labels, Counter>::default();
        registry.register(
            "changes",
            "Changes handled by the executor, by action and outcome (done, already, stale, failed)",
            changes.clone(),
        );
        let drift = Gauge::default();
        registry.register(
            "drift_changes",
            "Changes the last plan wanted that were not applied (all of them with --plan-only)",
            drift.clone(),
        );
        let blocked = Gauge::default();
        registry.register("blocked", "Blocked items in the last plan", blocked.clone());
        let violations = Gauge::default();
        registry.register(
            "violations",
            "Policy violations in the last plan",
            violations.clone(),
        );
        let unobserved = Gauge::default();
        registry.register(
            "unobserved",
            "Subjects the last plan could not observe (the plan is incomplete when > 0)",
            unobserved.clone(),
        );
        let policy_valid = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        policy_valid.set(f64::NAN);
        registry.register(
            "policy_valid",
            "1 when the last policy read was valid, 0 when it had errors, NaN before any was read",
            policy_valid.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.05, 2.0, 14));
        registry.register(
            "reconcile_duration_seconds",
            "How long reconciles take, from reading the policy source to the last change (failed source reads included)",
            duration.clone(),
        );
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "registry_requests",
            "HTTP requests to registries, by registry and status (or `error`)",
            requests.clone(),
        );
        let retries = Family::<Labels, Counter>::default();
        registry.register(
            "registry_retries",
            "Registry requests retried, by registry and the status that caused it",
            retries.clone(),
        );
        Metrics {
            registry,
            reconciles,
            last_success,
            changes,
            drift,
            blocked,
            violations,
            unobserved,
            policy_valid,
            duration,
            requests,
            retries,
            state: Mutex::new(Health::default()),
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn started(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.in_progress_since = Some(Instant::now());
        }
    }

    pub fn checked(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.last_check = Some(Instant::now());
        }
    }

    pub fn change(&self, action: &str, outcome: &str) {
        self.changes
            .get_or_create(&labels(&[("action", action), ("outcome", outcome)]))
            .inc();
    }

    pub fn policy_valid(&self, valid: bool) {
        self.policy_valid.set(if valid { 1.0 } else { 0.0 });
    }

    pub fn plan_gauges(&self, plan: &crate::plan::Plan, not_applied: usize) {
        self.drift.set(not_applied as i64);
        self.blocked.set(i64::from(plan.summary.blocked));
        self.violations.set(i64::from(plan.summary.violations));
        self.unobserved.set(plan.unobserved.len() as i64);
    }

    /// Records a finished reconcile: `result` is the metric label, `error`
    /// what `/readyz` says when it failed.
    pub fn finished(&self, result: &str, error: Option<String>, took: Duration, rev: Option<&str>) {
        self.reconciles
            .get_or_create(&labels(&[("result", result)]))
            .inc();
        self.duration.observe(took.as_secs_f64());
        if error.is_none() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            self.last_success.set(now);
        }
        if let Ok(mut s) = self.state.lock() {
            s.in_progress_since = None;
            s.last_check = Some(Instant::now());
            s.last = Some(match error {
                None => Ok(()),
                Some(e) => Err(e),
            });
            if let Some(r) = rev {
                s.revision = Some(r.to_string());
            }
        }
    }

    /// `Ok(message)` when ready, `Err(why)` when not.
    pub fn ready(&self) -> Result<String, String> {
        let s = self
            .state
            .lock()
            .map_err(|_| "internal state unavailable".to_string())?;
        let window = s.interval.saturating_mul(2).max(Duration::from_secs(1));
        if let Some(Err(e)) = &s.last {
            return Err(format!("the last reconcile failed: {e}"));
        }
        if let Some(since) = s.in_progress_since {
            return if since.elapsed() <= window {
                Ok("reconciling".into())
            } else {
                Err(format!(
                    "a reconcile has been running for {}s (over 2 intervals)",
                    since.elapsed().as_secs()
                ))
            };
        }
        match (&s.last, s.last_check) {
            (None, _) => Err("no reconcile has run yet".into()),
            (Some(_), Some(t)) if t.elapsed() > window => Err(format!(
                "the source was last checked {}s ago (over 2 intervals)",
                t.elapsed().as_secs()
            )),
            _ => Ok(format!(
                "ok: last reconcile succeeded at revision {}",
                s.revision.as_deref().unwrap_or("(none)")
            )),
        }
    }

    pub fn set_interval(&self, interval: Duration) {
        if let Ok(mut s) = self.state.lock() {
            s.interval = interval;
        }
    }
}
