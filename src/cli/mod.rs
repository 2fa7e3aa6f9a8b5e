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

use anyhow::{bail, Context, Result};
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

/// Which model, and which of its dataset's splits the victims come from: a checkpoint of a training run (`--run`,
/// `--epoch`), or a model as it is (`--model torchscript:PATH` with its own weights, or a built-in architecture
/// at its seeded initialisation) on a dataset (`--dataset`). Shared by the commands that work on a model.
#[derive(Debug, clap::Args)]
pub struct CheckpointArgs {
    /// Training run folder (from `gradleak train`).
    #[arg(long, required_unless_present = "model", conflicts_with = "model")]
    pub run: Option<PathBuf>,
    /// Checkpoint epoch of --run (0 = initialisation; default: the last saved).
    #[arg(long, conflicts_with = "model")]
    pub epoch: Option<usize>,
    /// A model as it is instead of a run: `torchscript:PATH` (the file's weights) or a built-in architecture (its
    /// initialisation from --model-seed). Needs --dataset.
    #[arg(long, requires = "dataset")]
    pub model: Option<String>,
    /// The dataset of --model (see `gradleak data list`; also folder:PATH, arrays:PATH, ...).
    #[arg(long, requires = "model")]
    pub dataset: Option<String>,
    /// Seed of a built-in --model's initial weights.
    #[arg(long, default_value_t = 0, requires = "model")]
    pub model_seed: u64,
    /// Split the victims come from.
    #[arg(long, default_value = "train", value_parser = ["train", "test"])]
    pub split: String,
}

pub use gradleak::gradients::behind::LoadedModel;

impl CheckpointArgs {
    /// The model (a checkpoint of the run, or the named model as it is) and its dataset.
    pub fn load(&self, data_dir: &std::path::Path) -> Result<LoadedModel> {
        match (&self.run, &self.model, &self.dataset) {
            (Some(run), _, _) => LoadedModel::from_run(run, self.epoch, data_dir),
            (None, Some(name), Some(dataset)) => {
                let dataset = gradleak::data::load(dataset, data_dir).context("--dataset")?;
                LoadedModel::named(name, dataset, self.model_seed).context("--model")
            }
            _ => bail!("name a training run (--run DIR) or a model and its data (--model NAME --dataset NAME)"),
        }
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

/// Most libtorch threads `--threads` may ask for.
const MAX_THREADS: i32 = 1024;

pub fn run(cli: Cli) -> Result<()> {
    if !(0..=MAX_THREADS).contains(&cli.global.threads) {
        bail!("--threads must be in [0, {MAX_THREADS}] (0: libtorch's default), got {}", cli.global.threads);
    }
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
