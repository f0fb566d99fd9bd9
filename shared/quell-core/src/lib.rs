//! quell's pure core: the normalized cross-cloud finding model, the normalizers that build it
//! from every supported source, the policy, and the planner.
//!
//! Invariants (see ARCHITECTURE.md): no I/O, no clock, no async, no panics on any input. The
//! lints below deny the constructs that panic; tests may use them.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod alert;
pub mod catalog;
pub mod clock;
pub mod error;
pub mod inverse;
pub mod json;
pub mod key;
pub mod links;
pub mod model;
pub mod normalize;
pub mod plan;
pub mod policy;
pub mod render;
pub mod report;
pub mod sweep;

pub use error::{InputError, PolicyError};
pub use model::{
    Cloud, Family, Finding, FindingRef, Severity, SeverityLabel, Source, Status, Subject,
};
pub use normalize::{Batch, normalize, normalize_value};
pub use plan::{Action, ActionKind, Context, Plan, Skip, Target, plan};
pub use policy::{Mode, Policy};

/// Normalizes raw input and plans it in one call: what every edge does first.
pub fn plan_input(input: &[u8], policy: &Policy, ctx: &Context) -> Result<Plan, InputError> {
    Ok(plan::plan(normalize::normalize(input)?, policy, ctx))
}
