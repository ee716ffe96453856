//! The engine's metrics, kept per engine (no global registry) and rendered in the Prometheus
//! text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Bucket bounds of duration histograms, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

type Labels = Vec<(String, String)>;

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// A value read at render time: a gauge, or a counter kept elsewhere.
pub struct Gauge {
    /// `gauge` or `counter`.
    pub kind: &'static str,
    /// Its name.
    pub name: &'static str,
    /// Its help text.
    pub help: &'static str,
    /// Its labels.
    pub labels: Vec<(&'static str, String)>,
    /// Its value.
    pub value: f64,
}

#[derive(Default)]
struct Families {
    help: BTreeMap<&'static str, &'static str>,
    counters: BTreeMap<&'static str, BTreeMap<Labels, u64>>,
    histograms: BTreeMap<&'static str, BTreeMap<Labels, Histogram>>,
}

/// Counters and histograms.
#[derive(Default)]
pub struct Metrics {
    families: Mutex<Families>,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_labels(labels: &[(String, String)], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn number(value: f64) -> String {
    if value.is_infinite() {
        "+Inf".into()
    } else {
        format!("{value}")
    }
}

impl Metrics {
    /// Adds `by` to counter `name` with `labels`.
    pub fn add(&self, name: &'static str, help: &'static str, pairs: &[(&str, &str)], by: u64) {
        if let Ok(mut families) = self.families.lock() {
            families.help.insert(name, help);
            *families
                .counters
                .entry(name)
                .or_default()
                .entry(labels(pairs))
                .or_default() += by;
        }
    }

    /// Adds one to counter `name`.
    pub fn inc(&self, name: &'static str, help: &'static str, pairs: &[(&str, &str)]) {
        self.add(name, help, pairs, 1);
    }

    /// Records `seconds` in histogram `name`.
    pub fn observe(
        &self,
        name: &'static str,
        help: &'static str,
        pairs: &[(&str, &str)],
        seconds: f64,
    ) {
        if let Ok(mut families) = self.families.lock() {
            families.help.insert(name, help);
            let histogram = families
                .histograms
                .entry(name)
                .or_default()
                .entry(labels(pairs))
                .or_default();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if seconds <= *bound {
                    histogram.counts[i] += 1;
                }
            }
            histogram.count += 1;
            histogram.sum += seconds;
        }
    }

    /// The exposition text: counters, histograms, then `gauges` read by the caller now.
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let mut out = String::new();
        let Ok(families) = self.families.lock() else {
            return out;
        };
        for (name, series) in &families.counters {
            let _ = writeln!(
                out,
                "# HELP {name} {}",
                families.help.get(name).unwrap_or(&"")
            );
            let _ = writeln!(out, "# TYPE {name} counter");
            for (labels, value) in series {
                let _ = writeln!(out, "{name}{} {value}", render_labels(labels, None));
            }
        }
        for (name, series) in &families.histograms {
            let _ = writeln!(
                out,
                "# HELP {name} {}",
                families.help.get(name).unwrap_or(&"")
            );
            let _ = writeln!(out, "# TYPE {name} histogram");
            for (labels, h) in series {
                for (i, bound) in BUCKETS.iter().enumerate() {
                    let le = number(*bound);
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {}",
                        render_labels(labels, Some(("le", &le))),
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}",
                    render_labels(labels, Some(("le", "+Inf"))),
                    h.count
                );
                let _ = writeln!(out, "{name}_sum{} {}", render_labels(labels, None), h.sum);
                let _ = writeln!(
                    out,
                    "{name}_count{} {}",
                    render_labels(labels, None),
                    h.count
                );
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for gauge in gauges {
            if seen.insert(gauge.name) {
                let _ = writeln!(out, "# HELP {} {}", gauge.name, gauge.help);
                let _ = writeln!(out, "# TYPE {} {}", gauge.name, gauge.kind);
            }
            let pairs: Labels = gauge
                .labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect();
            let _ = writeln!(
                out,
                "{}{} {}",
                gauge.name,
                render_labels(&pairs, None),
                number(gauge.value)
            );
        }
        out
    }
}
