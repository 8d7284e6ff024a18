package registry

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/lifeline-dev/lifeline"
)

// Keys implements lifeline.KeyService: API keys stored hashed, with every key held in
// memory so that authenticating a request does no I/O. Revocation takes effect at once.
type Keys struct {
	store lifeline.Store
	now   func() time.Time

	mu sync.RWMutex
	// byHash is keyed by the raw SHA-256 of the secret, so authenticating a request
	// hashes it and looks it up without building the hex form.
	byHash map[[sha256.Size]byte]*lifeline.Key
	byID   map[string]*lifeline.Key
}

var _ lifeline.KeyService = (*Keys)(nil)

// NewKeys loads every key from the store.
func NewKeys(ctx context.Context, store lifeline.Store, now func() time.Time) (*Keys, error) {
	if now == nil {
		now = time.Now
	}
	ks, err := store.Keys(ctx)
	if err != nil {
		return nil, err
	}
	k := &Keys{store: store, now: now, byHash: map[[sha256.Size]byte]*lifeline.Key{}, byID: map[string]*lifeline.Key{}}
	for _, key := range ks {
		k.byID[key.ID] = key
		k.byHash[rawHash(key.Hash)] = key
	}
	return k, nil
}

// NewSecret returns a fresh random key secret: "ll_" and 32 base32 characters (160
// bits).
func NewSecret() string {
	var b [20]byte
	_, _ = rand.Read(b[:])
	return "ll_" + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])
}

// Bootstrap makes sure an admin can get in. When envSecret is set (LIFELINE_ADMIN_KEY)
// it is registered as an admin key if it is not known yet. Otherwise, when the store
// has no keys at all (first start), an admin key is generated and its secret returned
// so that it can be printed once; only its hash is stored.
func (k *Keys) Bootstrap(ctx context.Context, envSecret string) (generated string, err error) {
	if envSecret != "" {
		k.mu.RLock()
		existing := k.byHash[sha256.Sum256([]byte(envSecret))]
		k.mu.RUnlock()
		if existing != nil {
			if existing.RevokedAt != nil {
				return "", lifeline.Errorf(lifeline.EInvalid, "LIFELINE_ADMIN_KEY was revoked; set another one")
			}
			return "", nil
		}
		_, err := k.create(ctx, lifeline.RoleAdmin, "bootstrap (LIFELINE_ADMIN_KEY)", envSecret)
		return "", err
	}
	k.mu.RLock()
	n := len(k.byID)
	k.mu.RUnlock()
	if n > 0 {
		return "", nil
	}
	secret := NewSecret()
	if _, err := k.create(ctx, lifeline.RoleAdmin, "bootstrap", secret); err != nil {
		return "", err
	}
	return secret, nil
}

func (k *Keys) create(ctx context.Context, role lifeline.Role, name, secret string) (*lifeline.NewKey, error) {
	key := &lifeline.Key{
		ID:        "key_" + ulid.Make().String(),
		Role:      role,
		Name:      name,
		CreatedAt: k.now().Round(0).UTC(),
		Hash:      lifeline.HashSecret(secret),
	}
	if err := k.store.CreateKey(ctx, key); err != nil {
		return nil, err
	}
	k.mu.Lock()
	k.byID[key.ID] = key
	k.byHash[rawHash(key.Hash)] = key
	k.mu.Unlock()
	return &lifeline.NewKey{Key: *key, Secret: secret}, nil
}

func requireAdmin(ctx context.Context) error {
	if c, ok := lifeline.CallerFrom(ctx); ok && c.Role != lifeline.RoleAdmin {
		return lifeline.Errorf(lifeline.EForbidden, "managing keys needs an admin key")
	}
	return nil
}

// CreateKey creates a key; the secret is in the result only. Admins only.
func (k *Keys) CreateKey(ctx context.Context, r *lifeline.KeyRequest) (*lifeline.NewKey, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return k.create(ctx, r.Role, r.Name, NewSecret())
}

// Keys lists every key, revoked ones included, oldest first. Admins only.
func (k *Keys) Keys(ctx context.Context) ([]*lifeline.Key, error) {
	if err := requireAdmin(ctx); err != nil {
		return nil, err
	}
	return k.store.Keys(ctx)
}

// RevokeKey revokes a key; requests with it fail from now on. Admins only.
func (k *Keys) RevokeKey(ctx context.Context, id string) error {
	if err := requireAdmin(ctx); err != nil {
		return err
	}
	k.mu.RLock()
	key := k.byID[id]
	k.mu.RUnlock()
	if key == nil {
		return lifeline.Errorf(lifeline.ENotFound, "key %q not found", id)
	}
	at := k.now().Round(0).UTC()
	if err := k.store.RevokeKey(ctx, id, at); err != nil {
		return err
	}
	k.mu.Lock()
	if key.RevokedAt == nil {
		revoked := *key
		revoked.RevokedAt = &at
		k.byID[id] = &revoked
		k.byHash[rawHash(key.Hash)] = &revoked
	}
	k.mu.Unlock()
	return nil
}

// rawHash decodes a stored hex hash; a malformed one maps to the zero digest, which no
// secret hashes to in practice.
func rawHash(hexHash string) (h [sha256.Size]byte) {
	_, _ = hex.Decode(h[:], []byte(hexHash))
	return h
}

// Authenticate returns the caller a secret stands for. Returns unauthorized for an
// unknown or revoked secret.
func (k *Keys) Authenticate(ctx context.Context, secret string) (lifeline.Caller, error) {
	if secret == "" {
		return lifeline.Caller{}, lifeline.Errorf(lifeline.EUnauthorized, "missing X-API-Key header")
	}
	h := sha256.Sum256([]byte(secret))
	k.mu.RLock()
	key := k.byHash[h]
	k.mu.RUnlock()
	if key == nil || key.RevokedAt != nil {
		return lifeline.Caller{}, lifeline.Errorf(lifeline.EUnauthorized, "unknown or revoked API key")
	}
	return lifeline.Caller{KeyID: key.ID, Role: key.Role}, nil
}
