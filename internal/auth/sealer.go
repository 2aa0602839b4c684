package auth

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Sealer encrypts the secrets moat must read back (TOTP keys) with
// AES-256-GCM, under a key kept in its own 0600 file outside the
// database: a copy of the database alone does not give them away.
type Sealer struct{ aead cipher.AEAD }

// OpenSealer reads the key file at path, making it (0600, in a 0700
// directory) the first time. A key file others may read is refused.
func OpenSealer(path string) (*Sealer, error) {
	key, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("auth: random: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("auth: key file: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("auth: key file: %w", err)
		}
		_, err = f.Write(key)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
			return nil, fmt.Errorf("auth: key file %s: %w", path, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("auth: key file: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("auth: key file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("auth: key file %s is readable by others (mode %v): chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("auth: key file %s holds %d bytes, not an AES-256 key (32): restore it from a backup, or remove it and enrol every authenticator app again", path, len(key))
	}
	return NewSealer(key)
}

// NewSealer returns a Sealer with a 32-byte key.
func NewSealer(key []byte) (*Sealer, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("auth: sealer: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("auth: sealer: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// Seal encrypts plain for one use, named by label (which account's TOTP
// key it is), so that a sealed value moved to another row does not open.
func (s *Sealer) Seal(plain, label []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("auth: random: %w", err)
	}
	return s.aead.Seal(nonce, nonce, plain, label), nil
}

// Open decrypts what Seal made with the same label.
func (s *Sealer) Open(sealed, label []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("auth: a sealed secret is cut short")
	}
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], label)
	if err != nil {
		return nil, errors.New("auth: a sealed secret does not open: the key file is not the one it was sealed with")
	}
	return plain, nil
}
