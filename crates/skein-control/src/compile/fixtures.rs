//! Test fixtures: the blog example and a registry of its pods.

use skein_api::Manifests;

use crate::registry::{Pod, ProxyInfo, Registry};

pub(crate) fn example() -> Manifests {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/blog-system");
    skein_api::load_path(&dir).expect("the example loads")
}

pub(crate) fn pod(
    name: &str,
    labels: &[(&str, &str)],
    ip: &str,
    port: (&str, u16),
    mode: &str,
) -> Pod {
    Pod {
        name: name.into(),
        namespace: "blog-system".into(),
        workload: name.rsplit_once('-').map_or(name, |x| x.0).into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        service_account: "default".into(),
        ip: ip.into(),
        port_names: [(port.0.to_string(), port.1)].into(),
        ready: true,
        proxy: (!mode.is_empty()).then(|| ProxyInfo {
            mode: mode.into(),
            outbound_ip: Some(ip.replace(".1.", ".4.")),
        }),
        ..Pod::default()
    }
}

pub(crate) fn registry() -> Registry {
    Registry {
        pods: vec![
            pod(
                "web-1",
                &[("app", "web"), ("rollouts-pod-template-hash", "5d8f7c9b4")],
                "127.9.1.1",
                ("http", 80),
                "sidecar",
            ),
            pod(
                "web-2",
                &[("app", "web"), ("rollouts-pod-template-hash", "5d8f7c9b4")],
                "127.9.1.2",
                ("http", 80),
                "sidecar",
            ),
            pod(
                "was-1",
                &[("app", "was"), ("version", "v1")],
                "127.9.1.3",
                ("http", 8080),
                "sidecar",
            ),
            pod(
                "was-2",
                &[("app", "was"), ("version", "v1")],
                "127.9.1.4",
                ("http", 8080),
                "sidecar",
            ),
            pod(
                "mysql-1",
                &[("app", "mysql")],
                "127.9.1.5",
                ("mysql", 3306),
                "",
            ),
            Pod {
                namespace: "istio-system".into(),
                ..pod(
                    "istio-ingressgateway-1",
                    &[("istio", "ingressgateway"), ("app", "istio-ingressgateway")],
                    "127.0.0.1",
                    ("http", 8080),
                    "gateway",
                )
            },
        ],
    }
}
