// Package store is moat's one source of truth: the desired state (a
// config.State with a revision number) and an append-only activity log of
// who changed what, and of events worth remembering (a failed certificate
// renewal, a login).
//
// Every change goes through Update, which validates the new state, writes it
// and logs one activity entry per plan step in a single transaction, so the
// state and its history never disagree. SQLite in the data dir is the
// default; a PostgreSQL implementation of Store is meant for fleets.
//
// The store is not for what the host actually looks like (observers read
// that back), nor for anything the reconcilers do with the state: it keeps
// desired state and says nothing about whether the host matches it. The
// YAML file is a way in and out (config.Parse, config.Marshal), not a second
// copy kept here.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"moat/internal/config"
)

// Actor says who made a change and from where, for the activity log.
type Actor struct {
	// Who is the person or process, like "root via control socket",
	// "uid 1000" or "admin@example.com".
	Who string
	// From is where the request came from: "unix" for the control socket,
	// or the client's IP address.
	From string
}

// Entry is one line of the activity log.
type Entry struct {
	// ID orders entries; it only grows. Record ignores it.
	ID int64 `json:"id"`
	// At is when it happened, in UTC, with sub-second precision. Record
	// fills in the current time when it is zero.
	At time.Time `json:"at"`
	// Who and From are the Actor that caused it.
	Who  string `json:"who"`
	From string `json:"from"`
	// Action is what happened, as "object.verb": "app.add", "app.change",
	// "app.remove", "server.change" for state changes, or an event like
	// "cert.renew_failed" or "login.ok".
	Action string `json:"action"`
	// Target is what it happened to: an app name, "server", a domain.
	Target string `json:"target"`
	// Before and After are the object as JSON around a change; empty for an
	// add (Before), a remove (After) and most events.
	Before json.RawMessage `json:"before,omitempty"`
	After  json.RawMessage `json:"after,omitempty"`
	// Detail is the change for a person ("upstream: http://a -> http://b;
	// ...") or the event's message.
	Detail string `json:"detail,omitempty"`
}

// Query selects activity entries.
type Query struct {
	// Target keeps only entries about this target; empty keeps all.
	Target string
	// Limit is the most entries returned; zero or less means 100.
	Limit int
	// Before keeps only entries with an ID below it, to page back through
	// the log; zero or less starts at the newest.
	Before int64
	// Who keeps entries whose actor contains it (an email, a token's
	// name, "guard").
	Who string
	// Action keeps entries of this action ("firewall.apply") or of
	// every action on this object ("firewall").
	Action string
	// Since and Until keep entries at or after, and before, these times;
	// zero leaves that end open.
	Since, Until time.Time
}

// Removed is an app removed within its grace period: the app as it was,
// and the backup of its data taken before it went (no snapshot when it
// had no data).
type Removed struct {
	App        config.App `json:"app"`
	Repository string     `json:"repository,omitempty"`
	Snapshot   string     `json:"snapshot,omitempty"`
	At         time.Time  `json:"removed"`
	Expires    time.Time  `json:"expires"`
}

// Audit is one audit of the host, as kept.
type Audit struct {
	At     time.Time       `json:"at"`
	Score  int             `json:"score"`
	Report json.RawMessage `json:"report"`
}

// KeepAudits is how many audits the history keeps.
const KeepAudits = 500

// ErrNoRemoved is TakeRemoved's answer for a name with no removal kept.
var ErrNoRemoved = errors.New("no removed app by that name is kept")

// DefaultLimit is the number of activity entries returned when Query.Limit
// is not set.
const DefaultLimit = 100

// Result is what an Update did, or would do in a dry run.
type Result struct {
	// Plan lists the changes, one step per object; empty when the state
	// was already as asked.
	Plan config.Plan
	// Revision is the state's revision after the update; for a dry run or
	// an empty plan, the current revision the plan was made against.
	Revision int64
}

// Store keeps the desired state and the activity log. Implementations are
// safe for concurrent use, also by several processes on the same data.
type Store interface {
	// State returns the desired state and its revision (0 for a new
	// store), read consistently.
	State(ctx context.Context) (config.State, int64, error)

	// Update runs fn on a copy of the current state inside one write
	// transaction; the result is normalized and validated. If it is valid
	// and differs from the current state, it is written, the revision goes
	// up by one and one activity entry per plan step is appended, all or
	// nothing. With dryRun nothing is written, but the plan is returned.
	//
	// An error from fn or from validation changes nothing and is returned
	// as is, so errors.As finds a *config.FieldError in it. fn must not
	// block or use the store: other writers wait while it runs.
	Update(ctx context.Context, actor Actor, dryRun bool, fn func(*config.State) error) (Result, error)

	// Record appends an event that is not a state change (a certificate
	// renewal failure, a login) to the activity log.
	Record(ctx context.Context, e Entry) error

	// Activity returns entries, newest first.
	Activity(ctx context.Context, q Query) ([]Entry, error)

	// InForce returns what a reconciler last put in force on the host
	// under name (the firewall's rules), or nil if nothing was;
	// SetInForce records it. A restart puts back what was in force,
	// which may differ from the desired state (a change that was rolled
	// back for want of a confirmation).
	InForce(ctx context.Context, name string) (json.RawMessage, error)
	SetInForce(ctx context.Context, name string, v json.RawMessage) error

	// AddRemoved keeps an app removed within its grace period, in place
	// of an earlier removal of the same name; Removed lists them by
	// name; TakeRemoved deletes one and returns it (ErrNoRemoved when
	// there is none).
	AddRemoved(ctx context.Context, r Removed) error
	// AddAudit keeps an audit's report (JSON) with its score, the
	// newest KeepAudits only; Audits returns the newest, newest first.
	AddAudit(ctx context.Context, a Audit) error
	Audits(ctx context.Context, limit int) ([]Audit, error)
	Removed(ctx context.Context) ([]Removed, error)
	TakeRemoved(ctx context.Context, name string) (Removed, error)

	// Close releases the store. Other methods must not be called after it.
	Close() error
}
