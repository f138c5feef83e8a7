//! The export side's network code, apart from the agent crate so that the
//! static build compiles it for size (the agent crate is compiled for
//! speed, and generic code is compiled where it is instantiated):
//!
//! - [`connection`]: one HTTP/1.1 or HTTP/2 client connection, plain or
//!   TLS (rustls, the host's roots plus a CA file), made again when it
//!   breaks;
//! - [`otlp`]: OTLP export requests (the `opentelemetry-proto` messages,
//!   encoded with prost), sent as OTLP/HTTP (binary protobuf) or as gRPC
//!   unary calls, and what the collector's answer means;
//! - [`serve`]: the HTTP/1.1 server of `/metrics` (hyper).
//!
//! Nothing here knows the agent's events.
pub mod connection;
pub mod otlp;
pub mod serve;
