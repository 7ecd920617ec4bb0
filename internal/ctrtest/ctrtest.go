// Package ctrtest runs real containerd daemons for the shim's integration
// tests: every path under a test directory, our runtime and runc configured,
// OCI images built in Go (no registry) and imported, ctr and crictl driven
// as commands. The daemons come from scripts/fetch-containerd.sh; tests
// skip, naming that script, when they are absent.
package ctrtest
