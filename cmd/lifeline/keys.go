package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/lifeline-dev/lifeline"
)

// KeysCreateCommand is `lifeline keys create`: a new API key (POST /api/v1/keys).
type KeysCreateCommand struct {
	cmdBase
	conn connFlags
	role string
	name string
	json bool
}

// NewKeysCreateCommand returns the command with its flags registered.
func NewKeysCreateCommand(env Env) *KeysCreateCommand {
	c := &KeysCreateCommand{cmdBase: newBase(env, "keys create")}
	c.conn.register(c.fs)
	c.fs.StringVar(&c.role, "role", "", "`role` of the key: agent, coordinator or admin (required)")
	c.fs.StringVar(&c.name, "name", "", "a `name` saying who or what uses the key")
	c.fs.BoolVar(&c.json, "json", false, "print the API's JSON ({\"id\",\"key\",\"role\",\"name\",\"created_at\"})")
	return c
}

// Run creates the key and prints it with its secret, which is shown only this once.
func (c *KeysCreateCommand) Run(ctx context.Context, args []string) error {
	if _, err := c.parse(args, 0); err != nil {
		return done(err)
	}
	if c.role == "" {
		return c.usageErrorf("--role is required")
	}
	cl, err := c.client(c.conn, true)
	if err != nil {
		return err
	}
	k, err := cl.CreateKey(ctx, &lifeline.KeyRequest{Role: lifeline.Role(c.role), Name: c.name})
	if err != nil {
		return err
	}
	if c.json {
		return writeJSON(c.Stdout, k)
	}
	tw := tabwriter.NewWriter(c.Stdout, 0, 0, 1, ' ', 0)
	fmt.Fprintf(tw, "id:\t%s\n", k.ID)
	fmt.Fprintf(tw, "role:\t%s\n", k.Role)
	fmt.Fprintf(tw, "name:\t%s\n", orDash(k.Name))
	fmt.Fprintf(tw, "created_at:\t%s\n", formatTime(k.CreatedAt))
	fmt.Fprintf(tw, "key:\t%s\n", k.Secret)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(c.Stderr, "Store the key now: the server keeps only its hash and cannot show it again.")
	return nil
}

// KeysListCommand is `lifeline keys ls`: every API key, without secrets.
type KeysListCommand struct {
	cmdBase
	conn connFlags
	json bool
}

// NewKeysListCommand returns the command with its flags registered.
func NewKeysListCommand(env Env) *KeysListCommand {
	c := &KeysListCommand{cmdBase: newBase(env, "keys ls")}
	c.conn.register(c.fs)
	c.fs.BoolVar(&c.json, "json", false, "print the API's JSON ({\"keys\":[...]})")
	return c
}

// Run lists the keys.
func (c *KeysListCommand) Run(ctx context.Context, args []string) error {
	if _, err := c.parse(args, 0); err != nil {
		return done(err)
	}
	cl, err := c.client(c.conn, true)
	if err != nil {
		return err
	}
	keys, err := cl.Keys(ctx)
	if err != nil {
		return err
	}
	if keys == nil {
		keys = []*lifeline.Key{}
	}
	if c.json {
		return writeJSON(c.Stdout, struct {
			Keys []*lifeline.Key `json:"keys"`
		}{keys})
	}
	tw := tabwriter.NewWriter(c.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tROLE\tNAME\tCREATED_AT\tREVOKED_AT")
	for _, k := range keys {
		revoked := "-"
		if k.RevokedAt != nil {
			revoked = formatTime(*k.RevokedAt)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.ID, k.Role, orDash(k.Name), formatTime(k.CreatedAt), revoked)
	}
	return tw.Flush()
}

// KeysRevokeCommand is `lifeline keys revoke ID`.
type KeysRevokeCommand struct {
	cmdBase
	conn connFlags
}

// NewKeysRevokeCommand returns the command with its flags registered.
func NewKeysRevokeCommand(env Env) *KeysRevokeCommand {
	c := &KeysRevokeCommand{cmdBase: newBase(env, "keys revoke")}
	c.conn.register(c.fs)
	return c
}

// Run revokes the key.
func (c *KeysRevokeCommand) Run(ctx context.Context, args []string) error {
	pos, err := c.parse(args, 1)
	if err != nil {
		return done(err)
	}
	cl, err := c.client(c.conn, true)
	if err != nil {
		return err
	}
	if err := cl.RevokeKey(ctx, pos[0]); err != nil {
		return err
	}
	fmt.Fprintf(c.Stdout, "revoked key %s\n", pos[0])
	return nil
}
