package schemas

import (
	"encoding/json"
	"strconv"
	"time"
)

// Decoding into the Go types is done from the already validated generic
// tree, not with json.Unmarshal, for two reasons. encoding/json matches keys
// case-insensitively, so an unknown top-level "Entities" (allowed: Noname
// adds fields) would silently replace the validated "entities". And the
// document is not parsed a second time on the webhook's hot path.
//
// Every accessor tolerates a missing key or a value of the wrong JSON type
// by returning the zero value; validation has ruled both out before these
// run.

func toIncident(doc any) *Incident {
	obj, _ := doc.(map[string]any)
	inc := &Incident{
		ID:              str(obj, "id"),
		Type:            IncidentType(str(obj, "type")),
		Title:           str(obj, "title"),
		Severity:        Severity(str(obj, "severity")),
		Status:          str(obj, "status"),
		DetectionTime:   timestamp(obj, "detectionTime"),
		DurationSeconds: optInt(obj, "durationSeconds"),
		Scope:           toScope(obj["scope"]),
	}
	if api, ok := obj["api"].(map[string]any); ok {
		inc.API = &API{Host: str(api, "host"), Path: str(api, "path"), Method: str(api, "method")}
	}
	entities, _ := obj["entities"].([]any)
	inc.Entities = make([]Entity, len(entities))
	for i, e := range entities {
		ent, _ := e.(map[string]any)
		inc.Entities[i] = Entity{
			Type:        EntityType(str(ent, "type")),
			Value:       str(ent, "value"),
			Name:        str(ent, "name"),
			Claim:       str(ent, "claim"),
			ValueSHA256: str(ent, "valueSha256"),
		}
	}
	return inc
}

func toBlock(doc any) *Block {
	obj, _ := doc.(map[string]any)
	b := &Block{
		Kind:        EntityType(str(obj, "kind")),
		Name:        str(obj, "name"),
		Value:       str(obj, "value"),
		ValueSHA256: str(obj, "valueSha256"),
		Scope:       toScope(obj["scope"]),
		CreatedAt:   timestamp(obj, "createdAt"),
		ExpiresAt:   timestamp(obj, "expiresAt"),
		IncidentID:  str(obj, "incidentId"),
		Title:       str(obj, "title"),
		Severity:    Severity(str(obj, "severity")),
		Source:      Source(str(obj, "source")),
		CreatedSeq:  uintField(obj, "createdSeq"),
		UpdatedSeq:  uintField(obj, "updatedSeq"),
	}
	if ids, ok := obj["incidentIds"].([]any); ok {
		b.IncidentIDs = make([]string, len(ids))
		for i, id := range ids {
			b.IncidentIDs[i], _ = id.(string)
		}
	}
	return b
}

func toAudit(doc any) *AuditRecord {
	obj, _ := doc.(map[string]any)
	a := &AuditRecord{
		Time:       timestamp(obj, "time"),
		Action:     Action(str(obj, "action")),
		IncidentID: str(obj, "incidentId"),
		BlockKey:   str(obj, "blockKey"),
		Kind:       EntityType(str(obj, "kind")),
		Detail:     str(obj, "detail"),
		Actor:      str(obj, "actor"),
	}
	if n, ok := obj["eventSeq"].(json.Number); ok {
		a.EventSeq, _ = strconv.ParseUint(string(n), 10, 64)
	}
	return a
}

func toScope(v any) *Scope {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	return &Scope{Service: str(obj, "service"), Route: str(obj, "route")}
}

func str(obj map[string]any, key string) string {
	s, _ := obj[key].(string)
	return s
}

func timestamp(obj map[string]any, key string) time.Time {
	t, _ := parseTime(obj[key])
	return t
}

func optInt(obj map[string]any, key string) *int64 {
	n, ok := obj[key].(json.Number)
	if !ok {
		return nil
	}
	i, err := strconv.ParseInt(string(n), 10, 64)
	if err != nil {
		return nil
	}
	return &i
}

func uintField(obj map[string]any, key string) uint64 {
	if n, ok := obj[key].(json.Number); ok {
		v, _ := strconv.ParseUint(string(n), 10, 64)
		return v
	}
	return 0
}
