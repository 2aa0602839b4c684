package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"moat/internal/guard"
)

// The guard's ledger: its bans and its sources' read positions. Bans are
// not desired state (the guard decides them), so they change outside
// Update; the activity log hears of them from the guard.

var _ guard.Ledger = (*SQLite)(nil)

// SaveBan keeps b, replacing any ban of the same prefix.
func (s *SQLite) SaveBan(ctx context.Context, b guard.Ban) error {
	v, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("store: ban %s: %w", b.Prefix, err)
	}
	expires := ""
	if !b.Expires.IsZero() {
		expires = b.Expires.UTC().Format(time.RFC3339Nano)
	}
	_, err = s.db.ExecContext(ctx, "INSERT INTO bans (prefix, expires, ban) VALUES (?, ?, ?) ON CONFLICT (prefix) DO UPDATE SET expires = excluded.expires, ban = excluded.ban",
		b.Prefix.String(), expires, string(v))
	if err != nil {
		return s.errorf("ban", fmt.Errorf("%s: %w", b.Prefix, err))
	}
	return nil
}

// DeleteBan forgets the ban of p; forgetting one that is not kept is no
// error.
func (s *SQLite) DeleteBan(ctx context.Context, p netip.Prefix) error {
	if _, err := s.db.ExecContext(ctx, "DELETE FROM bans WHERE prefix = ?", p.String()); err != nil {
		return s.errorf("unban", fmt.Errorf("%s: %w", p, err))
	}
	return nil
}

// Bans returns every kept ban, expired ones included (the guard forgets
// those).
func (s *SQLite) Bans(ctx context.Context) ([]guard.Ban, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT prefix, ban FROM bans ORDER BY prefix")
	if err != nil {
		return nil, s.errorf("bans", err)
	}
	defer rows.Close()
	var out []guard.Ban
	for rows.Next() {
		var p, v string
		if err := rows.Scan(&p, &v); err != nil {
			return nil, s.errorf("bans", err)
		}
		var b guard.Ban
		if err := json.Unmarshal([]byte(v), &b); err != nil {
			return nil, fmt.Errorf("store: ban %s: %w", p, err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, s.errorf("bans", err)
	}
	return out, nil
}

// SavePosition records how far source has been read.
func (s *SQLite) SavePosition(ctx context.Context, source, pos string) error {
	_, err := s.db.ExecContext(ctx, "INSERT INTO guard_positions (source, position) VALUES (?, ?) ON CONFLICT (source) DO UPDATE SET position = excluded.position", source, pos)
	if err != nil {
		return s.errorf("guard position", fmt.Errorf("%s: %w", source, err))
	}
	return nil
}

// Position returns how far source has been read, or "" when it never was.
func (s *SQLite) Position(ctx context.Context, source string) (string, error) {
	var pos string
	err := s.db.QueryRowContext(ctx, "SELECT position FROM guard_positions WHERE source = ?", source).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", s.errorf("guard position", fmt.Errorf("%s: %w", source, err))
	}
	return pos, nil
}
