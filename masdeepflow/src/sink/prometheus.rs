//! `--metrics-listen`: `GET /metrics` in the Prometheus text format
//! (0.0.4) or OpenMetrics 1.0, by the request's `Accept` header, encoded
//! by the `prometheus-client` crate from a snapshot of [`Metrics`]; the
//! HTTP server is `masdeepflow_export::serve`.
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet},
    metrics::MetricType,
    registry::{Registry, Unit as PromUnit},
};

use crate::sink::metrics::{FamilySnapshot, Kind, Metrics, Unit, Value};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The families of one scrape, as a prometheus-client collector.
#[derive(Debug)]
struct Snapshot(Vec<FamilySnapshot>);

impl std::fmt::Debug for FamilySnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} points)", self.desc.prom, self.points.len())
    }
}

fn encode_value(encoder: &mut MetricEncoder<'_>, value: &Value) -> Result<(), std::fmt::Error> {
    match value {
        Value::Counter(v) => encoder.encode_counter::<NoLabelSet, _, f64>(v, None),
        Value::CounterF64(v) => encoder.encode_counter::<NoLabelSet, _, f64>(v, None),
        Value::Gauge(v) => encoder.encode_gauge(v),
        Value::Histogram(h, bounds) => {
            // The bounds' buckets, then the one above the last bound, which
            // the encoders write as le="+Inf" (whose count is the total).
            let buckets: Vec<(f64, u64)> = bounds.iter().map(|b| *b as f64 / 1e9).chain([f64::INFINITY]).zip(h.buckets).collect();
            encoder.encode_histogram::<NoLabelSet>(h.sum_ns as f64 / 1e9, h.count, &buckets, None)
        }
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.0 {
            let d = family.desc;
            let unit = match d.unit {
                Unit::Seconds => Some(PromUnit::Seconds),
                Unit::Bytes => Some(PromUnit::Bytes),
                Unit::Count(_) => None,
            };
            let kind = match d.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
                Kind::Histogram => MetricType::Histogram,
            };
            let mut metric = encoder.encode_descriptor(d.prom, d.help, unit.as_ref(), kind)?;
            for p in &family.points {
                let labels: Vec<(&str, &str)> = p.labels.iter().map(|(l, v)| (l.prom, v.as_ref())).collect();
                if labels.is_empty() {
                    encode_value(&mut metric, &p.value)?;
                } else {
                    encode_value(&mut metric.encode_family(&labels)?, &p.value)?;
                }
            }
        }
        Ok(())
    }
}

/// The exposition of `metrics` now: OpenMetrics or the Prometheus text format.
pub fn render(metrics: &Mutex<Metrics>, openmetrics: bool) -> String {
    let snapshot = metrics.lock().unwrap_or_else(PoisonError::into_inner).snapshot();
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(snapshot)));
    let mut text = String::with_capacity(64 * 1024);
    let written = if openmetrics {
        prometheus_client::encoding::text::encode(&mut text, &registry)
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
    };
    written.expect("writing to a String");
    text
}

/// Whether an `Accept` header prefers OpenMetrics over the text format
/// (by q-values; Prometheus asks for OpenMetrics first).
pub fn wants_openmetrics(accept: &str) -> bool {
    let (mut openmetrics, mut text) = (0.0f32, 0.0f32);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let q = parts.filter_map(|p| p.strip_prefix("q=")).find_map(|q| q.parse::<f32>().ok()).unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(q),
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    openmetrics > 0.0 && openmetrics >= text
}

/// Serves `/metrics` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Mutex<Metrics>>) {
    let render = move |accept: &str| {
        let openmetrics = wants_openmetrics(accept);
        let content_type = if openmetrics { OPENMETRICS } else { prometheus_client::encoding::prometheus_text::CONTENT_TYPE };
        (content_type, render(&metrics, openmetrics))
    };
    masdeepflow_export::serve::serve(listener, "/metrics", Arc::new(render)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        // What Prometheus 2.x sends.
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(!wants_openmetrics(""));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics("text/plain;version=0.0.4"));
        assert!(!wants_openmetrics("application/openmetrics-text;q=0.2,text/plain;q=0.9"));
        assert!(wants_openmetrics("application/openmetrics-text"));
    }
}
