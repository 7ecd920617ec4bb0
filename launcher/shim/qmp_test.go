package shim

import (
	"bufio"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseQMP(t *testing.T) {
	tests := []struct {
		in   string
		ok   bool
		kind string
	}{
		{`{"QMP":{"version":{}}}`, true, "greeting"},
		{`{"return":{}}`, true, "return"},
		{`{"error":{"class":"GenericError","desc":"no"}}`, true, "error"},
		{`{"event":"DEVICE_DELETED","data":{"device":"d1"}}`, true, "event"},
		{`{"return":{},"event":"X"}`, false, ""},
		{`{}`, false, ""},
		{`{"return":{}} {}`, false, ""},
		{`[`, false, ""},
		{strings.Repeat(" ", maxQMPLine+1), false, ""},
	}
	for _, tt := range tests {
		m, err := parseQMP([]byte(tt.in))
		if (err == nil) != tt.ok {
			t.Errorf("parseQMP(%.40q) = %v, want ok %v", tt.in, err, tt.ok)
			continue
		}
		if err != nil {
			continue
		}
		kind := map[bool]string{true: "greeting"}[m.QMP != nil]
		switch {
		case m.Return != nil:
			kind = "return"
		case m.Error != nil:
			kind = "error"
		case m.Event != "":
			kind = "event"
		}
		if kind != tt.kind {
			t.Errorf("parseQMP(%q) is a %s, want %s", tt.in, kind, tt.kind)
		}
	}
}

func FuzzParseQMP(f *testing.F) {
	f.Add([]byte(`{"QMP":{"version":{"qemu":{"major":7}}}}`))
	f.Add([]byte(`{"return":{}}`))
	f.Add([]byte(`{"error":{"class":"GenericError","desc":"Duplicate ID"}}`))
	f.Add([]byte(`{"event":"DEVICE_DELETED","data":{"device":"cvm-dev-1","path":"/machine"},"timestamp":{}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseQMP(b)
		if err == nil && m == nil {
			t.Fatal("no message and no error")
		}
	})
}

// TestQMPClient plays QEMU: greeting, capabilities, a command answered
// after an event, an error, and a DEVICE_DELETED that arrives before the
// caller waits for it.
func TestQMPClient(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "qmp")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		var cmds []string
		send := func(s string) { c.Write([]byte(s + "\r\n")) }
		send(`{"QMP":{"version":{},"capabilities":[]}}`)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				got <- cmds
				return
			}
			var req struct {
				Execute   string         `json:"execute"`
				Arguments map[string]any `json:"arguments"`
			}
			json.Unmarshal([]byte(line), &req)
			cmds = append(cmds, req.Execute)
			switch req.Execute {
			case "device_add":
				send(`{"event":"SOMETHING","data":{}}`)
				send(`{"return":{}}`)
			case "device_del":
				// The guest was quick: the event comes before the return.
				send(`{"event":"DEVICE_DELETED","data":{"device":"other"}}`)
				send(`{"event":"DEVICE_DELETED","data":{"device":"d1"}}`)
				send(`{"return":{}}`)
			case "blockdev-del":
				send(`{"error":{"class":"GenericError","desc":"Node 'n1' is busy"}}`)
			default:
				send(`{"return":{}}`)
			}
		}
	}()
	q, err := dialQMP(sock, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.execute("device_add", map[string]any{"id": "d1"}, 10*time.Second); err != nil {
		t.Errorf("device_add: %v", err)
	}
	if err := q.execute("device_del", map[string]any{"id": "d1"}, 10*time.Second); err != nil {
		t.Errorf("device_del: %v", err)
	}
	if err := q.waitDeviceDeleted("d1", 10*time.Second); err != nil {
		t.Errorf("waitDeviceDeleted: %v", err)
	}
	if err := q.execute("blockdev-del", nil, 10*time.Second); err == nil || !strings.Contains(err.Error(), "is busy") {
		t.Errorf("blockdev-del = %v, want QEMU's error", err)
	}
	q.Close()
	if diff := cmp.Diff([]string{"qmp_capabilities", "device_add", "device_del", "blockdev-del"}, <-got); diff != "" {
		t.Errorf("commands QEMU received (-want +got):\n%s", diff)
	}
}
