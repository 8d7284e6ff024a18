package main

import (
	"bufio"
	"bytes"

	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary act as `lifeline` itself, so that process-level tests
// (SIGKILL, SIGTERM, restarts) run the real server in a child process without a
// separate build.
func TestMain(m *testing.M) {
	if os.Getenv("LIFELINE_TEST_AS_MAIN") == "1" {
		os.Args = append([]string{"lifeline"}, strings.Fields(os.Getenv("LIFELINE_TEST_ARGS"))...)
		main()
		return
	}
	os.Exit(m.Run())
}

// serverProc is `lifeline serve` running in a child process.
type serverProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	url    string
	stdout *bytes.Buffer
	mu     *sync.Mutex
	done   chan error
}

var listenRe = regexp.MustCompile(`lifeline listening on (http://\S+)`)

func startServer(t *testing.T, dataDir string, env ...string) *serverProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "LIFELINE_TEST_AS_MAIN=1",
		"LIFELINE_TEST_ARGS=serve --listen 127.0.0.1:0 --data-dir "+dataDir+" --sweep-interval 20ms")
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serverProc{t: t, cmd: cmd, stdout: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan error, 1)}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.mu.Lock()
			p.stdout.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			if m := listenRe.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
		p.done <- cmd.Wait()
	}()
	select {
	case p.url = <-found:
	case err := <-p.done:
		t.Fatalf("server exited early: %v\n%s", err, stderr.String())
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("server did not start:\n%s", stderr.String())
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *serverProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stdout.String()
}

func (p *serverProc) stop(sig os.Signal) error {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
	select {
	case err := <-p.done:
		return err
	case <-time.After(30 * time.Second):
		p.t.Fatal("server did not stop")
		return nil
	}
}

func (p *serverProc) call(method, path, key, body string) (int, map[string]any) {
	p.t.Helper()
	req, _ := http.NewRequest(method, p.url+path, strings.NewReader(body))
	req.Header.Set("X-API-Key", key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	var v map[string]any
	_ = json.Unmarshal(data, &v)
	return res.StatusCode, v
}

const procKey = "ll_process_test_key"

// TestServeSIGKILLKeepsAcknowledgedWrites kills the server the moment it answered 201:
// the registration was committed before the response, so it is there after restart.
func TestServeSIGKILLKeepsAcknowledgedWrites(t *testing.T) {
	dir := t.TempDir()
	p := startServer(t, dir, "LIFELINE_ADMIN_KEY="+procKey)
	code, _ := p.call("POST", "/api/v1/agents", procKey, `{"agent_id":"survivor","heartbeat_config":{"interval_seconds":30,"unhealthy_after_seconds":60,"dead_after_seconds":120}}`)
	if code != 201 {
		t.Fatalf("register: %d", code)
	}
	if err := p.stop(syscall.SIGKILL); err == nil {
		t.Fatal("SIGKILL should end the process with an error status")
	}
	p = startServer(t, dir, "LIFELINE_ADMIN_KEY="+procKey)
	code, a := p.call("GET", "/api/v1/agents/survivor", procKey, "")
	if code != 200 || a["status"] != "active" {
		t.Fatalf("after SIGKILL: %d %v", code, a)
	}
	code, evs := p.call("GET", "/api/v1/events?agent_id=survivor", procKey, "")
	if code != 200 || len(evs["events"].([]any)) != 1 {
		t.Fatalf("events after SIGKILL: %v", evs)
	}
}

// TestServeGracefulShutdown stops the server with SIGTERM: it exits 0 and has saved
// the heartbeat state that is otherwise only checkpointed every 30 s.
func TestServeGracefulShutdown(t *testing.T) {
	dir := t.TempDir()
	p := startServer(t, dir, "LIFELINE_ADMIN_KEY="+procKey)
	if code, _ := p.call("POST", "/api/v1/agents", procKey, `{"agent_id":"g1","capacity":{"max_concurrent_tasks":9}}`); code != 201 {
		t.Fatal(code)
	}
	ts := time.Now().UTC().Format(time.RFC3339)
	if code, _ := p.call("POST", "/api/v1/agents/g1/heartbeat", procKey, `{"status":"active","current_load":7,"client_timestamp":"`+ts+`"}`); code != 200 {
		t.Fatal(code)
	}
	_, before := p.call("GET", "/api/v1/agents/g1", procKey, "")
	if err := p.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM exit: %v", err)
	}
	p = startServer(t, dir, "LIFELINE_ADMIN_KEY="+procKey)
	_, after := p.call("GET", "/api/v1/agents/g1", procKey, "")
	if after["capacity"].(map[string]any)["current_load"] != float64(7) || after["last_heartbeat_at"] != before["last_heartbeat_at"] {
		t.Fatalf("heartbeat state not saved at shutdown: before %v after %v", before, after)
	}
}

// TestServeBootstrapKeyPrintedOnce starts without LIFELINE_ADMIN_KEY: the first start
// prints a generated admin key, later starts do not, and the key keeps working.
func TestServeBootstrapKeyPrintedOnce(t *testing.T) {
	dir := t.TempDir()
	p := startServer(t, dir)
	m := regexp.MustCompile(`(?m)^\s+(ll_\S+)$`).FindStringSubmatch(p.output())
	if m == nil {
		t.Fatalf("no key printed:\n%s", p.output())
	}
	key := m[1]
	if err := p.stop(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p = startServer(t, dir)
	if strings.Contains(p.output(), "ll_") {
		t.Fatalf("key printed again:\n%s", p.output())
	}
	if code, _ := p.call("GET", "/api/v1/keys", key, ""); code != 200 {
		t.Fatalf("bootstrap key: %d", code)
	}
	data, err := os.ReadFile(filepath.Join(dir, "lifeline.db"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(key)) {
		t.Fatal("the secret itself is stored")
	}
}

func TestServerConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "lifeline.yaml")
	if err := os.WriteFile(file, []byte("listen: 127.0.0.1:9000\ndata_dir: /from/file\ndrain_timeout: 5m\nsweep_interval: 100ms\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"LIFELINE_DATA_DIR": "/from/env", "LIFELINE_DRAIN_TIMEOUT": "3m"}
	cfg, err := loadServerConfig([]string{"--config", file, "--drain-timeout", "1m"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:9000" || cfg.DataDir != "/from/env" || cfg.DrainTimeout != time.Minute || cfg.SweepInterval != 100*time.Millisecond || cfg.CheckpointInterval != 30*time.Second {
		t.Fatalf("%+v", cfg)
	}
	if _, err := loadServerConfig([]string{"--config", file}, func(k string) string { return map[string]string{"LIFELINE_SWEEP_INTERVAL": "soon"}[k] }, io.Discard); err == nil {
		t.Fatal("bad env duration accepted")
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("listen: x\ncolour: blue\n"), 0o600)
	if _, err := loadServerConfig([]string{"--config", bad}, func(string) string { return "" }, io.Discard); err == nil {
		t.Fatal("unknown config key accepted")
	}
	cfg, err = loadServerConfig(nil, func(string) string { return "" }, io.Discard)
	if err != nil || cfg.Listen != "127.0.0.1:8080" || cfg.DataDir != "./lifeline-data" {
		t.Fatalf("defaults %+v %v", cfg, err)
	}
}
