// Command lifeline is the Lifeline binary: the server (lifeline serve) and a command-line
// client for its HTTP API (agents, leases, tasks, events, keys, health, version).
//
// Client commands find the server through --server or $LIFELINE_SERVER and authenticate
// with --key or $LIFELINE_KEY.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lifeline-dev/lifeline/client"
)

// version is the release version, set at build time with
// -ldflags "-X main.version=v1.2.3". When it is "dev" the version command falls back to
// the module version or VCS revision recorded in the binary.
var version = "dev"

// DefaultServer is the server URL used when neither --server nor $LIFELINE_SERVER is set.
const DefaultServer = "http://127.0.0.1:8080"

// Environment variables read by the client commands.
const (
	EnvServer = "LIFELINE_SERVER"
	EnvKey    = "LIFELINE_KEY"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	m := &CLI{Env: Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}}
	err := m.Run(ctx, os.Args[1:])
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode reports err on stderr and returns the process exit status: 0 for success,
// 2 for a command-line mistake (with the usage text), 1 for anything else.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var ue *UsageError
	if errors.As(err, &ue) {
		if ue.Err != nil {
			fmt.Fprintf(stderr, "lifeline: %v\n\n", ue.Err)
		}
		io.WriteString(stderr, ue.Usage)
		return 2
	}
	fmt.Fprintf(stderr, "lifeline: %s\n", strings.TrimPrefix(err.Error(), "lifeline: "))
	return 1
}

// UsageError is a command-line mistake: an unknown command or flag, a missing argument.
// main prints it with the usage text of the command concerned and exits with status 2.
type UsageError struct {
	// Err says what is wrong; nil when only the usage text is to be shown.
	Err error
	// Usage is the usage text to print.
	Usage string
}

// Error implements the error interface.
func (e *UsageError) Error() string {
	if e.Err == nil {
		return "usage error"
	}
	return e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *UsageError) Unwrap() error { return e.Err }

// Env is what commands take from the outside world. Tests replace it.
type Env struct {
	// Stdout receives command output; Stderr receives notes and warnings.
	Stdout, Stderr io.Writer
	// Getenv reads environment variables; nil reads none.
	Getenv func(string) string
	// Now is the clock used for ages such as "3s ago"; nil means time.Now.
	Now func() time.Time
	// HTTPClient sends the client commands' requests; nil means a client with a
	// 60-second timeout per request.
	HTTPClient *http.Client
}

func (e Env) getenv(k string) string {
	if e.Getenv == nil {
		return ""
	}
	return e.Getenv(k)
}

func (e Env) now() time.Time {
	if e.Now == nil {
		return time.Now()
	}
	return e.Now()
}

// CLI is the lifeline command: it picks a subcommand from the arguments and runs it.
// (Main, in serve.go, is the running server.)
type CLI struct {
	Env
}

// commandSpec describes one subcommand for dispatch and for the usage text.
type commandSpec struct {
	// name is the words that select the command, e.g. "agents ls".
	name string
	// args is the synopsis after the name, e.g. "ID [flags]".
	args string
	// summary is one line saying what the command does.
	summary string
	// new builds the command; nil for serve, whose flags belong to the server side.
	new func(Env) Command
}

// Command is a subcommand: it owns a flag set and runs with its arguments.
type Command interface {
	// Run parses args (everything after the command's name) and runs the command.
	Run(ctx context.Context, args []string) error
	// FlagSet returns the command's flags, for usage texts.
	FlagSet() *flag.FlagSet
}

// commands lists every subcommand in the order the usage text shows them. It is filled
// in init because the commands themselves read it for their usage text.
var commands []commandSpec

func init() {
	commands = []commandSpec{
		{name: "serve", args: "[flags]", summary: "run the Lifeline server (see lifeline serve --help)"},
		{name: "agents ls", args: "[flags]", summary: "list agents, filtered and paged", new: func(e Env) Command { return NewAgentsListCommand(e) }},
		{name: "agents get", args: "ID [flags]", summary: "show one agent", new: func(e Env) Command { return NewAgentsGetCommand(e) }},
		{name: "leases ls", args: "[flags]", summary: "list leases, filtered and paged", new: func(e Env) Command { return NewLeasesListCommand(e) }},
		{name: "leases get", args: "ID [flags]", summary: "show one lease", new: func(e Env) Command { return NewLeasesGetCommand(e) }},
		{name: "tasks get", args: "TASK_ID [flags]", summary: "show the latest accepted state of a task", new: func(e Env) Command { return NewTasksGetCommand(e) }},
		{name: "events ls", args: "[flags]", summary: "list events of the system event log", new: func(e Env) Command { return NewEventsListCommand(e) }},
		{name: "keys create", args: "--role ROLE [flags]", summary: "create an API key (admin)", new: func(e Env) Command { return NewKeysCreateCommand(e) }},
		{name: "keys ls", args: "[flags]", summary: "list API keys (admin)", new: func(e Env) Command { return NewKeysListCommand(e) }},
		{name: "keys revoke", args: "ID [flags]", summary: "revoke an API key (admin)", new: func(e Env) Command { return NewKeysRevokeCommand(e) }},
		{name: "health", args: "[flags]", summary: "show the server's readiness (GET /health)", new: func(e Env) Command { return NewHealthCommand(e) }},
		{name: "bench heartbeat", args: "[flags]", summary: "measure single heartbeats over HTTP (optionally against a bare net/http baseline)", new: func(e Env) Command { return NewBenchHeartbeatCommand(e) }},
		{name: "bench batch", args: "[flags]", summary: "measure batch heartbeats (POST /api/v1/heartbeats)", new: func(e Env) Command { return NewBenchBatchCommand(e) }},
		{name: "bench detect", args: "[flags]", summary: "measure how soon silenced agents are reported unhealthy", new: func(e Env) Command { return NewBenchDetectCommand(e) }},
		{name: "bench memory", args: "[flags]", summary: "measure memory per registered agent (in-process server)", new: func(e Env) Command { return NewBenchMemoryCommand(e) }},
		{name: "version", args: "", summary: "print the version", new: func(e Env) Command { return NewVersionCommand(e) }},
		{name: "help", args: "[COMMAND]", summary: "show this help, or the help of one command"},
	}
}

// aliases maps alternative subcommand words to their canonical spelling.
var aliases = map[string]string{"list": "ls"}

// Run runs the subcommand named by args (os.Args[1:]).
func (m *CLI) Run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return &UsageError{Err: errors.New("no command given"), Usage: m.usage()}
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		return m.help(ctx, args[1:])
	case "serve":
		return runServe(ctx, args[1:], m.Stdout, m.Stderr)
	}
	spec, rest, err := m.lookup(ctx, args)
	if err != nil {
		return done(err)
	}
	return spec.new(m.Env).Run(ctx, rest)
}

// lookup finds the command named by the first one or two words of args and returns it
// with the remaining arguments.
func (m *CLI) lookup(ctx context.Context, args []string) (commandSpec, []string, error) {
	if spec, ok := findCommand(args[0]); ok {
		return spec, args[1:], nil
	}
	if group := groupCommands(args[0]); len(group) > 0 {
		if len(args) < 2 || isHelpFlag(args[1]) {
			if len(args) >= 2 {
				// "lifeline agents --help" asks for the group's help: not an error.
				if err := m.help(ctx, args[:1]); err != nil {
					return commandSpec{}, nil, err
				}
				return commandSpec{}, nil, errHelpShown
			}
			return commandSpec{}, nil, &UsageError{Err: fmt.Errorf("%s: missing subcommand", args[0]), Usage: m.groupUsage(args[0])}
		}
		sub := args[1]
		if a, ok := aliases[sub]; ok {
			sub = a
		}
		if spec, ok := findCommand(args[0] + " " + sub); ok {
			return spec, args[2:], nil
		}
		return commandSpec{}, nil, &UsageError{Err: fmt.Errorf("unknown command %q", args[0]+" "+args[1]), Usage: m.groupUsage(args[0])}
	}
	return commandSpec{}, nil, &UsageError{Err: fmt.Errorf("unknown command %q", args[0]), Usage: m.usage()}
}

func isHelpFlag(s string) bool {
	return s == "-h" || s == "-help" || s == "--help" || s == "help"
}

// findCommand returns the runnable command with exactly this name.
func findCommand(name string) (commandSpec, bool) {
	for _, c := range commands {
		if c.name == name && c.new != nil {
			return c, true
		}
	}
	return commandSpec{}, false
}

// groupCommands returns the commands whose name starts with the word group.
func groupCommands(group string) []commandSpec {
	var out []commandSpec
	for _, c := range commands {
		if strings.HasPrefix(c.name, group+" ") {
			out = append(out, c)
		}
	}
	return out
}

// help prints the usage of the whole program, of a command group ("agents") or of one
// command ("agents ls") to stdout.
func (m *CLI) help(ctx context.Context, args []string) error {
	name := strings.Join(args, " ")
	switch {
	case name == "":
		io.WriteString(m.Stdout, m.usage())
	case name == "serve":
		// The server's flags are its own; let it print them.
		return runServe(ctx, []string{"--help"}, m.Stdout, m.Stderr)
	case len(groupCommands(name)) > 0:
		io.WriteString(m.Stdout, m.groupUsage(name))
	default:
		spec, _, err := m.lookup(ctx, args)
		if err != nil {
			return done(err)
		}
		io.WriteString(m.Stdout, commandUsage(spec, spec.new(m.Env).FlagSet()))
	}
	return nil
}

// usage is the program's usage text: every command with every flag.
func (m *CLI) usage() string {
	var b strings.Builder
	b.WriteString("Usage: lifeline <command> [arguments] [flags]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-30s %s\n", strings.TrimSpace(c.name+" "+c.args), c.summary)
	}
	fmt.Fprintf(&b, "\nClient commands talk to --server (default $%s, else %s)\n", EnvServer, DefaultServer)
	fmt.Fprintf(&b, "and authenticate with --key (default $%s).\n", EnvKey)
	for _, c := range commands {
		if c.new == nil {
			continue
		}
		fs := c.new(m.Env).FlagSet()
		if !hasFlags(fs) {
			continue
		}
		fmt.Fprintf(&b, "\nFlags of lifeline %s:\n", c.name)
		b.WriteString(flagDefaults(fs))
	}
	return b.String()
}

// groupUsage is the usage text of the commands of one group, e.g. "agents".
func (m *CLI) groupUsage(group string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: lifeline %s <command> [arguments] [flags]\n\nCommands:\n", group)
	cmds := groupCommands(group)
	for _, c := range cmds {
		fmt.Fprintf(&b, "  %-30s %s\n", strings.TrimSpace(c.name+" "+c.args), c.summary)
	}
	for _, c := range cmds {
		fmt.Fprintf(&b, "\nFlags of lifeline %s:\n", c.name)
		b.WriteString(flagDefaults(c.new(m.Env).FlagSet()))
	}
	return b.String()
}

// commandUsage is the usage text of one command.
func commandUsage(spec commandSpec, fs *flag.FlagSet) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: lifeline %s\n\n%s.\n", strings.TrimSpace(spec.name+" "+spec.args), capitalize(spec.summary))
	if hasFlags(fs) {
		b.WriteString("\nFlags:\n")
		b.WriteString(flagDefaults(fs))
	}
	return b.String()
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// flagDefaults renders fs.PrintDefaults with the GNU-style double dash this CLI
// documents (the flag package accepts both).
func flagDefaults(fs *flag.FlagSet) string {
	var b strings.Builder
	out := fs.Output()
	fs.SetOutput(&b)
	fs.PrintDefaults()
	fs.SetOutput(out)
	lines := strings.Split(b.String(), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "  -") {
			lines[i] = "  --" + l[3:]
		}
	}
	return strings.Join(lines, "\n")
}

// cmdBase is the part every command shares: its environment, flag set and usage.
type cmdBase struct {
	Env
	spec commandSpec
	fs   *flag.FlagSet
}

func newBase(env Env, name string) cmdBase {
	spec := commandSpec{name: name}
	for _, c := range commands {
		if c.name == name {
			spec = c
		}
	}
	fs := flag.NewFlagSet("lifeline "+name, flag.ContinueOnError)
	// Errors and help are printed by us (parse), never by the flag package.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return cmdBase{Env: env, spec: spec, fs: fs}
}

// FlagSet returns the command's flags.
func (b *cmdBase) FlagSet() *flag.FlagSet { return b.fs }

func (b *cmdBase) usage() string { return commandUsage(b.spec, b.fs) }

// usageErrorf returns a UsageError carrying this command's usage text.
func (b *cmdBase) usageErrorf(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf("%s: %w", b.spec.name, fmt.Errorf(format, args...)), Usage: b.usage()}
}

// errHelpShown tells Run that --help was handled and nothing else is to be done.
var errHelpShown = errors.New("help shown")

// parse parses args, allowing flags after positional arguments ("agents get ID
// --json"), and checks that exactly nargs positional arguments remain. On --help it
// prints the usage to stdout and returns errHelpShown.
func (b *cmdBase) parse(args []string, nargs int) ([]string, error) {
	var pos []string
	for {
		if err := b.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				io.WriteString(b.Stdout, b.usage())
				return nil, errHelpShown
			}
			return nil, &UsageError{Err: err, Usage: b.usage()}
		}
		rest := b.fs.Args()
		if len(rest) == 0 {
			break
		}
		// An explicit "--" ends the flags: everything after it is positional.
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if len(pos) != nargs {
		switch {
		case nargs == 0:
			return nil, b.usageErrorf("unexpected argument %q", pos[0])
		case len(pos) < nargs:
			return nil, b.usageErrorf("missing argument")
		default:
			return nil, b.usageErrorf("unexpected argument %q", pos[nargs])
		}
	}
	return pos, nil
}

// done turns errHelpShown into success.
func done(err error) error {
	if errors.Is(err, errHelpShown) {
		return nil
	}
	return err
}

// connFlags are the flags of every command that talks to a server.
type connFlags struct {
	server string
	key    string
}

func (c *connFlags) register(fs *flag.FlagSet) {
	c.registerServer(fs)
	fs.StringVar(&c.key, "key", "", "API `key` (default $"+EnvKey+"; prefer the variable, flags show in ps)")
}

// registerServer registers --server only, for commands that need no key.
func (c *connFlags) registerServer(fs *flag.FlagSet) {
	fs.StringVar(&c.server, "server", "", "server base `URL` (default $"+EnvServer+", else "+DefaultServer+")")
}

// client returns an API client for the flags, falling back to the environment. It
// returns a UsageError when needKey is set and there is no key.
func (b *cmdBase) client(c connFlags, needKey bool) (*client.Client, error) {
	server := c.server
	if server == "" {
		server = b.getenv(EnvServer)
	}
	if server == "" {
		server = DefaultServer
	}
	key := c.key
	if key == "" {
		key = b.getenv(EnvKey)
	}
	if needKey && key == "" {
		return nil, b.usageErrorf("no API key: pass --key or set $%s", EnvKey)
	}
	hc := b.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 60 * time.Second}
	}
	return client.New(server, key, client.WithHTTPClient(hc), client.WithUserAgent("lifeline-cli/"+currentVersion())), nil
}

// listFlag is a comma-separated list flag; repeating the flag adds to the list.
type listFlag []string

// String implements flag.Value.
func (l *listFlag) String() string { return strings.Join(*l, ",") }

// Set implements flag.Value: it adds the comma-separated items of s.
func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// optInt is an integer flag that records whether it was given.
type optInt struct {
	v   int
	set bool
}

// String implements flag.Value.
func (o *optInt) String() string {
	if o == nil || !o.set {
		return ""
	}
	return fmt.Sprint(o.v)
}

// Set implements flag.Value.
func (o *optInt) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("not an integer: %q", s)
	}
	o.v, o.set = n, true
	return nil
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
