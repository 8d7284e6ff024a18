package registry

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the engine's Prometheus collectors.
type Metrics struct {
	drift         prometheus.Counter
	transitions   *prometheus.CounterVec
	sweepLag      prometheus.Histogram
	sweepDuration prometheus.Histogram
	commitBatch   prometheus.Histogram
	storeErrors   prometheus.Counter
}

// NewMetrics creates the engine's collectors and registers them with reg (nil: not
// registered anywhere).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		drift: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lifeline_heartbeat_clock_drift_total",
			Help: "Heartbeats whose client_timestamp differed from the server clock by more than 2 × interval.",
		}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lifeline_transitions_total", Help: "Agent status transitions by new status and reason.",
		}, []string{"status", "reason"}),
		sweepLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lifeline_sweep_lag_seconds",
			Help:    "How long after its deadline a timed transition was made.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		sweepDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lifeline_sweep_duration_seconds",
			Help:    "Time spent in one sweep of due deadlines.",
			Buckets: []float64{.00001, .0001, .001, .01, .1, 1},
		}),
		commitBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lifeline_commit_batch_changes",
			Help:    "Changes per group-committed store transaction.",
			Buckets: []float64{1, 2, 4, 8, 16, 64, 256, 1024, 4096},
		}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lifeline_store_errors_total", Help: "Failed store commits.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.drift, m.transitions, m.sweepLag, m.sweepDuration, m.commitBatch, m.storeErrors)
	}
	return m
}

func (m *Metrics) observeBatch(n int) { m.commitBatch.Observe(float64(n)) }

// agentsCollector reports, at scrape time, the number of agents by status and the
// heartbeats counted in the engine's shards.
type agentsCollector struct {
	e      *Engine
	agents *prometheus.Desc
	beats  *prometheus.Desc
}

// NewAgentsCollector returns a collector of lifeline_agents{status} and
// lifeline_heartbeats_total.
func NewAgentsCollector(e *Engine) prometheus.Collector {
	return &agentsCollector{e: e,
		agents: prometheus.NewDesc("lifeline_agents", "Agents by lifecycle status.", []string{"status"}, nil),
		beats:  prometheus.NewDesc("lifeline_heartbeats_total", "Heartbeats received for known agents.", nil, nil),
	}
}

func (c *agentsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.agents
	ch <- c.beats
}

func (c *agentsCollector) Collect(ch chan<- prometheus.Metric) {
	for st, n := range c.e.Counts() {
		ch <- prometheus.MustNewConstMetric(c.agents, prometheus.GaugeValue, float64(n), string(st))
	}
	ch <- prometheus.MustNewConstMetric(c.beats, prometheus.CounterValue, float64(c.e.agents.beats()))
}
