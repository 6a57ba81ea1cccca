//! Driver for the kube-apiserver test harness (under construction).
