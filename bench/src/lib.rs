//! sluice's benchmark tools, used by `bench/collector.sh`:
//! * [`workload`]: deterministic Docker json-file workloads with a marker in every line;
//! * [`receiver`]: the counting TCP syslog receiver (octet-counted and newline framing);
//! * [`procstat`]: CPU seconds and peak RSS of a shipper's process tree from `/proc`;
//! * [`results`]: result rows and the comparison table.
//!
//! Binaries: `gen-workload`, `count-receiver`, `bench-run` (one shipper, one workload, one row),
//! `bench-report` (the table) and `standin-collector` (a naive shipper used to validate the
//! harness while `sluice-collector` is not runnable).

pub mod procstat;
pub mod receiver;
pub mod results;
pub mod workload;
