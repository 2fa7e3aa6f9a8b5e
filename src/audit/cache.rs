//! The out folder of an audit: `audit.json` (what the folder holds), one `cells/<key>.json` per finished cell, and
//! merging the folders of a sweep's shards into one.
//!
//! A cell's key is a hash of everything that determines it, so a finished cell is reused by any sweep that
//! contains it, and a killed sweep resumes where it stopped.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::{AuditConfig, Cell};
use super::CellResult;

/// The manifest's file name in the out folder.
pub const MANIFEST: &str = "audit.json";
pub const FORMAT: &str = "gradleak-audit/1";

/// What `audit.json` in the out folder says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditManifest {
    pub format: String,
    pub gradleak_version: String,
    pub config_hash: String,
    pub config: AuditConfig,
    pub shard: Option<(usize, usize)>,
    /// Keys of every cell of the sweep, in grid order.
    pub cells: Vec<String>,
    /// Dataset and model pairs of the grid that were left out, and why (a model that does not fit the data).
    #[serde(default)]
    pub skipped: Vec<String>,
}

/// The first 8 bytes of the SHA-256 of a value's JSON, in hex.
pub(crate) fn hash_json<T: Serialize>(value: &T) -> String {
    let text = serde_json::to_string(value).expect("configurations serialise");
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The part of the configuration every cell depends on: everything but the grid and the top-level dataset and
/// model, which a cell names itself.
fn shared_part(config: &AuditConfig) -> AuditConfig {
    AuditConfig { grid: Default::default(), dataset: String::new(), model: String::new(), ..config.clone() }
}

/// The key of a cell: a hash of the shared configuration and the cell.
pub fn cell_key(config: &AuditConfig, cell: &Cell) -> String {
    hash_json(&(shared_part(config), cell, env!("CARGO_PKG_VERSION")))
}

/// The result file of the cell with key `key`.
pub fn cell_path(out: &Path, key: &str) -> PathBuf {
    out.join("cells").join(format!("{key}.json"))
}

/// The folder of a cell's reference-attack outputs.
pub fn attack_dir(out: &Path, key: &str) -> PathBuf {
    out.join("cells").join(format!("{key}-attack"))
}

/// Who writes into an out folder: an audit, which may keep another configuration's cells with `resume`, or a
/// merge, which may not (so its error does not offer a flag it does not have).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writer {
    Audit { resume: bool },
    Merge,
}

/// Creates the out folder, or checks that it holds this audit (or an audit's `resume` is set), and writes
/// `audit.json`.
pub(crate) fn prepare_out(out: &Path, manifest: &AuditManifest, writer: Writer) -> Result<()> {
    let path = out.join(MANIFEST);
    let resume = writer == Writer::Audit { resume: true };
    if path.exists() {
        let text = std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        let previous: AuditManifest = serde_json::from_str(&text)
            .with_context(|| format!("{}: not an audit manifest; choose another out folder", path.display()))?;
        if previous.config_hash != manifest.config_hash && !resume {
            let advice = match writer {
                Writer::Audit { .. } => {
                    "choose another `out`, or pass `resume` to keep its finished cells that this configuration shares"
                }
                Writer::Merge => "merge into a new folder, or into one that holds this same audit",
            };
            crate::param_bail!("out", "{} holds the results of another audit configuration; {advice}", out.display());
        }
    } else if out.is_dir() && std::fs::read_dir(out)?.next().is_some() && !resume {
        crate::param_bail!("out", "{} is not empty and holds no audit; choose another `out`", out.display());
    }
    std::fs::create_dir_all(out.join("cells")).with_context(|| format!("{}: cannot create", out.display()))?;
    crate::io::write_json(&path, manifest)
}

/// Reads the finished cell `key` from its file. A file whose content is another cell (copied or renamed by hand,
/// or written by another version under a colliding name) is an error, so that the audit recomputes it instead of
/// reporting another cell's numbers under this one's name.
pub(crate) fn read_cell(path: &Path, key: &str) -> Result<CellResult> {
    let text = std::fs::read_to_string(path)?;
    let mut cell: CellResult = serde_json::from_str(&text)?;
    if cell.keys.cell != key {
        bail!("holds cell {}, not cell {key} as its name says", cell.keys.cell);
    }
    // A cell written before the `best` records existed gains them (its localisation and agreement stay on the
    // family they name).
    cell.records = super::add_best(std::mem::take(&mut cell.records));
    Ok(cell)
}

/// The finished cells among `keys`, in grid order.
pub fn collect_cells(out: &Path, keys: &[String]) -> Result<Vec<CellResult>> {
    let mut results = Vec::new();
    for key in keys {
        let path = cell_path(out, key);
        if path.exists() {
            results.push(read_cell(&path, key).with_context(|| format!("{}: unreadable cell result", path.display()))?);
        }
    }
    Ok(results)
}

fn read_manifest(dir: &Path) -> Result<AuditManifest> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot read (not an audit folder?)", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not an audit manifest", path.display()))
}

/// Merges the out folders of the shards of one audit into `out`: copies every finished cell (and its attack
/// outputs) and writes the manifest of the whole sweep. Returns it with the finished cells, in grid order. `out`
/// must be new, empty, or hold this same audit.
pub fn merge(shards: &[PathBuf], out: &Path) -> Result<(AuditManifest, Vec<CellResult>)> {
    let manifests: Vec<AuditManifest> = shards.iter().map(|dir| read_manifest(dir)).collect::<Result<_>>()?;
    let Some(first) = manifests.first() else { bail!("no shard given") };
    for (dir, m) in shards.iter().zip(&manifests).skip(1) {
        if m.config_hash != first.config_hash {
            bail!("{}: belongs to another audit configuration than {}", dir.display(), shards[0].display());
        }
    }
    let manifest = AuditManifest { shard: None, ..first.clone() };
    prepare_out(out, &manifest, Writer::Merge)?;
    for (dir, m) in shards.iter().zip(&manifests) {
        for key in &m.cells {
            let from = cell_path(dir, key);
            if !from.exists() {
                continue;
            }
            read_cell(&from, key).with_context(|| {
                format!(
                    "{}: not a finished cell of this audit; run the shard's audit command again to recompute it",
                    from.display()
                )
            })?;
            let bytes = std::fs::read(&from).with_context(|| format!("{}: cannot read", from.display()))?;
            crate::io::atomic_write(&cell_path(out, key), &bytes)?;
            let attack = attack_dir(dir, key);
            if attack.is_dir() {
                let target = attack_dir(out, key);
                std::fs::create_dir_all(&target).with_context(|| format!("{}: cannot create", target.display()))?;
                for entry in std::fs::read_dir(&attack)? {
                    let entry = entry?;
                    std::fs::copy(entry.path(), target.join(entry.file_name()))
                        .with_context(|| format!("{}: cannot copy", entry.path().display()))?;
                }
            }
        }
    }
    let results = collect_cells(out, &manifest.cells)?;
    Ok((manifest, results))
}
