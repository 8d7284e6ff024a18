package stream

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// maintain applies event retention every PruneInterval and, more often, forgets
// expired stream tickets and offline queues.
func (s *Service) maintain() {
	defer s.wg.Done()
	tick := min(s.cfg.PruneInterval, 10*time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	lastPrune := time.Now()
	for {
		select {
		case <-s.closing:
			return
		case now := <-t.C:
			s.tickets.purge(s.now())
			s.expireQueues(now)
			if now.Sub(lastPrune) >= s.cfg.PruneInterval {
				lastPrune = now
				if _, err := s.Prune(s.ctx); err != nil && s.ctx.Err() == nil {
					s.log.Error("stream: event retention failed", "err", err)
				}
			}
		}
	}
}

// Prune applies event retention now: events older than EventRetention are deleted,
// then the oldest beyond EventRetentionMax. It returns how many were deleted. SSE
// clients whose resume point was deleted get 410 and must re-list.
func (s *Service) Prune(ctx context.Context) (int64, error) {
	if s.cfg.Log == nil {
		return 0, nil
	}
	var total int64
	if s.cfg.EventRetention > 0 {
		n, err := s.cfg.Log.PruneEvents(ctx, s.now().Add(-s.cfg.EventRetention))
		total += n
		if err != nil {
			return total, err
		}
	}
	if s.cfg.EventRetentionMax > 0 {
		n, err := s.cfg.Log.TrimEvents(ctx, s.cfg.EventRetentionMax)
		total += n
		if err != nil {
			return total, err
		}
	}
	if total > 0 {
		s.log.Info("stream: pruned the event log", "deleted", total)
	}
	return total, nil
}

// register adds the stream's metrics to reg.
func (s *Service) register(reg prometheus.Registerer) error {
	st := &s.stats
	gauge := func(name, help string, v func() int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return float64(v()) })
	}
	counter := func(name, help string, v func() int64, labels prometheus.Labels) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, func() float64 { return float64(v()) })
	}
	const deliveries = "lifeline_webhook_deliveries_total"
	const deliveriesHelp = "Webhook deliveries by final outcome."
	for _, c := range []prometheus.Collector{
		gauge("lifeline_ws_connections", "Open WebSocket connections.", st.wsActive.Load),
		counter("lifeline_ws_connections_total", "WebSocket connections accepted.", st.wsTotal.Load, nil),
		counter("lifeline_ws_messages_sent_total", "WebSocket messages written.", st.wsSent.Load, nil),
		counter("lifeline_ws_errors_total", "WebSocket connections that failed (write errors, slow consumers, missed pongs, protocol errors).", st.wsErrors.Load, nil),
		gauge("lifeline_ws_queued_messages", "Messages waiting in offline queues.", st.wsQueued.Load),
		counter("lifeline_ws_dropped_total", "WebSocket messages dropped (offline queue overflow, slow connections, expired queues).", st.wsDropped.Load, nil),
		gauge("lifeline_sse_streams", "Open SSE event streams.", st.sseActive.Load),
		counter("lifeline_sse_lagged_total", "SSE streams that overflowed their live buffer and caught up from the log.", st.sseLagged.Load, nil),
		counter("lifeline_stream_events_lost_total", "Committed events dropped before dispatch because the dispatcher fell behind.", st.eventsLost.Load, nil),
		counter(deliveries, deliveriesHelp, st.hookDelivered.Load, prometheus.Labels{"outcome": "delivered"}),
		counter(deliveries, deliveriesHelp, st.hookFailed.Load, prometheus.Labels{"outcome": "failed"}),
		counter(deliveries, deliveriesHelp, st.hookDropped.Load, prometheus.Labels{"outcome": "dropped"}),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
