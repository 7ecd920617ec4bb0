//go:build race

package shim_test

// raceEnabled: the fixture shim is built with -race too, so a race in the
// task service under real containerd fails the run (the shim exits 66).
const raceEnabled = true
