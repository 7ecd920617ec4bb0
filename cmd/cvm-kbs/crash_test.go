package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/greatjail/cvm/kbs/config"
	kbsv1 "github.com/greatjail/cvm/proto/cvm/kbs/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// TestCrashDuringWrites kills the broker with SIGKILL while clients put
// resources, restarts it, and checks that every put the broker
// acknowledged is there, and that the audit chain still verifies.
func TestCrashDuringWrites(t *testing.T) {
	dir := t.TempDir()
	addr := freePort(t)
	must(t, run(t, dir, kbsBin, "init", "--dir", "kbs", "--listen", addr), "kbs init")
	cfgPath := filepath.Join(dir, "kbs", "kbs.yaml")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg = regexp.MustCompile(`(?m)^metrics_listen:.*$`).ReplaceAll(cfg, []byte(`metrics_listen: "off"`))
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	adm, err := config.LoadAdmin(filepath.Join(dir, "kbs", "admin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	tc, err := adm.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	acked := map[string]bool{}
	for round := range 2 {
		srv := serve(t, dir)
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		client := kbsv1.NewAdminClient(conn)
		var mu sync.Mutex
		var wg sync.WaitGroup
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ctx.Err() == nil; i++ {
					name := fmt.Sprintf("crash/r%d/w%d-%d", round, w, i)
					if _, err := client.PutResource(ctx, &kbsv1.PutResourceRequest{Name: name, Data: []byte(name)}); err != nil {
						return // the broker is gone
					}
					mu.Lock()
					acked[name] = true
					mu.Unlock()
				}
			}()
		}
		// Kill once enough writes are acknowledged (bounded in time).
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			n := len(acked)
			mu.Unlock()
			if n >= (round+1)*40 || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err := srv.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-srv.exited
		cancel()
		wg.Wait()
		conn.Close()
	}
	if len(acked) < 40 {
		t.Fatalf("only %d puts acknowledged before the kills; the test proves little", len(acked))
	}
	srv := serve(t, dir)
	list := must(t, run(t, dir, cvmBin, "kbs", "--admin-config", "kbs/admin.yaml", "resource", "list"), "list after crash").stdout
	missing := 0
	for name := range acked {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s`).MatchString(list) {
			missing++
			t.Errorf("acknowledged put %s lost in the crash", name)
		}
	}
	t.Logf("%d acknowledged puts over 2 SIGKILLs, %d lost", len(acked), missing)
	must(t, run(t, dir, cvmBin, "kbs", "--admin-config", "kbs/admin.yaml", "audit", "verify"), "audit verify after crash")
	srv.stop(t)
}
