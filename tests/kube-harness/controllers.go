// Child processes of `up`: kube-controller-manager (`--controllers`) and,
// with `--node-ip`, kube-scheduler.
//
// Invariants: each runs as a child process of the harness (the same binary,
// `kube-harness <command> ...`), never in-process, so two upstream commands
// never share global registries or signal handlers; children start only
// after the apiserver is ready, are stopped before the harness exits, and
// die with the harness even if the harness is killed (Pdeathsig).
package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
)

// child is one running upstream command.
type child struct {
	name     string
	cmd      *exec.Cmd
	done     chan struct{}
	stopping atomic.Bool
}

// childCommands lists the children `up` runs once the apiserver is ready
// (each entry: command name, then its flags), all talking to the apiserver
// as the admin of kubeconfig.
func childCommands(o upOptions, kubeconfig string, f pkiFiles) [][]string {
	var cmds [][]string
	if o.controllers != "" {
		cmds = append(cmds, []string{"kube-controller-manager",
			"--kubeconfig=" + kubeconfig,
			"--controllers=" + o.controllers,
			"--leader-elect=false",
			"--secure-port=0", // no serving: nothing to probe, no port to find
			"--root-ca-file=" + f.caCert,
			"--service-account-private-key-file=" + f.saKey,
			"--cluster-signing-cert-file=" + f.caCert,
			"--cluster-signing-key-file=" + f.caKey,
		})
	}
	if o.nodeIP != "" {
		cmds = append(cmds, []string{"kube-scheduler",
			"--kubeconfig=" + kubeconfig,
			"--authentication-kubeconfig=" + kubeconfig,
			"--authorization-kubeconfig=" + kubeconfig,
			"--leader-elect=false",
			"--secure-port=0",
		})
	}
	return cmds
}

// startChild runs `kube-harness args...`.
func startChild(args []string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", args[0], err)
	}
	c := &child{name: args[0], cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		close(c.done)
		if !c.stopping.Load() {
			// Tests relying on it would only time out: stop loudly instead.
			fmt.Fprintf(os.Stderr, "kube-harness up: %s exited unexpectedly, stopping: %v\n", c.name, err)
			syscall.Kill(os.Getpid(), syscall.SIGTERM)
		}
	}()
	return c, nil
}

// stop asks the child to exit and waits up to 5 s before killing it.
func (c *child) stop() {
	if c == nil {
		return
	}
	c.stopping.Store(true)
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
}

// stopOnSignal stops the child as soon as the harness is told to stop,
// before the apiserver goes away under it. (The upstream apiserver command
// has its own handler for the same signals; Go delivers to both.)
func (c *child) stopOnSignal() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-signals
		c.stop()
	}()
}
