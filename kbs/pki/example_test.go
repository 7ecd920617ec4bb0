package pki_test

import (
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"log"
	"net"
	"time"

	"github.com/greatjail/cvm/kbs/pki"
)

// Example sets up a broker's PKI, connects an admin client and a guest to
// a server over an in-memory pipe, and shows how the server tells them
// apart: the admin presents a certificate whose role RoleOf reads; the
// guest presents none and must attest instead.
func Example() {
	now := time.Now() // cmd wiring; libraries take now as an argument
	ca, err := pki.NewCA(rand.Reader, now, "example")
	if err != nil {
		log.Fatal(err)
	}
	serverCert, serverKey, err := ca.IssueServer(rand.Reader, now, []string{"kbs.example", "127.0.0.1"})
	if err != nil {
		log.Fatal(err)
	}
	adminCert, adminKey, err := ca.IssueClient(rand.Reader, now, pki.RoleAdmin, "alice")
	if err != nil {
		log.Fatal(err)
	}
	serverCfg, err := pki.ServerTLS(serverCert, serverKey, ca.CertPEM())
	if err != nil {
		log.Fatal(err)
	}

	for _, c := range []struct {
		who       string
		cert, key []byte
	}{{"admin", adminCert, adminKey}, {"guest", nil, nil}} {
		clientCfg, err := pki.ClientTLS(ca.CertPEM(), c.cert, c.key, "kbs.example")
		if err != nil {
			log.Fatal(err)
		}
		s, g := net.Pipe()
		go func() {
			defer g.Close()
			if err := tls.Client(g, clientCfg).Handshake(); err != nil {
				log.Print(err)
			}
		}()
		conn := tls.Server(s, serverCfg)
		if err := conn.Handshake(); err != nil {
			log.Fatal(err)
		}
		// The server, per admin RPC:
		var peer = conn.ConnectionState().VerifiedChains
		if len(peer) == 0 {
			fmt.Printf("%s: no client certificate: guest RPCs only\n", c.who)
		} else if role, err := pki.RoleOf(peer[0][0]); err == nil {
			fmt.Printf("%s: role %s\n", c.who, role)
		}
		conn.Close()
	}
	// Output:
	// admin: role admin
	// guest: no client certificate: guest RPCs only
}
