//! `--shard I/N`: N workers (an Indexed Job's pods) split one estate by a
//! stable hash of each change's target repository, so no two shards touch
//! the same repository and together they do what one unsharded run does.

use std::fmt;

use crate::plan::Plan;

use super::source::Fnv;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// `I/N`, or `N` alone with I from `JOB_COMPLETION_INDEX` (set by
    /// Kubernetes in each pod of an Indexed Job).
    pub fn parse(spec: &str) -> Result<Shard, String> {
        let bad = |why: &str| {
            format!("--shard `{spec}`: {why} (expected I/N, e.g. 0/4, or N with JOB_COMPLETION_INDEX set)")
        };
        let (index, count) = match spec.split_once('/') {
            Some((i, n)) => (i.trim().to_string(), n.trim().to_string()),
            None => match std::env::var("JOB_COMPLETION_INDEX") {
                Ok(i) => (i.trim().to_string(), spec.trim().to_string()),
                Err(_) => return Err(bad("no index given and JOB_COMPLETION_INDEX is not set")),
            },
        };
        let index: u32 = index
            .parse()
            .map_err(|_| bad("the index is not a number"))?;
        let count: u32 = count
            .parse()
            .map_err(|_| bad("the count is not a number"))?;
        if count == 0 {
            return Err(bad("the count must be at least 1"));
        }
        if index >= count {
            return Err(bad(
                "the index must be below the count (shards are numbered from 0)",
            ));
        }
        Ok(Shard { index, count })
    }

    /// Whether this shard owns `subject` (a change target, blocked subject or
    /// violation subject).
    pub fn owns(&self, subject: &str) -> bool {
        let mut h = Fnv::new();
        h.write(shard_key(subject).as_bytes());
        h.finish() % u64::from(self.count) == u64::from(self.index)
    }

    /// Keeps this shard's part of the plan. What could not be observed stays
    /// in every shard: it limits what each may safely do.
    pub fn retain(&self, plan: &mut Plan) {
        plan.changes.retain(|c| self.owns(&c.target));
        plan.blocked.retain(|b| self.owns(&b.subject));
        plan.violations.retain(|v| self.owns(&v.subject));
        plan.retention.retain(|r| self.owns(&r.repo));
        plan.kept.retain(|k| self.owns(&k.subject));
        plan.finish();
    }
}

/// The repository a subject lives in: `REGISTRY/REPO` for image references,
/// `host:NAME` for host changes; anything else as written.
pub fn shard_key(subject: &str) -> String {
    if let Some(rest) = subject.strip_prefix("host:") {
        let name = rest.split('/').next().unwrap_or(rest);
        return format!("host:{name}");
    }
    // Textual, so a subject that is not a valid reference still has one home.
    let first = subject.split_whitespace().next().unwrap_or(subject);
    let repo = first.split('@').next().unwrap_or(first);
    match repo.rfind('/') {
        Some(slash) => match repo[slash..].find(':') {
            Some(colon) => repo[..slash + colon].to_string(),
            None => repo.to_string(),
        },
        None => repo.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert_eq!(Shard::parse("1/4"), Ok(Shard { index: 1, count: 4 }));
        assert!(Shard::parse("4/4").is_err());
        assert!(Shard::parse("0/0").is_err());
        assert!(Shard::parse("a/2").is_err());
    }

    #[test]
    fn a_repo_belongs_to_exactly_one_shard() {
        for subject in [
            "prod/team/api:1.0",
            "prod/team/api@sha256:00",
            "dev/x:y",
            "host:b1/img",
        ] {
            let owners: Vec<u32> = (0..5)
                .filter(|i| {
                    Shard {
                        index: *i,
                        count: 5,
                    }
                    .owns(subject)
                })
                .collect();
            assert_eq!(owners.len(), 1, "{subject}: {owners:?}");
        }
        assert_eq!(shard_key("prod/team/api:1.0"), "prod/team/api");
        assert_eq!(shard_key("prod/team/api@sha256:ab"), "prod/team/api");
        assert_eq!(shard_key("host:b1/prod/x:1"), "host:b1");
    }
}
