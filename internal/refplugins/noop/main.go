// Command noop is a Kong plugin server whose Access handler does nothing: one event on it costs
// the plugin-server protocol's floor (the event call, the end-of-event frame and the RpcReturn).
package main

import (
	"log"

	"github.com/Kong/go-pdk"
	"github.com/Kong/go-pdk/server"
)

// Version and Priority are what Kong reads from -dump; they matter only for ordering in Kong.
const (
	Version  = "0.1.0"
	Priority = 1000
)

// Config is empty: noop has nothing to configure, but go-pdk needs a struct to decode into.
type Config struct{}

// New is the constructor go-pdk calls for every plugin instance.
func New() interface{} { return &Config{} }

// Access is present so that go-pdk advertises the access phase; it makes no PDK call on purpose.
func (c *Config) Access(kong *pdk.PDK) {}

func main() {
	if err := server.StartServer(New, Version, Priority); err != nil {
		log.Fatal(err)
	}
}
