package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lifeline-dev/lifeline"
)

// AgentsListCommand is `lifeline agents ls`: discovery (GET /api/v1/agents) as a table
// or as the API's JSON page.
type AgentsListCommand struct {
	cmdBase
	conn         connFlags
	statuses     listFlag
	capabilities listFlag
	role         string
	minAvailable optInt
	limit        int
	cursor       string
	all          bool
	json         bool
}

// NewAgentsListCommand returns the command with its flags registered.
func NewAgentsListCommand(env Env) *AgentsListCommand {
	c := &AgentsListCommand{cmdBase: newBase(env, "agents ls")}
	fs := c.fs
	c.conn.register(fs)
	fs.Var(&c.statuses, "status", "comma-separated `statuses` to list (default active; \"all\" for every status)")
	fs.Var(&c.capabilities, "capability", "comma-separated `capabilities`; agents having any of them match")
	fs.StringVar(&c.role, "role", "", "only agents of this role_id (`pool`)")
	fs.Var(&c.minAvailable, "min-available", "only agents with at least `N` free task slots (max - load)")
	fs.IntVar(&c.limit, "limit", 0, "page size, 1 to 1000 (default: the server's, 100)")
	fs.StringVar(&c.cursor, "cursor", "", "start after this `cursor` (the next_cursor of a previous page)")
	fs.BoolVar(&c.all, "all", false, "follow next_cursor and list every page")
	fs.BoolVar(&c.json, "json", false, "print the API's JSON ({\"agents\":[...],\"total\":N,\"next_cursor\":...})")
	return c
}

// agentPage is the JSON of GET /api/v1/agents.
type agentPage struct {
	Agents     []*lifeline.Agent `json:"agents"`
	Total      int               `json:"total"`
	NextCursor string            `json:"next_cursor,omitempty"`
}

// Run lists the agents.
func (c *AgentsListCommand) Run(ctx context.Context, args []string) error {
	if _, err := c.parse(args, 0); err != nil {
		return done(err)
	}
	cl, err := c.client(c.conn, true)
	if err != nil {
		return err
	}
	f := lifeline.AgentFilter{
		Capabilities: c.capabilities,
		RoleID:       c.role,
		Limit:        c.limit,
		After:        c.cursor,
	}
	for _, s := range c.statuses {
		if s == "all" {
			// The API takes explicit statuses only; "all" is every status an agent
			// record can be stored in.
			f.Statuses = []lifeline.Status{lifeline.StatusActive, lifeline.StatusDraining, lifeline.StatusUnhealthy, lifeline.StatusDead, lifeline.StatusDeregistered}
			break
		}
		f.Statuses = append(f.Statuses, lifeline.Status(s))
	}
	if c.minAvailable.set {
		f.MinAvailableCapacity = &c.minAvailable.v
	}

	page := agentPage{Agents: []*lifeline.Agent{}}
	for {
		agents, total, next, err := cl.FindAgents(ctx, f)
		if err != nil {
			return err
		}
		page.Agents = append(page.Agents, agents...)
		page.Total, page.NextCursor = total, next
		if !c.all || next == "" {
			break
		}
		if next == f.After {
			return fmt.Errorf("agents ls: server returned the same cursor %q twice", next)
		}
		f.After = next
	}

	if c.json {
		return writeJSON(c.Stdout, page)
	}
	if err := c.table(page.Agents); err != nil {
		return err
	}
	if page.NextCursor != "" {
		fmt.Fprintf(c.Stderr, "Showing %d of %d agents. Pass --all for every page, or --cursor %s for the next one.\n",
			len(page.Agents), page.Total, page.NextCursor)
	}
	return nil
}

func (c *AgentsListCommand) table(agents []*lifeline.Agent) error {
	now := c.now()
	tw := tabwriter.NewWriter(c.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENT_ID\tROLE\tSTATUS\tLOAD\tCAPABILITIES\tLAST_HEARTBEAT")
	for _, a := range agents {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%s\n",
			a.AgentID, orDash(a.RoleID), a.Status,
			a.Capacity.CurrentLoad, a.Capacity.MaxConcurrentTasks,
			orDash(strings.Join(a.Capabilities, ",")), age(now, a.LastHeartbeatAt))
	}
	return tw.Flush()
}

// writeAgent prints an agent as an aligned "key: value" block.
func writeAgent(w io.Writer, a *lifeline.Agent, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("agent_id", a.AgentID)
	row("role_id", orDash(a.RoleID))
	row("name", orDash(a.Name))
	row("status", string(a.Status))
	if a.DrainDeadline != nil {
		row("drain_deadline", fmt.Sprintf("%s (%s)", formatTime(*a.DrainDeadline), until(now, *a.DrainDeadline)))
	}
	row("capabilities", orDash(strings.Join(a.Capabilities, ", ")))
	row("capacity", fmt.Sprintf("%d/%d tasks (%d available)", a.Capacity.CurrentLoad, a.Capacity.MaxConcurrentTasks, a.Capacity.Available()))
	row("endpoint", orDash(a.Endpoint))
	hc := a.HeartbeatConfig
	row("heartbeat_config", fmt.Sprintf("interval %ds, unhealthy after %ds, dead after %ds", hc.IntervalSeconds, hc.UnhealthyAfterSeconds, hc.DeadAfterSeconds))
	row("last_heartbeat_at", fmt.Sprintf("%s (%s)", formatTime(a.LastHeartbeatAt), age(now, a.LastHeartbeatAt)))
	row("registered_at", formatTime(a.RegisteredAt))
	row("version", fmt.Sprint(a.Version))
	row("metadata", compactJSON(a.Metadata))
	return tw.Flush()
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// compactJSON renders raw JSON on one line, "{}" when empty.
func compactJSON(raw json.RawMessage) string {
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return "{}"
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// formatTime renders a timestamp in UTC, "-" for the zero time.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// age renders how long ago t was in the largest whole unit: "3s ago", "5m ago",
// "2h ago", "4d ago"; "never" for the zero time.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	if d < 0 {
		// The server's clock is ahead of ours; the heartbeat is as fresh as can be.
		d = 0
	}
	return shortDuration(d) + " ago"
}

// until renders how far ahead t is: "in 5m", or "5m ago" once passed.
func until(now, t time.Time) string {
	if d := t.Sub(now); d >= 0 {
		return "in " + shortDuration(d)
	}
	return age(now, t)
}

func shortDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}
