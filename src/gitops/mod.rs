//! GitOps operation: the `regimen run` daemon (policy source, triggers,
//! reconcile loop, HTTP health and metrics), pull-request helpers (`plan
//! --base`, GitHub annotations) and `--shard` for splitting an estate.

pub mod daemon;
pub mod http;
pub mod metrics;
pub mod pr;
pub mod reconcile;
pub mod shard;
pub mod source;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use daemon::wait_signal;
pub use reconcile::{reconcile, Options};
pub use shard::Shard;

/// `regimen run` options.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// The policy directory (default `.`); with --watch, the folder watched.
    #[arg(short = 'C', value_name = "DIR", conflicts_with = "git")]
    pub dir: Option<PathBuf>,
    /// Read the policy from this Git remote (https://, ssh://, file://).
    /// Credentials come from REGIMEN_GIT_TOKEN, REGIMEN_GIT_USERNAME /
    /// REGIMEN_GIT_PASSWORD or REGIMEN_GIT_SSH_KEY.
    #[arg(long, value_name = "URL", env = "REGIMEN_GIT_URL")]
    pub git: Option<String>,
    /// The branch to follow.
    #[arg(
        long,
        value_name = "BRANCH",
        default_value = "main",
        env = "REGIMEN_GIT_BRANCH"
    )]
    pub branch: String,
    /// The policy folder inside the repository.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "",
        env = "REGIMEN_GIT_PATH"
    )]
    pub path: String,
    /// Where the bare clone and checked-out commits are kept
    /// (default: $XDG_CACHE_HOME/regimen or ~/.cache/regimen).
    #[arg(long, value_name = "DIR", env = "REGIMEN_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// How often the source is checked for a new commit. Without
    /// --schedule, each interval is also a full reconcile.
    #[arg(long, value_name = "DUR", default_value = "1m", value_parser = parse_duration)]
    pub interval: Duration,
    /// Full reconciles on this 5-field cron schedule (UTC), e.g. `*/15 * * * *`.
    #[arg(long, value_name = "CRON")]
    pub schedule: Option<String>,
    /// Also reconcile when a policy file changes (-C only).
    #[arg(long)]
    pub watch: bool,
    /// Serve /healthz, /readyz and /metrics on this address, e.g. 0.0.0.0:9090.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Report drift (plan and metrics) without changing anything.
    #[arg(long)]
    pub plan_only: bool,
    /// Reconcile once and exit (0: success, 1: failure).
    #[arg(long)]
    pub once: bool,
    /// Handle only shard I of N (`I/N`, or `N` with JOB_COMPLETION_INDEX).
    #[arg(long, value_name = "I/N", env = "REGIMEN_SHARD")]
    pub shard: Option<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (e.g. 30s, 5m, 1h)"))?;
    if d.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(d)
}

/// Parses a 5-field cron expression (minute hour day-of-month month day-of-week).
pub fn parse_schedule(s: &str) -> Result<croner::Cron, String> {
    let cron = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .build()
        .parse(s)
        .map_err(|e| {
            format!("--schedule `{s}`: {e} (expected 5 fields: minute hour day month weekday)")
        })?;
    // `0 0 31 2 *` parses but never comes: a schedule that would silently
    // never reconcile is refused at start, not discovered months later.
    if cron
        .find_next_occurrence(&chrono::Utc::now(), false)
        .is_err()
    {
        return Err(format!(
            "--schedule `{s}` never fires (no such date, like 31 February): check day and month"
        ));
    }
    Ok(cron)
}

/// `--shard` if given.
pub fn parse_shard(spec: Option<&str>) -> Result<Option<Shard>, String> {
    spec.map(Shard::parse).transpose()
}

/// `regimen run`: the exit code.
pub fn run(args: RunArgs) -> i32 {
    match build(args) {
        Ok(cfg) => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => {
                let code = rt.block_on(daemon::run(cfg));
                // Not waiting for a Git fetch a stop left hanging.
                rt.shutdown_background();
                code
            }
            // As the daemon's own errors: JSON under `--log-format json`.
            Err(e) => {
                tracing::error!("cannot start the async runtime: {e}");
                1
            }
        },
        Err(e) => {
            tracing::error!("{e}");
            1
        }
    }
}

fn build(a: RunArgs) -> Result<daemon::Config, String> {
    let shard = parse_shard(a.shard.as_deref())?;
    let schedule = a.schedule.as_deref().map(parse_schedule).transpose()?;
    let (source, watch) = match &a.git {
        Some(url) => {
            if a.watch {
                return Err("--watch reads a local directory (-C); with --git, new commits are found every --interval".into());
            }
            (
                source::Source::Git(source::GitSource::new(
                    url.clone(),
                    a.branch.clone(),
                    a.path.clone(),
                    a.cache_dir.clone(),
                )),
                None,
            )
        }
        None => {
            let dir = a.dir.clone().unwrap_or_else(|| PathBuf::from("."));
            if !dir.is_dir() {
                return Err(format!("{}: not a directory", dir.display()));
            }
            let watch = a.watch.then(|| dir.clone());
            (source::Source::Dir(dir), watch)
        }
    };
    Ok(daemon::Config {
        source,
        interval: a.interval,
        schedule,
        watch,
        listen: a.listen,
        options: Options {
            plan_only: a.plan_only,
            shard,
        },
        once: a.once,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_have_exactly_five_fields() {
        assert!(parse_schedule("*/15 * * * *").is_ok());
        assert!(parse_schedule("0 3 * * MON").is_ok());
        let six = parse_schedule("0 */15 * * * *").unwrap_err();
        assert!(six.contains("5 fields"), "{six}");
        assert!(parse_schedule("every day").is_err());
        let never = parse_schedule("0 0 31 2 *").unwrap_err();
        assert!(never.contains("never fires"), "{never}");
        assert!(parse_schedule("0 0 29 2 *").is_ok(), "leap days come");
    }
}
