//! sluice operator (under construction).
