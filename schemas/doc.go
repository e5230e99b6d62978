// Package schemas is the contract shared by every blockwire process: the
// JSON Schemas of incidents, blocks and audit records (embedded, draft
// 2020-12), the Go types they describe, their validation, and the encoding
// of block keys.
//
// # Validation
//
// ParseIncident, ValidateBlock and ValidateAudit return a *ValidationError
// listing every violation, each with a JSON Pointer path ("/" for the
// document root) and a short message meant for whoever sent the document.
// Schema errors and semantic checks the schema cannot express (IP addresses
// that parse, RFC 3339 times, the shape of a JWT) appear in one list.
// Human messages for pattern, anyOf and oneOf failures live in the schemas
// themselves, in an "x-messages" object next to the keyword.
//
// # Block keys
//
// A block's key in the KV bucket noname_blocks is five dot-separated tokens:
//
//	<kind>.<service>.<route>.<name>.<value>
//
// kind is the literal entity type (ip, cidr, header, cookie, query, jwt,
// consumer), so a watcher can subscribe to "ip.>". Every other token is
// encoded byte by byte: A-Z, a-z, 0-9 and "-" stand for themselves; any
// other byte (including "_", ".", "=", "/" and each byte of non-ASCII UTF-8)
// becomes "_" and two uppercase hex digits; an empty component is the token
// "=", which cannot otherwise occur because "=" is always escaped. Examples:
//
//	ip.=.=.=.203_2E0_2E113_2E7
//	header.=.=.x-api-key.<sha256 hex of the value>
//	cookie.orders.=.session_5Fid.<sha256 hex>
//
// value is the canonical stored value (see CanonicalValue); for secrets the
// caller passes the hex SHA-256. ParseBlockKey accepts exactly the keys that
// BlockKey produces, so the mapping is a bijection. See KEYS.md.
package schemas
