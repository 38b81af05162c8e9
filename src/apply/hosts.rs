//! Host changes: pull, remove an image, stop a container — each after
//! re-reading the engine (compare-and-swap, as for registries).

use super::Outcome;
use crate::host::{split_target, Hosts, Removal};
use crate::model::{ImageRef, Reference};
use crate::plan::{Action, Change};

pub async fn apply_one(c: &Change, hosts: &Hosts) -> Result<Outcome, String> {
    let (name, what) =
        split_target(&c.target).ok_or_else(|| format!("`{}` is not host:NAME/…", c.target))?;
    let engine = hosts.engine(name)?;
    match c.action {
        Action::Pull => pull(c, what, engine, hosts).await,
        Action::RemoveImage => remove_image(c, engine).await,
        Action::StopContainer => stop_container(c, engine).await,
        other => Err(format!("`{}` is not a host change", other.as_str())),
    }
}

async fn pull(
    c: &Change,
    what: &str,
    engine: &crate::host::Engine,
    hosts: &Hosts,
) -> Result<Outcome, String> {
    let want: ImageRef = what.parse()?;
    let Some(Reference::Tag(tag)) = &want.reference else {
        return Err(format!("`{what}` has no tag"));
    };
    let digest = c
        .digest
        .as_deref()
        .ok_or_else(|| "the change has no digest".to_string())?;
    let repo = hosts
        .addrs
        .engine_repo(&want.repo)
        .ok_or_else(|| format!("registry `{}` cannot be pulled from", want.repo.registry))?;
    let engine_digest = format!("{repo}@{digest}");
    // Compare-and-swap on what the engine's tag names now.
    match engine.inspect_image(&format!("{repo}:{tag}")).await? {
        Some(img) if img.repo_digests.contains(&engine_digest) => return Ok(Outcome::AlreadyDone),
        Some(img) if img.id != c.expect => {
            return Ok(Outcome::Stale(format!(
                "the host's {want} is now image {}, not {}",
                img.id, c.expect
            )))
        }
        None if c.expect != "absent" => {
            return Ok(Outcome::Stale(format!(
                "{want} is gone from the host (expected image {})",
                c.expect
            )))
        }
        _ => {}
    }
    let creds = hosts.credentials(&want.repo.registry)?;
    engine
        .pull(&repo, digest, Some(tag.as_str()), &creds)
        .await?;
    Ok(Outcome::Done)
}

async fn remove_image(c: &Change, engine: &crate::host::Engine) -> Result<Outcome, String> {
    let Some(img) = engine.inspect_image(&c.expect).await? else {
        return Ok(Outcome::AlreadyDone);
    };
    // Compare-and-swap on its names: the plan showed (and a reviewer
    // approved) removing the image with exactly the names in `also_tags`.
    // A name given to it since (a `podman tag`, a pull that moved a tag onto
    // it) may be one `keep` or `present` protects: not removed. A name gone
    // since is fine: less goes than the plan showed.
    let added: Vec<&String> = img
        .tags
        .iter()
        .filter(|t| !c.also_tags.contains(t))
        .collect();
    if !added.is_empty() {
        return Ok(Outcome::Stale(format!(
            "image {} now also has the name{} {}, which the plan did not show",
            short(&img.id),
            if added.len() == 1 { "" } else { "s" },
            added
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    // Never an image a container uses, even one created since the plan.
    let users = engine.users_of(&img.id).await?;
    if let Some(u) = users.first() {
        return Ok(Outcome::Stale(format!(
            "image {} is now used by container {}",
            short(&img.id),
            short(u)
        )));
    }
    match engine.remove_image(&img.id, &img.tags).await? {
        Removal::Done => Ok(Outcome::Done),
        // A container the API does not list (Podman's external ones, such
        // as buildah's working containers), or one created this instant.
        Removal::InUse(why) => Ok(Outcome::Stale(format!(
            "image {} is in use by a container (the engine refused: {why}); Podman's external \
             containers, e.g. buildah's, are not listed: `podman ps --external` shows them",
            short(&img.id)
        ))),
    }
}

async fn stop_container(c: &Change, engine: &crate::host::Engine) -> Result<Outcome, String> {
    let (id, planned_start) = crate::plan::parse_container_expect(&c.expect);
    let Some(now) = engine.container(id).await? else {
        return Ok(Outcome::AlreadyDone);
    };
    if !now.running {
        return Ok(Outcome::AlreadyDone);
    }
    // Compare-and-swap on the start: a container restarted since the plan
    // is not the long-running one the plan showed.
    if let Some(planned) = planned_start {
        if now.started != Some(planned) {
            let started = now
                .started
                .map(|t| format!("started at {}", t.to_rfc3339()))
                .unwrap_or_else(|| "its start time is unknown".into());
            return Ok(Outcome::Stale(format!(
                "container {} was restarted since the plan: {started}, the plan saw it start at {}",
                short(id),
                planned.to_rfc3339()
            )));
        }
    }
    engine.stop_container(id, now.paused).await?;
    Ok(Outcome::Done)
}

/// The first 12 hex digits of an image or container ID.
fn short(id: &str) -> &str {
    let hex = id.trim_start_matches("sha256:");
    hex.get(..12).unwrap_or(hex)
}
