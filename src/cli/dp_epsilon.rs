//! `gradleak dp-epsilon`: the (epsilon, delta) guarantee of DP-SGD from its parameters, by the RDP accountant.

use anyhow::{bail, Result};

use gradleak::defenses::accountant;

use super::Global;

#[derive(Debug, clap::Args)]
pub struct DpEpsilonArgs {
    /// Probability that an example is in a batch (Poisson sampling): batch size / dataset size.
    #[arg(long, value_name = "Q", allow_negative_numbers = true)]
    pub sample_rate: f64,
    /// Noise standard deviation divided by the clipping norm.
    #[arg(long, value_name = "SIGMA", allow_negative_numbers = true)]
    pub noise_multiplier: f64,
    /// Number of training steps (epochs / sample rate).
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    pub steps: i64,
    /// Target delta, usually well below 1 / dataset size.
    #[arg(long, value_name = "D", allow_negative_numbers = true)]
    pub delta: f64,
    /// Print JSON (epsilon is null when it is infinite).
    #[arg(long)]
    pub json: bool,
}

pub fn run(_global: &Global, args: DpEpsilonArgs) -> Result<()> {
    let q = args.sample_rate;
    if !(q > 0.0 && q <= 1.0) {
        bail!("--sample-rate: expected a probability in (0, 1], got {q}");
    }
    let sigma = args.noise_multiplier;
    if !(sigma >= 0.0 && sigma.is_finite()) {
        bail!("--noise-multiplier: expected a finite number >= 0, got {sigma}");
    }
    if args.steps <= 0 {
        bail!("--steps: expected a positive number of steps, got {}", args.steps);
    }
    let steps = args.steps as u64;
    let delta = args.delta;
    if !(delta > 0.0 && delta <= 1.0) {
        bail!("--delta: expected a number in (0, 1], got {delta}");
    }
    let orders = accountant::default_orders();
    let spent = accountant::epsilon_with_orders(q, sigma, steps, delta, &orders)?;
    let at_edge = spent.best_order.filter(|o| Some(o) == orders.first() || Some(o) == orders.last());
    if args.json {
        let value = serde_json::json!({
            "epsilon": spent.epsilon.is_finite().then_some(spent.epsilon),
            "delta": delta,
            "best_order": spent.best_order,
            "sample_rate": q,
            "noise_multiplier": sigma,
            "steps": steps,
            "accountant": "rdp-poisson-subsampled-gaussian",
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    match spent.best_order {
        Some(order) if spent.epsilon.is_finite() => {
            let eps = spent.epsilon;
            let shown = if eps == 0.0 || eps >= 0.01 { format!("{eps:.4}") } else { format!("{eps:.3e}") };
            println!("epsilon = {shown} at delta = {delta:e} (optimal Rényi order {order})")
        }
        _ => println!("epsilon = inf at delta = {delta:e}: no finite guarantee (no noise)"),
    }
    println!(
        "DP-SGD, Poisson sample rate {q}, noise multiplier {sigma}, {steps} step{}; RDP accountant over {} orders, \
         add/remove-one adjacency",
        if steps == 1 { "" } else { "s" },
        orders.len()
    );
    if let Some(order) = at_edge {
        println!("note: the optimal order {order} is at the edge of the order grid; a wider grid may give less");
    }
    Ok(())
}
