package shim

import (
	"os"
	"path/filepath"
	"testing"
)

func TestPodID(t *testing.T) {
	tests := []struct {
		name, spec, want string
		wantErr          bool
	}{
		{"CRI container", `{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1","io.containerd.cvm.v2.group":"g"}}`, "pod1", false},
		{"ctr group", `{"annotations":{"io.containerd.cvm.v2.group":"g"}}`, "g", false},
		{"alone", `{"annotations":{"other":"x"}}`, "task", false},
		{"no annotations", `{}`, "task", false},
		{"bad json", `{`, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(tc.spec), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := podID(dir, "task")
			if got != tc.want || (err != nil) != tc.wantErr {
				t.Errorf("podID = %q, %v; want %q, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
	if _, err := podID(t.TempDir(), "task"); err == nil {
		t.Error("podID of a bundle without config.json succeeded")
	}
}
