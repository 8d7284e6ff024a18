package main

import (
	"bytes"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/lifeline-dev/lifeline"
)

// writeTask prints a task as an aligned "key: value" block.
func writeTask(w io.Writer, t *lifeline.Task, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("task_id", t.TaskID)
	row("status", t.Status)
	row("progress", fmt.Sprintf("%d%%", t.Progress))
	row("agent_id", orDash(t.AgentID))
	row("lease_id", orDash(t.LeaseID))
	row("fence", fmt.Sprint(t.Fence))
	row("message", orDash(t.Message))
	row("error", orDash(t.Error))
	// compactJSON shows an absent value as "{}", but a result can be any JSON value, so
	// an absent one is "-" as elsewhere.
	result := "-"
	if r := bytes.TrimSpace(t.Result); len(r) > 0 && string(r) != "null" {
		result = compactJSON(t.Result)
	}
	row("result", result)
	row("updated_at", fmt.Sprintf("%s (%s)", formatTime(t.UpdatedAt), age(now, t.UpdatedAt)))
	return tw.Flush()
}
