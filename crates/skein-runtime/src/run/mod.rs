pub(crate) mod logs;
pub(crate) mod process;
pub(crate) mod requests;
pub(crate) mod restart;
pub(crate) mod state;
pub(crate) mod status;
pub(crate) mod supervisor;
