package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lifeline-dev/lifeline"
)

// HealthCommand is `lifeline health`: the server's readiness report (GET /health, no
// key needed). It fails when the server reports itself unavailable, so scripts can use
// its exit status.
type HealthCommand struct {
	cmdBase
	conn connFlags
	json bool
}

// NewHealthCommand returns the command with its flags registered.
func NewHealthCommand(env Env) *HealthCommand {
	c := &HealthCommand{cmdBase: newBase(env, "health")}
	c.conn.registerServer(c.fs)
	c.fs.BoolVar(&c.json, "json", false, "print the API's JSON")
	return c
}

// Run prints the report.
func (c *HealthCommand) Run(ctx context.Context, args []string) error {
	if _, err := c.parse(args, 0); err != nil {
		return done(err)
	}
	cl, err := c.client(c.conn, false)
	if err != nil {
		return err
	}
	h, herr := cl.Health(ctx)
	if h == nil {
		return herr
	}
	if c.json {
		if err := writeJSON(c.Stdout, h); err != nil {
			return err
		}
		return herr
	}
	tw := tabwriter.NewWriter(c.Stdout, 0, 0, 1, ' ', 0)
	fmt.Fprintf(tw, "status:\t%s\n", h.Status)
	fmt.Fprintf(tw, "store:\t%s\n", h.Store)
	fmt.Fprintf(tw, "uptime:\t%s\n", (time.Duration(h.UptimeSeconds) * time.Second).String())
	var counts []string
	seen := map[string]bool{}
	for _, s := range lifeline.Statuses {
		if n, ok := h.Agents[s]; ok {
			counts = append(counts, fmt.Sprintf("%s=%d", s, n))
			seen[string(s)] = true
		}
	}
	extra := map[string]int{}
	for s, n := range h.Agents {
		if !seen[string(s)] {
			extra[string(s)] = n
		}
	}
	for _, s := range sortedKeys(extra) {
		counts = append(counts, fmt.Sprintf("%s=%d", s, extra[s]))
	}
	fmt.Fprintf(tw, "agents:\t%s\n", orDash(strings.Join(counts, " ")))
	if err := tw.Flush(); err != nil {
		return err
	}
	return herr
}
