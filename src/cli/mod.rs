//! Command-line interface: one file per subcommand.

mod attack;
mod audit;
mod data;
mod dp_epsilon;
mod grads;
mod models;
mod sensitivity;
mod train;
mod vinfo;

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

/// Which checkpoint of which training run, and which of its splits the victims come from: shared by the commands
/// that work on a training run.
#[derive(Debug, clap::Args)]
pub struct CheckpointArgs {
    /// Training run folder (from `gradleak train`).
    #[arg(long)]
    pub run: PathBuf,
    /// Checkpoint epoch (0 = initialisation; default: the last saved).
    #[arg(long)]
    pub epoch: Option<usize>,
    /// Split the victims come from.
    #[arg(long, default_value = "train", value_parser = ["train", "test"])]
    pub split: String,
}

impl CheckpointArgs {
    /// The training run and the epoch to use.
    pub fn open(&self) -> Result<(gradleak::train::SavedRun, usize)> {
        let saved = gradleak::train::SavedRun::open(&self.run)?;
        let epoch = self.epoch.unwrap_or_else(|| saved.last_epoch());
        Ok((saved, epoch))
    }
}

/// A flag's parser for a library keyword enum: offers the keywords (in `--help` and on a typo), then parses with
/// the library's `FromStr`.
pub fn keywords<T>(names: &'static [&'static str]) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr<Err = anyhow::Error> + Clone + Send + Sync + 'static,
{
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(names).try_map(|s| s.parse::<T>())
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
    /// Audit a model: layer-wise usable information leakage over a grid of settings, with reports.
    Audit(audit::AuditArgs),
    /// Merge the out folders of an audit's shards into one report.
    Merge(audit::MergeArgs),
    /// List, fetch and inspect datasets.
    Data(data::DataArgs),
    /// List the model architectures, or the named layers of one.
    Models(models::ModelsArgs),
    /// Train a model, with a checkpoint per epoch.
    Train(train::TrainArgs),
    /// Compute shared updates (per-layer gradients, after defences) of a checkpoint: a gradient store.
    Grads(grads::GradsArgs),
    /// The (epsilon, delta) guarantee of DP-SGD, by the Rényi-DP accountant.
    DpEpsilon(dp_epsilon::DpEpsilonArgs),
    /// Usable (V-)information of features about a target, with a bootstrap interval.
    Vinfo(vinfo::VinfoArgs),
    /// Reconstruct inputs from shared updates with DLG, iDLG or Inverting Gradients.
    Attack(attack::AttackArgs),
    /// Why a layer leaks: sensitivity of each layer's gradient to the input and to a latent attribute.
    Sensitivity(sensitivity::SensitivityArgs),
}

pub fn run(cli: Cli) -> Result<()> {
    if cli.global.threads > 0 {
        tch::set_num_threads(cli.global.threads);
    }
    // Library errors name their parameters; each command renames them to its flags.
    let (result, flags) = match cli.command {
        Command::Audit(args) => (audit::run(&cli.global, args), audit::FLAGS),
        Command::Merge(args) => (audit::run_merge(&cli.global, args), audit::FLAGS),
        Command::Data(args) => (data::run(&cli.global, args), &[][..]),
        Command::Models(args) => (models::run(&cli.global, args), models::FLAGS),
        Command::Train(args) => (train::run(&cli.global, args), train::FLAGS),
        Command::Grads(args) => (grads::run(&cli.global, args), grads::FLAGS),
        Command::DpEpsilon(args) => (dp_epsilon::run(&cli.global, args), &[][..]),
        Command::Vinfo(args) => (vinfo::run(&cli.global, args), vinfo::FLAGS),
        Command::Attack(args) => (attack::run(&cli.global, args), attack::FLAGS),
        Command::Sensitivity(args) => (sensitivity::run(&cli.global, args), sensitivity::FLAGS),
    };
    result.map_err(|e| gradleak::error::rename_params(e, flags))
}
