package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/lifeline-dev/lifeline"
)

// LeasesListCommand is `lifeline leases ls`: leases (GET /api/v1/leases) as a table or
// as the API's JSON page.
type LeasesListCommand struct {
	cmdBase
	conn     connFlags
	agent    string
	scope    string
	statuses listFlag
	limit    int
	cursor   string
	all      bool
	json     bool
}

// NewLeasesListCommand returns the command with its flags registered.
func NewLeasesListCommand(env Env) *LeasesListCommand {
	c := &LeasesListCommand{cmdBase: newBase(env, "leases ls")}
	fs := c.fs
	c.conn.register(fs)
	fs.StringVar(&c.agent, "agent", "", "only leases of this agent `ID`")
	fs.StringVar(&c.scope, "scope", "", "only leases on this `scope` (usually a task id)")
	fs.Var(&c.statuses, "status", "comma-separated `statuses`: active, released, expired, revoked, or \"all\" (default: the server's)")
	fs.IntVar(&c.limit, "limit", 0, "page size, 1 to 1000 (default: the server's, 100)")
	fs.StringVar(&c.cursor, "cursor", "", "start after this `cursor` (the next_cursor of a previous page)")
	fs.BoolVar(&c.all, "all", false, "follow next_cursor and list every page")
	fs.BoolVar(&c.json, "json", false, "print the API's JSON ({\"leases\":[...],\"next_cursor\":...})")
	return c
}

// leasePage is the JSON of GET /api/v1/leases.
type leasePage struct {
	Leases     []*lifeline.Lease `json:"leases"`
	NextCursor string            `json:"next_cursor,omitempty"`
}

// Run lists the leases.
func (c *LeasesListCommand) Run(ctx context.Context, args []string) error {
	if _, err := c.parse(args, 0); err != nil {
		return done(err)
	}
	cl, err := c.client(c.conn, true)
	if err != nil {
		return err
	}
	f := lifeline.LeaseFilter{AgentID: c.agent, Scope: c.scope, Limit: c.limit, After: c.cursor}
	for _, s := range c.statuses {
		if s == "all" {
			// The API takes explicit statuses only; "all" is every status a lease can
			// be in.
			f.Statuses = []lifeline.LeaseStatus{lifeline.LeaseActive, lifeline.LeaseReleased, lifeline.LeaseExpired, lifeline.LeaseRevoked}
			break
		}
		f.Statuses = append(f.Statuses, lifeline.LeaseStatus(s))
	}

	page := leasePage{Leases: []*lifeline.Lease{}}
	for {
		leases, next, err := cl.FindLeases(ctx, f)
		if err != nil {
			return err
		}
		page.Leases = append(page.Leases, leases...)
		page.NextCursor = next
		if !c.all || next == "" {
			break
		}
		if next == f.After {
			return fmt.Errorf("leases ls: server returned the same cursor %q twice", next)
		}
		f.After = next
	}

	if c.json {
		return writeJSON(c.Stdout, page)
	}
	if err := c.table(page.Leases); err != nil {
		return err
	}
	if page.NextCursor != "" {
		fmt.Fprintf(c.Stderr, "Showing %d leases. Pass --all for every page, or --cursor %s for the next one.\n",
			len(page.Leases), page.NextCursor)
	}
	return nil
}

func (c *LeasesListCommand) table(leases []*lifeline.Lease) error {
	now := c.now()
	tw := tabwriter.NewWriter(c.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LEASE_ID\tSCOPE\tAGENT\tFENCE\tSTATUS\tEXPIRES\tREASON")
	for _, l := range leases {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n",
			l.LeaseID, l.Scope, l.AgentID, l.Fence, l.Status, whenExpires(now, l.ExpiresAt), orDash(l.Reason))
	}
	return tw.Flush()
}

// whenExpires renders an expiry relative to now: "in 42s", "3m ago", "-" when unset.
func whenExpires(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return until(now, t)
}

// writeLease prints a lease as an aligned "key: value" block.
func writeLease(w io.Writer, l *lifeline.Lease, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("lease_id", l.LeaseID)
	row("scope", l.Scope)
	row("agent_id", l.AgentID)
	row("fence", fmt.Sprint(l.Fence))
	row("status", string(l.Status))
	row("acquired_at", fmt.Sprintf("%s (%s)", formatTime(l.AcquiredAt), age(now, l.AcquiredAt)))
	row("expires_at", fmt.Sprintf("%s (%s)", formatTime(l.ExpiresAt), whenExpires(now, l.ExpiresAt)))
	row("ttl_seconds", fmt.Sprint(l.TTLSeconds))
	if l.EndedAt != nil {
		row("ended_at", fmt.Sprintf("%s (%s)", formatTime(*l.EndedAt), age(now, *l.EndedAt)))
	}
	if l.Reason != "" {
		row("reason", l.Reason)
	}
	return tw.Flush()
}
