// Package notify delivers alerts (a certificate that could not be issued or
// renewed, later a ban wave or a failed backup) to the people who run the
// server: to the log, to a webhook, and by email through the mail layer,
// once per incident an hour (Fold).
//
// It decides nothing; callers decide what is worth an alert.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Alert is one thing a person should hear about.
type Alert struct {
	At time.Time `json:"at"`
	// Kind names the event, like "cert.renewal-failed".
	Kind string `json:"kind"`
	// Subject is what it is about, like a domain.
	Subject string `json:"subject"`
	// Message says what happened and what to do, in plain words.
	Message string `json:"message"`
}

// Notifier delivers alerts.
type Notifier interface {
	Notify(ctx context.Context, a Alert) error
}

// Log writes alerts to a logger at warning level.
type Log struct{ Logger *slog.Logger }

// Notify logs the alert.
func (l Log) Notify(ctx context.Context, a Alert) error {
	l.Logger.WarnContext(ctx, "alert", "kind", a.Kind, "subject", a.Subject, "message", a.Message)
	return nil
}

// Webhook POSTs each alert as JSON to a URL.
type Webhook struct {
	// URL is where alerts go. It often holds a secret token (Slack and
	// Discord put one in the path), so errors name only its scheme and host.
	URL    string
	Client *http.Client // http.DefaultClient's settings with a 10s timeout when nil
}

// Notify posts the alert; a non-2xx answer is an error. Errors name the
// webhook by scheme://host only, never its path, query or userinfo.
func (w Webhook) Notify(ctx context.Context, a Alert) error {
	where := redact(w.URL)
	body, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("webhook %s: %w", where, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook %s: %w", where, withoutURL(err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "moat")
	c := w.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("webhook %s: %w", where, withoutURL(err))
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook %s: answered %s", where, resp.Status)
	}
	return nil
}

// redact returns scheme://host of a webhook URL, the part safe to log.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "(invalid URL, not shown as it may hold a secret)"
	}
	return u.Scheme + "://" + u.Host
}

// withoutURL unwraps the *url.Error that url.Parse, http.NewRequest and
// http.Client.Do return, since it repeats the full URL (or, after a
// redirect, the one redirected to), to the cause inside.
func withoutURL(err error) error {
	for {
		ue, ok := err.(*url.Error)
		if !ok {
			return err
		}
		err = ue.Err
	}
}

// Multi sends each alert to every notifier and joins their errors.
type Multi []Notifier

// Notify delivers to all.
func (m Multi) Notify(ctx context.Context, a Alert) error {
	var errs []error
	for _, n := range m {
		if err := n.Notify(ctx, a); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Func is a function that delivers alerts, like one that mails them.
type Func func(ctx context.Context, a Alert) error

// Notify calls f.
func (f Func) Notify(ctx context.Context, a Alert) error { return f(ctx, a) }

// Fold passes on the first alert of an incident (one Kind and Subject)
// and folds the repeats that come within Window into one alert with
// their count, sent when the window ends; an incident that goes on gets
// one alert per window. A person's inbox should hear of a failing
// renewal once an hour, not at every retry.
type Fold struct {
	Next   Notifier
	Window time.Duration

	mu        sync.Mutex
	incidents map[string]*incident
}

type incident struct {
	repeats int
	last    Alert
}

// DefaultFoldWindow is how long repeats of an incident are folded.
const DefaultFoldWindow = time.Hour

// Notify passes a on, or counts it as a repeat.
func (f *Fold) Notify(ctx context.Context, a Alert) error {
	key := a.Kind + "\x00" + a.Subject
	f.mu.Lock()
	if f.incidents == nil {
		f.incidents = map[string]*incident{}
	}
	if inc, ok := f.incidents[key]; ok {
		inc.repeats++
		inc.last = a
		f.mu.Unlock()
		return nil
	}
	f.incidents[key] = &incident{}
	f.mu.Unlock()
	f.schedule(key)
	return f.Next.Notify(ctx, a)
}

func (f *Fold) window() time.Duration {
	if f.Window <= 0 {
		return DefaultFoldWindow
	}
	return f.Window
}

// schedule ends the incident's window: its repeats, if any, go out as
// one alert and open the next window.
func (f *Fold) schedule(key string) {
	time.AfterFunc(f.window(), func() {
		f.mu.Lock()
		inc := f.incidents[key]
		if inc == nil || inc.repeats == 0 {
			delete(f.incidents, key)
			f.mu.Unlock()
			return
		}
		a := inc.last
		a.Message = fmt.Sprintf("%s\n\nThis happened %d more times in the last %s.", a.Message, inc.repeats, f.window())
		f.incidents[key] = &incident{}
		f.mu.Unlock()
		f.schedule(key)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		f.Next.Notify(ctx, a)
	})
}

var (
	_ Notifier = Log{}
	_ Notifier = Func(nil)
	_ Notifier = (*Fold)(nil)
	_ Notifier = Webhook{}
	_ Notifier = Multi(nil)
)
