package broker

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Default asset names and limits. They are the contract in docs/DESIGN.md; other processes (the
// CLI, the Kong plugin) assume them unless configured otherwise.
const (
	DefaultIncidentStream  = "NONAME_INCIDENTS"
	DefaultIncidentSubject = "noname.incidents"
	DefaultIncidentMaxAge  = 90 * 24 * time.Hour
	DefaultDuplicateWindow = 10 * time.Minute
	DefaultBlocksBucket    = "noname_blocks"
	DefaultAuditStream     = "BLOCKWIRE_AUDIT"
	DefaultAuditSubject    = "blockwire.audit"
	DefaultAuditMaxAge     = 365 * 24 * time.Hour
	DefaultDLQStream       = "BLOCKWIRE_DLQ"
	DefaultDLQSubject      = "blockwire.dlq"

	// AuditDuplicateWindow lets audit writers retry with the same Nats-Msg-Id (for example after
	// a lost ack) without recording an action twice. It is also used for the DLQ stream.
	AuditDuplicateWindow = 10 * time.Minute

	// BlockMarkerTTL is the bucket's LimitMarkerTTL. Setting it at all is what enables per-key
	// TTL (AllowMsgTTL) and makes the server leave a purge marker when a block expires, so that
	// watchers (kongsync, the enforcer) see the expiry as an event. Markers are tombstones kept
	// for this long: 10 minutes covers a watcher's reconnect or a Kong plugin restart without
	// keeping one record per expired block for days. The server's minimum is 1s.
	BlockMarkerTTL = 10 * time.Minute

	// minDuplicateWindow refuses windows so short that a webhook retried by Noname after a
	// timeout would store the same incident twice.
	minDuplicateWindow = time.Minute
	maxReplicas        = 5
)

// KVStream names the stream that backs a KV bucket (JetStream's convention), for the readers that
// scan or watch a bucket's history through the stream itself.
func KVStream(bucket string) string { return "KV_" + bucket }

// KVPrefix is the subject prefix of a KV bucket's keys, dot included: a key's subject is
// KVPrefix(bucket)+key.
func KVPrefix(bucket string) string { return "$KV." + bucket + "." }

// Names of every JetStream asset; zero fields take the defaults (see WithDefaults).
type Names struct {
	IncidentStream  string        // default "NONAME_INCIDENTS", subjects IncidentSubject+".>"
	IncidentSubject string        // default "noname.incidents"; webhook publishes to +".webhook", manual to +".manual"
	IncidentMaxAge  time.Duration // default 90 days (retention by age)
	DuplicateWindow time.Duration // default 10 minutes; at least 1 minute
	BlocksBucket    string        // default "noname_blocks"
	AuditStream     string        // default "BLOCKWIRE_AUDIT", subjects AuditSubject+".>"
	AuditSubject    string        // default "blockwire.audit"
	AuditMaxAge     time.Duration // default 365 days
	DLQStream       string        // default "BLOCKWIRE_DLQ", subjects DLQSubject+".>"
	DLQSubject      string        // default "blockwire.dlq"
	Replicas        int           // default 1
}

// WithDefaults returns n with every zero field set to its default.
func (n Names) WithDefaults() Names {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	defDur := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&n.IncidentStream, DefaultIncidentStream)
	def(&n.IncidentSubject, DefaultIncidentSubject)
	defDur(&n.IncidentMaxAge, DefaultIncidentMaxAge)
	defDur(&n.DuplicateWindow, DefaultDuplicateWindow)
	def(&n.BlocksBucket, DefaultBlocksBucket)
	def(&n.AuditStream, DefaultAuditStream)
	def(&n.AuditSubject, DefaultAuditSubject)
	defDur(&n.AuditMaxAge, DefaultAuditMaxAge)
	def(&n.DLQStream, DefaultDLQStream)
	def(&n.DLQSubject, DefaultDLQSubject)
	if n.Replicas == 0 {
		n.Replicas = 1
	}
	return n
}

var (
	// Stream names become subject tokens of the JetStream API ($JS.API.STREAM.INFO.<name>).
	streamNameRe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	// Same rule as nats.go's bucketValid.
	bucketNameRe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	// A literal subject prefix: dot-separated non-empty tokens, no wildcards, no '$' system prefix.
	subjectRe = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
)

// Validate applies defaults and reports every invalid field, so that a misconfiguration is
// refused at startup instead of surfacing as an obscure server error during Provision.
func (n Names) Validate() error {
	n = n.WithDefaults()
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	for _, s := range []struct{ field, v string }{
		{"IncidentStream", n.IncidentStream}, {"AuditStream", n.AuditStream}, {"DLQStream", n.DLQStream},
	} {
		if !streamNameRe.MatchString(s.v) {
			bad("names: %s %q: use only letters, digits, '-' and '_'", s.field, s.v)
		}
	}
	if !bucketNameRe.MatchString(n.BlocksBucket) {
		bad("names: BlocksBucket %q: use only letters, digits, '-' and '_'", n.BlocksBucket)
	}
	if n.IncidentStream == n.AuditStream || n.IncidentStream == n.DLQStream || n.AuditStream == n.DLQStream {
		bad("names: IncidentStream, AuditStream and DLQStream must differ")
	}

	subjects := []struct{ field, v string }{
		{"IncidentSubject", n.IncidentSubject}, {"AuditSubject", n.AuditSubject}, {"DLQSubject", n.DLQSubject},
	}
	for _, s := range subjects {
		if !subjectRe.MatchString(s.v) {
			bad("names: %s %q: want dot-separated tokens of letters, digits, '-' and '_', no wildcards", s.field, s.v)
		}
	}
	// The server refuses two streams whose subjects overlap, and "a.>" overlaps "a.b.>".
	for i := range subjects {
		for j := i + 1; j < len(subjects); j++ {
			if tokenPrefix(subjects[i].v, subjects[j].v) || tokenPrefix(subjects[j].v, subjects[i].v) {
				bad("names: %s %q and %s %q overlap; each stream needs its own subject prefix",
					subjects[i].field, subjects[i].v, subjects[j].field, subjects[j].v)
			}
		}
	}

	switch {
	case n.DuplicateWindow < minDuplicateWindow:
		bad("names: DuplicateWindow %s is shorter than %s: retried webhooks would be stored twice", n.DuplicateWindow, minDuplicateWindow)
	case n.IncidentMaxAge < n.DuplicateWindow:
		// The server requires the duplicate window to fit inside MaxAge.
		bad("names: IncidentMaxAge %s is shorter than DuplicateWindow %s", n.IncidentMaxAge, n.DuplicateWindow)
	}
	if n.AuditMaxAge < AuditDuplicateWindow {
		bad("names: AuditMaxAge %s is shorter than the audit duplicate window %s", n.AuditMaxAge, AuditDuplicateWindow)
	}
	if n.Replicas < 1 || n.Replicas > maxReplicas {
		bad("names: Replicas %d: want 1 to %d", n.Replicas, maxReplicas)
	}
	return errors.Join(errs...)
}

// tokenPrefix reports whether subject prefix p equals s or is a whole-token prefix of it.
func tokenPrefix(p, s string) bool {
	return p == s || strings.HasPrefix(s, p+".")
}
