// Package storetest is the behavioural specification of lifeline.Store: one suite that
// every implementation runs from its own tests.
//
//	func TestStore(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) lifeline.Store {
//			s, err := sqlite.Open(filepath.Join(t.TempDir(), "lifeline.db"))
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// Beyond the comments of lifeline.Store, the suite pins down these rules:
//   - Apply returns invalid, and writes nothing, for an agent with an empty AgentID or an
//     unknown Status or Metadata that is not JSON, and for an event with an empty Type.
//     On any error every Seq of the batch is reset to 0.
//   - Agents returns Capabilities as a non-nil slice and absent or null Metadata as {}.
//     Metadata is compared as JSON values, so a store may normalise its spelling.
//   - Times come back equal to the nanosecond, in UTC.
//   - Stores copy what they are given and what they return: callers may reuse both.
//   - A cancelled context makes every method return an error and write nothing.
package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lifeline-dev/lifeline"
)

// Run runs the suite. newStore must return a new, empty store for each subtest and
// arrange for it to be closed when that subtest ends (t.Cleanup).
func Run(t *testing.T, newStore func(t *testing.T) lifeline.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s lifeline.Store)
	}{
		{"Ping", testPing},
		{"EmptyStore", testEmptyStore},
		{"ApplyInsertsAgentAndEvents", testApplyInsertsAgentAndEvents},
		{"ApplyEventsOnly", testApplyEventsOnly},
		{"ApplyEmptyBatch", testApplyEmptyBatch},
		{"ApplyIsAtomic", testApplyIsAtomic},
		{"ApplyRejectsInvalid", testApplyRejectsInvalid},
		{"ApplyCopiesInput", testApplyCopiesInput},
		{"SeqGapFree", testSeqGapFree},
		{"ReplaceAgentKeepsOneRow", testReplaceAgentKeepsOneRow},
		{"AgentsOrderedByID", testAgentsOrderedByID},
		{"AgentsFillDefaults", testAgentsFillDefaults},
		{"AgentsReturnCopies", testAgentsReturnCopies},
		{"RoundTripExact", testRoundTripExact},
		{"TimesReturnedInUTC", testTimesReturnedInUTC},
		{"EventsFilterByTypeAndAgent", testEventsFilterByTypeAndAgent},
		{"EventsPaging", testEventsPaging},
		{"SaveHeartbeatsIgnoresUnknown", testSaveHeartbeatsIgnoresUnknown},
		{"SaveHeartbeatsEmpty", testSaveHeartbeatsEmpty},
		{"KeysCreateListRevoke", testKeysCreateListRevoke},
		{"KeysOrderedByCreation", testKeysOrderedByCreation},
		{"KeyDuplicateIDConflict", testKeyDuplicateIDConflict},
		{"KeyDuplicateHashConflict", testKeyDuplicateHashConflict},
		{"RevokeUnknownNotFound", testRevokeUnknownNotFound},
		{"ConcurrentApply", testConcurrentApply},
		{"CanceledContextWritesNothing", testCanceledContextWritesNothing},
		{"LeaseRoundTrip", testLeaseRoundTrip},
		{"LeaseOneActivePerScope", testLeaseOneActivePerScope},
		{"LeaseFencesSurviveEnd", testLeaseFencesSurviveEnd},
		{"LeasesFilterAndPage", testLeasesFilterAndPage},
		{"TaskRoundTrip", testTaskRoundTrip},
		{"ApplyStatusOnly", testApplyStatusOnly},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, newStore(t))
		})
	}
}

// base is a time with nanoseconds, outside UTC, so that lost precision or a lost zone
// conversion shows.
var base = time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.FixedZone("UTC+2", 2*3600))

// at returns base plus n seconds and n nanoseconds.
func at(n int) time.Time {
	return base.Add(time.Duration(n)*time.Second + time.Duration(n))
}

func ptr[T any](v T) *T { return &v }

// newAgent returns a complete, valid active agent record.
func newAgent(id string) *lifeline.Agent {
	return &lifeline.Agent{
		AgentID:      id,
		RoleID:       "pool-" + id,
		Name:         "Agent " + id,
		Capabilities: []string{"code", "review"},
		Capacity:     lifeline.Capacity{MaxConcurrentTasks: 4, CurrentLoad: 1},
		Status:       lifeline.StatusActive,
		Endpoint:     "https://" + id + ".example.com/a2a",
		HeartbeatConfig: lifeline.HeartbeatConfig{
			IntervalSeconds:       30,
			UnhealthyAfterSeconds: 90,
			DeadAfterSeconds:      300,
		},
		Metadata:        json.RawMessage(`{"region":"eu-west-1","gpu":true}`),
		RegisteredAt:    at(0),
		LastHeartbeatAt: at(1),
		Version:         1,
		OwnerKeyID:      "key-" + id,
	}
}

// lifecycle returns an agent.lifecycle event.
func lifecycle(agentID string, from, to lifeline.Status, reason string, ts time.Time) lifeline.Event {
	return lifeline.Event{
		Type:           lifeline.EventAgentLifecycle,
		AgentID:        agentID,
		PreviousStatus: from,
		NewStatus:      to,
		Reason:         reason,
		Timestamp:      ts,
	}
}

// registration returns the change that registers a new agent.
func registration(id string) lifeline.Change {
	a := newAgent(id)
	return lifeline.Change{
		Agent:  a,
		Events: []lifeline.Event{lifecycle(id, lifeline.StatusRegistering, lifeline.StatusActive, lifeline.ReasonRegistered, a.RegisteredAt)},
	}
}

// cmpOpts compares metadata as JSON values, not as bytes.
var cmpOpts = cmp.Options{
	cmp.Comparer(func(a, b json.RawMessage) bool {
		var x, y any
		if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
			return string(a) == string(b)
		}
		return reflect.DeepEqual(x, y)
	}),
}

// stored returns the form in which a store gives back a: empty capabilities and
// metadata filled in.
func stored(a *lifeline.Agent) *lifeline.Agent {
	c := *a
	if c.Capabilities == nil {
		c.Capabilities = []string{}
	}
	if len(c.Metadata) == 0 || string(c.Metadata) == "null" {
		c.Metadata = json.RawMessage(`{}`)
	}
	return &c
}

func mustApply(t *testing.T, s lifeline.Store, batch ...lifeline.Change) {
	t.Helper()
	if err := s.Apply(t.Context(), batch); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func mustAgents(t *testing.T, s lifeline.Store) []*lifeline.Agent {
	t.Helper()
	agents, err := s.Agents(t.Context())
	if err != nil {
		t.Fatalf("Agents: %v", err)
	}
	return agents
}

func mustEvents(t *testing.T, s lifeline.Store, f lifeline.EventFilter) []lifeline.Event {
	t.Helper()
	events, err := s.Events(t.Context(), f)
	if err != nil {
		t.Fatalf("Events(%+v): %v", f, err)
	}
	return events
}

// allEvents reads the whole log, page by page.
func allEvents(t *testing.T, s lifeline.Store) []lifeline.Event {
	t.Helper()
	var out []lifeline.Event
	f := lifeline.EventFilter{Limit: lifeline.MaxPageSize}
	for {
		page := mustEvents(t, s, f)
		if len(page) == 0 {
			return out
		}
		out = append(out, page...)
		f.After = page[len(page)-1].Seq
	}
}

func mustLastSeq(t *testing.T, s lifeline.Store) int64 {
	t.Helper()
	seq, err := s.LastEventSeq(t.Context())
	if err != nil {
		t.Fatalf("LastEventSeq: %v", err)
	}
	return seq
}

func mustKeys(t *testing.T, s lifeline.Store) []*lifeline.Key {
	t.Helper()
	keys, err := s.Keys(t.Context())
	if err != nil {
		t.Fatalf("Keys: %v", err)
	}
	return keys
}

// batchEvents returns every event of batch, in order.
func batchEvents(batch []lifeline.Change) []lifeline.Event {
	var out []lifeline.Event
	for _, c := range batch {
		out = append(out, c.Events...)
	}
	return out
}

// seqs returns the seqs of events.
func seqs(events []lifeline.Event) []int64 {
	out := make([]int64, len(events))
	for i, e := range events {
		out[i] = e.Seq
	}
	return out
}

// seqRange returns from, from+1, …, to.
func seqRange(from, to int64) []int64 {
	var out []int64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// checkEmpty fails unless s holds no agent and no event.
func checkEmpty(t *testing.T, s lifeline.Store) {
	t.Helper()
	if agents := mustAgents(t, s); len(agents) != 0 {
		t.Errorf("Agents = %d records, want none", len(agents))
	}
	if events := mustEvents(t, s, lifeline.EventFilter{}); len(events) != 0 {
		t.Errorf("Events = %d events, want none", len(events))
	}
	if seq := mustLastSeq(t, s); seq != 0 {
		t.Errorf("LastEventSeq = %d, want 0", seq)
	}
}

func testPing(t *testing.T, s lifeline.Store) {
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func testEmptyStore(t *testing.T, s lifeline.Store) {
	checkEmpty(t, s)
	if keys := mustKeys(t, s); len(keys) != 0 {
		t.Errorf("Keys = %d keys, want none", len(keys))
	}
}

func testApplyInsertsAgentAndEvents(t *testing.T, s lifeline.Store) {
	a := newAgent("a1")
	batch := []lifeline.Change{{
		Agent: a,
		Events: []lifeline.Event{
			lifecycle("a1", lifeline.StatusRegistering, lifeline.StatusActive, lifeline.ReasonRegistered, at(0)),
			lifecycle("a1", lifeline.StatusActive, lifeline.StatusUnhealthy, lifeline.ReasonHeartbeatTimeout, at(2)),
		},
	}}
	mustApply(t, s, batch...)

	if got := seqs(batch[0].Events); !reflect.DeepEqual(got, []int64{1, 2}) {
		t.Errorf("seqs written back = %v, want [1 2]", got)
	}
	if diff := cmp.Diff([]*lifeline.Agent{stored(a)}, mustAgents(t, s), cmpOpts); diff != "" {
		t.Errorf("Agents (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(batch[0].Events, mustEvents(t, s, lifeline.EventFilter{})); diff != "" {
		t.Errorf("Events (-want +got):\n%s", diff)
	}
	if seq := mustLastSeq(t, s); seq != 2 {
		t.Errorf("LastEventSeq = %d, want 2", seq)
	}
}

func testApplyEventsOnly(t *testing.T, s lifeline.Store) {
	batch := []lifeline.Change{{Events: []lifeline.Event{{Type: "registry.protection", Reason: "mass_failure", Timestamp: at(0)}}}}
	mustApply(t, s, batch...)
	if batch[0].Events[0].Seq != 1 {
		t.Errorf("seq = %d, want 1", batch[0].Events[0].Seq)
	}
	if agents := mustAgents(t, s); len(agents) != 0 {
		t.Errorf("Agents = %d records, want none", len(agents))
	}
	if diff := cmp.Diff(batch[0].Events, mustEvents(t, s, lifeline.EventFilter{})); diff != "" {
		t.Errorf("Events (-want +got):\n%s", diff)
	}
}

func testApplyEmptyBatch(t *testing.T, s lifeline.Store) {
	if err := s.Apply(t.Context(), nil); err != nil {
		t.Fatalf("Apply(nil): %v", err)
	}
	if err := s.Apply(t.Context(), []lifeline.Change{{}}); err != nil {
		t.Fatalf("Apply(empty change): %v", err)
	}
	checkEmpty(t, s)
}

func testApplyIsAtomic(t *testing.T, s lifeline.Store) {
	first := registration("a1")
	mustApply(t, s, first)

	bad := []lifeline.Change{
		registration("a2"),
		{
			Agent:  &lifeline.Agent{AgentID: "", Status: lifeline.StatusActive},
			Events: []lifeline.Event{lifecycle("", lifeline.StatusRegistering, lifeline.StatusActive, lifeline.ReasonRegistered, at(3))},
		},
	}
	err := s.Apply(t.Context(), bad)
	if code := lifeline.ErrorCode(err); code != lifeline.EInvalid {
		t.Fatalf("Apply with an empty agent_id: error %v (code %q), want code %q", err, code, lifeline.EInvalid)
	}
	if got := seqs(batchEvents(bad)); !reflect.DeepEqual(got, []int64{0, 0}) {
		t.Errorf("seqs after failed Apply = %v, want all 0", got)
	}
	if diff := cmp.Diff([]*lifeline.Agent{stored(first.Agent)}, mustAgents(t, s), cmpOpts); diff != "" {
		t.Errorf("Agents after failed Apply (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(first.Events, mustEvents(t, s, lifeline.EventFilter{})); diff != "" {
		t.Errorf("Events after failed Apply (-want +got):\n%s", diff)
	}
	if seq := mustLastSeq(t, s); seq != 1 {
		t.Errorf("LastEventSeq after failed Apply = %d, want 1", seq)
	}

	// The failed batch used no seq: the next one continues without a gap.
	next := registration("a3")
	mustApply(t, s, next)
	if next.Events[0].Seq != 2 {
		t.Errorf("seq after failed Apply = %d, want 2", next.Events[0].Seq)
	}
}

func testApplyRejectsInvalid(t *testing.T, s lifeline.Store) {
	tests := []struct {
		name   string
		change lifeline.Change
	}{
		{"EmptyAgentID", lifeline.Change{Agent: &lifeline.Agent{Status: lifeline.StatusActive}}},
		{"UnknownStatus", func() lifeline.Change {
			c := registration("bad")
			c.Agent.Status = "sleeping"
			return c
		}()},
		{"MetadataNotJSON", func() lifeline.Change {
			c := registration("bad")
			c.Agent.Metadata = json.RawMessage(`{"a":`)
			return c
		}()},
		{"EventWithoutType", lifeline.Change{Events: []lifeline.Event{{AgentID: "a1", Timestamp: at(0)}}}},
	}
	// Every case runs on the same store: each must leave it as empty as it found it.
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			batch := []lifeline.Change{registration("good"), tt.change}
			err := s.Apply(t.Context(), batch)
			if code := lifeline.ErrorCode(err); code != lifeline.EInvalid {
				t.Fatalf("Apply: error %v (code %q), want code %q", err, code, lifeline.EInvalid)
			}
			for _, e := range batchEvents(batch) {
				if e.Seq != 0 {
					t.Errorf("seq %d left set after failed Apply", e.Seq)
				}
			}
			checkEmpty(t, s)
		})
	}
}

func testApplyCopiesInput(t *testing.T, s lifeline.Store) {
	c := registration("a1")
	c.Agent.PendingCommand = &lifeline.Command{Command: lifeline.CommandDrain, Reason: "scale-in"}
	want := stored(c.Agent)
	want.Capabilities = append([]string(nil), c.Agent.Capabilities...)
	want.Metadata = append(json.RawMessage(nil), c.Agent.Metadata...)
	want.PendingCommand = ptr(*c.Agent.PendingCommand)
	mustApply(t, s, c)

	c.Agent.Name = "changed"
	c.Agent.Capabilities[0] = "changed"
	c.Agent.PendingCommand.Reason = "changed"
	c.Agent.Metadata[2] = 'X'
	if diff := cmp.Diff([]*lifeline.Agent{want}, mustAgents(t, s), cmpOpts); diff != "" {
		t.Errorf("Agents after the caller changed its record (-want +got):\n%s", diff)
	}
}

func testSeqGapFree(t *testing.T, s lifeline.Store) {
	var applied []lifeline.Event
	batches := [][]lifeline.Change{
		{registration("a1")},
		{{Agent: newAgent("a2")}}, // no event
		{registration("a3"), registration("a4"), {Events: []lifeline.Event{{Type: "registry.protection", Timestamp: at(5)}}}},
		{{Events: []lifeline.Event{
			lifecycle("a1", lifeline.StatusActive, lifeline.StatusDraining, lifeline.ReasonDrainInitiated, at(6)),
			lifecycle("a1", lifeline.StatusDraining, lifeline.StatusDeregistered, lifeline.ReasonDrainCompleted, at(7)),
		}}},
		{registration("a5")},
	}
	for _, b := range batches {
		mustApply(t, s, b...)
		applied = append(applied, batchEvents(b)...)
	}
	want := seqRange(1, int64(len(applied)))
	if got := seqs(applied); !reflect.DeepEqual(got, want) {
		t.Errorf("seqs written back = %v, want %v", got, want)
	}
	if diff := cmp.Diff(applied, allEvents(t, s)); diff != "" {
		t.Errorf("Events (-want +got):\n%s", diff)
	}
	if seq := mustLastSeq(t, s); seq != int64(len(applied)) {
		t.Errorf("LastEventSeq = %d, want %d", seq, len(applied))
	}
}

func testReplaceAgentKeepsOneRow(t *testing.T, s lifeline.Store) {
	v1 := newAgent("a1")
	mustApply(t, s, lifeline.Change{Agent: v1})

	v2 := newAgent("a1")
	v2.Status = lifeline.StatusDraining
	v2.Version = 2
	v2.DrainDeadline = ptr(at(60))
	v2.PendingCommand = &lifeline.Command{Command: lifeline.CommandDrain, Reason: "deploy", DrainTimeoutSeconds: 60}
	v2.Capabilities = []string{"code"}
	v2.Metadata = json.RawMessage(`{"region":"us-east-1"}`)
	mustApply(t, s, lifeline.Change{Agent: v2})
	if diff := cmp.Diff([]*lifeline.Agent{stored(v2)}, mustAgents(t, s), cmpOpts); diff != "" {
		t.Errorf("Agents after replace (-want +got):\n%s", diff)
	}

	// Replacing clears what the new record no longer has.
	v3 := newAgent("a1")
	v3.Status = lifeline.StatusDead
	v3.Version = 3
	v3.Capabilities = nil
	v3.Metadata = nil
	v3.OwnerKeyID = ""
	mustApply(t, s, lifeline.Change{Agent: v3})
	if diff := cmp.Diff([]*lifeline.Agent{stored(v3)}, mustAgents(t, s), cmpOpts); diff != "" {
		t.Errorf("Agents after second replace (-want +got):\n%s", diff)
	}
}

func testAgentsOrderedByID(t *testing.T, s lifeline.Store) {
	var batch []lifeline.Change
	for i, id := range []string{"charlie", "alpha", "delta", "bravo"} {
		a := newAgent(id)
		a.Status = lifeline.Statuses[i%len(lifeline.Statuses)]
		batch = append(batch, lifeline.Change{Agent: a})
	}
	mustApply(t, s, batch...)
	var got []string
	for _, a := range mustAgents(t, s) {
		got = append(got, a.AgentID)
	}
	if want := []string{"alpha", "bravo", "charlie", "delta"}; !reflect.DeepEqual(got, want) {
		t.Errorf("agent ids = %v, want %v", got, want)
	}
}

func testAgentsFillDefaults(t *testing.T, s lifeline.Store) {
	bare := &lifeline.Agent{AgentID: "bare", Status: lifeline.StatusActive}
	null := newAgent("null")
	null.Metadata = json.RawMessage(`null`)
	empty := newAgent("zempty")
	empty.Capabilities = []string{}
	empty.Metadata = json.RawMessage{}
	mustApply(t, s, lifeline.Change{Agent: bare}, lifeline.Change{Agent: null}, lifeline.Change{Agent: empty})

	for _, a := range mustAgents(t, s) {
		if a.Capabilities == nil {
			t.Errorf("%s: Capabilities is nil, want an empty slice", a.AgentID)
		}
		if diff := cmp.Diff(json.RawMessage(`{}`), a.Metadata, cmpOpts); diff != "" {
			t.Errorf("%s: Metadata (-want +got):\n%s", a.AgentID, diff)
		}
		if a.DrainDeadline != nil || a.PendingCommand != nil {
			t.Errorf("%s: DrainDeadline %v, PendingCommand %v; want both nil", a.AgentID, a.DrainDeadline, a.PendingCommand)
		}
	}
}

func testAgentsReturnCopies(t *testing.T, s lifeline.Store) {
	a := newAgent("a1")
	a.DrainDeadline = ptr(at(9))
	a.PendingCommand = &lifeline.Command{Command: lifeline.CommandDrain}
	mustApply(t, s, lifeline.Change{Agent: a})

	got := mustAgents(t, s)
	got[0].Name = "changed"
	got[0].Capabilities[0] = "changed"
	*got[0].DrainDeadline = at(99)
	got[0].PendingCommand.Reason = "changed"
	if diff := cmp.Diff([]*lifeline.Agent{stored(a)}, mustAgents(t, s), cmpOpts); diff != "" {
		t.Errorf("Agents after the caller changed a returned record (-want +got):\n%s", diff)
	}
}

func testRoundTripExact(t *testing.T, s lifeline.Store) {
	full := &lifeline.Agent{
		AgentID:      "full",
		RoleID:       "reviewers",
		Name:         "Ünïcödé reviewer \"quoted\"",
		Capabilities: []string{"code-review", "lang:go", "a/b"},
		Capacity:     lifeline.Capacity{MaxConcurrentTasks: 1_000_000, CurrentLoad: 999_999},
		Status:       lifeline.StatusDraining,
		Endpoint:     "https://full.example.com:8443/a2a?x=1",
		HeartbeatConfig: lifeline.HeartbeatConfig{
			IntervalSeconds:       1,
			UnhealthyAfterSeconds: 2,
			DeadAfterSeconds:      lifeline.MaxThresholdSeconds,
		},
		Metadata:        json.RawMessage(`{"nested":{"list":[1,2.5,"x",null,true]},"empty":{},"unicode":"ü"}`),
		RegisteredAt:    base,
		LastHeartbeatAt: base.Add(time.Nanosecond),
		Version:         1<<53 + 1,
		DrainDeadline:   ptr(base.Add(7*24*time.Hour + 1)),
		OwnerKeyID:      "01JKEYOWNER",
		PendingCommand: &lifeline.Command{
			Command:             lifeline.CommandDrain,
			Reason:              "rolling deploy",
			DrainTimeoutSeconds: 600,
			TaskID:              "task-42",
		},
	}
	plain := newAgent("plain")
	plain.RegisteredAt = time.Date(2026, 1, 1, 0, 0, 0, 1, time.UTC)
	plain.LastHeartbeatAt = time.Time{} // never beat
	mustApply(t, s, lifeline.Change{Agent: full}, lifeline.Change{Agent: plain})

	got := mustAgents(t, s)
	if diff := cmp.Diff([]*lifeline.Agent{stored(full), stored(plain)}, got, cmpOpts); diff != "" {
		t.Errorf("Agents (-want +got):\n%s", diff)
	}
	if len(got) == 2 && (got[1].DrainDeadline != nil || got[1].PendingCommand != nil) {
		t.Errorf("plain: DrainDeadline %v, PendingCommand %v; want both nil", got[1].DrainDeadline, got[1].PendingCommand)
	}

	events := []lifeline.Event{
		{
			Type:           lifeline.EventAgentLifecycle,
			AgentID:        "full",
			PreviousStatus: lifeline.StatusActive,
			NewStatus:      lifeline.StatusDraining,
			Reason:         lifeline.ReasonDrainInitiated,
			Timestamp:      base.Add(123 * time.Nanosecond),
		},
		{Type: "lease.expired", Reason: "agent_dead", Timestamp: time.Date(2026, 1, 1, 0, 0, 0, 999_999_999, time.UTC)},
	}
	mustApply(t, s, lifeline.Change{Events: events})
	if diff := cmp.Diff(events, mustEvents(t, s, lifeline.EventFilter{})); diff != "" {
		t.Errorf("Events (-want +got):\n%s", diff)
	}

	keys := []*lifeline.Key{
		{ID: "k1", Role: lifeline.RoleCoordinator, Name: "ci \"bot\"", CreatedAt: base, Hash: lifeline.HashSecret("s1")},
		{ID: "k2", Role: lifeline.RoleAgent, CreatedAt: base.Add(time.Nanosecond), RevokedAt: ptr(base.Add(2 * time.Nanosecond)), Hash: lifeline.HashSecret("s2")},
	}
	for _, k := range keys {
		if err := s.CreateKey(t.Context(), k); err != nil {
			t.Fatalf("CreateKey(%s): %v", k.ID, err)
		}
	}
	if diff := cmp.Diff(keys, mustKeys(t, s)); diff != "" {
		t.Errorf("Keys (-want +got):\n%s", diff)
	}
}

func testTimesReturnedInUTC(t *testing.T, s lifeline.Store) {
	a := newAgent("a1")
	a.DrainDeadline = ptr(at(5))
	mustApply(t, s, lifeline.Change{Agent: a, Events: []lifeline.Event{lifecycle("a1", lifeline.StatusActive, lifeline.StatusDraining, lifeline.ReasonDrainInitiated, at(4))}})
	if err := s.CreateKey(t.Context(), &lifeline.Key{ID: "k1", Role: lifeline.RoleAdmin, CreatedAt: at(2), RevokedAt: ptr(at(3)), Hash: "h1"}); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}

	check := func(what string, tm time.Time) {
		t.Helper()
		if tm.Location() != time.UTC {
			t.Errorf("%s is in %v, want UTC", what, tm.Location())
		}
	}
	for _, a := range mustAgents(t, s) {
		check("registered_at", a.RegisteredAt)
		check("last_heartbeat_at", a.LastHeartbeatAt)
		check("drain_deadline", *a.DrainDeadline)
	}
	for _, e := range mustEvents(t, s, lifeline.EventFilter{}) {
		check("event timestamp", e.Timestamp)
	}
	for _, k := range mustKeys(t, s) {
		check("created_at", k.CreatedAt)
		check("revoked_at", *k.RevokedAt)
	}
}

func testEventsFilterByTypeAndAgent(t *testing.T, s lifeline.Store) {
	var all []lifeline.Event
	for i := range 12 {
		all = append(all, lifeline.Event{
			Type:      []string{lifeline.EventAgentLifecycle, "lease.acquired", "task.update"}[i%3],
			AgentID:   []string{"a1", "a2"}[i%2],
			Reason:    fmt.Sprintf("r%d", i),
			Timestamp: at(i),
		})
	}
	mustApply(t, s, lifeline.Change{Events: all})

	keep := func(pred func(lifeline.Event) bool) []lifeline.Event {
		var out []lifeline.Event
		for _, e := range all {
			if pred(e) {
				out = append(out, e)
			}
		}
		return out
	}
	tests := []struct {
		name   string
		filter lifeline.EventFilter
		want   []lifeline.Event
	}{
		{"All", lifeline.EventFilter{}, all},
		{"OneType", lifeline.EventFilter{Types: []string{"lease.acquired"}},
			keep(func(e lifeline.Event) bool { return e.Type == "lease.acquired" })},
		{"TwoTypes", lifeline.EventFilter{Types: []string{"task.update", lifeline.EventAgentLifecycle}},
			keep(func(e lifeline.Event) bool { return e.Type != "lease.acquired" })},
		{"Agent", lifeline.EventFilter{AgentID: "a2"},
			keep(func(e lifeline.Event) bool { return e.AgentID == "a2" })},
		{"TypeAndAgent", lifeline.EventFilter{Types: []string{"lease.acquired", "task.update"}, AgentID: "a1"},
			keep(func(e lifeline.Event) bool { return e.AgentID == "a1" && e.Type != lifeline.EventAgentLifecycle })},
		{"TypeAndAgentAfter", lifeline.EventFilter{Types: []string{lifeline.EventAgentLifecycle}, AgentID: "a1", After: 6},
			keep(func(e lifeline.Event) bool {
				return e.AgentID == "a1" && e.Type == lifeline.EventAgentLifecycle && e.Seq > 6
			})},
		{"UnknownType", lifeline.EventFilter{Types: []string{"nope"}}, nil},
		{"UnknownAgent", lifeline.EventFilter{AgentID: "nobody"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mustEvents(t, s, tt.filter)
			if len(tt.want) == 0 && len(got) == 0 {
				return
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Events(%+v) (-want +got):\n%s", tt.filter, diff)
			}
		})
	}
}

func testEventsPaging(t *testing.T, s lifeline.Store) {
	const n = lifeline.MaxPageSize + 5
	events := make([]lifeline.Event, n)
	for i := range events {
		events[i] = lifeline.Event{Type: "task.update", AgentID: "a1", Reason: fmt.Sprint(i), Timestamp: at(i)}
	}
	mustApply(t, s, lifeline.Change{Events: events})

	if got := mustEvents(t, s, lifeline.EventFilter{}); len(got) != lifeline.DefaultPageSize {
		t.Errorf("Limit 0: %d events, want the default page of %d", len(got), lifeline.DefaultPageSize)
	}
	if got := mustEvents(t, s, lifeline.EventFilter{Limit: 10 * n}); len(got) != lifeline.MaxPageSize {
		t.Errorf("Limit %d: %d events, want the maximum page of %d", 10*n, len(got), lifeline.MaxPageSize)
	}
	if got := mustEvents(t, s, lifeline.EventFilter{After: n - 3, Limit: 10}); !reflect.DeepEqual(seqs(got), []int64{n - 2, n - 1, n}) {
		t.Errorf("After %d: seqs %v, want the last three", n-3, seqs(got))
	}
	if got := mustEvents(t, s, lifeline.EventFilter{After: n}); len(got) != 0 {
		t.Errorf("After the last seq: %d events, want none", len(got))
	}

	var paged []lifeline.Event
	f := lifeline.EventFilter{Limit: 37}
	for pages := 0; ; pages++ {
		if pages > n {
			t.Fatal("paging does not end")
		}
		page := mustEvents(t, s, f)
		if len(page) > f.Limit {
			t.Fatalf("page of %d events, limit %d", len(page), f.Limit)
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, page...)
		f.After = page[len(page)-1].Seq
	}
	if diff := cmp.Diff(events, paged); diff != "" {
		t.Errorf("paged events (-want +got):\n%s", diff)
	}
}

func testSaveHeartbeatsIgnoresUnknown(t *testing.T, s lifeline.Store) {
	a := newAgent("a1")
	a.Version = 7
	b := newAgent("b1")
	mustApply(t, s, registration("z0"), lifeline.Change{Agent: a}, lifeline.Change{Agent: b})
	before := mustLastSeq(t, s)

	hbs := []lifeline.HeartbeatCheckpoint{
		{AgentID: "a1", LastHeartbeatAt: at(100), CurrentLoad: 3},
		{AgentID: "ghost", LastHeartbeatAt: at(100), CurrentLoad: 1},
	}
	if err := s.SaveHeartbeats(t.Context(), hbs); err != nil {
		t.Fatalf("SaveHeartbeats: %v", err)
	}

	wantA := stored(a)
	wantA.LastHeartbeatAt = at(100)
	wantA.Capacity.CurrentLoad = 3
	got := mustAgents(t, s)
	if diff := cmp.Diff([]*lifeline.Agent{wantA, stored(b), stored(registration("z0").Agent)}, got, cmpOpts); diff != "" {
		t.Errorf("Agents (-want +got):\n%s", diff)
	}
	if seq := mustLastSeq(t, s); seq != before {
		t.Errorf("LastEventSeq = %d after SaveHeartbeats, want %d (no events)", seq, before)
	}
}

func testSaveHeartbeatsEmpty(t *testing.T, s lifeline.Store) {
	if err := s.SaveHeartbeats(t.Context(), nil); err != nil {
		t.Fatalf("SaveHeartbeats(nil): %v", err)
	}
	checkEmpty(t, s)
}

func testKeysCreateListRevoke(t *testing.T, s lifeline.Store) {
	k1 := &lifeline.Key{ID: "k1", Role: lifeline.RoleAdmin, Name: "bootstrap", CreatedAt: at(1), Hash: lifeline.HashSecret("one")}
	k2 := &lifeline.Key{ID: "k2", Role: lifeline.RoleAgent, Name: "worker", CreatedAt: at(2), Hash: lifeline.HashSecret("two")}
	for _, k := range []*lifeline.Key{k1, k2} {
		if err := s.CreateKey(t.Context(), k); err != nil {
			t.Fatalf("CreateKey(%s): %v", k.ID, err)
		}
	}
	if diff := cmp.Diff([]*lifeline.Key{k1, k2}, mustKeys(t, s)); diff != "" {
		t.Errorf("Keys (-want +got):\n%s", diff)
	}

	if err := s.RevokeKey(t.Context(), "k1", at(3)); err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	// A second revocation succeeds and keeps the first time.
	if err := s.RevokeKey(t.Context(), "k1", at(4)); err != nil {
		t.Fatalf("RevokeKey again: %v", err)
	}
	revoked := *k1
	revoked.RevokedAt = ptr(at(3))
	if diff := cmp.Diff([]*lifeline.Key{&revoked, k2}, mustKeys(t, s)); diff != "" {
		t.Errorf("Keys after revoke (-want +got):\n%s", diff)
	}
}

func testKeysOrderedByCreation(t *testing.T, s lifeline.Store) {
	// Created out of order; k-b and k-a share a creation time and sort by id.
	keys := []*lifeline.Key{
		{ID: "k-late", Role: lifeline.RoleAgent, CreatedAt: at(10), Hash: "h1"},
		{ID: "k-b", Role: lifeline.RoleAgent, CreatedAt: at(5), Hash: "h2"},
		{ID: "k-a", Role: lifeline.RoleAgent, CreatedAt: at(5), Hash: "h3"},
		// Earlier than k-a, though its wall-clock text in its own zone is later.
		{ID: "k-early", Role: lifeline.RoleAgent, CreatedAt: at(4).In(time.FixedZone("UTC+14", 14*3600)), Hash: "h4"},
		{ID: "k-sub", Role: lifeline.RoleAgent, CreatedAt: at(4).Add(-time.Nanosecond), Hash: "h5"},
	}
	for _, k := range keys {
		if err := s.CreateKey(t.Context(), k); err != nil {
			t.Fatalf("CreateKey(%s): %v", k.ID, err)
		}
	}
	var got []string
	for _, k := range mustKeys(t, s) {
		got = append(got, k.ID)
	}
	if want := []string{"k-sub", "k-early", "k-a", "k-b", "k-late"}; !reflect.DeepEqual(got, want) {
		t.Errorf("key order = %v, want %v", got, want)
	}
}

func testKeyDuplicateIDConflict(t *testing.T, s lifeline.Store) {
	k := &lifeline.Key{ID: "k1", Role: lifeline.RoleAdmin, CreatedAt: at(1), Hash: lifeline.HashSecret("one")}
	if err := s.CreateKey(t.Context(), k); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	dup := &lifeline.Key{ID: "k1", Role: lifeline.RoleAgent, CreatedAt: at(2), Hash: lifeline.HashSecret("two")}
	err := s.CreateKey(t.Context(), dup)
	if code := lifeline.ErrorCode(err); code != lifeline.EConflict {
		t.Fatalf("CreateKey with a taken id: error %v (code %q), want code %q", err, code, lifeline.EConflict)
	}
	if diff := cmp.Diff([]*lifeline.Key{k}, mustKeys(t, s)); diff != "" {
		t.Errorf("Keys (-want +got):\n%s", diff)
	}
}

func testKeyDuplicateHashConflict(t *testing.T, s lifeline.Store) {
	k := &lifeline.Key{ID: "k1", Role: lifeline.RoleAdmin, CreatedAt: at(1), Hash: lifeline.HashSecret("same")}
	if err := s.CreateKey(t.Context(), k); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	dup := &lifeline.Key{ID: "k2", Role: lifeline.RoleAgent, CreatedAt: at(2), Hash: lifeline.HashSecret("same")}
	err := s.CreateKey(t.Context(), dup)
	if code := lifeline.ErrorCode(err); code != lifeline.EConflict {
		t.Fatalf("CreateKey with a taken hash: error %v (code %q), want code %q", err, code, lifeline.EConflict)
	}
	if diff := cmp.Diff([]*lifeline.Key{k}, mustKeys(t, s)); diff != "" {
		t.Errorf("Keys (-want +got):\n%s", diff)
	}
}

func testRevokeUnknownNotFound(t *testing.T, s lifeline.Store) {
	err := s.RevokeKey(t.Context(), "nope", at(1))
	if code := lifeline.ErrorCode(err); code != lifeline.ENotFound {
		t.Fatalf("RevokeKey(unknown): error %v (code %q), want code %q", err, code, lifeline.ENotFound)
	}
}

func testConcurrentApply(t *testing.T, s lifeline.Store) {
	const (
		writers   = 8
		perWriter = 25
	)
	type written struct {
		seq    int64
		agent  string
		reason string
	}
	var (
		mu  sync.Mutex
		all []written
		wg  sync.WaitGroup
	)
	for w := range writers {
		wg.Go(func() {
			var last int64
			for i := range perWriter {
				id := fmt.Sprintf("w%02d-%03d", w, i)
				c := registration(id)
				c.Events = append(c.Events, lifeline.Event{Type: "task.update", AgentID: id, Reason: "second", Timestamp: at(i)})
				if err := s.Apply(t.Context(), []lifeline.Change{c}); err != nil {
					t.Errorf("Apply(%s): %v", id, err)
					return
				}
				// One writer's batches commit in order, so its seqs grow.
				if c.Events[0].Seq <= last || c.Events[1].Seq != c.Events[0].Seq+1 {
					t.Errorf("%s: seqs %d, %d after %d", id, c.Events[0].Seq, c.Events[1].Seq, last)
				}
				last = c.Events[1].Seq
				mu.Lock()
				for _, e := range c.Events {
					all = append(all, written{e.Seq, e.AgentID, e.Reason})
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	const total = writers * perWriter * 2
	bySeq := make(map[int64]written, total)
	for _, w := range all {
		if _, dup := bySeq[w.seq]; dup {
			t.Fatalf("seq %d assigned twice", w.seq)
		}
		bySeq[w.seq] = w
	}
	events := allEvents(t, s)
	if len(events) != total || len(bySeq) != total {
		t.Fatalf("%d events stored, %d seqs written back; want %d", len(events), len(bySeq), total)
	}
	for i, e := range events {
		if e.Seq != int64(i+1) {
			t.Fatalf("event %d has seq %d: the log has a gap", i, e.Seq)
		}
		if w := bySeq[e.Seq]; w.agent != e.AgentID || w.reason != e.Reason {
			t.Errorf("seq %d: stored %s/%s, written back for %s/%s", e.Seq, e.AgentID, e.Reason, w.agent, w.reason)
		}
	}
	if seq := mustLastSeq(t, s); seq != total {
		t.Errorf("LastEventSeq = %d, want %d", seq, total)
	}
	if agents := mustAgents(t, s); len(agents) != writers*perWriter {
		t.Errorf("Agents = %d records, want %d", len(agents), writers*perWriter)
	}
}

func testCanceledContextWritesNothing(t *testing.T, s lifeline.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()

	c := registration("a1")
	if err := s.Apply(ctx, []lifeline.Change{c}); err == nil {
		t.Error("Apply with a cancelled context: no error")
	}
	if c.Events[0].Seq != 0 {
		t.Errorf("seq %d left set after failed Apply", c.Events[0].Seq)
	}
	if err := s.CreateKey(ctx, &lifeline.Key{ID: "k1", Role: lifeline.RoleAdmin, CreatedAt: at(0), Hash: "h"}); err == nil {
		t.Error("CreateKey with a cancelled context: no error")
	}
	if err := s.SaveHeartbeats(ctx, []lifeline.HeartbeatCheckpoint{{AgentID: "a1", LastHeartbeatAt: at(1)}}); err == nil {
		t.Error("SaveHeartbeats with a cancelled context: no error")
	}
	if err := s.RevokeKey(ctx, "k1", at(2)); err == nil {
		t.Error("RevokeKey with a cancelled context: no error")
	}
	if _, err := s.Agents(ctx); err == nil {
		t.Error("Agents with a cancelled context: no error")
	}
	if _, err := s.Events(ctx, lifeline.EventFilter{}); err == nil {
		t.Error("Events with a cancelled context: no error")
	}
	if _, err := s.Keys(ctx); err == nil {
		t.Error("Keys with a cancelled context: no error")
	}
	checkEmpty(t, s)
	if keys := mustKeys(t, s); len(keys) != 0 {
		t.Errorf("Keys = %d keys, want none", len(keys))
	}
}
