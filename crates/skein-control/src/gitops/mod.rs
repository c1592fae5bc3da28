//! GitOps with Argo CD's `Application`: the config in force is a commit of a local git
//! repository.
//!
//! - `git`: the `git` CLI on a local repository (bounded reads, no hooks, no network).
//! - `drift`: comparing live objects with git's, with `ignoreDifferences`.
//! - `state`: the Application, the exported commits and the status in the state directory.
//! - `health`: Argo CD's health from the runtime's pods.
//! - `controller`: the loop the control plane runs: poll, sync, compare, self-heal, prune.

pub mod controller;
pub mod drift;
pub mod git;
pub mod health;
pub mod state;

pub use state::{AppStatus, Config, Layout};
