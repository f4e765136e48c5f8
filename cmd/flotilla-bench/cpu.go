package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// cpuWatch reads the CPU time of local server processes (by pid, from
// /proc) so that a report can say how many cores each side used: on a small
// machine the client, the registry and the storage share the same cores.
type cpuWatch struct {
	names []string
	pids  map[string]int
}

// parseWatch reads "name=pid,name=pid".
func parseWatch(specs []string) (*cpuWatch, error) {
	w := &cpuWatch{pids: map[string]int{}}
	for _, s := range specs {
		name, p, ok := strings.Cut(s, "=")
		pid, err := strconv.Atoi(p)
		if !ok || name == "" || name == "client" || err != nil || pid <= 0 {
			return nil, fmt.Errorf("--watch-pid %q: want name=pid", s)
		}
		if _, dup := w.pids[name]; !dup {
			w.names = append(w.names, name)
		}
		w.pids[name] = pid
	}
	return w, nil
}

// procCPUSeconds is utime+stime of a process from /proc/<pid>/stat.
func procCPUSeconds(pid int) (float64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, false
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return (ut + st) / clockTicks, true
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

func (w *cpuWatch) snap() map[string]float64 {
	m := map[string]float64{"client": cpuSeconds()}
	if w == nil {
		return m
	}
	for _, n := range w.names {
		if v, ok := procCPUSeconds(w.pids[n]); ok {
			m[n] = v
		}
	}
	return m
}

// measure starts a CPU measurement; calling the returned function ends it,
// gives each recorder the CPU seconds spent meanwhile by the client and by
// every watched process, and returns them. Pass a recorder only when the
// phase ran nothing but its operations, so that CPU per operation means
// something.
func (o *commonOpts) measure(recs ...*recorder) func() map[string]float64 {
	before := o.watch.snap()
	return func() map[string]float64 {
		after := o.watch.snap()
		d := map[string]float64{}
		for k, v := range after {
			if b, ok := before[k]; ok {
				d[k] = v - b
			}
		}
		for _, r := range recs {
			r.mu.Lock()
			r.cpu = d
			r.mu.Unlock()
		}
		return d
	}
}
