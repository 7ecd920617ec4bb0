package containers

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// A container of a pod with released secrets reads them under
// SecretsDir, cannot change them, and a secret name from a hostile
// configuration cannot place a file outside that directory.
func TestSecrets(t *testing.T) {
	needRoot(t)
	root := rootDir(t)
	secrets := []Secret{
		{Name: "pods/db-password", Data: []byte("hunter2")},
		{Name: "tls.key", Data: []byte("-----BEGIN PRIVATE KEY-----")},
	}
	m, err := New(Options{Dir: filepath.Join(t.TempDir(), "state"), Secrets: func() []Secret { return secrets }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	for i, tc := range []struct {
		name       string
		args       []string
		user       specs.User
		wantOut    string
		wantStatus uint32
	}{
		{"read", []string{"/bin/prog", "read", SecretsDir + "/pods/db-password"}, specs.User{}, "hunter2", 0},
		{"read as another user", []string{"/bin/prog", "read", SecretsDir + "/tls.key"}, specs.User{UID: 1000, GID: 1000}, "-----BEGIN PRIVATE KEY-----", 0},
		{"list", []string{"/bin/prog", "ls", SecretsDir}, specs.User{}, "pods\ntls.key\n", 0},
		{"read-only", []string{"/bin/prog", "write", SecretsDir + "/pods/db-password", "changed"}, specs.User{}, "", 1},
		{"no new file", []string{"/bin/prog", "write", SecretsDir + "/new", "x"}, specs.User{}, "", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := testSpec("/bin/prog")
			spec.Process = &specs.Process{Args: tc.args, Cwd: "/", User: tc.user}
			id := "c" + strconv.Itoa(i)
			if err := m.Create(context.Background(), id, mustJSON(t, spec), Rootfs{Directory: root}); err != nil {
				t.Fatal(err)
			}
			out, _, status := run(t, m, id, "", nil, "")
			if diff := cmp.Diff([]any{tc.wantOut, tc.wantStatus}, []any{out, status}); diff != "" {
				t.Errorf("%v: stdout, status (-want +got):\n%s", tc.args, diff)
			}
		})
	}
	// The secrets live in the container's own tmpfs, not in its root
	// directory (the host's, in this test).
	if _, err := os.Stat(filepath.Join(root, "run", "cvm", "secrets", "tls.key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a secret reached the root directory itself: %v", err)
	}
}

func TestSecretRejected(t *testing.T) {
	needRoot(t)
	root := rootDir(t)
	for _, name := range []string{"../escape", "a/../../b", "/abs", "a//b", "", "bad name", strings.Repeat("x", MaxSecretName+1)} {
		t.Run(name, func(t *testing.T) {
			m, err := New(Options{Dir: filepath.Join(t.TempDir(), "state"),
				Secrets: func() []Secret { return []Secret{{Name: name, Data: []byte("x")}} }})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close(context.Background())
			err = m.Create(context.Background(), "c1", mustJSON(t, testSpec("/bin/prog")), Rootfs{Directory: root})
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Create with secret %q = %v, want ErrInvalid", name, err)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(root), "escape")); err == nil {
				t.Error("a file was written outside the secrets directory")
			}
		})
	}
}

func TestValidSecretName(t *testing.T) {
	for name, ok := range map[string]bool{
		"pods/attested": true, "a.b_c-d": true, "x/y/z": true,
		"": false, "..": false, "a/./b": false, "a/": false, "/a": false, "a\x00b": false, "ü": false,
	} {
		if err := ValidSecretName(name); (err == nil) != ok {
			t.Errorf("ValidSecretName(%q) = %v, want ok %v", name, err, ok)
		}
	}
}
