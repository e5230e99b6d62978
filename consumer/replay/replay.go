// Package replay reads the incident log and the audit trail back: a merged
// timeline of every incident and what was done about it (Run), the history
// of one block (Explain), and the audit records since a point (Audit). It
// reads with ordered, ephemeral consumers, so it leaves nothing behind on
// the server, and streams with bounded memory.
package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blockwire/blockwire/broker"
	"github.com/blockwire/blockwire/schemas"
)

// Stream names an event's origin in the timeline.
const (
	StreamIncidents = "incidents"
	StreamAudit     = "audit"
)

// Event is one line of the timeline: an incident as stored, or an audit
// record of what was done.
type Event struct {
	Time     time.Time            `json:"time"`
	Stream   string               `json:"stream"`
	Seq      uint64               `json:"seq"` // the message's sequence in its stream
	Incident *Incident            `json:"incident,omitempty"`
	Audit    *schemas.AuditRecord `json:"audit,omitempty"`

	incident *schemas.Incident // the parsed incident, for filtering
}

// Incident summarises a stored incident.
type Incident struct {
	ID       string `json:"id,omitempty"`
	Type     string `json:"type,omitempty"`
	Source   string `json:"source"`
	Title    string `json:"title,omitempty"`
	Severity string `json:"severity,omitempty"`
	Entities int    `json:"entities"`
	// Invalid says why the message is not an incident (it was dead-lettered).
	Invalid string `json:"invalid,omitempty"`
}

// Filter selects events; zero fields select everything.
type Filter struct {
	Since, Until time.Time
	Incident     string             // incident id: its incident, its records, and later records of its keys
	Kind         schemas.EntityType // events about entities of this kind
	Value        string             // events about this value (with Name for header, cookie, query)
	Name         string
}

// Validate refuses filters that cannot select anything.
func (f Filter) Validate() error {
	if f.Kind != "" && !f.Kind.Valid() {
		return fmt.Errorf("kind %q is not one of ip, cidr, header, cookie, query, jwt, consumer", f.Kind)
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && f.Until.Before(f.Since) {
		return fmt.Errorf("until %s is before since %s", f.Until.Format(time.RFC3339), f.Since.Format(time.RFC3339))
	}
	return nil
}

// Reader reads blockwire's streams back.
type Reader struct {
	js    jetstream.JetStream
	names broker.Names
}

// NewReader returns a Reader; names' zero fields take broker's defaults.
func NewReader(js jetstream.JetStream, names broker.Names) (*Reader, error) {
	if js == nil {
		return nil, errors.New("configure replay: JetStream is required")
	}
	return &Reader{js: js, names: names.WithDefaults()}, nil
}

// Progress is told how many messages were read, of how many.
type Progress func(done, total uint64)

// joinWindow is how far, in incident sequences, the audit trail is read
// ahead to find an incident's records. Workers apply incidents a little out
// of order; records later than this still print, just not beside their
// incident (their SEQ column names it).
const joinWindow = 2000

// Run emits the timeline: each incident as stored, followed by what was
// done about it, in log order. Records tied to no incident (expiries, Kong)
// print where they fall. Memory is bounded by the records of joinWindow
// incidents.
func (r *Reader) Run(ctx context.Context, f Filter, emit func(Event) error, progress Progress) error {
	if err := f.Validate(); err != nil {
		return err
	}
	cfg := jetstream.OrderedConsumerConfig{}
	if !f.Since.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &f.Since
	}
	inc, err := broker.OpenCursor(ctx, r.js, r.names.IncidentStream, cfg)
	if err != nil {
		return err
	}
	aud, err := broker.OpenCursor(ctx, r.js, r.names.AuditStream, cfg)
	if err != nil {
		return err
	}
	j := &join{f: f, m: newMatcher(f), emit: emit, aud: aud, buf: map[uint64][]Event{}}
	total := inc.Total() + aud.Total()
	for {
		msg, err := inc.Next(ctx)
		if err != nil {
			return err
		}
		if msg == nil {
			break
		}
		ev, err := decode(StreamIncidents, msg)
		if err != nil {
			return err
		}
		if !f.Until.IsZero() && ev.Time.After(f.Until) {
			break
		}
		if err := j.readAhead(ctx, ev.Seq+joinWindow); err != nil {
			return err
		}
		j.printed = ev.Seq
		if err := j.out(ev); err != nil {
			return err
		}
		for _, a := range j.buf[ev.Seq] {
			if err := j.out(&a); err != nil {
				return err
			}
		}
		delete(j.buf, ev.Seq)
		if progress != nil {
			progress(inc.Done()+aud.Done(), total)
		}
	}
	// What is left: records of incidents past until or beyond the window,
	// then the rest of the trail up to until.
	return j.drain(ctx)
}

// join pairs incidents with their audit records.
type join struct {
	f       Filter
	m       *matcher
	emit    func(Event) error
	aud     *broker.Cursor
	audEnd  bool
	maxSeq  uint64 // highest incident sequence named by a record read so far
	printed uint64 // the incident printed last
	buf     map[uint64][]Event
}

func (j *join) out(ev *Event) error {
	if !j.m.match(ev) {
		return nil
	}
	return j.emit(*ev)
}

// readAhead reads the trail until it names an incident past upTo: records
// of incidents still to print wait in the buffer; the others print now.
func (j *join) readAhead(ctx context.Context, upTo uint64) error {
	for !j.audEnd && j.maxSeq <= upTo {
		ev, err := j.nextAudit(ctx)
		if err != nil || ev == nil {
			return err
		}
		seq := ev.Audit.EventSeq
		if seq == 0 || seq <= j.printed { // tied to no incident, or a late record of a printed one
			if err := j.out(ev); err != nil {
				return err
			}
			continue
		}
		j.buf[seq] = append(j.buf[seq], *ev)
		j.maxSeq = max(j.maxSeq, seq)
	}
	return nil
}

func (j *join) nextAudit(ctx context.Context) (*Event, error) {
	msg, err := j.aud.Next(ctx)
	if err != nil {
		return nil, err
	}
	if msg == nil {
		j.audEnd = true
		return nil, nil
	}
	return decode(StreamAudit, msg)
}

func (j *join) drain(ctx context.Context) error {
	seqs := slices.Sorted(maps.Keys(j.buf))
	for _, seq := range seqs {
		for _, a := range j.buf[seq] {
			if !j.f.Until.IsZero() && a.Time.After(j.f.Until) {
				continue
			}
			if err := j.out(&a); err != nil {
				return err
			}
		}
	}
	for {
		ev, err := j.nextAudit(ctx)
		if err != nil || ev == nil {
			return err
		}
		if !j.f.Until.IsZero() && ev.Time.After(j.f.Until) {
			return nil
		}
		if err := j.out(ev); err != nil {
			return err
		}
	}
}

func decode(kind string, m jetstream.Msg) (*Event, error) {
	meta, err := m.Metadata()
	if err != nil {
		return nil, fmt.Errorf("read %s metadata: %w", kind, err)
	}
	ev := &Event{Time: meta.Timestamp.UTC(), Stream: kind, Seq: meta.Sequence.Stream}
	if kind == StreamAudit {
		var rec schemas.AuditRecord
		if err := json.Unmarshal(m.Data(), &rec); err != nil {
			rec = schemas.AuditRecord{Detail: "unreadable audit record: " + err.Error()}
		}
		ev.Audit = &rec
		return ev, nil
	}
	src := m.Headers().Get(schemas.HeaderSource)
	if src == "" {
		src = string(schemas.SourceNATS)
	}
	ev.Incident = &Incident{Source: src}
	inc, err := schemas.ParseIncident(m.Data())
	if err != nil {
		ev.Incident.Invalid = err.Error()
		return ev, nil
	}
	ev.Incident.ID, ev.Incident.Type, ev.Incident.Title = inc.ID, string(inc.EffectiveType()), inc.Title
	ev.Incident.Severity, ev.Incident.Entities = string(inc.Severity), len(inc.Entities)
	ev.incident = inc
	return ev, nil
}
