package registry_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/registry"
	"github.com/lifeline-dev/lifeline/sqlite"
)

// fleet opens an engine over a store pre-loaded with n active agents (written in large
// batches straight to the store, as a restart would find them).
func fleet(b *testing.B, n int, clk *clock) *registry.Engine {
	b.Helper()
	st, err := sqlite.Open(filepath.Join(b.TempDir(), "lifeline.db"))
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	if clk != nil {
		now = clk.Now()
	}
	const batch = 5000
	for i := 0; i < n; i += batch {
		var cs []lifeline.Change
		for j := i; j < i+batch && j < n; j++ {
			cs = append(cs, lifeline.Change{Agent: &lifeline.Agent{
				AgentID: fmt.Sprintf("agent_%07d", j), RoleID: "worker", Capabilities: []string{"billing", "invoicing"},
				Status: lifeline.StatusActive, HeartbeatConfig: lifeline.HeartbeatConfig{IntervalSeconds: 30, UnhealthyAfterSeconds: 90, DeadAfterSeconds: 300},
				Metadata: []byte(`{}`), RegisteredAt: now, LastHeartbeatAt: now, Version: 1,
			}})
		}
		if err := st.Apply(context.Background(), cs); err != nil {
			b.Fatal(err)
		}
	}
	cfg := registry.Config{}
	if clk != nil {
		cfg.Now = clk.Now
	}
	e := registry.New(st, cfg)
	if err := e.Open(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		e.Close()
		st.Close()
	})
	return e
}

// BenchmarkBeat is the in-process heartbeat path at 100k agents with the real clock:
// lookup, ownership check, receipt time and load stored; no lock but a shard read
// lock, no I/O.
func BenchmarkBeat(b *testing.B) {
	const n = 100_000
	e := fleet(b, n, nil)
	ctx := lifeline.WithCaller(context.Background(), lifeline.Caller{KeyID: "k", Role: lifeline.RoleCoordinator})
	load := 2
	hb := &lifeline.Heartbeat{Status: lifeline.StatusActive, CurrentLoad: &load, ClientTimestamp: time.Now()}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var ack lifeline.HeartbeatAck
		// The id is written into a request-like buffer, as a handler finds it in the
		// request it just read: in cache, unlike a table of 100k pre-made strings.
		buf := []byte("agent_0000000")
		i := 0
		for pb.Next() {
			for j, v := 12, i%n; j >= 6; j, v = j-1, v/10 {
				buf[j] = byte('0' + v%10)
			}
			if err := e.Beat(ctx, unsafe.String(&buf[0], len(buf)), hb, &ack); err != nil {
				b.Error(err)
				return
			}
			i += 7919
		}
	})
}

// BenchmarkSweepNothingDue is one sweeper tick over 100k tracked agents when no
// deadline has passed: it must cost the same as over ten.
func BenchmarkSweepNothingDue(b *testing.B) {
	for _, n := range []int{10, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			e := fleet(b, n, nil)
			b.ReportAllocs()
			for b.Loop() {
				e.Sweep(context.Background())
			}
		})
	}
}
