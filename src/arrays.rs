//! Arrays in and out: NumPy `.npy`, `.safetensors` and numeric CSV, so that what gradleak reads and writes can be
//! produced and loaded by NumPy, PyTorch or pandas.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

/// Reads an array from `.npy`, `.safetensors` (the tensor named `key`, or the only one) or `.csv`.
pub fn read_array(path: &Path, key: Option<&str>) -> Result<Tensor> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "npy" => read_npy(path),
        "safetensors" => read_safetensors_tensor(path, key),
        "csv" => read_csv(path),
        _ => bail!("{}: unknown array format '.{ext}'; expected .npy, .safetensors or .csv", path.display()),
    }
}

/// Reads one tensor of a safetensors file: the one named `key`, or the only one.
pub fn read_safetensors_tensor(path: &Path, key: Option<&str>) -> Result<Tensor> {
    check_file(path)?;
    let bytes = fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let named =
        parse_safetensors(&bytes).with_context(|| format!("{}: not a valid safetensors file", path.display()))?;
    let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    match key {
        Some(k) => named
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, t)| t.shallow_clone())
            .with_context(|| format!("{}: no tensor named '{k}'; it holds: {}", path.display(), names.join(", "))),
        None if named.len() == 1 => Ok(named[0].1.shallow_clone()),
        None => bail!(
            "{}: holds {} tensors ({}); name one with <file>:<tensor>",
            path.display(),
            named.len(),
            names.join(", ")
        ),
    }
}

/// Parses the bytes of a safetensors file into its named tensors, in the file's order.
pub fn parse_safetensors(bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    let file = safetensors::SafeTensors::deserialize(bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            let kind = safetensors_kind(view.dtype())
                .with_context(|| format!("tensor '{name}': element type {:?} is not supported", view.dtype()))?;
            let shape = view
                .shape()
                .iter()
                .map(|&d| i64::try_from(d).with_context(|| format!("tensor '{name}': dimension {d} is too large")))
                .collect::<Result<Vec<i64>>>()?;
            let t = Tensor::f_from_data_size(view.data(), &shape, kind)
                .map_err(|e| anyhow::anyhow!("tensor '{name}': {}", first_line(&e.to_string())))?;
            Ok((name, t))
        })
        .collect()
}

/// The libtorch kind of a safetensors element type (those libtorch has).
fn safetensors_kind(dtype: safetensors::Dtype) -> Option<Kind> {
    use safetensors::Dtype;
    Some(match dtype {
        Dtype::BOOL => Kind::Bool,
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::I16 => Kind::Int16,
        Dtype::I32 => Kind::Int,
        Dtype::I64 => Kind::Int64,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F16 => Kind::Half,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        _ => return None,
    })
}

/// The first line of a libtorch message (which appends a C++ backtrace).
fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or(message)
}

fn check_file(path: &Path) -> Result<()> {
    if !path.is_file() {
        bail!("{}: no such file", path.display());
    }
    Ok(())
}

/// Element types of `.npy` files that gradleak reads, with their libtorch kind and size in bytes.
fn npy_kind(descr: &str) -> Option<(Kind, usize)> {
    Some(match descr {
        "<f4" => (Kind::Float, 4),
        "<f8" => (Kind::Double, 8),
        "<f2" => (Kind::Half, 2),
        "<i8" => (Kind::Int64, 8),
        "<i4" => (Kind::Int, 4),
        "<i2" => (Kind::Int16, 2),
        "|i1" => (Kind::Int8, 1),
        "|u1" => (Kind::Uint8, 1),
        "|b1" => (Kind::Bool, 1),
        _ => return None,
    })
}

/// Reads a little-endian, C-order `.npy` file (format versions 1 to 3).
pub fn read_npy(path: &Path) -> Result<Tensor> {
    let bytes = fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    parse_npy(&bytes).with_context(|| format!("{}: not a valid .npy file", path.display()))
}

/// Parses the bytes of an `.npy` file.
pub fn parse_npy(bytes: &[u8]) -> Result<Tensor> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("missing the \\x93NUMPY magic number");
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize, 12),
        v => bail!("unsupported format version {v}"),
    };
    let header = start.checked_add(header_len).and_then(|end| bytes.get(start..end)).context("truncated header")?;
    let header = std::str::from_utf8(header).context("header is not text")?;
    let descr = header_field(header, "descr").context("header has no 'descr'")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let (kind, size) = npy_kind(descr)
        .with_context(|| format!("element type '{descr}' is not supported (little-endian float, int, uint8, bool)"))?;
    let fortran = header_field(header, "fortran_order").context("header has no 'fortran_order'")?;
    if fortran.trim() != "False" {
        bail!("Fortran-ordered arrays are not supported; save with np.ascontiguousarray");
    }
    let shape_text = header_field(header, "shape").context("header has no 'shape'")?;
    let shape: Vec<i64> = shape_text
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<i64>().with_context(|| format!("bad shape entry '{s}'")))
        .collect::<Result<_>>()?;
    let data = &bytes[start + header_len..];
    let expected = data_bytes(&shape, size)?;
    crate::limits::check_allocation("the array", expected as u64)?;
    if data.len() != expected {
        bail!("shape {shape:?} needs {expected} bytes of data, the file has {}", data.len());
    }
    Tensor::f_from_data_size(data, &shape, kind)
        .map_err(|e| anyhow::anyhow!("shape {shape:?}: {}", first_line(&e.to_string())))
}

/// Bytes of data an array of `shape` holds, `size` bytes per element: every dimension at least 0, and checked
/// arithmetic, so that a header cannot ask for a size that wraps around.
fn data_bytes(shape: &[i64], size: usize) -> Result<usize> {
    if let Some(d) = shape.iter().find(|&&d| d < 0) {
        bail!("shape {shape:?} has a negative dimension ({d})");
    }
    let bytes = shape
        .iter()
        .try_fold(size, |acc, &d| acc.checked_mul(d as usize))
        .with_context(|| format!("shape {shape:?} holds more bytes than this machine can address"))?;
    // The strides multiply every dimension but zeros too ((0, 2^62, 2^62) holds no data, yet its strides overflow).
    shape
        .iter()
        .try_fold(1i64, |acc, &d| acc.checked_mul(d.max(1)))
        .with_context(|| format!("shape {shape:?} has dimensions whose product overflows"))?;
    Ok(bytes)
}

/// The text of `key`'s value in a NumPy header dict (`{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`).
fn header_field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'")).or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[at + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') { rest.find(')')? + 1 } else { rest.find(',').unwrap_or(rest.len()) };
    Some(&rest[..end])
}

/// The bytes of an `.npy` file (version 1.0) holding `t` (f32, f64, i64, i32, u8 or bool; made contiguous).
pub fn npy_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let descr = match t.kind() {
        Kind::Float => "<f4",
        Kind::Double => "<f8",
        Kind::Int64 => "<i8",
        Kind::Int => "<i4",
        Kind::Uint8 => "|u1",
        Kind::Bool => "|b1",
        k => bail!("cannot write a tensor of kind {k:?} to .npy"),
    };
    let shape = t.size();
    let shape_text = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Pad so that the data starts on a 64-byte boundary, ending with a newline, as NumPy does.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let t = t.contiguous();
    let numel = t.numel();
    let elem = t.kind().elt_size_in_bytes();
    let mut out = Vec::with_capacity(10 + header.len() + numel * elem);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    let start = out.len();
    out.resize(start + numel * elem, 0);
    t.copy_data_u8(&mut out[start..], numel);
    Ok(out)
}

/// Writes `t` to an `.npy` file atomically.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    crate::io::atomic_write(path, &npy_bytes(t)?)
}

/// Reads a numeric CSV as a 2-D f64 tensor (rows x columns); a first row that is not numeric is taken as a header.
pub fn read_csv(path: &Path) -> Result<Tensor> {
    let text = fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    parse_csv(&text).with_context(|| format!("{}", path.display()))
}

/// Parses numeric CSV text (see [`read_csv`]).
pub fn parse_csv(text: &str) -> Result<Tensor> {
    let mut values = Vec::new();
    let mut columns = None;
    let mut rows = 0i64;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let parsed: Result<Vec<f64>, _> = fields.iter().map(|f| f.parse::<f64>()).collect();
        let parsed = match parsed {
            Ok(p) => p,
            Err(_) if i == 0 => continue, // header
            Err(_) => {
                let bad = fields.iter().position(|f| f.parse::<f64>().is_err()).unwrap_or(0);
                bail!("line {}, column {}: '{}' is not a number", i + 1, bad + 1, fields[bad]);
            }
        };
        match columns {
            None => columns = Some(parsed.len()),
            Some(c) if c != parsed.len() => bail!("line {}: {} columns, expected {c}", i + 1, parsed.len()),
            _ => {}
        }
        values.extend(parsed);
        rows += 1;
    }
    let Some(columns) = columns else { bail!("no numeric rows") };
    Ok(Tensor::from_slice(&values).reshape([rows, columns as i64]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip_keeps_values_shape_and_kind() {
        for kind in [Kind::Float, Kind::Double, Kind::Int64, Kind::Uint8] {
            let t = Tensor::arange(24, (kind, tch::Device::Cpu)).reshape([2, 3, 4]);
            let back = parse_npy(&npy_bytes(&t).unwrap()).unwrap();
            assert_eq!(back.kind(), kind);
            assert_eq!(back.size(), vec![2, 3, 4]);
            assert!(back.equal(&t));
        }
        let v = Tensor::from_slice(&[1.5f32, -2.0]);
        assert!(parse_npy(&npy_bytes(&v).unwrap()).unwrap().equal(&v));
    }

    #[test]
    fn npy_header_is_aligned_as_numpy_writes_it() {
        let bytes = npy_bytes(&Tensor::zeros([3, 5], (Kind::Float, tch::Device::Cpu))).unwrap();
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        assert_eq!(bytes[10 + header_len - 1], b'\n');
    }

    #[test]
    fn npy_rejects_bad_magic_truncation_and_fortran_order() {
        assert!(parse_npy(b"NOTNUMPY000000").unwrap_err().to_string().contains("magic"));
        let mut bytes = npy_bytes(&Tensor::from_slice(&[1.0f64, 2.0, 3.0])).unwrap();
        bytes.pop();
        assert!(format!("{:#}", parse_npy(&bytes).unwrap_err()).contains("needs 24 bytes"));
        let mut fortran = npy_bytes(&Tensor::from_slice(&[1.0f64])).unwrap();
        let at = fortran.windows(5).position(|w| w == b"False").unwrap();
        fortran[at..at + 5].copy_from_slice(b"True ");
        assert!(format!("{:#}", parse_npy(&fortran).unwrap_err()).contains("Fortran"));
    }

    /// A header with the given shape text and `data` bytes after it.
    fn npy_with_shape(shape: &str, data: usize) -> Vec<u8> {
        let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}\n");
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.resize(out.len() + data, 0);
        out
    }

    #[test]
    fn npy_sizes_are_checked_before_allocating() {
        let message = |shape: &str, data: usize| format!("{:#}", parse_npy(&npy_with_shape(shape, data)).unwrap_err());
        // (-1, -1) multiplies to 1 element: 4 bytes would match without the sign check.
        assert!(message("(-1, -1)", 4).contains("negative dimension (-1)"), "{}", message("(-1, -1)", 4));
        // 2^62 x 4 x 4 bytes wraps around to 0 in unchecked arithmetic.
        let huge = message("(4611686018427387904, 4)", 0);
        assert!(huge.contains("more bytes than this machine can address"), "{huge}");
        let large = message("(1000000000000,)", 0);
        assert!(large.contains("more than this machine's"), "{large}");
        // An empty array is a valid file; whoever reads it decides whether zero rows will do.
        assert_eq!(parse_npy(&npy_with_shape("(0, 5)", 0)).unwrap().size(), vec![0, 5]);
    }

    #[test]
    fn csv_with_header_and_errors() {
        let t = parse_csv("a,b\n1,2\n3.5,-4\n").unwrap();
        assert_eq!(t.size(), vec![2, 2]);
        assert_eq!(t.double_value(&[1, 0]), 3.5);
        assert!(parse_csv("1,2\n3\n").unwrap_err().to_string().contains("line 2"));
        assert!(parse_csv("1,2\n3,x\n").unwrap_err().to_string().contains("'x' is not a number"));
    }
}
