package kongdriver

import (
	"context"
	"errors"
	"fmt"

	pb "github.com/Kong/go-pdk/server/kong_plugin_protocol"
	"google.golang.org/protobuf/proto"
)

// Request stands for the HTTP request Kong is processing; PDK calls are answered from it.
type Request struct {
	// ClientIP answers kong.client.get_ip and, unless ForwardedIP is set, get_forwarded_ip
	// (Kong's answer when the peer is not in trusted_ips).
	ClientIP    string
	ForwardedIP string
	ClientPort  int
	Method      string // default "GET"
	Scheme      string // default "http"
	Host        string // also sent as a "host" header when Headers has none
	Port        int    // default 80, or 443 for https
	Path        string // default "/"
	// Headers are looked up case-insensitively (names are lower-cased, "_" matches "-"). Kong sees
	// header lines in arrival order and searches only the first 100 (kong.request.get_header, and
	// get_headers' default max); a map has no order, so lines are ordered by lower-cased name,
	// each name's values in slice order. To push a header past the limit, add names sorting first.
	Headers  map[string][]string
	RawQuery string
	Body     []byte
	// Vars answer kong.nginx.get_var before the built-in ones (remote_addr, uri, http_*, ...).
	Vars       map[string]string
	Service    *Service
	Route      *Route
	Consumer   *Consumer
	Credential *Credential
}

// Service is the Kong service the request was routed to.
type Service struct {
	ID, Name, Host, Protocol, Path string
	Port                           int
	Tags                           []string
}

// Route is the Kong route that matched the request.
type Route struct {
	ID, Name                               string
	Paths, Hosts, Methods, Protocols, Tags []string
}

// Consumer is the authenticated Kong consumer.
type Consumer struct {
	ID, Username, CustomID string
	Tags                   []string
}

// Credential is the authenticated credential (kong.client.get_credential).
type Credential struct {
	ID, ConsumerID string
}

// Result is what happened during one event.
type Result struct {
	// Allowed is true when the event ended normally, without kong.response.exit.
	Allowed bool
	// Status, Body and Headers come from kong.response.exit; Status and Headers also record
	// kong.response.set_status / set_header / add_header made before. Header names are lower-cased.
	Status  int
	Body    []byte
	Headers map[string][]string
	// Calls lists every PDK method called, in order, including those of a replayed attempt.
	Calls []string
	// Logs holds kong.log.* messages as "<level>: <message>".
	Logs []string
	// Retried is set when the plugin dropped the connection and, as Kong does, the driver started
	// the instance again and replayed the event.
	Retried bool
}

// ErrUnknownMethod is wrapped by the error Access returns when the plugin calls a PDK method the
// driver does not answer; the message names the method.
var ErrUnknownMethod = errors.New("PDK method not implemented by kongdriver")

// Access runs the access phase for req, answering the plugin's PDK calls until the event ends.
func (inst *Instance) Access(ctx context.Context, req Request) (*Result, error) {
	return inst.HandleEvent(ctx, "access", req)
}

// HandleEvent runs any phase the plugin advertises ("rewrite", "access", "log", ...).
func (inst *Instance) HandleEvent(ctx context.Context, phase string, req Request) (*Result, error) {
	id, err := inst.currentID()
	if err != nil {
		return nil, err
	}
	st := newCallState(inst.d, &req)
	err = inst.d.runEvent(ctx, id, phase, st)
	if err != nil && isDropped(err) && ctx.Err() == nil {
		// Kong's handle_event starts the instance again on "closed" or "no plugin instance" and
		// replays the event (without bound; once is enough to recover from a restart here).
		if id, err = inst.restart(ctx); err == nil {
			st.res.Retried = true
			err = inst.d.runEvent(ctx, id, phase, st)
		}
	}
	if err != nil {
		return nil, err
	}
	return &st.res, nil
}

// runEvent does one cmd_handle_event exchange on one connection. The connection goes back to
// the pool only after a clean end; after an exit or any error it is closed, as Kong drops it.
func (d *Driver) runEvent(ctx context.Context, id int32, phase string, st *callState) error {
	c, err := d.pool.get(ctx)
	if err != nil {
		return err
	}
	disarm := c.arm(ctx)
	reuse := false
	defer func() {
		if clean := disarm(); clean && reuse {
			d.pool.put(c)
		} else {
			c.close()
		}
	}()

	call := &pb.RpcCall{Sequence: d.rpcSeq.Add(1), Call: &pb.RpcCall_CmdHandleEvent{
		CmdHandleEvent: &pb.CmdHandleEvent{InstanceId: id, EventName: phase},
	}}
	data, err := proto.Marshal(call)
	if err != nil {
		return fmt.Errorf("kongdriver: encode cmd_handle_event: %w", err)
	}
	if err := c.writeFrame(data); err != nil {
		return ioError(ctx, "send cmd_handle_event", err)
	}
	for {
		method, err := c.readFrame()
		if err != nil {
			return ioError(ctx, "read PDK method", err)
		}
		if len(method) == 0 {
			break // end of event; the RpcReturn follows
		}
		arg, err := c.readFrame()
		if err != nil {
			return ioError(ctx, "read PDK argument of "+string(method), err)
		}
		name := string(method)
		st.res.Calls = append(st.res.Calls, name)
		if name == "kong.response.exit" {
			// Kong ends the request inside this call and never answers it.
			return st.exit(arg)
		}
		reply, err := st.answer(name, arg)
		if err != nil {
			return err
		}
		if err := c.writeFrame(reply); err != nil {
			return ioError(ctx, "answer "+name, err)
		}
	}
	frame, err := c.readFrame()
	if err != nil {
		return ioError(ctx, "read RpcReturn", err)
	}
	if _, err := decodeReturn(frame, call.Sequence); err != nil {
		return fmt.Errorf("kongdriver: cmd_handle_event: %w", err)
	}
	st.res.Allowed = true
	reuse = true
	return nil
}
