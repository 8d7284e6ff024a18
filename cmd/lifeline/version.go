package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
)

// VersionCommand is `lifeline version`.
type VersionCommand struct {
	cmdBase
}

// NewVersionCommand returns the command.
func NewVersionCommand(env Env) *VersionCommand {
	return &VersionCommand{cmdBase: newBase(env, "version")}
}

// Run prints "lifeline <version> (<go version>, <os>/<arch>)".
func (c *VersionCommand) Run(ctx context.Context, args []string) error {
	if _, err := c.parse(args, 0); err != nil {
		return done(err)
	}
	_, err := fmt.Fprintf(c.Stdout, "lifeline %s (%s, %s/%s)\n", currentVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return err
}

// currentVersion is the version of this binary.
func currentVersion() string {
	bi, ok := debug.ReadBuildInfo()
	return resolveVersion(version, bi, ok)
}

// resolveVersion returns v unless it is "dev" (no -ldflags version); then it returns the
// main module's version recorded by the go command, or else its VCS revision (with
// "-dirty" for a modified work tree), or else "dev".
func resolveVersion(v string, bi *debug.BuildInfo, ok bool) string {
	if v != "dev" && v != "" {
		return v
	}
	if !ok || bi == nil {
		return "dev"
	}
	if mv := bi.Main.Version; mv != "" && mv != "(devel)" {
		return mv
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return "dev-" + rev
}
