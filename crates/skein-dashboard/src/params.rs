//! Query parameters as the API takes them: each one parsed and bounded here, before anything
//! a caller sent reaches a PromQL query, a file path or the tracing store. A bad value is a
//! [`ParamError`] (400 with a message saying what is accepted).

use std::collections::BTreeMap;

/// The longest query string taken (bytes).
pub const MAX_QUERY: usize = 4096;
/// The most namespaces one graph may ask for.
pub const MAX_NAMESPACES: usize = 32;
/// Kiali's default window.
pub const DEFAULT_DURATION: u64 = 600;
/// The longest window: one day.
pub const MAX_DURATION: u64 = 86_400;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("the query string is longer than {MAX_QUERY} bytes")]
    TooLong,
    #[error(
        "{name}: {value:?} is not a namespace name (DNS-1123 label: lower-case letters, digits and '-', at most 63 characters)"
    )]
    Namespace { name: &'static str, value: String },
    #[error(
        "{name}: {value:?} is not a name (lower-case letters, digits, '-' and '.', at most 253 characters)"
    )]
    Name { name: &'static str, value: String },
    #[error("{name}: {value:?} is not a duration between 1s and 1d (e.g. 60s, 10m, 1h)")]
    Duration { name: &'static str, value: String },
    #[error("{name}: {value:?} is not one of {allowed}")]
    OneOf {
        name: &'static str,
        value: String,
        allowed: &'static str,
    },
    #[error("{name}: {value:?} is not a number between {min} and {max}")]
    Number {
        name: &'static str,
        value: String,
        min: u64,
        max: u64,
    },
    #[error("{name} is required")]
    Missing { name: &'static str },
    #[error("namespaces: at most {MAX_NAMESPACES} namespaces")]
    TooManyNamespaces,
}

/// The parsed query string: the last value of each key.
#[derive(Debug, Default, Clone)]
pub struct Query(BTreeMap<String, String>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Query, ParamError> {
        let raw = raw.unwrap_or("");
        if raw.len() > MAX_QUERY {
            return Err(ParamError::TooLong);
        }
        Ok(Query(
            form_urlencoded::parse(raw.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A window in seconds (`duration`, `rateInterval`), `default` when absent.
    pub fn duration(&self, key: &'static str, default: u64) -> Result<u64, ParamError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => parse_duration(v).ok_or_else(|| ParamError::Duration {
                name: key,
                value: clip(v),
            }),
        }
    }

    /// A bounded whole number, `default` when absent.
    pub fn number(
        &self,
        key: &'static str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ParamError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| ParamError::Number {
                    name: key,
                    value: clip(v),
                    min,
                    max,
                }),
        }
    }

    pub fn bool(&self, key: &'static str, default: bool) -> Result<bool, ParamError> {
        match self.get(key) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(ParamError::OneOf {
                name: key,
                value: clip(v),
                allowed: "true, false",
            }),
        }
    }

    /// One of `allowed` (a comma-separated list in the message), `default` when absent.
    pub fn one_of(
        &self,
        key: &'static str,
        allowed: &'static str,
        default: &'static str,
    ) -> Result<&'static str, ParamError> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        allowed
            .split(", ")
            .find(|a| *a == v)
            .ok_or_else(|| ParamError::OneOf {
                name: key,
                value: clip(v),
                allowed,
            })
    }
}

/// A value shortened for an error message.
fn clip(v: &str) -> String {
    v.chars().take(80).collect()
}

/// A namespace name (Kubernetes' DNS-1123 label).
pub fn namespace(name: &'static str, v: &str) -> Result<String, ParamError> {
    if is_dns1123_label(v) {
        Ok(v.to_string())
    } else {
        Err(ParamError::Namespace {
            name,
            value: clip(v),
        })
    }
}

/// An object or pod name (a DNS-1123 subdomain).
pub fn object_name(name: &'static str, v: &str) -> Result<String, ParamError> {
    let ok = !v.is_empty() && v.len() <= 253 && v.split('.').all(is_dns1123_label);
    if ok {
        Ok(v.to_string())
    } else {
        Err(ParamError::Name {
            name,
            value: clip(v),
        })
    }
}

pub fn is_dns1123_label(v: &str) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// `namespaces=a,b`: at least one, each a DNS-1123 label, no duplicates.
pub fn namespaces(q: &Query) -> Result<Vec<String>, ParamError> {
    let raw = q
        .get("namespaces")
        .ok_or(ParamError::Missing { name: "namespaces" })?;
    let mut out: Vec<String> = Vec::new();
    for n in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let n = namespace("namespaces", n)?;
        if !out.contains(&n) {
            out.push(n);
        }
        if out.len() > MAX_NAMESPACES {
            return Err(ParamError::TooManyNamespaces);
        }
    }
    if out.is_empty() {
        return Err(ParamError::Missing { name: "namespaces" });
    }
    Ok(out)
}

/// Kiali's durations: `600s`, `10m`, `1h`, `1d`, or bare seconds; 1 s to 1 day.
pub fn parse_duration(v: &str) -> Option<u64> {
    if v.is_empty() || v.len() > 12 {
        return None;
    }
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    let secs = n.checked_mul(mult)?;
    (1..=MAX_DURATION).contains(&secs).then_some(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_bounded() {
        assert_eq!(parse_duration("600s"), Some(600));
        assert_eq!(parse_duration("10m"), Some(600));
        assert_eq!(parse_duration("1d"), Some(86_400));
        assert_eq!(parse_duration("60"), Some(60));
        for bad in [
            "0s",
            "2d",
            "99999999999999999999s",
            "-1s",
            "1w",
            "1.5s",
            "",
            "s",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_cannot_carry_promql() {
        assert!(namespace("n", "blog-system").is_ok());
        for bad in [
            "Blog",
            "a\"}",
            "a.b",
            "-a",
            "a_b",
            &"a".repeat(64),
            "blog-system\"} or vector(1) #",
        ] {
            assert!(namespace("n", bad).is_err(), "{bad}");
        }
        assert!(object_name("w", "was-49nzf52cf-7v69x").is_ok());
        assert!(object_name("w", "../etc").is_err());
        let q = Query::parse(Some("namespaces=a,b,a&duration=60s")).unwrap();
        assert_eq!(namespaces(&q).unwrap(), ["a", "b"]);
        let q = Query::parse(Some("namespaces=a,B")).unwrap();
        assert!(namespaces(&q).unwrap_err().to_string().contains("\"B\""));
        let many: Vec<String> = (0..40).map(|i| format!("n{i}")).collect();
        let q = Query::parse(Some(&format!("namespaces={}", many.join(",")))).unwrap();
        assert_eq!(namespaces(&q), Err(ParamError::TooManyNamespaces));
        assert_eq!(
            Query::parse(Some(&"a".repeat(MAX_QUERY + 1))).unwrap_err(),
            ParamError::TooLong
        );
    }

    #[test]
    fn enumerations_and_numbers() {
        let q = Query::parse(Some("graphType=app&tailLines=5000000&x=maybe")).unwrap();
        assert_eq!(
            q.one_of(
                "graphType",
                "app, versionedApp, workload, service",
                "versionedApp"
            ),
            Ok("app")
        );
        assert!(q.one_of("x", "a, b", "a").is_err());
        assert!(q.number("tailLines", 100, 1, 5000).is_err());
        assert!(q.bool("x", false).is_err());
        assert_eq!(q.bool("missing", true), Ok(true));
    }
}
