//! Turn execution.
