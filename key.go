package lifeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// Role is what an API key may do (RFC-0016 Security).
type Role string

// The roles.
const (
	// RoleAgent keys register agents and act only as the agents they registered.
	RoleAgent Role = "agent"
	// RoleCoordinator keys discover agents and act on any agent.
	RoleCoordinator Role = "coordinator"
	// RoleAdmin keys do everything, including managing keys.
	RoleAdmin Role = "admin"
)

// Valid reports whether r is a defined role.
func (r Role) Valid() bool {
	return r == RoleAgent || r == RoleCoordinator || r == RoleAdmin
}

// Privileged reports whether r may act on any agent (coordinator or admin).
func (r Role) Privileged() bool { return r == RoleCoordinator || r == RoleAdmin }

// Key is an API key. Only the SHA-256 hash of the secret is stored; the secret itself
// is returned once, when the key is created.
type Key struct {
	ID        string     `json:"id"`
	Role      Role       `json:"role"`
	Name      string     `json:"name"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// Hash is the hex SHA-256 of the secret.
	Hash string `json:"-"`
}

// NewKey is a freshly created key with its secret, shown once.
type NewKey struct {
	Key
	Secret string `json:"key"`
}

// KeyRequest is the body of POST /api/v1/keys.
type KeyRequest struct {
	Role Role   `json:"role"`
	Name string `json:"name"`
}

// Validate checks a key request.
func (r *KeyRequest) Validate() error {
	if !r.Role.Valid() {
		return Errorf(EInvalid, "role must be agent, coordinator or admin")
	}
	if len(r.Name) > MaxNameLength {
		return Errorf(EInvalid, "name must be at most %d bytes", MaxNameLength)
	}
	return nil
}

// HashSecret returns the stored form of a key secret.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Caller is the authenticated identity of a request.
type Caller struct {
	KeyID string
	Role  Role
}

type callerKey struct{}

// WithCaller returns a context carrying the caller.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller of ctx. A context without one is the system itself
// (sweeper, CLI in-process), which may do everything.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}
