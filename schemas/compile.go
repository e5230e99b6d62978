package schemas

import (
	"bytes"
	"embed"
	"fmt"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// files holds the JSON Schemas; they are the contract, the Go code only
// mirrors them.
//
//go:embed incident.schema.json block.schema.json audit.schema.json
var files embed.FS

// schemaBase is the prefix of every schema's $id.
const schemaBase = "https://github.com/blockwire/blockwire/schemas/"

// Schema file names, also the last element of their $id.
const (
	IncidentSchemaFile = "incident.schema.json"
	BlockSchemaFile    = "block.schema.json"
	AuditSchemaFile    = "audit.schema.json"
)

// SchemaJSON returns the raw text of one embedded schema file (one of the
// *SchemaFile constants), e.g. to serve it over HTTP.
func SchemaJSON(name string) ([]byte, error) {
	b, err := files.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("schemas: %w", err)
	}
	return b, nil
}

// compiled is what compilation produces; it is never written after
// compileAll returns, so sharing it between goroutines is safe.
type compiled struct {
	incident, block, audit *jsonschema.Schema
	// messages maps a keyword location (schema location + "/" + keyword,
	// e.g. ".../incident.schema.json#/$defs/scope/anyOf") to the human
	// message that an "x-messages" entry in the schema gives for it.
	messages map[string]string
}

// schemaSet compiles the embedded schemas on first use. sync.OnceValues
// keeps it free of mutable package state: the result is fixed once computed.
var schemaSet = sync.OnceValues(compileAll)

func compileAll() (*compiled, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	out := &compiled{messages: map[string]string{}}
	for _, name := range []string{IncidentSchemaFile, BlockSchemaFile, AuditSchemaFile} {
		raw, err := files.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("schemas: read %s: %w", name, err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("schemas: decode %s: %w", name, err)
		}
		if err := c.AddResource(schemaBase+name, doc); err != nil {
			return nil, fmt.Errorf("schemas: add %s: %w", name, err)
		}
		collectMessages(schemaBase+name+"#", doc, out.messages)
	}
	var err error
	if out.incident, err = c.Compile(schemaBase + IncidentSchemaFile); err != nil {
		return nil, fmt.Errorf("schemas: compile %s: %w", IncidentSchemaFile, err)
	}
	if out.block, err = c.Compile(schemaBase + BlockSchemaFile); err != nil {
		return nil, fmt.Errorf("schemas: compile %s: %w", BlockSchemaFile, err)
	}
	if out.audit, err = c.Compile(schemaBase + AuditSchemaFile); err != nil {
		return nil, fmt.Errorf("schemas: compile %s: %w", AuditSchemaFile, err)
	}
	return out, nil
}

// collectMessages walks a schema document and records every
// "x-messages": {"<keyword path>": "<message>"} under the keyword's location,
// in the form the validator reports locations (fragment JSON Pointer). The
// keyword path may have several tokens ("properties/name") to name a boolean
// "false" subschema, which cannot carry x-messages itself.
func collectMessages(loc string, v any, into map[string]string) {
	switch v := v.(type) {
	case map[string]any:
		if msgs, ok := v["x-messages"].(map[string]any); ok {
			for kw, m := range msgs {
				if s, ok := m.(string); ok {
					into[loc+"/"+kw] = s
				}
			}
		}
		for k, sub := range v {
			collectMessages(loc+"/"+escapeToken(k), sub, into)
		}
	case []any:
		for i, e := range v {
			collectMessages(fmt.Sprintf("%s/%d", loc, i), e, into)
		}
	}
}

// keywordLocation is where in the schema a leaf error's keyword sits.
func keywordLocation(schemaURL string, kw []string) string {
	if len(kw) == 0 {
		return schemaURL
	}
	return schemaURL + "/" + strings.Join(kw, "/")
}
