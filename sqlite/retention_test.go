package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline"
)

// appendEvents commits n events of agent id, one minute apart from start.
func appendEvents(t *testing.T, s interface {
	Apply(context.Context, []lifeline.Change) error
}, id, typ string, start time.Time, n int) []lifeline.Event {
	t.Helper()
	evs := make([]lifeline.Event, n)
	for i := range evs {
		evs[i] = lifeline.Event{Type: typ, AgentID: id, Timestamp: start.Add(time.Duration(i) * time.Minute)}
		if typ == lifeline.EventTaskUpdate {
			evs[i].Task = &lifeline.Task{TaskID: "t", AgentID: id, Status: lifeline.TaskRunning, Progress: i}
		}
	}
	if err := s.Apply(context.Background(), []lifeline.Change{{Events: evs}}); err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestRetention(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, filepath.Join(t.TempDir(), "lifeline.db"))
	first := func() int64 {
		t.Helper()
		n, err := s.FirstEventSeq(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if f := first(); f != 1 {
		t.Fatalf("FirstEventSeq of an empty log = %d, want 1", f)
	}
	appendEvents(t, s, "a", lifeline.EventAgentLifecycle, t0, 5) // seq 1..5, t0 … t0+4m
	if f := first(); f != 1 {
		t.Fatalf("FirstEventSeq = %d, want 1", f)
	}

	t.Run("PruneByAge", func(t *testing.T) {
		n, err := s.PruneEvents(ctx, t0.Add(150*time.Second))
		if err != nil || n != 3 {
			t.Fatalf("PruneEvents = %d, %v; want 3", n, err)
		}
		if f := first(); f != 4 {
			t.Errorf("FirstEventSeq = %d, want 4", f)
		}
		evs, err := s.Events(ctx, lifeline.EventFilter{})
		if err != nil || len(evs) != 2 || evs[0].Seq != 4 {
			t.Errorf("Events after prune = %+v, %v", evs, err)
		}
	})
	t.Run("SeqsAreNotReused", func(t *testing.T) {
		evs := appendEvents(t, s, "a", lifeline.EventAgentLifecycle, t0.Add(time.Hour), 1)
		if evs[0].Seq != 6 {
			t.Errorf("next seq = %d, want 6", evs[0].Seq)
		}
	})
	t.Run("TrimByCount", func(t *testing.T) {
		n, err := s.TrimEvents(ctx, 2)
		if err != nil || n != 1 {
			t.Fatalf("TrimEvents(2) = %d, %v; want 1", n, err)
		}
		if f := first(); f != 5 {
			t.Errorf("FirstEventSeq = %d, want 5", f)
		}
		if n, err := s.TrimEvents(ctx, 0); err != nil || n != 0 {
			t.Errorf("TrimEvents(0) = %d, %v; want a no-op", n, err)
		}
	})
	t.Run("PruneEverything", func(t *testing.T) {
		n, err := s.PruneEvents(ctx, t0.Add(365*24*time.Hour))
		if err != nil || n != 2 {
			t.Fatalf("PruneEvents = %d, %v; want 2", n, err)
		}
		// An emptied log starts after its last seq.
		if f := first(); f != 7 {
			t.Errorf("FirstEventSeq of a pruned log = %d, want 7", f)
		}
		if last, _ := s.LastEventSeq(ctx); last != 6 {
			t.Errorf("LastEventSeq = %d, want 6", last)
		}
	})
}

func TestRetentionInChunks(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, filepath.Join(t.TempDir(), "lifeline.db"))
	appendEvents(t, s, "a", lifeline.EventAgentLifecycle, t0, 12001)
	n, err := s.TrimEvents(ctx, 1)
	if err != nil || n != 12000 {
		t.Fatalf("TrimEvents = %d, %v; want 12000", n, err)
	}
	if f, _ := s.FirstEventSeq(ctx); f != 12001 {
		t.Errorf("FirstEventSeq = %d, want 12001", f)
	}
}

func TestLastAgentEvent(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, filepath.Join(t.TempDir(), "lifeline.db"))
	appendEvents(t, s, "a", lifeline.EventTaskUpdate, t0, 3)
	appendEvents(t, s, "a", lifeline.EventAgentLifecycle, t0, 2)
	appendEvents(t, s, "b", lifeline.EventTaskUpdate, t0, 1)
	ev, err := s.LastAgentEvent(ctx, "a", lifeline.EventTaskUpdate)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Seq != 3 || ev.Task == nil || ev.Task.Progress != 2 || !ev.Timestamp.Equal(t0.Add(2*time.Minute)) {
		t.Errorf("LastAgentEvent = %+v", ev)
	}
	if _, err := s.LastAgentEvent(ctx, "c", lifeline.EventTaskUpdate); lifeline.ErrorCode(err) != lifeline.ENotFound {
		t.Errorf("unknown agent: %v, want not_found", err)
	}
}

func TestWebhooks(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lifeline.db")
	s := mustOpen(t, path)
	w := &lifeline.Webhook{ID: "wh_1", URL: "https://x.example/hook", Events: []string{"agent.lifecycle", "task.update"}, CreatedAt: t0, Secret: "secret-secret-secret"}
	if err := s.CreateWebhook(ctx, w); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateWebhook(ctx, w); lifeline.ErrorCode(err) != lifeline.EConflict {
		t.Errorf("duplicate: %v, want conflict", err)
	}
	if err := s.CreateWebhook(ctx, &lifeline.Webhook{ID: "wh_2", URL: "https://x.example/"}); lifeline.ErrorCode(err) != lifeline.EInvalid {
		t.Errorf("without events: %v, want invalid", err)
	}
	w2 := &lifeline.Webhook{ID: "wh_0", URL: "http://y.example/", Events: []string{"*"}, CreatedAt: t0.Add(time.Second), Secret: "another-secret-xx"}
	if err := s.CreateWebhook(ctx, w2); err != nil {
		t.Fatal(err)
	}
	hooks, err := s.Webhooks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(hooks) != 2 || hooks[0].ID != "wh_1" || hooks[1].ID != "wh_0" {
		t.Fatalf("Webhooks = %+v, want creation order", hooks)
	}
	if got := hooks[0]; got.URL != w.URL || got.Secret != w.Secret || len(got.Events) != 2 || !got.CreatedAt.Equal(t0) {
		t.Errorf("round trip: %+v", got)
	}
	if err := s.DeleteWebhook(ctx, "wh_1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteWebhook(ctx, "wh_1"); lifeline.ErrorCode(err) != lifeline.ENotFound {
		t.Errorf("second delete: %v, want not_found", err)
	}
	if hooks, _ := s.Webhooks(ctx); len(hooks) != 1 {
		t.Errorf("after delete: %+v", hooks)
	}
}
