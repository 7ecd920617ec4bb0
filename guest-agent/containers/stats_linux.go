package containers

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Stats is a container's resource usage, summed over its processes.
type Stats struct {
	CPUUserNS, CPUSystemNS uint64
	MemoryRSSBytes         uint64
	Pids                   uint64
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times (100 on every
// Linux architecture the agent runs on).
const clockTick = 100

// Stats measures container id from /proc.
func (m *Manager) Stats(id string) (Stats, error) {
	c, err := m.get(id)
	if err != nil {
		return Stats{}, err
	}
	var s Stats
	page := uint64(os.Getpagesize())
	for _, pid := range c.pids() {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue // exited meanwhile
		}
		st, err := parseStat(stat)
		if err != nil {
			continue
		}
		s.Pids++
		s.CPUUserNS += st.utime * (1e9 / clockTick)
		s.CPUSystemNS += st.stime * (1e9 / clockTick)
		s.MemoryRSSBytes += st.rssPages * page
	}
	return s, nil
}

type procStat struct {
	utime, stime, rssPages uint64
}

// parseStat reads utime (field 14), stime (15) and rss (24) of a
// /proc/<pid>/stat line. The command name (field 2) may hold spaces and
// parentheses, so fields are counted after its last ')'.
func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("containers: /proc stat line without ')'")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state).
	const utime, stime, rss = 14 - 3, 15 - 3, 24 - 3
	if len(f) <= rss {
		return procStat{}, fmt.Errorf("containers: /proc stat line has %d fields", len(f)+2)
	}
	var st procStat
	var err error
	for _, x := range []struct {
		dst *uint64
		i   int
	}{{&st.utime, utime}, {&st.stime, stime}, {&st.rssPages, rss}} {
		if strings.HasPrefix(f[x.i], "-") {
			continue // rss can read -1 transiently; count it as 0
		}
		if *x.dst, err = strconv.ParseUint(f[x.i], 10, 64); err != nil {
			return procStat{}, fmt.Errorf("containers: /proc stat field %d: %w", x.i+3, err)
		}
	}
	return st, nil
}
