package shim

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// A minimal QMP (QEMU Machine Protocol) client for disk hot-plug: one
// command at a time, events read in between and kept only as far as a
// caller waits for one.

// qmpMessage is one line from QEMU: a greeting, a command's return or
// error, or an event.
type qmpMessage struct {
	QMP    json.RawMessage `json:"QMP,omitempty"`
	Return json.RawMessage `json:"return,omitempty"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error,omitempty"`
	Event string `json:"event,omitempty"`
	Data  struct {
		Device string `json:"device"`
	} `json:"data"`
}

// maxQMPLine bounds one message from QEMU.
const maxQMPLine = 1 << 20

// parseQMP decodes one message line from QEMU: it must be one JSON object
// that is exactly one of a greeting, a return, an error or an event.
func parseQMP(line []byte) (*qmpMessage, error) {
	if len(line) > maxQMPLine {
		return nil, fmt.Errorf("qmp: message of %d bytes, limit %d", len(line), maxQMPLine)
	}
	var m qmpMessage
	dec := json.NewDecoder(bytes.NewReader(line))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("qmp: bad message %.200q: %w", line, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("qmp: data after the message %.200q", line)
	}
	kinds := 0
	for _, b := range []bool{m.QMP != nil, m.Return != nil, m.Error != nil, m.Event != ""} {
		if b {
			kinds++
		}
	}
	if kinds != 1 {
		return nil, fmt.Errorf("qmp: message %.200q is not exactly one of greeting, return, error, event", line)
	}
	return &m, nil
}

type qmpClient struct {
	c       net.Conn
	r       *bufio.Reader
	deleted map[string]bool // DEVICE_DELETED seen, not yet waited for
}

// dialQMP connects to QEMU's QMP socket and leaves capabilities
// negotiation mode.
func dialQMP(path string, timeout time.Duration) (*qmpClient, error) {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return nil, fmt.Errorf("qmp: connect to %s: %w", path, err)
	}
	q := &qmpClient{c: c, r: bufio.NewReaderSize(c, 64<<10), deleted: map[string]bool{}}
	c.SetDeadline(time.Now().Add(timeout))
	m, err := q.read()
	if err == nil && m.QMP == nil {
		err = errors.New("qmp: no greeting")
	}
	if err == nil {
		err = q.execute("qmp_capabilities", nil, timeout)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return q, nil
}

func (q *qmpClient) read() (*qmpMessage, error) {
	line, err := q.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, fmt.Errorf("qmp: message over %d bytes", q.r.Size())
	}
	if err != nil {
		return nil, fmt.Errorf("qmp: read: %w", err)
	}
	m, err := parseQMP(line)
	if err == nil && m.Event == "DEVICE_DELETED" && m.Data.Device != "" {
		q.deleted[m.Data.Device] = true
	}
	return m, err
}

// execute runs one command and returns its error, if any.
func (q *qmpClient) execute(cmd string, args any, timeout time.Duration) error {
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("qmp: %s: %w", cmd, err)
	}
	q.c.SetDeadline(time.Now().Add(timeout))
	if _, err := q.c.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("qmp: %s: %w", cmd, err)
	}
	for {
		m, err := q.read()
		if err != nil {
			return fmt.Errorf("qmp: %s: %w", cmd, err)
		}
		switch {
		case m.Error != nil:
			return fmt.Errorf("qmp: %s: %s: %s", cmd, m.Error.Class, m.Error.Desc)
		case m.Return != nil:
			return nil
		}
		// An event: not the answer.
	}
}

// waitDeviceDeleted reads messages until QEMU reports that device id is
// gone (the guest released it).
func (q *qmpClient) waitDeviceDeleted(id string, timeout time.Duration) error {
	q.c.SetDeadline(time.Now().Add(timeout))
	for !q.deleted[id] {
		if _, err := q.read(); err != nil {
			return fmt.Errorf("qmp: waiting for the guest to release %s: %w", id, err)
		}
	}
	delete(q.deleted, id)
	return nil
}

func (q *qmpClient) Close() error { return q.c.Close() }
