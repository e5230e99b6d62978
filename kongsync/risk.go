package kongsync

import (
	"fmt"
	"slices"
	"strings"

	"github.com/kong/go-kong/kong"
)

// RiskKind says why Kong does not enforce some managed entries for some requests. See
// docs/KONG-SYNC.md, "Kong's precedence trap".
type RiskKind string

// Risk kinds.
const (
	// RiskBypass: a user-owned ip-restriction more specific than a managed one runs instead of it
	// for the requests both match (Kong runs only the most specific instance), so the managed
	// deny list is skipped there.
	RiskBypass RiskKind = "bypass"
	// RiskOccupied: a user-owned instance holds the exact scope a managed one needs; Kong allows
	// one instance of a plugin per scope, and the sync never edits what it does not own.
	RiskOccupied RiskKind = "occupied"
	// RiskShadow: a managed instance at this scope would outrank a less specific user-owned
	// ip-restriction and silently switch it off for these requests, so the sync writes none.
	RiskShadow RiskKind = "shadow"
)

// Risk is one place where Kong does not enforce managed entries natively; the noname-prevention
// plugin still does (it is another plugin, so Kong's precedence does not touch it).
type Risk struct {
	Kind         RiskKind `json:"kind"`
	Plugin       string   `json:"plugin"`     // the user-owned plugin's id
	PluginName   string   `json:"pluginName"` // ip-restriction or request-termination
	InstanceName string   `json:"instanceName,omitempty"`
	PluginScope  Scope    `json:"pluginScope"`
	Scope        Scope    `json:"scope"`   // the managed scope whose entries Kong skips there
	Missing      int      `json:"missing"` // entries Kong does not enforce for those requests
}

func (r Risk) String() string {
	name := r.Plugin
	if r.InstanceName != "" {
		name += " (" + r.InstanceName + ")"
	}
	switch r.Kind {
	case RiskBypass:
		return fmt.Sprintf("bypass: user-owned %s %s at %s outranks the managed deny list at %s; %d entries not enforced by Kong there",
			r.PluginName, name, r.PluginScope, r.Scope, r.Missing)
	case RiskOccupied:
		return fmt.Sprintf("occupied: user-owned %s %s holds scope %s; %d managed entries not written there",
			r.PluginName, name, r.Scope, r.Missing)
	}
	return fmt.Sprintf("shadow: a managed %s at %s would switch off user-owned %s at %s; not written, %d entries not enforced by Kong there",
		r.PluginName, r.Scope, name, r.PluginScope, r.Missing)
}

// addRisk records a risk when some entries are actually left unenforced.
func (p *Plan) addRisk(kind RiskKind, u *kong.Plugin, managed Scope, missing int) {
	if missing == 0 {
		return // the user's own instance denies every managed entry: nothing slips through
	}
	p.Risks = append(p.Risks, Risk{Kind: kind, Plugin: str(u.ID), PluginName: str(u.Name),
		InstanceName: str(u.InstanceName), PluginScope: scopeOf(u), Scope: managed, Missing: missing})
}

// riskKey identifies a risk across reconciles, so that the log reports changes, not every period.
func riskKey(r Risk) string {
	return strings.Join([]string{string(r.Kind), r.Plugin, r.Scope.String(), fmt.Sprint(r.Missing)}, "|")
}

func riskKeys(risks []Risk) []string {
	out := make([]string, len(risks))
	for i, r := range risks {
		out[i] = riskKey(r)
	}
	slices.Sort(out)
	return out
}
