package schemas

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

// A JSON object that names a member twice means different things to different readers:
// encoding/json keeps the last, others the first or refuse it. The stream keeps the body as
// received, so a SIEM reading `{"type":"unblock",…,"type":"block"}` could see an unblock where
// blockwire applied a block. Such documents are refused.

// manyMembers is where duplicateMember stops comparing names one by one and uses a map: an
// object of a hundred thousand members must not cost their square.
const manyMembers = 16

// dupFrame is one open object or array of duplicateMember's walk.
type dupFrame struct {
	object bool
	names  [][]byte            // an object's member names so far (unescaped)
	set    map[string]struct{} // the same names, once there are manyMembers of them
	index  int                 // an array's current element
}

// duplicateMember returns the JSON Pointer of the first member whose name an earlier member of
// the same object has, names compared as a decoder compares them (after unescaping). data must
// be valid JSON (decodeGeneric accepted it). Frames, and their name lists, are reused from one
// object to the next at the same depth, so an ordinary document allocates almost nothing.
func duplicateMember(data []byte) (string, bool) {
	stack := make([]dupFrame, 0, 8)
	expectName := false
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '{':
			stack = pushFrame(stack, true)
			expectName = true
		case '[':
			stack = pushFrame(stack, false)
			expectName = false
		case '}', ']':
			stack = stack[:len(stack)-1]
			expectName = false
		case ',':
			top := &stack[len(stack)-1]
			expectName = top.object
			if !top.object {
				top.index++
			}
		case '"':
			end := stringEnd(data, i)
			if expectName {
				expectName = false
				top := &stack[len(stack)-1]
				name := unescapedName(data[i : end+1])
				if top.seen(name) {
					return memberPointer(stack, name), true
				}
			}
			i = end
		}
	}
	return "", false
}

// pushFrame opens an object or array, reusing the frame (and its name list) last used at that
// depth.
func pushFrame(stack []dupFrame, object bool) []dupFrame {
	if len(stack) == cap(stack) {
		stack = append(stack, dupFrame{})
	} else {
		stack = stack[:len(stack)+1]
	}
	f := &stack[len(stack)-1]
	if f.names == nil && object {
		f.names = make([][]byte, 0, 8)
	}
	f.object, f.names, f.index = object, f.names[:0], 0
	clear(f.set)
	return stack
}

// seen records name in the frame and reports whether the object had it already.
func (f *dupFrame) seen(name []byte) bool {
	if f.set != nil && len(f.names) >= manyMembers {
		if _, ok := f.set[string(name)]; ok {
			return true
		}
		f.set[string(name)] = struct{}{}
		f.names = append(f.names, name) // keeps the count; the map answers from here
		return false
	}
	for _, n := range f.names {
		if bytes.Equal(n, name) {
			return true
		}
	}
	f.names = append(f.names, name)
	if len(f.names) == manyMembers {
		if f.set == nil {
			f.set = make(map[string]struct{}, 2*manyMembers)
		}
		for _, n := range f.names {
			f.set[string(n)] = struct{}{}
		}
	}
	return false
}

// stringEnd is the index of the quote that closes the string opening at data[start].
func stringEnd(data []byte, start int) int {
	for i := start + 1; i < len(data); i++ {
		switch data[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return len(data) - 1
}

// unescapedName is a quoted member name as a decoder reads it.
func unescapedName(quoted []byte) []byte {
	if bytes.IndexByte(quoted, '\\') < 0 {
		return quoted[1 : len(quoted)-1]
	}
	var s string
	_ = json.Unmarshal(quoted, &s) // valid JSON: cannot fail
	return []byte(s)
}

// memberPointer is the JSON Pointer of member name of the innermost open object.
func memberPointer(stack []dupFrame, name []byte) string {
	var b strings.Builder
	for _, f := range stack[:len(stack)-1] {
		b.WriteByte('/')
		if f.object {
			b.WriteString(pointerToken(f.names[len(f.names)-1]))
		} else {
			b.WriteString(strconv.Itoa(f.index))
		}
	}
	b.WriteByte('/')
	b.WriteString(pointerToken(name))
	return b.String()
}

// pointerToken escapes a member name for a JSON Pointer (RFC 6901).
func pointerToken(name []byte) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(string(name))
}
