//! iDLG (Zhao et al., 2020): the label is read off the last layer's gradient (for cross-entropy and one sample,
//! only the true class's weight row has a negative sum, [`super::infer_labels`]), then only the input is optimised,
//! as in DLG.

use anyhow::Result;
use rand_chacha::ChaCha8Rng;

use super::attack::{Attack, Defaults, Reconstruction};
use super::config::LabelMode;
use super::dlg::{match_gradients, Dlg};
use super::labels::LabelPlan;
use super::restarts;
use super::target::AttackedUpdate;

/// Improved Deep Leakage from Gradients.
pub struct Idlg;

impl Attack for Idlg {
    fn name(&self) -> &'static str {
        "iDLG"
    }

    /// DLG's.
    fn defaults(&self) -> Defaults {
        Dlg.defaults()
    }

    fn reconstruct(
        &self,
        target: &AttackedUpdate,
        rng: &mut ChaCha8Rng,
        on_iteration: &mut dyn FnMut(),
    ) -> Result<Reconstruction> {
        let plan = LabelPlan::new(target, LabelMode::Infer, self.name())?;
        restarts::keep_best(target, &plan, rng, on_iteration, |rng, on_iteration| {
            match_gradients(target, &plan, rng, on_iteration)
        })
    }
}
