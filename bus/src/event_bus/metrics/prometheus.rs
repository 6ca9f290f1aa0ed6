//! A `metrics::Recorder` that keeps every series in memory and renders the Prometheus text
//! exposition format (version 0.0.4). Our own, because the published exporter's dependency
//! tree compiles C (evmap -> loom -> generator -> cc) and the product must not.
//!
//! Series are keyed by metric name + label set. A name keeps the kind it was first registered
//! with: registering it again as another kind yields a no-op handle (Prometheus rejects one
//! name with two types, so rendering both would make the whole page unreadable).
//! Histograms are cumulative buckets with fixed upper bounds plus `_sum` and `_count`.
//! A series is also indexed by the `metrics::Key` it was first asked for with, so registering
//! it again (every `counter!` call does) is one hash lookup, without cleaning names or
//! allocating labels.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

/// Upper bounds (seconds) suited to publish and handle latencies: 1 ms to 10 s.
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The recorder; install it with `metrics::set_global_recorder`, or use
/// [`install_prometheus`](super::install_prometheus).
#[derive(Clone)]
pub struct PrometheusRecorder {
    registry: Arc<Registry>,
}

/// Renders what the recorder it came from has recorded; cheap to clone.
#[derive(Clone)]
pub struct PrometheusHandle {
    registry: Arc<Registry>,
}

struct Registry {
    buckets: Vec<f64>,
    families: Mutex<Families>,
    help: Mutex<BTreeMap<String, String>>,
}

#[derive(Default)]
struct Families {
    /// By cleaned name, for rendering.
    by_name: BTreeMap<String, Family>,
    /// Every series made, by the key it was asked for with.
    by_key: HashMap<Key, Series>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

struct Family {
    kind: Kind,
    /// Label pairs in registration order (the order the call site wrote them).
    series: BTreeMap<Vec<(String, String)>, Series>,
}

#[derive(Clone)]
enum Series {
    Counter(Arc<AtomicCounter>),
    Gauge(Arc<AtomicGauge>),
    Histogram(Arc<Buckets>),
}

impl Series {
    fn kind(&self) -> Kind {
        match self {
            Series::Counter(_) => Kind::Counter,
            Series::Gauge(_) => Kind::Gauge,
            Series::Histogram(_) => Kind::Histogram,
        }
    }
}

#[derive(Default)]
struct AtomicCounter(AtomicU64);

impl CounterFn for AtomicCounter {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

/// An f64 in an `AtomicU64` (its bits), updated by compare-and-swap.
struct AtomicGauge(AtomicU64);

impl AtomicGauge {
    fn update(&self, f: impl Fn(f64) -> f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some(f(f64::from_bits(bits)).to_bits())
            });
    }
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

impl GaugeFn for AtomicGauge {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }
    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }
    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

struct Buckets {
    bounds: Vec<f64>,
    state: Mutex<BucketState>,
}

#[derive(Clone)]
struct BucketState {
    /// Observations per bucket, not cumulative (`counts[i]`: `bounds[i-1] < v <= bounds[i]`);
    /// one extra slot for `+Inf`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl HistogramFn for Buckets {
    fn record(&self, value: f64) {
        self.record_many(value, 1);
    }
    fn record_many(&self, value: f64, count: usize) {
        let slot = self.bounds.partition_point(|&b| b < value);
        let mut s = lock(&self.state);
        let n = count as u64;
        s.counts[slot] += n;
        s.sum += value * count as f64;
        s.count += n;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Default for PrometheusRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl PrometheusRecorder {
    /// A recorder with [`DEFAULT_BUCKETS`].
    pub fn new() -> Self {
        Self::with_buckets(DEFAULT_BUCKETS)
    }

    /// A recorder whose histograms use `bounds` (sorted, deduplicated; non-finite bounds are
    /// dropped because `+Inf` is always the last bucket).
    pub fn with_buckets(bounds: &[f64]) -> Self {
        let mut buckets: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
        buckets.sort_by(f64::total_cmp);
        buckets.dedup();
        PrometheusRecorder {
            registry: Arc::new(Registry {
                buckets,
                families: Mutex::default(),
                help: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    pub fn handle(&self) -> PrometheusHandle {
        PrometheusHandle {
            registry: self.registry.clone(),
        }
    }

    fn describe(&self, key: KeyName, description: SharedString) {
        lock(&self.registry.help).insert(sanitize_name(key.as_str()), description.into_owned());
    }

    /// The series for `key`, created on first use; `None` when the name has another kind.
    fn series(&self, key: &Key, kind: Kind) -> Option<Series> {
        let mut families = lock(&self.registry.families);
        if let Some(series) = families.by_key.get(key)
            && series.kind() == kind
        {
            return Some(series.clone());
        }
        let name = sanitize_name(key.name());
        let labels: Vec<(String, String)> = key
            .labels()
            .map(|l| (sanitize_label(l.key()), l.value().to_owned()))
            .collect();
        let family = families.by_name.entry(name).or_insert_with(|| Family {
            kind,
            series: BTreeMap::new(),
        });
        if family.kind != kind {
            tracing::warn!(
                metric = key.name(),
                registered = family.kind.as_str(),
                requested = kind.as_str(),
                "metric name reused with another type; ignoring"
            );
            return None;
        }
        let series = family.series.entry(labels).or_insert_with(|| match kind {
            Kind::Counter => Series::Counter(Arc::default()),
            Kind::Gauge => Series::Gauge(Arc::new(AtomicGauge(AtomicU64::new(0f64.to_bits())))),
            Kind::Histogram => Series::Histogram(Arc::new(Buckets {
                bounds: self.registry.buckets.clone(),
                state: Mutex::new(BucketState {
                    counts: vec![0; self.registry.buckets.len() + 1],
                    sum: 0.0,
                    count: 0,
                }),
            })),
        });
        let series = series.clone();
        families.by_key.insert(key.clone(), series.clone());
        Some(series)
    }
}

impl Recorder for PrometheusRecorder {
    fn describe_counter(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key, description);
    }
    fn describe_gauge(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key, description);
    }
    fn describe_histogram(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key, description);
    }
    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        match self.series(key, Kind::Counter) {
            Some(Series::Counter(c)) => Counter::from_arc(c),
            _ => Counter::noop(),
        }
    }
    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        match self.series(key, Kind::Gauge) {
            Some(Series::Gauge(g)) => Gauge::from_arc(g),
            _ => Gauge::noop(),
        }
    }
    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        match self.series(key, Kind::Histogram) {
            Some(Series::Histogram(h)) => Histogram::from_arc(h),
            _ => Histogram::noop(),
        }
    }
}

impl PrometheusHandle {
    /// Every family in name order, each series in label order.
    pub fn render(&self) -> String {
        let help = lock(&self.registry.help).clone();
        let families = lock(&self.registry.families);
        let mut out = String::new();
        for (name, family) in &families.by_name {
            if let Some(h) = help.get(name) {
                let _ = writeln!(out, "# HELP {name} {}", escape_help(h));
            }
            let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
            for (labels, series) in &family.series {
                match series {
                    Series::Counter(c) => {
                        let v = c.0.load(Ordering::Relaxed);
                        let _ = writeln!(out, "{name}{} {v}", label_set(labels, None));
                    }
                    Series::Gauge(g) => {
                        let v = format_value(g.get());
                        let _ = writeln!(out, "{name}{} {v}", label_set(labels, None));
                    }
                    Series::Histogram(h) => {
                        let s = lock(&h.state).clone();
                        let mut cumulative = 0u64;
                        for (i, n) in s.counts.iter().enumerate() {
                            cumulative += n;
                            let le = h
                                .bounds
                                .get(i)
                                .map_or("+Inf".to_owned(), |&b| format_value(b));
                            let set = label_set(labels, Some(&le));
                            let _ = writeln!(out, "{name}_bucket{set} {cumulative}");
                        }
                        let set = label_set(labels, None);
                        let _ = writeln!(out, "{name}_sum{set} {}", format_value(s.sum));
                        let _ = writeln!(out, "{name}_count{set} {}", s.count);
                    }
                }
            }
        }
        out
    }
}

/// `{a="x",b="y"}` (empty when there are no labels), with `le` appended for bucket lines.
fn label_set(labels: &[(String, String)], le: Option<&str>) -> String {
    let mut pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    if let Some(le) = le {
        pairs.push(format!("le=\"{le}\""));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

fn format_value(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else if v.is_nan() {
        "NaN".to_owned()
    } else {
        format!("{v}")
    }
}

/// Label values escape backslash, double quote and line feed.
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text escapes backslash and line feed only.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Metric names are `[a-zA-Z_:][a-zA-Z0-9_:]*`; anything else becomes `_`.
fn sanitize_name(name: &str) -> String {
    sanitize(name, true)
}

/// Label names are `[a-zA-Z_][a-zA-Z0-9_]*`.
fn sanitize_label(name: &str) -> String {
    sanitize(name, false)
}

fn sanitize(name: &str, colon: bool) -> String {
    let mut out: String = name
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let ok = c.is_ascii_alphabetic()
                || c == '_'
                || (colon && c == ':')
                || (i > 0 && c.is_ascii_digit());
            if ok { c } else { '_' }
        })
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::{counter, describe_counter, gauge, histogram, with_local_recorder};

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn counters_and_gauges_render_with_help_type_and_labels() {
        let rec = PrometheusRecorder::new();
        with_local_recorder(&rec, || {
            describe_counter!("jobs_total", "Jobs done.\nPer \\ queue.");
            counter!("jobs_total", "queue" => "a", "outcome" => "ok").increment(2);
            counter!("jobs_total", "queue" => "a", "outcome" => "ok").increment(3);
            counter!("jobs_total", "queue" => "b", "outcome" => "ok").increment(1);
            gauge!("depth").set(4.5);
            gauge!("depth").decrement(1.0);
        });
        let text = rec.handle().render();
        assert_eq!(
            lines(&text),
            [
                "# TYPE depth gauge",
                "depth 3.5",
                "# HELP jobs_total Jobs done.\\nPer \\\\ queue.",
                "# TYPE jobs_total counter",
                "jobs_total{queue=\"a\",outcome=\"ok\"} 5",
                "jobs_total{queue=\"b\",outcome=\"ok\"} 1",
            ]
        );
    }

    #[test]
    fn label_values_are_escaped_and_names_sanitised() {
        let rec = PrometheusRecorder::new();
        with_local_recorder(&rec, || {
            counter!("odd.name-x", "9path" => "C:\\dir \"q\"\nnext").increment(1);
        });
        let text = rec.handle().render();
        assert!(
            text.contains("odd_name_x{_path=\"C:\\\\dir \\\"q\\\"\\nnext\"} 1\n"),
            "{text}"
        );
        // Exactly one line per sample: the raw newline did not leak.
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_monotone() {
        let rec = PrometheusRecorder::with_buckets(&[1.0, 0.1, f64::INFINITY, 0.5, 0.1]);
        with_local_recorder(&rec, || {
            let h = histogram!("lat_seconds", "op" => "x");
            for v in [0.05, 0.1, 0.3, 0.7, 0.9, 5.0] {
                h.record(v);
            }
        });
        let text = rec.handle().render();
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("lat_seconds_sum{op=\"x\"} "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no sum in {text}"));
        assert!((sum - 7.05).abs() < 1e-9, "{sum}");
        let without_sum: Vec<&str> = text.lines().filter(|l| !l.contains("_sum")).collect();
        assert_eq!(
            without_sum,
            [
                "# TYPE lat_seconds histogram",
                "lat_seconds_bucket{op=\"x\",le=\"0.1\"} 2",
                "lat_seconds_bucket{op=\"x\",le=\"0.5\"} 3",
                "lat_seconds_bucket{op=\"x\",le=\"1\"} 5",
                "lat_seconds_bucket{op=\"x\",le=\"+Inf\"} 6",
                "lat_seconds_count{op=\"x\"} 6",
            ]
        );
        let counts: Vec<u64> = text
            .lines()
            .filter(|l| l.contains("_bucket"))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    }

    #[test]
    fn a_name_keeps_its_first_type() {
        let rec = PrometheusRecorder::new();
        with_local_recorder(&rec, || {
            counter!("x").increment(1);
            gauge!("x").set(9.0);
        });
        assert_eq!(lines(&rec.handle().render()), ["# TYPE x counter", "x 1"]);
    }

    #[test]
    fn counter_absolute_never_goes_back() {
        let rec = PrometheusRecorder::new();
        with_local_recorder(&rec, || {
            counter!("c").absolute(10);
            counter!("c").absolute(4);
        });
        assert!(rec.handle().render().contains("\nc 10\n"));
    }
}
