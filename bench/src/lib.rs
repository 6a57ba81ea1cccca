//! Benchmark tools (under construction).
