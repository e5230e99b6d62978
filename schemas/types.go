package schemas

import "time"

// EntityType is the kind of thing an incident asks to block. It is also the
// first token of a block key, so a KV watcher can filter one kind ("ip.>").
type EntityType string

// Entity types, as they appear in incidents, blocks and block keys.
const (
	EntityIP       EntityType = "ip"       // an IPv4 or IPv6 address
	EntityCIDR     EntityType = "cidr"     // an IPv4 or IPv6 prefix
	EntityHeader   EntityType = "header"   // a request header value; Name is the header
	EntityCookie   EntityType = "cookie"   // a cookie value; Name is the cookie
	EntityQuery    EntityType = "query"    // a query-string value; Name is the parameter
	EntityJWT      EntityType = "jwt"      // a claim value (Claim set) or a whole token
	EntityConsumer EntityType = "consumer" // a Kong consumer username or id
)

// EntityTypes lists every entity type in the order the schema lists them.
func EntityTypes() []EntityType {
	return []EntityType{EntityIP, EntityCIDR, EntityHeader, EntityCookie, EntityQuery, EntityJWT, EntityConsumer}
}

// Valid reports whether t is one of the known entity types.
func (t EntityType) Valid() bool {
	switch t {
	case EntityIP, EntityCIDR, EntityHeader, EntityCookie, EntityQuery, EntityJWT, EntityConsumer:
		return true
	}
	return false
}

// HasName reports whether entities of this type need a Name (the header,
// cookie or query parameter the value is read from).
func (t EntityType) HasName() bool {
	return t == EntityHeader || t == EntityCookie || t == EntityQuery
}

// IncidentType says what an incident asks for.
type IncidentType string

// Incident types. An absent type means TypeIncident.
const (
	TypeIncident IncidentType = "incident" // a detection: block its entities
	TypeBlock    IncidentType = "block"    // an explicit block request
	TypeUnblock  IncidentType = "unblock"  // lift the blocks on its entities
)

// Severity is Noname's incident severity.
type Severity string

// Severities, lowest first.
const (
	SeverityInfo     Severity = "info"
	SeverityLow      Severity = "low"
	SeverityMedium   Severity = "medium"
	SeverityHigh     Severity = "high"
	SeverityCritical Severity = "critical"
)

// Incident is the webhook body and the message on noname.incidents.*.
// Unknown JSON fields are ignored here; the original bytes stay in the stream.
type Incident struct {
	ID              string       `json:"id"`
	Type            IncidentType `json:"type,omitempty"`
	Title           string       `json:"title,omitempty"`
	Severity        Severity     `json:"severity,omitempty"`
	Status          string       `json:"status,omitempty"`
	DetectionTime   time.Time    `json:"detectionTime,omitzero"`
	API             *API         `json:"api,omitempty"`
	Entities        []Entity     `json:"entities"`
	DurationSeconds *int64       `json:"durationSeconds,omitempty"` // nil: the configured default
	Scope           *Scope       `json:"scope,omitempty"`           // nil: everywhere
}

// EffectiveType returns the incident's type, TypeIncident when unset (an
// Incident built in Go rather than by ParseIncident may leave it empty).
func (i *Incident) EffectiveType() IncidentType {
	if i.Type == "" {
		return TypeIncident
	}
	return i.Type
}

// API is the attacked endpoint, kept for audit.
type API struct {
	Host   string `json:"host,omitempty"`
	Path   string `json:"path,omitempty"`
	Method string `json:"method,omitempty"`
}

// Entity is one thing to block.
type Entity struct {
	Type  EntityType `json:"type"`
	Value string     `json:"value,omitempty"`
	Name  string     `json:"name,omitempty"`  // header, cookie and query only
	Claim string     `json:"claim,omitempty"` // jwt only; empty means Value is the whole token
	// ValueSHA256 replaces Value for secrets given by hash (header, cookie,
	// query, whole token): exactly one of the two is set.
	ValueSHA256 string `json:"valueSha256,omitempty"`
}

// Scope limits a block to a Kong service and/or route (names or ids).
type Scope struct {
	Service string `json:"service,omitempty"`
	Route   string `json:"route,omitempty"`
}

// Headers blockwire sets on every incident message, beside Nats-Msg-Id.
const (
	// HeaderSource says who stored the incident: webhook or manual. A message
	// without it was published straight to NATS by another producer.
	HeaderSource = "Blockwire-Source"
	// HeaderReceivedAt is when blockwire received it (RFC 3339).
	HeaderReceivedAt = "Blockwire-Received-At"
	// HeaderActor names who asked for a manual action; it becomes the actor
	// of its audit records.
	HeaderActor = "Blockwire-Actor"
	// HeaderUnblockSeq, on the purge marker an unblock leaves in the blocks bucket, is the
	// stream sequence of the incident that unblocked: a block from an earlier incident,
	// redelivered or applied late, finds it and does not bring the block back.
	HeaderUnblockSeq = "Blockwire-Unblock-Seq"
)

// Source says which path created a block.
type Source string

// Block sources.
const (
	SourceWebhook Source = "webhook" // from an incident received over the webhook
	SourceManual  Source = "manual"  // from the CLI or POST /v1/blocks
	SourceNATS    Source = "nats"    // from an incident published straight to NATS
	SourceRebuild Source = "rebuild" // re-created by `blockwire rebuild` from the log
)

// Block is the value stored under a key of the KV bucket noname_blocks.
// Exactly one of Value and ValueSHA256 is set: secrets (header, cookie and
// query values, whole tokens) are stored only as their SHA-256.
type Block struct {
	Kind        EntityType `json:"kind"`
	Name        string     `json:"name,omitempty"` // header/cookie/query name, or the jwt claim
	Value       string     `json:"value,omitempty"`
	ValueSHA256 string     `json:"valueSha256,omitempty"` // 64 lowercase hex digits
	Scope       *Scope     `json:"scope,omitempty"`
	CreatedAt   time.Time  `json:"createdAt"`
	ExpiresAt   time.Time  `json:"expiresAt"` // authoritative: readers drop the block then
	IncidentID  string     `json:"incidentId,omitempty"`
	IncidentIDs []string   `json:"incidentIds,omitempty"`
	Title       string     `json:"title,omitempty"`
	Severity    Severity   `json:"severity,omitempty"`
	Source      Source     `json:"source"`
	// CreatedSeq and UpdatedSeq are the NONAME_INCIDENTS sequences of the
	// incidents that created and last changed the block: a redelivered
	// incident recognises its own write and does not apply it twice.
	CreatedSeq uint64 `json:"createdSeq,omitempty"`
	UpdatedSeq uint64 `json:"updatedSeq,omitempty"`
}

// Action is what an audit record reports.
type Action string

// Audit actions; each is also the last token of the subject blockwire.audit.<action>.
const (
	ActionAccepted    Action = "accepted"     // an incident passed validation
	ActionBlocked     Action = "blocked"      // a new block was written
	ActionExtended    Action = "extended"     // an existing block got a later expiry
	ActionUnblocked   Action = "unblocked"    // a block was lifted on request
	ActionExpired     Action = "expired"      // a block reached its expiresAt
	ActionRefused     Action = "refused"      // a guardrail refused a block
	ActionDeadLetter  Action = "dead_letter"  // an incident went to blockwire.dlq.>
	ActionKongApplied Action = "kong_applied" // kongsync applied a block to Kong
	ActionKongFailed  Action = "kong_failed"  // kongsync failed to apply a block
)

// AuditRecord is one message on blockwire.audit.<action>.
type AuditRecord struct {
	Time       time.Time  `json:"time"`
	Action     Action     `json:"action"`
	IncidentID string     `json:"incidentId,omitempty"`
	EventSeq   uint64     `json:"eventSeq,omitempty"` // sequence in NONAME_INCIDENTS
	BlockKey   string     `json:"blockKey,omitempty"`
	Kind       EntityType `json:"kind,omitempty"`
	Detail     string     `json:"detail,omitempty"`
	Actor      string     `json:"actor,omitempty"`
}
