//! regimen: a declarative GitOps reconciler for container images.
//!
//! The flow is `config` (YAML → validated `Desired`) → `observe` (registries →
//! `Observed`) → `plan` (pure: `Plan`) → `render` / `apply`.

pub mod apply;
pub mod cli;
pub mod config;
pub mod gitops;
pub mod host;
pub mod inventory;
pub mod model;
pub mod observe;
pub mod plan;
pub mod registry;
pub mod render;
pub mod scan;
#[doc(hidden)]
pub mod testkit;
