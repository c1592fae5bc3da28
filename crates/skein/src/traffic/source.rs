//! Where the numbers come from: the mesh's Prometheus (instant queries, all at one
//! evaluation time), or, when it does not run, the proxies' own `/stats/prometheus` read by
//! the CLI and evaluated here with the same expressions.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::TrafficError;
use super::promql::{Expr, Matcher, Op, Selector};

pub use skein_runtime::prom::Sample;

/// How long one query or scrape may take.
const TIMEOUT: Duration = Duration::from_secs(7);

/// The backend of one evaluation.
pub trait Backend {
    /// Evaluates `expr` over `window`.
    fn eval(&mut self, expr: &Expr, window: Duration) -> Result<Vec<Sample>, TrafficError>;
}

/// The mesh's Prometheus, queried at a fixed time so that every query of one refresh sees the
/// same data (and a test can ask the same question at the same instant).
pub struct Prometheus {
    client: skein_runtime::prom::PromClient,
    /// Evaluation time, seconds since the epoch (millisecond precision).
    pub time: f64,
    rt: tokio::runtime::Runtime,
}

impl Prometheus {
    pub fn new(url: &str, time: Option<f64>) -> Result<Prometheus, TrafficError> {
        let client = skein_runtime::prom::PromClient::new(url, TIMEOUT)
            .map_err(|_| TrafficError::BadPrometheusUrl(url.to_string()))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TrafficError::Runtime(e.to_string()))?;
        Ok(Prometheus {
            client,
            time: time.unwrap_or_else(now),
            rt,
        })
    }

    /// An instant query's result vector at `self.time`.
    pub fn query(&self, promql: &str) -> Result<Vec<Sample>, TrafficError> {
        self.rt
            .block_on(self.client.query(promql, self.time))
            .map_err(|e| match e {
                skein_runtime::prom::PromError::Query { url, query, reason } => {
                    TrafficError::Prometheus { url, query, reason }
                }
                skein_runtime::prom::PromError::BadUrl(u) => TrafficError::BadPrometheusUrl(u),
            })
    }
}

/// Seconds since the epoch, to the millisecond.
pub fn now() -> f64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

impl Backend for Prometheus {
    fn eval(&mut self, expr: &Expr, window: Duration) -> Result<Vec<Sample>, TrafficError> {
        self.query(&expr.promql(window))
    }
}

/// One series of a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every proxy's series at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: Instant,
    pub series: Vec<Series>,
}

/// One proxy to scrape, with the target labels Prometheus would add (`namespace`, `pod`).
#[derive(Debug, Clone)]
pub struct Target {
    pub admin: SocketAddr,
    pub namespace: String,
    pub pod: String,
}

/// Reads every target's `/stats/prometheus`; a proxy that does not answer is left out (it
/// may be restarting), and an error is returned only when none answers.
pub fn scrape(targets: &[Target]) -> Result<Snapshot, TrafficError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TrafficError::Runtime(e.to_string()))?;
    let at = Instant::now();
    let bodies = rt.block_on(async {
        let mut out = Vec::with_capacity(targets.len());
        for t in targets {
            out.push(skein_runtime::http_get(t.admin, "/stats/prometheus", TIMEOUT).await);
        }
        out
    });
    let mut series = Vec::new();
    let mut answered = 0;
    for (t, r) in targets.iter().zip(bodies) {
        let Ok((status, body)) = r else { continue };
        if status != 200 {
            continue;
        }
        answered += 1;
        for mut s in parse_text(&String::from_utf8_lossy(&body)) {
            s.labels.insert("namespace".into(), t.namespace.clone());
            s.labels.insert("pod".into(), t.pod.clone());
            series.push(s);
        }
    }
    if answered == 0 && !targets.is_empty() {
        return Err(TrafficError::NoProxyAnswered(targets.len()));
    }
    Ok(Snapshot { at, series })
}

/// Parses the Prometheus text exposition format (the lines it needs: samples; comments and
/// anything it cannot read are skipped).
pub fn parse_text(text: &str) -> Vec<Series> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Series> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        loop {
            // label name
            while chars.peek().is_some_and(|(_, c)| *c == ',' || *c == ' ') {
                chars.next();
            }
            let &(start, c) = chars.peek()?;
            if c == '}' {
                rest = &body[start + 1..];
                break;
            }
            let mut key_end = start;
            while let Some(&(i, c)) = chars.peek() {
                if c == '=' {
                    key_end = i;
                    break;
                }
                chars.next();
            }
            let key = body[start..key_end].trim().to_string();
            chars.next(); // '='
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                let (_, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break,
                    other => value.push(other),
                }
            }
            labels.insert(key, value);
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Series {
        name,
        labels,
        value,
    })
}

/// The proxies' own counters: two scrapes give rates over the time between them; one gives
/// totals since each proxy started (then "rates" are totals, and the caller says so).
pub struct Local {
    pub prev: Option<Snapshot>,
    pub cur: Snapshot,
}

impl Local {
    /// Whether rates are real (two scrapes) rather than totals.
    pub fn has_rates(&self) -> bool {
        self.prev.is_some()
    }

    /// The seconds between the two scrapes.
    pub fn elapsed(&self) -> Option<f64> {
        let prev = self.prev.as_ref()?;
        Some(
            self.cur
                .at
                .saturating_duration_since(prev.at)
                .as_secs_f64()
                .max(1e-3),
        )
    }

    /// Per series matching `sel`: its rate between the scrapes (a counter that went down
    /// was reset: its new value counts), or its total with one scrape.
    fn rates(&self, sel: &Selector) -> Result<Vec<(&Series, f64)>, TrafficError> {
        let m = compile(sel)?;
        let prev: BTreeMap<(&str, &BTreeMap<String, String>), f64> = self
            .prev
            .iter()
            .flat_map(|p| &p.series)
            .filter(|s| s.name == sel.metric)
            .map(|s| ((s.name.as_str(), &s.labels), s.value))
            .collect();
        let dt = self.elapsed();
        Ok(self
            .cur
            .series
            .iter()
            .filter(|s| s.name == sel.metric && m.matches(&s.labels))
            .map(|s| {
                let v = match dt {
                    Some(dt) => {
                        let before = prev.get(&(s.name.as_str(), &s.labels)).copied();
                        let delta = match before {
                            Some(b) if s.value >= b => s.value - b,
                            Some(_) => s.value,
                            None => s.value,
                        };
                        delta / dt
                    }
                    None => s.value,
                };
                (s, v)
            })
            .collect())
    }

    fn totals(&self, sel: &Selector) -> Result<Vec<(&Series, f64)>, TrafficError> {
        let m = compile(sel)?;
        Ok(self
            .cur
            .series
            .iter()
            .filter(|s| s.name == sel.metric && m.matches(&s.labels))
            .map(|s| (s, s.value))
            .collect())
    }
}

fn group_key(labels: &BTreeMap<String, String>, by: &[&str]) -> BTreeMap<String, String> {
    by.iter()
        .map(|k| (k.to_string(), labels.get(*k).cloned().unwrap_or_default()))
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

fn sum_by(values: Vec<(&Series, f64)>, by: &[&str]) -> Vec<Sample> {
    let mut groups: BTreeMap<BTreeMap<String, String>, f64> = BTreeMap::new();
    for (s, v) in values {
        *groups.entry(group_key(&s.labels, by)).or_default() += v;
    }
    groups
        .into_iter()
        .map(|(labels, value)| Sample { labels, value })
        .collect()
}

impl Backend for Local {
    fn eval(&mut self, expr: &Expr, _window: Duration) -> Result<Vec<Sample>, TrafficError> {
        match expr {
            Expr::Rate { sel, by } => Ok(sum_by(self.rates(sel)?, by)),
            Expr::Total { sel, by } => Ok(sum_by(self.totals(sel)?, by)),
            Expr::Quantile { q, sel, by } => {
                let mut with_le: Vec<&'static str> = vec!["le"];
                with_le.extend(by.iter().copied());
                let buckets = sum_by(self.rates(sel)?, &with_le);
                let mut groups: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> =
                    BTreeMap::new();
                for b in buckets {
                    let mut labels = b.labels;
                    let Some(le) = labels.remove("le") else {
                        continue;
                    };
                    let le = match le.as_str() {
                        "+Inf" => f64::INFINITY,
                        v => match v.parse() {
                            Ok(v) => v,
                            Err(_) => continue,
                        },
                    };
                    groups.entry(labels).or_default().push((le, b.value));
                }
                Ok(groups
                    .into_iter()
                    .map(|(labels, buckets)| Sample {
                        labels,
                        value: histogram_quantile(*q, buckets),
                    })
                    .collect())
            }
        }
    }
}

/// Prometheus's `histogram_quantile` over (upper bound, cumulative count) buckets: linear
/// interpolation inside the bucket the rank falls in; the highest finite bound when it falls
/// in `+Inf`; NaN without observations.
pub fn histogram_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.len() < 2 || buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Counts must not go down (rates of separate series can, by rounding).
    for i in 1..buckets.len() {
        if buckets[i].1 < buckets[i - 1].1 {
            buckets[i].1 = buckets[i - 1].1;
        }
    }
    let total = buckets[buckets.len() - 1].1;
    if total == 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let b = buckets
        .iter()
        .position(|(_, c)| *c >= rank)
        .unwrap_or(buckets.len() - 1);
    if b == buckets.len() - 1 {
        return buckets[buckets.len() - 2].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let (start, prev_count) = if b == 0 {
        (0.0, 0.0)
    } else {
        (buckets[b - 1].0, buckets[b - 1].1)
    };
    let (end, count) = buckets[b];
    let in_bucket = count - prev_count;
    if in_bucket == 0.0 {
        return end;
    }
    start + (end - start) * ((rank - prev_count) / in_bucket)
}

/// A selector's matchers, compiled for matching scraped labels.
struct Compiled<'a> {
    matchers: Vec<(&'a Matcher, Option<regex::Regex>)>,
}

fn compile(sel: &Selector) -> Result<Compiled<'_>, TrafficError> {
    let mut matchers = Vec::new();
    for m in &sel.matchers {
        let re = match m.op {
            Op::Nre => Some(
                regex::Regex::new(&format!("^(?:{})$", m.value))
                    .map_err(|e| TrafficError::BadRegex(m.value.clone(), e.to_string()))?,
            ),
            _ => None,
        };
        matchers.push((m, re));
    }
    Ok(Compiled { matchers })
}

impl Compiled<'_> {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matchers.iter().all(|(m, re)| {
            // A missing label is the empty string, as in PromQL.
            let v = labels.get(m.label).map_or("", String::as_str);
            match (m.op, re) {
                (Op::Eq, _) => v == m.value,
                (Op::Nre, Some(re)) => !re.is_match(v),
                _ => false,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::promql::{REQUESTS, not_5xx};
    use super::*;

    #[test]
    fn parses_the_text_format_with_escapes() {
        let s = parse_text(
            "# TYPE x counter\nx{a=\"1\",b=\"q\\\"uo\\\\te\"} 3\nup 1 1700000000\nh_bucket{le=\"+Inf\"} 2\nbad{ 1\n",
        );
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(s[0].name, "x");
        assert_eq!(s[0].labels["b"], "q\"uo\\te");
        assert_eq!(s[0].value, 3.0);
        assert_eq!(s[1].name, "up");
        assert_eq!(s[2].labels["le"], "+Inf");
    }

    #[test]
    fn quantiles_interpolate_as_prometheus_does() {
        let b = vec![(0.5, 0.0), (1.0, 2.0), (5.0, 10.0), (f64::INFINITY, 10.0)];
        // rank 5 of 10 falls in (1, 5]: 1 + 4 * (5 - 2) / 8.
        assert!((histogram_quantile(0.5, b.clone()) - 2.5).abs() < 1e-9);
        assert!((histogram_quantile(0.1, b.clone()) - 0.75).abs() < 1e-9);
        // In +Inf: the highest finite bound.
        let inf = vec![(1.0, 1.0), (f64::INFINITY, 10.0)];
        assert_eq!(histogram_quantile(0.99, inf), 1.0);
        assert!(histogram_quantile(0.5, vec![(1.0, 0.0), (f64::INFINITY, 0.0)]).is_nan());
    }

    fn series(code: &str, v: f64) -> Series {
        Series {
            name: REQUESTS.into(),
            labels: [
                ("reporter".to_string(), "destination".to_string()),
                ("destination_workload".into(), "was".into()),
                ("response_code".into(), code.into()),
            ]
            .into_iter()
            .collect(),
            value: v,
        }
    }

    #[test]
    fn local_rates_are_deltas_over_the_time_between_scrapes() {
        let t0 = Instant::now();
        let mut local = Local {
            prev: Some(Snapshot {
                at: t0,
                series: vec![series("200", 10.0), series("503", 1.0)],
            }),
            cur: Snapshot {
                at: t0 + Duration::from_secs(2),
                series: vec![series("200", 30.0), series("503", 3.0), series("404", 4.0)],
            },
        };
        let sel = Selector::new(REQUESTS, vec![Matcher::eq("reporter", "destination")]);
        let all = local
            .eval(
                &Expr::Rate {
                    sel: sel.clone(),
                    by: vec!["destination_workload"],
                },
                Duration::from_secs(60),
            )
            .unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].get("destination_workload"), "was");
        // (20 + 2 + 4) / 2 s
        assert!((all[0].value - 13.0).abs() < 1e-9, "{all:?}");
        let ok = local
            .eval(
                &Expr::Rate {
                    sel: sel.with(not_5xx()),
                    by: vec![],
                },
                Duration::from_secs(60),
            )
            .unwrap();
        assert!((ok[0].value - 12.0).abs() < 1e-9, "{ok:?}");
        // One scrape: totals.
        local.prev = None;
        let tot = local
            .eval(
                &Expr::Total {
                    sel,
                    by: vec!["response_code"],
                },
                Duration::from_secs(60),
            )
            .unwrap();
        assert_eq!(tot.len(), 3);
    }
}
