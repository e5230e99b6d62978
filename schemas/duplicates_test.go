package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestDuplicateMember(t *testing.T) {
	var many strings.Builder
	many.WriteString(`{`)
	for i := range 40 {
		fmt.Fprintf(&many, `"k%d":%d,`, i, i)
	}
	many.WriteString(`"k3":0}`)
	tests := []struct {
		name, doc, want string // want "": no duplicate
	}{
		{"none", `{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}`, ""},
		{"top level", `{"a":1,"a":2}`, "/a"},
		{"escaped the same", `{"type":"block","\u0074ype":"unblock"}`, "/type"},
		{"in an entity", `{"id":"x","entities":[{"type":"ip","value":"1.2.3.4","value":"5.6.7.8"}]}`, "/entities/0/value"},
		{"in a later element", `{"e":[{},{"x":1},{"x":1,"x":2}]}`, "/e/2/x"},
		{"names in strings do not count", `{"a":"{\"a\":1,\"a\":2}","b":"\"a\":"}`, ""},
		{"strings after an empty object", `[{},"x","x",{"y":[],"z":{}}]`, ""},
		{"pointer escaping", `{"a/b":{"c~d":1,"c~d":2}}`, "/a~1b/c~0d"},
		{"past the linear scan", many.String(), "/k3"},
		{"an empty name twice", `{"":1,"":2}`, "/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, dup := duplicateMember([]byte(tt.doc))
			if dup != (tt.want != "") || got != tt.want {
				t.Fatalf("duplicateMember = %q, %v; want %q", got, dup, tt.want)
			}
			if tt.want != "" && !referenceDuplicate([]byte(tt.doc)) {
				t.Fatal("the reference finds no duplicate: the case is wrong")
			}
		})
	}
}

func TestParseIncidentRefusesDuplicateMembers(t *testing.T) {
	body := `{"id":"dup","type":"unblock","entities":[{"type":"ip","value":"203.0.113.7"}],"type":"block"}`
	_, err := ParseIncident([]byte(body))
	var verr *ValidationError
	if !errors.As(err, &verr) || len(verr.Violations) != 1 || verr.Violations[0].Path != "/type" {
		t.Fatalf("ParseIncident = %v, want one violation at /type", err)
	}
}

// referenceDuplicate finds a repeated member name with encoding/json's tokenizer: the oracle
// for duplicateMember (FuzzParseIncident).
func referenceDuplicate(data []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(data))
	type frame struct {
		object   bool
		names    map[string]bool
		wantName bool
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				if top != nil && top.object {
					top.wantName = true
				}
				stack = append(stack, &frame{object: true, names: map[string]bool{}, wantName: true})
				continue
			case '[':
				if top != nil && top.object {
					top.wantName = true
				}
				stack = append(stack, &frame{})
				continue
			default:
				stack = stack[:len(stack)-1]
				if len(stack) == 0 {
					return false
				}
				continue
			}
		case string:
			if top != nil && top.object && top.wantName {
				if top.names[v] {
					return true
				}
				top.names[v] = true
				top.wantName = false
				continue
			}
		}
		if top != nil && top.object {
			top.wantName = true
		}
	}
}
