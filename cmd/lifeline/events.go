package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/lifeline-dev/lifeline"
)

// EventsListCommand is `lifeline events ls`: a page of the system event log
// (GET /api/v1/events).
type EventsListCommand struct {
	cmdBase
	conn  connFlags
	after int64
	limit int
	types listFlag
	agent string
	json  bool
}

// NewEventsListCommand returns the command with its flags registered.
func NewEventsListCommand(env Env) *EventsListCommand {
	c := &EventsListCommand{cmdBase: newBase(env, "events ls")}
	fs := c.fs
	c.conn.register(fs)
	fs.Int64Var(&c.after, "after", 0, "only events with seq greater than `N`")
	fs.IntVar(&c.limit, "limit", 0, "page size, 1 to 1000 (default: the server's, 100)")
	fs.Var(&c.types, "type", "comma-separated event `types`, e.g. agent.lifecycle")
	fs.StringVar(&c.agent, "agent", "", "only events of this agent `ID`")
	fs.BoolVar(&c.json, "json", false, "print the API's JSON ({\"events\":[...],\"next_after\":N})")
	return c
}

// eventPage is the JSON of GET /api/v1/events.
type eventPage struct {
	Events    []lifeline.Event `json:"events"`
	NextAfter int64            `json:"next_after"`
}

// Run lists the events.
func (c *EventsListCommand) Run(ctx context.Context, args []string) error {
	if _, err := c.parse(args, 0); err != nil {
		return done(err)
	}
	if c.after < 0 {
		return c.usageErrorf("--after must be 0 or more")
	}
	cl, err := c.client(c.conn, true)
	if err != nil {
		return err
	}
	events, next, err := cl.FindEvents(ctx, lifeline.EventFilter{After: c.after, Limit: c.limit, Types: c.types, AgentID: c.agent})
	if err != nil {
		return err
	}
	if events == nil {
		events = []lifeline.Event{}
	}
	if c.json {
		return writeJSON(c.Stdout, eventPage{Events: events, NextAfter: next})
	}
	tw := tabwriter.NewWriter(c.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIMESTAMP\tTYPE\tAGENT_ID\tTRANSITION\tREASON")
	for _, e := range events {
		transition := "-"
		if e.PreviousStatus != "" || e.NewStatus != "" {
			transition = orDash(string(e.PreviousStatus)) + " -> " + orDash(string(e.NewStatus))
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", e.Seq, formatTime(e.Timestamp), e.Type, orDash(e.AgentID), transition, orDash(e.Reason))
	}
	return tw.Flush()
}
