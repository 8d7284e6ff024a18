package sqlite_test

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/sqlite"
	"github.com/lifeline-dev/lifeline/storetest"
)

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) lifeline.Store {
		return mustOpen(t, filepath.Join(t.TempDir(), "lifeline.db"))
	})
}

// mustOpen opens the store at path and closes it when the test ends.
func mustOpen(tb testing.TB, path string) *sqlite.Store {
	tb.Helper()
	s, err := sqlite.Open(path)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 123456789, time.UTC)

// registration returns the change that registers agent id.
func registration(id string) lifeline.Change {
	return lifeline.Change{
		Agent: &lifeline.Agent{
			AgentID:         id,
			RoleID:          "workers",
			Capabilities:    []string{"code"},
			Capacity:        lifeline.Capacity{MaxConcurrentTasks: 2},
			Status:          lifeline.StatusActive,
			HeartbeatConfig: lifeline.HeartbeatConfig{IntervalSeconds: 30, UnhealthyAfterSeconds: 90, DeadAfterSeconds: 300},
			Metadata:        json.RawMessage(`{"zone":"a"}`),
			RegisteredAt:    t0,
			LastHeartbeatAt: t0,
			Version:         1,
			OwnerKeyID:      "k1",
		},
		Events: []lifeline.Event{{
			Type:           lifeline.EventAgentLifecycle,
			AgentID:        id,
			PreviousStatus: lifeline.StatusRegistering,
			NewStatus:      lifeline.StatusActive,
			Reason:         lifeline.ReasonRegistered,
			Timestamp:      t0,
		}},
	}
}

// contents is everything a store holds.
type contents struct {
	Agents []*lifeline.Agent
	Events []lifeline.Event
	Keys   []*lifeline.Key
	Last   int64
}

func readAll(t *testing.T, s lifeline.Store) contents {
	t.Helper()
	var c contents
	var err error
	if c.Agents, err = s.Agents(t.Context()); err != nil {
		t.Fatalf("Agents: %v", err)
	}
	if c.Events, err = s.Events(t.Context(), lifeline.EventFilter{Limit: lifeline.MaxPageSize}); err != nil {
		t.Fatalf("Events: %v", err)
	}
	if c.Keys, err = s.Keys(t.Context()); err != nil {
		t.Fatalf("Keys: %v", err)
	}
	if c.Last, err = s.LastEventSeq(t.Context()); err != nil {
		t.Fatalf("LastEventSeq: %v", err)
	}
	return c
}

func TestReopenKeepsEverything(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lifeline.db")
	s, err := sqlite.Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	a1, a2 := registration("a1"), registration("a2")
	a2.Agent.Status = lifeline.StatusDraining
	a2.Agent.DrainDeadline = &t0
	a2.Agent.PendingCommand = &lifeline.Command{Command: lifeline.CommandDrain, Reason: "deploy", DrainTimeoutSeconds: 30}
	if err := s.Apply(t.Context(), []lifeline.Change{a1, a2}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if err := s.SaveHeartbeats(t.Context(), []lifeline.HeartbeatCheckpoint{{AgentID: "a1", LastHeartbeatAt: t0.Add(time.Second), CurrentLoad: 2}}); err != nil {
		t.Fatalf("SaveHeartbeats: %v", err)
	}
	if err := s.CreateKey(t.Context(), &lifeline.Key{ID: "k1", Role: lifeline.RoleAgent, Name: "w", CreatedAt: t0, Hash: "h1"}); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	if err := s.RevokeKey(t.Context(), "k1", t0.Add(time.Minute)); err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	before := readAll(t, s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = mustOpen(t, path)
	after := readAll(t, s)
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("after reopen (-before +after):\n%s", diff)
	}
	if len(after.Agents) != 2 || !after.Agents[0].LastHeartbeatAt.Equal(t0.Add(time.Second)) || after.Last != 2 {
		t.Errorf("reopened store lost writes: %+v", after)
	}

	// The log continues where it stopped.
	a3 := registration("a3")
	if err := s.Apply(t.Context(), []lifeline.Change{a3}); err != nil {
		t.Fatalf("Apply after reopen: %v", err)
	}
	if a3.Events[0].Seq != 3 {
		t.Errorf("seq after reopen = %d, want 3", a3.Events[0].Seq)
	}
}

func TestOpenCreatesParentDir(t *testing.T) {
	// Characters that mean something in a URI must stay part of the file name.
	dir := filepath.Join(t.TempDir(), "data dir", "x?y#z%20")
	path := filepath.Join(dir, "lifeline.db")
	s := mustOpen(t, path)
	if got := s.Path(); got != path {
		t.Errorf("Path() = %q, want %q", got, path)
	}
	if err := s.Apply(t.Context(), []lifeline.Change{registration("a1")}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database file: %v", err)
	}
}

func TestOpenEmptyPathInvalid(t *testing.T) {
	if _, err := sqlite.Open(""); lifeline.ErrorCode(err) != lifeline.EInvalid {
		t.Fatalf("Open(\"\"): %v, want invalid", err)
	}
}

func TestCloseTruncatesWAL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lifeline.db")
	s, err := sqlite.Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	for i := range 20 {
		if err := s.Apply(t.Context(), []lifeline.Change{registration(fmt.Sprint("a", i))}); err != nil {
			t.Fatalf("Apply: %v", err)
		}
	}
	if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() == 0 {
		t.Fatalf("expected a non-empty WAL while open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() != 0 {
		t.Errorf("WAL is %d bytes after Close, want empty or gone", fi.Size())
	}
	if err := s.Ping(t.Context()); err == nil {
		t.Error("Ping after Close: no error")
	}
}

func TestMigrationsRunOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lifeline.db")
	for range 3 {
		s, err := sqlite.Open(path)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	db := rawDB(t, path)
	var n, version int
	if err := db.QueryRow(`SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&n, &version); err != nil {
		t.Fatal(err)
	}
	if n != version || n < 1 {
		t.Errorf("schema_migrations: %d rows, max version %d; want one row per version", n, version)
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lifeline.db")
	s, err := sqlite.Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	db := rawDB(t, path)
	if _, err := db.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_future.sql', '')`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	if s, err := sqlite.Open(path); err == nil {
		s.Close()
		t.Fatal("Open of a database from a newer binary succeeded")
	} else if !strings.Contains(err.Error(), "newer") {
		t.Errorf("Open: %v, want a schema version error", err)
	}
}

// rawDB opens the database file with the driver alone.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// crashEnv names the database a TestCrashKeepsAcknowledgedWrites child writes to.
const crashEnv = "LIFELINE_SQLITE_CRASH_DB"

// TestCrashKeepsAcknowledgedWrites runs a child process that applies batches, reports
// each acknowledged one, and kills itself without closing the store. Every batch it
// reported must be there when the file is opened again. (A killed process is not a
// power failure: the fsyncs of synchronous=FULL are what cover that case.)
func TestCrashKeepsAcknowledgedWrites(t *testing.T) {
	if path := os.Getenv(crashEnv); path != "" {
		crashChild(path)
		return
	}
	if testing.Short() {
		t.Skip("starts a child process")
	}
	path := filepath.Join(t.TempDir(), "lifeline.db")
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestCrashKeepsAcknowledgedWrites$")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err == nil {
		t.Fatalf("child exited cleanly; it should have been killed\nstdout:\n%s\nstderr:\n%s", out, stderr.Bytes())
	}
	var acked []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if id, ok := strings.CutPrefix(sc.Text(), "ack "); ok {
			acked = append(acked, id)
		}
	}
	if len(acked) == 0 {
		t.Fatalf("child acknowledged nothing: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.Bytes())
	}

	s := mustOpen(t, path)
	got := readAll(t, s)
	if len(got.Agents) < len(acked) || got.Last < int64(len(acked)) {
		t.Fatalf("after the crash: %d agents, last seq %d; %d batches were acknowledged", len(got.Agents), got.Last, len(acked))
	}
	for i, id := range acked {
		if got.Agents[i].AgentID != id || got.Events[i].AgentID != id || got.Events[i].Seq != int64(i+1) {
			t.Errorf("acknowledged batch %d (%s) missing: agent %s, event %+v", i, id, got.Agents[i].AgentID, got.Events[i])
		}
	}
}

// crashChild is the child side of TestCrashKeepsAcknowledgedWrites.
func crashChild(path string) {
	s, err := sqlite.Open(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for i := range 50 {
		id := fmt.Sprintf("a%03d", i)
		if err := s.Apply(context.Background(), []lifeline.Change{registration(id)}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Fprintf(os.Stdout, "ack %s\n", id) // os.Stdout is unbuffered
	}
	p, _ := os.FindProcess(os.Getpid())
	p.Kill()
	select {} // wait for the signal
}

func BenchmarkApply(b *testing.B) {
	for _, size := range []int{1, 100} {
		b.Run(fmt.Sprintf("Batch%d", size), func(b *testing.B) {
			s := mustOpen(b, filepath.Join(b.TempDir(), "lifeline.db"))
			n := 0
			for b.Loop() {
				batch := make([]lifeline.Change, size)
				for i := range batch {
					batch[i] = registration(fmt.Sprintf("agent-%09d", n))
					n++
				}
				if err := s.Apply(b.Context(), batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "agents/s")
		})
	}
}
