//! Where events go: lines on stdout, as JSON ([`json`]) or text ([`text`]),
//! written by the output thread ([`stdout`]); metrics aggregated from the
//! events ([`metrics`], with [`route`] templating) served to Prometheus
//! ([`prometheus`]); and OTLP export ([`otlp`]), run with the metrics
//! endpoint on the export thread ([`export`]).
pub mod export;
pub mod json;
pub mod metrics;
pub mod otlp;
pub mod prometheus;
pub mod route;
pub mod stdout;
pub mod text;
