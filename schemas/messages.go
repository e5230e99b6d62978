package schemas

import (
	"fmt"
	"math/big"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// schemaViolations flattens the validator's error tree into one violation
// per failing leaf keyword. Parents such as allOf, $ref and if/then only say
// "something below failed", so they are walked through and dropped, unless
// the schema gives an x-messages entry for them (anyOf/oneOf, whose branches'
// own errors would mislead: "missing service" when route alone is fine).
func schemaViolations(verr *jsonschema.ValidationError, messages map[string]string, into []Violation) []Violation {
	loc := keywordLocation(verr.SchemaURL, verr.ErrorKind.KeywordPath())
	path := pointer(verr.InstanceLocation)
	if ap, ok := verr.ErrorKind.(*kind.AdditionalProperties); ok {
		// Point at each unknown property rather than at its parent.
		msg, ok := messages[loc]
		if !ok {
			msg = "unknown property"
		}
		for _, p := range ap.Properties {
			into = append(into, Violation{Path: appendPointer(path, p), Message: msg})
		}
		return into
	}
	if msg, ok := messages[loc]; ok {
		return append(into, Violation{Path: path, Message: msg})
	}
	if len(verr.Causes) > 0 {
		for _, c := range verr.Causes {
			into = schemaViolations(c, messages, into)
		}
		return into
	}
	if req, ok := verr.ErrorKind.(*kind.Required); ok {
		for _, p := range req.Missing {
			into = append(into, Violation{Path: path, Message: fmt.Sprintf("required property %q missing", p)})
		}
		return into
	}
	return append(into, Violation{Path: path, Message: kindMessage(verr.ErrorKind)})
}

// kindMessage words one failed keyword for a person who sent the document,
// not for one who wrote the schema: "must be at most 128 characters long"
// rather than "maxLength: got 200, want 128".
func kindMessage(k jsonschema.ErrorKind) string {
	switch k := k.(type) {
	case *kind.Type:
		if k.Got == "number" && len(k.Want) == 1 && k.Want[0] == "integer" {
			return "must be an integer, not a fractional number"
		}
		want := make([]string, len(k.Want))
		for i, w := range k.Want {
			want[i] = article(w)
		}
		return fmt.Sprintf("must be %s, not %s", strings.Join(want, " or "), article(k.Got))
	case *kind.Enum:
		want := make([]string, len(k.Want))
		for i, w := range k.Want {
			want[i] = fmt.Sprint(w)
		}
		return "must be one of: " + strings.Join(want, ", ")
	case *kind.Const:
		return fmt.Sprintf("must be %v", k.Want)
	case *kind.MinLength:
		if k.Want == 1 {
			return "must not be empty"
		}
		return fmt.Sprintf("must be at least %d characters long, not %d", k.Want, k.Got)
	case *kind.MaxLength:
		return fmt.Sprintf("must be at most %d characters long, not %d", k.Want, k.Got)
	case *kind.MinItems:
		return fmt.Sprintf("must have at least %s, not %d", plural(k.Want, "item"), k.Got)
	case *kind.MaxItems:
		return fmt.Sprintf("must have at most %s, not %d", plural(k.Want, "item"), k.Got)
	case *kind.Minimum:
		return fmt.Sprintf("must be at least %s, not %s", ratString(k.Want), ratString(k.Got))
	case *kind.Maximum:
		return fmt.Sprintf("must be at most %s, not %s", ratString(k.Want), ratString(k.Got))
	case *kind.Pattern:
		// Every pattern in the schemas has an x-messages entry (a test checks
		// it); this is the fallback for a new one that was forgotten.
		return fmt.Sprintf("does not match the pattern %s", k.Want)
	case *kind.FalseSchema:
		return "not allowed here"
	}
	return k.LocalizedString(message.NewPrinter(language.English))
}

// article names a JSON type with its article: "an integer", "a string".
func article(jsonType string) string {
	switch jsonType {
	case "integer", "object", "array":
		return "an " + jsonType
	case "null":
		return "null"
	}
	return "a " + jsonType
}

// ratString prints an exact number as a person writes it: 3600, 1.5, 1e+30.
func ratString(r *big.Rat) string {
	if r == nil {
		return "?"
	}
	if r.IsInt() && r.Num().BitLen() < 64 {
		return r.Num().String()
	}
	f, _ := r.Float64()
	return strconv.FormatFloat(f, 'g', -1, 64)
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
