//! The recorder behind the `metrics` facade and its Prometheus text
//! encoder (exposition format 0.0.4).
//!
//! A [`Registry`] holds one atomic per counter and gauge key and the first
//! description given per name. It renders what
//! metrics-exporter-prometheus 0.18 rendered for the same metrics, byte for
//! byte, except that the order is fixed: counters, then gauges, each by
//! name, and their samples by labels (the exporter's order was a hash
//! map's). That includes its quirks: names and label keys are sanitised
//! (an invalid character becomes `_`), label values escape `"` and line
//! feeds, and a backslash is written escaped unless it already escapes a
//! backslash (`a\\b` stays `a\\b`). Counter values are integers, gauges
//! Rust's shortest float form (`3`, `1.5`, `-0.25`). nolist has no
//! histograms: one registered here records nothing.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock};

use metrics::atomics::AtomicU64;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// Counters and gauges by key, and descriptions by (sanitised) name. A
/// clone shares the same metrics: one is installed as the global recorder,
/// another renders `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    counters: Cells,
    gauges: Cells,
    help: RwLock<HashMap<String, SharedString>>,
}

/// One atomic per key: a counter's value, or a gauge's `f64` bits.
#[derive(Debug, Default)]
struct Cells(RwLock<HashMap<Key, Arc<AtomicU64>>>);

impl Cells {
    /// The cell of `key`, created at 0. The facade asks on every
    /// `counter!` call, so the common case takes only the read lock.
    fn get(&self, key: &Key) -> Arc<AtomicU64> {
        if let Some(cell) = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return cell.clone();
        }
        let mut cells = self.0.write().unwrap_or_else(PoisonError::into_inner);
        cells.entry(key.clone()).or_default().clone()
    }

    /// Every cell's value by sanitised name, then by labels.
    fn snapshot<T>(&self, value: impl Fn(u64) -> T) -> BTreeMap<String, BTreeMap<Labels, T>> {
        let mut out: BTreeMap<String, BTreeMap<Labels, T>> = BTreeMap::new();
        for (key, cell) in self.0.read().unwrap_or_else(PoisonError::into_inner).iter() {
            out.entry(sanitize_name(key.name()))
                .or_default()
                .insert(labels(key), value(cell.load(Ordering::Acquire)));
        }
        out
    }
}

/// A key's labels in their given order; a repeated label key keeps its
/// first place and its last value.
type Labels = Vec<(String, String)>;

fn labels(key: &Key) -> Labels {
    let mut out: Labels = Vec::new();
    for label in key.labels() {
        match out.iter_mut().find(|(k, _)| k == label.key()) {
            Some((_, v)) => label.value().clone_into(v),
            None => out.push((label.key().to_owned(), label.value().to_owned())),
        }
    }
    out
}

impl Registry {
    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let help = self
            .inner
            .help
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        for (name, samples) in self.inner.counters.snapshot(|v| v) {
            block(&mut out, &name, "counter", help.get(&name), &samples);
        }
        for (name, samples) in self.inner.gauges.snapshot(f64::from_bits) {
            block(&mut out, &name, "gauge", help.get(&name), &samples);
        }
        out
    }

    /// Keeps the first description of a name, as the exporter did.
    fn describe(&self, name: &KeyName, description: SharedString) {
        let mut help = self
            .inner
            .help
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        help.entry(sanitize_name(name.as_str()))
            .or_insert(description);
    }
}

/// One metric: `# HELP` (when described), `# TYPE`, its samples, a blank line.
fn block<T: std::fmt::Display>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: Option<&SharedString>,
    samples: &BTreeMap<Labels, T>,
) {
    if let Some(help) = help {
        let _ = writeln!(out, "# HELP {name} {}", escape(help, false));
    }
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{}=\"{}\"", sanitize_label_key(k), escape(v, true));
            }
            out.push('}');
        }
        let _ = writeln!(out, " {value}");
    }
    out.push('\n');
}

impl Recorder for Registry {
    fn describe_counter(&self, name: KeyName, _: Option<Unit>, description: SharedString) {
        self.describe(&name, description);
    }

    fn describe_gauge(&self, name: KeyName, _: Option<Unit>, description: SharedString) {
        self.describe(&name, description);
    }

    fn describe_histogram(&self, name: KeyName, _: Option<Unit>, description: SharedString) {
        self.describe(&name, description);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.inner.counters.get(key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.inner.gauges.get(key))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// A metric name with every character outside `[a-zA-Z_:][a-zA-Z0-9_:]*`
/// replaced by `_`.
fn sanitize_name(name: &str) -> String {
    sanitize(name, |c| c.is_ascii_alphabetic() || c == '_' || c == ':')
}

/// A label key with every character outside `[a-zA-Z_][a-zA-Z0-9_]*`
/// replaced by `_`.
fn sanitize_label_key(key: &str) -> String {
    sanitize(key, |c| c.is_ascii_alphabetic() || c == '_')
}

fn sanitize(s: &str, first: impl Fn(char) -> bool) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if first(c) || (i > 0 && c.is_ascii_digit()) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Escapes line feeds, `"` (label values only) and backslashes, the
/// exporter's way: a backslash pair is taken as already escaped.
fn escape(s: &str, label_value: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_backslash = false;
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '"' if label_value => {
                pending_backslash = false;
                out.push_str("\\\"");
            }
            '\\' => {
                if pending_backslash {
                    out.push_str("\\\\");
                }
                pending_backslash = !pending_backslash;
            }
            c => {
                if pending_backslash {
                    pending_backslash = false;
                    out.push_str("\\\\");
                }
                out.push(c);
            }
        }
    }
    if pending_backslash {
        out.push_str("\\\\");
    }
    out
}
