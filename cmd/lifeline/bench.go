package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/internal/loadgen"
)

// Limits that keep every bench run bounded, whatever the flags say.
const (
	benchMaxAgents   = 10_000_000
	benchMaxConns    = 4096
	benchMaxDuration = 30 * time.Minute
	// benchMaxOps bounds the measured operations of one load phase.
	benchMaxOps = 1_000_000_000
	// benchTimeout bounds a whole run: registration, load phases, waits.
	benchTimeout = 2 * time.Hour
)

// benchCommon is what every `lifeline bench` mode shares: the target server, the
// fleet size, the load shape and the output format.
type benchCommon struct {
	cmdBase
	conn       connFlags
	agents     int
	conns      int
	duration   time.Duration
	regConns   int
	json       bool
	cpuprofile string
}

func (c *benchCommon) registerFlags(agents, conns int, duration time.Duration) {
	fs := c.fs
	fs.StringVar(&c.conn.server, "server", "", "load the running server at `URL` (loopback only) instead of starting one in process; "+
		"the bench's agents (bench-RUN-NNNNNNN) stay registered there")
	fs.StringVar(&c.conn.key, "key", "", "with --server: an admin `key` (default $"+EnvKey+"); the bench creates an agent key with it, or uses it as is")
	fs.IntVar(&c.agents, "agents", agents, "number of agents to register")
	if conns > 0 {
		fs.IntVar(&c.conns, "conns", conns, "concurrent HTTP/1.1 keep-alive connections")
	}
	if duration > 0 {
		fs.DurationVar(&c.duration, "duration", duration, "how long load is measured (after a short warm-up)")
	}
	fs.IntVar(&c.regConns, "reg-conns", 64, "concurrent registrations")
	fs.BoolVar(&c.json, "json", false, "print a JSON object of the results as the last line")
	fs.StringVar(&c.cpuprofile, "cpuprofile", "", "write a CPU profile of the measured phase (client and in-process server) to `file`")
}

func (c *benchCommon) check() error {
	switch {
	case c.agents < 1 || c.agents > benchMaxAgents:
		return c.usageErrorf("--agents must be from 1 to %d", benchMaxAgents)
	case c.fs.Lookup("conns") != nil && (c.conns < 1 || c.conns > benchMaxConns):
		return c.usageErrorf("--conns must be from 1 to %d", benchMaxConns)
	case c.fs.Lookup("duration") != nil && (c.duration <= 0 || c.duration > benchMaxDuration):
		return c.usageErrorf("--duration must be positive and at most %v", benchMaxDuration)
	case c.regConns < 1 || c.regConns > benchMaxConns:
		return c.usageErrorf("--reg-conns must be from 1 to %d", benchMaxConns)
	}
	if c.conn.server != "" {
		if err := loadgen.CheckLoopback(c.conn.server); err != nil {
			return c.usageErrorf("--server: %v", err)
		}
	}
	return nil
}

func (c *benchCommon) notef(format string, args ...any) {
	fmt.Fprintf(c.Stderr, format+"\n", args...)
}

// startProfile starts the CPU profile if asked; the returned function stops it.
func (c *benchCommon) startProfile() (func(), error) {
	if c.cpuprofile == "" {
		return func() {}, nil
	}
	f, err := os.Create(c.cpuprofile)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		c.notef("CPU profile written to %s (go tool pprof -top %s)", c.cpuprofile, c.cpuprofile)
	}, nil
}

// benchTarget is the server under test: one started in process on a temporary data
// directory, or one given with --server.
type benchTarget struct {
	url      string
	admin    string // a key that may read events (admin or coordinator)
	agentKey string // the key that registers and heartbeats the bench's agents
	ctl      *http.Client
	main     *Main
	dir      string
	runID    string
}

// where describes the target for reports.
func (t *benchTarget) where() string {
	if t.main != nil {
		return "in-process"
	}
	return t.url
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// open starts the in-process server or connects to --server, and makes sure there is
// an agent key to register agents with.
func (c *benchCommon) open(ctx context.Context) (*benchTarget, error) {
	t := &benchTarget{ctl: &http.Client{Transport: loadgen.NewTransport(8), Timeout: time.Minute}, runID: randomHex(3)}
	if c.conn.server == "" {
		dir, err := os.MkdirTemp("", "lifeline-bench-")
		if err != nil {
			return nil, err
		}
		cfg := DefaultServerConfig()
		cfg.Listen = "127.0.0.1:0"
		cfg.DataDir = dir
		cfg.AdminKey = "ll_bench_" + randomHex(16)
		cfg.LogLevel = "warn"
		m := &Main{Config: cfg, Stdout: io.Discard, Stderr: c.Stderr}
		if err := m.Open(ctx); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("start in-process server: %w", err)
		}
		t.main, t.dir, t.url, t.admin = m, dir, "http://"+m.Addr(), cfg.AdminKey
	} else {
		t.url = strings.TrimRight(c.conn.server, "/")
		t.admin = c.conn.key
		if t.admin == "" {
			t.admin = c.getenv(EnvKey)
		}
		if t.admin == "" {
			return nil, c.usageErrorf("--server needs a key: pass --key or set $%s", EnvKey)
		}
	}
	var k struct {
		Key string `json:"key"`
	}
	err := t.call(ctx, "POST", "/api/v1/keys", t.admin, map[string]string{"role": "agent", "name": "lifeline-bench-" + t.runID}, http.StatusCreated, &k)
	switch {
	case err == nil:
		t.agentKey = k.Key
	case t.main == nil && lifeline.ErrorCode(err) == lifeline.EForbidden:
		t.agentKey = t.admin // not an admin key: use it for everything
	default:
		t.close()
		return nil, fmt.Errorf("create the bench's agent key: %w", err)
	}
	return t, nil
}

func (t *benchTarget) close() {
	t.ctl.CloseIdleConnections()
	if t.main != nil {
		_ = t.main.Close()
		os.RemoveAll(t.dir)
	}
}

// call sends one control request and decodes the answer into out.
func (t *benchTarget) call(ctx context.Context, method, path, key string, body any, want int, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, t.url+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("X-API-Key", key)
	req.Header.Set("Content-Type", "application/json")
	res, err := t.ctl.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return err
	}
	if res.StatusCode != want {
		return responseError(res.StatusCode, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// responseError turns an unexpected answer into a *lifeline.Error.
func responseError(status int, body []byte) error {
	var p struct {
		Code   string `json:"code"`
		Detail string `json:"detail"`
	}
	if json.Unmarshal(body, &p) == nil && p.Code != "" {
		return lifeline.Errorf(p.Code, "HTTP %d: %s", status, p.Detail)
	}
	if len(body) > 200 {
		body = body[:200]
	}
	return lifeline.Errorf(lifeline.CodeForHTTPStatus(status), "HTTP %d: %s", status, bytes.TrimSpace(body))
}

// agentIDs returns n agent ids unique to this run.
func (t *benchTarget) agentIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("bench-%s-%07d", t.runID, i)
	}
	return ids
}

// registerAll registers every id concurrently (group commit batches concurrent
// registrations) and returns the rate. done, when not nil, is called after each
// successful registration with the id's index.
func (c *benchCommon) registerAll(ctx context.Context, t *benchTarget, ids []string, body func(id string) []byte, done func(i int)) (float64, error) {
	hc := &http.Client{Transport: loadgen.NewTransport(c.regConns), Timeout: time.Minute}
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next, ok atomic.Int64
	start := time.Now()
	stopProgress := make(chan struct{})
	var pwg sync.WaitGroup
	pwg.Go(func() {
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-tick.C:
				n := ok.Load()
				c.notef("registered %d/%d agents (%.0f/s)", n, len(ids), float64(n)/time.Since(start).Seconds())
			}
		}
	})
	var wg sync.WaitGroup
	for range min(c.regConns, len(ids)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(ids) || ctx.Err() != nil {
					return
				}
				req, err := http.NewRequestWithContext(ctx, "POST", t.url+"/api/v1/agents", bytes.NewReader(body(ids[i])))
				if err != nil {
					cancel(err)
					return
				}
				req.Header.Set("X-API-Key", t.agentKey)
				req.Header.Set("Content-Type", "application/json")
				res, err := hc.Do(req)
				if err != nil {
					cancel(fmt.Errorf("register %s: %w", ids[i], err))
					return
				}
				data, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusCreated {
					cancel(fmt.Errorf("register %s: %w", ids[i], responseError(res.StatusCode, data)))
					return
				}
				ok.Add(1)
				if done != nil {
					done(i)
				}
			}
		})
	}
	wg.Wait()
	close(stopProgress)
	pwg.Wait()
	if err := context.Cause(ctx); err != nil {
		return 0, err
	}
	rate := float64(len(ids)) / time.Since(start).Seconds()
	c.notef("registered %d agents in %v (%.0f/s, %d concurrent)", len(ids), time.Since(start).Round(time.Millisecond), rate, c.regConns)
	return rate, nil
}

// plainRegistration is the registration body of the load modes: long thresholds, so
// that no agent goes silent while registration and load phases take their time.
func plainRegistration(id string) []byte {
	return []byte(`{"agent_id":"` + id + `","role_id":"bench","capabilities":["bench"],` +
		`"heartbeat_config":{"interval_seconds":30,"unhealthy_after_seconds":900,"dead_after_seconds":3600}}`)
}

// heartbeatBody returns a heartbeat body stamped with the current time; workers
// refresh theirs every second so that the server sees no clock drift.
func heartbeatBody(b []byte, now time.Time) []byte {
	b = append(b[:0], `{"status":"active","current_load":1,"client_timestamp":"`...)
	b = now.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, `"}`...)
}

// worker is the per-connection state of a load phase.
type worker struct {
	hdr    http.Header
	body   []byte
	bodyAt time.Time
	resp   bytes.Buffer
}

// post sends body to u and reads the answer into w.resp; any status but 200 is an
// error.
func (w *worker) post(ctx context.Context, hc *http.Client, u *url.URL, body []byte) error {
	req := (&http.Request{
		Method:        "POST",
		URL:           u,
		Header:        w.hdr,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Host:          u.Host,
	}).WithContext(ctx)
	res, err := hc.Do(req)
	if err != nil {
		return err
	}
	w.resp.Reset()
	_, err = w.resp.ReadFrom(res.Body)
	res.Body.Close()
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		return responseError(res.StatusCode, w.resp.Bytes())
	}
	return nil
}

func newWorkers(n int, key string) []worker {
	ws := make([]worker, n)
	for i := range ws {
		ws[i].hdr = http.Header{"X-Api-Key": {key}, "Content-Type": {"application/json"}}
	}
	return ws
}

// heartbeatOp returns the load operation of `bench heartbeat`: worker w sends its seq-th
// heartbeat for agent (w + seq·conns) mod n, so every agent is beaten in turn.
func heartbeatOp(base string, key string, ids []string, conns int, hc *http.Client) (loadgen.Op, error) {
	bu, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	paths := make([]string, len(ids))
	for i, id := range ids {
		paths[i] = "/api/v1/agents/" + id + "/heartbeat"
	}
	ws := newWorkers(conns, key)
	return func(ctx context.Context, wi int, seq int64) error {
		w := &ws[wi]
		if now := time.Now(); now.Sub(w.bodyAt) > time.Second {
			w.body, w.bodyAt = heartbeatBody(w.body, now), now
		}
		u := &url.URL{Scheme: bu.Scheme, Host: bu.Host, Path: paths[(int64(wi)+seq*int64(conns))%int64(len(ids))]}
		return w.post(ctx, hc, u, w.body)
	}, nil
}

// baselineAck is the baseline server's fixed answer, as long as Lifeline's.
var baselineAck = []byte(`{"acknowledged":true,"server_timestamp":"2026-02-08T10:30:00.123456789Z","agent_status":"active","pending_commands":[]}` + "\n")

// baselineHandler is the bare net/http handler Lifeline is compared with: it takes the
// agent id from the path, looks it up in a map and writes a fixed answer.
type baselineHandler struct{ ids map[string]struct{} }

var baselineContentType = []string{"application/json"}

func (h baselineHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, _ := strings.CutPrefix(r.URL.Path, "/api/v1/agents/")
	id, _ = strings.CutSuffix(id, "/heartbeat")
	_, _ = io.Copy(io.Discard, r.Body)
	if _, ok := h.ids[id]; !ok || r.Method != http.MethodPost {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	w.Header()["Content-Type"] = baselineContentType
	_, _ = w.Write(baselineAck)
}

// startBaseline serves baselineHandler on 127.0.0.1 with the server settings of
// `lifeline serve`.
func startBaseline(ids []string) (string, func(), error) {
	m := make(map[string]struct{}, len(ids))
	for _, id := range ids {
		m[id] = struct{}{}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: baselineHandler{m}, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

// loadSide is one server under load in a run: its connection pool, its operation and
// what was measured, slice after slice.
type loadSide struct {
	tr     *http.Transport
	op     loadgen.Op
	total  *loadgen.Result
	slices []float64 // rate of each slice
}

func newSide(conns int, mk func(hc *http.Client) (loadgen.Op, error)) (*loadSide, error) {
	tr := loadgen.NewTransport(conns)
	op, err := mk(&http.Client{Transport: tr, Timeout: time.Minute})
	if err != nil {
		return nil, err
	}
	return &loadSide{tr: tr, op: op, total: &loadgen.Result{Latency: new(loadgen.Histogram)}}, nil
}

// run measures one slice of d after warm.
func (s *loadSide) run(ctx context.Context, conns int, d, warm time.Duration) error {
	r, err := loadgen.Run(ctx, loadgen.Options{Workers: conns, Duration: d, Warmup: warm, MaxOps: benchMaxOps}, s.op)
	if err != nil {
		return err
	}
	s.total.Merge(r)
	s.slices = append(s.slices, r.Rate())
	return nil
}

func (s *loadSide) close() { s.tr.CloseIdleConnections() }

// warmup is the unmeasured start of a side's first slice.
func (c *benchCommon) warmup() time.Duration { return min(time.Second, c.duration/5) }

// phase runs one measured load phase with a fresh connection pool.
func (c *benchCommon) phase(ctx context.Context, conns int, mk func(hc *http.Client) (loadgen.Op, error)) (*loadgen.Result, error) {
	s, err := newSide(conns, mk)
	if err != nil {
		return nil, err
	}
	defer s.close()
	runtime.GC()
	if err := s.run(ctx, conns, c.duration, c.warmup()); err != nil {
		return nil, err
	}
	return s.total, nil
}

// ms rounds a duration to microseconds, in milliseconds, for reports.
func ms(d time.Duration) float64 { return math.Round(loadgen.Ms(d)*1000) / 1000 }

func round1(f float64) float64 { return math.Round(f*10) / 10 }

// thousands formats n with thousands separators.
func thousands(f float64) string {
	s := strconv.FormatInt(int64(math.Round(f)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, ch := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(ch)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func latencyLine(r *loadgen.Result) string {
	h := r.Latency
	return fmt.Sprintf("p50 %.2f ms  p99 %.2f ms  p99.9 %.2f ms  max %.2f ms", loadgen.Ms(h.Quantile(0.5)), loadgen.Ms(h.Quantile(0.99)),
		loadgen.Ms(h.Quantile(0.999)), loadgen.Ms(h.Max()))
}

func (c *benchCommon) printErrors(r *loadgen.Result) {
	for _, e := range r.FirstErrors {
		c.notef("  error: %s", e)
	}
}

// writeReport prints the JSON line when --json is set.
func (c *benchCommon) writeReport(v any) error {
	if !c.json {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.Stdout, "%s\n", b)
	return err
}

// benchEnv describes the machine in every report.
type benchEnv struct {
	Mode      string `json:"mode"`
	Server    string `json:"server"`
	GoVersion string `json:"go_version"`
	CPUs      int    `json:"cpus"`
	Date      string `json:"date"`
}

func (c *benchCommon) env(mode string, t *benchTarget) benchEnv {
	return benchEnv{Mode: mode, Server: t.where(), GoVersion: runtime.Version(), CPUs: runtime.NumCPU(), Date: c.now().UTC().Format(time.RFC3339)}
}

// BenchHeartbeatCommand is `lifeline bench heartbeat`: single heartbeats over HTTP/1.1
// keep-alive, optionally against a bare net/http baseline in the same run.
type BenchHeartbeatCommand struct {
	benchCommon
	baseline bool
	rounds   int
}

// NewBenchHeartbeatCommand returns the command with its flags registered.
func NewBenchHeartbeatCommand(env Env) *BenchHeartbeatCommand {
	c := &BenchHeartbeatCommand{benchCommon: benchCommon{cmdBase: newBase(env, "bench heartbeat")}}
	c.registerFlags(100_000, 64, 10*time.Second)
	c.fs.BoolVar(&c.baseline, "baseline", false, "also drive a bare net/http map-lookup handler the same way, and report the ratio")
	c.fs.IntVar(&c.rounds, "rounds", 5, "with --baseline: alternate the two servers this many times, --duration/rounds each, so that "+
		"noise from the rest of the machine hits both alike")
	return c
}

// heartbeatReport is the JSON line of `bench heartbeat`.
type heartbeatReport struct {
	benchEnv
	Agents            int       `json:"agents"`
	Conns             int       `json:"conns"`
	DurationS         float64   `json:"duration_s"`
	Requests          int64     `json:"requests"`
	RatePerS          float64   `json:"rate_per_s"`
	P50Ms             float64   `json:"p50_ms"`
	P99Ms             float64   `json:"p99_ms"`
	P999Ms            float64   `json:"p999_ms"`
	MaxMs             float64   `json:"max_ms"`
	Errors            int64     `json:"errors"`
	RegistrationsPerS float64   `json:"registrations_per_s"`
	BaselineRatePerS  *float64  `json:"baseline_rate_per_s,omitempty"`
	BaselineP50Ms     *float64  `json:"baseline_p50_ms,omitempty"`
	BaselineP99Ms     *float64  `json:"baseline_p99_ms,omitempty"`
	BaselineErrors    *int64    `json:"baseline_errors,omitempty"`
	Ratio             *float64  `json:"ratio,omitempty"`
	RoundRatios       []float64 `json:"round_ratios,omitempty"`
}

// Run runs the benchmark.
func (c *BenchHeartbeatCommand) Run(ctx context.Context, args []string) error {
	if _, err := c.parse(args, 0); err != nil {
		return done(err)
	}
	if err := c.check(); err != nil {
		return err
	}
	if c.rounds < 1 || c.rounds > 100 {
		return c.usageErrorf("--rounds must be from 1 to 100")
	}
	rounds := c.rounds
	if !c.baseline {
		rounds = 1
	}
	ctx, cancel := context.WithTimeout(ctx, benchTimeout)
	defer cancel()
	t, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer t.close()
	ids := t.agentIDs(c.agents)
	regRate, err := c.registerAll(ctx, t, ids, plainRegistration, nil)
	if err != nil {
		return err
	}
	ours, err := newSide(c.conns, func(hc *http.Client) (loadgen.Op, error) { return heartbeatOp(t.url, t.agentKey, ids, c.conns, hc) })
	if err != nil {
		return err
	}
	defer ours.close()
	var base *loadSide
	if c.baseline {
		burl, stopBase, err := startBaseline(ids)
		if err != nil {
			return err
		}
		defer stopBase()
		base, err = newSide(c.conns, func(hc *http.Client) (loadgen.Op, error) { return heartbeatOp(burl, t.agentKey, ids, c.conns, hc) })
		if err != nil {
			return err
		}
		defer base.close()
	}
	// With --baseline the profile covers both servers (the baseline's samples are in
	// main.baselineHandler and net/http, Lifeline's in api and registry).
	stop, err := c.startProfile()
	if err != nil {
		return err
	}
	runtime.GC()
	slice := c.duration / time.Duration(rounds)
	for i := range rounds {
		warm := time.Duration(0)
		if i == 0 {
			warm = c.warmup()
		}
		if err = ours.run(ctx, c.conns, slice, warm); err != nil {
			break
		}
		if base != nil {
			if err = base.run(ctx, c.conns, slice, warm); err != nil {
				break
			}
		}
	}
	stop()
	if err != nil {
		return err
	}
	o := ours.total
	rep := heartbeatReport{
		benchEnv: c.env("heartbeat", t), Agents: c.agents, Conns: c.conns, DurationS: o.Elapsed.Seconds(),
		Requests: o.Ops, RatePerS: round1(o.Rate()), P50Ms: ms(o.Latency.Quantile(0.5)), P99Ms: ms(o.Latency.Quantile(0.99)),
		P999Ms: ms(o.Latency.Quantile(0.999)), MaxMs: ms(o.Latency.Max()), Errors: o.Errors, RegistrationsPerS: round1(regRate),
	}
	fmt.Fprintf(c.Stdout, "lifeline bench heartbeat: %d agents, %d connections, %v measured per server, %s server (%s, %d CPUs)\n",
		c.agents, c.conns, c.duration, t.where(), runtime.Version(), runtime.NumCPU())
	fmt.Fprintf(c.Stdout, "  registration  %s/s\n", thousands(regRate))
	fmt.Fprintf(c.Stdout, "  lifeline      %s heartbeats/s  %s  errors %d\n", thousands(o.Rate()), latencyLine(o), o.Errors)
	c.printErrors(o)
	if base != nil {
		b := base.total
		br, b50, b99, be := round1(b.Rate()), ms(b.Latency.Quantile(0.5)), ms(b.Latency.Quantile(0.99)), b.Errors
		rep.BaselineRatePerS, rep.BaselineP50Ms, rep.BaselineP99Ms, rep.BaselineErrors = &br, &b50, &b99, &be
		fmt.Fprintf(c.Stdout, "  baseline      %s requests/s    %s  errors %d  (bare net/http, map lookup, fixed answer)\n",
			thousands(b.Rate()), latencyLine(b), b.Errors)
		c.printErrors(b)
		if b.Rate() > 0 {
			ratio := math.Round(o.Rate()/b.Rate()*1000) / 1000
			rep.Ratio = &ratio
			for i := range ours.slices {
				if base.slices[i] > 0 {
					rep.RoundRatios = append(rep.RoundRatios, math.Round(ours.slices[i]/base.slices[i]*1000)/1000)
				}
			}
			fmt.Fprintf(c.Stdout, "  ratio         %.3f (lifeline / baseline; %d alternating rounds: %v)\n", ratio, rounds, rep.RoundRatios)
		}
	}
	return c.writeReport(rep)
}

// BenchBatchCommand is `lifeline bench batch`: heartbeats through POST
// /api/v1/heartbeats, --batch agents per request.
type BenchBatchCommand struct {
	benchCommon
	batch int
}

// NewBenchBatchCommand returns the command with its flags registered.
func NewBenchBatchCommand(env Env) *BenchBatchCommand {
	c := &BenchBatchCommand{benchCommon: benchCommon{cmdBase: newBase(env, "bench batch")}}
	c.registerFlags(100_000, 8, 10*time.Second)
	c.fs.IntVar(&c.batch, "batch", 1000, "heartbeats per request (at most the server's cap, 1000)")
	return c
}

// batchReport is the JSON line of `bench batch`.
type batchReport struct {
	benchEnv
	Agents              int     `json:"agents"`
	Batch               int     `json:"batch"`
	Conns               int     `json:"conns"`
	DurationS           float64 `json:"duration_s"`
	Requests            int64   `json:"requests"`
	RequestsPerS        float64 `json:"requests_per_s"`
	AgentHeartbeatsPerS float64 `json:"agent_heartbeats_per_s"`
	P50Ms               float64 `json:"p50_ms"`
	P99Ms               float64 `json:"p99_ms"`
	P999Ms              float64 `json:"p999_ms"`
	MaxMs               float64 `json:"max_ms"`
	Errors              int64   `json:"errors"`
	ItemErrors          int64   `json:"item_errors"`
	RegistrationsPerS   float64 `json:"registrations_per_s"`
}

// batchBody builds the body of one batch request for ids.
func batchBody(b []byte, ids []string, now time.Time) []byte {
	ts := now.UTC().AppendFormat(nil, time.RFC3339Nano)
	b = append(b[:0], `{"heartbeats":[`...)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"agent_id":"`...)
		b = append(b, id...)
		b = append(b, `","status":"active","current_load":1,"client_timestamp":"`...)
		b = append(b, ts...)
		b = append(b, `"}`...)
	}
	return append(b, "]}"...)
}

var nackMarker = []byte(`"acknowledged":false`)

// Run runs the benchmark.
func (c *BenchBatchCommand) Run(ctx context.Context, args []string) error {
	if _, err := c.parse(args, 0); err != nil {
		return done(err)
	}
	if err := c.check(); err != nil {
		return err
	}
	if c.batch < 1 || c.batch > 1000 {
		return c.usageErrorf("--batch must be from 1 to 1000")
	}
	ctx, cancel := context.WithTimeout(ctx, benchTimeout)
	defer cancel()
	t, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer t.close()
	ids := t.agentIDs(c.agents)
	regRate, err := c.registerAll(ctx, t, ids, plainRegistration, nil)
	if err != nil {
		return err
	}
	windows := (len(ids) + c.batch - 1) / c.batch
	var itemErrors atomic.Int64
	stop, err := c.startProfile()
	if err != nil {
		return err
	}
	res, err := c.phase(ctx, c.conns, func(hc *http.Client) (loadgen.Op, error) {
		u, err := url.Parse(t.url + "/api/v1/heartbeats")
		if err != nil {
			return nil, err
		}
		ws := newWorkers(c.conns, t.agentKey)
		return func(ctx context.Context, wi int, seq int64) error {
			w := &ws[wi]
			k := int((int64(wi) + seq*int64(c.conns)) % int64(windows))
			lo, hi := k*c.batch, min((k+1)*c.batch, len(ids))
			w.body = batchBody(w.body, ids[lo:hi], time.Now())
			if err := w.post(ctx, hc, u, w.body); err != nil {
				return err
			}
			if n := bytes.Count(w.resp.Bytes(), nackMarker); n > 0 {
				itemErrors.Add(int64(n))
			}
			return nil
		}, nil
	})
	stop()
	if err != nil {
		return err
	}
	// Requests cover whole windows except the last, shorter one; count what was sent.
	perReq := float64(len(ids)) / float64(windows)
	beats := float64(res.Ops)*perReq - float64(itemErrors.Load())
	rate := beats / res.Elapsed.Seconds()
	rep := batchReport{
		benchEnv: c.env("batch", t), Agents: c.agents, Batch: c.batch, Conns: c.conns, DurationS: res.Elapsed.Seconds(),
		Requests: res.Ops, RequestsPerS: round1(res.Rate()), AgentHeartbeatsPerS: round1(rate),
		P50Ms: ms(res.Latency.Quantile(0.5)), P99Ms: ms(res.Latency.Quantile(0.99)), P999Ms: ms(res.Latency.Quantile(0.999)),
		MaxMs: ms(res.Latency.Max()), Errors: res.Errors, ItemErrors: itemErrors.Load(), RegistrationsPerS: round1(regRate),
	}
	fmt.Fprintf(c.Stdout, "lifeline bench batch: %d agents, %d per request, %d connections, %v, %s server (%s, %d CPUs)\n",
		c.agents, c.batch, c.conns, c.duration, t.where(), runtime.Version(), runtime.NumCPU())
	fmt.Fprintf(c.Stdout, "  registration  %s/s\n", thousands(regRate))
	fmt.Fprintf(c.Stdout, "  batches       %s requests/s  %s  errors %d\n", thousands(res.Rate()), latencyLine(res), res.Errors)
	fmt.Fprintf(c.Stdout, "  heartbeats    %s agent heartbeats/s  item errors %d\n", thousands(rate), itemErrors.Load())
	c.printErrors(res)
	return c.writeReport(rep)
}

// BenchMemoryCommand is `lifeline bench memory`: the heap (and RSS) growth of an
// in-process server per registered agent.
type BenchMemoryCommand struct {
	benchCommon
	direct     bool
	memprofile string
}

// NewBenchMemoryCommand returns the command with its flags registered.
func NewBenchMemoryCommand(env Env) *BenchMemoryCommand {
	c := &BenchMemoryCommand{benchCommon: benchCommon{cmdBase: newBase(env, "bench memory")}}
	c.registerFlags(100_000, 0, 0)
	c.fs.BoolVar(&c.direct, "direct", false, "register through the engine in process instead of over HTTP (faster for a million agents)")
	c.fs.StringVar(&c.memprofile, "memprofile", "", "write a heap profile after registration to `file`")
	return c
}

// memoryReport is the JSON line of `bench memory`.
type memoryReport struct {
	benchEnv
	Agents              int     `json:"agents"`
	PayloadBytes        int     `json:"payload_bytes"`
	BytesPerAgent       float64 `json:"bytes_per_agent"`
	RSSBytesPerAgent    float64 `json:"rss_bytes_per_agent"`
	HeapBeforeBytes     uint64  `json:"heap_before_bytes"`
	HeapAfterBytes      uint64  `json:"heap_after_bytes"`
	RSSBeforeBytes      uint64  `json:"rss_before_bytes"`
	RSSAfterBytes       uint64  `json:"rss_after_bytes"`
	RegistrationsPerS   float64 `json:"registrations_per_s"`
	RegisteredInProcess bool    `json:"registered_in_process"`
}

// Capability and metadata vocabularies of the memory fleet: as in a real fleet, most
// strings repeat from agent to agent.
var (
	memCapabilities = []string{"billing", "invoicing", "refunds", "reporting", "search:web", "search:docs", "code:python",
		"code:go", "code:review", "summarize", "translate:fr", "translate:de", "plan", "triage", "ocr", "vision", "tools/http",
		"tools/sql", "tools/shell", "memory:long"}
	memRegions = []string{"eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-south-1"}
	memTeams   = []string{"payments", "support", "research", "platform", "growth"}
)

// memoryRegistration is a registration with about 200 bytes of capabilities and
// metadata: six capabilities and a six-member metadata object.
func memoryRegistration(i int, id string) *lifeline.Registration {
	caps := make([]string, 6)
	for j := range caps {
		// Cloned: a registration decoded from JSON has strings of its own.
		caps[j] = strings.Clone(memCapabilities[(i*7+j*3)%len(memCapabilities)])
	}
	region := memRegions[i%len(memRegions)]
	meta := fmt.Sprintf(`{"region":%q,"zone":"%sb","host":"host-%07d.cluster.local","team":%q,"version":"1.14.%d","gpu":%t}`,
		region, region, i, memTeams[i%len(memTeams)], i%10, i%4 == 0)
	maxTasks := 8
	return &lifeline.Registration{
		AgentID: id, RoleID: fmt.Sprintf("pool-%02d", i%20), Capabilities: caps, Metadata: json.RawMessage(meta),
		Capacity: &lifeline.RegistrationCapacity{MaxConcurrentTasks: &maxTasks},
		HeartbeatConfig: &lifeline.RegistrationHeartbeat{IntervalSeconds: ptr(30), UnhealthyAfterSeconds: ptr(900),
			DeadAfterSeconds: ptr(3600)},
	}
}

func ptr[T any](v T) *T { return &v }

// payloadBytes is the size of the capabilities and metadata of a registration as JSON.
func payloadBytes(r *lifeline.Registration) int {
	b, _ := json.Marshal(r.Capabilities)
	return len(b) + len(r.Metadata)
}

// heapAfterGC collects garbage until the heap stops shrinking and returns its size.
func heapAfterGC() uint64 {
	var ms runtime.MemStats
	var last uint64 = math.MaxUint64
	for range 5 {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		if ms.HeapAlloc >= last {
			break
		}
		last = ms.HeapAlloc
	}
	return ms.HeapAlloc
}

// rss returns the resident set size of this process, 0 where unknown.
func rss() uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// Run runs the benchmark.
func (c *BenchMemoryCommand) Run(ctx context.Context, args []string) error {
	if _, err := c.parse(args, 0); err != nil {
		return done(err)
	}
	if err := c.check(); err != nil {
		return err
	}
	if c.conn.server != "" {
		return c.usageErrorf("memory measures the heap of an in-process server; --server is not supported")
	}
	ctx, cancel := context.WithTimeout(ctx, benchTimeout)
	defer cancel()
	t, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer t.close()
	ids := t.agentIDs(c.agents)
	payload := payloadBytes(memoryRegistration(0, ids[0]))
	debug.FreeOSMemory()
	heap0, rss0 := heapAfterGC(), rss()
	var regRate float64
	if c.direct {
		regRate, err = c.registerDirect(ctx, t, ids)
	} else {
		bodies := func(id string) []byte {
			i, _ := strconv.Atoi(id[strings.LastIndexByte(id, '-')+1:])
			b, _ := json.Marshal(memoryRegistration(i, id))
			return b
		}
		regRate, err = c.registerAll(ctx, t, ids, bodies, nil)
	}
	if err != nil {
		return err
	}
	ids = nil
	heap1 := heapAfterGC()
	debug.FreeOSMemory()
	rss1 := rss()
	if c.memprofile != "" {
		f, err := os.Create(c.memprofile)
		if err != nil {
			return err
		}
		err = pprof.WriteHeapProfile(f)
		f.Close()
		if err != nil {
			return err
		}
		c.notef("heap profile written to %s (go tool pprof -sample_index=inuse_space -top %s)", c.memprofile, c.memprofile)
	}
	per := func(a, b uint64) float64 { return round1((float64(b) - float64(a)) / float64(c.agents)) }
	rep := memoryReport{
		benchEnv: c.env("memory", t), Agents: c.agents, PayloadBytes: payload,
		BytesPerAgent: per(heap0, heap1), RSSBytesPerAgent: per(rss0, rss1),
		HeapBeforeBytes: heap0, HeapAfterBytes: heap1, RSSBeforeBytes: rss0, RSSAfterBytes: rss1,
		RegistrationsPerS: round1(regRate), RegisteredInProcess: c.direct,
	}
	fmt.Fprintf(c.Stdout, "lifeline bench memory: %d agents with %d bytes of capabilities and metadata each (%s, %d CPUs)\n",
		c.agents, payload, runtime.Version(), runtime.NumCPU())
	fmt.Fprintf(c.Stdout, "  heap          %d → %d bytes after GC: %.0f bytes per agent\n", heap0, heap1, rep.BytesPerAgent)
	fmt.Fprintf(c.Stdout, "  RSS           %d → %d bytes: %.0f bytes per agent (includes the SQLite page cache)\n", rss0, rss1, rep.RSSBytesPerAgent)
	fmt.Fprintf(c.Stdout, "  registration  %s/s\n", thousands(regRate))
	return c.writeReport(rep)
}

// registerDirect registers ids through the in-process engine, concurrently, as the
// system (no key).
func (c *BenchMemoryCommand) registerDirect(ctx context.Context, t *benchTarget, ids []string) (float64, error) {
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	start := time.Now()
	var wg sync.WaitGroup
	for range min(c.regConns, len(ids)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(ids) || ctx.Err() != nil {
					return
				}
				if _, err := t.main.engine.RegisterAgent(ctx, memoryRegistration(i, ids[i])); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	rate := float64(len(ids)) / time.Since(start).Seconds()
	c.notef("registered %d agents in process in %v (%.0f/s)", len(ids), time.Since(start).Round(time.Millisecond), rate)
	return rate, nil
}

// BenchDetectCommand is `lifeline bench detect`: how long after their deadline
// silenced agents are reported unhealthy on the event stream.
type BenchDetectCommand struct {
	benchCommon
	silent         int
	unhealthyAfter int
	wait           time.Duration
}

// NewBenchDetectCommand returns the command with its flags registered.
func NewBenchDetectCommand(env Env) *BenchDetectCommand {
	c := &BenchDetectCommand{benchCommon: benchCommon{cmdBase: newBase(env, "bench detect")}}
	c.registerFlags(12_000, 0, 0)
	c.fs.IntVar(&c.silent, "silent", 10_000, "agents silenced at the same moment")
	c.fs.IntVar(&c.unhealthyAfter, "unhealthy-after", 2, "unhealthy_after_seconds of the agents (interval: half of it, dead_after: twice)")
	c.fs.DurationVar(&c.wait, "wait", 15*time.Second, "how long past the deadlines to wait for the events")
	return c
}

// detectReport is the JSON line of `bench detect`.
type detectReport struct {
	benchEnv
	Agents            int     `json:"agents"`
	Silent            int     `json:"silent"`
	UnhealthyAfterS   int     `json:"unhealthy_after_s"`
	IntervalS         int     `json:"interval_s"`
	EventSource       string  `json:"event_source"`
	Detected          int     `json:"detected"`
	Missing           int     `json:"missing"`
	Early             int     `json:"early"`
	FalsePositives    int     `json:"false_positives"`
	P50Ms             float64 `json:"p50_ms"`
	P99Ms             float64 `json:"p99_ms"`
	MaxMs             float64 `json:"max_ms"`
	EventP50Ms        float64 `json:"event_p50_ms"`
	EventP99Ms        float64 `json:"event_p99_ms"`
	EventMaxMs        float64 `json:"event_max_ms"`
	RegistrationsPerS float64 `json:"registrations_per_s"`
}

// arrival is an event and the moment the client read it.
type arrival struct {
	ev lifeline.Event
	at time.Time
}

// keepAlive heartbeats registered, not silenced agents through the batch endpoint in
// rounds, and remembers the server_timestamp of every acknowledged heartbeat.
type keepAlive struct {
	t          *benchTarget
	ids        []string
	registered []atomic.Bool
	silent     int // agents [0, silent) are silenced on request
	silenced   atomic.Bool
	lastAck    []time.Time // by agent index; written by rounds
	period     time.Duration
	hc         *http.Client
	rounds     chan bool // after each round: whether it excluded the silent agents
	errs       atomic.Int64
	firstErr   atomic.Pointer[string]
}

func (k *keepAlive) run(ctx context.Context) {
	tick := time.NewTicker(k.period)
	defer tick.Stop()
	for {
		silenced := k.silenced.Load()
		k.round(ctx, silenced)
		select {
		case k.rounds <- silenced:
		default:
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// round sends one heartbeat for every live agent, in batches of 1000, four at a time.
func (k *keepAlive) round(ctx context.Context, silenced bool) {
	var batch []int
	var batches [][]int
	for i := range k.ids {
		if !k.registered[i].Load() || (silenced && i < k.silent) {
			continue
		}
		batch = append(batch, i)
		if len(batch) == 1000 {
			batches = append(batches, batch)
			batch = nil
		}
	}
	if len(batch) > 0 {
		batches = append(batches, batch)
	}
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for _, b := range batches {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := k.send(ctx, b); err != nil && ctx.Err() == nil {
				k.errs.Add(1)
				msg := err.Error()
				k.firstErr.CompareAndSwap(nil, &msg)
			}
		})
	}
	wg.Wait()
}

func (k *keepAlive) send(ctx context.Context, idx []int) error {
	ids := make([]string, len(idx))
	for j, i := range idx {
		ids[j] = k.ids[i]
	}
	req, err := http.NewRequestWithContext(ctx, "POST", k.t.url+"/api/v1/heartbeats", bytes.NewReader(batchBody(nil, ids, time.Now())))
	if err != nil {
		return err
	}
	req.Header.Set("X-API-Key", k.t.agentKey)
	req.Header.Set("Content-Type", "application/json")
	res, err := k.hc.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		return responseError(res.StatusCode, data)
	}
	var out struct {
		Results []struct {
			Acknowledged    bool      `json:"acknowledged"`
			ServerTimestamp time.Time `json:"server_timestamp"`
			Detail          string    `json:"detail"`
		} `json:"results"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return err
	}
	if len(out.Results) != len(idx) {
		return fmt.Errorf("%d results for %d heartbeats", len(out.Results), len(idx))
	}
	for j, r := range out.Results {
		if !r.Acknowledged {
			return fmt.Errorf("heartbeat of %s refused: %s", ids[j], r.Detail)
		}
		k.lastAck[idx[j]] = r.ServerTimestamp
	}
	return nil
}

// Run runs the benchmark.
func (c *BenchDetectCommand) Run(ctx context.Context, args []string) error {
	if _, err := c.parse(args, 0); err != nil {
		return done(err)
	}
	if err := c.check(); err != nil {
		return err
	}
	switch {
	case c.unhealthyAfter < 2 || c.unhealthyAfter > 3600:
		return c.usageErrorf("--unhealthy-after must be from 2 to 3600 seconds")
	case c.silent < 1 || c.silent > c.agents:
		return c.usageErrorf("--silent must be from 1 to --agents")
	case c.wait <= 0 || c.wait > benchMaxDuration:
		return c.usageErrorf("--wait must be positive and at most %v", benchMaxDuration)
	}
	ctx, cancel := context.WithTimeout(ctx, benchTimeout)
	defer cancel()
	t, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer t.close()

	interval := max(1, c.unhealthyAfter/2)
	unhealthy := time.Duration(c.unhealthyAfter) * time.Second
	ids := t.agentIDs(c.agents)
	ka := &keepAlive{
		t: t, ids: ids, registered: make([]atomic.Bool, len(ids)), silent: c.silent, lastAck: make([]time.Time, len(ids)),
		period: time.Duration(interval) * time.Second / 2, hc: &http.Client{Transport: loadgen.NewTransport(4), Timeout: time.Minute},
		rounds: make(chan bool, 1),
	}
	defer ka.hc.CloseIdleConnections()
	kctx, stopKeepAlive := context.WithCancel(ctx)
	var kwg sync.WaitGroup
	defer kwg.Wait()
	defer stopKeepAlive()
	kwg.Go(func() { ka.run(kctx) })

	reg := func(id string) []byte {
		return []byte(`{"agent_id":"` + id + `","role_id":"bench-detect","heartbeat_config":{"interval_seconds":` + strconv.Itoa(interval) +
			`,"unhealthy_after_seconds":` + strconv.Itoa(c.unhealthyAfter) + `,"dead_after_seconds":` + strconv.Itoa(2*c.unhealthyAfter) + `}}`)
	}
	regRate, err := c.registerAll(ctx, t, ids, reg, func(i int) { ka.registered[i].Store(true) })
	if err != nil {
		return err
	}
	// The third round to end started after the last registration: every agent has
	// been beaten.
	for range 3 {
		<-ka.rounds
	}
	if n := ka.errs.Load(); n > 0 {
		return fmt.Errorf("keep-alive heartbeats failed %d times: %s", n, *ka.firstErr.Load())
	}
	after, err := t.lastSeq(ctx)
	if err != nil {
		return err
	}
	events := make(chan arrival, 4096)
	sctx, stopStream := context.WithCancel(ctx)
	defer stopStream()
	source, sourceDesc, err := t.streamEvents(sctx, after, events)
	if err != nil {
		return err
	}

	stopProfile, err := c.startProfile()
	if err != nil {
		return err
	}
	defer func() { stopProfile() }()
	// Silence: the next round leaves the silent agents out; wait until it is over, so
	// that their last acknowledged heartbeats are known.
	ka.silenced.Store(true)
	for !<-ka.rounds {
	}
	deadlines := make(map[string]time.Time, c.silent)
	var last time.Time
	for i := range c.silent {
		d := ka.lastAck[i].Add(unhealthy)
		deadlines[ids[i]] = d
		if d.After(last) {
			last = d
		}
	}
	fmt.Fprintf(c.Stdout, "lifeline bench detect: %d agents, %d silenced at once, unhealthy after %ds (interval %ds), %s server (%s, %d CPUs)\n",
		c.agents, c.silent, c.unhealthyAfter, interval, t.where(), runtime.Version(), runtime.NumCPU())
	fmt.Fprintf(c.Stdout, "  events from   %s\n", sourceDesc)

	arrive, stamp := new(loadgen.Histogram), new(loadgen.Histogram)
	seen := make(map[string]bool, c.silent)
	early, falsePos := 0, 0
	giveUp := time.NewTimer(time.Until(last.Add(c.wait)))
	defer giveUp.Stop()
wait:
	for len(seen) < c.silent {
		select {
		case a, ok := <-events:
			if !ok {
				break wait
			}
			if a.ev.Type != lifeline.EventAgentLifecycle || a.ev.NewStatus != lifeline.StatusUnhealthy || a.ev.Seq <= after {
				continue
			}
			d, silent := deadlines[a.ev.AgentID]
			if !silent {
				falsePos++
				continue
			}
			if seen[a.ev.AgentID] {
				continue
			}
			seen[a.ev.AgentID] = true
			if a.ev.Timestamp.Before(d) {
				early++
			}
			arrive.Record(a.at.Sub(d))
			stamp.Record(a.ev.Timestamp.Sub(d))
		case <-giveUp.C:
			break wait
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	stopProfile()
	stopProfile = func() {}
	stopStream()
	stopKeepAlive()
	kwg.Wait()
	if n := ka.errs.Load(); n > 0 {
		c.notef("keep-alive heartbeats failed %d times: %s", n, *ka.firstErr.Load())
	}
	rep := detectReport{
		benchEnv: c.env("detect", t), Agents: c.agents, Silent: c.silent, UnhealthyAfterS: c.unhealthyAfter, IntervalS: interval,
		EventSource: source, Detected: len(seen), Missing: c.silent - len(seen), Early: early, FalsePositives: falsePos,
		P50Ms: ms(arrive.Quantile(0.5)), P99Ms: ms(arrive.Quantile(0.99)), MaxMs: ms(arrive.Max()),
		EventP50Ms: ms(stamp.Quantile(0.5)), EventP99Ms: ms(stamp.Quantile(0.99)), EventMaxMs: ms(stamp.Max()),
		RegistrationsPerS: round1(regRate),
	}
	fmt.Fprintf(c.Stdout, "  detected      %d of %d (missing %d), early %d, false positives %d\n", rep.Detected, c.silent, rep.Missing, early, falsePos)
	fmt.Fprintf(c.Stdout, "  arrival       after the deadline: p50 %.1f ms  p99 %.1f ms  max %.1f ms\n", rep.P50Ms, rep.P99Ms, rep.MaxMs)
	fmt.Fprintf(c.Stdout, "  event time    after the deadline: p50 %.1f ms  p99 %.1f ms  max %.1f ms\n", rep.EventP50Ms, rep.EventP99Ms, rep.EventMaxMs)
	return c.writeReport(rep)
}

// lastSeq returns the seq of the newest event in the log.
func (t *benchTarget) lastSeq(ctx context.Context) (int64, error) {
	var after int64
	for {
		var page struct {
			Events    []json.RawMessage `json:"events"`
			NextAfter int64             `json:"next_after"`
		}
		if err := t.call(ctx, "GET", "/api/v1/events?limit=1000&after="+strconv.FormatInt(after, 10), t.admin, nil, 200, &page); err != nil {
			return 0, fmt.Errorf("read the event log: %w", err)
		}
		after = page.NextAfter
		if len(page.Events) < 1000 {
			return after, nil
		}
	}
}

// streamEvents delivers agent.lifecycle events after seq to out until ctx is done: from
// the SSE stream when the server has one, else by polling the event log every 5 ms.
// It returns which source it uses ("sse" or "poll") and a description of it.
func (t *benchTarget) streamEvents(ctx context.Context, after int64, out chan<- arrival) (kind, desc string, err error) {
	req, err := http.NewRequestWithContext(ctx, "GET", t.url+"/api/v1/events/stream?type=agent.lifecycle", nil)
	if err != nil {
		return "", "", err
	}
	req.Header.Set("X-API-Key", t.admin)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Last-Event-ID", strconv.FormatInt(after, 10))
	hc := &http.Client{Transport: loadgen.NewTransport(1)}
	res, err := hc.Do(req)
	if err == nil && res.StatusCode == http.StatusOK && strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		go func() {
			defer close(out)
			defer res.Body.Close()
			readSSE(ctx, res.Body, out)
		}()
		return "sse", "the SSE stream (GET /api/v1/events/stream?type=agent.lifecycle)", nil
	}
	if err == nil {
		io.Copy(io.Discard, io.LimitReader(res.Body, 1<<20))
		res.Body.Close()
	}
	go func() {
		defer close(out)
		t.pollEvents(ctx, after, out)
	}()
	return "poll", "polling GET /api/v1/events every 5 ms (this server has no SSE stream)", nil
}

// readSSE parses an event stream: "id:", "event:" and "data:" lines, a blank line
// ending each event, ":" comments ignored.
func readSSE(ctx context.Context, r io.Reader, out chan<- arrival) {
	br := bufio.NewReaderSize(r, 64<<10)
	var data []byte
	var id int64
	for {
		line, err := br.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
		line = bytes.TrimRight(line, "\r\n")
		switch {
		case len(line) == 0:
			if len(data) > 0 {
				var ev lifeline.Event
				if json.Unmarshal(data, &ev) == nil {
					if ev.Seq == 0 {
						ev.Seq = id
					}
					select {
					case out <- arrival{ev: ev, at: time.Now()}:
					case <-ctx.Done():
						return
					}
				}
			}
			data = data[:0]
		case line[0] == ':':
		case bytes.HasPrefix(line, []byte("data:")):
			data = append(data, bytes.TrimPrefix(bytes.TrimPrefix(line, []byte("data:")), []byte(" "))...)
		case bytes.HasPrefix(line, []byte("id:")):
			id, _ = strconv.ParseInt(string(bytes.TrimSpace(line[3:])), 10, 64)
		}
	}
}

func (t *benchTarget) pollEvents(ctx context.Context, after int64, out chan<- arrival) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		var page struct {
			Events    []lifeline.Event `json:"events"`
			NextAfter int64            `json:"next_after"`
		}
		err := t.call(ctx, "GET", "/api/v1/events?type=agent.lifecycle&limit=1000&after="+strconv.FormatInt(after, 10), t.admin, nil, 200, &page)
		at := time.Now()
		if err == nil {
			for _, ev := range page.Events {
				select {
				case out <- arrival{ev: ev, at: at}:
				case <-ctx.Done():
					return
				}
			}
			after = page.NextAfter
			if len(page.Events) == 1000 {
				continue // more are waiting
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

var (
	_ Command = (*BenchHeartbeatCommand)(nil)
	_ Command = (*BenchBatchCommand)(nil)
	_ Command = (*BenchDetectCommand)(nil)
	_ Command = (*BenchMemoryCommand)(nil)
)
