package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// runBench runs `lifeline bench ...` and returns its JSON line decoded, failing the
// test unless it succeeded and printed a readable summary before the JSON.
func runBench(t *testing.T, env map[string]string, args ...string) map[string]any {
	t.Helper()
	var out, errOut bytes.Buffer
	m := &CLI{Env: Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }}}
	if err := m.Run(context.Background(), append([]string{"bench"}, args...)); err != nil {
		t.Fatalf("bench %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, out.String(), errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "lifeline bench ") {
		t.Fatalf("no summary:\n%s", out.String())
	}
	var rep map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &rep); err != nil {
		t.Fatalf("last line is not JSON: %v\n%s", err, out.String())
	}
	return rep
}

func wantKeys(t *testing.T, rep map[string]any, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, ok := rep[k]; !ok {
			t.Errorf("report lacks %q: %v", k, rep)
		}
	}
}

func num(rep map[string]any, k string) float64 {
	f, _ := rep[k].(float64)
	return f
}

func TestBenchHeartbeat(t *testing.T) {
	rep := runBench(t, nil, "heartbeat", "--agents", "40", "--conns", "4", "--duration", "300ms", "--baseline", "--json")
	wantKeys(t, rep, "rate_per_s", "p50_ms", "p99_ms", "p999_ms", "errors", "baseline_rate_per_s", "ratio", "registrations_per_s")
	if num(rep, "rate_per_s") <= 0 || num(rep, "errors") != 0 || num(rep, "baseline_rate_per_s") <= 0 || num(rep, "ratio") <= 0 {
		t.Fatal(rep)
	}
	if rep["server"] != "in-process" {
		t.Fatal(rep["server"])
	}
}

func TestBenchBatch(t *testing.T) {
	rep := runBench(t, nil, "batch", "--agents", "120", "--batch", "50", "--conns", "2", "--duration", "300ms", "--json")
	wantKeys(t, rep, "agent_heartbeats_per_s", "p50_ms", "p99_ms", "errors", "item_errors")
	if num(rep, "agent_heartbeats_per_s") <= 0 || num(rep, "errors") != 0 || num(rep, "item_errors") != 0 {
		t.Fatal(rep)
	}
}

func TestBenchMemory(t *testing.T) {
	for _, direct := range []string{"false", "true"} {
		rep := runBench(t, nil, "memory", "--agents", "200", "--direct="+direct, "--json")
		wantKeys(t, rep, "bytes_per_agent", "rss_bytes_per_agent", "registrations_per_s", "payload_bytes")
		if p := num(rep, "payload_bytes"); p < 150 || p > 260 {
			t.Errorf("payload %v bytes, want about 200", p)
		}
	}
}

func TestBenchDetect(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for real deadlines (about 3 s)")
	}
	rep := runBench(t, nil, "detect", "--agents", "30", "--silent", "10", "--unhealthy-after", "2", "--wait", "10s", "--json")
	wantKeys(t, rep, "p50_ms", "p99_ms", "max_ms", "early", "event_source", "detected", "missing")
	if num(rep, "detected") != 10 || num(rep, "early") != 0 || num(rep, "false_positives") != 0 {
		t.Fatal(rep)
	}
	// Transitions come after their deadline, within a few sweeps.
	if p := num(rep, "p50_ms"); p < 0 || p > 2000 {
		t.Fatal(rep)
	}
}

func TestBenchAgainstRunningServer(t *testing.T) {
	cfg := DefaultServerConfig()
	cfg.Listen, cfg.DataDir, cfg.AdminKey, cfg.LogLevel = "127.0.0.1:0", t.TempDir(), "ll_bench_test_admin", "error"
	m := &Main{Config: cfg, Stdout: io.Discard, Stderr: io.Discard}
	if err := m.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	env := map[string]string{EnvKey: cfg.AdminKey}
	rep := runBench(t, env, "heartbeat", "--server", "http://"+m.Addr(), "--agents", "20", "--conns", "2", "--duration", "300ms", "--json")
	if rep["server"] != "http://"+m.Addr() || num(rep, "errors") != 0 || num(rep, "rate_per_s") <= 0 {
		t.Fatal(rep)
	}
}

func TestBenchLoopbackOnly(t *testing.T) {
	for _, server := range []string{"http://10.1.2.3:8080", "http://example.com", "https://127.0.0.1:8443"} {
		var out, errOut bytes.Buffer
		m := &CLI{Env: Env{Stdout: &out, Stderr: &errOut}}
		err := m.Run(context.Background(), []string{"bench", "heartbeat", "--server", server, "--key", "k", "--duration", "100ms"})
		if code := exitCode(err, &errOut); code != 2 || !strings.Contains(errOut.String(), "--server") {
			t.Errorf("%s: exit %d, %s", server, code, errOut.String())
		}
	}
}

func TestBenchFlagsBounded(t *testing.T) {
	for _, args := range [][]string{
		{"heartbeat", "--agents", "0"},
		{"heartbeat", "--duration", "2h"},
		{"heartbeat", "--conns", "100000"},
		{"batch", "--batch", "1001"},
		{"detect", "--unhealthy-after", "1"},
		{"detect", "--agents", "5", "--silent", "6"},
		{"memory", "--server", "http://127.0.0.1:1"},
		{"nonsense"},
	} {
		var out, errOut bytes.Buffer
		m := &CLI{Env: Env{Stdout: &out, Stderr: &errOut}}
		err := m.Run(context.Background(), append([]string{"bench"}, args...))
		if code := exitCode(err, &errOut); code != 2 {
			t.Errorf("%v: exit %d, %s", args, code, errOut.String())
		}
	}
}

// TestBaselineHandler checks the bare handler the heartbeat bench compares with.
func TestBaselineHandler(t *testing.T) {
	h := baselineHandler{ids: map[string]struct{}{"a1": {}}}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/api/v1/agents/a1/heartbeat", strings.NewReader(`{}`)))
	if rec.Code != 200 || !bytes.Equal(rec.Body.Bytes(), baselineAck) {
		t.Fatal(rec.Code, rec.Body.String())
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/api/v1/agents/zz/heartbeat", nil))
	if rec.Code != http.StatusNotFound {
		t.Fatal(rec.Code)
	}
}

func TestReadSSE(t *testing.T) {
	stream := ": keep-alive\n\nid: 7\nevent: agent.lifecycle\ndata: {\"seq\":7,\"type\":\"agent.lifecycle\",\"agent_id\":\"a1\",\"new_status\":\"unhealthy\",\"timestamp\":\"2026-02-08T10:30:00Z\"}\n\n" +
		"id: 8\r\nevent: agent.lifecycle\r\ndata: {\"type\":\"agent.lifecycle\",\"agent_id\":\"a2\",\"timestamp\":\"2026-02-08T10:30:01Z\"}\r\n\r\n"
	out := make(chan arrival, 4)
	readSSE(context.Background(), strings.NewReader(stream), out)
	close(out)
	var got []arrival
	for a := range out {
		got = append(got, a)
	}
	if len(got) != 2 || got[0].ev.AgentID != "a1" || got[0].ev.Seq != 7 || got[1].ev.Seq != 8 || time.Since(got[1].at) > time.Minute {
		t.Fatalf("%+v", got)
	}
}
