//! kubectl's resource model for `get`, `describe`, `delete` and `diff`: names of types,
//! objects, JSONPath, label selectors and the printers.

pub mod application;
pub mod describe;
pub mod jsonpath;
pub mod kinds;
pub mod objects;
pub mod print;
pub mod selector;
pub mod udiff;
