package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/api"
	"github.com/lifeline-dev/lifeline/registry"
	"github.com/lifeline-dev/lifeline/sqlite"
	"github.com/lifeline-dev/lifeline/stream"
)

// ServerConfig is the configuration of `lifeline serve`. Precedence, lowest first:
// built-in defaults, the YAML file (--config), LIFELINE_* environment variables, flags.
type ServerConfig struct {
	// Listen is the HTTP listen address.
	Listen string `yaml:"listen"`
	// DataDir holds the embedded database.
	DataDir string `yaml:"data_dir"`
	// OpenDiscovery lets agent keys list agents, pools and events.
	OpenDiscovery bool `yaml:"open_discovery"`
	// SweepInterval is how often due deadlines are looked for.
	SweepInterval time.Duration `yaml:"sweep_interval"`
	// CheckpointInterval is how often heartbeat state is saved.
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
	// DrainTimeout applies to drains that name none.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// MaxLeaseTTL caps the ttl_seconds a lease may ask for.
	MaxLeaseTTL time.Duration `yaml:"max_lease_ttl"`
	// WSHeartbeatInterval is how often WebSocket clients are pinged.
	WSHeartbeatInterval time.Duration `yaml:"ws_heartbeat_interval"`
	// WSMaxQueueSize caps each agent's offline message queue.
	WSMaxQueueSize int `yaml:"ws_max_queue_size"`
	// WSBatchInterval is the WebSocket batching window; 0 turns batching off.
	WSBatchInterval time.Duration `yaml:"ws_batch_interval"`
	// SSEKeepAlive is how often an idle event stream gets a keep-alive comment.
	SSEKeepAlive time.Duration `yaml:"sse_keepalive"`
	// EventRetention is how long events are kept; older ones are pruned.
	EventRetention time.Duration `yaml:"event_retention"`
	// WebhookMaxAttempts bounds the delivery attempts of one webhook event.
	WebhookMaxAttempts int `yaml:"webhook_max_attempts"`
	// ShutdownTimeout bounds how long in-flight requests may take at shutdown.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// MaxBodyBytes caps request bodies.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
	// LogFormat is text or json.
	LogFormat string `yaml:"log_format"`
	// AdminKey is the bootstrap admin key; only from LIFELINE_ADMIN_KEY, never a file.
	AdminKey string `yaml:"-"`
}

// DefaultServerConfig returns the built-in defaults.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{
		Listen:              "127.0.0.1:8080",
		DataDir:             "./lifeline-data",
		SweepInterval:       50 * time.Millisecond,
		CheckpointInterval:  30 * time.Second,
		DrainTimeout:        120 * time.Second,
		MaxLeaseTTL:         24 * time.Hour,
		WSHeartbeatInterval: stream.DefaultHeartbeatInterval,
		WSMaxQueueSize:      stream.DefaultMaxQueueSize,
		WSBatchInterval:     stream.DefaultBatchInterval,
		SSEKeepAlive:        stream.DefaultSSEKeepAlive,
		EventRetention:      stream.DefaultEventRetention,
		WebhookMaxAttempts:  stream.DefaultWebhookMaxAttempts,
		ShutdownTimeout:     15 * time.Second,
		MaxBodyBytes:        api.DefaultMaxBodyBytes,
		LogLevel:            "info",
		LogFormat:           "text",
	}
}

// loadServerConfig applies the file, then the environment, then the flags.
func loadServerConfig(args []string, env func(string) string, stderr io.Writer) (ServerConfig, error) {
	cfg := DefaultServerConfig()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: lifeline serve [flags]\n\nRuns the Lifeline server on the embedded SQLite store.\n"+
			"Configuration precedence: defaults < --config file < LIFELINE_* env < flags.\n"+
			"The bootstrap admin key is LIFELINE_ADMIN_KEY; if unset on first start, one is generated and printed once.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	configPath := fs.String("config", env("LIFELINE_CONFIG"), "YAML config file (env LIFELINE_CONFIG)")
	listen := fs.String("listen", "", "listen address (env LIFELINE_LISTEN, default "+cfg.Listen+")")
	dataDir := fs.String("data-dir", "", "data directory (env LIFELINE_DATA_DIR, default "+cfg.DataDir+")")
	openDiscovery := fs.Bool("open-discovery", false, "let agent keys list agents, pools and events (env LIFELINE_OPEN_DISCOVERY)")
	sweep := fs.Duration("sweep-interval", 0, "how often due deadlines are checked (env LIFELINE_SWEEP_INTERVAL, default 50ms)")
	checkpoint := fs.Duration("checkpoint-interval", 0, "how often heartbeat state is saved (env LIFELINE_CHECKPOINT_INTERVAL, default 30s)")
	drain := fs.Duration("drain-timeout", 0, "drain timeout when a drain names none (env LIFELINE_DRAIN_TIMEOUT, default 2m)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (env LIFELINE_LOG_LEVEL, default info)")
	logFormat := fs.String("log-format", "", "text or json (env LIFELINE_LOG_FORMAT, default text)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	if *configPath != "" {
		data, err := os.ReadFile(*configPath)
		if err != nil {
			return cfg, fmt.Errorf("config: %w", err)
		}
		if err := yaml.UnmarshalWithOptions(data, &cfg, yaml.Strict()); err != nil {
			return cfg, fmt.Errorf("config %s: %w", *configPath, err)
		}
	}
	var errs []error
	str := func(name string, dst *string) {
		if v := env(name); v != "" {
			*dst = v
		}
	}
	dur := func(name string, dst *time.Duration) {
		if v := env(name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
			*dst = d
		}
	}
	str("LIFELINE_LISTEN", &cfg.Listen)
	str("LIFELINE_DATA_DIR", &cfg.DataDir)
	str("LIFELINE_LOG_LEVEL", &cfg.LogLevel)
	str("LIFELINE_LOG_FORMAT", &cfg.LogFormat)
	dur("LIFELINE_SWEEP_INTERVAL", &cfg.SweepInterval)
	dur("LIFELINE_CHECKPOINT_INTERVAL", &cfg.CheckpointInterval)
	dur("LIFELINE_DRAIN_TIMEOUT", &cfg.DrainTimeout)
	dur("LIFELINE_MAX_LEASE_TTL", &cfg.MaxLeaseTTL)
	dur("LIFELINE_WS_HEARTBEAT_INTERVAL", &cfg.WSHeartbeatInterval)
	dur("LIFELINE_WS_BATCH_INTERVAL", &cfg.WSBatchInterval)
	dur("LIFELINE_SSE_KEEPALIVE", &cfg.SSEKeepAlive)
	dur("LIFELINE_EVENT_RETENTION", &cfg.EventRetention)
	num := func(name string, dst *int) {
		if v := env(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
			*dst = n
		}
	}
	num("LIFELINE_WS_MAX_QUEUE_SIZE", &cfg.WSMaxQueueSize)
	num("LIFELINE_WEBHOOK_MAX_ATTEMPTS", &cfg.WebhookMaxAttempts)
	dur("LIFELINE_SHUTDOWN_TIMEOUT", &cfg.ShutdownTimeout)
	if v := env("LIFELINE_OPEN_DISCOVERY"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("LIFELINE_OPEN_DISCOVERY: %w", err))
		}
		cfg.OpenDiscovery = b
	}
	if v := env("LIFELINE_MAX_BODY_BYTES"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("LIFELINE_MAX_BODY_BYTES: %w", err))
		}
		cfg.MaxBodyBytes = n
	}
	cfg.AdminKey = env("LIFELINE_ADMIN_KEY")
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "listen":
			cfg.Listen = *listen
		case "data-dir":
			cfg.DataDir = *dataDir
		case "open-discovery":
			cfg.OpenDiscovery = *openDiscovery
		case "sweep-interval":
			cfg.SweepInterval = *sweep
		case "checkpoint-interval":
			cfg.CheckpointInterval = *checkpoint
		case "drain-timeout":
			cfg.DrainTimeout = *drain
		case "log-level":
			cfg.LogLevel = *logLevel
		case "log-format":
			cfg.LogFormat = *logFormat
		}
	})
	if err := errors.Join(errs...); err != nil {
		return cfg, err
	}
	return cfg, cfg.validate()
}

func (c *ServerConfig) validate() error {
	switch {
	case c.Listen == "":
		return errors.New("listen address is empty")
	case c.DataDir == "":
		return errors.New("data dir is empty")
	case c.SweepInterval <= 0 || c.SweepInterval > time.Minute:
		return errors.New("sweep_interval must be in (0, 1m]")
	case c.CheckpointInterval <= 0:
		return errors.New("checkpoint_interval must be positive")
	case c.DrainTimeout < time.Second:
		return errors.New("drain_timeout must be at least 1s")
	case c.MaxLeaseTTL < time.Second:
		return errors.New("max_lease_ttl must be at least 1s")
	case c.WSHeartbeatInterval <= 0 || c.WSBatchInterval < 0 || c.SSEKeepAlive <= 0:
		return errors.New("ws_heartbeat_interval and sse_keepalive must be positive, ws_batch_interval not negative")
	case c.WSMaxQueueSize < 1 || c.WebhookMaxAttempts < 1:
		return errors.New("ws_max_queue_size and webhook_max_attempts must be at least 1")
	case c.EventRetention < time.Minute:
		return errors.New("event_retention must be at least 1m")
	case c.ShutdownTimeout <= 0:
		return errors.New("shutdown_timeout must be positive")
	case c.MaxBodyBytes < 1024:
		return errors.New("max_body_bytes must be at least 1024")
	case c.LogFormat != "text" && c.LogFormat != "json":
		return errors.New("log_format must be text or json")
	}
	var lvl slog.Level
	return lvl.UnmarshalText([]byte(c.LogLevel))
}

// batchInterval maps the configured window to stream.Config: 0 (off) is negative there,
// where 0 means the default.
func batchInterval(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// Main is a running server: the store, the engine and the HTTP server wired together.
type Main struct {
	Config ServerConfig
	// Stdout receives the bootstrap key and the listen address; Stderr the logs.
	Stdout, Stderr io.Writer

	store  *sqlite.Store
	engine *registry.Engine
	stream *stream.Service
	http   *http.Server
	ln     net.Listener
	served chan error
	log    *slog.Logger
}

// Addr returns the address the server listens on, once Open has returned.
func (m *Main) Addr() string { return m.ln.Addr().String() }

// Open opens the store, loads the registry, bootstraps the admin key and starts
// listening. Serving continues until Close.
func (m *Main) Open(ctx context.Context) (err error) {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(m.Config.LogLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if m.Config.LogFormat == "json" {
		m.log = slog.New(slog.NewJSONHandler(m.Stderr, opts))
	} else {
		m.log = slog.New(slog.NewTextHandler(m.Stderr, opts))
	}
	if err := os.MkdirAll(m.Config.DataDir, 0o700); err != nil {
		return err
	}
	m.store, err = sqlite.Open(filepath.Join(m.Config.DataDir, "lifeline.db"))
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer func() {
		if err != nil {
			m.store.Close()
		}
	}()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.engine = registry.New(m.store, registry.Config{
		// The stream service exists before the engine commits anything (it commits only
		// once started or asked to), and sees every committed event in commit order.
		OnCommit:           func(evs []lifeline.Event) { m.stream.Publish(evs) },
		SweepInterval:      m.Config.SweepInterval,
		CheckpointInterval: m.Config.CheckpointInterval,
		DrainTimeout:       m.Config.DrainTimeout,
		MaxLeaseTTL:        m.Config.MaxLeaseTTL,
		OpenDiscovery:      m.Config.OpenDiscovery,
		Logger:             m.log,
		Metrics:            registry.NewMetrics(reg),
	})
	if err := m.engine.Open(ctx); err != nil {
		return fmt.Errorf("load registry: %w", err)
	}
	reg.MustRegister(registry.NewAgentsCollector(m.engine))
	keys, err := registry.NewKeys(ctx, m.store, nil)
	if err != nil {
		m.engine.Close()
		return fmt.Errorf("load keys: %w", err)
	}
	secret, err := keys.Bootstrap(ctx, m.Config.AdminKey)
	if err != nil {
		m.engine.Close()
		return fmt.Errorf("bootstrap admin key: %w", err)
	}
	if secret != "" {
		fmt.Fprintf(m.Stdout, "Bootstrap admin key (shown once, only its hash is stored):\n\n    %s\n\n"+
			"Use it as X-API-Key, or set LIFELINE_ADMIN_KEY before the first start to choose your own.\n\n", secret)
	}
	m.stream, err = stream.New(stream.Config{
		Keys: keys, Agents: m.engine, Events: m.engine, Log: m.store, Webhooks: m.store,
		HeartbeatInterval: m.Config.WSHeartbeatInterval, MaxQueueSize: m.Config.WSMaxQueueSize,
		BatchInterval: batchInterval(m.Config.WSBatchInterval), SSEKeepAlive: m.Config.SSEKeepAlive,
		EventRetention: m.Config.EventRetention, WebhookMaxAttempts: m.Config.WebhookMaxAttempts,
		MaxBodyBytes: m.Config.MaxBodyBytes, Logger: m.log, Registry: reg,
	})
	if err != nil {
		m.engine.Close()
		return fmt.Errorf("streams: %w", err)
	}
	m.ln, err = net.Listen("tcp", m.Config.Listen)
	if err != nil {
		m.stream.Close()
		m.engine.Close()
		return err
	}
	srv := api.NewServer(api.Config{
		Routes: m.stream.Routes(),
		Agents: m.engine, Events: m.engine, Keys: keys, Leases: m.engine, Tasks: m.engine, Health: m.engine,
		Registry: reg, MaxBodyBytes: m.Config.MaxBodyBytes, Logger: m.log,
	})
	m.http = &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(m.log.Handler(), slog.LevelWarn),
	}
	m.engine.Start()
	m.served = make(chan error, 1)
	go func() { m.served <- m.http.Serve(m.ln) }()
	fmt.Fprintf(m.Stdout, "lifeline listening on http://%s (data in %s)\n", m.Addr(), m.Config.DataDir)
	m.log.Info("serving", "addr", m.Addr(), "data_dir", m.Config.DataDir)
	return nil
}

// Close shuts down gracefully: stop accepting, let in-flight requests finish (up to
// ShutdownTimeout), checkpoint heartbeat state, close the store.
func (m *Main) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), m.Config.ShutdownTimeout)
	defer cancel()
	errs := []error{}
	// Streams first: long-lived WebSocket and SSE connections would hold the HTTP
	// shutdown up; their clients resume from where they were.
	if err := m.stream.Close(); err != nil {
		errs = append(errs, fmt.Errorf("streams: %w", err))
	}
	if err := m.http.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("http shutdown: %w", err))
	}
	if err := m.engine.Close(); err != nil {
		errs = append(errs, fmt.Errorf("engine: %w", err))
	}
	if err := m.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("store: %w", err))
	}
	m.log.Info("stopped")
	return errors.Join(errs...)
}

// runServe runs `lifeline serve` until ctx is cancelled (SIGINT/SIGTERM).
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := loadServerConfig(args, os.Getenv, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	m := &Main{Config: cfg, Stdout: stdout, Stderr: stderr}
	if err := m.Open(ctx); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		m.log.Info("shutting down")
	case err := <-m.served:
		m.log.Error("server stopped", "err", err)
	}
	return m.Close()
}
