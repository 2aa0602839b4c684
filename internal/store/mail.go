package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"moat/internal/mail"
)

// The mail layer's tables: the queue, the apps' credential hashes and the
// DKIM keys. None of it is desired state, so it changes outside Update; a
// message is durable once Enqueue returns, since every commit is synced
// (see dsn).

var _ mail.Store = (*SQLite)(nil)

const queueColumns = "id, app, sender, recipients, size, message_id, accepted, state, attempts, next_attempt, last_error"

// Enqueue keeps a new message; see mail.Spool.
func (s *SQLite) Enqueue(ctx context.Context, m mail.Message) error {
	rcpts, err := json.Marshal(m.To)
	if err != nil {
		return fmt.Errorf("store: enqueue %s: %w", m.ID, err)
	}
	_, err = s.write(ctx, "INSERT INTO mail_queue ("+queueColumns+", data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		m.ID, m.App, m.From, string(rcpts), m.Size, m.MessageID, m.Accepted.UTC().Format(timeFormat), string(m.State), m.Attempts,
		m.NextAttempt.UTC().Format(timeFormat), m.LastError, m.Data)
	if err != nil {
		if full(err) {
			return fmt.Errorf("store: enqueue %s: %w (%v)", m.ID, mail.ErrNoSpace, err)
		}
		return s.errorf("enqueue", fmt.Errorf("%s: %w", m.ID, err))
	}
	return nil
}

// write runs one write statement in this handle's write turn: writers
// queue here rather than poll in SQLite's busy handler, which stretches
// the slowest of a burst of messages by hundreds of milliseconds.
func (s *SQLite) write(ctx context.Context, query string, args ...any) (sql.Result, error) {
	release, err := s.lockWriter(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	return s.db.ExecContext(ctx, query, args...)
}

// stmt is one statement of a writeTx.
type stmt struct {
	query string
	args  []any
}

// writeTx runs statements in one transaction, in this handle's write
// turn, and says how many rows they changed in all; what names the work
// in an error.
func (s *SQLite) writeTx(ctx context.Context, what string, stmts ...stmt) (int64, error) {
	release, err := s.lockWriter(ctx)
	if err != nil {
		return 0, err
	}
	defer release()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, s.errorf(what, err)
	}
	defer tx.Rollback()
	n := int64(0)
	for _, st := range stmts {
		res, err := tx.ExecContext(ctx, st.query, st.args...)
		if err != nil {
			return 0, s.errorf(what, err)
		}
		m, _ := res.RowsAffected()
		n += m
	}
	if err := tx.Commit(); err != nil {
		return 0, s.errorf(what, err)
	}
	return n, nil
}

// full reports whether err is a full disk.
func full(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_FULL:
			return true
		case sqlite3.SQLITE_IOERR:
			return strings.Contains(strings.ToLower(se.Error()), "space")
		}
	}
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// Due returns the messages whose delivery is due; see mail.Spool.
func (s *SQLite) Due(ctx context.Context, now time.Time, limit int) ([]mail.Message, error) {
	return s.messages(ctx, "due", "WHERE state = 'queued' AND next_attempt <= ? ORDER BY next_attempt, accepted LIMIT ?", now.UTC().Format(timeFormat), limit)
}

// List returns the messages not final yet; see mail.Spool.
func (s *SQLite) List(ctx context.Context) ([]mail.Message, error) {
	return s.messages(ctx, "queue", "WHERE state IN ('queued', 'sending') ORDER BY accepted, id")
}

// Sent returns the messages accepted since since; see mail.Spool.
func (s *SQLite) Sent(ctx context.Context, since time.Time) ([]mail.Message, error) {
	return s.messages(ctx, "sent", "WHERE accepted >= ? ORDER BY accepted", since.UTC().Format(timeFormat))
}

// Load returns a message with its text; see mail.Spool.
func (s *SQLite) Load(ctx context.Context, id string) (mail.Message, error) {
	row := s.db.QueryRowContext(ctx, "SELECT "+queueColumns+", data FROM mail_queue WHERE id = ?", id)
	var data []byte
	m, err := scanMessage(row.Scan, &data)
	if errors.Is(err, sql.ErrNoRows) {
		return mail.Message{}, fmt.Errorf("%s: %w", id, mail.ErrNotFound)
	}
	if err != nil {
		return mail.Message{}, s.errorf("load message", fmt.Errorf("%s: %w", id, err))
	}
	m.Data = data
	return m, nil
}

// Save stores how far a message got; see mail.Spool.
func (s *SQLite) Save(ctx context.Context, m mail.Message) error {
	rcpts, err := json.Marshal(m.To)
	if err != nil {
		return fmt.Errorf("store: save message %s: %w", m.ID, err)
	}
	q := "UPDATE mail_queue SET state = ?, attempts = ?, next_attempt = ?, recipients = ?, last_error = ? WHERE id = ?"
	if m.State.Final() {
		q = "UPDATE mail_queue SET state = ?, attempts = ?, next_attempt = ?, recipients = ?, last_error = ?, data = NULL WHERE id = ?"
	}
	res, err := s.write(ctx, q, string(m.State), m.Attempts, m.NextAttempt.UTC().Format(timeFormat), string(rcpts), m.LastError, m.ID)
	if err != nil {
		return s.errorf("save message", fmt.Errorf("%s: %w", m.ID, err))
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%s: %w", m.ID, mail.ErrNotFound)
	}
	return nil
}

// Retry makes a waiting message due at at; see mail.Spool.
func (s *SQLite) Retry(ctx context.Context, id string, at time.Time) (bool, error) {
	res, err := s.write(ctx, "UPDATE mail_queue SET next_attempt = ? WHERE id = ? AND state = 'queued'", at.UTC().Format(timeFormat), id)
	if err != nil {
		return false, s.errorf("retry message", fmt.Errorf("%s: %w", id, err))
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// Delete removes a message; see mail.Spool.
func (s *SQLite) Delete(ctx context.Context, id string) error {
	res, err := s.write(ctx, "DELETE FROM mail_queue WHERE id = ? AND state = 'queued'", id)
	if err != nil {
		return s.errorf("delete message", fmt.Errorf("%s: %w", id, err))
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%s: %w", id, mail.ErrNotFound)
	}
	return nil
}

// Forget removes the final messages accepted before before.
func (s *SQLite) Forget(ctx context.Context, before time.Time) error {
	if _, err := s.write(ctx, "DELETE FROM mail_queue WHERE state IN ('delivered', 'bounced') AND accepted < ?", before.UTC().Format(timeFormat)); err != nil {
		return s.errorf("forget messages", err)
	}
	return nil
}

func (s *SQLite) messages(ctx context.Context, what, where string, args ...any) ([]mail.Message, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT "+queueColumns+" FROM mail_queue "+where, args...)
	if err != nil {
		return nil, s.errorf(what, err)
	}
	defer rows.Close()
	var out []mail.Message
	for rows.Next() {
		m, err := scanMessage(rows.Scan)
		if err != nil {
			return nil, s.errorf(what, err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, s.errorf(what, err)
	}
	return out, nil
}

func scanMessage(scan func(...any) error, extra ...any) (mail.Message, error) {
	var (
		m                mail.Message
		rcpts, acc, next string
		state            string
	)
	dest := append([]any{&m.ID, &m.App, &m.From, &rcpts, &m.Size, &m.MessageID, &acc, &state, &m.Attempts, &next, &m.LastError}, extra...)
	if err := scan(dest...); err != nil {
		return m, err
	}
	m.State = mail.State(state)
	if err := json.Unmarshal([]byte(rcpts), &m.To); err != nil {
		return m, fmt.Errorf("message %s: recipients: %w", m.ID, err)
	}
	var err error
	if m.Accepted, err = time.Parse(time.RFC3339Nano, acc); err != nil {
		return m, fmt.Errorf("message %s: %w", m.ID, err)
	}
	if m.NextAttempt, err = time.Parse(time.RFC3339Nano, next); err != nil {
		return m, fmt.Errorf("message %s: %w", m.ID, err)
	}
	return m, nil
}

// Credential returns an app's SMTP password hash; see mail.Credentials.
func (s *SQLite) Credential(ctx context.Context, app string) (string, error) {
	var h string
	err := s.db.QueryRowContext(ctx, "SELECT hash FROM mail_credentials WHERE app = ?", app).Scan(&h)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", s.errorf("mail credentials", fmt.Errorf("%s: %w", app, err))
	}
	return h, nil
}

// SetCredential replaces an app's SMTP password hash.
func (s *SQLite) SetCredential(ctx context.Context, app, hash string) error {
	_, err := s.write(ctx, "INSERT INTO mail_credentials (app, hash, created) VALUES (?, ?, ?) ON CONFLICT (app) DO UPDATE SET hash = excluded.hash, created = excluded.created",
		app, hash, s.now().UTC().Format(timeFormat))
	if err != nil {
		return s.errorf("mail credentials", fmt.Errorf("%s: %w", app, err))
	}
	return nil
}

// DeleteCredential forgets an app's SMTP credentials.
func (s *SQLite) DeleteCredential(ctx context.Context, app string) error {
	if _, err := s.write(ctx, "DELETE FROM mail_credentials WHERE app = ?", app); err != nil {
		return s.errorf("mail credentials", fmt.Errorf("%s: %w", app, err))
	}
	return nil
}

// DKIMKeys returns the DKIM keys by selector.
func (s *SQLite) DKIMKeys(ctx context.Context) (map[string][]byte, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT selector, key FROM mail_dkim ORDER BY selector")
	if err != nil {
		return nil, s.errorf("dkim keys", err)
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var sel, key string
		if err := rows.Scan(&sel, &key); err != nil {
			return nil, s.errorf("dkim keys", err)
		}
		out[sel] = []byte(key)
	}
	return out, rows.Err()
}

// SaveDKIMKeys adds DKIM keys in one transaction.
func (s *SQLite) SaveDKIMKeys(ctx context.Context, keys map[string][]byte) error {
	release, err := s.lockWriter(ctx)
	if err != nil {
		return s.errorf("dkim keys", err)
	}
	defer release()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return s.errorf("dkim keys", err)
	}
	defer tx.Rollback()
	for sel, key := range keys {
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM mail_dkim WHERE selector = ?", sel).Scan(&n); err != nil {
			return s.errorf("dkim keys", err)
		}
		if n > 0 {
			return fmt.Errorf("store: dkim key %s: %w", sel, mail.ErrExists)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO mail_dkim (selector, key, created) VALUES (?, ?, ?)", sel, string(key), s.now().UTC().Format(timeFormat)); err != nil {
			return s.errorf("dkim keys", fmt.Errorf("%s: %w", sel, err))
		}
	}
	if err := tx.Commit(); err != nil {
		return s.errorf("dkim keys", err)
	}
	return nil
}
