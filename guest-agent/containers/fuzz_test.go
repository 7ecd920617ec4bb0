package containers

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseSpec: an OCI spec from the untrusted host is accepted or
// rejected with ErrInvalid, never a panic; what is accepted has a process,
// a console size that fits a terminal and absolute mount destinations.
func FuzzParseSpec(f *testing.F) {
	f.Add([]byte(`{"ociVersion":"1.2.0","process":{"args":["/bin/prog"],"cwd":"/"},"mounts":[{"destination":"/proc","type":"proc","source":"proc"}]}`))
	f.Add([]byte(`{"process":{"args":["x"],"terminal":true}}`))
	f.Add([]byte(`{"process":{"args":["x"],"terminal":true,"consoleSize":{"height":70000,"width":80}}}`))
	f.Add([]byte(`{"process":{"args":["x"],"rlimits":[{"type":"RLIMIT_NOFILE","hard":1,"soft":1}]},"mounts":[{"destination":"rel"}]}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		spec, err := parseSpec(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("parseSpec error %v is not ErrInvalid", err)
			}
			return
		}
		if spec.Process == nil || len(spec.Process.Args) == 0 {
			t.Fatalf("accepted a spec without a usable process: %+v", spec.Process)
		}
		if cs := spec.Process.ConsoleSize; cs != nil && (cs.Width > maxWinsize || cs.Height > maxWinsize) {
			t.Fatalf("accepted console size %+v", cs)
		}
		for _, m := range spec.Mounts {
			if !strings.HasPrefix(m.Destination, "/") {
				t.Fatalf("accepted a relative mount destination %q", m.Destination)
			}
		}
	})
}

// FuzzMountOptions: any option list splits without a panic, and the data
// string holds only options that are not flags.
func FuzzMountOptions(f *testing.F) {
	f.Add("nosuid,noexec,nodev,mode=755,size=65536k")
	f.Add("rbind,rprivate,ro")
	f.Add(",,=,")
	f.Fuzz(func(t *testing.T, s string) {
		opts := strings.Split(s, ",")
		_, _, data := mountOptions(opts)
		for _, d := range strings.Split(data, ",") {
			if _, ok := mountFlags[d]; ok {
				t.Fatalf("flag option %q passed as data %q", d, data)
			}
			if _, ok := propagationFlags[d]; ok {
				t.Fatalf("propagation option %q passed as data %q", d, data)
			}
		}
	})
}
