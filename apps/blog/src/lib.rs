//! Placeholder; filled in by the crate's first real change.
