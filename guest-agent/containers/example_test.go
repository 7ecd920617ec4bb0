package containers_test

import (
	"context"
	"log"

	"github.com/containerd/ttrpc"

	"github.com/greatjail/cvm/guest-agent/containers"
)

// The agent in pod mode serves the Containers service beside Agent on the
// ttrpc server of its link streams, starting processes through its reaper.
func ExampleService() {
	m, err := containers.New(containers.Options{Dir: "/run/cvm/containers" /* Start: reaper.Start */})
	if err != nil {
		log.Fatal(err)
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		log.Fatal(err)
	}
	(&containers.Service{M: m}).Register(srv)
	defer m.Close(context.Background())
}
