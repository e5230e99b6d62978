// Command echoplugin is a test-only Kong plugin server: its Access handler reads what go-pdk
// decodes from the driver's answers and sends it back as the JSON body of kong.response.exit(200),
// so tests check the answers end to end through go-pdk's own decoding.
package main

import (
	"encoding/json"
	"log"

	"github.com/Kong/go-pdk"
	"github.com/Kong/go-pdk/server"
)

// Config selects the behaviour: Mode "" echoes, "unknown" calls a PDK method the driver does not
// answer in the access phase.
type Config struct {
	Mode string `json:"mode"`
}

// New is the constructor go-pdk calls for every plugin instance.
func New() interface{} { return &Config{} }

// Access collects values and errors into one map; errors are kept as strings so the test sees
// exactly what a plugin would see.
func (c *Config) Access(kong *pdk.PDK) {
	if c.Mode == "unknown" {
		_, err := kong.ServiceResponse.GetStatus()
		_ = kong.Log.Err("after unknown: ", errString(err))
		return
	}
	out := map[string]any{}
	put := func(name string, v any, err error) {
		out[name] = v
		if err != nil {
			out[name+"_err"] = err.Error()
		}
	}
	v, err := kong.Client.GetIp()
	put("ip", v, err)
	v, err = kong.Client.GetForwardedIp()
	put("forwarded_ip", v, err)
	v, err = kong.Request.GetHeader("X-Api-Key")
	put("header", v, err)
	v, err = kong.Request.GetHeader("x-missing")
	put("missing_header", v, err)
	h, err := kong.Request.GetHeaders(-1)
	put("headers_len", len(h), err)
	put("headers_multi", h["x-multi"], nil)
	v, err = kong.Request.GetRawQuery()
	put("raw_query", v, err)
	v, err = kong.Request.GetQueryArg("q")
	put("query_q", v, err)
	v, err = kong.Request.GetPath()
	put("path", v, err)
	v, err = kong.Request.GetMethod()
	put("method", v, err)
	svc, err := kong.Router.GetService()
	put("service", svc.Id+"/"+svc.Name, err)
	rt, err := kong.Router.GetRoute()
	put("route", rt.Id+"/"+rt.Name+"/"+rt.Service.Id, err)
	cons, err := kong.Client.GetConsumer()
	put("consumer", cons.Id+"/"+cons.Username+"/"+cons.CustomId, err)
	cred, err := kong.Client.GetCredential()
	put("credential", cred.Id+"/"+cred.ConsumerId, err)
	put("ctx_set", nil, kong.Ctx.SetShared("k", "v"))
	v, err = kong.Ctx.GetSharedString("k")
	put("ctx_get", v, err)
	a, err := kong.Ctx.GetSharedAny("absent")
	put("ctx_absent", a, err)
	v, err = kong.Nginx.GetVar("remote_addr")
	put("var_remote_addr", v, err)
	put("log", nil, kong.Log.Info("hello ", 42))
	body, _ := json.Marshal(out)
	kong.Response.Exit(200, body, nil)
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func main() {
	if err := server.StartServer(New, "0.1.0", 1000); err != nil {
		log.Fatal(err)
	}
}
