package config_test

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/greatjail/cvm/kbs/config"
)

// Example is `cvm-kbs init --dir DIR` followed by what `cvm-kbs serve` and
// `cvm kbs --admin-config` do with the result.
func Example() {
	tmp, err := os.MkdirTemp("", "kbs-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "kbs")

	// cvm-kbs init: cmd wiring supplies the clock and randomness.
	created, err := config.Init(dir, config.InitOptions{Now: time.Now(), Rand: rand.Reader})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("files written:", len(created))

	// cvm-kbs serve --config DIR/kbs.yaml
	s, err := config.LoadServer(filepath.Join(dir, "kbs.yaml"))
	if err != nil {
		log.Fatal(err)
	}
	m, err := s.LoadMaterial()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("listen:", s.Listen, "tls:", m.TLS != nil, "keks:", len(m.KEKs), "sim trusted:", m.SimRoot != nil)

	// cvm kbs --admin-config DIR/admin.yaml ...
	a, err := config.LoadAdmin(filepath.Join(dir, "admin.yaml"))
	if err != nil {
		log.Fatal(err)
	}
	if _, err := a.ClientTLS(); err != nil {
		log.Fatal(err)
	}
	fmt.Println("admin connects to:", a.Address)

	// A second init never overwrites an installation.
	_, err = config.Init(dir, config.InitOptions{Now: time.Now(), Rand: rand.Reader})
	fmt.Println("second init refused:", errors.Is(err, fs.ErrExist))

	// Output:
	// files written: 14
	// listen: 127.0.0.1:8443 tls: true keks: 1 sim trusted: false
	// admin connects to: 127.0.0.1:8443
	// second init refused: true
}

// ExampleLoadServer shows how configuration mistakes are reported: all at
// once, each naming its field.
func ExampleLoadServer() {
	dir, err := os.MkdirTemp("", "kbs-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "kbs.yaml")
	yaml := `listen: 0.0.0.0:8443
insecure_plaintext: true
kek_files: [kek.key]
token_key: token-key.pem
challenge_key: challenge.key
token_lifetime: 300
limits: {request_timout: 10s}
`
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		log.Fatal(err)
	}
	_, err = config.LoadServer(p)
	var e *config.Error
	if errors.As(err, &e) {
		for _, p := range e.Problems {
			fmt.Printf("%s: %s\n", p.Field, p.Message)
		}
	}
	// Output:
	// limits.request_timout: unknown field
	// token_lifetime: want a duration string such as "30s" or "5m", got the number 300 (units are required)
}
