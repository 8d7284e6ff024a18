//go:build linux

package stream_test

// Benchmarks of the real-time plane (docs/bench-realtime.md). They are slow (seconds
// per case) and run only with -bench:
//
//	go test -run '^$' -bench . -benchtime 1x ./stream/
//
// The WebSocket clients run in a child process (this test binary, re-executed in client
// mode), so that the server's heap and CPU are measured without them.

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/stream"
)

func TestMain(m *testing.M) {
	if os.Getenv("LIFELINE_BENCH_CLIENTS") != "" {
		os.Exit(benchClients())
	}
	os.Exit(m.Run())
}

// clientResult is what the client process reports.
type clientResult struct {
	// CPU is the client process's CPU time (user + system) during the run.
	CPU      time.Duration `json:"cpu"`
	Messages int           `json:"messages"`
	P50      float64       `json:"p50_ms"`
	P99      float64       `json:"p99_ms"`
	Max      float64       `json:"max_ms"`
	Errors   int           `json:"errors"`
}

// benchClients is the client process: LIFELINE_BENCH_CLIENTS WebSocket clients on the
// agents of LIFELINE_BENCH_AGENTS (comma-separated, round robin) of the server at
// LIFELINE_BENCH_ADDR. It prints "ready" once all are connected, records the latency
// of every update received (now − its timestamp, which the benchmark sets at Publish)
// between a "start" line on stdin and the end of stdin, and prints a clientResult.
//
// The clients share the 2 cores with the server, so they are built to cost little:
// one goroutine serves all of them from one epoll set, reading each ready socket once
// and parsing the (unmasked) server frames in place. A goroutine per client with a
// general-purpose WebSocket library costs several times more CPU per message and
// would measure mostly itself.
func benchClients() int {
	n, _ := strconv.Atoi(os.Getenv("LIFELINE_BENCH_CLIENTS"))
	addr, key := os.Getenv("LIFELINE_BENCH_ADDR"), os.Getenv("LIFELINE_BENCH_KEY")
	agents := strings.Split(os.Getenv("LIFELINE_BENCH_AGENTS"), ",")

	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		fmt.Fprintln(os.Stderr, "epoll:", err)
		return 1
	}
	defer syscall.Close(epfd)
	clients := make([]*rawClient, n)
	for i := range clients {
		c, err := dialRaw(addr, agents[i%len(agents)], key, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, "dial:", err)
			return 1
		}
		clients[i] = c
		defer syscall.Close(c.fd)
		if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, c.fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(i)}); err != nil {
			fmt.Fprintln(os.Stderr, "epoll_ctl:", err)
			return 1
		}
	}

	var (
		recording, stopping atomic.Bool
		lat                 []time.Duration
		errs                int
		done                = make(chan struct{})
	)
	go func() {
		defer close(done)
		events := make([]syscall.EpollEvent, 256)
		buf := make([]byte, 256<<10)
		for !stopping.Load() {
			k, err := syscall.EpollWait(epfd, events, 100)
			if err != nil && err != syscall.EINTR {
				errs++
				return
			}
			for _, ev := range events[:max(k, 0)] {
				c := clients[ev.Fd]
				nr, err := syscall.Read(c.fd, buf)
				if err == syscall.EAGAIN {
					continue
				}
				if nr <= 0 {
					if !stopping.Load() {
						errs++
					}
					syscall.EpollCtl(epfd, syscall.EPOLL_CTL_DEL, c.fd, nil)
					continue
				}
				lat = c.received(buf[:nr], time.Now(), recording.Load(), lat)
			}
		}
	}()
	if path := os.Getenv("LIFELINE_BENCH_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	var cpu0 time.Duration
	for in.Scan() {
		if in.Text() == "start" {
			cpu0 = cpuTime()
			recording.Store(true)
		}
	}
	cpu := cpuTime() - cpu0
	stopping.Store(true)
	<-done
	slices.Sort(lat)
	res := clientResult{CPU: cpu, Messages: len(lat), Errors: errs}
	if len(lat) > 0 {
		pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / 1e6 }
		res.P50, res.P99, res.Max = pct(0.50), pct(0.99), pct(1)
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// rawClient is a minimal RFC 6455 client on a non-blocking socket: it parses server
// frames (never masked) and answers pings (with masked frames, as clients must).
type rawClient struct {
	fd      int
	pending []byte
}

// dialRaw connects, performs the opening handshake and returns the client with its
// socket in non-blocking mode, detached from the Go runtime's poller. rcvbuf > 0 sets
// the socket's receive buffer.
func dialRaw(addr, agent, key string, rcvbuf int) (*rawClient, error) {
	conn, rest, err := handshake(addr, agent, key, rcvbuf)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	f, err := conn.(*net.TCPConn).File()
	if err != nil {
		return nil, err
	}
	// The duplicate outlives conn; the os.File must not close it when collected.
	fd, err := syscall.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		return nil, err
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	c := &rawClient{fd: fd}
	c.received(rest, time.Now(), false, nil) // connection_established: not measured
	return c, nil
}

// handshake dials addr and upgrades GET /agents/{agent}/ws; it returns the connection
// and the bytes that followed the 101 response.
func handshake(addr, agent, key string, rcvbuf int) (net.Conn, []byte, error) {
	d := net.Dialer{}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			})
		}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(conn, "GET /agents/%s/ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-API-Key: %s\r\n\r\n", agent, addr, key)
	var head []byte
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			conn.Close()
			return nil, nil, err
		}
		head = append(head, buf[:n]...)
		if i := bytes.Index(head, []byte("\r\n\r\n")); i >= 0 {
			if !bytes.HasPrefix(head, []byte("HTTP/1.1 101 ")) {
				conn.Close()
				return nil, nil, fmt.Errorf("handshake: %q", head[:i])
			}
			return conn, head[i+4:], nil
		}
	}
}

// received parses the frames completed by data and appends the latencies of the
// updates they carry when recording.
func (c *rawClient) received(data []byte, now time.Time, recording bool, lat []time.Duration) []time.Duration {
	c.pending = append(c.pending, data...)
	p := c.pending
	for len(p) >= 2 {
		op, l, off := p[0]&0x0f, uint64(p[1]&0x7f), 2
		switch l {
		case 126:
			if len(p) < 4 {
				break
			}
			l, off = uint64(binary.BigEndian.Uint16(p[2:4])), 4
		case 127:
			if len(p) < 10 {
				break
			}
			l, off = binary.BigEndian.Uint64(p[2:10]), 10
		}
		if off == 2 && p[1]&0x7f >= 126 || uint64(len(p)-off) < l {
			break // incomplete
		}
		payload := p[off : off+int(l)]
		p = p[off+int(l):]
		switch {
		case op == 0x9: // a protocol ping: answer with a pong control frame
			c.send(0x8a, payload)
		case op == 0x1 && bytes.HasPrefix(payload, []byte(`{"type":"ping"`)):
			c.send(0x81, []byte(`{"type":"pong"}`))
		case op == 0x1 && recording:
			lat = appendLatencies(lat, payload, now)
		}
	}
	c.pending = append(c.pending[:0], p...)
	return lat
}

// send writes one short frame, masked with a zero key (allowed; clients must mask).
func (c *rawClient) send(b0 byte, payload []byte) {
	frame := append([]byte{b0, 0x80 | byte(len(payload)), 0, 0, 0, 0}, payload...)
	syscall.Write(c.fd, frame)
}

// appendLatencies adds now − timestamp for every update in a message (a single one,
// or the items of a batch_update, whose own trailing timestamp is skipped).
func appendLatencies(out []time.Duration, data []byte, now time.Time) []time.Duration {
	key := []byte(`"timestamp":"`)
	batch := bytes.HasPrefix(data, []byte(`{"type":"batch_update"`))
	for {
		i := bytes.Index(data, key)
		if i < 0 {
			return out
		}
		data = data[i+len(key):]
		j := bytes.IndexByte(data, '"')
		if batch && bytes.Index(data, key) < 0 {
			return out // the batch's own timestamp
		}
		if ts, err := time.Parse(time.RFC3339Nano, string(data[:j])); err == nil {
			out = append(out, now.Sub(ts))
		}
	}
}

// stalledDial opens a WebSocket that never reads, with a 4 KiB receive buffer.
// Loopback sockets still buffer megabytes, so the benchmark fills them (see
// stallSubscriber) before measuring.
func stalledDial(addr, agent, key string) (net.Conn, error) {
	conn, _, err := handshake(addr, agent, key, 4096)
	return conn, err
}

// clientProcess is a running client process.
type clientProcess struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

func startClients(b *testing.B, h *harness, n int, agents []string) *clientProcess {
	b.Helper()
	want := h.svc.Stats().ActiveConnections + int64(n)
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(),
		"LIFELINE_BENCH_CLIENTS="+strconv.Itoa(n),
		"LIFELINE_BENCH_ADDR="+strings.TrimPrefix(h.url, "http://"),
		"LIFELINE_BENCH_KEY="+h.admin,
		"LIFELINE_BENCH_AGENTS="+strings.Join(agents, ","),
		"GOMAXPROCS="+cmp.Or(os.Getenv("LIFELINE_BENCH_CLIENT_PROCS"), "2"),
	)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := &clientProcess{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	b.Cleanup(func() { stdin.Close(); cmd.Wait() })
	line, err := p.out.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		b.Fatalf("client process: %q %v", line, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for h.svc.Stats().ActiveConnections < want {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d connections", h.svc.Stats().ActiveConnections, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return p
}

func (p *clientProcess) finish(b *testing.B) clientResult {
	b.Helper()
	p.stdin.Close()
	var res clientResult
	if err := json.NewDecoder(p.out).Decode(&res); err != nil {
		b.Fatal(err)
	}
	if err := p.cmd.Wait(); err != nil {
		b.Fatal(err)
	}
	return res
}

// BenchmarkFanout measures commit-to-receipt latency: an agent.lifecycle event is
// handed to Service.Publish (what the engine does right after its commit) 100 times a
// second, each stamped with the publish time; every subscriber watching the event's
// agent receives it as a status_update over a real WebSocket on loopback, and the
// client process records now − timestamp. 1 s of warm-up, then 4 s measured.
//
// The stalled=1 cases add one subscriber (on the first agent) that never reads. Its
// socket buffers are filled before the run, so that during the run the server's
// writer to it is blocked, its send queue fills, and it is disconnected.
func BenchmarkFanout(b *testing.B) {
	for _, tc := range []struct {
		name    string
		subs    int
		agents  int
		stalled bool
		batch   time.Duration
	}{
		// Every subscriber watches the one agent that every event is about, so each
		// event goes to all of them (as every etcd watcher sees every put).
		{"100-subs-hot-agent-batch-off", 100, 1, false, -1},
		{"100-subs-hot-agent-batch-off-stalled", 100, 1, true, -1},
		{"1000-subs-hot-agent-batch-off", 1000, 1, false, -1},
		{"1000-subs-hot-agent-batch-off-stalled", 1000, 1, true, -1},
		// The same with the default 0.1 s window: at 100 events/s on one agent,
		// nearly every message waits for its window to end.
		{"1000-subs-hot-agent-batch-100ms", 1000, 1, false, 0},
		// A fleet: 100 agents with 10 watchers each, events spread over the agents
		// (1 event/s per agent), default batching.
		{"1000-subs-100-agents-batch-100ms", 1000, 100, false, 0},
		{"1000-subs-100-agents-batch-100ms-stalled", 1000, 100, true, 0},
	} {
		b.Run(tc.name, func(b *testing.B) {
			h := start(b, stream.Config{BatchInterval: tc.batch})
			agents := make([]string, tc.agents)
			for i := range agents {
				agents[i] = fmt.Sprintf("bench-%03d", i)
				h.register(h.admin, agents[i])
			}
			var (
				res       clientResult
				serverCPU time.Duration
			)
			// One run per iteration; a run takes 5 s, so the default -benchtime
			// makes one iteration.
			for range b.N {
				var stalled net.Conn
				if tc.stalled {
					stalled = stallSubscriber(b, h, agents[0])
				}
				before := h.svc.Stats()
				p := startClients(b, h, tc.subs, agents)
				// The first agent reports a task, so that its status updates carry
				// an execution_status in every case (the stalled cases' prefill is
				// the same update with a large result).
				h.svc.Publish([]lifeline.Event{prefillEvent(agents[0], 0, nil)})
				stop := make(chan struct{})
				done := make(chan struct{})
				go func() {
					defer close(done)
					t := time.NewTicker(10 * time.Millisecond)
					defer t.Stop()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						case <-t.C:
						}
						h.svc.Publish([]lifeline.Event{{
							Seq: int64(1_000_000 + i), Type: lifeline.EventAgentLifecycle, AgentID: agents[i%len(agents)],
							PreviousStatus: lifeline.StatusActive, NewStatus: lifeline.StatusActive, Reason: "bench",
							Timestamp: time.Now(),
						}})
					}
				}()
				time.Sleep(time.Second)
				fmt.Fprintln(p.stdin, "start")
				cpu0 := cpuTime()
				time.Sleep(4 * time.Second)
				close(stop)
				<-done
				time.Sleep(200 * time.Millisecond) // let the last messages land
				serverCPU = cpuTime() - cpu0
				after := h.svc.Stats()
				res = p.finish(b)
				if stalled != nil {
					b.ReportMetric(float64(after.Errors-before.Errors), "stalled-disconnected")
					stalled.Close()
				}
				waitDisconnected(b, h)
			}
			b.ReportMetric(res.P50, "p50-ms")
			b.ReportMetric(res.P99, "p99-ms")
			b.ReportMetric(res.Max, "max-ms")
			b.ReportMetric(float64(res.Messages), "received")
			if res.Messages > 0 {
				// CPU time per delivered message: steadier than latency on a shared
				// machine, since it does not depend on what else runs.
				b.ReportMetric(float64(serverCPU.Nanoseconds())/float64(res.Messages)/1e3, "server-cpu-µs/msg")
				b.ReportMetric(float64(res.CPU.Nanoseconds())/float64(res.Messages)/1e3, "client-cpu-µs/msg")
			}
			if res.Errors > 0 {
				b.Errorf("%d clients lost their connection", res.Errors)
			}
		})
	}
}

// stallSubscriber connects a subscriber of agent that never reads, and sends it 8 MiB
// (while it is the agent's only subscriber) so that its socket buffers are full and the
// server's writer to it is blocked.
func stallSubscriber(b *testing.B, h *harness, agent string) net.Conn {
	b.Helper()
	conn, err := stalledDial(strings.TrimPrefix(h.url, "http://"), agent, h.admin)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	result := json.RawMessage(`"` + strings.Repeat("x", 64<<10-2) + `"`)
	for i := range 128 {
		h.svc.Publish([]lifeline.Event{prefillEvent(agent, i, result)})
	}
	time.Sleep(500 * time.Millisecond)
	return conn
}

// prefillEvent is the task update published to the first agent before a run.
func prefillEvent(agent string, i int, result json.RawMessage) lifeline.Event {
	ev := taskEvent(agent, int64(2_000_000+i), 50)
	ev.Task.Message, ev.Task.Result = "prefill", result
	return ev
}

// BenchmarkIdleSubscriberMemory measures the server-side memory of idle WebSocket
// subscribers: heap in use plus goroutine stacks, after a GC, with 1000 clients
// connected from a separate process, minus the same reading before they connected.
// Kernel socket buffers are not included.
func BenchmarkIdleSubscriberMemory(b *testing.B) {
	const n = 1000
	h := start(b, stream.Config{})
	h.register(h.admin, "idle")
	var heap, stack float64
	for range b.N {
		before := serverMemory()
		p := startClients(b, h, n, []string{"idle"})
		time.Sleep(500 * time.Millisecond) // let every handshake's garbage become garbage
		after := serverMemory()
		if path := os.Getenv("LIFELINE_BENCH_HEAPPROFILE"); path != "" {
			if f, err := os.Create(path); err == nil {
				pprof.WriteHeapProfile(f)
				f.Close()
			}
		}
		heap = float64(after.HeapInuse-before.HeapInuse) / n
		stack = float64(after.StackInuse-before.StackInuse) / n
		p.finish(b)
		waitDisconnected(b, h)
	}
	b.ReportMetric(heap+stack, "B/subscriber")
	b.ReportMetric(heap, "heap-B/subscriber")
	b.ReportMetric(stack, "stack-B/subscriber")
}

// cpuTime returns the CPU time (user + system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// waitDisconnected waits until the server has no WebSocket connection left.
func waitDisconnected(b *testing.B, h *harness) {
	deadline := time.Now().Add(30 * time.Second)
	for h.svc.Stats().ActiveConnections > 0 {
		if time.Now().After(deadline) {
			b.Fatalf("%d connections left", h.svc.Stats().ActiveConnections)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// serverMemory returns the memory statistics after two garbage collections.
func serverMemory() runtime.MemStats {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}
