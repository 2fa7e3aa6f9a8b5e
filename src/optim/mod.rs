//! Numerical optimisation shared by the measurements and the attacks: one L-BFGS ([`lbfgs`]) with PyTorch's
//! strong-Wolfe line search or Armijo backtracking ([`line_search`]), on flat `f64` vectors or libtorch tensors
//! ([`vector`]).

pub mod lbfgs;
pub mod line_search;
pub mod vector;

pub use lbfgs::{minimize, LbfgsOptions, LbfgsResult, Stop, StopRules};
pub use line_search::LineSearch;
pub use vector::Vector;
