package initproc

import (
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestReaperDispatch(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh on PATH")
	}
	// Orphans re-parent to the nearest subreaper: make it this process,
	// as PID 1 is in the guest.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)

	var mu sync.Mutex
	orphans := 0
	gotOrphan := make(chan struct{}, 16)
	r := NewReaper(func(pid int, ws syscall.WaitStatus) {
		mu.Lock()
		orphans++
		mu.Unlock()
		gotOrphan <- struct{}{}
	})
	defer r.Stop()

	type want struct{ Code, Signal int }
	scripts := map[string]want{
		"exit 0":      {0, 0},
		"exit 3":      {3, 0},
		"kill -9 $$":  {137, 9},
		"kill -15 $$": {143, 15},
		// The orphan (sleep in the background) outlives its parent and is
		// reaped too, without disturbing the parent's status.
		"(sleep 0.2; exit 7) & exit 5": {5, 0},
	}
	// Start many at once, so statuses arrive in bursts of one SIGCHLD.
	var wg sync.WaitGroup
	got := map[string]want{}
	var gotMu sync.Mutex
	for i := 0; i < 4; i++ {
		for script := range scripts {
			ch, err := r.Start(exec.Command("sh", "-c", script))
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				select {
				case ws := <-ch:
					c, s := ExitCode(ws)
					gotMu.Lock()
					got[fmt.Sprintf("%s #%d", script, i)] = want{c, s}
					gotMu.Unlock()
				case <-time.After(60 * time.Second):
					t.Errorf("%q: no status", script)
				}
			}()
		}
	}
	wg.Wait()
	wantAll := map[string]want{}
	for i := 0; i < 4; i++ {
		for s, w := range scripts {
			wantAll[fmt.Sprintf("%s #%d", s, i)] = w
		}
	}
	if diff := cmp.Diff(wantAll, got); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
	for i := 0; i < 4; i++ {
		select {
		case <-gotOrphan:
		case <-time.After(60 * time.Second):
			t.Fatalf("only %d of 4 orphans reaped", i)
		}
	}
}

func TestReaperStopped(t *testing.T) {
	r := NewReaper(nil)
	r.Stop()
	r.Stop() // twice is fine
	if _, err := r.Start(exec.Command("true")); err != ErrStopped {
		t.Errorf("Start after Stop = %v, want ErrStopped", err)
	}
}
