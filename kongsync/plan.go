package kongsync

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/kong/go-kong/kong"

	"github.com/blockwire/blockwire/schemas"
)

// Instance is one managed plugin as it should be in Kong.
type Instance struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Scope   Scope  `json:"scope"`
	Entries int    `json:"entries"` // deny entries of an ip-restriction; 1 for a request-termination

	plugin *kong.Plugin // the full entity a write sends
	hash   string       // of plugin without its id, to recognise drift
}

// key identifies an instance by what it is (name and scope), whatever its id.
func (in Instance) key() string { return in.Name + "|" + in.Scope.String() }

// Op actions.
const (
	ActionCreate = "create" // PUT a plugin Kong does not have
	ActionUpdate = "update" // PUT over a managed plugin that differs
	ActionDelete = "delete" // DELETE a managed plugin nothing asks for any more
)

// Op is one write of a plan.
type Op struct {
	Action  string `json:"action"`
	ID      string `json:"id"`
	Name    string `json:"name"`
	Scope   Scope  `json:"scope"`
	Entries int    `json:"entries,omitempty"`
	// Drift marks a write that repairs Kong: the desired state of this instance is what the sync
	// last left in Kong, yet Kong differs (edited or deleted by hand, restored from a backup).
	Drift bool `json:"drift,omitempty"`

	plugin *kong.Plugin
	done   bool // written by apply
}

// Unresolved is a block scope Kong cannot hold; those blocks stay the plugin's alone.
type Unresolved struct {
	Kind     schemas.EntityType `json:"kind"` // ip (addresses and ranges) or consumer
	Service  string             `json:"service,omitempty"`
	Route    string             `json:"route,omitempty"`
	Consumer string             `json:"consumer,omitempty"`
	Blocks   int                `json:"blocks"`
	Reason   string             `json:"reason"`
}

// Plan is what one reconcile found and means to write.
type Plan struct {
	Instances  []Instance                 `json:"instances"`
	Ops        []Op                       `json:"ops"`
	Risks      []Risk                     `json:"risks"`
	Unresolved []Unresolved               `json:"unresolved"`
	PluginOnly map[schemas.EntityType]int `json:"pluginOnly"` // active blocks only the plugin enforces
	Blocks     int                        `json:"blocks"`     // active blocks of every kind

	next time.Time // the earliest expiry among projected blocks, when a reconcile is due anyway
}

// planner holds what a plan is computed from.
type planner struct {
	workspace string
	message   string
	res       *resolver
	applied   map[string]string // instance key → content the sync last left in Kong; nil before the first success
}

// plan compares the desired state with Kong's plugins and lists the writes that converge them.
func (pl *planner) plan(ctx context.Context, d desiredState, plugins []*kong.Plugin) (*Plan, error) {
	p := &Plan{PluginOnly: d.pluginOnly, Blocks: d.blocks, Ops: []Op{}, Instances: []Instance{}, Risks: []Risk{}, Unresolved: []Unresolved{}}
	var managed, users []*kong.Plugin
	for _, k := range plugins {
		switch {
		case hasTag(k, ManagedTag) && (str(k.Name) == pluginIPRestriction || str(k.Name) == pluginTermination):
			managed = append(managed, k)
		case !hasTag(k, ManagedTag):
			users = append(users, k)
		}
	}
	denyInst, err := pl.denyInstances(ctx, p, d, users)
	if err != nil {
		return nil, err
	}
	termInst, err := pl.terminationInstances(ctx, p, d, users)
	if err != nil {
		return nil, err
	}
	p.Instances = append(denyInst, termInst...)
	pl.diff(p, managed)
	return p, nil
}

// denyInstances decides the managed ip-restriction instances and the precedence risks.
func (pl *planner) denyInstances(ctx context.Context, p *Plan, d desiredState, users []*kong.Plugin) ([]Instance, error) {
	lists := map[Scope][]string{}
	for _, ref := range sortedRefs(d.deny) {
		sc, problem, err := pl.res.scope(ctx, ref)
		if err != nil {
			return nil, err
		}
		if problem != "" {
			p.Unresolved = append(p.Unresolved, Unresolved{Kind: schemas.EntityIP, Service: ref.Service, Route: ref.Route,
				Blocks: len(d.deny[ref]), Reason: problem})
			continue
		}
		lists[sc] = append(lists[sc], d.deny[ref]...)
	}
	// Resolve every route involved, ours and the users', so that overlaps can be decided.
	routeSvc := map[string]string{}
	for sc := range lists {
		if sc.Route != "" {
			svc, err := pl.res.routeService(ctx, sc.Route)
			if err != nil {
				return nil, err
			}
			routeSvc[sc.Route] = svc
		}
	}
	var userIPR []*kong.Plugin
	for _, u := range users {
		if str(u.Name) != pluginIPRestriction {
			continue
		}
		userIPR = append(userIPR, u)
		if r := scopeOf(u).Route; r != "" {
			svc, err := pl.res.routeService(ctx, r)
			if err != nil {
				return nil, err
			}
			routeSvc[r] = svc
		}
	}
	rs := func(route string) string { return routeSvc[route] }

	// Kong runs only the most specific instance: carry the less specific managed lists into every
	// more specific managed instance, so that scoped blocks never hide global ones.
	global := lists[Scope{}]
	full := map[Scope][]string{}
	for sc, list := range lists {
		all := slices.Clone(list)
		if sc != (Scope{}) {
			all = append(all, global...)
		}
		if svc := routeSvc[sc.Route]; sc.Route != "" && svc != "" {
			all = append(all, lists[Scope{Service: svc}]...)
		}
		full[sc] = sortAddrs(all)
	}

	var out []Instance
	for _, sc := range sortedScopes(full) {
		list := full[sc]
		blocked := false
		for _, u := range userIPR {
			us := scopeOf(u)
			switch {
			case us == sc: // Kong allows one ip-restriction per scope: ours would be a 409
				blocked = true
				p.addRisk(RiskOccupied, u, sc, missing(list, u))
			case enabled(u) && sc.rank() < us.rank() && overlaps(us, sc, rs):
				// Ours would outrank theirs and silently switch it off for these requests.
				blocked = true
				p.addRisk(RiskShadow, u, sc, missing(list, u))
			}
		}
		if blocked {
			continue
		}
		out = append(out, pl.instance(pluginIPRestriction, sc, len(list), pl.ipRestriction(sc, list)))
	}
	// The precedence trap: a user-owned instance more specific than a managed one takes its place.
	for _, inst := range out {
		for _, u := range userIPR {
			us := scopeOf(u)
			if enabled(u) && us != inst.Scope && us.rank() < inst.Scope.rank() && overlaps(us, inst.Scope, rs) {
				p.addRisk(RiskBypass, u, inst.Scope, missing(full[inst.Scope], u))
			}
		}
	}
	return out, nil
}

// terminationInstances decides the managed request-termination instances for consumer blocks.
func (pl *planner) terminationInstances(ctx context.Context, p *Plan, d desiredState, users []*kong.Plugin) ([]Instance, error) {
	refs := make([]consumerRef, 0, len(d.consumers))
	for ref := range d.consumers {
		refs = append(refs, ref)
	}
	slices.SortFunc(refs, func(a, b consumerRef) int {
		return cmp.Or(cmp.Compare(a.Consumer, b.Consumer), cmp.Compare(a.Service, b.Service), cmp.Compare(a.Route, b.Route))
	})
	seen := map[Scope]bool{}
	var out []Instance
	for _, ref := range refs {
		unresolved := Unresolved{Kind: schemas.EntityConsumer, Consumer: ref.Consumer, Service: ref.Service, Route: ref.Route, Blocks: 1}
		c, err := pl.res.consumer(ctx, ref.Consumer)
		if err != nil {
			return nil, err
		}
		if c.id == "" {
			unresolved.Reason = c.why
			p.Unresolved = append(p.Unresolved, unresolved)
			continue
		}
		sc, problem, err := pl.res.scope(ctx, ref.scopeRef)
		if err != nil {
			return nil, err
		}
		if problem != "" {
			unresolved.Reason = problem
			p.Unresolved = append(p.Unresolved, unresolved)
			continue
		}
		sc.Consumer = c.id
		if seen[sc] { // the same consumer named by username and by id
			continue
		}
		seen[sc] = true
		occupied := false
		for _, u := range users {
			if str(u.Name) == pluginTermination && scopeOf(u) == sc {
				occupied = true
				p.addRisk(RiskOccupied, u, sc, 1)
			}
		}
		if !occupied {
			out = append(out, pl.instance(pluginTermination, sc, 1, pl.termination(sc)))
		}
	}
	return out, nil
}

// diff turns instances and the managed plugins Kong has into writes.
func (pl *planner) diff(p *Plan, managed []*kong.Plugin) {
	have := map[string]*kong.Plugin{}
	for _, k := range managed {
		have[str(k.Name)+"|"+scopeOf(k).String()] = k
	}
	for i := range p.Instances {
		inst := &p.Instances[i]
		key := inst.key()
		cur := have[key]
		delete(have, key)
		op := Op{ID: inst.ID, Name: inst.Name, Scope: inst.Scope, Entries: inst.Entries, plugin: inst.plugin}
		switch {
		case cur == nil:
			op.Action = ActionCreate
		case str(cur.ID) != inst.ID:
			// A managed plugin at this scope under another id (an older blockwire, a restore):
			// adopt it, its tag, name and scope checked, rather than delete and recreate it.
			inst.ID, op.ID = str(cur.ID), str(cur.ID)
			adopted := *inst.plugin
			adopted.ID = kong.String(inst.ID)
			inst.plugin, op.plugin = &adopted, &adopted
			if matches(cur, &adopted) {
				continue
			}
			op.Action = ActionUpdate
		case matches(cur, inst.plugin):
			continue
		default:
			op.Action = ActionUpdate
		}
		op.Drift = pl.applied != nil && pl.applied[key] == inst.hash
		p.Ops = append(p.Ops, op)
	}
	slices.SortStableFunc(p.Ops, func(a, b Op) int { return cmp.Compare(b.Scope.rank(), a.Scope.rank()) })
	for _, k := range sortedPlugins(have) {
		// A managed plugin the last success did not leave (restored from a backup) is drift; one
		// it left is simply no longer wanted.
		_, known := pl.applied[str(k.Name)+"|"+scopeOf(k).String()]
		p.Ops = append(p.Ops, Op{Action: ActionDelete, ID: str(k.ID), Name: str(k.Name), Scope: scopeOf(k),
			Drift: pl.applied != nil && !known})
	}
}

func (pl *planner) instance(name string, sc Scope, entries int, k *kong.Plugin) Instance {
	return Instance{ID: *k.ID, Name: name, Scope: sc, Entries: entries, plugin: k, hash: hashPlugin(k)}
}

// ipRestriction is the managed deny list at a scope. Every config field is given (unset ones as
// null) so that a plugin edited by hand is told apart from ours.
func (pl *planner) ipRestriction(sc Scope, deny []string) *kong.Plugin {
	k := pl.base(pluginIPRestriction, sc)
	k.Config = kong.Configuration{"allow": nil, "deny": deny, "status": 403, "message": pl.message}
	return k
}

// termination blocks a consumer with 403 and the message.
func (pl *planner) termination(sc Scope) *kong.Plugin {
	k := pl.base(pluginTermination, sc)
	k.Config = kong.Configuration{"status_code": 403, "message": pl.message, "body": nil, "content_type": nil,
		"trigger": nil, "echo": false}
	return k
}

func (pl *planner) base(name string, sc Scope) *kong.Plugin {
	k := &kong.Plugin{
		ID: kong.String(PluginID(pl.workspace, name, sc)), Name: kong.String(name),
		InstanceName: kong.String(instanceName(name, sc)), Enabled: kong.Bool(true),
		Tags: kong.StringSlice(ManagedTag),
	}
	if sc.Service != "" {
		k.Service = &kong.Service{ID: kong.String(sc.Service)}
	}
	if sc.Route != "" {
		k.Route = &kong.Route{ID: kong.String(sc.Route)}
	}
	if sc.Consumer != "" {
		k.Consumer = &kong.Consumer{ID: kong.String(sc.Consumer)}
	}
	return k
}
