//! The gateway's pure parts, testable without root or a kernel:
//!
//! - [`config`]: the TOML file (`[[service]]` tables) into checked
//!   [`ServiceSpec`]s, with one-line errors naming the line;
//! - [`rotation`]: which backend each rotation slot holds, per algorithm
//!   (round robin, weights expanded smoothly, a Maglev lookup table);
//! - [`health`]: the per-backend health state machine;
//! - [`table`]: the service table as the kernel holds it, and the plan that
//!   takes it from one configuration to the next with atomic swaps (new slot
//!   range first, then one service update; old ranges freed after a grace).
//!
//! Part 2 of the gateway (the proxy) reuses the specs, the algorithms and
//! the health machine.
pub mod config;
pub mod health;
pub mod rotation;
pub mod scope;
pub mod spec;
pub mod table;

pub use config::{ConfigError, parse_config};
pub use spec::{Algorithm, BackendSpec, Drain, HashKey, HealthKind, HealthSpec, Protocol, ServiceSpec};
