//! What the running kernel offers: BTF offsets, tracepoints, privileges.
pub mod btf;
pub mod config;
pub mod helpers;
pub mod privileges;
pub mod tracefs;
