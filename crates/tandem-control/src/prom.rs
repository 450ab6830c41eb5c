//! A parser of the Prometheus text exposition format (version 0.0.4, what
//! the node and the edge write) into typed samples: counters, gauges,
//! histogram buckets (with their `le` taken out of the labels), sums and
//! counts, each under its family's name. It is total: any text is parsed
//! or refused with the line and what is wrong, never a panic (a proptest
//! feeds it arbitrary text), and it holds at most `MAX_SAMPLES` samples.
//!
//! A scrape with a malformed line is refused whole: a controller must not
//! judge on part of a scrape (missing data is never a pass).

use std::collections::BTreeMap;

/// Most samples one exposition may hold.
pub const MAX_SAMPLES: usize = 1_000_000;
/// Longest line accepted (bytes).
pub const MAX_LINE: usize = 64 << 10;

/// What a sample is, from its family's `# TYPE` and its name's suffix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SampleKind {
    Counter,
    Gauge,
    /// `<family>_bucket{le="..."}`: cumulative count of observations at or
    /// below `le` (`f64::INFINITY` for `+Inf`).
    Bucket {
        le: f64,
    },
    /// `<family>_sum` of a histogram or summary.
    Sum,
    /// `<family>_count` of a histogram or summary.
    Count,
    /// A summary's quantile series, or a sample with no `# TYPE`.
    Untyped,
}

/// One sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The family name (for `x_bucket`, `x_sum`, `x_count` of histogram
    /// `x`: `x`).
    pub metric: String,
    pub kind: SampleKind,
    /// Labels (a bucket's `le` is in `kind`, not here).
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// True when every `(name, value)` pair is among the labels.
    pub fn matches(&self, matching: &[(&str, &str)]) -> bool {
        matching
            .iter()
            .all(|(k, v)| self.labels.get(*k).is_some_and(|x| x == v))
    }
}

/// A refused exposition: the line (from 1) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metrics line {line}: {what}")]
pub struct PromError {
    pub line: usize,
    pub what: String,
}

/// A parsed scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    pub samples: Vec<Sample>,
}

#[derive(Clone, Copy, PartialEq)]
enum Family {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

fn is_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// A float as the format writes it (also `NaN`, `+Inf`, `-Inf`).
fn number(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if s
            .bytes()
            .all(|c| c.is_ascii_digit() || b"+-.eE".contains(&c)) =>
        {
            s.parse().ok()
        }
        _ => None,
    }
}

/// `{a="x",b="y"}` starting at `s` (after the `{`): the labels and the
/// rest after the `}`.
fn labels(mut s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut out = BTreeMap::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((out, rest));
        }
        let eq = s.find('=').ok_or("label without =")?;
        let name = s[..eq].trim();
        if !is_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        s = s[eq + 1..].trim_start();
        s = s.strip_prefix('"').ok_or("label value without quotes")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    _ => return Err("bad escape in label value".into()),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if out.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} given twice"));
        }
        s = s[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err("expected , or } after a label".into());
        }
    }
}

impl Exposition {
    /// Parses a whole exposition.
    pub fn parse(text: &str) -> Result<Exposition, PromError> {
        let mut families: BTreeMap<&str, Family> = BTreeMap::new();
        let mut samples = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let err = |what: String| PromError { line: i + 1, what };
            if line.len() > MAX_LINE {
                return Err(err(format!("longer than {MAX_LINE} bytes")));
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(c) = line.strip_prefix('#') {
                let mut w = c.split_whitespace();
                if w.next() == Some("TYPE") {
                    let (Some(name), Some(kind)) = (w.next(), w.next()) else {
                        return Err(err("# TYPE needs a name and a type".into()));
                    };
                    let kind = match kind {
                        "counter" => Family::Counter,
                        "gauge" => Family::Gauge,
                        "histogram" => Family::Histogram,
                        "summary" => Family::Summary,
                        "untyped" => Family::Untyped,
                        k => return Err(err(format!("unknown type {k:?}"))),
                    };
                    if !is_name(name) {
                        return Err(err(format!("bad metric name {name:?}")));
                    }
                    families.insert(name, kind);
                }
                continue;
            }
            if samples.len() >= MAX_SAMPLES {
                return Err(err(format!("more than {MAX_SAMPLES} samples")));
            }
            let name_end = line
                .find(|c: char| c == '{' || c.is_whitespace())
                .unwrap_or(line.len());
            let name = &line[..name_end];
            if !is_name(name) {
                return Err(err(format!("bad metric name {name:?}")));
            }
            let rest = &line[name_end..];
            let (mut labels, rest) = match rest.trim_start().strip_prefix('{') {
                Some(r) => labels(r).map_err(err)?,
                None => (BTreeMap::new(), rest),
            };
            let mut w = rest.split_whitespace();
            let value = w
                .next()
                .ok_or_else(|| err("no value".into()))
                .and_then(|v| number(v).ok_or_else(|| err(format!("bad value {v:?}"))))?;
            if let Some(ts) = w.next() {
                if ts.parse::<i64>().is_err() {
                    return Err(err(format!("bad timestamp {ts:?}")));
                }
            }
            if w.next().is_some() {
                return Err(err("text after the timestamp".into()));
            }
            let base = |suffix: &str| {
                name.strip_suffix(suffix).filter(|b| {
                    matches!(
                        families.get(b),
                        Some(Family::Histogram) | Some(Family::Summary)
                    )
                })
            };
            let (metric, kind) = match families.get(name) {
                Some(Family::Counter) => (name, SampleKind::Counter),
                Some(Family::Gauge) => (name, SampleKind::Gauge),
                Some(_) => (name, SampleKind::Untyped),
                None => {
                    if let Some(b) = base("_bucket") {
                        let le = labels
                            .remove("le")
                            .ok_or_else(|| err("bucket without le".into()))?;
                        let le = number(&le).ok_or_else(|| err(format!("bad le {le:?}")))?;
                        (b, SampleKind::Bucket { le })
                    } else if let Some(b) = base("_sum") {
                        (b, SampleKind::Sum)
                    } else if let Some(b) = base("_count") {
                        (b, SampleKind::Count)
                    } else {
                        (name, SampleKind::Untyped)
                    }
                }
            };
            samples.push(Sample {
                metric: metric.to_owned(),
                kind,
                labels,
                value,
            });
        }
        Ok(Exposition { samples })
    }

    /// The samples of family `metric` whose labels include `matching`.
    pub fn series<'a>(
        &'a self,
        metric: &'a str,
        matching: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.metric == metric && s.matches(matching))
    }

    /// Sum of the counter, gauge or untyped samples of `metric` matching
    /// `matching`; `None` when there are none (no data is not zero).
    pub fn total(&self, metric: &str, matching: &[(&str, &str)]) -> Option<f64> {
        let mut found = false;
        let mut sum = 0.0;
        for s in self.series(metric, matching) {
            if matches!(
                s.kind,
                SampleKind::Counter | SampleKind::Gauge | SampleKind::Untyped
            ) {
                found = true;
                sum += s.value;
            }
        }
        found.then_some(sum)
    }

    /// The cumulative buckets of histogram `metric` over every series
    /// matching `matching`, summed per bound: `(le, count)` by ascending
    /// `le` (the last is `+Inf`). Empty when there is no such series.
    pub fn buckets(&self, metric: &str, matching: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let mut out: Vec<(f64, f64)> = Vec::new();
        for s in self.series(metric, matching) {
            if let SampleKind::Bucket { le } = s.kind {
                if le.is_nan() {
                    continue;
                }
                match out.iter_mut().find(|(b, _)| *b == le) {
                    Some((_, c)) => *c += s.value,
                    None => out.push((le, s.value)),
                }
            }
        }
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP tandem_edge_requests_total Client requests answered.
# TYPE tandem_edge_requests_total counter
tandem_edge_requests_total{zone="z",cluster="aws",version="1",status="200"} 90
tandem_edge_requests_total{zone="z",cluster="aws",version="1",status="503"} 2
tandem_edge_requests_total{zone="z",cluster="gcp",version="2",status="200"} 7 1700000000000
# TYPE lat histogram
lat_bucket{cluster="aws",le="0.001"} 3
lat_bucket{cluster="aws",le="0.01"} 8
lat_bucket{cluster="aws",le="+Inf"} 9
lat_sum{cluster="aws"} 0.04
lat_count{cluster="aws"} 9
lat_bucket{cluster="gcp",le="0.001"} 1
lat_bucket{cluster="gcp",le="0.01"} 1
lat_bucket{cluster="gcp",le="+Inf"} 2
# TYPE up gauge
up{q="a \"b\" \\ c\nd",} NaN
plain 1e3
"#;

    #[test]
    fn families_kinds_and_labels() {
        let e = Exposition::parse(TEXT).unwrap();
        assert_eq!(e.samples.len(), 13);
        let aws = [("cluster", "aws")];
        assert_eq!(e.total("tandem_edge_requests_total", &aws), Some(92.0));
        assert_eq!(
            e.total("tandem_edge_requests_total", &[("status", "503")]),
            Some(2.0)
        );
        assert_eq!(
            e.total("tandem_edge_requests_total", &[("cluster", "x")]),
            None
        );
        assert_eq!(
            e.buckets("lat", &aws),
            vec![(0.001, 3.0), (0.01, 8.0), (f64::INFINITY, 9.0)]
        );
        assert_eq!(
            e.buckets("lat", &[]),
            vec![(0.001, 4.0), (0.01, 9.0), (f64::INFINITY, 11.0)]
        );
        let kinds: Vec<SampleKind> = e.series("lat", &aws).map(|s| s.kind).collect();
        assert_eq!(kinds[3..], [SampleKind::Sum, SampleKind::Count]);
        assert!(e.series("lat", &[]).all(|s| !s.labels.contains_key("le")));
        let up = e.series("up", &[]).next().unwrap();
        assert_eq!(up.labels["q"], "a \"b\" \\ c\nd");
        assert!(up.value.is_nan() && up.kind == SampleKind::Gauge);
        let plain = e.series("plain", &[]).next().unwrap();
        assert_eq!((plain.kind, plain.value), (SampleKind::Untyped, 1000.0));
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        for (text, line, what) in [
            ("a 1\nb{x=\"1\" 2\n", 2, "expected , or }"),
            ("a{x=1} 1", 1, "quotes"),
            ("a{x=\"1\",x=\"2\"} 1", 1, "twice"),
            ("# TYPE h histogram\nh_bucket{a=\"1\"} 1", 2, "without le"),
            ("a one", 1, "bad value"),
            ("a", 1, "no value"),
            ("a 1 2 3", 1, "after the timestamp"),
            ("9a 1", 1, "bad metric name"),
            ("# TYPE a thing", 1, "unknown type"),
            ("a{x=\"\\q\"} 1", 1, "escape"),
        ] {
            let e = Exposition::parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.what.contains(what), "{text:?}: {e}");
        }
    }

    proptest::proptest! {
        /// A scrape is outside bytes: any text is parsed or refused, never
        /// a panic; and text built from the grammar's own pieces too.
        #[test]
        fn any_text_is_parsed_or_refused(s in "\\PC{0,200}") {
            let _ = Exposition::parse(&s);
        }

        #[test]
        fn near_valid_text_is_parsed_or_refused(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "a", "_b", "{", "}", "=", "\"", "\\", ",", " ", "\n", "1", "-Inf", "NaN",
                    "le", "_bucket", "_sum", "# TYPE ", "histogram", "counter", "x=\"1\"", "1e9",
                ]),
                0..40,
            )
        ) {
            let text = format!("# TYPE a histogram\n{}", parts.concat());
            let _ = Exposition::parse(&text);
        }
    }
}
