//go:build enforcer_testhooks

package enforcer

// TestPanicIP is the client address that makes a plugin built with -tags enforcer_testhooks
// panic inside its handler, so tests can prove that the compiled plugin recovers. Real
// builds have no such address (testhook_off.go).
const TestPanicIP = "192.0.2.250"

func checkTestPanic(ip string) {
	if ip == TestPanicIP {
		panic("enforcer: test panic for " + ip)
	}
}
