//! The manifests' database, run locally: which mode (an SQLite file per database Service, or
//! the MySQL workload as a local MariaDB), and in SQLite mode the database URLs that become
//! file URLs.

use super::DatabaseMode;
use super::manifests::{ServiceDef, Workload};
use crate::run::state::StateDir;

/// `--database`, else the database workloads' `skein.io/local-database: mysql` annotation,
/// else SQLite.
pub(super) fn mode(explicit: Option<DatabaseMode>, db_workloads: &[&Workload<'_>]) -> DatabaseMode {
    explicit.unwrap_or_else(|| {
        if db_workloads.iter().any(|w| {
            w.annotation("skein.io/local-database")
                .is_some_and(|v| v.eq_ignore_ascii_case("mysql"))
        }) {
            DatabaseMode::Mysql
        } else {
            DatabaseMode::Sqlite
        }
    })
}

/// The Services that select a database workload.
pub(super) fn services<'a>(
    services: &'a [ServiceDef],
    db_workloads: &[&Workload<'_>],
) -> Vec<&'a ServiceDef> {
    services
        .iter()
        .filter(|s| {
            db_workloads
                .iter()
                .any(|w| w.namespace == s.namespace && s.selects(&w.pod_labels))
        })
        .collect()
}

/// Where the data lives: the SQLite files, or the MariaDB Services' addresses.
pub(super) fn location(
    mode: DatabaseMode,
    state: &StateDir,
    db_services: &[&ServiceDef],
) -> String {
    match mode {
        DatabaseMode::Sqlite => state.data().join("*.db").display().to_string(),
        DatabaseMode::Mysql => db_services
            .iter()
            .map(|s| {
                format!(
                    "{}.{}:{}",
                    s.name,
                    s.namespace,
                    s.ports.first().map_or(3306, |p| p.port)
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// In SQLite mode a `mysql://user:pw@mysql:3306/blog` pointing at the database's service
/// becomes `sqlite://STATE/data/mysql.db`.
pub(super) fn sqlite_stand_in(
    value: &str,
    ns: &str,
    state: &StateDir,
    db_services: &[&ServiceDef],
) -> Option<String> {
    let rest = value
        .strip_prefix("mysql://")
        .or_else(|| value.strip_prefix("mariadb://"))?;
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = host_port.split(':').next()?;
    let svc = db_services.iter().find(|s| s.is_named_by(host, ns))?;
    Some(format!(
        "sqlite://{}",
        state.data().join(format!("{}.db", svc.name)).display()
    ))
}
