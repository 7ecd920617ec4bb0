package agent_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os/exec"
	"strings"
	"syscall"

	"github.com/containerd/ttrpc"
	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/guest-agent/agent"
	"github.com/greatjail/cvm/guest-agent/launchconfig"
	"github.com/greatjail/cvm/guest-agent/link"
	agentv1 "github.com/greatjail/cvm/proto/cvm/agent/v1"
)

type noEvidence struct{}

func (noEvidence) TEE() attestation.TEE { return attestation.TEESim }
func (noEvidence) Evidence(context.Context, [64]byte) (*attestation.Evidence, error) {
	return nil, errors.New("not in this example")
}

type noDisk struct{}

func (noDisk) Unlock(context.Context, string, []byte) (string, func() error, error) {
	return "", nil, errors.New("not in this example")
}

type noStart struct{}

func (noStart) Start(*exec.Cmd) (<-chan syscall.WaitStatus, error) {
	return nil, errors.New("not in this example")
}

type noSystem struct{}

func (noSystem) KillAll(syscall.Signal) error { return nil }
func (noSystem) PowerOff() error              { return nil }

// The host asks a freshly booted agent for its status over the link.
func Example() {
	guestEnd, hostEnd := net.Pipe()
	guest, _ := link.Guest(guestEnd)
	host, _ := link.Host(hostEnd)
	defer host.Close()
	defer guest.Close()

	a, err := agent.New(agent.Options{
		Config:   &launchconfig.Config{TEE: attestation.TEESim},
		Provider: noEvidence{},
		DialKBS:  func(context.Context) (net.Conn, error) { return guest.Open(link.KindKBS) },
		Unlocker: noDisk{}, Starter: noStart{}, System: noSystem{},
		Rand: strings.NewReader(""), Version: "example",
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Serve(ctx, guest.Listener(link.KindTTRPC))

	stream, err := host.Open(link.KindTTRPC)
	if err != nil {
		log.Fatal(err)
	}
	c := ttrpc.NewClient(stream)
	defer c.Close()
	st, err := agentv1.NewAgentClient(c).Status(ctx, &agentv1.StatusRequest{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(st.GetPhase(), st.GetTee(), st.GetAgentVersion())
	// Output: PHASE_READY TEE_SIM example
}
