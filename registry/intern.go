package registry

import (
	"strings"
	"sync"

	"github.com/lifeline-dev/lifeline"
)

// maxInterned bounds each intern table: past it, new values are kept as they come
// (no worse than not interning), so unique values cannot grow the tables forever.
const maxInterned = 1 << 16

// interner shares the strings and capability sets that repeat across agent records.
type interner struct {
	mu   sync.Mutex
	strs map[string]*string
	caps map[string][]string
}

// ptr returns the shared copy of s.
func (in *interner) ptr(s string) *string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.ptrLocked(s)
}

func (in *interner) ptrLocked(s string) *string {
	if p, ok := in.strs[s]; ok {
		return p
	}
	p := &s
	if in.strs == nil {
		in.strs = map[string]*string{}
	}
	if len(in.strs) < maxInterned {
		in.strs[s] = p
	}
	return p
}

// record makes a record that is not yet installed share its role id, owner key id and
// capabilities with the records that have the same ones.
func (in *interner) record(rec *lifeline.Agent) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if rec.RoleID != "" {
		rec.RoleID = *in.ptrLocked(rec.RoleID)
	}
	if rec.OwnerKeyID != "" {
		rec.OwnerKeyID = *in.ptrLocked(rec.OwnerKeyID)
	}
	if len(rec.Capabilities) == 0 {
		return
	}
	key := strings.Join(rec.Capabilities, ",") // capabilities never hold a comma
	if set, ok := in.caps[key]; ok {
		rec.Capabilities = set
		return
	}
	set := make([]string, len(rec.Capabilities))
	for i, c := range rec.Capabilities {
		set[i] = *in.ptrLocked(c)
	}
	// Records are never mutated in place; the full slice expression makes an append
	// to a shared set copy it.
	set = set[:len(set):len(set)]
	if in.caps == nil {
		in.caps = map[string][]string{}
	}
	if len(in.caps) < maxInterned {
		in.caps[key] = set
	}
	rec.Capabilities = set
}
