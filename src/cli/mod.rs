//! Command-line interface: one file per subcommand.

mod dp_epsilon;
mod models;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Measure, layer by layer, how much usable information neural-network gradients leak.
#[derive(Debug, Parser)]
#[command(name = "gradleak", version, about, max_term_width = 110)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand understands.
#[derive(Debug, clap::Args)]
pub struct Global {
    /// Folder of fetched datasets.
    #[arg(long, global = true, env = "GRADLEAK_DATA", default_value = "data")]
    pub data_dir: PathBuf,
    /// CPU threads for libtorch (0: libtorch's default).
    #[arg(long, global = true, default_value_t = 0)]
    pub threads: i32,
    /// No progress bars.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the model architectures, or the named layers of one.
    Models(models::ModelsArgs),
    /// The (epsilon, delta) guarantee of DP-SGD, by the Rényi-DP accountant.
    DpEpsilon(dp_epsilon::DpEpsilonArgs),
}

pub fn run(cli: Cli) -> Result<()> {
    if cli.global.threads > 0 {
        tch::set_num_threads(cli.global.threads);
    }
    match cli.command {
        Command::Models(args) => models::run(&cli.global, args),
        Command::DpEpsilon(args) => dp_epsilon::run(&cli.global, args),
    }
}
