//! Drains: encoders and transports.
