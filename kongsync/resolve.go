package kongsync

import (
	"context"
	"errors"
	"fmt"
)

// resolver turns the names blocks use (service, route, consumer: names or ids) into Kong ids. It
// caches answers, found or not, for one leadership: a full reconcile (every period) starts a
// fresh cache, so a service created after a block that names it is picked up within a period.
type resolver struct {
	api       *admin
	services  map[string]found // as named → what Kong has
	routes    map[string]found
	consumers map[string]found
}

// found is one lookup's answer: the entity's id, or why there is none.
type found struct {
	id      string
	service string // a route's service id; "" for a route without one
	why     string // when id is "": not in Kong, or a name no request can carry
}

func newResolver(api *admin) *resolver {
	r := &resolver{api: api}
	r.reset()
	return r
}

func (r *resolver) reset() {
	r.services = map[string]found{}
	r.routes = map[string]found{}
	r.consumers = map[string]found{}
}

// lookup asks Kong once for the entity of a kind (GET /{kind}s/{nameOrID}) and decodes it into v.
// A 404 is an answer, and so is a name no request can carry (a local failure: nothing was sent,
// and asking again would fail the same way): both leave why set. Anything else is an error.
func (r *resolver) lookup(ctx context.Context, kind, nameOrID string, v any) (why string, err error) {
	err = r.api.get(ctx, "look up "+kind+" "+nameOrID, kind+"s", nameOrID, v)
	switch {
	case err == nil:
		return "", nil
	case errors.Is(err, ErrNotFound):
		return fmt.Sprintf("%s %q not found in Kong", kind, nameOrID), nil
	case errors.Is(err, errLocalRequest):
		return fmt.Sprintf("%s %q cannot be looked up in Kong: %v", kind, nameOrID, err), nil
	}
	return "", err
}

// entityRef is what the sync reads of a service, route or consumer: its id, and a route's service.
type entityRef struct {
	ID      *string `json:"id"`
	Service *struct {
		ID *string `json:"id"`
	} `json:"service"`
}

// find resolves a kind's name or id once per reconcile, through cache.
func (r *resolver) find(ctx context.Context, cache map[string]found, kind, nameOrID string) (found, error) {
	if f, ok := cache[nameOrID]; ok {
		return f, nil
	}
	var e entityRef
	why, err := r.lookup(ctx, kind, nameOrID, &e)
	if err != nil {
		return found{}, err
	}
	f := found{why: why}
	if why == "" {
		if f.id = str(e.ID); f.id == "" {
			f.why = fmt.Sprintf("%s %q: kong answered without an id", kind, nameOrID)
		} else if e.Service != nil {
			f.service = str(e.Service.ID)
		}
	}
	cache[nameOrID] = f
	return f, nil
}

func (r *resolver) service(ctx context.Context, nameOrID string) (found, error) {
	return r.find(ctx, r.services, "service", nameOrID)
}

func (r *resolver) route(ctx context.Context, nameOrID string) (found, error) {
	f, err := r.find(ctx, r.routes, "route", nameOrID)
	if err == nil && f.id != "" {
		r.routes[f.id] = f // plugins name routes by id: spare a lookup
	}
	return f, err
}

func (r *resolver) consumer(ctx context.Context, usernameOrID string) (found, error) {
	return r.find(ctx, r.consumers, "consumer", usernameOrID)
}

// scope resolves a block's service/route to a plugin scope. A route alone is the scope when one
// is named: a Route+Service instance would outrank (and so silently switch off) a user's
// route-level plugin, which the sync must never do. problem explains a scope Kong cannot hold
// (unknown service or route, a route of another service); err is a failure to ask.
func (r *resolver) scope(ctx context.Context, ref scopeRef) (s Scope, problem string, err error) {
	var svc found
	if ref.Service != "" {
		if svc, err = r.service(ctx, ref.Service); err != nil {
			return Scope{}, "", err
		}
		if svc.id == "" {
			return Scope{}, svc.why, nil
		}
	}
	if ref.Route == "" {
		return Scope{Service: svc.id}, "", nil
	}
	rt, err := r.route(ctx, ref.Route)
	if err != nil {
		return Scope{}, "", err
	}
	switch {
	case rt.id == "":
		return Scope{}, rt.why, nil
	case svc.id != "" && rt.service != svc.id:
		return Scope{}, fmt.Sprintf("route %q does not belong to service %q", ref.Route, ref.Service), nil
	}
	return Scope{Route: rt.id}, "", nil
}

// routeService returns the service of a route id, asking Kong when the route is not cached; ""
// when unknown (the caller then treats the route as unconstrained by service).
func (r *resolver) routeService(ctx context.Context, routeID string) (string, error) {
	rt, err := r.route(ctx, routeID)
	return rt.service, err
}
