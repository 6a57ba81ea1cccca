//! sluice collector
