//! Host changes: pull, remove an image, stop a container — each after
//! re-reading the engine (compare-and-swap, as for registries).

use super::Outcome;
use crate::host::{split_target, Hosts};
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
    let creds = hosts.credentials(&want.repo.registry);
    engine
        .pull(&repo, digest, Some(tag.as_str()), &creds)
        .await?;
    Ok(Outcome::Done)
}

async fn remove_image(c: &Change, engine: &crate::host::Engine) -> Result<Outcome, String> {
    let Some(img) = engine.inspect_image(&c.expect).await? else {
        return Ok(Outcome::AlreadyDone);
    };
    // Never an image a container uses, even one created since the plan.
    let users = engine.users_of(&img.id).await?;
    if let Some(u) = users.first() {
        return Ok(Outcome::Stale(format!(
            "image {} is now used by container {}",
            img.id,
            u.get(..12).unwrap_or(u)
        )));
    }
    // Its names as they are now: a name moved to another image is not ours.
    engine.remove_image(&img.id, &img.tags).await?;
    Ok(Outcome::Done)
}

async fn stop_container(c: &Change, engine: &crate::host::Engine) -> Result<Outcome, String> {
    match engine.container(&c.expect).await? {
        None | Some((false, _)) => Ok(Outcome::AlreadyDone),
        Some((true, _)) => {
            engine.stop_container(&c.expect).await?;
            Ok(Outcome::Done)
        }
    }
}
