//! Sizes checked before allocating: a shape, a label or an option that asks for more memory than the machine has
//! gets a one-line error instead of an abort in the allocator.

use anyhow::{bail, Result};

/// The most parameters a model or a predictor may have: far above every architecture gradleak builds on its
/// datasets (VGG-16 on 32x32 images has 15 million), far below what would exhaust memory when trained.
pub const MAX_PARAMS: i64 = 1 << 31;

/// The most classes a dataset's labels may span (labels are class codes 0..K-1, so the largest label sets K).
pub const MAX_CLASSES: i64 = 1 << 20;

/// Most classes x samples of a categorical target that the V-information families fit: each fit's softmax has an
/// output per class for every sample, over hundreds of L-BFGS steps and a grid of strengths. 500 classes x 1,000
/// samples takes about 40 s with the linear family; 1,000 x 10,000 ran past 20 minutes (`docs/vinfo.md`).
pub const MAX_CLASS_SAMPLES: i64 = 1 << 21;

/// Most bootstrap resamples of a V-information interval (`vinfo --bootstrap`, `measure.bootstrap`): each resample
/// is one mean over the scored samples, and the interval's percentiles need every resample's mean in memory. The
/// default is 1,000; 100,000 over 10,000 scored samples takes about 5 s.
pub const MAX_BOOTSTRAP: usize = 100_000;

/// Most bootstrap resamples of the sensitivity intervals (`sensitivity --bootstrap`): a latent resample computes two
/// principal subspaces (an SVD per group and layer), about 0.04 s for LeNet-5's layers on 300 updates, so the
/// limit is about 40 s there. The default is 200.
pub const MAX_SENSITIVITY_BOOTSTRAP: usize = 1_000;

/// Most relabellings of the subspace distance's null reference (`sensitivity --permutations`), each an SVD per
/// group and layer like a bootstrap resample. The default is 20.
pub const MAX_PERMUTATIONS: usize = 1_000;

/// Most repetitions of the V-information protocol (`vinfo --repeats`, `measure.repeats`): each is a whole pass of
/// fits, so the limit is 100 times the default work.
pub const MAX_REPEATS: usize = 100;

/// Most cross-fitting folds (`vinfo --folds`, `measure.folds`): each is a fit. 100 folds is 20 times the default.
pub const MAX_FOLDS: usize = 100;

/// Most Hutchinson probes per sample (`sensitivity --probes`, `measure.probes`): each is a double backward pass
/// over every sample, and the run's memory grows with them (64 probes of LeNet-5 on 64 samples: 1.9 GB, about a
/// minute on a busy 2-core machine; the known-answer tests of `tests/sensitivity.rs` use 256 on small models). The
/// default is 16 (8 in the audit).
pub const MAX_PROBES: usize = 256;

/// Most iterations of a gradient-matching attack per restart (`attack --iterations`, `measure.attack_iterations`,
/// `ig:N`): Inverting Gradients' published setting, 24,000 (gradleak's default for ig is 4,800). An iteration
/// costs one double backward pass per victim; this limit lets the published setting run, which takes minutes.
pub const MAX_ATTACK_ITERATIONS: usize = 24_000;

/// Most restarts of an attack (`attack --restarts`): each repeats every iteration. Inverting Gradients' published
/// settings use up to 8.
pub const MAX_RESTARTS: usize = 16;

/// Most training epochs of the MLP family (`vinfo --epochs`; early stopping usually ends sooner), as for training.
pub const MAX_EPOCHS: usize = 10_000;

/// Most auxiliary updates of the decoder family (`decoder:N`): each is a shared update computed like a victim's
/// (fewer are used when the split has fewer samples left). The default is 5,000.
pub const MAX_AUX_UPDATES: usize = 1_000_000;

/// Most pixels (height x width) of one image a dataset may declare (a `folder:` dataset's `dataset.json`, or its
/// first image): 4096 x 4096, far above every built-in dataset (CelebA crops are 64 x 64). The whole dataset's
/// values are also checked against the machine's memory before any image is decoded.
pub const MAX_IMAGE_PIXELS: u64 = 4096 * 4096;

/// Refuses a `value` of the count `param` above `max`, as a [`crate::error::ParamError`] that each front end renames
/// to its flag or key: `--bootstrap must be at most 100000, got 1000000000000`.
pub fn check_count(param: &'static str, value: usize, max: usize) -> Result<()> {
    if value > max {
        crate::param_bail!(param, "must be at most {max}, got {value} (the limits are in docs/reliability.md)");
    }
    Ok(())
}

/// Keeps the memory that tensors free for the next ones instead of handing it back to the system.
///
/// glibc serves every block above 32 MB with a fresh `mmap` and unmaps it when freed, so each large tensor (a
/// batch of per-sample gradients of a wide layer is ~100 MB) costs one page fault per 4 kB on first write: writing
/// a fresh 96 MB tensor took 29 to 44 ms against 6 to 8 ms for a mapped one (`examples/bench_grad_samplers.rs`).
/// Serving large blocks from the heap and never trimming it lets later passes reuse them: full per-sample
/// gradients ran 1.1 to 2x faster (`examples/bench_per_sample.rs` with and without `--default-malloc`). The price
/// is that the process keeps its peak memory until it exits, which a batch job can afford.
///
/// # Safety
/// Call it at the start of `main`, before any other thread is started and before any tensor exists.
pub unsafe fn reuse_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}

/// The machine's physical memory in bytes (None when the system does not say).
pub fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf only reads system configuration.
    let (pages, page_size) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    (pages > 0 && page_size > 0).then(|| pages as u64 * page_size as u64)
}

/// Gigabytes, for messages.
fn gb(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / 1e9)
}

/// Refuses an allocation of `bytes` for `what` that exceeds the machine's physical memory.
pub fn check_allocation(what: &str, bytes: u64) -> Result<()> {
    if let Some(memory) = physical_memory() {
        if bytes > memory {
            bail!("{what} needs {}, more than this machine's {} of memory", gb(bytes), gb(memory));
        }
    }
    Ok(())
}

/// Refuses `params` f32 parameters (counted with checked arithmetic; None when the count overflowed) for `what`:
/// at most [`MAX_PARAMS`], and training needs about four copies of them (weights, gradients, two optimiser
/// moments) in memory.
pub fn check_params(what: &str, params: Option<i64>) -> Result<()> {
    match params {
        Some(p) if (0..=MAX_PARAMS).contains(&p) => check_allocation(what, p as u64 * 16),
        Some(p) => bail!("{what} would have {p} parameters, more than the {MAX_PARAMS} gradleak allows"),
        None => bail!("{what} would have more parameters than can be counted"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_beyond_memory_or_the_limits_are_refused() {
        assert!(check_allocation("x", 1024).is_ok());
        let e = check_allocation("the array", u64::MAX).unwrap_err().to_string();
        assert!(e.starts_with("the array needs ") && e.contains("more than this machine's"), "{e}");
        assert!(check_params("m", Some(1000)).is_ok());
        let e = check_params("lenet5", Some(MAX_PARAMS + 1)).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("lenet5 would have {} parameters, more than the {MAX_PARAMS} gradleak allows", MAX_PARAMS + 1)
        );
        assert!(check_params("m", None).unwrap_err().to_string().contains("more parameters than can be counted"));
    }

    #[test]
    fn counts_above_their_limit_name_the_parameter_and_the_limit() {
        assert!(check_count("bootstrap", MAX_BOOTSTRAP, MAX_BOOTSTRAP).is_ok());
        let e = check_count("bootstrap", 1_000_000_000_000, MAX_BOOTSTRAP).unwrap_err();
        let renamed = crate::error::rename_params(e, &[("bootstrap", "--bootstrap")]).to_string();
        assert_eq!(
            renamed,
            "--bootstrap must be at most 100000, got 1000000000000 (the limits are in docs/reliability.md)"
        );
    }
}
