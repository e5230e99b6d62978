// Command noname-prevention is the Kong plugin server (go-pdk) that enforces blockwire's
// blocks inside Kong: it mirrors the NATS KV bucket of blocks into memory and refuses matching
// requests in the access phase. The executable's name is the plugin's name in Kong.
//
// Kong runs it as a plugin server (kong.conf):
//
//	plugins = bundled,noname-prevention
//	pluginserver_names = noname-prevention
//	pluginserver_noname_prevention_start_cmd = /usr/local/bin/noname-prevention
//	pluginserver_noname_prevention_query_cmd = /usr/local/bin/noname-prevention -dump
//
// Flags are go-pdk's: -dump prints the plugin's description, -kong-prefix sets where the
// socket goes. Everything else comes from the plugin's config and BLOCKWIRE_* environment
// variables (docs/ENFORCER.md).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/Kong/go-pdk/server"
	"github.com/rs/zerolog"

	"github.com/blockwire/blockwire/enforcer"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "0.1.0"

// DefaultPriority orders the plugin among Kong's: higher runs first. 1950 runs after cors
// (2000) and bot-detection (2500), and before every bundled authentication plugin (session
// 1900, jwt 1450, oauth2 1400, key-auth 1250, ldap-auth 1200, basic-auth 1100, hmac-auth
// 1030), ip-restriction (990), acl (950) and rate limiting (910): a blocked client is refused
// before Kong spends work on its credentials, and cannot use 401-versus-403 to test stolen
// ones. The price: Kong identifies the consumer only in authentication, so consumer blocks
// match only when the plugin runs after it; set BLOCKWIRE_ENFORCER_PRIORITY=1000 (after
// every bundled auth plugin) for that (docs/ENFORCER.md).
const DefaultPriority = 1950

func main() {
	flag.Parse() // go-pdk's flags (-dump, -kong-prefix); StartServer parses them again
	priority := DefaultPriority
	if v := os.Getenv("BLOCKWIRE_ENFORCER_PRIORITY"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil {
			fmt.Fprintf(os.Stderr, "noname-prevention: BLOCKWIRE_ENFORCER_PRIORITY %q is not a number; using %d\n", v, priority)
		} else {
			priority = p
		}
	}
	if flagSet("dump") {
		// Kong's query_cmd: describe the plugin, connect to nothing.
		if err := server.StartServer(enforcer.Describe, version, priority); err != nil {
			fmt.Fprintln(os.Stderr, "noname-prevention:", err)
			os.Exit(1)
		}
		return
	}

	log := newLogger()
	rt, err := enforcer.NewRuntime(enforcer.RuntimeConfig{KongPrefix: flagValue("kong-prefix"), Logger: log, Priority: priority})
	if err != nil {
		log.Error().Err(err).Msg("start")
		os.Exit(1)
	}
	// go-pdk never returns from StartServer and handles no signal: Kong stops the plugin
	// server with SIGTERM, which is when the last snapshot is written.
	go func() {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		<-ctx.Done()
		closeAndExit(rt, log, 0)
	}()
	log.Info().Str("version", version).Int("priority", priority).Msg("noname-prevention plugin server starting")
	if err := server.StartServer(rt.New, version, priority); err != nil {
		log.Error().Err(err).Msg("plugin server stopped")
		closeAndExit(rt, log, 1)
	}
}

func closeAndExit(rt *enforcer.Runtime, log zerolog.Logger, code int) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := rt.Close(ctx); err != nil {
		log.Error().Err(err).Msg("stop")
	}
	os.Exit(code)
}

// newLogger writes JSON lines to stderr, which Kong copies into its own log.
func newLogger() zerolog.Logger {
	level := zerolog.InfoLevel
	if v := os.Getenv("BLOCKWIRE_ENFORCER_LOG_LEVEL"); v != "" {
		if l, err := zerolog.ParseLevel(v); err == nil {
			level = l
		}
	}
	return zerolog.New(os.Stderr).Level(level).With().Timestamp().Str("plugin", "noname-prevention").Logger()
}

func flagSet(name string) bool {
	f := flag.Lookup(name)
	return f != nil && f.Value.String() == "true"
}

func flagValue(name string) string {
	if f := flag.Lookup(name); f != nil {
		return f.Value.String()
	}
	return ""
}
