package loadgen

import (
	"context"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	rng := rand.New(rand.NewPCG(1, 2))
	var vals []time.Duration
	for range 100_000 {
		// Log-uniform from 100 ns to 10 s.
		d := time.Duration(100 * math.Pow(10, rng.Float64()*8))
		vals = append(vals, d)
		h.Record(d)
	}
	slices.Sort(vals)
	for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
		i := int(q*float64(len(vals))+0.999999) - 1
		want := vals[max(i, 0)]
		got := h.Quantile(q)
		if rel := float64(got-want) / float64(want); rel > 0.01 || rel < -0.01 {
			t.Errorf("q%v = %v, want %v (±1%%)", q, got, want)
		}
	}
	if h.Count() != 100_000 || h.Max() != vals[len(vals)-1] || h.Min() != vals[0] {
		t.Fatalf("count %d max %v min %v", h.Count(), h.Max(), h.Min())
	}
	var m Histogram
	m.Merge(&h)
	m.Merge(&h)
	if m.Count() != 200_000 || m.Quantile(0.5) != h.Quantile(0.5) {
		t.Fatal("merge")
	}
}

func TestHistogramExtremes(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 {
		t.Fatal("empty")
	}
	h.Record(-5)
	h.Record(0)
	h.Record(1 << 62)
	if h.Max() != 1<<62 || h.Quantile(1) != 1<<62 {
		t.Fatal(h.Max())
	}
	for i := range nBuckets {
		if b := bucketOf(int64(bucketMid(i))); b != i {
			t.Fatalf("bucket %d: mid %v falls in %d", i, bucketMid(i), b)
		}
	}
}

func TestRunStopsByTime(t *testing.T) {
	start := time.Now()
	res, err := Run(context.Background(), Options{Workers: 4, Duration: 200 * time.Millisecond, Warmup: 50 * time.Millisecond, MaxOps: 1 << 40},
		func(ctx context.Context, w int, seq int64) error {
			time.Sleep(time.Millisecond)
			if seq%10 == 9 {
				return errors.New("every tenth fails")
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("took %v", took)
	}
	if res.Ops == 0 || res.Errors == 0 || res.Elapsed > 200*time.Millisecond || res.Elapsed < 150*time.Millisecond {
		t.Fatalf("%+v", res)
	}
	if len(res.FirstErrors) != 1 || res.Latency.Count() != uint64(res.Ops+res.Errors) {
		t.Fatalf("%+v", res)
	}
}

func TestRunStopsByCount(t *testing.T) {
	res, err := Run(context.Background(), Options{Workers: 3, Duration: time.Hour, MaxOps: 1000},
		func(ctx context.Context, w int, seq int64) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 1000 {
		t.Fatalf("%d ops", res.Ops)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := Run(ctx, Options{Workers: 2, Duration: time.Hour, MaxOps: 1 << 40},
		func(ctx context.Context, w int, seq int64) error { time.Sleep(time.Millisecond); return nil })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
}

func TestTransportLoopbackOnly(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer srv.Close()
	c := &http.Client{Transport: NewTransport(2)}
	res, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.ProtoMajor != 1 {
		t.Fatalf("proto %s", res.Proto)
	}
	// A routable address is refused before any packet is sent.
	if err := loopbackOnly("tcp", net.JoinHostPort("192.0.2.1", "80"), nil); err == nil {
		t.Fatal("dialled a non-loopback address")
	}
	for _, u := range []string{"http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:80"} {
		if err := CheckLoopback(u); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	for _, u := range []string{"http://example.com", "https://127.0.0.1", "http://10.0.0.1:8080", "::"} {
		if err := CheckLoopback(u); err == nil {
			t.Errorf("%s accepted", u)
		}
	}
}
