// kube-harness: a real kube-apiserver (the unmodified upstream command, run
// in-process) on top of an embedded etcd, for sluice's tests and demo.
//
//	kube-harness up --dir DIR [--port N] [--ready-file F] [--parent-pid P] [--controllers LIST] [--rm-dir] [-- apiserver flags...]
//	kube-harness mint-user --dir DIR --user NAME [--group G]... [--out FILE]
//
// `up` writes everything into DIR: pki/ (CA, serving, admin and
// service-account keys), etcd/ (data), kubeconfig (admin: client certificate
// in system:masters) and, once the server answers, the ready marker (JSON:
// server, kubeconfig, pid, version). It listens on 127.0.0.1 only and stops
// cleanly (apiserver drained, etcd closed, exit 0) on SIGTERM or SIGINT, or
// when --parent-pid is given and that process is no longer its parent.
//
// `mint-user` writes a kubeconfig for a restricted identity (CN=user,
// O=groups) signed by DIR's CA, for RBAC tests: such a user may do nothing
// until a Role/ClusterRole binding grants it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	_ "time/tzdata" // CronJob time zones, as in upstream's main

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // the same registrations
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // as upstream's
	_ "k8s.io/component-base/metrics/prometheus/version"  // cmd/kube-apiserver
	"k8s.io/component-base/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	kcm "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	args := os.Args[1:]
	sub := "up"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	} else if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		sub = "help"
	}
	switch sub {
	case "help":
		fmt.Printf(usage, version.Get().GitVersion)
	case "up":
		os.Exit(up(args))
	case "kube-controller-manager": // the child started by `up --controllers`
		cmd := kcm.NewControllerManagerCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "mint-user":
		if err := mintUser(args); errors.Is(err, flag.ErrHelp) {
			return
		} else if err != nil {
			fmt.Fprintln(os.Stderr, "kube-harness mint-user:", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintf(os.Stderr, "kube-harness: unknown command %q\n\n"+usage, sub, version.Get().GitVersion)
		os.Exit(2)
	}
}

const usage = `kube-harness: a real kube-apiserver (Kubernetes %s) with embedded etcd, for tests.

  kube-harness up --dir DIR [--port N] [--ready-file F] [--parent-pid P] [--controllers LIST] [--rm-dir] [-- kube-apiserver flags...]
      Run until SIGTERM/SIGINT. DIR gets pki/, etcd/, kubeconfig (admin, system:masters)
      and, once the server answers, the ready marker (JSON: server, kubeconfig, pid, version).
      --controllers also runs kube-controller-manager with those controllers (a child process).
  kube-harness mint-user --dir DIR --user NAME [--group G]... [--out FILE]
      Write a kubeconfig for a restricted identity signed by DIR's CA; prints its path.

Run "kube-harness up -h" or "kube-harness mint-user -h" for the flags.
`

// newFlagSet returns a flag set whose -h shows the synopsis first.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), usage+"\nFlags of %s:\n", version.Get().GitVersion, name)
		fs.PrintDefaults()
	}
	return fs
}

// up runs etcd + kube-apiserver until a signal and returns the exit code.
func up(args []string) int {
	fs := newFlagSet("kube-harness up")
	dir := fs.String("dir", "", "directory for certificates, etcd data, kubeconfig and ready marker (required; reused if it exists)")
	port := fs.Int("port", 0, "kube-apiserver secure port on 127.0.0.1 (0: a free port)")
	readyFile := fs.String("ready-file", "", "marker written once the server answers (default DIR/ready)")
	parentPid := fs.Int("parent-pid", 0, "stop when this process is no longer our parent (it died)")
	controllers := fs.String("controllers", "", "also run kube-controller-manager with these controllers once ready, e.g. garbage-collector-controller,namespace-controller")
	rmDir := fs.Bool("rm-dir", false, "delete DIR after stopping, if the server became ready (a failed start keeps its files)")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return 0
	} else if err != nil {
		return 2
	}
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "kube-harness up: --dir is required")
		return 2
	}
	// Built first: the upstream command installs the SIGTERM/SIGINT handler
	// (genericapiserver.SetupSignalContext, which must not be called twice).
	cmd := app.NewAPIServerCommand()

	d, err := filepath.Abs(*dir)
	if err == nil {
		err = os.MkdirAll(d, 0o700)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kube-harness up: cannot use --dir:", err)
		return 1
	}
	if *readyFile == "" {
		*readyFile = filepath.Join(d, "ready")
	}
	code := serve(cmd, upOptions{dir: d, readyFile: *readyFile, controllers: *controllers, port: *port, parentPid: *parentPid, extra: fs.Args()})
	fmt.Fprintf(os.Stderr, "kube-harness up: stopped (exit code %d, etcd closed)\n", code)
	if *rmDir && becameReady.Load() {
		os.RemoveAll(d)
	}
	return code
}

// upOptions are the flags of `up`.
type upOptions struct {
	dir, readyFile, controllers string
	port, parentPid             int
	extra                       []string // passed on to kube-apiserver
}

// serve starts etcd, then runs the apiserver command until it returns.
func serve(cmd *cobra.Command, o upOptions) int {
	os.Remove(o.readyFile) // a stale marker from an earlier run would lie
	f := newPKIFiles(o.dir)
	if err := ensurePKI(f); err != nil {
		fmt.Fprintln(os.Stderr, "kube-harness up: creating certificates:", err)
		return 1
	}
	etcd, etcdURL, err := startEtcd(o.dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kube-harness up:", err)
		return 1
	}
	var stopping atomic.Bool
	defer func() { stopping.Store(true); etcd.Close() }()
	go func() {
		// etcd dying under the apiserver: stop everything rather than hang.
		if err, ok := <-etcd.Err(); ok && err != nil && !stopping.Load() {
			fmt.Fprintln(os.Stderr, "kube-harness up: embedded etcd failed, stopping:", err)
			syscall.Kill(os.Getpid(), syscall.SIGTERM)
		}
	}()
	if o.port == 0 {
		if o.port, err = freePort(); err != nil {
			fmt.Fprintln(os.Stderr, "kube-harness up:", err)
			return 1
		}
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", o.port)
	kubeconfig := filepath.Join(o.dir, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, server, f.caCert, f.adminCert, f.adminKey, "kube-harness-admin"); err != nil {
		fmt.Fprintln(os.Stderr, "kube-harness up: writing the admin kubeconfig:", err)
		return 1
	}
	info := readyInfo{Server: server, Kubeconfig: kubeconfig, Pid: os.Getpid(), Version: version.Get().GitVersion}
	cmd.SetArgs(append(apiserverFlags(f, etcdURL, o.port), o.extra...))
	return run(cmd, o, f, info) // the deferred etcd.Close may log "server closed" errors: expected
}

// run runs the apiserver command; beside it, it writes the ready marker and
// then starts the optional controller manager.
func run(cmd *cobra.Command, o upOptions, f pkiFiles, info readyInfo) int {
	ctx, cancel := context.WithCancel(context.Background())
	var cm atomic.Pointer[controllerManager]
	go func() {
		if err := markReadyWhenServing(ctx, f, info, o.readyFile); err != nil {
			if ctx.Err() == nil {
				fmt.Fprintln(os.Stderr, "kube-harness up: writing the ready marker:", err)
			}
			return
		}
		if o.controllers == "" {
			return
		}
		c, err := startControllerManager(o.controllers, info.Kubeconfig, f)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kube-harness up: stopping:", err)
			syscall.Kill(os.Getpid(), syscall.SIGTERM)
			return
		}
		c.stopOnSignal()
		cm.Store(c)
	}()
	if o.parentPid > 0 {
		go watchParent(o.parentPid)
	}
	code := cli.Run(cmd) // blocks until a signal or a failure
	cancel()
	cm.Load().stop()
	os.Remove(o.readyFile)
	return code
}

// apiserverFlags is the minimal secure single-node configuration (see
// shared/research/apiserver-harness.md §3.4).
func apiserverFlags(f pkiFiles, etcdURL string, port int) []string {
	return []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir=" + filepath.Dir(f.caCert),
		"--tls-cert-file=" + f.serverCert,
		"--tls-private-key-file=" + f.serverKey,
		"--client-ca-file=" + f.caCert,
		fmt.Sprintf("--service-account-issuer=https://127.0.0.1:%d", port),
		"--service-account-key-file=" + f.saKey,
		"--service-account-signing-key-file=" + f.saKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=Node,RBAC",
		// No controller-manager creates `default` ServiceAccounts, so the
		// ServiceAccount admission plugin would refuse every pod.
		"--disable-admission-plugins=ServiceAccount",
		// 127.0.0.1 is not a valid Endpoint address for the kubernetes Service.
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
	}
}

// watchParent asks the upstream signal handler to stop the harness once
// parentPid is no longer our parent (it died and we were re-parented), so a
// harness shared by a whole test binary never outlives it.
func watchParent(parentPid int) {
	for os.Getppid() == parentPid {
		time.Sleep(250 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "kube-harness up: parent process %d is gone, stopping\n", parentPid)
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
}

// groupList collects a repeatable --group flag.
type groupList []string

func (g *groupList) String() string     { return strings.Join(*g, ",") }
func (g *groupList) Set(v string) error { *g = append(*g, v); return nil }

// mintUser writes a kubeconfig for --user with --group(s), signed by DIR's CA.
func mintUser(args []string) error {
	fs := newFlagSet("kube-harness mint-user")
	dir := fs.String("dir", "", "the --dir of a harness started with up (required)")
	user := fs.String("user", "", "user name (certificate CN) (required)")
	out := fs.String("out", "", "kubeconfig to write (default DIR/users/<user>.kubeconfig)")
	var groups groupList
	fs.Var(&groups, "group", "group (certificate O); repeatable")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *user == "" {
		return fmt.Errorf("--dir and --user are required")
	}
	if *out == "" {
		safe := regexp.MustCompile(`[^A-Za-z0-9._-]`).ReplaceAllString(*user, "_")
		*out = filepath.Join(*dir, "users", safe+".kubeconfig")
	}
	f := newPKIFiles(*dir)
	ca, caKey, err := loadCA(f)
	if err != nil {
		return err
	}
	server, err := serverOf(filepath.Join(*dir, "kubeconfig"))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o700); err != nil {
		return err
	}
	// The certificate and key only live until they are embedded.
	certPath, keyPath := *out+".crt", *out+".key"
	defer os.Remove(certPath)
	defer os.Remove(keyPath)
	if err := mintClient(certPath, keyPath, *user, groups, ca, caKey); err != nil {
		return err
	}
	if err := writeKubeconfig(*out, server, f.caCert, certPath, keyPath, *user); err != nil {
		return err
	}
	fmt.Println(*out)
	return nil
}
