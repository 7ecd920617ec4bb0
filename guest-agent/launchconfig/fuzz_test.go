package launchconfig

import (
	"bytes"
	"testing"
)

func FuzzParse(f *testing.F) {
	good, err := valid(testCA(f)).Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1,"tee":"snp","kbs_ca_pem":"","resource":"r","entrypoint":"/e","args":[],"env":[],"disk":{"device":"/d","fs":"ext4"}}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"version":1,"mode":"pod","tee":"none"}`))
	f.Add([]byte(`{"version":1,"mode":"pod","tee":"sim","kbs_ca_pem":"","resource":"r"}`))
	f.Add([]byte(`{"version":1,"mode":"launch","tee":"snp","kbs_ca_pem":"","resource":"r","entrypoint":"/e","args":[],"env":[],"disk":{"device":"/d","fs":"ext4"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			return
		}
		out, err := c.Marshal()
		if err != nil {
			t.Fatalf("a parsed configuration does not marshal: %v", err)
		}
		c2, err := Parse(out)
		if err != nil {
			t.Fatalf("the canonical form does not parse: %v", err)
		}
		out2, err := c2.Marshal()
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("Marshal is not stable: %s vs %s (%v)", out, out2, err)
		}
	})
}

func FuzzParseModules(f *testing.F) {
	f.Add([]byte("dm_mod\ndm_crypt\n"))
	f.Add([]byte("../x\n"))
	f.Add([]byte("\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		names, err := ParseModules(b)
		if err != nil {
			return
		}
		out, err := FormatModules(names)
		if err != nil {
			t.Fatalf("parsed names do not format: %v", err)
		}
		again, err := ParseModules(out)
		if err != nil || len(again) != len(names) {
			t.Fatalf("round trip: %v, %d vs %d names", err, len(again), len(names))
		}
	})
}
