// Package loadgen drives bounded load against a server on the loopback interface and
// records latencies: a fixed number of workers, each running one operation at a time
// until a deadline or an operation count is reached, an HTTP/1.1 keep-alive transport
// that dials loopback addresses only, and a log-linear latency histogram of bounded
// size.
package loadgen

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// subBits sets the histogram's precision: 2^subBits buckets per power of two, so a
// recorded value is off by less than 1/2^subBits (0.8 %).
const (
	subBits  = 7
	subCount = 1 << subBits
	// maxExp bounds recorded values to 2^(maxExp+subBits+1) ns (about 9 hours).
	maxExp   = 37
	nBuckets = (maxExp + 2) * subCount
)

// Histogram records durations in log-linear buckets, like HdrHistogram: exact below
// 256 ns, then 128 buckets per power of two. It takes 39 KiB whatever the number of
// values. The zero value is ready to use; it is not safe for concurrent use (give each
// worker its own and Merge them).
type Histogram struct {
	counts   [nBuckets]uint64
	n        uint64
	sum      float64
	min, max time.Duration
}

func bucketOf(v int64) int {
	if v < 2*subCount {
		if v < 0 {
			return 0
		}
		return int(v)
	}
	e := bits.Len64(uint64(v)) - (subBits + 1)
	if e > maxExp {
		return nBuckets - 1
	}
	m := v >> e
	return (e+1)*subCount + int(m-subCount)
}

// bucketMid returns the middle of a bucket's range.
func bucketMid(i int) time.Duration {
	if i < 2*subCount {
		return time.Duration(i)
	}
	e := i/subCount - 1
	m := int64(i%subCount + subCount)
	return time.Duration(m<<e + (int64(1)<<e)/2)
}

// Record adds one duration.
func (h *Histogram) Record(d time.Duration) {
	h.counts[bucketOf(int64(d))]++
	if h.n == 0 || d < h.min {
		h.min = d
	}
	if d > h.max {
		h.max = d
	}
	h.n++
	h.sum += float64(d)
}

// Merge adds every value of o.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// Count returns the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n }

// Max returns the largest recorded value (exact).
func (h *Histogram) Max() time.Duration { return h.max }

// Min returns the smallest recorded value (exact).
func (h *Histogram) Min() time.Duration { return h.min }

// Mean returns the mean of the recorded values.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// Quantile returns the value below which the fraction q of the values lie (q in
// [0, 1]), within the histogram's precision; 0 when empty. Quantile(1) is Max.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	if q >= 1 {
		return h.max
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			v := bucketMid(i)
			// The extremes are known exactly; never report past them.
			return min(max(v, h.min), h.max)
		}
	}
	return h.max
}

// Ms converts a duration to fractional milliseconds, for reports.
func Ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Options bound a run.
type Options struct {
	// Workers is the number of concurrent workers (connections). Required.
	Workers int
	// Duration is how long operations are measured, after Warmup. Required.
	Duration time.Duration
	// Warmup runs operations without measuring them first (connections are dialled,
	// caches fill).
	Warmup time.Duration
	// MaxOps stops the run after this many measured operations even if Duration has
	// not passed. Required.
	MaxOps int64
}

// Result is what a run measured.
type Result struct {
	// Ops is the number of operations that succeeded in the measured window.
	Ops int64
	// Errors is the number of operations that failed in the measured window.
	Errors int64
	// Elapsed is the length of the measured window.
	Elapsed time.Duration
	// Latency holds the latency of every measured operation, failed ones included.
	Latency *Histogram
	// FirstErrors holds the first few distinct error messages.
	FirstErrors []string
}

// Rate returns successful operations per second.
func (r *Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Elapsed.Seconds()
}

// Op is one operation of a worker; seq counts the worker's operations from 0.
type Op func(ctx context.Context, worker int, seq int64) error

// Run runs op on Workers goroutines until Warmup+Duration has passed, MaxOps
// operations were measured, or ctx is done, and returns what was measured. Every
// worker finishes its operation in flight before Run returns.
func Run(ctx context.Context, o Options, op Op) (*Result, error) {
	if o.Workers < 1 || o.Duration <= 0 || o.MaxOps < 1 {
		return nil, errors.New("loadgen: Workers, Duration and MaxOps must be positive")
	}
	start := time.Now()
	measureFrom := start.Add(o.Warmup)
	end := measureFrom.Add(o.Duration)
	var count atomic.Int64
	var stop atomic.Bool
	var mu sync.Mutex
	res := &Result{Latency: new(Histogram)}
	var wg sync.WaitGroup
	for w := range o.Workers {
		wg.Go(func() {
			h := new(Histogram)
			var ok, failed int64
			for seq := int64(0); ; seq++ {
				if stop.Load() || ctx.Err() != nil {
					break
				}
				t0 := time.Now()
				if !t0.Before(end) {
					break
				}
				err := op(ctx, w, seq)
				t1 := time.Now()
				if t0.Before(measureFrom) || t1.After(end) {
					continue // warm-up, or finished after the window closed
				}
				if count.Add(1) > o.MaxOps {
					stop.Store(true)
					break
				}
				h.Record(t1.Sub(t0))
				if err != nil {
					if ctx.Err() != nil {
						continue // cut short by the caller, not a failure
					}
					failed++
					mu.Lock()
					if len(res.FirstErrors) < 5 {
						msg := err.Error()
						dup := false
						for _, m := range res.FirstErrors {
							dup = dup || m == msg
						}
						if !dup {
							res.FirstErrors = append(res.FirstErrors, msg)
						}
					}
					mu.Unlock()
					continue
				}
				ok++
			}
			mu.Lock()
			res.Latency.Merge(h)
			res.Ops += ok
			res.Errors += failed
			mu.Unlock()
		})
	}
	wg.Wait()
	stopped := time.Now()
	if stopped.After(end) {
		stopped = end
	}
	res.Elapsed = max(stopped.Sub(measureFrom), 0)
	return res, ctx.Err()
}

// NewTransport returns an HTTP/1.1 keep-alive transport for conns concurrent
// connections that refuses to dial anything but loopback addresses.
func NewTransport(conns int) *http.Transport {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second, Control: loopbackOnly}
	return &http.Transport{
		DialContext:           d.DialContext,
		MaxConnsPerHost:       conns,
		MaxIdleConns:          conns,
		MaxIdleConnsPerHost:   conns,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
		// A non-nil, empty map turns HTTP/2 off.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
}

// loopbackOnly is a net.Dialer Control function that refuses non-loopback addresses.
func loopbackOnly(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("loadgen: refusing to load %s: only loopback addresses are allowed", address)
	}
	return nil
}

// CheckLoopback returns an error unless rawURL is an http URL whose host is a loopback
// address or "localhost".
func CheckLoopback(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	if u.Scheme != "http" {
		return fmt.Errorf("%s: only plain http on the loopback interface is supported", rawURL)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%s: load is only ever sent to 127.0.0.1 (or another loopback address)", rawURL)
}

// Merge adds the measurements of o to r, as if both had been one run (the windows are
// added up).
func (r *Result) Merge(o *Result) {
	r.Ops += o.Ops
	r.Errors += o.Errors
	r.Elapsed += o.Elapsed
	if r.Latency == nil {
		r.Latency = new(Histogram)
	}
	if o.Latency != nil {
		r.Latency.Merge(o.Latency)
	}
	for _, e := range o.FirstErrors {
		if len(r.FirstErrors) < 5 && !slices.Contains(r.FirstErrors, e) {
			r.FirstErrors = append(r.FirstErrors, e)
		}
	}
}
