//! How a harness is started beyond the defaults.
//!
//! Invariants: the defaults are a bare apiserver with the harness's own
//! flags; options only add (extra flags come last, controllers run in a
//! child process of the harness).

/// The controllers that make owner references and namespace deletion work.
pub const GC_AND_NAMESPACE_CONTROLLERS: &[&str] = &["garbage-collector-controller", "namespace-controller"];

/// Options of [`crate::KubeHarness::start_with`].
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Extra kube-apiserver flags, e.g. `--max-requests-inflight=2000` for a
    /// benchmark or `--feature-gates=…`, passed after the harness's own (for
    /// a single-valued flag the last one wins).
    pub apiserver_flags: Vec<String>,
    /// kube-controller-manager controllers to run (none by default: the
    /// harness is then a bare apiserver), e.g. [`GC_AND_NAMESPACE_CONTROLLERS`].
    pub controllers: Vec<String>,
    /// Keep the directory when the server stops (it is still removed when the
    /// [`crate::KubeHarness`] drops), so [`crate::KubeHarness::pause`] and
    /// [`crate::KubeHarness::resume`] can stop the API server and start it
    /// again with the same certificates, etcd data and port.
    pub restartable: bool,
    /// Prepare the control plane for a real node at this address (see
    /// [`crate::KubeNode`], which sets it): the apiserver serves on it, a
    /// kube-scheduler runs, the kubelet's kubeconfig is written.
    pub node_ip: Option<String>,
}

impl StartOptions {
    /// Options running these controllers.
    pub fn with_controllers(controllers: &[&str]) -> Self {
        Self {
            controllers: controllers.iter().map(|c| (*c).to_owned()).collect(),
            ..Self::default()
        }
    }
}
