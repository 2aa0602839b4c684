package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"moat/internal/config"

	_ "modernc.org/sqlite" // registers the "sqlite" driver, pure Go
)

// busyTimeout is how long a writer waits for another one (the daemon and a
// CLI on the same file) before giving up with "database is locked".
const busyTimeout = 10 * time.Second

// timeFormat stores activity times: UTC, fixed width, so that the text sorts
// as the time does.
const timeFormat = "2006-01-02T15:04:05.000000000Z"

// SQLite is the Store kept in one SQLite file, for a single server. Several
// handles, in one process or several, may use the same file at once.
type SQLite struct {
	path       string
	db         *sql.DB
	migrations []string
	// writer serializes this handle's write transactions, so that they
	// queue here, in order and cancellable by their context, rather than in
	// SQLite's busy handler, which polls. Other processes still wait there.
	writer chan struct{}
	now    func() time.Time
}

// OpenSQLite opens the store at path, creating it (mode 0600, in a directory
// created 0700) if it does not exist, and migrates its schema to this
// moat's version. A store written by a newer moat is refused.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	return openSQLite(ctx, path, migrations)
}

func openSQLite(ctx context.Context, path string, migrations []string) (*SQLite, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	path = abs
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	// Create the file ourselves: SQLite would create it world-readable, and
	// gives its -wal and -shm files the mode of the database file.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
		if err := f.Close(); err != nil {
			return nil, fmt.Errorf("store: open %s: %w", path, err)
		}
	case !errors.Is(err, os.ErrExist):
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}

	db, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	s := &SQLite{
		path:       path,
		db:         db,
		migrations: migrations,
		writer:     make(chan struct{}, 1),
		now:        time.Now,
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// dsn names the file as a URI, so that any path works, with the settings
// every pooled connection needs: the driver runs the _pragma list on each
// new connection, and _txlock makes every read-write transaction BEGIN
// IMMEDIATE, so a writer takes the write lock before it reads the state it
// changes and two writers cannot interleave. Read-only transactions stay
// deferred.
//
// WAL with synchronous=FULL makes every committed transaction durable and a
// crash at any moment leave the last committed state.
func dsn(path string) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+strconv.FormatInt(busyTimeout.Milliseconds(), 10)+")")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(ON)")
	q.Set("_txlock", "immediate")
	u := url.URL{Scheme: "file", Path: path, RawQuery: q.Encode()}
	return u.String()
}

// migrate brings the schema to the newest version this binary knows, one
// migration per transaction. Another process may migrate at the same time:
// the version is read again under the write lock.
func (s *SQLite) migrate(ctx context.Context) error {
	// The common case, a current store, needs no write lock: a CLI opening
	// it does not queue behind the daemon's writes.
	var v int
	if err := s.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return fmt.Errorf("store: open %s: read schema version: %w", s.path, err)
	}
	if v == len(s.migrations) {
		return nil
	}
	for {
		done, err := s.migrateOne(ctx)
		if err != nil || done {
			return err
		}
	}
}

func (s *SQLite) migrateOne(ctx context.Context) (done bool, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("store: open %s: begin migration: %w", s.path, err)
	}
	defer tx.Rollback()
	var v int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return false, fmt.Errorf("store: open %s: read schema version: %w", s.path, err)
	}
	switch {
	case v > len(s.migrations):
		return false, fmt.Errorf("store %s has schema version %d, this moat knows up to %d: upgrade moat", s.path, v, len(s.migrations))
	case v < 0:
		return false, fmt.Errorf("store %s has schema version %d, which no moat writes: restore it from a backup", s.path, v)
	case v == len(s.migrations):
		return true, nil
	}
	if _, err := tx.ExecContext(ctx, s.migrations[v]); err != nil {
		return false, fmt.Errorf("store: open %s: migrate schema to version %d: %w", s.path, v+1, err)
	}
	// PRAGMA takes no parameters; v+1 is an int.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v+1)); err != nil {
		return false, fmt.Errorf("store: open %s: set schema version %d: %w", s.path, v+1, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("store: open %s: commit schema version %d: %w", s.path, v+1, err)
	}
	return false, nil
}

// Path is the store's file.
func (s *SQLite) Path() string { return s.path }

// Close closes the database. Committed changes are already on disk.
func (s *SQLite) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close %s: %w", s.path, err)
	}
	return nil
}

// State returns the desired state and its revision, read in one
// transaction.
func (s *SQLite) State(ctx context.Context) (config.State, int64, error) {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return config.State{}, 0, s.errorf("read state", err)
	}
	defer tx.Rollback()
	st, rev, err := readState(ctx, tx)
	if err != nil {
		return config.State{}, 0, s.errorf("read state", err)
	}
	return st, rev, nil
}

// Update changes the desired state; see Store.
func (s *SQLite) Update(ctx context.Context, actor Actor, dryRun bool, fn func(*config.State) error) (Result, error) {
	if actor.Who == "" {
		return Result{}, fmt.Errorf("store: update %s: the change has no actor: say who makes it", s.path)
	}
	release, err := s.lockWriter(ctx)
	if err != nil {
		return Result{}, s.errorf("update", err)
	}
	defer release()

	tx, err := s.db.BeginTx(ctx, nil) // BEGIN IMMEDIATE: see dsn
	if err != nil {
		return Result{}, s.errorf("update", err)
	}
	defer tx.Rollback()
	cur, rev, err := readState(ctx, tx)
	if err != nil {
		return Result{}, s.errorf("update", err)
	}
	next := cur.Clone()
	if err := fn(&next); err != nil {
		return Result{}, err
	}
	next.Normalize()
	if err := next.Validate(); err != nil {
		return Result{}, err
	}
	plan := config.Diff(cur, next)
	if dryRun || len(plan) == 0 {
		return Result{Plan: plan, Revision: rev}, nil
	}

	if err := writeState(ctx, tx, next, plan); err != nil {
		return Result{}, s.errorf("update", err)
	}
	rev++
	if _, err := tx.ExecContext(ctx, "UPDATE revision SET value = ? WHERE id = 1", rev); err != nil {
		return Result{}, s.errorf("update", fmt.Errorf("bump revision: %w", err))
	}
	at := s.now()
	for _, step := range plan {
		if err := insertEntry(ctx, tx, stepEntry(at, actor, step)); err != nil {
			return Result{}, s.errorf("update", fmt.Errorf("log activity: %w", err))
		}
	}
	if err := tx.Commit(); err != nil {
		return Result{}, s.errorf("update", fmt.Errorf("commit: %w", err))
	}
	return Result{Plan: plan, Revision: rev}, nil
}

// lockWriter waits for this handle's write turn, or for ctx.
func (s *SQLite) lockWriter(ctx context.Context) (release func(), err error) {
	select {
	case s.writer <- struct{}{}:
		return func() { <-s.writer }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// stepEntry is the activity entry for one plan step: "app gitea" with Op
// add becomes action "app.add", target "gitea"; "server" becomes
// "server.change", target "server".
func stepEntry(at time.Time, actor Actor, step config.Step) Entry {
	kind, name, _ := strings.Cut(step.Object, " ")
	if name == "" {
		name = kind
	}
	return Entry{
		At:     at,
		Who:    actor.Who,
		From:   actor.From,
		Action: kind + "." + string(step.Op),
		Target: name,
		Before: step.Before,
		After:  step.After,
		Detail: strings.Join(step.Fields, "; "),
	}
}

// InForce returns what was last put in force under name; see Store.
func (s *SQLite) InForce(ctx context.Context, name string) (json.RawMessage, error) {
	var v string
	err := s.db.QueryRowContext(ctx, "SELECT value FROM in_force WHERE name = ?", name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, s.errorf("in force", fmt.Errorf("%s: %w", name, err))
	}
	return json.RawMessage(v), nil
}

// SetInForce records what was put in force under name; see Store.
func (s *SQLite) SetInForce(ctx context.Context, name string, v json.RawMessage) error {
	if !json.Valid(v) {
		return fmt.Errorf("store: in force %s: not valid JSON", name)
	}
	_, err := s.db.ExecContext(ctx, "INSERT INTO in_force (name, value, at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value, at = excluded.at",
		name, string(v), s.now().UTC().Format(time.RFC3339Nano))
	if err != nil {
		return s.errorf("in force", fmt.Errorf("%s: %w", name, err))
	}
	return nil
}

// Record appends an event to the activity log; see Store.
func (s *SQLite) Record(ctx context.Context, e Entry) error {
	if e.Who == "" || e.Action == "" {
		return fmt.Errorf("store: record %s: an activity entry needs Who and Action (got who %q, action %q)", s.path, e.Who, e.Action)
	}
	if e.At.IsZero() {
		e.At = s.now()
	}
	if err := insertEntry(ctx, s.db, e); err != nil {
		return s.errorf("record", fmt.Errorf("%s: %w", e.Action, err))
	}
	return nil
}

// Activity returns entries newest first; see Store.
func (s *SQLite) Activity(ctx context.Context, q Query) ([]Entry, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	var (
		where []string
		args  []any
	)
	if q.Target != "" {
		where = append(where, "target = ?")
		args = append(args, q.Target)
	}
	if q.Before > 0 {
		where = append(where, "id < ?")
		args = append(args, q.Before)
	}
	if q.Who != "" {
		where = append(where, "instr(lower(who), lower(?)) > 0")
		args = append(args, q.Who)
	}
	if q.Action != "" {
		where = append(where, "(action = ? OR substr(action, 1, length(?) + 1) = ? || '.')")
		args = append(args, q.Action, q.Action, q.Action)
	}
	// at is RFC 3339 text with as many fractional digits as it needs,
	// which does not sort as text; julianday reads it as a time.
	if !q.Since.IsZero() {
		where = append(where, "julianday(at) >= julianday(?)")
		args = append(args, q.Since.UTC().Format(time.RFC3339Nano))
	}
	if !q.Until.IsZero() {
		where = append(where, "julianday(at) < julianday(?)")
		args = append(args, q.Until.UTC().Format(time.RFC3339Nano))
	}
	query := "SELECT id, at, who, from_addr, action, target, before, after, detail FROM activity"
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY id DESC LIMIT ?"
	args = append(args, limit)

	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, s.errorf("read activity", err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var (
			e             Entry
			at            string
			before, after sql.NullString
		)
		if err := rows.Scan(&e.ID, &at, &e.Who, &e.From, &e.Action, &e.Target, &before, &after, &e.Detail); err != nil {
			return nil, s.errorf("read activity", err)
		}
		if e.At, err = time.Parse(time.RFC3339Nano, at); err != nil {
			return nil, s.errorf("read activity", fmt.Errorf("entry %d: %w", e.ID, err))
		}
		if before.Valid {
			e.Before = json.RawMessage(before.String)
		}
		if after.Valid {
			e.After = json.RawMessage(after.String)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, s.errorf("read activity", err)
	}
	return out, nil
}

// SnapshotTo writes a consistent copy of the store to path (which must
// not exist), while the store keeps serving: SQLite's VACUUM INTO reads
// one snapshot of the database, and writers go on beside it.
func (s *SQLite) SnapshotTo(ctx context.Context, path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600) // not world-readable, like the store
	if err != nil {
		return fmt.Errorf("store: snapshot: %w", err)
	}
	f.Close()
	if _, err := s.db.ExecContext(ctx, "VACUUM INTO ?", path); err != nil {
		os.Remove(path)
		return s.errorf("snapshot", err)
	}
	return nil
}

// Check verifies that the store is consistent: SQLite's own integrity and
// foreign key checks, the schema version, the single-row tables, and that
// every app's domains in its JSON are exactly its rows in the domains table.
// It reports every problem it finds.
func (s *SQLite) Check(ctx context.Context) error {
	var problems []error
	bad := func(format string, args ...any) { problems = append(problems, fmt.Errorf(format, args...)) }

	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return s.errorf("check", err)
	}
	defer tx.Rollback()

	integrity, err := queryStrings(ctx, tx, "PRAGMA integrity_check")
	if err != nil {
		return s.errorf("check", fmt.Errorf("integrity_check: %w", err))
	}
	if len(integrity) != 1 || integrity[0] != "ok" {
		for _, line := range integrity {
			bad("integrity_check: %s", line)
		}
	}

	rows, err := tx.QueryContext(ctx, "PRAGMA foreign_key_check")
	if err != nil {
		return s.errorf("check", fmt.Errorf("foreign_key_check: %w", err))
	}
	for rows.Next() {
		var (
			table, parent string
			rowid         sql.NullInt64
			fkid          int64
		)
		if err := rows.Scan(&table, &rowid, &parent, &fkid); err != nil {
			rows.Close()
			return s.errorf("check", fmt.Errorf("foreign_key_check: %w", err))
		}
		bad("foreign_key_check: row %d of %s refers to a missing row of %s", rowid.Int64, table, parent)
	}
	if err := rows.Close(); err != nil {
		return s.errorf("check", fmt.Errorf("foreign_key_check: %w", err))
	}

	var version int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return s.errorf("check", fmt.Errorf("schema version: %w", err))
	}
	if version != len(s.migrations) {
		bad("schema version is %d, want %d", version, len(s.migrations))
	}
	tables := []string{"server", "revision"}
	for _, sec := range sections(&config.State{}) {
		tables = append(tables, sec.table)
	}
	for _, table := range tables {
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			return s.errorf("check", fmt.Errorf("%s: %w", table, err))
		}
		if n != 1 {
			bad("table %s has %d rows, want 1", table, n)
		}
	}

	// Domains by app from the domains table.
	owned := map[string][]string{}
	rows, err = tx.QueryContext(ctx, "SELECT domain, app FROM domains")
	if err != nil {
		return s.errorf("check", fmt.Errorf("domains: %w", err))
	}
	for rows.Next() {
		var d, app string
		if err := rows.Scan(&d, &app); err != nil {
			rows.Close()
			return s.errorf("check", fmt.Errorf("domains: %w", err))
		}
		owned[app] = append(owned[app], d)
	}
	if err := rows.Close(); err != nil {
		return s.errorf("check", fmt.Errorf("domains: %w", err))
	}

	rows, err = tx.QueryContext(ctx, "SELECT name, spec FROM apps")
	if err != nil {
		return s.errorf("check", fmt.Errorf("apps: %w", err))
	}
	for rows.Next() {
		var name, spec string
		if err := rows.Scan(&name, &spec); err != nil {
			rows.Close()
			return s.errorf("check", fmt.Errorf("apps: %w", err))
		}
		var a config.App
		if err := json.Unmarshal([]byte(spec), &a); err != nil {
			bad("app %s: spec is not an app: %v", name, err)
			continue
		}
		if a.Name != name {
			bad("app %s: spec names it %q", name, a.Name)
		}
		want := slices.Sorted(slices.Values(a.Domains))
		got := slices.Sorted(slices.Values(owned[name]))
		if !slices.Equal(want, got) {
			bad("app %s: spec lists domains [%s], the domains table [%s]", name, strings.Join(want, " "), strings.Join(got, " "))
		}
	}
	if err := rows.Close(); err != nil {
		return s.errorf("check", fmt.Errorf("apps: %w", err))
	}

	if len(problems) > 0 {
		return fmt.Errorf("store: check %s: %w", s.path, errors.Join(problems...))
	}
	return nil
}

// errorf wraps err as "store: OP PATH: err", the shape of every error the
// store itself causes.
func (s *SQLite) errorf(op string, err error) error {
	return fmt.Errorf("store: %s %s: %w", op, s.path, err)
}

// querier is what reads need: a transaction or the database.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// section is a part of the desired state kept as JSON in a single-row
// table of its name (desired, id 1).
type section struct {
	table string
	v     any
}

// sections are st's parts kept that way, each a pointer into st.
func sections(st *config.State) []section {
	return []section{{"firewall", &st.Firewall}, {"guard", &st.Guard}, {"ssh", &st.SSH}, {"mail", &st.Mail}, {"auth", &st.Auth}, {"backup", &st.Backup}}
}

// readState reads the whole desired state. Apps come out sorted by name, as
// config.State.Normalize leaves them (SQLite's BINARY collation compares
// bytes, as strings.Compare does).
func readState(ctx context.Context, q querier) (config.State, int64, error) {
	var (
		st       config.State
		settings string
		rev      int64
	)
	if err := q.QueryRowContext(ctx, "SELECT settings FROM server WHERE id = 1").Scan(&settings); err != nil {
		return st, 0, fmt.Errorf("server settings: %w", err)
	}
	if err := json.Unmarshal([]byte(settings), &st.Server); err != nil {
		return st, 0, fmt.Errorf("server settings: %w", err)
	}
	for _, sec := range sections(&st) {
		var desired string
		if err := q.QueryRowContext(ctx, "SELECT desired FROM "+sec.table+" WHERE id = 1").Scan(&desired); err != nil {
			return st, 0, fmt.Errorf("%s: %w", sec.table, err)
		}
		if err := json.Unmarshal([]byte(desired), sec.v); err != nil {
			return st, 0, fmt.Errorf("%s: %w", sec.table, err)
		}
	}
	rows, err := q.QueryContext(ctx, "SELECT name, spec FROM apps ORDER BY name")
	if err != nil {
		return st, 0, fmt.Errorf("apps: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name, spec string
		if err := rows.Scan(&name, &spec); err != nil {
			return st, 0, fmt.Errorf("apps: %w", err)
		}
		var a config.App
		if err := json.Unmarshal([]byte(spec), &a); err != nil {
			return st, 0, fmt.Errorf("app %s: %w", name, err)
		}
		st.Apps = append(st.Apps, a)
	}
	if err := rows.Err(); err != nil {
		return st, 0, fmt.Errorf("apps: %w", err)
	}
	if err := q.QueryRowContext(ctx, "SELECT value FROM revision WHERE id = 1").Scan(&rev); err != nil {
		return st, 0, fmt.Errorf("revision: %w", err)
	}
	return st, rev, nil
}

// writeState applies plan, the difference between the stored state and
// next, to the tables. Domains leave their old apps before any app takes
// new ones, so that a domain moving from one app to another in one update
// does not collide with itself.
func writeState(ctx context.Context, tx *sql.Tx, next config.State, plan config.Plan) error {
	type appStep struct {
		op  config.Op
		app config.App // from next; zero for a remove
	}
	var apps []appStep
	names := map[string]bool{}
	for _, step := range plan {
		kind, name, _ := strings.Cut(step.Object, " ")
		switch kind {
		case "server":
			settings, err := json.Marshal(next.Server)
			if err != nil {
				return fmt.Errorf("server settings: %w", err)
			}
			if _, err := tx.ExecContext(ctx, "UPDATE server SET settings = ? WHERE id = 1", string(settings)); err != nil {
				return fmt.Errorf("server settings: %w", err)
			}
		case "firewall", "guard", "ssh", "mail", "auth", "backup":
			for _, sec := range sections(&next) {
				if sec.table != kind {
					continue
				}
				desired, err := json.Marshal(sec.v)
				if err != nil {
					return fmt.Errorf("%s: %w", kind, err)
				}
				if _, err := tx.ExecContext(ctx, "UPDATE "+sec.table+" SET desired = ? WHERE id = 1", string(desired)); err != nil {
					return fmt.Errorf("%s: %w", kind, err)
				}
			}
		case "app":
			as := appStep{op: step.Op}
			if step.Op != config.Remove {
				a, ok := next.App(name)
				if !ok {
					return fmt.Errorf("plan step %s %s: no such app in the new state", step.Op, step.Object)
				}
				as.app = *a
			} else {
				as.app.Name = name
			}
			if names[name] {
				return fmt.Errorf("plan has two steps for app %s", name)
			}
			names[name] = true
			apps = append(apps, as)
		default:
			return fmt.Errorf("plan step %s %s: unknown object", step.Op, step.Object)
		}
	}

	for _, as := range apps {
		var err error
		switch as.op {
		case config.Change:
			_, err = tx.ExecContext(ctx, "DELETE FROM domains WHERE app = ?", as.app.Name)
		case config.Remove:
			_, err = tx.ExecContext(ctx, "DELETE FROM apps WHERE name = ?", as.app.Name) // domains cascade
		}
		if err != nil {
			return fmt.Errorf("%s app %s: %w", as.op, as.app.Name, err)
		}
	}
	for _, as := range apps {
		if as.op == config.Remove {
			continue
		}
		spec, err := json.Marshal(as.app)
		if err != nil {
			return fmt.Errorf("%s app %s: %w", as.op, as.app.Name, err)
		}
		if as.op == config.Add {
			_, err = tx.ExecContext(ctx, "INSERT INTO apps (name, spec) VALUES (?, ?)", as.app.Name, string(spec))
		} else {
			_, err = tx.ExecContext(ctx, "UPDATE apps SET spec = ? WHERE name = ?", string(spec), as.app.Name)
		}
		if err != nil {
			return fmt.Errorf("%s app %s: %w", as.op, as.app.Name, err)
		}
		for _, d := range as.app.Domains {
			if _, err := tx.ExecContext(ctx, "INSERT INTO domains (domain, app) VALUES (?, ?)", d, as.app.Name); err != nil {
				return fmt.Errorf("%s app %s: domain %s: %w", as.op, as.app.Name, d, err)
			}
		}
	}
	return nil
}

func insertEntry(ctx context.Context, x execer, e Entry) error {
	for _, j := range []struct {
		name string
		v    json.RawMessage
	}{{"before", e.Before}, {"after", e.After}} {
		if len(j.v) > 0 && !json.Valid(j.v) {
			return fmt.Errorf("%s %s: %s is not valid JSON", e.Action, e.Target, j.name)
		}
	}
	_, err := x.ExecContext(ctx,
		"INSERT INTO activity (at, who, from_addr, action, target, before, after, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
		e.At.UTC().Format(timeFormat), e.Who, e.From, e.Action, e.Target, nullJSON(e.Before), nullJSON(e.After), e.Detail)
	return err
}

// nullJSON stores empty JSON as NULL and the rest as text (a []byte would be
// a BLOB, which the STRICT TEXT column refuses).
func nullJSON(b json.RawMessage) any {
	if len(b) == 0 {
		return nil
	}
	return string(b)
}

func queryStrings(ctx context.Context, q querier, query string) ([]string, error) {
	rows, err := q.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

var _ Store = (*SQLite)(nil)

// AddAudit keeps an audit; see Store.
func (s *SQLite) AddAudit(ctx context.Context, a Audit) error {
	_, err := s.write(ctx, "INSERT INTO audits (at, score, report) VALUES (?, ?, ?)", a.At.UTC().Format(time.RFC3339Nano), a.Score, string(a.Report))
	if err == nil {
		_, err = s.write(ctx, "DELETE FROM audits WHERE id <= (SELECT max(id) FROM audits) - ?", KeepAudits)
	}
	if err != nil {
		return s.errorf("audit", err)
	}
	return nil
}

// Audits returns the newest audits; see Store.
func (s *SQLite) Audits(ctx context.Context, limit int) ([]Audit, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT at, score, report FROM audits ORDER BY id DESC LIMIT ?", limit)
	if err != nil {
		return nil, s.errorf("audits", err)
	}
	defer rows.Close()
	var out []Audit
	for rows.Next() {
		var (
			a      Audit
			at     string
			report string
		)
		if err := rows.Scan(&at, &a.Score, &report); err != nil {
			return nil, s.errorf("audits", err)
		}
		a.At, _ = time.Parse(time.RFC3339Nano, at)
		a.Report = json.RawMessage(report)
		out = append(out, a)
	}
	return out, rows.Err()
}

// AddRemoved keeps an app removed within its grace; see Store.
func (s *SQLite) AddRemoved(ctx context.Context, r Removed) error {
	spec, err := json.Marshal(r.App)
	if err != nil {
		return fmt.Errorf("store: removed app %s: %w", r.App.Name, err)
	}
	_, err = s.write(ctx, "INSERT INTO removed_apps (name, spec, repository, snapshot, removed, expires) VALUES (?, ?, ?, ?, ?, ?) "+
		"ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, repository = excluded.repository, snapshot = excluded.snapshot, removed = excluded.removed, expires = excluded.expires",
		r.App.Name, string(spec), r.Repository, r.Snapshot, r.At.UTC().Format(time.RFC3339Nano), r.Expires.UTC().Format(time.RFC3339Nano))
	if err != nil {
		return s.errorf("removed app", err)
	}
	return nil
}

func scanRemoved(scan func(...any) error) (Removed, error) {
	var (
		r                   Removed
		spec, removed, exps string
	)
	if err := scan(&spec, &r.Repository, &r.Snapshot, &removed, &exps); err != nil {
		return r, err
	}
	if err := json.Unmarshal([]byte(spec), &r.App); err != nil {
		return r, err
	}
	var err error
	if r.At, err = time.Parse(time.RFC3339Nano, removed); err == nil {
		r.Expires, err = time.Parse(time.RFC3339Nano, exps)
	}
	return r, err
}

// Removed lists the apps removed within their grace; see Store.
func (s *SQLite) Removed(ctx context.Context) ([]Removed, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT spec, repository, snapshot, removed, expires FROM removed_apps ORDER BY name")
	if err != nil {
		return nil, s.errorf("removed apps", err)
	}
	defer rows.Close()
	var out []Removed
	for rows.Next() {
		r, err := scanRemoved(rows.Scan)
		if err != nil {
			return nil, s.errorf("removed apps", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// TakeRemoved deletes a removed app's record and returns it; see Store.
func (s *SQLite) TakeRemoved(ctx context.Context, name string) (Removed, error) {
	release, err := s.lockWriter(ctx)
	if err != nil {
		return Removed{}, err
	}
	defer release()
	r, err := scanRemoved(s.db.QueryRowContext(ctx, "DELETE FROM removed_apps WHERE name = ? RETURNING spec, repository, snapshot, removed, expires", name).Scan)
	if errors.Is(err, sql.ErrNoRows) {
		return r, fmt.Errorf("%s: %w", name, ErrNoRemoved)
	}
	if err != nil {
		return r, s.errorf("take removed app", err)
	}
	return r, nil
}
