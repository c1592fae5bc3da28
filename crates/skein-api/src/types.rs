//! Types shared by the Kubernetes and Istio models: object metadata, `IntOrString`,
//! Istio's durations and percentages, and the opaque value used for fields the mesh does
//! not interpret.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A field kept as written but not interpreted (any YAML value).
pub type Opaque = serde_json::Value;

/// String-to-string maps such as labels, annotations and selectors.
pub type Labels = BTreeMap<String, String>;

// === ObjectMeta ===

/// Kubernetes `metadata`. Fields the mesh reads are typed; the rest of what `kubectl get -o
/// yaml` prints is accepted and kept.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// Empty when unset (for example with `generateName`).
    #[serde(default)]
    pub name: String,
    pub generate_name: Option<String>,
    /// As written; [`ObjectMeta::namespace_or_default`] applies Kubernetes' default.
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub annotations: Labels,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
    /// RFC 3339 as Kubernetes prints it; used for Istio's "oldest wins" rule.
    pub creation_timestamp: Option<String>,
    pub deletion_timestamp: Option<String>,
    pub deletion_grace_period_seconds: Option<i64>,
    #[serde(default)]
    pub finalizers: Vec<String>,
    #[serde(default)]
    pub owner_references: Vec<Opaque>,
    #[serde(default)]
    pub managed_fields: Vec<Opaque>,
    pub self_link: Option<String>,
}

impl ObjectMeta {
    /// The namespace, or `default` when unset (what `kubectl apply` does without `-n`).
    pub fn namespace_or_default(&self) -> &str {
        self.namespace
            .as_deref()
            .unwrap_or(crate::DEFAULT_NAMESPACE)
    }
}

/// A Kubernetes object with a `spec`: `apiVersion`, `kind`, `metadata`, `spec` and an
/// optional `status` (kept opaque so that `kubectl get -o yaml` output loads).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Object<S> {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: S,
    pub status: Option<Opaque>,
}

// === Selectors ===

/// Kubernetes `LabelSelector` (Deployments, Rollouts).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: Labels,
    #[serde(default)]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

impl LabelSelector {
    /// Whether `labels` satisfy this selector (all matchLabels and all matchExpressions).
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let value = labels.get(&e.key);
                match e.operator.as_str() {
                    "In" => value.is_some_and(|v| e.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !e.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }

    /// True when the selector has no terms (it selects everything on Kubernetes).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }
}

/// Istio `WorkloadSelector` (`selector:` of policies, `workloadSelector:` of
/// DestinationRule and ServiceEntry).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: Labels,
}

impl WorkloadSelector {
    /// Whether a workload with `labels` is selected.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// Istio `PolicyTargetReference` (`targetRef`/`targetRefs`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    pub group: Option<String>,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    pub namespace: Option<String>,
}

// === IntOrString ===

/// Kubernetes `IntOrString`: `targetPort: 8080` or `targetPort: http`. A quoted number
/// (`"8080"`) stays a string, as on Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IntOrString {
    Int(i32),
    String(String),
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(n) => write!(f, "{n}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

impl Serialize for IntOrString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrString::Int(n) => s.serialize_i32(*n),
            IntOrString::String(v) => s.serialize_str(v),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrString, E> {
                i32::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom(format!("integer {v} is out of range")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i32::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom(format!("integer {v} is out of range")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

// === Duration ===

/// An Istio duration such as `10s`, `2.5s`, `100ms`, `1h` or `1h30m` (protobuf JSON and
/// Go's `time.ParseDuration` syntax). Keeps the text as written; [`Duration::get`] gives
/// the value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Duration {
    text: String,
    value: std::time::Duration,
}

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration \"{text}\": {reason}; write a number with a unit: ns, us, ms, s, m or h (e.g. \"10s\", \"2.5s\", \"100ms\", \"1h\")"
)]
pub struct DurationError {
    pub text: String,
    pub reason: &'static str,
}

impl Duration {
    /// Parses `text` (e.g. `"1.5s"`, `"1h30m"`, `"0"`). Negative durations are rejected.
    pub fn parse(text: &str) -> Result<Duration, DurationError> {
        let err = |reason| DurationError {
            text: text.to_string(),
            reason,
        };
        let s = text.trim();
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if s.starts_with('-') {
            return Err(err("it is negative"));
        }
        let s = s.strip_prefix('+').unwrap_or(s);
        if s == "0" {
            return Ok(Duration {
                text: text.to_string(),
                value: std::time::Duration::ZERO,
            });
        }
        let mut total: u128 = 0; // nanoseconds
        let mut rest = s;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            if num_len == 0 {
                return Err(err("expected a number"));
            }
            let number = &rest[..num_len];
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit: u128 = match &rest[..unit_len] {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                "" => return Err(err("missing unit")),
                _ => return Err(err("unknown unit")),
            };
            rest = &rest[unit_len..];
            let (int, frac) = number.split_once('.').unwrap_or((number, ""));
            if (int.is_empty() && frac.is_empty()) || frac.contains('.') || int.len() > 20 {
                return Err(err("malformed number"));
            }
            let int: u128 = if int.is_empty() {
                0
            } else {
                int.parse().map_err(|_| err("malformed number"))?
            };
            // Fractions finer than a nanosecond are dropped, as Go does.
            let mut frac_nanos: u128 = 0;
            let mut scale = unit;
            for d in frac.bytes().take(30) {
                scale /= 10;
                frac_nanos += u128::from(d - b'0') * scale;
            }
            total = total
                .saturating_add(int.saturating_mul(unit))
                .saturating_add(frac_nanos);
        }
        // protobuf's Duration ends at 315,576,000,000 seconds (10,000 years).
        if total > 315_576_000_000 * 1_000_000_000 {
            return Err(err("it is too large"));
        }
        let value = std::time::Duration::new(
            (total / 1_000_000_000) as u64,
            (total % 1_000_000_000) as u32,
        );
        Ok(Duration {
            text: text.to_string(),
            value,
        })
    }

    /// The duration as written in the manifest.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed value.
    pub fn get(&self) -> std::time::Duration {
        self.value
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"10s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                Duration::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "invalid duration {v}: a duration needs a unit, e.g. \"{v}s\""
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "invalid duration {v}: a duration needs a unit, e.g. \"{v}s\""
                )))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "invalid duration {v}: a duration needs a unit, e.g. \"{v}s\""
                )))
            }
        }
        d.deserialize_any(V)
    }
}

// === Percent ===

/// Istio `Percent`: `{value: 10.0}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    #[serde(default)]
    pub value: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as D;

    #[test]
    fn durations_parse_like_istio() {
        assert_eq!(Duration::parse("10s").unwrap().get(), D::from_secs(10));
        assert_eq!(Duration::parse("2.5s").unwrap().get(), D::from_millis(2500));
        assert_eq!(Duration::parse("100ms").unwrap().get(), D::from_millis(100));
        assert_eq!(Duration::parse("1h").unwrap().get(), D::from_secs(3600));
        assert_eq!(Duration::parse("1h30m").unwrap().get(), D::from_secs(5400));
        assert_eq!(Duration::parse("1m").unwrap().get(), D::from_secs(60));
        assert_eq!(Duration::parse("250us").unwrap().get(), D::from_micros(250));
        assert_eq!(Duration::parse("0.3s").unwrap().get(), D::from_millis(300));
        assert_eq!(Duration::parse(".5h").unwrap().get(), D::from_secs(1800));
        assert_eq!(Duration::parse("1.5ns").unwrap().get(), D::from_nanos(1));
        assert_eq!(Duration::parse("0").unwrap().get(), D::ZERO);
        assert_eq!(Duration::parse("0s").unwrap().as_str(), "0s");
    }

    #[test]
    fn bad_durations_say_why() {
        assert_eq!(Duration::parse("10").unwrap_err().reason, "missing unit");
        assert_eq!(
            Duration::parse("10 sec").unwrap_err().reason,
            "unknown unit"
        );
        assert_eq!(Duration::parse("-1s").unwrap_err().reason, "it is negative");
        assert_eq!(
            Duration::parse("s").unwrap_err().reason,
            "expected a number"
        );
        assert_eq!(
            Duration::parse("1..2s").unwrap_err().reason,
            "malformed number"
        );
        assert_eq!(
            Duration::parse("3x").unwrap_err().to_string(),
            "invalid duration \"3x\": unknown unit; write a number with a unit: ns, us, ms, s, m or h (e.g. \"10s\", \"2.5s\", \"100ms\", \"1h\")"
        );
    }

    #[test]
    fn int_or_string_keeps_quoted_numbers_as_strings() {
        let v: Vec<IntOrString> = serde_norway::from_str("[8080, http, \"9090\"]").unwrap();
        assert_eq!(
            v,
            vec![
                IntOrString::Int(8080),
                IntOrString::String("http".into()),
                IntOrString::String("9090".into())
            ]
        );
    }

    #[test]
    fn label_selector_expressions() {
        let sel: LabelSelector = serde_norway::from_str(
            "matchLabels: {app: web}\nmatchExpressions:\n- {key: version, operator: In, values: [stable, canary]}\n",
        )
        .unwrap();
        let mut labels = Labels::new();
        labels.insert("app".into(), "web".into());
        assert!(!sel.matches(&labels));
        labels.insert("version".into(), "canary".into());
        assert!(sel.matches(&labels));
    }
}
