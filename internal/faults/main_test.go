// Package faults breaks real blockwire processes on purpose and checks what survives: a
// `blockwire serve` killed with SIGKILL in the middle of a burst of incidents (TestCrash), and
// an external nats-server stopped under load while serve and the Kong plugin keep running
// (TestNATSOutage). Every part is the real one, built from this module: the serve daemon, the
// nats-server binary, the noname-prevention plugin driven through internal/kongdriver.
//
// The compact forms run with `go test ./internal/faults` (and so with `make test`); the long
// forms run when BLOCKWIRE_SOAK=1. The figures each run observed are logged with -v.
package faults

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	removeBuildDir()
	os.Exit(code)
}

// soak is true when the long forms of the scenarios are asked for.
func soak() bool { return os.Getenv("BLOCKWIRE_SOAK") == "1" }

// profile picks the compact or the soak form of a scenario's sizes.
func profile[T any](compact, long T) T {
	if soak() {
		return long
	}
	return compact
}
