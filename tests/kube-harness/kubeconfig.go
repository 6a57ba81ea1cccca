// Kubeconfigs and the ready marker.
//
// Invariants: kubeconfigs embed their certificates and keys (they stay
// usable when copied); the ready marker is written atomically (tmp + rename)
// and only after /readyz answers 200 and the `default` namespace exists, so
// a reader that sees the file may use the server at once.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// writeKubeconfig writes a single-context kubeconfig for one client identity.
func writeKubeconfig(path, server, caFile, certFile, keyFile, user string) error {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	cert, err := os.ReadFile(certFile)
	if err != nil {
		return err
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kube-harness"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
	cfg.Contexts["kube-harness"] = &clientcmdapi.Context{Cluster: "kube-harness", AuthInfo: user, Namespace: "default"}
	cfg.CurrentContext = "kube-harness"
	return clientcmd.WriteToFile(*cfg, path)
}

// serverOf returns the server URL of the harness's admin kubeconfig.
func serverOf(kubeconfig string) (string, error) {
	cfg, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		return "", err
	}
	cluster, ok := cfg.Clusters["kube-harness"]
	if !ok {
		return "", fmt.Errorf("%s has no cluster named kube-harness", kubeconfig)
	}
	return cluster.Server, nil
}

// readyInfo is the JSON content of the ready marker.
type readyInfo struct {
	Server     string `json:"server"`
	Kubeconfig string `json:"kubeconfig"`
	Pid        int    `json:"pid"`
	Version    string `json:"version"`
	// With --node-ip: the kubelet's kubeconfig (CN=system:node:<name>).
	KubeletKubeconfig string `json:"kubelet_kubeconfig,omitempty"`
}

// markReadyWhenServing polls the apiserver as the admin and writes the ready
// marker once it serves; it gives up when ctx ends (the harness is stopping).
func markReadyWhenServing(ctx context.Context, f pkiFiles, info readyInfo, readyFile string) error {
	client, err := adminHTTPClient(f)
	if err != nil {
		return err
	}
	// Poll until both checks pass: readiness alone does not guarantee that
	// the bootstrap controller has created the default namespace yet.
	for {
		if ok200(ctx, client, info.Server+"/readyz") && ok200(ctx, client, info.Server+"/api/v1/namespaces/default") {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	data, err := json.Marshal(info)
	if err != nil {
		return err
	}
	tmp := readyFile + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, readyFile); err != nil {
		return err
	}
	becameReady.Store(true)
	return nil
}

// becameReady records that the ready marker was written.
var becameReady atomic.Bool

func adminHTTPClient(f pkiFiles) (*http.Client, error) {
	caPEM, err := os.ReadFile(f.caCert)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no certificate in " + f.caCert)
	}
	admin, err := tls.LoadX509KeyPair(f.adminCert, f.adminKey)
	if err != nil {
		return nil, err
	}
	tlsCfg := &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{admin}, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}, Timeout: 5 * time.Second}, nil
}

func ok200(ctx context.Context, client *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
