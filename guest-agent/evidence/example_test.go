package evidence_test

import (
	"context"
	"fmt"
	"log"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/faketsm"
	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/guest-agent/evidence"
)

// ConfigfsTSM on go-configfs-tsm's fake (whose "report" echoes its inputs);
// in a guest, evidence.ForConfig returns it on the real configfs.
func ExampleConfigfsTSM() {
	p := &evidence.ConfigfsTSM{
		Kind:     attestation.TEETDX,
		Client:   &faketsm.Client{Subsystems: map[string]configfsi.Client{"report": faketsm.Report611(0)}},
		Provider: "fake",
	}
	var reportData [64]byte
	reportData[0] = 0xab
	ev, err := p.Evidence(context.Background(), reportData)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ev.TEE)
	fmt.Printf("%.30s\n", ev.Report)
	// Output:
	// tdx
	// privlevel: 0
	// inblob: ab0000000
}
