package main

import (
	"context"
	"io"
	"time"

	"github.com/lifeline-dev/lifeline"
	"github.com/lifeline-dev/lifeline/client"
)

// GetCommand is `lifeline <noun> get ID`: one record, as an aligned "key: value" block
// or, with --json, as the API's JSON.
type GetCommand[T any] struct {
	cmdBase
	conn  connFlags
	json  bool
	fetch func(cl *client.Client, ctx context.Context, id string) (T, error)
	show  func(w io.Writer, v T, now time.Time) error
}

func newGetCommand[T any](env Env, name, noun string, fetch func(*client.Client, context.Context, string) (T, error),
	show func(io.Writer, T, time.Time) error) *GetCommand[T] {
	c := &GetCommand[T]{cmdBase: newBase(env, name), fetch: fetch, show: show}
	c.conn.register(c.fs)
	c.fs.BoolVar(&c.json, "json", false, "print the "+noun+" as the API's JSON")
	return c
}

// Run shows the record.
func (c *GetCommand[T]) Run(ctx context.Context, args []string) error {
	pos, err := c.parse(args, 1)
	if err != nil {
		return done(err)
	}
	cl, err := c.client(c.conn, true)
	if err != nil {
		return err
	}
	v, err := c.fetch(cl, ctx, pos[0])
	if err != nil {
		return err
	}
	if c.json {
		return writeJSON(c.Stdout, v)
	}
	return c.show(c.Stdout, v, c.now())
}

// NewAgentsGetCommand is `lifeline agents get ID`: one agent record.
func NewAgentsGetCommand(env Env) *GetCommand[*lifeline.Agent] {
	return newGetCommand(env, "agents get", "agent", (*client.Client).FindAgentByID, writeAgent)
}

// NewLeasesGetCommand is `lifeline leases get ID`: one lease in any status.
func NewLeasesGetCommand(env Env) *GetCommand[*lifeline.Lease] {
	return newGetCommand(env, "leases get", "lease", (*client.Client).FindLeaseByID, writeLease)
}

// NewTasksGetCommand is `lifeline tasks get TASK_ID`: the latest accepted state of a
// task.
func NewTasksGetCommand(env Env) *GetCommand[*lifeline.Task] {
	return newGetCommand(env, "tasks get", "task", (*client.Client).FindTask, writeTask)
}
