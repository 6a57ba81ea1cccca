// kube-harness: a real kube-apiserver (the unmodified upstream command, run
// in-process) on top of an embedded etcd, for sluice's tests and demo.
//
//	kube-harness up --dir DIR [--port N] [--ready-file F] [--parent-pid P] [--controllers LIST] [--node-ip IP] [--rm-dir] [-- apiserver flags...]
//	kube-harness mint-user --dir DIR --user NAME [--group G]... [--out FILE]
//	kube-harness kubelet|kube-scheduler|kube-controller-manager|kubectl ARGS...
//
// The last line runs the unmodified upstream command of that name (also when
// the binary is invoked through a link named kubectl). With `up --node-ip`,
// the control plane is prepared for a real node: see node.go.
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
	"k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	kcm "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	if filepath.Base(os.Args[0]) == "kubectl" {
		os.Exit(kubectl(os.Args[1:]))
	}
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
	case "kube-scheduler":
		cmd := scheduler.NewSchedulerCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "kubelet":
		cmd := kubelet.NewKubeletCommand(context.Background())
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "kubectl":
		os.Exit(kubectl(args))
	case "mint-user":
		if err := mintUser(args); errors.Is(err, flag.ErrHelp) {
			return
		} else if err != nil {
			fmt.Fprintln(os.Stderr, "kube-harness mint-user:", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintf(os.Stderr, "kube-harness: unknown command %q\n\n", sub)
		fmt.Fprintf(os.Stderr, usage, version.Get().GitVersion)
		os.Exit(2)
	}
}

const usage = `kube-harness: a real kube-apiserver (Kubernetes %[1]s) with embedded etcd, for tests.

  kube-harness up --dir DIR [--port N] [--ready-file F] [--parent-pid P] [--controllers LIST] [--node-ip IP [--node-name N]] [--rm-dir] [-- kube-apiserver flags...]
      Run until SIGTERM/SIGINT. DIR gets pki/, etcd/, kubeconfig (admin, system:masters)
      and, once the server answers, the ready marker (JSON: server, kubeconfig, pid, version).
      --controllers also runs kube-controller-manager with those controllers (a child process).
      --node-ip serves on IP instead of 127.0.0.1, also runs kube-scheduler and writes
      DIR/kubelet.kubeconfig, for a kubelet run beside it (tests/kube-harness/src/node.rs).
  kube-harness mint-user --dir DIR --user NAME [--group G]... [--out FILE]
      Write a kubeconfig for a restricted identity signed by DIR's CA; prints its path.

  kube-harness kubelet|kube-scheduler|kube-controller-manager|kubectl ARGS...
      The upstream command of that name (Kubernetes %[1]s); a link named kubectl also runs kubectl.

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
	nodeIP := fs.String("node-ip", "", "prepare for a real node at this address (an existing local interface address, e.g. a bridge's): serve on it instead of 127.0.0.1, run kube-scheduler, write DIR/kubelet.kubeconfig")
	nodeName := fs.String("node-name", "sluice-node", "with --node-ip: the node's name (the kubelet's identity)")
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
	code := serve(cmd, upOptions{dir: d, readyFile: *readyFile, controllers: *controllers, port: *port, parentPid: *parentPid, extra: fs.Args(), nodeIP: *nodeIP, nodeName: *nodeName})
	fmt.Fprintf(os.Stderr, "kube-harness up: stopped (exit code %d, etcd closed)\n", code)
	if *rmDir && becameReady.Load() {
		os.RemoveAll(d)
	}
	return code
}

// upOptions are the flags of `up`.
type upOptions struct {
	dir, readyFile, controllers string
	nodeIP, nodeName            string // nodeIP empty: no node
	port, parentPid             int
	extra                       []string // passed on to kube-apiserver
}

// serve starts etcd, then runs the apiserver command until it returns.
func serve(cmd *cobra.Command, o upOptions) int {
	os.Remove(o.readyFile) // a stale marker from an earlier run would lie
	f := newPKIFiles(o.dir)
	if err := ensurePKI(f, o.nodeIP); err != nil {
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
	host := "127.0.0.1"
	if o.nodeIP != "" {
		host = o.nodeIP
	}
	server := fmt.Sprintf("https://%s:%d", host, o.port)
	kubeconfig := filepath.Join(o.dir, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, server, f.caCert, f.adminCert, f.adminKey, "kube-harness-admin"); err != nil {
		fmt.Fprintln(os.Stderr, "kube-harness up: writing the admin kubeconfig:", err)
		return 1
	}
	info := readyInfo{Server: server, Kubeconfig: kubeconfig, Pid: os.Getpid(), Version: version.Get().GitVersion}
	flags := apiserverFlags(f, etcdURL, o.port)
	if o.nodeIP != "" {
		if flags, err = prepareNode(f, o, server, flags); err != nil {
			fmt.Fprintln(os.Stderr, "kube-harness up: preparing for a node:", err)
			return 1
		}
		info.KubeletKubeconfig = filepath.Join(o.dir, "kubelet.kubeconfig")
	}
	cmd.SetArgs(append(flags, o.extra...))
	return run(cmd, o, f, info) // the deferred etcd.Close may log "server closed" errors: expected
}

// run runs the apiserver command; beside it, it writes the ready marker and
// then starts the optional controller manager.
func run(cmd *cobra.Command, o upOptions, f pkiFiles, info readyInfo) int {
	ctx, cancel := context.WithCancel(context.Background())
	var children atomic.Pointer[[]*child]
	go func() {
		if err := markReadyWhenServing(ctx, f, info, o.readyFile); err != nil {
			if ctx.Err() == nil {
				fmt.Fprintln(os.Stderr, "kube-harness up: writing the ready marker:", err)
			}
			return
		}
		var started []*child
		defer func() { children.Store(&started) }()
		for _, args := range childCommands(o, info.Kubeconfig, f) {
			c, err := startChild(args)
			if err != nil {
				fmt.Fprintln(os.Stderr, "kube-harness up: stopping:", err)
				syscall.Kill(os.Getpid(), syscall.SIGTERM)
				return
			}
			c.stopOnSignal()
			started = append(started, c)
		}
	}()
	if o.parentPid > 0 {
		go watchParent(o.parentPid)
	}
	code := cli.Run(cmd) // blocks until a signal or a failure
	cancel()
	if c := children.Load(); c != nil {
		for _, child := range *c {
			child.stop()
		}
	}
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
		// The aggregation layer, for APIServices (sluice's logs API): the
		// apiserver proxies to the Service's endpoint address itself (there
		// may be no kube-proxy), presenting the front-proxy client
		// certificate and the caller's identity in X-Remote-* headers.
		"--requestheader-client-ca-file=" + f.frontProxyCA,
		"--requestheader-allowed-names=" + frontProxyClientName,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + f.frontProxyCert,
		"--proxy-client-key-file=" + f.frontProxyKey,
		"--enable-aggregator-routing=true",
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

// kubectl runs the upstream kubectl command with args (as cmd/kubectl does).
func kubectl(args []string) int {
	os.Args = append([]string{"kubectl"}, args...) // kubectl reads os.Args for plugins and -v
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		kubectlutil.CheckErr(err) // prints the error and exits non-zero
	}
	return 0
}
