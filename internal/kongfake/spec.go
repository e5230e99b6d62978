package kongfake

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// specYAML is Kong's published description of the 3.9 OSS Admin API, copied unchanged from
// ../shared/kong (see testdata/SOURCE.md). Embedded so that tests run on a clean clone.
//
//go:embed testdata/admin-api-oss-3.9.yaml
var specYAML []byte

// The description's one path typo (REFERENCE.md): the service plugins list/create path lacks the
// slash before "plugins". The loaded document carries the path Kong really serves instead.
const (
	typoServicePlugins  = "/services/{service_id_or_name}plugins"
	fixedServicePlugins = "/services/{service_id_or_name}/plugins"
)

// spec is the loaded description: a router from requests to operations, and the entity field
// lists Kong's own checks need (the description's request bodies are bare "type: object").
type spec struct {
	router routers.Router
	// fields lists the properties each entity schema declares, e.g. fields["Plugin"]["config"].
	fields map[string]map[string]bool
}

func loadSpec() (*spec, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(specYAML)
	if err != nil {
		return nil, fmt.Errorf("kongfake: load Admin API description: %w", err)
	}
	item := doc.Paths.Value(typoServicePlugins)
	if item == nil || doc.Paths.Value(fixedServicePlugins) != nil {
		return nil, errors.New("kongfake: the description no longer has the known service plugins typo; revisit spec.go")
	}
	// Delete the typo rather than keep both: "/services/fooplugins" would otherwise route to it.
	doc.Paths.Delete(typoServicePlugins)
	doc.Paths.Set(fixedServicePlugins, item)
	if err := fixPluginReferences(doc); err != nil {
		return nil, err
	}
	// Some of the description's examples break its own schemas; they do not describe requests.
	if err := doc.Validate(context.Background(), openapi3.DisableExamplesValidation()); err != nil {
		return nil, fmt.Errorf("kongfake: validate Admin API description: %w", err)
	}
	// Its one server is http://localhost:8001/; the fake listens elsewhere. No servers matches any host.
	doc.Servers = nil
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("kongfake: route Admin API description: %w", err)
	}
	s := &spec{router: router, fields: map[string]map[string]bool{}}
	for _, name := range []string{"Plugin", "Service", "Route", "Consumer"} {
		ref := doc.Components.Schemas[name]
		if ref == nil || ref.Value == nil {
			return nil, fmt.Errorf("kongfake: the description has no %s schema", name)
		}
		f := map[string]bool{}
		for p := range ref.Value.Properties {
			f[p] = true
		}
		s.fields[name] = f
	}
	return s, nil
}

// fixPluginReferences corrects the description's second defect. Its plugin-request body types
// "service", "route" and "consumer" as strings, while its own prose for the same fields says
// 'With JSON, use "route":{"id":"<route id>"} or "route":{"name":"<route name>"}', its Plugin
// entity schema makes them {"id": …} objects, and Kong's JSON API (and go-kong) use records: a
// string is refused by Kong ("expected a record"). The loaded copy takes the prose's form: null,
// or an object with exactly one of id or the endpoint key (name; username for consumers).
func fixPluginReferences(doc *openapi3.T) error {
	body := doc.Components.RequestBodies["plugin-request"]
	if body == nil || body.Value == nil || body.Value.Content["application/json"] == nil {
		return errors.New("kongfake: the description has no plugin-request body; revisit spec.go")
	}
	schema := body.Value.Content["application/json"].Schema
	if schema == nil || schema.Value == nil {
		return errors.New("kongfake: the plugin-request body has no schema; revisit spec.go")
	}
	for field, key := range map[string]string{"service": "name", "route": "name", "consumer": "username"} {
		cur := schema.Value.Properties[field]
		if cur == nil || cur.Value == nil || !cur.Value.Type.Is(openapi3.TypeString) {
			return fmt.Errorf("kongfake: plugin-request %s is no longer a string; revisit spec.go", field)
		}
		ref := openapi3.NewObjectSchema()
		ref.Description = cur.Value.Description
		ref.Nullable = true
		ref.Properties = openapi3.Schemas{"id": openapi3.NewStringSchema().NewRef(), key: openapi3.NewStringSchema().NewRef()}
		no, one := false, uint64(1)
		ref.AdditionalProperties = openapi3.AdditionalProperties{Has: &no}
		ref.MinProps, ref.MaxProps = 1, &one
		schema.Value.Properties[field] = ref.NewRef()
	}
	return nil
}

// match is a request routed to one operation of the description.
type match struct {
	path   string            // the path template, e.g. "/plugins/{plugin_id}"
	params map[string]string // path parameters
}

// validate checks method, path, query and body of r against the description. It returns the
// operation matched, or a description of what the description does not allow. r.Body is
// restored for the handler.
func (s *spec) validate(r *http.Request) (match, error) {
	route, params, err := s.router.FindRoute(r)
	if err != nil {
		return match{}, fmt.Errorf("no operation %s %s in the description: %w", r.Method, r.URL.Path, err)
	}
	// kin-openapi ignores query parameters an operation does not declare; Kong's description
	// declares every one it accepts, so anything else is a client bug.
	declared := map[string]bool{}
	for _, ps := range []openapi3.Parameters{route.PathItem.Parameters, route.Operation.Parameters} {
		for _, p := range ps {
			if p.Value != nil && p.Value.In == openapi3.ParameterInQuery {
				declared[p.Value.Name] = true
			}
		}
	}
	var undeclared []string
	for name := range r.URL.Query() {
		if !declared[name] {
			undeclared = append(undeclared, name)
		}
	}
	if len(undeclared) > 0 {
		sort.Strings(undeclared)
		return match{}, fmt.Errorf("query parameter(s) %s not declared for %s %s", strings.Join(undeclared, ", "), r.Method, route.Path)
	}
	in := &openapi3filter.RequestValidationInput{
		Request:    r,
		PathParams: params,
		Route:      route,
		Options: &openapi3filter.Options{
			MultiError:                        true,
			RejectWhenRequestBodyNotSpecified: true,
			SkipSettingDefaults:               true,
		},
	}
	if err := openapi3filter.ValidateRequest(r.Context(), in); err != nil {
		return match{}, fmt.Errorf("%s %s does not match the description: %w", r.Method, route.Path, err)
	}
	return match{path: route.Path, params: params}, nil
}

// unknownFields lists the keys of body that entity's schema does not declare.
func (s *spec) unknownFields(entity string, body map[string]any) []string {
	var out []string
	for k := range body {
		if !s.fields[entity][k] {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}
