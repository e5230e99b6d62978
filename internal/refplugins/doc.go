// Package refplugins holds reference Kong plugins built with go-pdk's server.StartServer. They
// exist to put a floor under benchmarks of the plugin-server protocol: noop measures the cost of
// an event that makes no PDK call, and calls makes exactly the PDK calls its config lists, so a
// benchmark can mirror a real plugin's calls and see how much of its cost is the protocol alone.
//
// Each plugin is a main package; build it as `go build -o DIR/<name> ./internal/refplugins/<name>`
// because go-pdk takes the plugin's name (and its socket's name) from the executable's basename.
package refplugins
