//! Drains: encoders and transports.

pub mod json;
pub mod syslog;
pub mod template;
pub mod text;
