package mail

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"time"
)

// State is where a message is in the queue.
type State string

// The states of a message. Queued and Sending are the queue; Delivered
// and Bounced are kept without the message, for the hourly quota and for
// people, then forgotten.
const (
	Queued    State = "queued"
	Sending   State = "sending"
	Delivered State = "delivered"
	Bounced   State = "bounced"
)

// Final reports whether nothing more will be done with a message.
func (s State) Final() bool { return s == Delivered || s == Bounced }

// Message is one accepted message.
type Message struct {
	// ID names the message in the queue: 16 hex digits.
	ID string `json:"id"`
	// App is the app that sent it, or "moat" for moat's own mail.
	App string `json:"app"`
	// From is the envelope sender; empty for a bounce, which is never
	// bounced back.
	From string `json:"from"`
	// To are the recipients, each with how far it got.
	To []Recipient `json:"to"`
	// Size is the message's size in bytes.
	Size int64 `json:"size"`
	// MessageID is the message's Message-ID header, for people.
	MessageID string `json:"message_id,omitempty"`
	// Accepted is when the relay answered 250.
	Accepted time.Time `json:"accepted"`
	// State is where it is; Attempts how many deliveries were tried.
	State    State `json:"state"`
	Attempts int   `json:"attempts"`
	// NextAttempt is when delivery is tried next.
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// LastError is why the last attempt did not deliver every recipient.
	LastError string `json:"last_error,omitempty"`
	// Data is the message itself, headers and body with CRLF line
	// endings; only loaded for delivery.
	Data []byte `json:"-"`
}

// Recipient is one recipient of a message.
type Recipient struct {
	Addr string `json:"addr"`
	// Done is set once the recipient's server accepted the message, or
	// refused it for good (then Error says why).
	Done  bool   `json:"done,omitempty"`
	Error string `json:"error,omitempty"`
}

// Pending lists the recipients not done yet.
func (m Message) Pending() []string {
	var out []string
	for _, r := range m.To {
		if !r.Done {
			out = append(out, r.Addr)
		}
	}
	return out
}

// Failed lists the recipients refused for good.
func (m Message) Failed() []Recipient {
	var out []Recipient
	for _, r := range m.To {
		if r.Done && r.Error != "" {
			out = append(out, r)
		}
	}
	return out
}

// Spool keeps the queue. Enqueue must make the message durable (written
// and synced) before it returns: the relay answers 250 only then.
// Implementations are safe for concurrent use.
type Spool interface {
	// Enqueue stores a new message with its Data, all or nothing. A
	// full disk is an error that errors.Is(err, ErrNoSpace) finds.
	Enqueue(ctx context.Context, m Message) error
	// Due returns up to limit messages in state Queued whose NextAttempt
	// is at or before now, oldest first, without their Data.
	Due(ctx context.Context, now time.Time, limit int) ([]Message, error)
	// Load returns a message with its Data; ErrNotFound if there is none.
	Load(ctx context.Context, id string) (Message, error)
	// Save stores a message's state, attempts, next attempt, recipients
	// and last error. Saving a final state drops the message's Data.
	Save(ctx context.Context, m Message) error
	// Retry makes a message due at at, if it is still waiting in the
	// queue (Queued); it reports whether it was. Unlike Save, it cannot
	// undo a delivery that finished meanwhile.
	Retry(ctx context.Context, id string, at time.Time) (bool, error)
	// List returns the messages not final yet, oldest first, without
	// their Data.
	List(ctx context.Context) ([]Message, error)
	// Delete removes a message that waits in the queue (Queued);
	// ErrNotFound if there is none, as when it is being delivered.
	Delete(ctx context.Context, id string) error
	// Sent returns every message accepted since since, final or not,
	// without their Data, for the hourly quota after a restart.
	Sent(ctx context.Context, since time.Time) ([]Message, error)
	// Forget removes the final messages accepted before before.
	Forget(ctx context.Context, before time.Time) error
}

// Credentials keeps the apps' SMTP password hashes.
type Credentials interface {
	// Credential returns the app's hash, "" when it has none.
	Credential(ctx context.Context, app string) (string, error)
	// SetCredential replaces the app's hash.
	SetCredential(ctx context.Context, app, hash string) error
	// DeleteCredential forgets the app's credentials.
	DeleteCredential(ctx context.Context, app string) error
}

// Keys keeps the DKIM signing keys, PEM by selector.
type Keys interface {
	DKIMKeys(ctx context.Context) (map[string][]byte, error)
	// SaveDKIMKeys adds keys, all or nothing; an existing selector is
	// not replaced (ErrExists).
	SaveDKIMKeys(ctx context.Context, keys map[string][]byte) error
}

// Store is all the mail layer keeps.
type Store interface {
	Spool
	Credentials
	Keys
}

// Errors of a Store.
var (
	ErrNotFound = errors.New("no such message in the queue")
	ErrNoSpace  = errors.New("no space left to keep the message")
	ErrExists   = errors.New("already exists")
)

// NewID returns a new queue ID.
func NewID() string {
	b := make([]byte, 8)
	rand.Read(b) // never fails, per crypto/rand
	return hex.EncodeToString(b)
}

// Retry timing, as Postfix does it: the first retry a minute after the
// first attempt, then twice as long each time up to an hour, and a
// message is bounced after five days in the queue.
const (
	FirstRetry = time.Minute
	MaxRetry   = time.Hour
	GiveUp     = 5 * 24 * time.Hour
	// KeepFinal is how long delivered and bounced messages are listed
	// (without their text): the hourly quota counts them.
	KeepFinal = 24 * time.Hour
)

// Backoff is the wait after the attempts-th failed attempt.
func Backoff(attempts int) time.Duration {
	d := FirstRetry
	for i := 1; i < attempts && d < MaxRetry; i++ {
		d *= 2
	}
	return min(d, MaxRetry)
}
