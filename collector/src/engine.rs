//! The tail engine.
