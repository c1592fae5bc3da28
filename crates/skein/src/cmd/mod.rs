pub mod analyze;
pub mod down;
pub mod logs;
pub mod status;
pub mod up;
