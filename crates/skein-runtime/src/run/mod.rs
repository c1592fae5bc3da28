pub(crate) mod logs;
pub(crate) mod process;
pub(crate) mod state;
pub(crate) mod status;
pub(crate) mod supervisor;
