// Package secret makes and checks the secrets moat hands out: random
// passwords and tokens shown once, kept only as argon2id hashes and
// compared in constant time.
//
// It stores nothing and logs nothing; callers keep the hashes.
package secret

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Params are argon2id's costs. The defaults are OWASP's minimum for
// argon2id (19 MiB, 2 passes, 1 lane): each check costs a few tens of
// milliseconds, which a guessing attacker pays per guess, and a small
// server can afford a few at once.
type Params struct {
	Memory  uint32 // KiB
	Time    uint32
	Threads uint8
}

// Default is the cost of every new hash.
var Default = Params{Memory: 19 * 1024, Time: 2, Threads: 1}

const (
	saltLen = 16
	keyLen  = 32
)

// Hash returns password's argon2id hash in the PHC string format,
// $argon2id$v=19$m=19456,t=2,p=1$salt$hash, which carries its own costs
// so that they can be raised later.
func Hash(password string) (string, error) {
	return Default.Hash(password)
}

// Hash is Hash with these costs.
func (p Params) Hash(password string) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("secret: salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, keyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// ErrMalformed is a stored hash moat cannot read.
var ErrMalformed = errors.New("secret: not an argon2id hash")

// Verify reports whether password matches hash, comparing in constant
// time. A malformed hash is an error, never a match.
func Verify(hash, password string) (bool, error) {
	h, err := parse(hash)
	if err != nil {
		return false, err
	}
	got := argon2.IDKey([]byte(password), h.salt, h.Time, h.Memory, h.Threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(got, h.key) == 1, nil
}

// ParamsOf returns the costs a hash was made with.
func ParamsOf(hash string) (Params, error) {
	h, err := parse(hash)
	return h.Params, err
}

// Below reports whether any of p's costs is lower than min's: a hash made
// with p is made again with min at the next sign-in.
func (p Params) Below(min Params) bool {
	return p.Memory < min.Memory || p.Time < min.Time || p.Threads < min.Threads
}

type parsed struct {
	Params
	salt, key []byte
}

func parse(hash string) (parsed, error) {
	var h parsed
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return h, ErrMalformed
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return h, ErrMalformed
	}
	p := &h.Params
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Threads); err != nil || p.Memory == 0 || p.Time == 0 || p.Threads == 0 || p.Memory > 1<<22 || p.Time > 64 {
		return h, ErrMalformed
	}
	b64 := base64.RawStdEncoding
	var err error
	if h.salt, err = b64.DecodeString(parts[4]); err != nil || len(h.salt) < 8 {
		return h, ErrMalformed
	}
	if h.key, err = b64.DecodeString(parts[5]); err != nil || len(h.key) < 16 {
		return h, ErrMalformed
	}
	return h, nil
}

// Password returns a random password of n bytes of entropy, written in
// lower-case base32 (no padding) so that it survives copying from a
// terminal into any config file.
func Password(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("secret: random: %w", err)
	}
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b)), nil
}

// Equal compares two secrets in constant time (for their length).
func Equal(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
