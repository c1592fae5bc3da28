//! Cluster DNS's part: a hosts file of every Service's names and cluster IP (what
//! `SKEIN_HOSTS` points a container at), and for each pod with a sidecar its own, which
//! points opaque-TCP Services at the sidecar's listeners.

use crate::RuntimeError;
use crate::plan::{Plan, PodPlan, ServicePlan, dns_names};
use crate::run::state::StateDir;

/// The cluster DNS stand-in: every Service's names, in /etc/hosts format.
pub fn write_hosts(state: &StateDir, plan: &Plan) -> Result<(), RuntimeError> {
    let mut text =
        String::from("# Written by skein up: Service names -> their loopback cluster IPs.\n");
    for (ip, names) in &plan.hosts {
        text.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    }
    let path = state.hosts_file();
    std::fs::write(&path, &text).map_err(|e| RuntimeError::io(&path, e))?;

    for pod in &plan.pods {
        write_pod_hosts(state, plan, pod)?;
    }
    Ok(())
}

/// The hosts file of a pod with a sidecar: it reaches opaque-TCP Services through its
/// sidecar's listeners. Nothing for a pod without one.
pub fn write_pod_hosts(state: &StateDir, plan: &Plan, pod: &PodPlan) -> Result<(), RuntimeError> {
    let opaque: Vec<&ServicePlan> = plan
        .services
        .iter()
        .filter(|s| s.ports.iter().any(|p| p.opaque))
        .collect();
    {
        let Some(out) = pod.proxy.as_ref().and_then(|p| p.outbound_ip) else {
            return Ok(());
        };
        let mut text = format!(
            "# Written by skein up for pod {}: opaque-TCP Services -> its sidecar, the rest -> cluster IPs.\n",
            pod.name
        );
        for s in &opaque {
            let names = dns_names(&s.name, &s.namespace);
            // A short name means the pod's own namespace, as cluster DNS search paths do.
            let names: Vec<&String> = names
                .iter()
                .filter(|n| s.namespace == pod.namespace || n.contains('.'))
                .collect();
            text.push_str(&format!(
                "{out}\t{}\n",
                names
                    .iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        for (ip, names) in &plan.hosts {
            text.push_str(&format!("{ip}\t{}\n", names.join(" ")));
        }
        let path = state.pod_hosts_file(&pod.name);
        if let Some(dir) = path.parent() {
            crate::fs::private_dir(dir).map_err(|e| RuntimeError::io(dir, e))?;
        }
        std::fs::write(&path, text).map_err(|e| RuntimeError::io(&path, e))?;
    }
    Ok(())
}
