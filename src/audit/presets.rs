//! Built-in audit configurations, kept as TOML files in `presets/` so users can read and copy them.

use anyhow::{bail, Context, Result};

use super::AuditConfig;

/// Names accepted by `gradleak audit --preset`.
pub const NAMES: [&str; 1] = ["paper"];

/// The study design of Mo et al. (2022) at a scale that finishes in about an hour on 2 cores.
const PAPER: &str = include_str!("../../presets/paper.toml");

/// The configuration of a preset.
pub fn preset(name: &str) -> Result<AuditConfig> {
    let text = match name {
        "paper" => PAPER,
        _ => bail!("unknown preset '{name}'; expected one of: {}", NAMES.join(", ")),
    };
    AuditConfig::from_toml(text).with_context(|| format!("preset {name}"))
}
