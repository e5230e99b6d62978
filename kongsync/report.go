package kongsync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blockwire/blockwire/schemas"
)

// maxDetail bounds an audit record's detail; the status document has the full lists.
const maxDetail = 4000

// summary describes a plan and what came of it in one line, for the audit trail and the log.
func (p *Plan) summary(done int, failures []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "kong sync: %d of %d writes applied", done, len(p.Ops))
	for _, op := range p.Ops {
		fmt.Fprintf(&b, "; %s %s %s", op.Action, op.Name, op.Scope)
		if op.Entries > 0 && op.Name == pluginIPRestriction {
			fmt.Fprintf(&b, " (%d deny entries)", op.Entries)
		}
		if op.Drift {
			b.WriteString(" [drift repaired]")
		}
	}
	fmt.Fprintf(&b, "; %d managed plugins for %d active blocks", len(p.Instances), p.Blocks)
	if len(p.Risks) > 0 {
		fmt.Fprintf(&b, "; %d bypass risks", len(p.Risks))
	}
	if len(p.Unresolved) > 0 {
		fmt.Fprintf(&b, "; %d scopes not in Kong", len(p.Unresolved))
	}
	if n := p.pluginOnlyTotal(); n > 0 {
		fmt.Fprintf(&b, "; %d plugin-only blocks (%s)", n, p.pluginOnlyText())
	}
	for _, f := range failures {
		b.WriteString("; failed: " + f)
	}
	s := b.String()
	if len(s) > maxDetail {
		s = s[:maxDetail-3] + "..."
	}
	return s
}

func (p *Plan) pluginOnlyTotal() int {
	n := 0
	for _, c := range p.PluginOnly {
		n += c
	}
	return n
}

func (p *Plan) pluginOnlyText() string { return PluginOnlyText(p.PluginOnly) }

// PluginOnlyText lists the counts of blocks only the plugin enforces, by kind, e.g.
// "header 3, jwt 1"; "" when there are none.
func PluginOnlyText(counts map[schemas.EntityType]int) string {
	var parts []string
	for _, k := range schemas.EntityTypes() {
		if c := counts[k]; c > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, c))
		}
	}
	return strings.Join(parts, ", ")
}

// auditor publishes kong_applied and kong_failed records to the audit stream.
type auditor struct {
	pub     msgPublisher
	subject string // "blockwire.audit"
	actor   string
	now     func() time.Time
}

// record publishes one audit record. msgID makes a retried publish land once.
func (a *auditor) record(ctx context.Context, action schemas.Action, msgID, detail string) error {
	rec := schemas.AuditRecord{Time: a.now().UTC(), Action: action, Detail: detail, Actor: a.actor}
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode audit record: %w", err)
	}
	m := nats.NewMsg(a.subject + "." + string(action))
	m.Data = data
	if _, err := a.pub.PublishMsg(ctx, m, jetstream.WithMsgID(msgID)); err != nil {
		return fmt.Errorf("publish %s audit record: %w", action, err)
	}
	return nil
}

// Status is what the sync last did, kept in the lease bucket for `blockwire kongsync status`.
type Status struct {
	Holder        string                     `json:"holder"`
	Kong          string                     `json:"kong"` // the Admin API URL, credentials removed
	Workspace     string                     `json:"workspace,omitempty"`
	State         string                     `json:"state"` // synced, failing, unauthorized, dbless
	UpdatedAt     time.Time                  `json:"updatedAt"`
	LastSuccess   time.Time                  `json:"lastSuccess,omitzero"`
	Duration      string                     `json:"duration"`
	Writes        int                        `json:"writes"`
	Error         string                     `json:"error,omitempty"`
	Blocks        int                        `json:"blocks"`
	Instances     []Instance                 `json:"instances"`
	Risks         []Risk                     `json:"risks"`
	Unresolved    []Unresolved               `json:"unresolved"`
	PluginOnly    map[schemas.EntityType]int `json:"pluginOnly"`
	DriftRepaired int                        `json:"driftRepaired"`
}

// Sync states.
const (
	StateSynced       = "synced"
	StateFailing      = "failing"
	StateUnauthorized = "unauthorized"
	StateDBLess       = "dbless"
)

// ReadStatus reads the status the leading sync last stored. bucket and key default to the
// sync's ("blockwire_leases", "kongsync.status").
func ReadStatus(ctx context.Context, js jetstream.JetStream, bucket, key string) (*Status, error) {
	if bucket == "" {
		bucket = DefaultLeaseBucket
	}
	if key == "" {
		key = statusKey(defaultLeaseKey(""))
	}
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("read kong sync status: %w", err)
	}
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("read kong sync status: no sync has reported yet: %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("read kong sync status: %w", err)
	}
	var st Status
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return nil, fmt.Errorf("read kong sync status: %w", err)
	}
	return &st, nil
}

// sortRisks orders risks for stable output.
func sortRisks(r []Risk) {
	slices.SortFunc(r, func(a, b Risk) int { return strings.Compare(riskKey(a), riskKey(b)) })
}

// auditPlan records a reconcile that wrote or failed: kong_applied with the plan's summary when
// something was written, kong_failed when something failed. A failure identical to the last one
// recorded (Kong down for an hour, retried with backoff) is recorded once.
func (s *Syncer) auditPlan(ctx context.Context, ss *session, seq uint64, plan *Plan, done int, failures []string, err error) {
	if err != nil {
		failures = append(failures, err.Error())
	}
	summary := "kong sync: " + strings.Join(failures, "; ")
	if plan != nil {
		summary = plan.summary(done, failures)
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	id := fmt.Sprintf("kongsync:%s:%d:", s.cfg.Holder, seq)
	if done > 0 {
		if err := s.audit.record(actx, schemas.ActionKongApplied, id+"applied", summary); err != nil {
			s.log.Warn().Err(err).Msg("audit kong_applied")
		}
	}
	failed := strings.Join(failures, "; ")
	if failed == "" {
		ss.lastFailed = ""
		return
	}
	if done == 0 && failed == ss.lastFailed {
		return
	}
	ss.lastFailed = failed
	if err := s.audit.record(actx, schemas.ActionKongFailed, id+"failed", summary); err != nil {
		s.log.Warn().Err(err).Msg("audit kong_failed")
	}
}

// storeStatus saves the status in the lease bucket, for `blockwire kongsync status`.
func (s *Syncer) storeStatus(ctx context.Context, st Status) {
	s.mu.Lock()
	kv := s.statusKV
	s.mu.Unlock()
	if kv == nil {
		return
	}
	st.Holder, st.Kong, st.Workspace, st.UpdatedAt = s.cfg.Holder, RedactURL(s.cfg.KongURL), s.cfg.Kong.Workspace(), s.cfg.Now().UTC()
	data, err := json.Marshal(st)
	if err != nil {
		return
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := kv.Put(sctx, statusKey(s.cfg.LeaseKey), data); err != nil {
		s.log.Debug().Err(err).Msg("store kong sync status")
	}
}
