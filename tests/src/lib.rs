//! Test support for sluice end-to-end tests (under construction).
