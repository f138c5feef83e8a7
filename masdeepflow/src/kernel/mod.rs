//! What the running kernel offers: BTF offsets, tracepoints, BPF features,
//! privileges.
pub mod btf;
pub mod config;
pub mod features;
pub mod privileges;
pub mod tracefs;
