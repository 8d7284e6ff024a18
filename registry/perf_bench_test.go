package registry_test

// Benchmarks for the performance goals of issue #5 (docs/benchmarks.md): the heartbeat
// path with an agent's own key, the sweeper tick and the memory per agent at a million
// agents, and registration throughput through group commit. The million-agent ones
// build their fleet first (about a minute each; -short skips them), e.g.
//
//	go test -run '^$' -bench 'SweepNothingDueMillion|RegisterConcurrent' -timeout 30m ./registry/
//	go test -run '^$' -bench 'AgentMemory' -benchtime 1x -timeout 30m ./registry/

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/registry"
	"github.com/lifeline-dev/lifeline/sqlite"
)

// Vocabularies of the "rich" fleet: about 200 bytes of capabilities and metadata per
// agent, most strings repeating across agents as they do in real fleets (the same mix
// as `lifeline bench memory`).
var (
	richCaps = []string{"billing", "invoicing", "refunds", "reporting", "search:web", "search:docs", "code:python",
		"code:go", "code:review", "summarize", "translate:fr", "translate:de", "plan", "triage", "ocr", "vision", "tools/http",
		"tools/sql", "tools/shell", "memory:long"}
	richRegions = []string{"eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-south-1"}
	richTeams   = []string{"payments", "support", "research", "platform", "growth"}
)

// plainAgent is the agent of the existing fleet benchmarks: two capabilities, no
// metadata.
func plainAgent(i int, now time.Time) *lifeline.Agent {
	return &lifeline.Agent{
		AgentID: fmt.Sprintf("agent_%07d", i), RoleID: "worker", Capabilities: []string{"billing", "invoicing"},
		Status: lifeline.StatusActive, HeartbeatConfig: lifeline.HeartbeatConfig{IntervalSeconds: 30, UnhealthyAfterSeconds: 90, DeadAfterSeconds: 300},
		Metadata: []byte(`{}`), RegisteredAt: now, LastHeartbeatAt: now, Version: 1,
	}
}

// richAgent has six capabilities and a five-member metadata object (~200 bytes).
func richAgent(i int, now time.Time) *lifeline.Agent {
	a := plainAgent(i, now)
	a.RoleID = fmt.Sprintf("pool-%02d", i%20)
	a.Capabilities = make([]string, 6)
	for j := range a.Capabilities {
		a.Capabilities[j] = richCaps[(i*7+j*3)%len(richCaps)]
	}
	a.Capacity.MaxConcurrentTasks = 8
	a.Metadata = []byte(fmt.Sprintf(`{"region":%q,"host":"host-%07d.cluster.local","team":%q,"version":"1.14.%d","gpu":%t}`,
		richRegions[i%len(richRegions)], i, richTeams[i%len(richTeams)], i%10, i%4 == 0))
	return a
}

// preload writes n agents straight to a new store, as a restart would find them.
func preload(b *testing.B, n int, mk func(int, time.Time) *lifeline.Agent, now time.Time) *sqlite.Store {
	b.Helper()
	st, err := sqlite.Open(filepath.Join(b.TempDir(), "lifeline.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	const batch = 5000
	for i := 0; i < n; i += batch {
		cs := make([]lifeline.Change, 0, batch)
		for j := i; j < i+batch && j < n; j++ {
			cs = append(cs, lifeline.Change{Agent: mk(j, now)})
		}
		if err := st.Apply(context.Background(), cs); err != nil {
			b.Fatal(err)
		}
	}
	return st
}

func openEngine(b *testing.B, st lifeline.Store, cfg registry.Config) *registry.Engine {
	b.Helper()
	e := registry.New(st, cfg)
	if err := e.Open(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Close() })
	return e
}

// BenchmarkBeatAgentKey is BenchmarkBeat as agents send most heartbeats: with their own
// agent key, which the engine checks against the record's owner (coordinator and
// admin keys skip that read). The id comes from a request-like buffer, as in
// BenchmarkBeat.
func BenchmarkBeatAgentKey(b *testing.B) {
	const n = 100_000
	now := time.Now()
	owned := func(i int, now time.Time) *lifeline.Agent {
		a := plainAgent(i, now)
		a.OwnerKeyID = "key_01HBENCHAGENTKEY"
		return a
	}
	e := openEngine(b, preload(b, n, owned, now), registry.Config{})
	ctx := lifeline.WithCaller(context.Background(), lifeline.Caller{KeyID: "key_01HBENCHAGENTKEY", Role: lifeline.RoleAgent})
	load := 2
	hb := &lifeline.Heartbeat{Status: lifeline.StatusActive, CurrentLoad: &load, ClientTimestamp: now}
	b.ReportAllocs()
	defer reportCPU(b)()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var ack lifeline.HeartbeatAck
		buf := []byte("agent_0000000")
		i := 0
		for pb.Next() {
			for j, v := len(buf)-1, i%n; j >= len(buf)-7; j, v = j-1, v/10 {
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

// BenchmarkSweepNothingDueMillion is one sweeper tick over 1,000,000 tracked agents,
// none due (goal: ≤ 50 µs).
func BenchmarkSweepNothingDueMillion(b *testing.B) {
	if testing.Short() {
		b.Skip("builds a million-agent store first")
	}
	e := openEngine(b, preload(b, 1_000_000, plainAgent, time.Now()), registry.Config{})
	b.ReportAllocs()
	for b.Loop() {
		e.Sweep(context.Background())
	}
}

// BenchmarkAgentMemory reports the heap taken by the engine per loaded agent (goal:
// ≤ 1 KB at a million agents): heap after GC with the engine open, minus before.
func BenchmarkAgentMemory(b *testing.B) {
	for _, tc := range []struct {
		name string
		n    int
		mk   func(int, time.Time) *lifeline.Agent
	}{
		{"Plain/100k", 100_000, plainAgent},
		{"Rich/100k", 100_000, richAgent},
		{"Rich/Million", 1_000_000, richAgent},
	} {
		b.Run(tc.name, func(b *testing.B) {
			if testing.Short() && tc.n >= 1_000_000 {
				b.Skip("builds a million-agent store first")
			}
			st := preload(b, tc.n, tc.mk, time.Now())
			var total float64
			runs := 0
			for b.Loop() {
				before := heapAfterGC()
				e := registry.New(st, registry.Config{})
				if err := e.Open(context.Background()); err != nil {
					b.Fatal(err)
				}
				after := heapAfterGC()
				total += (float64(after) - float64(before)) / float64(tc.n)
				runs++
				runtime.KeepAlive(e)
				b.StopTimer()
				e.Close()
				b.StartTimer()
			}
			b.ReportMetric(total/float64(runs), "bytes/agent")
		})
	}
}

// reportCPU reports the process CPU time per operation ("cpu-ns/op") of what runs
// until the returned function is called. On a shared machine it is steadier than
// ns/op, which counts the time other processes take the CPUs away: it is the cost of
// an operation summed over all cores (with two goroutines, twice the ideal ns/op).
func reportCPU(b *testing.B) func() {
	start := cpuTime()
	return func() {
		b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func heapAfterGC() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkRegisterConcurrent is registration throughput through the engine and the
// embedded store with 64 concurrent callers: group commit puts what waits into one
// transaction (goal: ≥ 2,000/s).
func BenchmarkRegisterConcurrent(b *testing.B) {
	st, err := sqlite.Open(filepath.Join(b.TempDir(), "lifeline.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	e := openEngine(b, st, registry.Config{})
	var next atomic.Int64
	b.SetParallelism(32) // × GOMAXPROCS callers
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			r := &lifeline.Registration{AgentID: fmt.Sprintf("reg_%08d", i), RoleID: "worker", Capabilities: []string{"billing"}}
			if _, err := e.RegisterAgent(context.Background(), r); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "registrations/s")
}
