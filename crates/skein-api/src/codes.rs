//! Every analyzer code in one table: Istio's (`IST....`, with the names, levels and wording of
//! istioctl's `pkg/config/analysis/msg/messages.yaml`) and skein's own (`SKN....`, for the
//! pitfalls Istio's analyzers do not catch; each message says the fix). The README of the
//! analyzer, `docs/analyze.md`, lists the same table.

use std::fmt;
use std::str::FromStr;

/// How bad a finding is, as istioctl's levels: `Error`, `Warning`, `Info`. Ordered from the
/// most to the least severe, so `level <= threshold` means "at or above the threshold".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// Kubernetes or istiod would reject the object, or it cannot work as written.
    Error,
    /// Accepted, but probably not what was meant.
    Warning,
    /// Worth knowing; nothing is wrong.
    Info,
}

impl Severity {
    /// istioctl's spelling: `Error`, `Warning`, `Info`.
    pub fn istio_name(self) -> &'static str {
        match self {
            Severity::Error => "Error",
            Severity::Warning => "Warning",
            Severity::Info => "Info",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        })
    }
}

/// A level name istioctl's `--failure-threshold` and `--output-threshold` accept is not one
/// of `Error`, `Warning`, `Info`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown level {0:?}: expected one of Error, Warning, Info")]
pub struct UnknownSeverity(String);

impl FromStr for Severity {
    type Err = UnknownSeverity;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Ok(Severity::Error),
            "warning" | "warn" => Ok(Severity::Warning),
            "info" => Ok(Severity::Info),
            _ => Err(UnknownSeverity(s.to_string())),
        }
    }
}

macro_rules! codes {
    ($($variant:ident = $id:literal, $name:literal, $level:ident, $what:literal;)*) => {
        /// An analyzer code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $(#[doc = $what] $variant,)*
        }

        impl Code {
            /// Every code, in order.
            pub const ALL: &[Code] = &[$(Code::$variant,)*];

            /// `IST0101`.
            pub fn id(self) -> &'static str {
                match self { $(Code::$variant => $id,)* }
            }

            /// `ReferencedResourceNotFound`.
            pub fn name(self) -> &'static str {
                match self { $(Code::$variant => $name,)* }
            }

            /// The level findings of this code have unless the check says otherwise.
            pub fn level(self) -> Severity {
                match self { $(Code::$variant => Severity::$level,)* }
            }

            /// What the code is about, one line.
            pub fn description(self) -> &'static str {
                match self { $(Code::$variant => $what,)* }
            }
        }
    };
}

codes! {
    Ist0101 = "IST0101", "ReferencedResourceNotFound", Error,
        "A resource being referenced does not exist.";
    Ist0102 = "IST0102", "NamespaceNotInjected", Info,
        "A namespace is not enabled for Istio injection.";
    Ist0106 = "IST0106", "SchemaValidationError", Error,
        "The resource has a schema validation error.";
    Ist0108 = "IST0108", "UnknownAnnotation", Warning,
        "An Istio annotation is not recognized for any kind of resource.";
    Ist0109 = "IST0109", "ConflictingMeshGatewayVirtualServiceHosts", Error,
        "Conflicting hosts on VirtualServices associated with mesh gateway.";
    Ist0110 = "IST0110", "ConflictingSidecarWorkloadSelectors", Error,
        "A Sidecar resource selects the same workloads as another Sidecar resource.";
    Ist0111 = "IST0111", "MultipleSidecarsWithoutWorkloadSelectors", Error,
        "More than one sidecar resource in a namespace has no workload selector.";
    Ist0112 = "IST0112", "VirtualServiceDestinationPortSelectorRequired", Error,
        "A VirtualService routes to a service with more than one port exposed, but does not specify which to use.";
    Ist0113 = "IST0113", "MTLSPolicyConflict", Error,
        "A DestinationRule and Policy are in conflict with regards to mTLS.";
    Ist0118 = "IST0118", "PortNameIsNotUnderNamingConvention", Info,
        "Port name is not under naming convention. Protocol detection is applied to the port.";
    Ist0127 = "IST0127", "NoMatchingWorkloadsFound", Warning,
        "There aren't workloads matching the resource labels.";
    Ist0128 = "IST0128", "NoServerCertificateVerificationDestinationLevel", Warning,
        "No caCertificates are set in DestinationRule, this results in no verification of presented server certificate.";
    Ist0129 = "IST0129", "NoServerCertificateVerificationPortLevel", Warning,
        "No caCertificates are set in DestinationRule, this results in no verification of presented server certificate for traffic to a given port.";
    Ist0130 = "IST0130", "VirtualServiceUnreachableRule", Warning,
        "A VirtualService rule will never be used because a previous rule uses the same match.";
    Ist0131 = "IST0131", "VirtualServiceIneffectiveMatch", Info,
        "A VirtualService rule match duplicates a match in a previous rule.";
    Ist0132 = "IST0132", "VirtualServiceHostNotFoundInGateway", Warning,
        "Host defined in VirtualService not found in Gateway.";
    Ist0133 = "IST0133", "SchemaWarning", Warning,
        "The resource has a schema validation warning.";
    Ist0145 = "IST0145", "ConflictingGateways", Error,
        "Gateway should not have the same selector, port and matched hosts of server.";
    Ist0162 = "IST0162", "GatewayPortNotDefinedOnService", Warning,
        "Gateway port not exposed by service.";
    Ist0173 = "IST0173", "DestinationRuleSubsetNotSelectPods", Warning,
        "A subset of a DestinationRule selects none of the host's pods.";
    Skn0001 = "SKN0001", "PortLevelMtlsWithoutSelector", Error,
        "A PeerAuthentication sets portLevelMtls without a workload selector.";
    Skn0002 = "SKN0002", "StrictMtlsOutOfMeshCaller", Error,
        "STRICT mTLS on a workload a client outside the mesh calls.";
    Skn0003 = "SKN0003", "AuthorizationOutOfMeshCaller", Error,
        "An ALLOW policy matches identities a caller outside the mesh does not have.";
    Skn0004 = "SKN0004", "FaultNotSeenByClient", Warning,
        "A fault is injected on a hop whose delay or error the end user does not see.";
    Skn0005 = "SKN0005", "HostToPassthrough", Warning,
        "A host that resolves to no Service or ServiceEntry: traffic goes to PassthroughCluster.";
    Skn0006 = "SKN0006", "MirrorOfWrites", Warning,
        "A route mirrors write methods to a subset that shares the primary's backends.";
    Skn0007 = "SKN0007", "SharedPrincipal", Warning,
        "An AuthorizationPolicy allows a principal that several workloads run as.";
    Skn0008 = "SKN0008", "RetriesOnNonIdempotent", Warning,
        "A route that carries non-idempotent methods retries on errors after the request was sent.";
    Skn0009 = "SKN0009", "RolloutManagedWeights", Warning,
        "The manifests set canary weights on a VirtualService an Argo Rollout manages.";
    Skn0030 = "SKN0030", "GatewayApiRefNotResolved", Warning,
        "A Gateway API route's parent or backend does not resolve (its status reason says why).";
    Skn0301 = "SKN0301", "NotApplied", Warning,
        "An object skein loads and keeps but does not apply.";
}

impl Code {
    /// istio.io's page for an Istio code; skein's own codes are documented in skein's
    /// `docs/analyze.md`.
    pub fn documentation_url(self) -> String {
        let id = self.id();
        if id.starts_with("IST") {
            format!(
                "https://istio.io/v1.26/docs/reference/config/analysis/{}/",
                id.to_ascii_lowercase()
            )
        } else {
            format!("docs/analyze.md#{}", id.to_ascii_lowercase())
        }
    }

    /// Whether an error of this code makes the config refused (by `skein up`, the control
    /// plane and `skein apply`): what Kubernetes or istiod would refuse, and references that
    /// cannot route. The other analyzers' errors, as istioctl's, are reported and the config
    /// is taken, since Istio takes it too.
    pub fn refuses(self) -> bool {
        matches!(
            self,
            Code::Ist0101 | Code::Ist0106 | Code::Ist0173 | Code::Skn0001
        )
    }

    /// The code whose id is `s` (`IST0101`, case-insensitive).
    pub fn from_id(s: &str) -> Option<Code> {
        Code::ALL
            .iter()
            .copied()
            .find(|c| c.id().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_look_up() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.id()), "{} twice", c.id());
            assert_eq!(Code::from_id(&c.id().to_ascii_lowercase()), Some(*c));
        }
        assert_eq!(
            Code::Ist0101.documentation_url(),
            "https://istio.io/v1.26/docs/reference/config/analysis/ist0101/"
        );
        assert!("Warn".parse::<Severity>().unwrap() == Severity::Warning);
        assert!("bogus".parse::<Severity>().is_err());
    }

    /// docs/analyze.md is the one table users read: every code, with its name and level.
    #[test]
    fn the_documented_table_lists_every_code() {
        let doc = include_str!("../../../docs/analyze.md");
        let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with("| <a id=")).collect();
        assert_eq!(rows.len(), Code::ALL.len(), "one row per code");
        for (row, c) in rows.iter().zip(Code::ALL) {
            let want = format!(
                "| <a id=\"{}\"></a>{} | {} | {:?} |",
                c.id().to_ascii_lowercase(),
                c.id(),
                c.name(),
                c.level()
            );
            assert!(row.starts_with(&want), "{row}\nshould start with {want}");
        }
    }

    #[test]
    fn levels_order_from_most_severe() {
        assert!(Severity::Error < Severity::Warning && Severity::Warning < Severity::Info);
    }
}
