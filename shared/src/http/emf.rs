//! CloudWatch Embedded Metric Format: a metric is one JSON line on stdout,
//! which CloudWatch Logs turns into a metric, so the hot path makes no call.

use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value, json};

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Switches metric lines off (the local host prints none unless asked).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub const NAMESPACE: &str = "hanul";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    Bytes,
    Percent,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Bytes => "Bytes",
            Unit::Percent => "Percent",
        }
    }
}

/// One EMF record: dimensions, then metrics, then `emit`.
#[derive(Debug, Clone)]
pub struct Metrics {
    dimensions: Vec<(String, String)>,
    metrics: Vec<(String, f64, Unit)>,
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            dimensions: Vec::new(),
            metrics: Vec::new(),
        }
    }

    pub fn dimension(mut self, name: &str, value: &str) -> Self {
        self.dimensions.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn metric(mut self, name: &str, value: f64, unit: Unit) -> Self {
        self.metrics.push((name.to_owned(), value, unit));
        self
    }

    pub fn count(self, name: &str, value: u64) -> Self {
        self.metric(name, value as f64, Unit::Count)
    }

    /// The EMF JSON document.
    pub fn to_json(&self, timestamp_ms: u64) -> Value {
        let mut root = Map::new();
        let dimension_names: Vec<&str> = self.dimensions.iter().map(|(n, _)| n.as_str()).collect();
        let metric_defs: Vec<Value> = self
            .metrics
            .iter()
            .map(|(n, _, u)| json!({ "Name": n, "Unit": u.as_str() }))
            .collect();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [dimension_names],
                    "Metrics": metric_defs,
                }],
            }),
        );
        for (name, value) in &self.dimensions {
            root.insert(name.clone(), Value::String(value.clone()));
        }
        for (name, value, _) in &self.metrics {
            root.insert(name.clone(), json!(value));
        }
        Value::Object(root)
    }

    /// Prints the record as one line on stdout.
    pub fn emit(self) {
        if !ENABLED.load(Ordering::Relaxed) || self.metrics.is_empty() {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        println!("{}", self.to_json(now));
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_has_the_emf_shape() {
        let doc = Metrics::new()
            .dimension("Function", "ids-generate")
            .count("IdsIssued", 5)
            .to_json(1_700_000_000_000);
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "hanul");
        assert_eq!(directive["Dimensions"][0][0], "Function");
        assert_eq!(directive["Metrics"][0]["Name"], "IdsIssued");
        assert_eq!(directive["Metrics"][0]["Unit"], "Count");
        assert_eq!(doc["_aws"]["Timestamp"], 1_700_000_000_000u64);
        assert_eq!(doc["Function"], "ids-generate");
        assert_eq!(doc["IdsIssued"], 5.0);
    }
}
