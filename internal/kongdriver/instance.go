package kongdriver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"

	pb "github.com/Kong/go-pdk/server/kong_plugin_protocol"
	"google.golang.org/protobuf/proto"
)

// Instance is one started plugin instance, i.e. one plugin config as Kong sees it.
type Instance struct {
	d      *Driver
	seq    int64
	config []byte // the JSON sent with cmd_start_instance, kept to start it again

	mu     sync.Mutex
	id     int32
	closed bool
}

// ID returns the instance id the plugin server answered (go-pdk uses "__seq__" when non-zero).
func (inst *Instance) ID() int {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	return int(inst.id)
}

// Seq returns the "__seq__" the instance was started with.
func (inst *Instance) Seq() int { return int(inst.seq) }

// Config returns the config JSON sent to the plugin, with the fields Kong adds.
func (inst *Instance) Config() []byte { return inst.config }

// StartInstance starts an instance as Kong does: config is the plugin's config, to which Kong
// adds "__seq__" (a counter the driver assigns unless config has one), and "route_id",
// "service_id" and "consumer_id" (null unless config has them; real Kong leaves nil ones out,
// which encoding/json cannot tell apart).
func (d *Driver) StartInstance(ctx context.Context, config map[string]any) (*Instance, error) {
	full := make(map[string]any, len(config)+4)
	for k, v := range config {
		full[k] = v
	}
	var seq int64
	if v, ok := full["__seq__"]; ok {
		n, err := toInt64(v)
		if err != nil {
			return nil, fmt.Errorf("kongdriver: __seq__: %w", err)
		}
		seq = n
	} else {
		seq = d.instSeq.Add(1)
		full["__seq__"] = seq
	}
	for _, k := range []string{"route_id", "service_id", "consumer_id"} {
		if _, ok := full[k]; !ok {
			full[k] = nil
		}
	}
	data, err := json.Marshal(full)
	if err != nil {
		return nil, fmt.Errorf("kongdriver: encode instance config: %w", err)
	}
	inst := &Instance{d: d, seq: seq, config: data}
	id, err := d.startInstance(ctx, data)
	if err != nil {
		return nil, err
	}
	inst.id = id
	return inst, nil
}

func (d *Driver) startInstance(ctx context.Context, config []byte) (int32, error) {
	ret, err := d.command(ctx, "cmd_start_instance", &pb.RpcCall{Call: &pb.RpcCall_CmdStartInstance{
		CmdStartInstance: &pb.CmdStartInstance{Name: d.info.Name, Config: config},
	}})
	if err != nil {
		return 0, err
	}
	st := ret.GetInstanceStatus()
	if st == nil {
		return 0, errors.New("kongdriver: cmd_start_instance: answer has no instance_status")
	}
	return st.InstanceId, nil
}

// restart starts the instance again after the server lost it, keeping its config and "__seq__",
// as Kong's reset_instance does.
func (inst *Instance) restart(ctx context.Context) (int32, error) {
	id, err := inst.d.startInstance(ctx, inst.config)
	if err != nil {
		return 0, fmt.Errorf("kongdriver: start instance again: %w", err)
	}
	inst.mu.Lock()
	inst.id = id
	inst.mu.Unlock()
	return id, nil
}

func (inst *Instance) currentID() (int32, error) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if inst.closed {
		return 0, errors.New("kongdriver: instance is closed")
	}
	return inst.id, nil
}

// CloseInstance sends cmd_close_instance. Note that go-pdk v0.11 then also forgets every other
// instance started more than 60s ago (it never updates their last-event time); Kong and this
// driver recover from that by starting an instance again on its next event.
func (d *Driver) CloseInstance(ctx context.Context, inst *Instance) error {
	id, err := inst.currentID()
	if err != nil {
		return err
	}
	if _, err := d.command(ctx, "cmd_close_instance", &pb.RpcCall{Call: &pb.RpcCall_CmdCloseInstance{
		CmdCloseInstance: &pb.CmdCloseInstance{InstanceId: id},
	}}); err != nil {
		return err
	}
	inst.mu.Lock()
	inst.closed = true
	inst.mu.Unlock()
	return nil
}

// InstanceStatus is the plugin's answer to cmd_get_instance_status.
type InstanceStatus struct {
	Name      string
	ID        int
	StartedAt int64 // Unix seconds
}

// Status asks the plugin server about the instance; it fails if the server does not know it.
func (inst *Instance) Status(ctx context.Context) (*InstanceStatus, error) {
	id, err := inst.currentID()
	if err != nil {
		return nil, err
	}
	ret, err := inst.d.command(ctx, "cmd_get_instance_status", &pb.RpcCall{Call: &pb.RpcCall_CmdGetInstanceStatus{
		CmdGetInstanceStatus: &pb.CmdGetInstanceStatus{InstanceId: id},
	}})
	if err != nil {
		return nil, err
	}
	st := ret.GetInstanceStatus()
	return &InstanceStatus{Name: st.GetName(), ID: int(st.GetInstanceId()), StartedAt: st.GetStartedAt()}, nil
}

// command sends an RpcCall that has no PDK loop and reads its RpcReturn. go-pdk answers a failed
// command by closing the connection without a word, so that shows up as a dropped connection.
func (d *Driver) command(ctx context.Context, name string, call *pb.RpcCall) (*pb.RpcReturn, error) {
	c, err := d.pool.get(ctx)
	if err != nil {
		return nil, err
	}
	disarm := c.arm(ctx)
	call.Sequence = d.rpcSeq.Add(1)
	ret, err := roundTrip(c, call)
	clean := disarm()
	if err != nil {
		c.close()
		return nil, ioError(ctx, name, err)
	}
	if clean {
		d.pool.put(c)
	} else {
		c.close() // cancellation may have set a past deadline on it
	}
	return ret, nil
}

func roundTrip(c *conn, call *pb.RpcCall) (*pb.RpcReturn, error) {
	data, err := proto.Marshal(call)
	if err != nil {
		return nil, err
	}
	if err := c.writeFrame(data); err != nil {
		return nil, err
	}
	frame, err := c.readFrame()
	if err != nil {
		return nil, err
	}
	return decodeReturn(frame, call.Sequence)
}

// decodeReturn checks the sequence as Kong does (it asserts on a mismatch): a wrong one means the
// stream is out of step and nothing read from it can be trusted.
func decodeReturn(frame []byte, seq int64) (*pb.RpcReturn, error) {
	var ret pb.RpcReturn
	if err := proto.Unmarshal(frame, &ret); err != nil {
		return nil, fmt.Errorf("decode RpcReturn: %w", err)
	}
	if ret.Sequence != seq {
		return nil, fmt.Errorf("RpcReturn sequence %d, want %d", ret.Sequence, seq)
	}
	return &ret, nil
}

func toInt64(v any) (int64, error) {
	switch n := v.(type) {
	case int:
		return int64(n), nil
	case int32:
		return int64(n), nil
	case int64:
		return n, nil
	case float64:
		if n != math.Trunc(n) {
			return 0, fmt.Errorf("%v is not an integer", n)
		}
		return int64(n), nil
	case json.Number:
		return n.Int64()
	}
	return 0, fmt.Errorf("%T is not a number", v)
}
