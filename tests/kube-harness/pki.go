// Throw-away PKI for the harness: one CA that signs the serving certificate
// and every client certificate, plus the service-account signing key.
//
// Invariants: all keys are ECDSA P-256 (fast to generate, accepted by Go and
// by rustls); certificates are valid from one hour in the past (clock skew)
// for ten years; an existing PKI in the directory is reused, so a kubeconfig
// written earlier for the same --dir stays valid across restarts.
package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pkiFiles names the files of the PKI inside <dir>/pki.
type pkiFiles struct {
	caCert, caKey         string // the CA (--client-ca-file, kubeconfig CA, signs minted users)
	serverCert, serverKey string // kube-apiserver serving certificate
	adminCert, adminKey   string // CN=kube-harness-admin, O=system:masters
	saKey                 string // service-account token signing key (private; public half derived)
	// The aggregation layer: the front-proxy CA (--requestheader-client-ca-file) and the client
	// certificate the apiserver presents to aggregated API servers (CN=front-proxy-client).
	frontProxyCA, frontProxyCAKey string
	frontProxyCert, frontProxyKey string
}

// frontProxyClientName is the CN of the proxy client certificate, the one
// --requestheader-allowed-names allows.
const frontProxyClientName = "front-proxy-client"

func newPKIFiles(dir string) pkiFiles {
	p := func(name string) string { return filepath.Join(dir, "pki", name) }
	return pkiFiles{
		caCert: p("ca.crt"), caKey: p("ca.key"),
		serverCert: p("apiserver.crt"), serverKey: p("apiserver.key"),
		adminCert: p("admin.crt"), adminKey: p("admin.key"),
		saKey:        p("sa.key"),
		frontProxyCA: p("front-proxy-ca.crt"), frontProxyCAKey: p("front-proxy-ca.key"),
		frontProxyCert: p("front-proxy-client.crt"), frontProxyKey: p("front-proxy-client.key"),
	}
}

// ensurePKI creates the PKI unless the CA already exists in dir; nodeIP,
// if set, is one more address of the serving certificate. The front-proxy
// PKI is created on its own when it is missing (a directory made by an older
// harness has none).
func ensurePKI(f pkiFiles, nodeIP string) error {
	if err := ensureMainPKI(f, nodeIP); err != nil {
		return err
	}
	return ensureFrontProxyPKI(f)
}

// ensureFrontProxyPKI creates the front-proxy CA, separate from the main CA
// as in kubeadm (a client certificate of the main CA must not be able to
// pose as the front proxy), and the proxy client certificate it signs.
func ensureFrontProxyPKI(f pkiFiles) error {
	if _, err := os.Stat(f.frontProxyKey); err == nil {
		return nil
	}
	ca, caKey, err := newCA("kube-harness-front-proxy-ca")
	if err != nil {
		return err
	}
	if err := writeCertAndKey(f.frontProxyCA, f.frontProxyCAKey, ca, caKey); err != nil {
		return err
	}
	return mintClient(f.frontProxyCert, f.frontProxyKey, frontProxyClientName, nil, ca, caKey)
}

func ensureMainPKI(f pkiFiles, nodeIP string) error {
	if _, err := os.Stat(f.caKey); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(f.caCert), 0o700); err != nil {
		return err
	}
	ca, caKey, err := newCA("kube-harness-ca")
	if err != nil {
		return err
	}
	if err := writeCertAndKey(f.caCert, f.caKey, ca, caKey); err != nil {
		return err
	}
	server := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
		// 10.0.0.1 is the first address of --service-cluster-ip-range.
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP("10.0.0.1")},
	}
	if ip := net.ParseIP(nodeIP); ip != nil {
		server.IPAddresses = append(server.IPAddresses, ip)
	}
	if err := issue(f.serverCert, f.serverKey, server, ca, caKey); err != nil {
		return err
	}
	if err := mintClient(f.adminCert, f.adminKey, "kube-harness-admin", []string{"system:masters"}, ca, caKey); err != nil {
		return err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalECPrivateKey(saKey)
	if err != nil {
		return err
	}
	return writePEM(f.saKey, "EC PRIVATE KEY", der)
}

// newCA makes a self-signed CA certificate named cn and its key.
func newCA(cn string) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
	}
	setValidity(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

// mintClient issues a client certificate: kube-apiserver maps CN to the user
// name and each O to a group.
func mintClient(certPath, keyPath, user string, groups []string, ca *x509.Certificate, caKey crypto.Signer) error {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: user, Organization: groups},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return issue(certPath, keyPath, tmpl, ca, caKey)
}

// issue signs tmpl with the CA under a fresh key and writes both as PEM.
func issue(certPath, keyPath string, tmpl, ca *x509.Certificate, caKey crypto.Signer) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	setValidity(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	return writeCertAndKey(certPath, keyPath, cert, key)
}

func setValidity(tmpl *x509.Certificate) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic("invariant: crypto/rand never fails on Linux: " + err.Error())
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(10 * 365 * 24 * time.Hour)
}

func writeCertAndKey(certPath, keyPath string, cert *x509.Certificate, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := writePEM(keyPath, "PRIVATE KEY", der); err != nil {
		return err
	}
	return writePEM(certPath, "CERTIFICATE", cert.Raw)
}

func writePEM(path, blockType string, der []byte) error {
	data := pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der})
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// loadCA reads the CA certificate and key written by ensurePKI.
func loadCA(f pkiFiles) (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := os.ReadFile(f.caCert)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the harness CA (was `kube-harness up` run with this --dir?): %w", err)
	}
	keyPEM, err := os.ReadFile(f.caKey)
	if err != nil {
		return nil, nil, err
	}
	certBlock, _ := pem.Decode(certPEM)
	keyBlock, _ := pem.Decode(keyPEM)
	if certBlock == nil || keyBlock == nil {
		return nil, nil, errors.New("the harness CA files are not PEM: " + f.caCert)
	}
	cert, err := x509.ParseCertificate(certBlock.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(keyBlock.Bytes)
	if err != nil {
		return nil, nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, nil, errors.New("the harness CA key cannot sign: " + f.caKey)
	}
	return cert, signer, nil
}
