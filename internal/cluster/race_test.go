//go:build race

package cluster

// raceEnabled builds the plugin under test with -race too, as cmd/noname-prevention's tests do.
const raceEnabled = true
