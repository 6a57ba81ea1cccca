// Control-plane side of a real node (`up --node-ip IP`): the kubelet itself,
// containerd, the bridge and the cgroups are run by the caller (the Rust
// driver, tests/kube-harness/src/node.rs).
//
// Invariants: the apiserver then serves on IP only (pods reach it there
// through the `kubernetes` Service DNAT; the host uses the same address), it
// advertises IP, the ServiceAccount admission plugin is on (the
// controller-manager creates `default` ServiceAccounts), it reaches the
// kubelet with a system:masters client certificate, and DIR/kubelet.kubeconfig
// holds the node's identity CN=system:node:<name>, O=system:nodes, which the
// Node authorizer restricts to that node's objects.
package main

import (
	"net"
	"path/filepath"
	"strings"
)

// prepareNode mints the node's certificates and kubeconfig and returns the
// apiserver flags adjusted for a node.
func prepareNode(f pkiFiles, o upOptions, server string, flags []string) ([]string, error) {
	if net.ParseIP(o.nodeIP) == nil {
		return nil, &net.ParseError{Type: "IP address", Text: o.nodeIP}
	}
	ca, caKey, err := loadCA(f)
	if err != nil {
		return nil, err
	}
	pki := filepath.Dir(f.caCert)
	kubeletCert, kubeletKey := filepath.Join(pki, "kubelet-client.crt"), filepath.Join(pki, "kubelet-client.key")
	if err := mintClient(kubeletCert, kubeletKey, "system:node:"+o.nodeName, []string{"system:nodes"}, ca, caKey); err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(o.dir, "kubelet.kubeconfig")
	if err := writeKubeconfig(kubeconfig, server, f.caCert, kubeletCert, kubeletKey, "system:node:"+o.nodeName); err != nil {
		return nil, err
	}
	toKubeletCert, toKubeletKey := filepath.Join(pki, "apiserver-kubelet-client.crt"), filepath.Join(pki, "apiserver-kubelet-client.key")
	if err := mintClient(toKubeletCert, toKubeletKey, "kube-apiserver-kubelet-client", []string{"system:masters"}, ca, caKey); err != nil {
		return nil, err
	}
	var out []string
	for _, fl := range flags {
		switch {
		case strings.HasPrefix(fl, "--bind-address="):
			fl = "--bind-address=" + o.nodeIP
		case strings.HasPrefix(fl, "--advertise-address="):
			fl = "--advertise-address=" + o.nodeIP
		case strings.HasPrefix(fl, "--service-account-issuer="):
			fl = "--service-account-issuer=" + server
		case fl == "--disable-admission-plugins=ServiceAccount":
			continue
		}
		out = append(out, fl)
	}
	return append(out,
		"--kubelet-client-certificate="+toKubeletCert,
		"--kubelet-client-key="+toKubeletKey,
		"--kubelet-preferred-address-types=InternalIP",
	), nil
}
