//! The traffic a Rollout manages, as Argo's Istio traffic router writes it: the weights of
//! the VirtualService's managed HTTP routes, the `setMirrorRoute` and `setHeaderRoute`
//! routes (first, in `managedRoutes` order), and the DestinationRule subsets' labels
//! (`rollouts-pod-template-hash`). The result is a copy of the user's objects for the
//! control plane's `managed` overlay: the user's files are never written.

use serde_json::{Value, json};

use super::spec::{Canary, IstioRouting, RouteMatch, SetHeaderRoute, SetMirrorRoute, StringMatch};
use crate::plan::ROLLOUT_HASH_LABEL;

/// What the Rollout routes now.
pub struct Traffic<'a> {
    pub stable_hash: &'a str,
    /// The canary's hash (the stable's when there is no update).
    pub canary_hash: &'a str,
    pub weight: i32,
    pub mirrors: &'a [SetMirrorRoute],
    pub headers: &'a [SetHeaderRoute],
}

/// Why the managed objects cannot be written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrafficError {
    #[error("VirtualService {0} (named by the Rollout's trafficRouting) does not exist")]
    NoVirtualService(String),
    #[error("DestinationRule {0} (named by the Rollout's trafficRouting) does not exist")]
    NoDestinationRule(String),
    #[error(
        "VirtualService {vs}: HTTP route `{route}` (named by the Rollout's trafficRouting) does not exist"
    )]
    NoRoute { vs: String, route: String },
    #[error(
        "VirtualService {0} has several HTTP routes: name the ones the Rollout manages in trafficRouting.istio.virtualService.routes"
    )]
    RoutesNeeded(String),
    #[error("DestinationRule {dr} has no subset `{subset}`")]
    NoSubset { dr: String, subset: String },
}

/// The user's VirtualServices and DestinationRule (as JSON objects), modified.
pub fn managed(
    canary: &Canary,
    istio: &IstioRouting,
    vss: &[(String, Value)],
    dr: Option<Value>,
    t: &Traffic<'_>,
) -> Result<Vec<Value>, TrafficError> {
    let mut out = Vec::new();
    let subsets = istio.destination_rule.as_ref();
    for r in istio.virtual_services() {
        let Some((_, vs)) = vss.iter().find(|(n, _)| *n == r.name) else {
            return Err(TrafficError::NoVirtualService(r.name.clone()));
        };
        let mut vs = clean(vs.clone());
        let http = vs["spec"]["http"].as_array_mut();
        let Some(http) = http else {
            return Err(TrafficError::NoRoute {
                vs: r.name.clone(),
                route: r.routes.first().cloned().unwrap_or_default(),
            });
        };
        // Routes a previous write added are the user's object's never: start from it.
        let names: Vec<String> = if r.routes.is_empty() {
            if http.len() != 1 {
                return Err(TrafficError::RoutesNeeded(r.name.clone()));
            }
            vec![http[0]["name"].as_str().unwrap_or_default().to_string()]
        } else {
            r.routes.clone()
        };
        for name in &names {
            if !http
                .iter()
                .any(|h| h["name"].as_str().unwrap_or_default() == name)
            {
                return Err(TrafficError::NoRoute {
                    vs: r.name.clone(),
                    route: name.clone(),
                });
            }
        }
        let mut canary_dest = None;
        for h in http.iter_mut() {
            let name = h["name"].as_str().unwrap_or_default().to_string();
            if !names.contains(&name) {
                continue;
            }
            if let Some(routes) = h["route"].as_array_mut() {
                for d in routes.iter_mut() {
                    match role(canary, subsets, &d["destination"]) {
                        Some(Role::Canary) => {
                            d["weight"] = json!(t.weight);
                            canary_dest.get_or_insert_with(|| d["destination"].clone());
                        }
                        Some(Role::Stable) => d["weight"] = json!(100 - t.weight),
                        None => {}
                    }
                }
            }
        }
        let first_managed = http
            .iter()
            .find(|h| names.contains(&h["name"].as_str().unwrap_or_default().to_string()))
            .cloned()
            .unwrap_or(Value::Null);
        let canary_dest = canary_dest.unwrap_or_else(|| match subsets {
            Some(dr) => json!({
                "host": first_managed["route"][0]["destination"]["host"].clone(),
                "subset": dr.canary_subset_name,
            }),
            None => json!({"host": canary.canary_service.clone().unwrap_or_default()}),
        });
        let mut added = Vec::new();
        let order: Vec<&str> = canary
            .traffic_routing
            .as_ref()
            .map(|tr| tr.managed_routes.iter().map(|m| m.name.as_str()).collect())
            .unwrap_or_default();
        for name in &order {
            if let Some(h) = t.headers.iter().find(|h| h.name == *name) {
                added.push(header_route(h, &canary_dest));
            }
            if let Some(m) = t.mirrors.iter().find(|m| m.name == *name) {
                added.push(mirror_route(m, &first_managed, &canary_dest));
            }
        }
        for (i, a) in added.into_iter().enumerate() {
            http.insert(i, a);
        }
        out.push(vs);
    }
    if let Some(r) = subsets {
        let Some(dr) = dr else {
            return Err(TrafficError::NoDestinationRule(r.name.clone()));
        };
        let mut dr = clean(dr);
        for (subset, hash) in [
            (&r.stable_subset_name, t.stable_hash),
            (&r.canary_subset_name, t.canary_hash),
        ] {
            let found = dr["spec"]["subsets"]
                .as_array_mut()
                .and_then(|s| s.iter_mut().find(|s| s["name"] == json!(subset)));
            let Some(s) = found else {
                return Err(TrafficError::NoSubset {
                    dr: r.name.clone(),
                    subset: subset.clone(),
                });
            };
            if !s["labels"].is_object() {
                s["labels"] = json!({});
            }
            s["labels"][ROLLOUT_HASH_LABEL] = json!(hash);
        }
        out.push(dr);
    }
    Ok(out)
}

enum Role {
    Stable,
    Canary,
}

fn role(
    canary: &Canary,
    subsets: Option<&super::spec::DestinationRuleRef>,
    dest: &Value,
) -> Option<Role> {
    if let Some(dr) = subsets {
        let subset = dest["subset"].as_str()?;
        if subset == dr.canary_subset_name {
            return Some(Role::Canary);
        }
        if subset == dr.stable_subset_name {
            return Some(Role::Stable);
        }
        return None;
    }
    let host = dest["host"].as_str()?;
    let short = host.split('.').next().unwrap_or(host);
    if canary.canary_service.as_deref() == Some(short) {
        Some(Role::Canary)
    } else if canary.stable_service.as_deref() == Some(short) {
        Some(Role::Stable)
    } else {
        None
    }
}

fn string_match(m: &StringMatch) -> Value {
    if let Some(v) = &m.exact {
        json!({"exact": v})
    } else if let Some(v) = &m.prefix {
        json!({"prefix": v})
    } else if let Some(v) = &m.regex {
        json!({"regex": v})
    } else {
        json!({})
    }
}

fn istio_match(m: &RouteMatch) -> Value {
    let mut out = json!({});
    if let Some(x) = &m.method {
        out["method"] = string_match(x);
    }
    if let Some(x) = &m.path {
        out["uri"] = string_match(x);
    }
    if let Some(h) = &m.headers {
        out["headers"] = h
            .iter()
            .map(|(k, v)| (k.clone(), string_match(v)))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    out
}

/// Argo's mirror route: the first managed route's destinations, mirrored to the canary.
fn mirror_route(m: &SetMirrorRoute, first: &Value, canary: &Value) -> Value {
    let matches: Vec<Value> = m.match_.iter().flatten().map(istio_match).collect();
    json!({
        "name": m.name,
        "match": matches,
        "route": first["route"].clone(),
        "mirror": canary,
        "mirrorPercentage": {"value": m.percentage.unwrap_or(100.0)},
    })
}

fn header_route(h: &SetHeaderRoute, canary: &Value) -> Value {
    let headers: serde_json::Map<String, Value> = h
        .match_
        .iter()
        .flatten()
        .map(|m| (m.header_name.clone(), string_match(&m.header_value)))
        .collect();
    json!({
        "name": h.name,
        "match": [{"headers": headers}],
        "route": [{"destination": canary, "weight": 100}],
    })
}

/// The object as the overlay holds it: without status and nulls.
fn clean(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.retain(|_, x| !x.is_null());
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
    }
    strip(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vs() -> Value {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "web-vsvc", "namespace": "blog-system"},
            "spec": {"hosts": ["web-service"], "http": [
                {"name": "canary-testing", "route": [{"destination": {"host": "web-service", "subset": "canary"}}]},
                {"name": "primary", "route": [
                    {"destination": {"host": "web-service", "subset": "stable"}, "weight": 100},
                    {"destination": {"host": "web-service", "subset": "canary"}, "weight": 0}]}]}})
    }

    fn dr() -> Value {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "web-dest-rule", "namespace": "blog-system"},
            "spec": {"host": "web-service", "subsets": [{"name": "stable"}, {"name": "canary", "labels": null}]}})
    }

    fn canary() -> Canary {
        serde_json::from_value(json!({
            "trafficRouting": {"istio": {
                "virtualService": {"name": "web-vsvc", "routes": ["primary"]},
                "destinationRule": {"name": "web-dest-rule", "canarySubsetName": "canary", "stableSubsetName": "stable"}},
                "managedRoutes": [{"name": "mirror"}, {"name": "header"}]}}))
        .unwrap()
    }

    #[test]
    fn weights_routes_and_subsets_are_set_on_a_copy() {
        let c = canary();
        let istio = c.traffic_routing.clone().unwrap().istio.unwrap();
        let mirrors = [SetMirrorRoute {
            name: "mirror".into(),
            match_: Some(vec![RouteMatch {
                method: Some(StringMatch {
                    exact: Some("GET".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            percentage: Some(50.0),
        }];
        let t = Traffic {
            stable_hash: "aaa",
            canary_hash: "bbb",
            weight: 10,
            mirrors: &mirrors,
            headers: &[],
        };
        let out = managed(&c, &istio, &[("web-vsvc".into(), vs())], Some(dr()), &t).unwrap();
        let http = &out[0]["spec"]["http"];
        assert_eq!(http[0]["name"], "mirror");
        assert_eq!(http[0]["match"][0]["method"]["exact"], "GET");
        assert_eq!(http[0]["mirror"]["subset"], "canary");
        assert_eq!(http[0]["mirrorPercentage"]["value"], 50.0);
        assert_eq!(http[2]["route"][0]["weight"], 90);
        assert_eq!(http[2]["route"][1]["weight"], 10);
        assert!(
            http[1]["route"][0].get("weight").is_none(),
            "an unmanaged route is left alone"
        );
        let subsets = &out[1]["spec"]["subsets"];
        assert_eq!(subsets[0]["labels"][ROLLOUT_HASH_LABEL], "aaa");
        assert_eq!(subsets[1]["labels"][ROLLOUT_HASH_LABEL], "bbb");
    }

    #[test]
    fn a_missing_route_or_subset_is_said() {
        let mut c = canary();
        let mut istio = c.traffic_routing.clone().unwrap().istio.unwrap();
        let t = Traffic {
            stable_hash: "a",
            canary_hash: "a",
            weight: 0,
            mirrors: &[],
            headers: &[],
        };
        istio.virtual_service.as_mut().unwrap().routes = vec!["nope".into()];
        let e = managed(&c, &istio, &[("web-vsvc".into(), vs())], Some(dr()), &t).unwrap_err();
        assert!(e.to_string().contains("`nope`"), "{e}");
        istio.virtual_service.as_mut().unwrap().routes.clear();
        let e = managed(&c, &istio, &[("web-vsvc".into(), vs())], Some(dr()), &t).unwrap_err();
        assert_eq!(e, TrafficError::RoutesNeeded("web-vsvc".into()));
        c.traffic_routing = None;
        let e = managed(&c, &istio, &[], Some(dr()), &t).unwrap_err();
        assert_eq!(e, TrafficError::NoVirtualService("web-vsvc".into()));
    }
}
