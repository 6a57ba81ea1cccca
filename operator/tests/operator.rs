//! The operator against a real kube-apiserver + etcd (the project's harness, shared by all tests
//! of this binary). Each test works in namespaces of its own and runs its own operator(s)
//! in-process, scoped to those namespaces, so tests run in parallel without seeing each other.

#[path = "operator/support.rs"]
mod support;

#[path = "operator/certs.rs"]
mod certs;
#[path = "operator/health.rs"]
mod health;
#[path = "operator/isolation.rs"]
mod isolation;
#[path = "operator/leader.rs"]
mod leader;
#[path = "operator/logs.rs"]
mod logs;
#[path = "operator/quiet.rs"]
mod quiet;
#[path = "operator/rendering.rs"]
mod rendering;
#[path = "operator/retry.rs"]
mod retry;
#[path = "operator/schema.rs"]
mod schema;
#[path = "operator/secrets.rs"]
mod secrets;
#[path = "operator/size.rs"]
mod size;
#[path = "operator/status.rs"]
mod status;
#[path = "operator/tenancy.rs"]
mod tenancy;
