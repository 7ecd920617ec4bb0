package ctrtest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

// Image is a single-layer OCI image to build.
type Image struct {
	Name       string            // e.g. localhost/cvm-test/prog:1
	Files      map[string]string // path in the image -> host file to copy (mode kept)
	Dirs       []string          // extra empty directories
	Entrypoint []string
	Env        []string
}

// baseDirs exist in every image built here: the mount points runtimes use.
var baseDirs = []string{"bin", "dev", "etc", "proc", "run", "sys", "tmp"}

// WriteOCI writes img as an OCI image layout tarball (what `ctr image
// import` and `docker save` read) to path. Everything is deterministic:
// mtime 0, uid/gid 0, sorted entries.
func WriteOCI(t testing.TB, path string, img Image) {
	t.Helper()
	layer := layerTar(t, img)
	layerDigest := digest(layer)
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       map[string]any{"Entrypoint": img.Entrypoint, "Env": img.Env, "WorkingDir": "/"},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor("application/vnd.oci.image.config.v1+json", config),
		"layers":        []any{descriptor("application/vnd.oci.image.layer.v1.tar", layer)},
	})
	md := descriptor("application/vnd.oci.image.manifest.v1+json", manifest)
	md["annotations"] = map[string]string{"io.containerd.image.name": img.Name, "org.opencontainers.image.ref.name": img.Name}
	index, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []any{md}})

	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	add := func(name string, b []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			t.Fatal(err)
		}
		tw.Write(b)
	}
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	add("index.json", index)
	for _, b := range [][]byte{config, manifest, layer} {
		add("blobs/sha256/"+digest(b)[len("sha256:"):], b)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// RootDir writes img's file tree into dir (for ctr run --rootfs).
func RootDir(t testing.TB, dir string, img Image) {
	t.Helper()
	for _, d := range append(append([]string{}, baseDirs...), img.Dirs...) {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for dst, src := range img.Files {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(src)
		p := filepath.Join(dir, dst)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
}

func layerTar(t testing.TB, img Image) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	dirs := map[string]bool{}
	for _, d := range append(append([]string{}, baseDirs...), img.Dirs...) {
		dirs[d] = true
	}
	for f := range img.Files {
		for d := filepath.Dir(f); d != "." && d != "/"; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	var names []string
	for d := range dirs {
		names = append(names, d)
	}
	sort.Strings(names)
	for _, d := range names {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Name: d + "/", Mode: mode, Typeflag: tar.TypeDir, Format: tar.FormatPAX}); err != nil {
			t.Fatal(err)
		}
	}
	var files []string
	for f := range img.Files {
		files = append(files, f)
	}
	sort.Strings(files)
	for _, f := range files {
		data, err := os.ReadFile(img.Files[f])
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(img.Files[f])
		if err := tw.WriteHeader(&tar.Header{Name: f, Mode: int64(fi.Mode().Perm()), Size: int64(len(data)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func digest(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

func descriptor(mediaType string, b []byte) map[string]any {
	return map[string]any{"mediaType": mediaType, "digest": digest(b), "size": len(b)}
}

// Import imports an OCI tarball into namespace ns.
func (d *Daemon) Import(t testing.TB, ns, path string) {
	t.Helper()
	out, errOut, code := d.Ctr(t, 120*time.Second, "-n", ns, "image", "import", path)
	if code != 0 {
		t.Fatalf("ctr image import %s: exit %d\n%s%s", path, code, out, errOut)
	}
}
