//! Reference gradient-inversion attacks, run on the same shared updates gradleak measures, restricted to any set of
//! layers, so that a layer's measured usable information can be set beside what a real attack recovers from it.
//!
//! * **DLG** (Zhu et al., 2019): L-BFGS on the squared L2 gradient distance, with soft labels.
//! * **iDLG** (Zhao et al., 2020): the label read off the last layer's gradient, then DLG on the input alone.
//! * **Inverting Gradients** (Geiping et al., 2020): cosine distance plus a total-variation prior, signed Adam in
//!   the data range with step decay, restarts.
//!
//! Every attack differentiates a function of the dummy's gradient (double backward). The attacker sees only what
//! the client shared: protected layers are missing, and pruned, quantised or noised values are what it matches.
//! With a batch of B > 1 the B reconstructions are matched to the B originals by an optimal assignment on MSE
//! (Hungarian) before they are scored. Every random choice (the victims, the defences' noise, the dummy's
//! initialisation) follows from one seed.
//!
//! One job per file: `config.rs` (settings and their errors), `attack.rs` (the [`Attack`] trait, [`reconstruct`]
//! and [`Method::attack`], the one place a method is mapped to its implementation), `dlg.rs`, `idlg.rs`, `ig.rs`
//! (the attacks), `target.rs` (a checked shared update and its matched layers), [`objective`] (dummy gradients and
//! distances), `labels.rs` (label plans and inference), `restarts.rs`, `adam.rs` (signed Adam), `score.rs`, `run.rs`
//! (the loop over victims), `output.rs` and [`grid`] (files), `init.rs` (DLG's model initialisation).
//!
//! [`analytic`] holds closed-form recovery (a fully connected layer's input from its gradients).
//!
//! A new attack is a new file implementing [`Attack`], a variant of [`Method`] and its line in [`Method::attack`].

mod adam;
pub mod analytic;
mod attack;
mod batched;
mod config;
mod dlg;
pub mod grid;
mod idlg;
mod ig;
mod init;
mod labels;
pub mod objective;
mod output;
mod restarts;
mod run;
mod score;
mod target;

pub use crate::optim::lbfgs::{self, Stop};
pub use attack::{reconstruct, reconstruct_each, Attack, Defaults, Reconstruction};
pub use batched::{
    inverting_gradients_all as batched_inverting_gradients, inverting_gradients_on as batched_inverting_gradients_on,
};
pub use config::{AttackConfig, LabelMode, Method, Setting, ShareConfig};
pub use dlg::Dlg;
pub use idlg::Idlg;
pub use ig::InvertingGradients;
pub use init::reinit_uniform;
pub use labels::{infer_labels, LabelSource};
pub use output::write_outputs;
pub use run::{run_attacks, AttackReport, MatchedLayer, MeanScores, UpdateResult};
pub use score::{score, ssim_options, ImageScore};
pub use target::AttackedUpdate;
