package kongsync

import (
	"context"
	"errors"
	"fmt"

	"github.com/kong/go-kong/kong"
)

// resolver turns the names blocks use (service, route, consumer: names or ids) into Kong ids. It
// caches answers, found or not, for one leadership: a full reconcile (every period) starts a
// fresh cache, so a service created after a block that names it is picked up within a period.
type resolver struct {
	api       *admin
	services  map[string]string // as named → id ("" when Kong has none)
	routes    map[string]routeIDs
	consumers map[string]string
}

type routeIDs struct {
	id, service string // service is "" for a route without one
}

func newResolver(api *admin) *resolver {
	r := &resolver{api: api}
	r.reset()
	return r
}

func (r *resolver) reset() {
	r.services = map[string]string{}
	r.routes = map[string]routeIDs{}
	r.consumers = map[string]string{}
}

// get asks Kong once; a 404 is an answer (""), anything else an error.
func (r *resolver) get(ctx context.Context, what string, fn func(context.Context) error) (bool, error) {
	err := r.api.call(ctx, what, false, fn)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (r *resolver) service(ctx context.Context, nameOrID string) (string, error) {
	if id, ok := r.services[nameOrID]; ok {
		return id, nil
	}
	var svc *kong.Service
	found, err := r.get(ctx, "look up service "+nameOrID, func(ctx context.Context) error {
		var err error
		svc, err = r.api.services.Get(ctx, kong.String(nameOrID))
		return err
	})
	if err != nil {
		return "", err
	}
	id := ""
	if found && svc.ID != nil {
		id = *svc.ID
	}
	r.services[nameOrID] = id
	return id, nil
}

func (r *resolver) route(ctx context.Context, nameOrID string) (routeIDs, error) {
	if ids, ok := r.routes[nameOrID]; ok {
		return ids, nil
	}
	var rt *kong.Route
	found, err := r.get(ctx, "look up route "+nameOrID, func(ctx context.Context) error {
		var err error
		rt, err = r.api.routes.Get(ctx, kong.String(nameOrID))
		return err
	})
	if err != nil {
		return routeIDs{}, err
	}
	var ids routeIDs
	if found && rt.ID != nil {
		ids.id = *rt.ID
		if rt.Service != nil && rt.Service.ID != nil {
			ids.service = *rt.Service.ID
		}
		r.routes[ids.id] = ids // plugins name routes by id: spare a lookup
	}
	r.routes[nameOrID] = ids
	return ids, nil
}

func (r *resolver) consumer(ctx context.Context, usernameOrID string) (string, error) {
	if id, ok := r.consumers[usernameOrID]; ok {
		return id, nil
	}
	var c *kong.Consumer
	found, err := r.get(ctx, "look up consumer "+usernameOrID, func(ctx context.Context) error {
		var err error
		c, err = r.api.consumers.Get(ctx, kong.String(usernameOrID))
		return err
	})
	if err != nil {
		return "", err
	}
	id := ""
	if found && c.ID != nil {
		id = *c.ID
	}
	r.consumers[usernameOrID] = id
	return id, nil
}

// scope resolves a block's service/route to a plugin scope. A route alone is the scope when one
// is named: a Route+Service instance would outrank (and so silently switch off) a user's
// route-level plugin, which the sync must never do. problem explains a scope Kong cannot hold
// (unknown service or route, a route of another service); err is a failure to ask.
func (r *resolver) scope(ctx context.Context, ref scopeRef) (s Scope, problem string, err error) {
	var svcID string
	if ref.Service != "" {
		if svcID, err = r.service(ctx, ref.Service); err != nil {
			return Scope{}, "", err
		}
		if svcID == "" {
			return Scope{}, fmt.Sprintf("service %q not found in Kong", ref.Service), nil
		}
	}
	if ref.Route == "" {
		return Scope{Service: svcID}, "", nil
	}
	rt, err := r.route(ctx, ref.Route)
	if err != nil {
		return Scope{}, "", err
	}
	switch {
	case rt.id == "":
		return Scope{}, fmt.Sprintf("route %q not found in Kong", ref.Route), nil
	case svcID != "" && rt.service != svcID:
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
