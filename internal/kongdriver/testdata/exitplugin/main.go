// Command exitplugin is a test-only Kong plugin server whose Access handler rejects every request
// with kong.response.exit, so the driver's handling of an unanswered exit call can be tested.
package main

import (
	"log"

	"github.com/Kong/go-pdk"
	"github.com/Kong/go-pdk/server"
)

// Config is empty; the response is fixed so tests can compare it byte for byte.
type Config struct{}

// New is the constructor go-pdk calls for every plugin instance.
func New() interface{} { return &Config{} }

// Access answers 403 with a JSON body and two headers. It returns right after Exit because Kong
// never answers the exit call: the connection is gone and any further PDK call would fail.
func (c *Config) Access(kong *pdk.PDK) {
	kong.Response.Exit(403, []byte(`{"message":"blocked by exitplugin"}`), map[string][]string{
		"Content-Type": {"application/json"},
		"X-Blocked-By": {"exitplugin", "test"},
	})
}

func main() {
	if err := server.StartServer(New, "0.1.0", 1000); err != nil {
		log.Fatal(err)
	}
}
