//! The run as a pure state machine, as Argo's analysis controller reconciles an AnalysisRun
//! (`analysis/analysis.go`): which metrics are due at a time, what a measurement does to a
//! metric's counters, how a metric and the run are assessed, and the status Argo writes.
//! Times are offsets from the run's start, so the task that drives it can run on a paused
//! clock.

use std::collections::VecDeque;
use std::time::Duration;

use skein_api::analysis::expr::{Program, Value, format_number};

use super::AnalysisPhase;

/// Argo's `DefaultErrorRetryInterval`: a metric without an interval retries an error after it.
pub(crate) const ERROR_RETRY_INTERVAL: Duration = Duration::from_secs(10);

/// A metric with every argument substituted and every field parsed.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedMetric {
    pub name: String,
    pub interval: Option<Duration>,
    pub initial_delay: Duration,
    /// Argo's `EffectiveCount`: `None` measures until the run is terminated.
    pub count: Option<i64>,
    pub success: Option<(String, Program)>,
    pub failure: Option<(String, Program)>,
    /// Negative: not applicable.
    pub failure_limit: i64,
    pub inconclusive_limit: i64,
    pub consecutive_error_limit: i64,
    pub consecutive_success_limit: i64,
    pub dry_run: bool,
    pub retention: usize,
    pub prometheus: PrometheusQuery,
}

#[derive(Debug, Clone)]
pub(crate) struct PrometheusQuery {
    pub address: String,
    pub query: String,
    pub timeout: Duration,
}

/// What a provider answered.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// A scalar (`result` is a number).
    Scalar(f64),
    /// A vector's or matrix's values (`result` is a list).
    Values(Vec<f64>),
    /// The query failed: an Error measurement.
    Error(String),
}

/// One measurement, as Argo's status shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Measurement {
    pub phase: AnalysisPhase,
    pub message: String,
    pub value: String,
    pub started_at: String,
    pub finished_at: String,
}

#[derive(Debug, Clone, Default)]
struct MetricResult {
    phase: Option<AnalysisPhase>,
    message: String,
    count: i64,
    successful: i64,
    failed: i64,
    inconclusive: i64,
    error: i64,
    consecutive_error: i64,
    consecutive_success: i64,
    measurements: VecDeque<Measurement>,
    /// When the last measurement finished (offset from the start).
    last_finished: Option<Duration>,
    last_phase: Option<AnalysisPhase>,
    /// The value of the last measurement that had one, for the run's message.
    last_value: String,
}

struct MetricRun {
    spec: ResolvedMetric,
    /// `None` until the first measurement (Argo has no result for the metric until then).
    result: Option<MetricResult>,
}

pub(crate) struct Engine {
    metrics: Vec<MetricRun>,
    terminate: bool,
    phase: AnalysisPhase,
    message: String,
    started_at: String,
    completed_at: Option<String>,
}

/// Applies a measurement's conditions to a result, as Argo's `EvaluateResult`: with neither
/// condition every answer succeeds; with one, the other is its negation; with both and neither
/// true, Inconclusive.
pub(crate) fn evaluate(m: &ResolvedMetric, outcome: &Outcome) -> (AnalysisPhase, String, String) {
    let (result, value) = match outcome {
        Outcome::Error(e) => return (AnalysisPhase::Error, bounded(e), String::new()),
        Outcome::Scalar(x) => (Value::Num(*x), format_number(*x)),
        Outcome::Values(v) => (Value::numbers(v), show_values(v)),
    };
    let empty = matches!(&result, Value::List(l) if l.is_empty());
    let check = |which: &str, cond: &Option<(String, Program)>| -> Result<Option<bool>, String> {
        let Some((text, program)) = cond else {
            return Ok(None);
        };
        program.eval_bool(&result).map(Some).map_err(|e| {
            if empty {
                format!(
                    "could not evaluate {which} \"{text}\": metric result is nil or empty: no data returned from the metric provider"
                )
            } else {
                bounded(&format!("could not evaluate {which} \"{text}\": {e}"))
            }
        })
    };
    let success = match check("successCondition", &m.success) {
        Ok(s) => s,
        Err(e) => return (AnalysisPhase::Error, e, value),
    };
    let failure = match check("failureCondition", &m.failure) {
        Ok(f) => f,
        Err(e) => return (AnalysisPhase::Error, e, value),
    };
    let (success, failure) = match (success, failure) {
        (None, None) => return (AnalysisPhase::Successful, String::new(), value),
        (Some(s), None) => (s, !s),
        (None, Some(f)) => (!f, f),
        (Some(s), Some(f)) => (s, f),
    };
    let phase = if failure {
        AnalysisPhase::Failed
    } else if !success {
        AnalysisPhase::Inconclusive
    } else {
        AnalysisPhase::Successful
    };
    (phase, String::new(), value)
}

/// The most characters of a measurement's value or message kept: a vector of a million rows
/// is measured, not stored ten times over.
const MAX_SHOWN: usize = 4096;

/// A vector's values as Argo prints them (`[0.61,1]`), cut after [`MAX_SHOWN`] characters.
fn show_values(v: &[f64]) -> String {
    let mut out = String::from("[");
    for (i, x) in v.iter().enumerate() {
        if out.len() > MAX_SHOWN {
            out.push_str(&format!("... {} more", v.len() - i));
            break;
        }
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format_number(*x));
    }
    out.push(']');
    out
}

fn bounded(s: &str) -> String {
    if s.len() <= MAX_SHOWN {
        return s.to_string();
    }
    let mut end = MAX_SHOWN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

impl Engine {
    pub(crate) fn new(metrics: Vec<ResolvedMetric>, terminate: bool, started_at: String) -> Engine {
        Engine {
            metrics: metrics
                .into_iter()
                .map(|spec| MetricRun { spec, result: None })
                .collect(),
            terminate,
            phase: AnalysisPhase::Pending,
            message: String::new(),
            started_at,
            completed_at: None,
        }
    }

    pub(crate) fn metric(&self, i: usize) -> &ResolvedMetric {
        &self.metrics[i].spec
    }

    pub(crate) fn phase(&self) -> AnalysisPhase {
        self.phase
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// Argo's `IsTerminating`: asked to, or a (non dry-run) metric ended badly.
    fn terminating(&self) -> bool {
        self.terminate
            || self.metrics.iter().any(|m| {
                !m.spec.dry_run
                    && m.result.as_ref().and_then(|r| r.phase).is_some_and(|p| {
                        matches!(
                            p,
                            AnalysisPhase::Failed
                                | AnalysisPhase::Error
                                | AnalysisPhase::Inconclusive
                        )
                    })
            })
    }

    /// When metric `i` next measures (offset from the start), or `None` when it is done.
    fn due_at(&self, i: usize) -> Option<Duration> {
        if self.phase.completed() || self.terminating() {
            return None;
        }
        let m = &self.metrics[i];
        let Some(r) = &m.result else {
            return Some(m.spec.initial_delay);
        };
        if r.phase.is_some_and(AnalysisPhase::completed) {
            return None;
        }
        if m.spec.count.is_some_and(|c| r.count >= c) {
            return None;
        }
        let interval = match m.spec.interval {
            Some(i) => i,
            None if r.last_phase == Some(AnalysisPhase::Error) => ERROR_RETRY_INTERVAL,
            // Measured once without error: nothing more to take (the count covers it).
            None => return None,
        };
        Some(r.last_finished.unwrap_or_default() + interval)
    }

    /// The metrics due at `now`.
    pub(crate) fn due(&self, now: Duration) -> Vec<usize> {
        (0..self.metrics.len())
            .filter(|i| self.due_at(*i).is_some_and(|t| t <= now))
            .collect()
    }

    /// The earliest time a metric is due, `None` when nothing will be.
    pub(crate) fn next_due(&self) -> Option<Duration> {
        (0..self.metrics.len()).filter_map(|i| self.due_at(i)).min()
    }

    /// Records metric `i`'s measurement, finished at `now`, and assesses the run.
    pub(crate) fn record(&mut self, i: usize, now: Duration, m: Measurement) {
        let retention = self.metrics[i].spec.retention.max(1);
        let r = self.metrics[i].result.get_or_insert_with(|| MetricResult {
            phase: Some(AnalysisPhase::Running),
            ..MetricResult::default()
        });
        match m.phase {
            AnalysisPhase::Successful => {
                r.successful += 1;
                r.count += 1;
                r.consecutive_error = 0;
                r.consecutive_success += 1;
            }
            AnalysisPhase::Failed => {
                r.failed += 1;
                r.count += 1;
                r.consecutive_error = 0;
                r.consecutive_success = 0;
            }
            AnalysisPhase::Inconclusive => {
                r.inconclusive += 1;
                r.count += 1;
                r.consecutive_error = 0;
                r.consecutive_success = 0;
            }
            _ => {
                r.error += 1;
                r.consecutive_error += 1;
                r.consecutive_success = 0;
            }
        }
        r.last_finished = Some(now);
        r.last_phase = Some(m.phase);
        if !m.value.is_empty() {
            r.last_value = m.value.clone();
        }
        r.measurements.push_back(m);
        while r.measurements.len() > retention {
            r.measurements.pop_front();
        }
        self.assess();
    }

    /// Stops measuring (Argo's `spec.terminate`); the run ends with what it has.
    pub(crate) fn terminate(&mut self) {
        self.terminate = true;
        self.assess();
    }

    /// Argo's `assessRunStatus`, repeated until nothing changes (a metric that fails makes the
    /// run terminating, which ends the others).
    pub(crate) fn assess(&mut self) {
        for _ in 0..3 {
            let before = (self.phase, self.metric_phases());
            self.assess_once();
            if before == (self.phase, self.metric_phases()) {
                break;
            }
        }
        if self.phase.completed() && self.completed_at.is_none() {
            self.completed_at = Some(super::now_rfc3339());
        }
    }

    fn metric_phases(&self) -> Vec<Option<AnalysisPhase>> {
        self.metrics
            .iter()
            .map(|m| m.result.as_ref().and_then(|r| r.phase))
            .collect()
    }

    fn assess_once(&mut self) {
        if self.phase.completed() {
            return;
        }
        let terminating = self.terminating();
        let mut worst: Option<AnalysisPhase> = None;
        let mut worst_message = if self.terminate {
            "Run Terminated".to_string()
        } else {
            String::new()
        };
        let mut everything_completed = true;
        for m in &mut self.metrics {
            let Some(r) = &mut m.result else {
                everything_completed = false;
                continue;
            };
            let status = assess_metric(&m.spec, r, terminating);
            if r.phase != Some(status) {
                if let Some(last) = r.measurements.back() {
                    r.message = last.message.clone();
                }
                r.phase = Some(status);
            }
            if !status.completed() {
                everything_completed = false;
                continue;
            }
            let reason = failure_inconclusive_or_error(&m.spec, r).map(|(_, why)| why);
            if m.spec.dry_run {
                worst.get_or_insert(AnalysisPhase::Successful);
                if let Some(why) = reason {
                    r.message = format!("Metric assessed {status} due to {why}");
                }
                continue;
            }
            if worst.is_none_or(|w| status.worse_than(w)) {
                worst = Some(status);
                if let Some(why) = reason {
                    let mut msg =
                        format!("Metric \"{}\" assessed {status} due to {why}", m.spec.name);
                    if !r.message.is_empty() {
                        msg.push_str(&format!(": \"Error Message: {}\"", r.message));
                    }
                    if !r.last_value.is_empty() {
                        msg.push_str(&format!("; last measured value {}", r.last_value));
                    }
                    worst_message = msg;
                }
            }
        }
        let (phase, message) = if terminating {
            (worst.unwrap_or(AnalysisPhase::Successful), worst_message)
        } else if !everything_completed || worst.is_none() {
            (AnalysisPhase::Running, String::new())
        } else {
            (worst.unwrap_or(AnalysisPhase::Running), worst_message)
        };
        self.phase = phase;
        self.message = message.trim().to_string();
    }

    /// Argo's AnalysisRun `status`.
    pub(crate) fn status(&self) -> serde_json::Value {
        let mut summary = [0i64; 5];
        let results: Vec<serde_json::Value> = self
            .metrics
            .iter()
            .filter_map(|m| {
                let r = m.result.as_ref()?;
                let phase = r.phase.unwrap_or(AnalysisPhase::Running);
                if !m.spec.dry_run {
                    summary[0] += 1;
                    match failure_inconclusive_or_error(&m.spec, r).map(|(p, _)| p) {
                        _ if !phase.completed() => {}
                        Some(AnalysisPhase::Error) => summary[4] += 1,
                        Some(AnalysisPhase::Failed) => summary[2] += 1,
                        Some(AnalysisPhase::Inconclusive) => summary[3] += 1,
                        _ => summary[1] += 1,
                    }
                }
                let measurements: Vec<serde_json::Value> = r
                    .measurements
                    .iter()
                    .map(|x| {
                        let mut v = serde_json::json!({
                            "phase": x.phase.as_str(),
                            "startedAt": x.started_at,
                            "finishedAt": x.finished_at,
                        });
                        if !x.value.is_empty() {
                            v["value"] = x.value.clone().into();
                        }
                        if !x.message.is_empty() {
                            v["message"] = x.message.clone().into();
                        }
                        v
                    })
                    .collect();
                let mut v = serde_json::json!({
                    "name": m.spec.name,
                    "phase": phase.as_str(),
                    "count": r.count,
                    "successful": r.successful,
                    "failed": r.failed,
                    "inconclusive": r.inconclusive,
                    "error": r.error,
                    "consecutiveError": r.consecutive_error,
                    "measurements": measurements,
                });
                if !r.message.is_empty() {
                    v["message"] = r.message.clone().into();
                }
                if m.spec.dry_run {
                    v["dryRun"] = true.into();
                }
                Some(v)
            })
            .collect();
        let mut status = serde_json::json!({
            "phase": self.phase.as_str(),
            "startedAt": self.started_at,
            "metricResults": results,
            "runSummary": {
                "count": self.metrics.iter().filter(|m| !m.spec.dry_run).count(),
                "successful": summary[1],
                "failed": summary[2],
                "inconclusive": summary[3],
                "error": summary[4],
            },
        });
        if !self.message.is_empty() {
            status["message"] = self.message.clone().into();
        }
        if let Some(done) = &self.completed_at {
            status["completedAt"] = done.clone().into();
        }
        status
    }
}

/// Argo's `assessMetricStatus`.
fn assess_metric(m: &ResolvedMetric, r: &MetricResult, terminating: bool) -> AnalysisPhase {
    if let Some(p) = r.phase
        && p.completed()
    {
        return p;
    }
    if r.measurements.is_empty() {
        return if terminating {
            AnalysisPhase::Successful
        } else {
            AnalysisPhase::Pending
        };
    }
    if let Some((phase, _)) = failure_inconclusive_or_error(m, r) {
        return phase;
    }
    let success_limit = m.consecutive_success_limit;
    if success_limit > 0 && r.consecutive_success >= success_limit {
        return AnalysisPhase::Successful;
    }
    if let Some(count) = m.count
        && r.count >= count
    {
        let failure_applicable = m.failure_limit >= 0;
        let success_applicable = success_limit > 0;
        return match (failure_applicable, success_applicable) {
            (true, true) => AnalysisPhase::Inconclusive,
            (false, true) => AnalysisPhase::Failed,
            _ => AnalysisPhase::Successful,
        };
    }
    if terminating {
        AnalysisPhase::Successful
    } else {
        AnalysisPhase::Running
    }
}

/// Argo's `assessMetricFailureInconclusiveOrError`: the limit a metric went past, and Argo's
/// words for it.
fn failure_inconclusive_or_error(
    m: &ResolvedMetric,
    r: &MetricResult,
) -> Option<(AnalysisPhase, String)> {
    let mut out = None;
    if m.failure_limit >= 0 && r.failed > m.failure_limit {
        out = Some((
            AnalysisPhase::Failed,
            format!("failed ({}) > failureLimit ({})", r.failed, m.failure_limit),
        ));
    }
    if r.inconclusive > m.inconclusive_limit {
        out = Some((
            AnalysisPhase::Inconclusive,
            format!(
                "inconclusive ({}) > inconclusiveLimit ({})",
                r.inconclusive, m.inconclusive_limit
            ),
        ));
    }
    if r.consecutive_error > m.consecutive_error_limit {
        out = Some((
            AnalysisPhase::Error,
            format!(
                "consecutiveErrors ({}) > consecutiveErrorLimit ({})",
                r.consecutive_error, m.consecutive_error_limit
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_and_messages_are_cut() {
        assert_eq!(show_values(&[0.61, 1.0, f64::NAN]), "[0.61,1,NaN]");
        let long = show_values(&vec![0.5; 100_000]);
        assert!(long.len() < MAX_SHOWN + 64, "{}", long.len());
        assert!(long.ends_with(" more]"), "{}", &long[long.len() - 30..]);
        assert_eq!(bounded(&"é".repeat(5000)).len(), MAX_SHOWN + 3);
    }
}
