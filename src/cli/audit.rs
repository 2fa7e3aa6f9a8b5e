//! `gradleak audit` (one command from a model to a layer-wise leakage report) and `gradleak merge` (shards).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use gradleak::audit::config::DpSetting;
use gradleak::audit::{self, AuditConfig, AuditOptions};
use gradleak::measure::attacks::Method;
use gradleak::measure::families::Family;
use gradleak::progress::Progress;

use super::{keywords, Global};

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// TOML configuration (see docs/cli.md); the flags below override it.
    #[arg(long, conflicts_with = "preset")]
    pub config: Option<PathBuf>,
    /// A built-in configuration: `paper` (the study design of Mo et al. 2022 at a scale of about an hour on 2
    /// cores); the flags below override it.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(audit::presets::NAMES))]
    pub preset: Option<String>,
    /// Print the configuration the audit would run (TOML, after presets and flags) and exit.
    #[arg(long)]
    pub print_config: bool,
    #[arg(long)]
    pub dataset: Option<String>,
    #[arg(long)]
    pub model: Option<String>,
    /// Training epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Shared updates per cell.
    #[arg(long)]
    pub updates: Option<i64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Targets, comma-separated: input, label, attribute, attribute:NAME, attributes.
    #[arg(long, value_delimiter = ',')]
    pub targets: Option<Vec<String>>,
    /// Families, comma-separated, e.g. linear,mlp:256,128,analytic (see `gradleak vinfo --help`).
    #[arg(long)]
    pub families: Option<String>,
    /// Grid: batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub batch_sizes: Option<Vec<i64>>,
    /// Grid: checkpoint epochs, comma-separated (0 = initialisation).
    #[arg(long, value_delimiter = ',')]
    pub grid_epochs: Option<Vec<usize>>,
    /// Grid: dropout rates, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub dropouts: Option<Vec<f64>>,
    /// Grid: a DP setting, repeatable: none | clip=C,sigma=S.
    #[arg(long = "dp")]
    pub dp: Vec<DpSetting>,
    /// Reference attack per cell: dlg, idlg or ig.
    #[arg(long, value_parser = keywords::<Method>(Method::KEYWORDS))]
    pub attack: Option<Method>,
    /// Skip the sensitivity analysis.
    #[arg(long)]
    pub no_sensitivity: bool,
    /// Output folder.
    #[arg(long, default_value = "out/audit")]
    pub out: PathBuf,
    /// Use an out folder holding another configuration's results (its matching finished cells are kept).
    #[arg(long)]
    pub resume: bool,
    /// Run every N-th cell: I/N (0-based I), e.g. for a job array; combine with `gradleak merge`.
    #[arg(long)]
    pub shard: Option<String>,
    /// Print the report's path and a JSON summary.
    #[arg(long)]
    pub json: bool,
}

fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let (i, n) = s.split_once('/').with_context(|| format!("--shard: expected I/N, e.g. 0/4, got '{s}'"))?;
    let (i, n): (usize, usize) = (
        i.trim().parse().with_context(|| format!("--shard: '{i}' is not a whole number"))?,
        n.trim().parse().with_context(|| format!("--shard: '{n}' is not a whole number"))?,
    );
    if n == 0 || i >= n {
        bail!("--shard {s}: need 0 <= I < N");
    }
    Ok((i, n))
}

pub fn config_of(args: &AuditArgs) -> Result<AuditConfig> {
    let mut c = match (&args.config, &args.preset) {
        (Some(path), _) => AuditConfig::from_file(path)?,
        (None, Some(name)) => audit::presets::preset(name)?,
        (None, None) => AuditConfig::default(),
    };
    // A dataset or model flag replaces the grids' dataset or model axes: the whole sweep uses it.
    if let Some(v) = &args.dataset {
        c.dataset = v.clone();
        c.grid.0.iter_mut().for_each(|g| g.dataset.clear());
    }
    if let Some(v) = &args.model {
        c.model = v.clone();
        c.grid.0.iter_mut().for_each(|g| g.model.clear());
    }
    if let Some(v) = args.epochs {
        c.training.epochs = v;
    }
    if let Some(v) = args.updates {
        c.measure.updates = v;
    }
    if let Some(v) = args.seed {
        c.seed = v;
    }
    if let Some(v) = &args.targets {
        c.measure.targets = v.clone();
    }
    if let Some(v) = &args.families {
        c.measure.families = Family::parse_list(v).context("--families")?;
    }
    if let Some(v) = &args.batch_sizes {
        c.grid.0.iter_mut().for_each(|g| g.batch_size = v.clone());
    }
    if let Some(v) = &args.grid_epochs {
        c.grid.0.iter_mut().for_each(|g| g.epoch = v.clone());
    }
    if let Some(v) = &args.dropouts {
        c.grid.0.iter_mut().for_each(|g| g.dropout = v.clone());
    }
    if !args.dp.is_empty() {
        c.grid.0.iter_mut().for_each(|g| g.dp = args.dp.clone());
    }
    if args.attack.is_some() {
        c.measure.attack = args.attack;
    }
    if args.no_sensitivity {
        c.measure.sensitivity = false;
    }
    c.validate()?;
    Ok(c)
}

/// The flag of each library parameter `audit` and `merge` set.
pub const FLAGS: &[(&str, &str)] = &[("out", "--out"), ("resume", "--resume")];

pub fn run(global: &Global, args: AuditArgs) -> Result<()> {
    let config = config_of(&args)?;
    if args.print_config {
        print!("{}", toml::to_string(&config)?);
        return Ok(());
    }
    let opts = AuditOptions {
        out: args.out.clone(),
        data_dir: global.data_dir.clone(),
        resume: args.resume,
        shard: args.shard.as_deref().map(parse_shard).transpose()?,
        progress: Progress::new(global.quiet || args.json),
        verbose: !global.quiet && !args.json,
    };
    let outcome = audit::run_audit(&config, &opts)?;
    gradleak::report::write_reports(&args.out, &outcome.manifest, &outcome.results)?;
    let summary = outcome.summary;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "report": args.out.join("report.json"),
                "summary": summary,
            }))?
        );
        return Ok(());
    }
    // What a user looks at first: the verdict, then the overview of a sweep or the layer table of a single cell.
    let report = gradleak::report::build(&outcome.manifest, &outcome.results);
    println!("{}", gradleak::report::summary(&report));
    for line in &summary.skipped {
        println!("skipped: {line}");
    }
    println!(
        "{} cells ({} computed, {} reused) in {:.0} s; reports: {}/report.{{json,md,html}}, records.csv",
        summary.cells_in_shard,
        summary.cells_computed,
        summary.cells_reused,
        summary.seconds,
        args.out.display()
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// Out folders of the shards of one audit.
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
    /// Folder for the merged report.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run_merge(_global: &Global, args: MergeArgs) -> Result<()> {
    let (manifest, results) = audit::merge(&args.shards, &args.out)?;
    gradleak::report::write_reports(&args.out, &manifest, &results)?;
    println!(
        "merged {} of {} cells from {} shards into {}",
        results.len(),
        manifest.cells.len(),
        args.shards.len(),
        args.out.display()
    );
    Ok(())
}
