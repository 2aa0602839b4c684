package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"moat/internal/auth"
)

const passkeyColumns = "id, account, name, public_key, sign_count, aaguid, transports, flags, attestation_type, attestation_format, clone_warning, created, last_used"

// AddPasskey keeps a passkey; see auth.Store.
func (s *SQLite) AddPasskey(ctx context.Context, p auth.Passkey) error {
	_, err := s.write(ctx, "INSERT INTO passkeys ("+passkeyColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		p.ID, p.Account, p.Name, p.PublicKey, int64(p.SignCount), nonNil(p.AAGUID), strings.Join(p.Transports, ","), int64(p.Flags),
		p.AttestationType, p.AttestationFormat, p.CloneWarning, stamp(p.Created), stamp(p.LastUsed))
	if err != nil {
		if strings.Contains(err.Error(), "UNIQUE constraint failed") || strings.Contains(err.Error(), "PRIMARY KEY") {
			return fmt.Errorf("passkey: %w", auth.ErrExists)
		}
		return s.errorf("add passkey", err)
	}
	return nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func scanPasskey(scan func(...any) error) (auth.Passkey, error) {
	var (
		p                   auth.Passkey
		count, flags        int64
		transports, c, last string
	)
	if err := scan(&p.ID, &p.Account, &p.Name, &p.PublicKey, &count, &p.AAGUID, &transports, &flags,
		&p.AttestationType, &p.AttestationFormat, &p.CloneWarning, &c, &last); err != nil {
		return p, err
	}
	p.SignCount, p.Flags = uint32(count), byte(flags)
	if transports != "" {
		p.Transports = strings.Split(transports, ",")
	}
	var err error
	if p.Created, err = unstamp(c); err != nil {
		return p, err
	}
	p.LastUsed, err = unstamp(last)
	return p, err
}

// Passkeys lists an account's passkeys; see auth.Store.
func (s *SQLite) Passkeys(ctx context.Context, account int64) ([]auth.Passkey, error) {
	return queryAll(ctx, s, "list passkeys", scanPasskey, "SELECT "+passkeyColumns+" FROM passkeys WHERE account = ? ORDER BY created, rowid", account)
}

// UsePasskey records a passkey's use; see auth.Store.
func (s *SQLite) UsePasskey(ctx context.Context, p auth.Passkey) error {
	res, err := s.write(ctx, "UPDATE passkeys SET sign_count = ?, flags = ?, clone_warning = ?, last_used = ? WHERE id = ? AND account = ?",
		int64(p.SignCount), int64(p.Flags), p.CloneWarning, stamp(p.LastUsed), p.ID, p.Account)
	if err != nil {
		return s.errorf("use passkey", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("passkey: %w", auth.ErrNotFound)
	}
	return nil
}

// RemovePasskey removes a passkey; see auth.Store.
func (s *SQLite) RemovePasskey(ctx context.Context, account int64, id []byte) error {
	res, err := s.write(ctx, "DELETE FROM passkeys WHERE account = ? AND id = ?", account, id)
	if err != nil {
		return s.errorf("remove passkey", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("passkey: %w", auth.ErrNotFound)
	}
	return nil
}

// PutCeremony keeps a ceremony; see auth.Store.
func (s *SQLite) PutCeremony(ctx context.Context, owner string, data []byte, expires time.Time) error {
	_, err := s.writeTx(ctx, "keep passkey ceremony",
		stmt{"DELETE FROM passkey_ceremonies WHERE expires <= ?", []any{stamp(s.now())}},
		stmt{"INSERT INTO passkey_ceremonies (owner, data, expires) VALUES (?, ?, ?) ON CONFLICT (owner) DO UPDATE SET data = excluded.data, expires = excluded.expires", []any{owner, data, stamp(expires)}})
	return err
}

// TakeCeremony spends a ceremony; see auth.Store.
func (s *SQLite) TakeCeremony(ctx context.Context, owner string, now time.Time) ([]byte, error) {
	release, err := s.lockWriter(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	var data []byte
	err = s.db.QueryRowContext(ctx, "DELETE FROM passkey_ceremonies WHERE owner = ? AND expires > ? RETURNING data", owner, stamp(now)).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("passkey ceremony: %w", auth.ErrNotFound)
	}
	if err != nil {
		return nil, s.errorf("take passkey ceremony", err)
	}
	return data, nil
}
