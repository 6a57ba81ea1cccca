// Optional kube-controller-manager, for tests that need garbage collection
// of owned objects or namespace deletion (`up --controllers LIST`).
//
// Invariants: it runs as a child process of the harness (the same binary,
// `kube-harness kube-controller-manager ...`), never in-process, so the two
// upstream commands never share global registries or signal handlers; it
// starts only after the apiserver is ready, is stopped before the harness
// exits, and dies with the harness even if the harness is killed
// (Pdeathsig).
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

// controllerManager is the running child, if any.
type controllerManager struct {
	cmd      *exec.Cmd
	done     chan struct{}
	stopping atomic.Bool
}

// startControllerManager runs kube-controller-manager with only the listed
// controllers (e.g. "garbage-collector-controller,namespace-controller"),
// talking to the apiserver as the admin of kubeconfig.
func startControllerManager(controllers, kubeconfig string, f pkiFiles) (*controllerManager, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "kube-controller-manager",
		"--kubeconfig="+kubeconfig,
		"--controllers="+controllers,
		"--leader-elect=false",
		"--secure-port=0", // no serving: nothing to probe, no port to find
		"--root-ca-file="+f.caCert,
		"--service-account-private-key-file="+f.saKey,
		"--cluster-signing-cert-file="+f.caCert,
		"--cluster-signing-key-file="+f.caKey,
	)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting kube-controller-manager: %w", err)
	}
	cm := &controllerManager{cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		close(cm.done)
		if !cm.stopping.Load() {
			// Tests relying on it would only time out: stop loudly instead.
			fmt.Fprintln(os.Stderr, "kube-harness up: kube-controller-manager exited unexpectedly, stopping:", err)
			syscall.Kill(os.Getpid(), syscall.SIGTERM)
		}
	}()
	return cm, nil
}

// stop asks the child to exit and waits up to 5 s before killing it.
func (cm *controllerManager) stop() {
	if cm == nil {
		return
	}
	cm.stopping.Store(true)
	cm.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-cm.done:
	case <-time.After(5 * time.Second):
		cm.cmd.Process.Kill()
		<-cm.done
	}
}

// stopOnSignal stops the controller manager as soon as the harness is told
// to stop, before the apiserver goes away under it. (The upstream apiserver
// command has its own handler for the same signals; Go delivers to both.)
func (cm *controllerManager) stopOnSignal() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-signals
		cm.stop()
	}()
}
