//! Command-line parsing and dispatch only; the work is in the library modules.

mod commands;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "regimen",
    version,
    about = "Declarative GitOps reconciler for container images"
)]
pub struct Cli {
    /// Log format for diagnostics on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "REGIMEN_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// More detail (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum PlanFormat {
    Text,
    Json,
    Markdown,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum InventoryFormat {
    Text,
    Json,
    Csv,
    Html,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ValidateFormat {
    Text,
    Github,
}

#[derive(Args, Debug, Clone)]
pub struct DirArg {
    /// The policy directory.
    #[arg(short = 'C', default_value = ".", value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Parse and check the policy; print every error as path:line:col: message.
    Validate {
        #[command(flatten)]
        dir: DirArg,
        /// `github`: also print each error as a GitHub Actions annotation.
        #[arg(long, value_enum, default_value_t = ValidateFormat::Text)]
        format: ValidateFormat,
    },
    /// Observe registries and hosts, compute the plan, print it.
    Plan {
        #[command(flatten)]
        dir: DirArg,
        /// Save the plan (JSON) for a later `apply PLANFILE`.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
        /// Exit 2 when the plan has changes (0: none, 1: error).
        #[arg(long)]
        detailed_exitcode: bool,
        /// Only changes whose target matches this glob (REGISTRY/REPO:TAG); repeatable.
        #[arg(long, value_name = "GLOB")]
        target: Vec<String>,
        /// Also show the policy diff since this Git revision and which
        /// changes it introduces (pull requests: the target branch).
        #[arg(long, value_name = "REV")]
        base: Option<String>,
        /// Only shard I of N (`I/N`, or `N` with JOB_COMPLETION_INDEX).
        #[arg(long, value_name = "I/N", env = "REGIMEN_SHARD")]
        shard: Option<String>,
    },
    /// Plan, confirm and apply; or apply a saved plan exactly.
    Apply {
        #[command(flatten)]
        dir: DirArg,
        /// Apply without asking.
        #[arg(long)]
        auto_approve: bool,
        /// Only changes whose target matches this glob; repeatable.
        #[arg(long, value_name = "GLOB")]
        target: Vec<String>,
        /// Only shard I of N (`I/N`, or `N` with JOB_COMPLETION_INDEX).
        #[arg(long, value_name = "I/N", env = "REGIMEN_SHARD")]
        shard: Option<String>,
        /// A plan saved by `plan --out`.
        planfile: Option<PathBuf>,
    },
    /// Print the JSON Schema of policy files.
    Schema,
    /// The reconciler daemon.
    Run(crate::gitops::RunArgs),
    /// Every image in managed registries and hosts.
    Inventory {
        #[command(flatten)]
        dir: DirArg,
        #[arg(long, value_enum, default_value_t = InventoryFormat::Text)]
        format: InventoryFormat,
        /// Write the report to this file instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    commands::init_logging(&cli);
    commands::dispatch(cli)
}
