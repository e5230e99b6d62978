package enforcer

import (
	"github.com/Kong/go-pdk"
)

// request is what the enforcer needs of Kong for one request. Every method but Exit is one
// PDK round trip, the dominant cost of a request, so the matcher calls them only when an
// active block can use the answer. pdkRequest implements it on go-pdk; tests implement it
// directly to choose the client address, which go-pdk's own test harness fixes.
type request interface {
	ForwardedIP() (string, error)
	Headers(max int) (map[string][]string, error)
	RawQuery() (string, error)
	Consumer() (id, username string, err error)
	Service() (id, name string, err error)
	Route() (id, name string, err error)
	Var(name string) (string, error)
	// Exit ends the request with a response; Kong never answers it, so the handler must
	// return right after.
	Exit(status int, body []byte, headers map[string][]string)
}

// pdkRequest is request on a go-pdk event. It is a single pointer, so converting it to the
// interface does not allocate.
type pdkRequest struct{ kong *pdk.PDK }

var _ request = pdkRequest{}

func (r pdkRequest) ForwardedIP() (string, error) { return r.kong.Client.GetForwardedIp() }

func (r pdkRequest) Headers(max int) (map[string][]string, error) {
	return r.kong.Request.GetHeaders(max)
}

func (r pdkRequest) RawQuery() (string, error) { return r.kong.Request.GetRawQuery() }

func (r pdkRequest) Consumer() (string, string, error) {
	c, err := r.kong.Client.GetConsumer()
	return c.Id, c.Username, err
}

func (r pdkRequest) Service() (string, string, error) {
	s, err := r.kong.Router.GetService()
	return s.Id, s.Name, err
}

func (r pdkRequest) Route() (string, string, error) {
	rt, err := r.kong.Router.GetRoute()
	return rt.Id, rt.Name, err
}

func (r pdkRequest) Var(name string) (string, error) { return r.kong.Nginx.GetVar(name) }

func (r pdkRequest) Exit(status int, body []byte, headers map[string][]string) {
	r.kong.Response.Exit(status, body, headers)
}
