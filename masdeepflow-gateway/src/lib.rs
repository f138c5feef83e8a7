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
//! - [`balance`]: a proxy's backend choice per connection (rotation, least
//!   connections, skipping backends that refused);
//! - [`proxy_protocol`]: the PROXY protocol v2 header;
//! - [`relay`]: one proxied connection's life (half-close, resets, ends).
//!
//! The proxy reuses the specs, the rotations and the health machine.
pub mod balance;
pub mod config;
pub mod health;
pub mod proxy_protocol;
pub mod relay;
pub mod rotation;
pub mod scope;
pub mod spec;
pub mod table;

pub use config::{ConfigError, parse_config};
pub use spec::{
    AccelerateSpec, Algorithm, BackendSpec, Datapath, Drain, HashKey, HealthKind, HealthSpec, Protocol, ProxySpec, ServiceSpec,
};
