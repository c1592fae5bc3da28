//! Argo Rollouts' canary strategy (`spec.strategy.canary`), read from the Rollout's opaque
//! `strategy`, with Argo's field names.

use serde::{Deserialize, Serialize};

/// `spec.strategy`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Strategy {
    pub canary: Option<Canary>,
    pub blue_green: Option<serde_json::Value>,
}

/// `spec.strategy.canary`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Canary {
    pub canary_service: Option<String>,
    pub stable_service: Option<String>,
    pub traffic_routing: Option<TrafficRouting>,
    pub steps: Vec<Step>,
    /// Background analysis.
    pub analysis: Option<BackgroundAnalysis>,
    /// Seconds the old stable pods stay after a promotion (Argo: 30).
    pub scale_down_delay_seconds: Option<u64>,
    /// Seconds the canary pods stay after an abort (Argo: 30).
    pub abort_scale_down_delay_seconds: Option<u64>,
    pub max_surge: Option<serde_json::Value>,
    pub max_unavailable: Option<serde_json::Value>,
    pub dynamic_stable_scale: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TrafficRouting {
    pub istio: Option<IstioRouting>,
    /// Routes the controller adds (setMirrorRoute, setHeaderRoute), in precedence order.
    pub managed_routes: Vec<ManagedRoute>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ManagedRoute {
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IstioRouting {
    pub virtual_service: Option<VirtualServiceRef>,
    pub virtual_services: Vec<VirtualServiceRef>,
    pub destination_rule: Option<DestinationRuleRef>,
}

impl IstioRouting {
    /// `virtualService` and `virtualServices` together.
    pub fn virtual_services(&self) -> Vec<VirtualServiceRef> {
        self.virtual_service
            .iter()
            .chain(&self.virtual_services)
            .cloned()
            .collect()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VirtualServiceRef {
    pub name: String,
    /// HTTP routes (by name) whose weights the Rollout sets; empty: the only route.
    pub routes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DestinationRuleRef {
    pub name: String,
    pub canary_subset_name: String,
    pub stable_subset_name: String,
}

/// One canary step: exactly one field is set. An unknown field is refused (Argo's CRD
/// schema refuses it too), so a misspelt step is said rather than skipped.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Step {
    pub set_weight: Option<i32>,
    pub pause: Option<Pause>,
    pub set_canary_scale: Option<SetCanaryScale>,
    pub set_mirror_route: Option<SetMirrorRoute>,
    pub set_header_route: Option<SetHeaderRoute>,
    pub analysis: Option<AnalysisSpec>,
    pub experiment: Option<serde_json::Value>,
    pub plugin: Option<serde_json::Value>,
}

impl Step {
    /// How many of the step's kinds are set (a valid step has exactly one).
    pub fn kinds(&self) -> usize {
        [
            self.set_weight.is_some(),
            self.pause.is_some(),
            self.set_canary_scale.is_some(),
            self.set_mirror_route.is_some(),
            self.set_header_route.is_some(),
            self.analysis.is_some(),
            self.experiment.is_some(),
            self.plugin.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count()
    }
}

/// `spec.strategy` read from the Rollout, or why it cannot run (Argo's `InvalidSpec`).
pub fn strategy(v: Option<&serde_json::Value>) -> Result<Canary, String> {
    let s: Strategy = match v {
        None => return Err("spec.strategy: a Rollout needs strategy.canary here".into()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("spec.strategy: {e}"))?,
    };
    if s.blue_green.is_some() {
        return Err("spec.strategy.blueGreen is not supported yet; use strategy.canary".into());
    }
    let c = s
        .canary
        .ok_or_else(|| "spec.strategy: a Rollout needs strategy.canary here".to_string())?;
    for (i, step) in c.steps.iter().enumerate() {
        if step.kinds() != 1 {
            return Err(format!(
                "spec.strategy.canary.steps[{i}]: a step sets exactly one of setWeight, pause, setCanaryScale, setMirrorRoute, setHeaderRoute, analysis, experiment"
            ));
        }
        if let Some(w) = step.set_weight
            && !(0..=100).contains(&w)
        {
            return Err(format!(
                "spec.strategy.canary.steps[{i}].setWeight: {w} is not between 0 and 100"
            ));
        }
        if let Some(p) = &step.pause {
            p.duration()
                .map_err(|e| format!("spec.strategy.canary.steps[{i}].pause: {e}"))?;
        }
    }
    Ok(c)
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Pause {
    /// `30s`, `10m`, `1h` or a number of seconds; none: until promoted.
    pub duration: Option<serde_json::Value>,
}

impl Pause {
    /// The pause's length; None: until promoted. An unreadable duration is an error.
    pub fn duration(&self) -> Result<Option<std::time::Duration>, String> {
        match &self.duration {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Number(n)) => n
                .as_u64()
                .map(|s| Some(std::time::Duration::from_secs(s)))
                .ok_or_else(|| format!("pause duration {n} is not a whole number of seconds")),
            Some(serde_json::Value::String(s)) => parse_duration(s).map(Some),
            Some(other) => Err(format!("pause duration {other} is not a duration")),
        }
    }
}

/// Argo's durations: a number with `s`, `m` or `h` (or none: seconds), and `ms`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let bad = || format!("`{s}` is not a duration (use e.g. 30s, 10m, 1h)");
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SetCanaryScale {
    pub replicas: Option<i32>,
    pub weight: Option<i32>,
    pub match_traffic_weight: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SetMirrorRoute {
    pub name: String,
    /// None: the route is removed.
    #[serde(rename = "match")]
    pub match_: Option<Vec<RouteMatch>>,
    pub percentage: Option<f64>,
}

/// Argo's `RouteMatch`: method, path and headers, each a string match.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteMatch {
    pub method: Option<StringMatch>,
    pub path: Option<StringMatch>,
    pub headers: Option<std::collections::BTreeMap<String, StringMatch>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StringMatch {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub regex: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SetHeaderRoute {
    pub name: String,
    /// None: the route is removed.
    #[serde(rename = "match")]
    pub match_: Option<Vec<HeaderRoutingMatch>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HeaderRoutingMatch {
    pub header_name: String,
    pub header_value: StringMatch,
}

/// An inline analysis step.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AnalysisSpec {
    pub templates: Vec<TemplateRef>,
    pub args: Vec<AnalysisArg>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BackgroundAnalysis {
    pub templates: Vec<TemplateRef>,
    pub args: Vec<AnalysisArg>,
    pub starting_step: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TemplateRef {
    pub template_name: String,
    pub cluster_scope: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AnalysisArg {
    pub name: String,
    pub value: Option<String>,
    pub value_from: Option<ArgValueFrom>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ArgValueFrom {
    /// `Stable` or `Latest`.
    pub pod_template_hash_value: Option<String>,
    pub field_ref: Option<FieldRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FieldRef {
    pub field_path: String,
}

impl Step {
    /// Argo's name of the step's kind, as `get rollout` prints it.
    pub fn describe(&self) -> String {
        if let Some(w) = self.set_weight {
            format!("setWeight: {w}")
        } else if let Some(p) = &self.pause {
            match &p.duration {
                Some(d) => format!(
                    "pause: {}",
                    d.as_str().map_or_else(|| d.to_string(), str::to_string)
                ),
                None => "pause".into(),
            }
        } else if let Some(s) = &self.set_canary_scale {
            match (s.replicas, s.weight, s.match_traffic_weight) {
                (Some(r), _, _) => format!("setCanaryScale: replicas {r}"),
                (_, Some(w), _) => format!("setCanaryScale: weight {w}"),
                _ => "setCanaryScale: matchTrafficWeight".into(),
            }
        } else if let Some(m) = &self.set_mirror_route {
            format!("setMirrorRoute: {}", m.name)
        } else if let Some(h) = &self.set_header_route {
            format!("setHeaderRoute: {}", h.name)
        } else if self.analysis.is_some() {
            "analysis".into()
        } else if self.experiment.is_some() {
            "experiment".into()
        } else {
            "(empty)".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_read_as_argo_writes_them() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("10 minutes").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("1e300h").is_err());
    }

    #[test]
    fn the_seeds_strategy_reads() {
        let v = serde_json::json!({"canary": {
            "canaryService": "web-canary", "stableService": "web-stable",
            "trafficRouting": {"istio": {
                "virtualService": {"name": "web-vsvc", "routes": ["primary"]},
                "destinationRule": {"name": "web-dest-rule", "canarySubsetName": "canary", "stableSubsetName": "stable"}},
                "managedRoutes": [{"name": "mirror"}]},
            "steps": [{"setCanaryScale": {"replicas": 1}}, {"pause": {"duration": "10m"}},
                      {"setWeight": 10}, {"pause": {}}]}});
        let s: Strategy = serde_json::from_value(v).unwrap();
        let c = s.canary.unwrap();
        assert_eq!(c.steps.len(), 4);
        assert_eq!(
            c.steps[1].pause.as_ref().unwrap().duration(),
            Ok(Some(Duration::from_secs(600)))
        );
        assert_eq!(c.steps[3].pause.as_ref().unwrap().duration(), Ok(None));
        assert_eq!(c.steps[2].describe(), "setWeight: 10");
        assert!(
            strategy(Some(
                &serde_json::json!({"canary": {"steps": [{"setWieght": 10}]}})
            ))
            .unwrap_err()
            .contains("setWieght")
        );
        assert!(
            strategy(Some(&serde_json::json!({"canary": {"steps": [{}]}})))
                .unwrap_err()
                .contains("steps[0]")
        );
        assert!(
            strategy(Some(
                &serde_json::json!({"canary": {"steps": [{"setWeight": 150}]}})
            ))
            .unwrap_err()
            .contains("150")
        );
        assert!(
            strategy(Some(
                &serde_json::json!({"canary": {"steps": [{"pause": {"duration": "soon"}}]}})
            ))
            .unwrap_err()
            .contains("soon")
        );
        assert!(strategy(Some(&serde_json::json!({"blueGreen": {}}))).is_err());
        assert!(strategy(None).is_err());
        let istio = c.traffic_routing.unwrap().istio.unwrap();
        assert_eq!(istio.virtual_services()[0].routes, ["primary"]);
    }
}
