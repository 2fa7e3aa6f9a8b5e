//! `gradleak models`: the architectures, or the named layers of one (or of a TorchScript file) for a given input.

use anyhow::Result;

use gradleak::data::InputShape;
use gradleak::models::{Arch, Model, ModelSpec};

use super::Global;

#[derive(Debug, clap::Args)]
pub struct ModelsArgs {
    /// Show the named layers of this architecture.
    pub model: Option<String>,
    /// Show the named layers of this TorchScript file (the modules that own parameters) instead.
    #[arg(long, conflicts_with = "model")]
    pub torchscript: Option<std::path::PathBuf>,
    /// Input as CxHxW (images) or F (tabular features).
    #[arg(long, default_value = "1x28x28")]
    pub input: String,
    /// Number of classes.
    #[arg(long, default_value_t = 10)]
    pub classes: i64,
    /// Channel multiplier (AlexNet, VGG).
    #[arg(long, default_value_t = 1.0)]
    pub width: f64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn parse_input_shape(s: &str) -> Result<InputShape> {
    let parts: Vec<&str> = s.split('x').collect();
    let nums: Result<Vec<i64>, _> = parts.iter().map(|p| p.trim().parse::<i64>()).collect();
    match nums.as_deref() {
        Ok([c, h, w]) if *c > 0 && *h > 0 && *w > 0 => Ok(InputShape::Image { channels: *c, height: *h, width: *w }),
        Ok([f]) if *f > 0 => Ok(InputShape::Tabular { features: *f }),
        _ => anyhow::bail!("--input: expected CxHxW (e.g. 3x32x32) or a feature count (e.g. 104), got '{s}'"),
    }
}

/// The flag of each library parameter this command sets (the architecture is the positional argument).
pub const FLAGS: &[(&str, &str)] = &[("arch", "model"), ("width", "--width"), ("hidden", "--hidden")];

pub fn run(_global: &Global, args: ModelsArgs) -> Result<()> {
    let file = args.torchscript.as_ref().map(|p| format!("torchscript:{}", p.display()));
    let Some(name) = args.model.or(file) else {
        if args.json {
            let rows: Vec<_> = Arch::ALL
                .iter()
                .map(|a| serde_json::json!({"name": a.name(), "description": a.description()}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            for a in Arch::ALL {
                println!("{:<10} {}", a.name(), a.description());
            }
        }
        return Ok(());
    };
    let mut spec = ModelSpec::from_name(&name, parse_input_shape(&args.input)?, args.classes)?;
    spec.width = args.width;
    let model = Model::new(&spec, 0)?;
    let layers = model.layer_infos();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"spec": spec, "layers": layers}))?);
        return Ok(());
    }
    println!("{} on {}: {} named layers, {} parameters", spec.name(), spec.input, layers.len(), model.num_params());
    let header = if model.script().is_some() { "parameter shapes" } else { "weight shape" };
    println!("{:<24} {:<10} {:>12}  {header}", "layer", "type", "parameters");
    for l in layers {
        // A module's every parameter; a built-in layer's weight (its bias follows from it).
        let shapes = if l.parameters.is_empty() {
            format!("{:?}", l.weight_shape)
        } else {
            let named: Vec<String> =
                l.parameters.iter().map(|(n, s)| format!("{} {s:?}", n.rsplit('.').next().unwrap_or(n))).collect();
            named.join(", ")
        };
        println!("{:<24} {:<10} {:>12}  {shapes}", l.name, l.kind.type_name(), l.num_params);
    }
    Ok(())
}
