//! The resource types `skein get` knows, and kubectl's names for them: plurals, singulars,
//! short names, `kind.group` forms and `all`.

/// One resource type, as the API server's discovery describes it.
#[derive(Debug, PartialEq, Eq)]
pub struct KindInfo {
    /// The `kind:` string.
    pub kind: &'static str,
    /// The API group (empty for the core group).
    pub group: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short: &'static [&'static str],
    pub namespaced: bool,
}

impl KindInfo {
    /// `virtualservices.networking.istio.io`, `pods`: the name kubectl's errors use.
    pub fn resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `virtualservice.networking.istio.io`, `pod`: the prefix of `-o name` and of the NAME
    /// column when several kinds are printed.
    pub fn qualified_singular(&self) -> String {
        if self.group.is_empty() {
            self.singular.to_string()
        } else {
            format!("{}.{}", self.singular, self.group)
        }
    }
}

macro_rules! kind {
    ($kind:literal, $group:literal, $plural:literal, $singular:literal, [$($s:literal),*], $ns:literal) => {
        KindInfo {
            kind: $kind,
            group: $group,
            plural: $plural,
            singular: $singular,
            short: &[$($s),*],
            namespaced: $ns,
        }
    };
}

/// Every type, in the order `kubectl api-resources` would list the ones it has.
pub static KINDS: &[KindInfo] = &[
    kind!("ConfigMap", "", "configmaps", "configmap", ["cm"], true),
    kind!("Namespace", "", "namespaces", "namespace", ["ns"], false),
    kind!("Pod", "", "pods", "pod", ["po"], true),
    kind!("Secret", "", "secrets", "secret", [], true),
    kind!(
        "ServiceAccount",
        "",
        "serviceaccounts",
        "serviceaccount",
        ["sa"],
        true
    ),
    kind!("Service", "", "services", "service", ["svc"], true),
    kind!(
        "Deployment",
        "apps",
        "deployments",
        "deployment",
        ["deploy"],
        true
    ),
    kind!(
        "Rollout",
        "argoproj.io",
        "rollouts",
        "rollout",
        ["ro"],
        true
    ),
    kind!(
        "Application",
        "argoproj.io",
        "applications",
        "application",
        ["app", "apps"],
        true
    ),
    kind!(
        "AppProject",
        "argoproj.io",
        "appprojects",
        "appproject",
        ["appproj", "appprojs"],
        true
    ),
    kind!(
        "AnalysisTemplate",
        "argoproj.io",
        "analysistemplates",
        "analysistemplate",
        ["at"],
        true
    ),
    kind!(
        "ClusterAnalysisTemplate",
        "argoproj.io",
        "clusteranalysistemplates",
        "clusteranalysistemplate",
        ["cat"],
        false
    ),
    kind!(
        "AnalysisRun",
        "argoproj.io",
        "analysisruns",
        "analysisrun",
        ["ar"],
        true
    ),
    kind!(
        "StatefulSet",
        "apps",
        "statefulsets",
        "statefulset",
        ["sts"],
        true
    ),
    kind!("DaemonSet", "apps", "daemonsets", "daemonset", ["ds"], true),
    kind!("Job", "batch", "jobs", "job", [], true),
    kind!("CronJob", "batch", "cronjobs", "cronjob", ["cj"], true),
    kind!("Endpoints", "", "endpoints", "endpoints", ["ep"], true),
    kind!(
        "LimitRange",
        "",
        "limitranges",
        "limitrange",
        ["limits"],
        true
    ),
    kind!(
        "PersistentVolumeClaim",
        "",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        ["pvc"],
        true
    ),
    kind!(
        "ResourceQuota",
        "",
        "resourcequotas",
        "resourcequota",
        ["quota"],
        true
    ),
    kind!(
        "CustomResourceDefinition",
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "customresourcedefinition",
        ["crd", "crds"],
        false
    ),
    kind!(
        "MutatingWebhookConfiguration",
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        "mutatingwebhookconfiguration",
        [],
        false
    ),
    kind!(
        "ValidatingWebhookConfiguration",
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        "validatingwebhookconfiguration",
        [],
        false
    ),
    kind!(
        "HorizontalPodAutoscaler",
        "autoscaling",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        ["hpa"],
        true
    ),
    kind!(
        "EndpointSlice",
        "discovery.k8s.io",
        "endpointslices",
        "endpointslice",
        [],
        true
    ),
    kind!(
        "IngressClass",
        "networking.k8s.io",
        "ingressclasses",
        "ingressclass",
        [],
        false
    ),
    kind!(
        "NetworkPolicy",
        "networking.k8s.io",
        "networkpolicies",
        "networkpolicy",
        ["netpol"],
        true
    ),
    kind!(
        "PodDisruptionBudget",
        "policy",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        ["pdb"],
        true
    ),
    kind!(
        "ClusterRoleBinding",
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "clusterrolebinding",
        [],
        false
    ),
    kind!(
        "ClusterRole",
        "rbac.authorization.k8s.io",
        "clusterroles",
        "clusterrole",
        [],
        false
    ),
    kind!(
        "RoleBinding",
        "rbac.authorization.k8s.io",
        "rolebindings",
        "rolebinding",
        [],
        true
    ),
    kind!(
        "Role",
        "rbac.authorization.k8s.io",
        "roles",
        "role",
        [],
        true
    ),
    kind!(
        "CSIDriver",
        "storage.k8s.io",
        "csidrivers",
        "csidriver",
        [],
        false
    ),
    kind!(
        "IstioOperator",
        "install.istio.io",
        "istiooperators",
        "istiooperator",
        ["iop", "io"],
        true
    ),
    kind!(
        "Ingress",
        "networking.k8s.io",
        "ingresses",
        "ingress",
        ["ing"],
        true
    ),
    kind!(
        "DestinationRule",
        "networking.istio.io",
        "destinationrules",
        "destinationrule",
        ["dr"],
        true
    ),
    kind!(
        "Gateway",
        "networking.istio.io",
        "gateways",
        "gateway",
        ["gw"],
        true
    ),
    kind!(
        "ServiceEntry",
        "networking.istio.io",
        "serviceentries",
        "serviceentry",
        ["se"],
        true
    ),
    kind!(
        "Sidecar",
        "networking.istio.io",
        "sidecars",
        "sidecar",
        [],
        true
    ),
    kind!(
        "VirtualService",
        "networking.istio.io",
        "virtualservices",
        "virtualservice",
        ["vs"],
        true
    ),
    kind!(
        "WorkloadEntry",
        "networking.istio.io",
        "workloadentries",
        "workloadentry",
        ["we"],
        true
    ),
    kind!(
        "WorkloadGroup",
        "networking.istio.io",
        "workloadgroups",
        "workloadgroup",
        ["wg"],
        true
    ),
    kind!(
        "EnvoyFilter",
        "networking.istio.io",
        "envoyfilters",
        "envoyfilter",
        [],
        true
    ),
    kind!(
        "ProxyConfig",
        "networking.istio.io",
        "proxyconfigs",
        "proxyconfig",
        [],
        true
    ),
    kind!(
        "WasmPlugin",
        "extensions.istio.io",
        "wasmplugins",
        "wasmplugin",
        [],
        true
    ),
    kind!(
        "TrafficExtension",
        "extensions.istio.io",
        "trafficextensions",
        "trafficextension",
        [],
        true
    ),
    kind!(
        "AuthorizationPolicy",
        "security.istio.io",
        "authorizationpolicies",
        "authorizationpolicy",
        ["ap"],
        true
    ),
    kind!(
        "PeerAuthentication",
        "security.istio.io",
        "peerauthentications",
        "peerauthentication",
        ["pa"],
        true
    ),
    kind!(
        "RequestAuthentication",
        "security.istio.io",
        "requestauthentications",
        "requestauthentication",
        ["ra"],
        true
    ),
    kind!(
        "Telemetry",
        "telemetry.istio.io",
        "telemetries",
        "telemetry",
        ["telemetry"],
        true
    ),
    // The Gateway API: after Istio's kinds, so that `gateway` and `gw` stay Istio's
    // Gateway, as kubectl resolves them with both installed (`gtw` or
    // `gateways.gateway.networking.k8s.io` name this one).
    kind!(
        "GatewayClass",
        "gateway.networking.k8s.io",
        "gatewayclasses",
        "gatewayclass",
        ["gc"],
        false
    ),
    kind!(
        "Gateway",
        "gateway.networking.k8s.io",
        "gateways",
        "gateway",
        ["gtw"],
        true
    ),
    kind!(
        "GRPCRoute",
        "gateway.networking.k8s.io",
        "grpcroutes",
        "grpcroute",
        [],
        true
    ),
    kind!(
        "HTTPRoute",
        "gateway.networking.k8s.io",
        "httproutes",
        "httproute",
        [],
        true
    ),
    kind!(
        "ReferenceGrant",
        "gateway.networking.k8s.io",
        "referencegrants",
        "referencegrant",
        ["refgrant"],
        true
    ),
    kind!(
        "TCPRoute",
        "gateway.networking.k8s.io",
        "tcproutes",
        "tcproute",
        [],
        true
    ),
];

/// What kubectl's `all` category covers of the types skein has.
const ALL: &[&str] = &["Pod", "Service", "Deployment"];

/// A type name kubectl would not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server doesn't have a resource type \"{0}\"")]
pub struct UnknownType(pub String);

/// The type for a kind string (`VirtualService`).
pub fn by_kind(kind: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.kind == kind)
}

/// The type of an object of `kind` and `api_version` (`gateway.networking.k8s.io/v1`): the
/// group tells Istio's Gateway from the Gateway API's.
pub fn by_api(kind: &str, api_version: &str) -> Option<&'static KindInfo> {
    let group = api_version.split_once('/').map_or("", |(g, _)| g);
    KINDS
        .iter()
        .find(|k| k.kind == kind && k.group == group)
        .or_else(|| by_kind(kind))
}

/// Resolves one name as kubectl does: plural, singular, short name or kind (any case),
/// optionally followed by `.group` or a prefix of `.version.group`.
pub fn resolve_one(name: &str) -> Result<&'static KindInfo, UnknownType> {
    let lower = name.to_ascii_lowercase();
    let (base, group) = match lower.split_once('.') {
        Some((b, g)) => (b, Some(g)),
        None => (lower.as_str(), None),
    };
    KINDS
        .iter()
        .find(|k| {
            let named = k.plural == base
                || k.singular == base
                || k.short.contains(&base)
                || k.kind.eq_ignore_ascii_case(base);
            let grouped = match group {
                None => true,
                // `virtualservices.networking.istio.io` or `virtualservices.v1.networking.istio.io`.
                Some(g) => {
                    g == k.group
                        || g.split_once('.')
                            .is_some_and(|(v, rest)| v.starts_with('v') && rest == k.group)
                }
            };
            named && grouped
        })
        .ok_or_else(|| UnknownType(name.to_string()))
}

/// Resolves kubectl's `KIND[,KIND...]` argument, `all` included, without duplicates.
pub fn resolve(arg: &str) -> Result<Vec<&'static KindInfo>, UnknownType> {
    let mut out: Vec<&'static KindInfo> = Vec::new();
    for part in arg.split(',').filter(|p| !p.is_empty()) {
        let found: Vec<&'static KindInfo> = if part.eq_ignore_ascii_case("all") {
            ALL.iter().filter_map(|k| by_kind(k)).collect()
        } else {
            vec![resolve_one(part)?]
        };
        for k in found {
            if !out.contains(&k) {
                out.push(k);
            }
        }
    }
    if out.is_empty() {
        return Err(UnknownType(arg.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_apis_gateway_is_named_by_its_group() {
        for name in ["gateway", "gw", "gateways.networking.istio.io"] {
            assert_eq!(
                resolve_one(name).unwrap().group,
                "networking.istio.io",
                "{name}"
            );
        }
        for name in [
            "gtw",
            "gateways.gateway.networking.k8s.io",
            "gateway.v1.gateway.networking.k8s.io",
        ] {
            assert_eq!(
                resolve_one(name).unwrap().group,
                "gateway.networking.k8s.io",
                "{name}"
            );
        }
        assert_eq!(
            by_api("Gateway", "gateway.networking.k8s.io/v1beta1")
                .unwrap()
                .group,
            "gateway.networking.k8s.io"
        );
        assert_eq!(
            by_api("Gateway", "networking.istio.io/v1").unwrap().group,
            "networking.istio.io"
        );
    }

    #[test]
    fn kubectl_names_resolve() {
        for (name, kind) in [
            ("vs", "VirtualService"),
            ("virtualservice", "VirtualService"),
            ("VirtualServices", "VirtualService"),
            ("virtualservices.networking.istio.io", "VirtualService"),
            (
                "virtualservices.v1beta1.networking.istio.io",
                "VirtualService",
            ),
            ("dr", "DestinationRule"),
            ("gw", "Gateway"),
            ("httproutes", "HTTPRoute"),
            ("httproute.gateway.networking.k8s.io", "HTTPRoute"),
            ("grpcroutes", "GRPCRoute"),
            ("tcproutes", "TCPRoute"),
            ("refgrant", "ReferenceGrant"),
            ("gc", "GatewayClass"),
            ("se", "ServiceEntry"),
            ("ap", "AuthorizationPolicy"),
            ("pa", "PeerAuthentication"),
            ("ra", "RequestAuthentication"),
            ("po", "Pod"),
            ("svc", "Service"),
            ("deploy", "Deployment"),
            ("deployments.apps", "Deployment"),
            ("ro", "Rollout"),
            ("at", "AnalysisTemplate"),
            ("cat", "ClusterAnalysisTemplate"),
            ("ar", "AnalysisRun"),
            ("analysisruns.argoproj.io", "AnalysisRun"),
            ("cm", "ConfigMap"),
            ("ns", "Namespace"),
            ("sa", "ServiceAccount"),
            ("telemetry", "Telemetry"),
            ("ing", "Ingress"),
            ("app", "Application"),
            ("apps", "Application"),
            ("applications.argoproj.io", "Application"),
            ("appproj", "AppProject"),
            ("wg", "WorkloadGroup"),
            ("sts", "StatefulSet"),
            ("cj", "CronJob"),
            ("crd", "CustomResourceDefinition"),
            ("clusterroles.rbac.authorization.k8s.io", "ClusterRole"),
            ("netpol", "NetworkPolicy"),
            ("envoyfilter", "EnvoyFilter"),
            ("wasmplugins.extensions.istio.io", "WasmPlugin"),
            ("proxyconfigs", "ProxyConfig"),
            ("trafficextension", "TrafficExtension"),
        ] {
            assert_eq!(resolve_one(name).map(|k| k.kind), Ok(kind), "{name}");
        }
    }

    #[test]
    fn unknown_names_and_wrong_groups_are_refused_as_kubectl_does() {
        assert_eq!(
            resolve("foo").unwrap_err().to_string(),
            "the server doesn't have a resource type \"foo\""
        );
        assert!(resolve_one("virtualservices.apps").is_err());
        assert!(resolve(",").is_err());
    }

    #[test]
    fn lists_and_all_expand_without_duplicates() {
        let kinds: Vec<_> = resolve("vs,dr,vs")
            .unwrap()
            .iter()
            .map(|k| k.kind)
            .collect();
        assert_eq!(kinds, ["VirtualService", "DestinationRule"]);
        let kinds: Vec<_> = resolve("all,svc").unwrap().iter().map(|k| k.kind).collect();
        assert_eq!(kinds, ["Pod", "Service", "Deployment"]);
    }

    #[test]
    fn names_print_as_kubectl_prints_them() {
        let vs = resolve_one("vs").unwrap();
        assert_eq!(vs.resource(), "virtualservices.networking.istio.io");
        assert_eq!(
            vs.qualified_singular(),
            "virtualservice.networking.istio.io"
        );
        let po = resolve_one("po").unwrap();
        assert_eq!(po.resource(), "pods");
        assert_eq!(po.qualified_singular(), "pod");
    }
}
