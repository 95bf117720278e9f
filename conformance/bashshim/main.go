// Command bashshim stands in for /bin/bash in the test image that
// make conformance gives the ClusterNetworkPolicy conformance suite, whose
// manifests run `/bin/bash -c "/agnhost ..."` while the image holds only
// the static agnhost binary (no shell, no libc). It understands only
// `-c LINE`: it splits LINE at white space (the manifests quote nothing;
// the kubelet has already expanded $(VAR)) and runs it, passing signals on.
//
// When the command fails it says so on stderr and then waits for a signal
// instead of exiting: the suite's SCTP servers (`agnhost porter` with
// SERVE_SCTP_PORT_NNNN) fail at once on a kernel without SCTP, and a
// crashing container would keep its pod from Ready and the whole suite from
// starting. make conformance skips the SCTP cases and says why
// (docs/conformance.md).
package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	if len(os.Args) != 3 || os.Args[1] != "-c" {
		fmt.Fprintf(os.Stderr, "bashshim: only `-c LINE` is supported, got %q\n", os.Args[1:])
		os.Exit(2)
	}
	words := strings.Fields(os.Args[2])
	if len(words) == 0 {
		os.Exit(0)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	cmd := exec.Command(words[0], words[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "bashshim: %v; waiting for a signal\n", err)
		<-sigs
		os.Exit(0)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case s := <-sigs:
			cmd.Process.Signal(s)
			<-done
			os.Exit(0)
		case err := <-done:
			if err == nil {
				os.Exit(0)
			}
			fmt.Fprintf(os.Stderr, "bashshim: %q: %v; waiting for a signal\n", os.Args[2], err)
			<-sigs
			os.Exit(0)
		}
	}
}
