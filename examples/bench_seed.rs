//! Seeds a registry for the mirroring benchmark (bench/run.sh).
//!
//!     cargo run --release --example bench_seed -- URL set      # 20 repos x 10 tags, 64 KiB layers
//!     cargo run --release --example bench_seed -- URL many     # one repo with 5,000 tags
//!     cargo run --release --example bench_seed -- URL aged     # one repo, 2,000 tags, each its own image
//!     cargo run --release --example bench_seed -- URL big      # one image with a 1 GiB layer
//!
//! URL is a registry address as in a policy (`http://127.0.0.1:5000`).

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use futures_util::{stream, StreamExt, TryStreamExt};
use regimen::model::{Repo, Tag};
use regimen::registry::Registry;
use regimen::testkit::{layer_size_image, push_image, ImageSpec};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(what)) = (args.get(1), args.get(2)) else {
        bail!("usage: bench_seed URL set|many|aged|big");
    };
    let policy = regimen::config::load_texts(
        Path::new("."),
        &[(
            Arc::from("seed.yaml"),
            format!("registries:\n  target: {{url: \"{url}\"}}\n"),
        )],
    )
    .map_err(|d| anyhow!("{d:?}"))?;
    let regs = regimen::registry::open_all(&policy);
    let reg: Arc<dyn Registry> = regs
        .into_values()
        .next()
        .ok_or_else(|| anyhow!("no registry"))?
        .map_err(|e| anyhow!(e))?;
    let repo = |s: String| s.parse::<Repo>().map_err(|e| anyhow!(e));
    let tag = |s: String| s.parse::<Tag>().map_err(|e| anyhow!(e));
    match what.as_str() {
        "set" => {
            let jobs: Vec<(Repo, Tag, ImageSpec)> = (0..20)
                .flat_map(|r| (0..10).map(move |t| (r, t)))
                .map(|(r, t)| {
                    Ok((
                        repo(format!("bench/repo{r:02}"))?,
                        tag(format!("1.0.{t}"))?,
                        layer_size_image(r * 100 + t, 64 * 1024, "2026-01-01T00:00:00Z"),
                    ))
                })
                .collect::<anyhow::Result<_>>()?;
            stream::iter(jobs)
                .map(|(r, t, spec)| {
                    let reg = reg.clone();
                    async move { push_image(reg.as_ref(), &r, Some(&t), &spec).await }
                })
                .buffer_unordered(8)
                .try_collect::<Vec<_>>()
                .await?;
        }
        "many" => {
            let r = repo("bench/many".into())?;
            let spec = layer_size_image(7, 1024, "2026-01-01T00:00:00Z");
            let d = push_image(reg.as_ref(), &r, Some(&tag("0.0.0".into())?), &spec).await?;
            let m = reg
                .get_manifest(&r, d.as_str())
                .await?
                .context("manifest just pushed")?;
            let tags: Vec<Tag> = (1..5000)
                .map(|i| tag(format!("0.{}.{}", i / 100, i % 100)))
                .collect::<anyhow::Result<_>>()?;
            stream::iter(tags)
                .map(|t| {
                    let (reg, r, m) = (reg.clone(), r.clone(), m.clone());
                    async move { reg.put_manifest(&r, Some(&t), &m).await }
                })
                .buffer_unordered(16)
                .try_collect::<Vec<_>>()
                .await?;
        }
        "aged" => {
            // A CI repo: one image per build, one build a day (newest last).
            let r = repo("bench/aged".into())?;
            let start: i64 = 1_700_000_000;
            stream::iter(0..2000u64)
                .map(|i| {
                    let (reg, r) = (reg.clone(), r.clone());
                    async move {
                        let t = tag(format!("build-{i:04}"))?;
                        let created =
                            regimen::model::Timestamp(start + i as i64 * 86_400).to_rfc3339();
                        let spec = layer_size_image(100_000 + i, 256, &created);
                        push_image(reg.as_ref(), &r, Some(&t), &spec).await?;
                        anyhow::Ok(())
                    }
                })
                .buffer_unordered(16)
                .try_collect::<Vec<_>>()
                .await?;
        }
        "big" => {
            let r = repo("bench/big".into())?;
            let spec = layer_size_image(9, 1 << 30, "2026-01-01T00:00:00Z");
            push_image(reg.as_ref(), &r, Some(&tag("1.0.0".into())?), &spec).await?;
        }
        other => bail!("unknown set `{other}`: set, many, aged or big"),
    }
    Ok(())
}
