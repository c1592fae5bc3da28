pub mod process;
pub mod state;
pub mod status;
pub mod supervisor;
