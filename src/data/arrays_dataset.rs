//! Your own data as arrays: a folder (dataset spec `arrays:PATH`) holding
//!
//! | file | shape | contents |
//! |---|---|---|
//! | `x_train.*` | (N, F), (N, H, W), (N, C, H, W) | inputs: tabular rows, grey images, or images |
//! | `y_train.*` | (N,) or (N, 1) | integer class labels 0..K-1 |
//! | `a_train.*` (optional) | (N,) or (N, A) | latent attributes |
//! | `x_test.*`, `y_test.*`, `a_test.*` (optional) | same | the test split |
//! | `dataset.json` (optional) | | class names, attribute names, layout, scale |
//!
//! where `*` is `npy`, `safetensors` (a file with one tensor) or `csv` (numeric, optional header row). Without
//! test files, a seeded stratified 80/20 split of the training files is used. Images are expected in [0, 1]
//! after dividing by `scale` (default 255 for uint8 arrays, else 1); tabular rows are used as they are. An
//! attribute column whose values are all 0 or 1 is used as it is; any other column is binarised at its training
//! median (1 = above), keeping the raw values. Attributes are named by `dataset.json`, else by the header row of a
//! CSV attribute file, else `a0`, `a1`, .... Without attribute files, images get the attributes computed from
//! their pixels (see [`super::attributes`]) and tabular data gets none.
//!
//! `dataset.json` (every field optional):
//! `{"classes": ["cat", "dog"], "attributes": [{"name": "old", "description": "1 = ..."}], "layout": "nhwc",
//!   "scale": 255}`; `layout` is `nchw` (default) or `nhwc` for 4-D inputs.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use tch::{Kind, Tensor};

use super::{attributes, AttributeInfo, Dataset, InputShape, Split};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Descriptor {
    pub classes: Option<Vec<String>>,
    pub attributes: Option<Vec<AttributeInfo>>,
    pub layout: Option<String>,
    pub scale: Option<f64>,
}

/// `dir/stem.npy`, `.safetensors` or `.csv`, whichever exists (error if several do).
fn find(dir: &Path, stem: &str) -> Result<Option<PathBuf>> {
    let found: Vec<PathBuf> =
        ["npy", "safetensors", "csv"].iter().map(|e| dir.join(format!("{stem}.{e}"))).filter(|p| p.is_file()).collect();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.into_iter().next()),
        _ => bail!("{}: several files named {stem}.*; keep one of .npy, .safetensors, .csv", dir.display()),
    }
}

fn read(path: &Path) -> Result<Tensor> {
    crate::arrays::read_array(path, None)
}

/// Inputs as (N, F) f32 or (N, C, H, W) f32 in [0, 1].
fn inputs(path: &Path, desc: &Descriptor) -> Result<Tensor> {
    let x = read(path)?;
    let what = path.display();
    let scale = desc.scale.unwrap_or(if x.kind() == Kind::Uint8 { 255.0 } else { 1.0 });
    let size = x.size();
    check_finite_rows(path, &x)?;
    let x = match size.len() {
        2 => return Ok(x.to_kind(Kind::Float)),
        3 => x.unsqueeze(1),
        4 => match desc.layout.as_deref().unwrap_or("nchw") {
            "nchw" => x,
            "nhwc" => x.permute([0, 3, 1, 2]).contiguous(),
            other => bail!("dataset.json: layout '{other}', expected nchw or nhwc"),
        },
        _ => bail!("{what}: shape {size:?}, expected (N, F), (N, H, W) or (N, C, H, W)"),
    };
    let x = x.to_kind(Kind::Float) / scale;
    if x.numel() > 0 {
        let (lo, hi) = (x.min().double_value(&[]), x.max().double_value(&[]));
        if !(lo >= 0.0 && hi <= 1.0) {
            bail!("{what}: image values span {lo}..{hi} after dividing by {scale}; expected 0..1 (set \"scale\" in dataset.json)");
        }
    }
    Ok(x)
}

/// Refuses NaN and infinite values, naming the file and the first row that holds one (rows count from 0).
fn check_finite_rows(path: &Path, x: &Tensor) -> Result<()> {
    if !x.is_floating_point() || x.numel() == 0 {
        return Ok(());
    }
    let bad = x.isfinite().logical_not().reshape([x.size()[0], -1]).any_dim(1, false);
    if let Some(row) = Vec::<bool>::try_from(&bad)?.iter().position(|&b| b) {
        let count = bad.sum(Kind::Int64).int64_value(&[]);
        bail!(
            "{}: row {row} holds a NaN or infinite value ({count} rows in all); expected finite numbers",
            path.display()
        );
    }
    Ok(())
}

/// Labels (N,) i64 from (N,) or (N, 1) integer values >= 0.
fn labels(path: &Path) -> Result<Tensor> {
    let y = read(path)?;
    let size = y.size();
    let y = match size[..] {
        [_] => y,
        [n, 1] => y.reshape([n]),
        _ => bail!("{}: shape {size:?}, expected (N,) or (N, 1) labels", path.display()),
    };
    let as_f = y.to_kind(Kind::Double);
    if as_f.numel() > 0 && (as_f.frac().abs().max().double_value(&[]) > 0.0 || as_f.min().double_value(&[]) < 0.0) {
        bail!("{}: labels must be integers 0, 1, 2, ...", path.display());
    }
    // Labels are class codes 0..K-1: the largest sets K, and with it the class names and the model's output layer.
    if as_f.numel() > 0 {
        let max = as_f.max().double_value(&[]);
        if max >= crate::limits::MAX_CLASSES as f64 {
            bail!(
                "{}: labels go up to {max}, more than the {} classes gradleak allows; expected class codes 0..K-1",
                path.display(),
                crate::limits::MAX_CLASSES
            );
        }
    }
    Ok(y.to_kind(Kind::Int64))
}

/// Attribute values (N, A) f32.
fn attribute_values(path: &Path) -> Result<Tensor> {
    let a = read(path)?;
    check_finite_rows(path, &a)?;
    let size = a.size();
    match size[..] {
        [n] => Ok(a.to_kind(Kind::Float).reshape([n, 1])),
        [_, _] => Ok(a.to_kind(Kind::Float)),
        _ => bail!("{}: shape {size:?}, expected (N,) or (N, A) attributes", path.display()),
    }
}

fn check_rows(what: &[(&Path, i64)]) -> Result<()> {
    let (first, n) = what[0];
    for &(p, m) in &what[1..] {
        if m != n {
            bail!("{} has {m} rows but {} has {n}; expected the same count", p.display(), first.display());
        }
    }
    Ok(())
}

/// Loads an arrays folder (see the module documentation).
pub fn load(dir: &Path, name: &str) -> Result<Dataset> {
    if !dir.is_dir() {
        bail!("{}: no such folder (expected x_train.npy, y_train.npy, ...)", dir.display());
    }
    let desc_path = dir.join("dataset.json");
    let desc: Descriptor = super::optional_descriptor(&desc_path)?;
    let need = |stem: &str| -> Result<PathBuf> {
        find(dir, stem)?.with_context(|| format!("{}: no {stem}.npy, {stem}.safetensors or {stem}.csv", dir.display()))
    };
    let (xp, yp) = (need("x_train")?, need("y_train")?);
    let (x, y) = (inputs(&xp, &desc)?, labels(&yp)?);
    let ap = find(dir, "a_train")?;
    let a = ap.as_deref().map(attribute_values).transpose()?;
    let mut rows = vec![(xp.as_path(), x.size()[0]), (yp.as_path(), y.size()[0])];
    if let (Some(p), Some(a)) = (&ap, &a) {
        rows.push((p.as_path(), a.size()[0]));
    }
    check_rows(&rows)?;

    let (train, test) = match find(dir, "x_test")? {
        Some(xtp) => {
            let ytp = need("y_test")?;
            let (xt, yt) = (inputs(&xtp, &desc)?, labels(&ytp)?);
            let atp = find(dir, "a_test")?;
            if atp.is_some() != ap.is_some() {
                bail!("{}: give attributes for both splits (a_train and a_test) or for neither", dir.display());
            }
            let at = atp.as_deref().map(attribute_values).transpose()?;
            let mut rows = vec![(xtp.as_path(), xt.size()[0]), (ytp.as_path(), yt.size()[0])];
            if let (Some(p), Some(at)) = (&atp, &at) {
                rows.push((p.as_path(), at.size()[0]));
            }
            check_rows(&rows)?;
            if xt.size()[1..] != x.size()[1..] {
                bail!("{} has samples of shape {:?}, x_train {:?}", xtp.display(), &xt.size()[1..], &x.size()[1..]);
            }
            ((x, y, a), (xt, yt, at))
        }
        None => {
            let (tr, te) = super::stratified_split(&Vec::<i64>::try_from(&y)?, super::TEST_FRACTION, super::SPLIT_SEED);
            let (tr, te) = (Tensor::from_slice(&tr), Tensor::from_slice(&te));
            let pick = |t: &Tensor, i: &Tensor| t.index_select(0, i);
            (
                (pick(&x, &tr), pick(&y, &tr), a.as_ref().map(|a| pick(a, &tr))),
                (pick(&x, &te), pick(&y, &te), a.as_ref().map(|a| pick(a, &te))),
            )
        }
    };

    let max_label =
        train.1.max().int64_value(&[]).max(if test.1.numel() > 0 { test.1.max().int64_value(&[]) } else { 0 });
    // A class of the test split that training never shows: the model gets an output it is never trained on, and
    // every test sample of the class counts as an error without a word.
    let seen = train.1.bincount(None::<Tensor>, max_label + 1).gt(0);
    let unseen = test.1.masked_select(&seen.index_select(0, &test.1).logical_not());
    if unseen.numel() > 0 {
        let labels: Vec<String> = Vec::<i64>::try_from(&unseen.unique_dim(0, true, false, false).0)?
            .into_iter()
            .map(|l| l.to_string())
            .collect();
        bail!(
            "{}: the test split has label{} {} that the training split never has; a model cannot learn a class it \
             never sees (add training samples of it, or leave it out of the test split)",
            dir.display(),
            if labels.len() == 1 { "" } else { "s" },
            labels.join(", ")
        );
    }
    let classes = match desc.classes {
        Some(c) if (c.len() as i64) > max_label => c,
        Some(c) => bail!("{}: {} class names, but the labels go up to {max_label}", desc_path.display(), c.len()),
        None => (0..=max_label).map(|i| i.to_string()).collect(),
    };
    let input_shape = match x_shape(&train.0)? {
        s @ InputShape::Image { channels, .. } if train.2.is_none() && (channels == 1 || channels == 3) => {
            let mut d = super::image_dataset(name, classes, (train.0, train.1), (test.0, test.1))?;
            d.input_shape = s;
            return Ok(d);
        }
        s => s,
    };
    let (attrs, tr_bin, te_bin, tr_raw, te_raw) = match (train.2, test.2) {
        (Some(a), Some(at)) => {
            let k = a.size()[1];
            if at.size()[1] != k {
                bail!("{}: a_train has {k} attribute columns, a_test {}", dir.display(), at.size()[1]);
            }
            let infos = match desc.attributes {
                Some(i) if i.len() as i64 == k => i,
                Some(i) => bail!("{}: {} attribute names for {k} attribute columns", desc_path.display(), i.len()),
                None => {
                    let header = ap.as_deref().and_then(csv_header).filter(|h| h.len() as i64 == k);
                    let name = |j: usize| header.as_ref().map_or(format!("a{j}"), |h| h[j].clone());
                    (0..k as usize).map(|j| AttributeInfo { name: name(j), description: String::new() }).collect()
                }
            };
            let (tb, eb, infos) = binarise_columns(&a, &at, infos)?;
            (infos, tb, eb, a, at)
        }
        _ => {
            let (n, m) = (train.1.size()[0], test.1.size()[0]);
            let z = |n: i64, k: Kind| Tensor::zeros([n, 0], (k, tch::Device::Cpu));
            (Vec::new(), z(n, Kind::Int64), z(m, Kind::Int64), z(n, Kind::Float), z(m, Kind::Float))
        }
    };
    Ok(Dataset {
        name: name.to_string(),
        input_shape,
        classes,
        attributes: attrs,
        train: Split { inputs: train.0, labels: train.1, attributes: tr_bin, attribute_values: tr_raw },
        test: Split { inputs: test.0, labels: test.1, attributes: te_bin, attribute_values: te_raw },
    })
}

/// The column names of a CSV file's header row (a first line that is not all numbers), if it has one.
fn csv_header(path: &Path) -> Option<Vec<String>> {
    if path.extension().is_none_or(|e| e != "csv") {
        return None;
    }
    let text = fs::read_to_string(path).ok()?;
    let first = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let fields: Vec<String> = first.split(',').map(|f| f.trim().to_string()).collect();
    fields.iter().any(|f| f.parse::<f64>().is_err()).then_some(fields)
}

fn x_shape(x: &Tensor) -> Result<InputShape> {
    Ok(match x.size()[..] {
        [_, f] => InputShape::Tabular { features: f },
        [_, c, h, w] => InputShape::Image { channels: c, height: h, width: w },
        ref s => bail!("unexpected input shape {s:?}"),
    })
}

/// Binary columns stay; others are thresholded at the training median. Fills empty descriptions.
fn binarise_columns(
    a: &Tensor,
    at: &Tensor,
    mut infos: Vec<AttributeInfo>,
) -> Result<(Tensor, Tensor, Vec<AttributeInfo>)> {
    let k = a.size()[1] as usize;
    let tr = Vec::<f32>::try_from(a.contiguous().view([-1]))?;
    let te = Vec::<f32>::try_from(at.contiguous().view([-1]))?;
    let medians = attributes::median_thresholds(&tr, k);
    let is_binary = |v: &[f32], j: usize| v.iter().skip(j).step_by(k).all(|&x| x == 0.0 || x == 1.0);
    let thresholds: Vec<attributes::Threshold> = (0..k)
        .map(|j| {
            let binary = is_binary(&tr, j) && is_binary(&te, j);
            if infos[j].description.is_empty() {
                infos[j].description = if binary {
                    format!("1 = column {j} of the attribute file is 1")
                } else {
                    format!("1 = column {j} of the attribute file is above its training median")
                };
            }
            if binary {
                attributes::Threshold { at: 0.5, inclusive: false }
            } else {
                medians[j]
            }
        })
        .collect();
    let pack = |v: &[f32]| {
        let n = (v.len() / k.max(1)) as i64;
        Tensor::from_slice(&attributes::binarise(v, &thresholds)).reshape([n, k as i64])
    };
    Ok((pack(&tr), pack(&te), infos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arrays::write_npy;

    fn cpu(k: Kind) -> (Kind, tch::Device) {
        (k, tch::Device::Cpu)
    }

    #[test]
    fn uint8_images_with_test_split_get_computed_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_npy(&d.join("x_train.npy"), &Tensor::randint(256, [6, 4, 4], cpu(Kind::Uint8))).unwrap();
        write_npy(&d.join("y_train.npy"), &Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2])).unwrap();
        write_npy(&d.join("x_test.npy"), &Tensor::randint(256, [2, 4, 4], cpu(Kind::Uint8))).unwrap();
        fs::write(d.join("y_test.csv"), "label\n1\n2\n").unwrap();
        fs::write(d.join("dataset.json"), r#"{"classes": ["a", "b", "c"]}"#).unwrap();
        let ds = load(d, "arrays:x").unwrap();
        assert_eq!(ds.input_shape, InputShape::Image { channels: 1, height: 4, width: 4 });
        assert_eq!(ds.classes, vec!["a", "b", "c"]);
        assert_eq!(Vec::<i64>::try_from(&ds.test.labels).unwrap(), vec![1, 2]);
        assert!(ds.train.inputs.max().double_value(&[]) <= 1.0);
        assert_eq!(ds.attributes.len(), 5);
        assert_eq!(ds.train.attributes.size(), vec![6, 5]);
    }

    #[test]
    fn tabular_with_attributes_and_seeded_split() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_npy(&d.join("x_train.npy"), &Tensor::randn([10, 3], cpu(Kind::Float))).unwrap();
        write_npy(&d.join("y_train.npy"), &Tensor::from_slice(&[0i64, 1, 0, 1, 0, 1, 0, 1, 0, 1])).unwrap();
        // Column 0 binary, column 1 continuous (0..9).
        let a: Vec<f32> = (0..10).flat_map(|i| [(i % 2) as f32, i as f32]).collect();
        write_npy(&d.join("a_train.npy"), &Tensor::from_slice(&a).reshape([10, 2])).unwrap();
        let ds = load(d, "arrays:t").unwrap();
        assert_eq!(ds.input_shape, InputShape::Tabular { features: 3 });
        // The same columns in a CSV file with a header row: named by it.
        let csv: String =
            std::iter::once("odd,index\n".to_string()).chain((0..10).map(|i| format!("{},{i}\n", i % 2))).collect();
        fs::remove_file(d.join("a_train.npy")).unwrap();
        fs::write(d.join("a_train.csv"), csv).unwrap();
        let named = load(d, "arrays:t").unwrap();
        let names: Vec<&str> = named.attributes.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["odd", "index"]);
        assert!(named.train.attributes.equal(&ds.train.attributes));
        assert_eq!((ds.train.len(), ds.test.len()), (8, 2));
        assert_eq!(ds.attributes[0].name, "a0");
        assert!(ds.attributes[1].description.contains("median"));
        // The binary column stays as it is; the continuous one is thresholded.
        assert!(ds.train.attributes.select(1, 0).equal(&(ds.train.attribute_values.select(1, 0).to_kind(Kind::Int64))));
        let frac = ds.train.attributes.select(1, 1).to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
        assert!((frac - 0.5).abs() < 0.01, "{frac}");
    }

    #[test]
    fn rejects_mismatches() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(load(&d.join("nope"), "arrays:nope").unwrap_err().to_string().contains("no such folder"));
        let e = load(d, "arrays:x").unwrap_err().to_string();
        assert!(e.contains("no x_train.npy, x_train.safetensors or x_train.csv"), "{e}");
        write_npy(&d.join("x_train.npy"), &Tensor::rand([4, 2, 2], cpu(Kind::Float))).unwrap();
        write_npy(&d.join("y_train.npy"), &Tensor::from_slice(&[0i64, 1, 1])).unwrap();
        let e = load(d, "arrays:x").unwrap_err().to_string();
        assert!(e.contains("y_train.npy has 3 rows but") && e.contains("x_train.npy has 4"), "{e}");
        write_npy(&d.join("y_train.npy"), &Tensor::from_slice(&[0.0f32, 1.5, 1.0, 0.0])).unwrap();
        assert!(load(d, "arrays:x").unwrap_err().to_string().contains("labels must be integers"));
        write_npy(&d.join("y_train.npy"), &Tensor::from_slice(&[0i64, 1, 1, 0])).unwrap();
        write_npy(&d.join("x_train.npy"), &(Tensor::rand([4, 2, 2], cpu(Kind::Float)) + 3.0)).unwrap();
        assert!(load(d, "arrays:x").unwrap_err().to_string().contains("expected 0..1"));
        fs::write(d.join("x_train.csv"), "1,2\n").unwrap();
        assert!(load(d, "arrays:x").unwrap_err().to_string().contains("several files"));
        fs::remove_file(d.join("x_train.csv")).unwrap();
        fs::write(d.join("dataset.json"), r#"{"classes": ["only"]}"#).unwrap();
        write_npy(&d.join("x_train.npy"), &Tensor::rand([4, 2, 2], cpu(Kind::Float))).unwrap();
        assert!(load(d, "arrays:x").unwrap_err().to_string().contains("1 class names, but the labels go up to 1"));
        fs::write(d.join("dataset.json"), r#"{"clases": []}"#).unwrap();
        assert!(load(d, "arrays:x").unwrap_err().to_string().contains("unknown field"));
    }
}
