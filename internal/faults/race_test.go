//go:build race

package faults

// raceEnabled builds blockwire and the plugin with -race too.
const raceEnabled = true
