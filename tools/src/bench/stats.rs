//! What a bench run measures and how it is reported: latency histograms (HdrHistogram,
//! microseconds), counters, a per-second time series, and the report formats — the human
//! table, one JSON object, CSV, and a self-contained HTML plot (inline SVG).

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded exactly (10 minutes, in µs); larger values are clamped.
const LATENCY_MAX_US: u64 = 600_000_000;

/// A latency histogram in microseconds, 3 significant digits.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        // Infallible for these constant bounds (1 ≤ low, high ≥ 2·low, sigfig ≤ 5).
        Latency(
            Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).unwrap_or_else(|_| {
                Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid"))
            }),
        )
    }

    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.clamp(1, LATENCY_MAX_US));
    }

    pub fn add(&mut self, other: &Latency) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// The percentiles a report shows, in milliseconds (None when nothing was recorded).
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.0.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(LatencySummary {
            count: self.0.len(),
            p50_ms: ms(self.0.value_at_quantile(0.50)),
            p90_ms: ms(self.0.value_at_quantile(0.90)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            p999_ms: ms(self.0.value_at_quantile(0.999)),
            max_ms: ms(self.0.max()),
            mean_ms: self.0.mean() / 1000.0,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// One second of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the run started (end of the interval).
    pub t: f64,
    pub produced_msgs_per_s: f64,
    pub produced_mb_per_s: f64,
    pub consumed_msgs_per_s: f64,
    pub consumed_mb_per_s: f64,
    /// Produce (send → acknowledgement) p99 within the interval.
    pub produce_p99_ms: Option<f64>,
    /// End-to-end (produce timestamp → consumed) p99 within the interval.
    pub e2e_p99_ms: Option<f64>,
}

/// One direction's totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Flow {
    pub messages: u64,
    pub bytes: u64,
    pub msgs_per_s: f64,
    pub mb_per_s: f64,
    pub errors: u64,
}

impl Flow {
    pub fn new(messages: u64, bytes: u64, errors: u64, secs: f64) -> Self {
        let secs = secs.max(1e-9);
        Flow {
            messages,
            bytes,
            msgs_per_s: messages as f64 / secs,
            mb_per_s: bytes as f64 / secs / 1e6,
            errors,
        }
    }
}

/// A finished run: what the table, JSON, CSV and plot are made from.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    /// The client library: "rdkafka" or "native".
    pub client: String,
    pub bootstrap: String,
    pub topic: String,
    pub message_bytes: usize,
    /// Target produce rate in msgs/s (None: as fast as possible).
    pub target_msgs_per_s: Option<u64>,
    pub seconds: f64,
    pub produced: Option<Flow>,
    pub consumed: Option<Flow>,
    pub produce_latency: Option<LatencySummary>,
    pub e2e_latency: Option<LatencySummary>,
    /// CPU time of this process (all client threads) per second of run and per GB moved.
    pub client_cpu_cores: f64,
    pub client_cpu_s_per_gb: f64,
    pub series: Vec<Sample>,
}

impl Report {
    /// The human table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let load = if self.produced.is_some() {
            let target = self
                .target_msgs_per_s
                .map_or("max".to_owned(), |r| format!("{r} msgs/s"));
            format!(", {} B messages, rate {target}", self.message_bytes)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{} ({} client) against {} — topic {}{load}, {:.1} s",
            self.scenario, self.client, self.bootstrap, self.topic, self.seconds
        );
        let _ = writeln!(
            out,
            "{:<10} {:>12} {:>10} {:>12} {:>8}",
            "", "messages", "msgs/s", "MB/s", "errors"
        );
        for (name, flow) in [("produced", &self.produced), ("consumed", &self.consumed)] {
            if let Some(f) = flow {
                let _ = writeln!(
                    out,
                    "{name:<10} {:>12} {:>10.0} {:>12.1} {:>8}",
                    f.messages, f.msgs_per_s, f.mb_per_s, f.errors
                );
            }
        }
        if self.produce_latency.is_some() || self.e2e_latency.is_some() {
            let _ = writeln!(
                out,
                "{:<22} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
                "latency (ms)", "p50", "p90", "p99", "p99.9", "max", "mean"
            );
        }
        for (name, l) in [
            ("produce (send→ack)", &self.produce_latency),
            ("end-to-end", &self.e2e_latency),
        ] {
            if let Some(l) = l {
                let _ = writeln!(
                    out,
                    "{name:<22} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                    l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms
                );
            }
        }
        let _ = writeln!(
            out,
            "client CPU: {:.2} cores, {:.2} CPU-s/GB",
            self.client_cpu_cores, self.client_cpu_s_per_gb
        );
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The time series as CSV, one row per second.
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "t_s,produced_msgs_per_s,produced_mb_per_s,consumed_msgs_per_s,consumed_mb_per_s,produce_p99_ms,e2e_p99_ms\n",
        );
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
        for s in &self.series {
            let _ = writeln!(
                out,
                "{:.3},{:.0},{:.3},{:.0},{:.3},{},{}",
                s.t,
                s.produced_msgs_per_s,
                s.produced_mb_per_s,
                s.consumed_msgs_per_s,
                s.consumed_mb_per_s,
                opt(s.produce_p99_ms),
                opt(s.e2e_p99_ms)
            );
        }
        out
    }

    /// A self-contained HTML page with two SVG charts: throughput and p99 latency over time.
    pub fn html(&self) -> String {
        let through: Vec<Line> = vec![
            (
                "produced MB/s",
                "#1f77b4",
                self.series
                    .iter()
                    .map(|s| (s.t, s.produced_mb_per_s))
                    .collect(),
            ),
            (
                "consumed MB/s",
                "#2ca02c",
                self.series
                    .iter()
                    .map(|s| (s.t, s.consumed_mb_per_s))
                    .collect(),
            ),
        ];
        let latency: Vec<Line> = vec![
            (
                "produce p99 ms",
                "#d62728",
                self.series
                    .iter()
                    .filter_map(|s| Some((s.t, s.produce_p99_ms?)))
                    .collect(),
            ),
            (
                "end-to-end p99 ms",
                "#9467bd",
                self.series
                    .iter()
                    .filter_map(|s| Some((s.t, s.e2e_p99_ms?)))
                    .collect(),
            ),
        ];
        let title = html_escape(&format!(
            "ringmq bench {} — {} — {} B messages",
            self.scenario, self.bootstrap, self.message_bytes
        ));
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
             <body style=\"font-family:sans-serif\"><h3>{title}</h3>{}{}<pre>{}</pre></body></html>\n",
            svg_chart("throughput (MB/s)", &through),
            svg_chart("p99 latency per second (ms)", &latency),
            html_escape(&self.table())
        )
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One plotted line: label, colour, (x, y) points.
type Line = (&'static str, &'static str, Vec<(f64, f64)>);

/// A line chart of `series` (label, colour, points) in a 720×260 SVG.
fn svg_chart(title: &str, series: &[Line]) -> String {
    let (w, h, left, bottom, top) = (720.0, 260.0, 60.0, 30.0, 24.0);
    let points = series.iter().flat_map(|(_, _, p)| p.iter());
    let x_max = points.clone().map(|p| p.0).fold(1.0, f64::max);
    let y_max = points.map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.1;
    let sx = |x: f64| left + x / x_max * (w - left - 10.0);
    let sy = |y: f64| h - bottom - y / y_max * (h - bottom - top);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         style=\"display:block;margin:8px 0\"><text x=\"{left}\" y=\"16\" font-size=\"13\">{}</text>",
        html_escape(title)
    );
    let _ = write!(
        svg,
        "<line x1=\"{left}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"#888\"/>\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{0}\" stroke=\"#888\"/>",
        h - bottom,
        w - 10.0
    );
    for i in 0..=4 {
        let y = y_max * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            "<text x=\"4\" y=\"{:.1}\" font-size=\"10\">{y:.1}</text>",
            sy(y) + 3.0
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{x_max:.0} s</text>",
        w - 40.0,
        h - 12.0
    );
    for (i, (label, colour, pts)) in series.iter().enumerate() {
        if pts.is_empty() {
            continue;
        }
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>\
             <text x=\"{:.1}\" y=\"16\" font-size=\"11\" fill=\"{colour}\">{}</text>",
            path.join(" "),
            left + 220.0 + 160.0 * i as f64,
            html_escape(label)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut l = Latency::new();
        for us in 1..=10_000u64 {
            l.record_us(us);
        }
        let s = l.summary().unwrap();
        assert_eq!(s.count, 10_000);
        // HdrHistogram with 3 significant digits: within 0.1 %.
        for (got, want) in [
            (s.p50_ms, 5.0),
            (s.p90_ms, 9.0),
            (s.p99_ms, 9.9),
            (s.p999_ms, 9.99),
            (s.max_ms, 10.0),
        ] {
            assert!(
                (got - want).abs() <= want * 0.001 + 0.001,
                "{got} vs {want}"
            );
        }
        assert!((s.mean_ms - 5.0005).abs() < 0.01);
    }

    #[test]
    fn empty_histograms_have_no_summary_and_extremes_are_clamped() {
        assert!(Latency::new().summary().is_none());
        let mut l = Latency::new();
        l.record_us(0);
        l.record_us(u64::MAX);
        let s = l.summary().unwrap();
        assert_eq!(s.count, 2);
        assert!(s.max_ms >= 599_000_000.0 / 1000.0);
    }

    #[test]
    fn histograms_merge() {
        let (mut a, mut b) = (Latency::new(), Latency::new());
        (0..900).for_each(|_| a.record_us(1000));
        (0..100).for_each(|_| b.record_us(50_000));
        a.add(&b);
        let s = a.summary().unwrap();
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 1.0).abs() < 0.01);
        assert!((s.p99_ms - 50.0).abs() < 0.1);
    }

    #[test]
    fn flow_rates() {
        let f = Flow::new(1000, 1_000_000, 0, 2.0);
        assert_eq!((f.msgs_per_s, f.mb_per_s), (500.0, 0.5));
        assert!(Flow::new(1, 1, 0, 0.0).msgs_per_s.is_finite());
    }

    fn report() -> Report {
        let mut l = Latency::new();
        (1..=100).for_each(|i| l.record_us(i * 100));
        Report {
            scenario: "mixed".into(),
            client: "native".into(),
            bootstrap: "127.0.0.1:9092".into(),
            topic: "t<&>".into(),
            message_bytes: 1024,
            target_msgs_per_s: Some(1000),
            seconds: 2.0,
            produced: Some(Flow::new(2000, 2_048_000, 0, 2.0)),
            consumed: Some(Flow::new(2000, 2_048_000, 0, 2.0)),
            produce_latency: l.summary(),
            e2e_latency: None,
            client_cpu_cores: 0.5,
            client_cpu_s_per_gb: 250.0,
            series: vec![
                Sample {
                    t: 1.0,
                    produced_msgs_per_s: 1000.0,
                    produced_mb_per_s: 1.024,
                    produce_p99_ms: Some(9.9),
                    ..Default::default()
                },
                Sample {
                    t: 2.0,
                    produced_msgs_per_s: 1000.0,
                    produced_mb_per_s: 1.024,
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn every_format_carries_the_figures() {
        let r = report();
        let table = r.table();
        assert!(
            table.contains("produced") && table.contains("1000"),
            "{table}"
        );
        assert!(table.contains("produce (send→ack)") && !table.contains("end-to-end "));
        let j: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(j["produced"]["messages"], 2000);
        assert_eq!(j["target_msgs_per_s"], 1000);
        assert!(j["e2e_latency"].is_null());
        assert_eq!(j["series"].as_array().unwrap().len(), 2);
        let csv = r.csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1], "1.000,1000,1.024,0,0.000,9.900,");
        let html = r.html();
        assert!(html.starts_with("<!doctype html>") && html.contains("<polyline"));
        assert!(html.contains("t&lt;&amp;&gt;") && !html.contains("t<&>"));
    }
}
