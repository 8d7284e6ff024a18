package registry

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestShardsMatchMap drives the open-addressing table with random inserts, deletes and
// lookups and checks it against a Go map at every step.
func TestShardsMatchMap(t *testing.T) {
	tbl := newShards()
	want := map[string]*agent{}
	rng := rand.New(rand.NewPCG(1, 2))
	ids := make([]string, 5000)
	for i := range ids {
		ids[i] = fmt.Sprintf("agent_%d", i)
	}
	for step := range 60000 {
		id := ids[rng.IntN(len(ids))]
		sh, h := tbl.of(id)
		switch rng.IntN(3) {
		case 0:
			if want[id] == nil {
				a := newAgent(id)
				sh.insertLocked(h, a)
				want[id] = a
			}
		case 1:
			sh.deleteLocked(h, id)
			delete(want, id)
		}
		if got := tbl.get(id); got != want[id] {
			t.Fatalf("step %d: get(%s) = %p, want %p", step, id, got, want[id])
		}
	}
	n := 0
	tbl.each(func(a *agent) {
		n++
		if want[a.id] != a {
			t.Fatalf("each yields %s not in the map", a.id)
		}
	})
	if n != len(want) {
		t.Fatalf("each yields %d agents, map has %d", n, len(want))
	}
	for _, id := range ids {
		if got := tbl.get(id); got != want[id] {
			t.Fatalf("final get(%s) = %p, want %p", id, got, want[id])
		}
	}
}
