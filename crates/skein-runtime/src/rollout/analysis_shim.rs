//! A stand-in for the analysis engine (`crate::analysis`), with its API, until it is part of
//! this crate: every run succeeds at once. The controller calls only these signatures, so
//! the engine replaces this module without other changes.

use std::sync::Arc;

pub struct AnalysisRequest<'a> {
    pub manifests: &'a skein_api::Manifests,
    pub namespace: &'a str,
    /// (templateName, clusterScope)
    pub templates: &'a [(String, bool)],
    pub args: &'a [(String, String)],
    pub run_name: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AnalysisError(pub String);

pub struct PreparedAnalysis {
    run_name: String,
    templates: Vec<String>,
}

pub trait Resolve: Send + Sync {
    fn resolve(&self, host: &str, port: u16) -> Option<std::net::SocketAddr>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnalysisPhase {
    Pending,
    Running,
    Successful,
    Failed,
    Error,
    Inconclusive,
}

pub struct AnalysisHandle {
    run_name: String,
    templates: Vec<String>,
}

pub fn prepare(req: AnalysisRequest<'_>) -> Result<PreparedAnalysis, AnalysisError> {
    Ok(PreparedAnalysis {
        run_name: req.run_name,
        templates: req.templates.iter().map(|(t, _)| t.clone()).collect(),
    })
}

pub fn start(prepared: PreparedAnalysis, _resolver: Arc<dyn Resolve>) -> AnalysisHandle {
    AnalysisHandle {
        run_name: prepared.run_name,
        templates: prepared.templates,
    }
}

impl AnalysisHandle {
    pub fn phase(&self) -> AnalysisPhase {
        AnalysisPhase::Successful
    }
    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({"phase": "Successful", "runName": self.run_name, "templates": self.templates})
    }
    pub fn message(&self) -> String {
        String::new()
    }
    pub async fn finished(&self) -> AnalysisPhase {
        AnalysisPhase::Successful
    }
    pub fn terminate(&self) {}
}
