// Command calls is a Kong plugin server whose Access handler makes the PDK calls listed in its
// config, in order, and nothing else. Benchmarks use it to reproduce the calls a real plugin makes
// (for example the noname-prevention enforcer) and so measure what those round trips cost alone.
//
// Config: {"calls": [...]} with entries "forwarded_ip", "ip", "header:<name>", "headers",
// "raw_query", "path", "method", "service", "route", "consumer", "credential". Without entries it
// makes one kong.client.get_forwarded_ip call, the cheapest useful thing an IP blocker does.
package main

import (
	"log"
	"strings"

	"github.com/Kong/go-pdk"
	"github.com/Kong/go-pdk/server"
)

const (
	Version  = "0.1.0"
	Priority = 1000
)

// Config lists the PDK calls to make. go-pdk derives Kong's schema from this struct: the json tag
// is used verbatim as the field name, so it must not carry ",omitempty".
type Config struct {
	Calls []string `json:"calls"`
}

// New is the constructor go-pdk calls for every plugin instance.
func New() interface{} { return &Config{} }

// Access makes the configured calls. Results are discarded: the point is the round trips. The
// config object is shared by concurrent events, so it is only read here, never cached into.
func (c *Config) Access(kong *pdk.PDK) {
	if len(c.Calls) == 0 {
		_, _ = kong.Client.GetForwardedIp()
		return
	}
	for _, call := range c.Calls {
		if !makeCall(kong, call) {
			// A typo in a benchmark's config would silently measure less work; the log call makes
			// it visible to the driver (and costs one more round trip, which is also visible).
			_ = kong.Log.Err("calls: unknown entry ", call)
		}
	}
}

// makeCall performs the PDK call named by one config entry and reports whether it knew the entry.
func makeCall(kong *pdk.PDK, call string) bool {
	if name, ok := strings.CutPrefix(call, "header:"); ok {
		_, _ = kong.Request.GetHeader(name)
		return true
	}
	switch call {
	case "forwarded_ip":
		_, _ = kong.Client.GetForwardedIp()
	case "ip":
		_, _ = kong.Client.GetIp()
	case "headers":
		_, _ = kong.Request.GetHeaders(-1)
	case "raw_query":
		_, _ = kong.Request.GetRawQuery()
	case "path":
		_, _ = kong.Request.GetPath()
	case "method":
		_, _ = kong.Request.GetMethod()
	case "service":
		_, _ = kong.Router.GetService()
	case "route":
		_, _ = kong.Router.GetRoute()
	case "consumer":
		_, _ = kong.Client.GetConsumer()
	case "credential":
		_, _ = kong.Client.GetCredential()
	default:
		return false
	}
	return true
}

func main() {
	if err := server.StartServer(New, Version, Priority); err != nil {
		log.Fatal(err)
	}
}
