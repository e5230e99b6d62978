package faults

import "syscall"

// sysProcAttr makes the kernel kill a child when the test binary dies without running its
// cleanups (a test timeout's panic), so no server outlives the test run.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
