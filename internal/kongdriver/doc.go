// Package kongdriver plays Kong's side of the go-pdk plugin-server protocol (go-pdk v0.11, the
// ProtoBuf protocol Kong 3.7+ speaks), so a plugin binary built with server.StartServer can be
// exercised and benchmarked without Kong, which cannot be installed where the tests run.
//
// What it mirrors from Kong (kong/runloop/plugin_servers/rpc/pb_rpc.lua and the PDK):
//
//   - The plugin process is started with -kong-prefix DIR and listens on DIR/<name>.socket, the
//     name being the executable's basename; -dump describes it (Dump).
//   - Every frame is a 4-byte little-endian length followed by that many bytes. Kong sends one
//     RpcCall per connection use and reads one RpcReturn; connections are kept alive and reused
//     (a pool here, ngx's keepalive pool in Kong), so concurrent events use separate connections.
//   - During cmd_handle_event the plugin sends a method-name frame and an argument frame for each
//     PDK call and Kong answers one frame (an empty one when the PDK function returns nil). An
//     empty method frame followed by the RpcReturn ends the event.
//   - kong.response.exit is never answered: Kong ends the request and the connection is dropped.
//   - When the connection is closed under it (go-pdk closes it on "no plugin instance", e.g. after
//     a restart of the plugin process), Kong starts the instance again and replays the event.
//   - Instance configs carry "__seq__", which go-pdk uses as the instance id.
//
// PDK answers are computed from a Request value that stands for the HTTP request Kong received.
package kongdriver
