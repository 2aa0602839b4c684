package notify

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestWebhook(t *testing.T) {
	got := make(chan Alert, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("got %s with %q", r.Method, r.Header.Get("Content-Type"))
		}
		var a Alert
		if err := json.NewDecoder(r.Body).Decode(&a); err != nil {
			t.Error(err)
		}
		got <- a
	}))
	defer srv.Close()
	want := Alert{At: time.Now().UTC().Truncate(time.Second), Kind: "cert.renewal-failed", Subject: "app.example.com", Message: "the CA refused"}
	if err := (Webhook{URL: srv.URL}).Notify(context.Background(), want); err != nil {
		t.Fatal(err)
	}
	if a := <-got; a != want {
		t.Errorf("webhook got %+v, want %+v", a, want)
	}
}

func TestWebhookErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/redirect/SECRET" {
			http.Redirect(w, r, "http://127.0.0.1:1/hooks/SECRET?token=SECRET", http.StatusTemporaryRedirect)
			return
		}
		http.Error(w, "nope", http.StatusInternalServerError)
	}))
	defer srv.Close()
	// Webhook URLs carry secrets in their path, query or userinfo; errors
	// end up in logs, so they name scheme://host and the cause only.
	tests := []struct{ name, url, where, want string }{
		{"non-2xx", srv.URL + "/hooks/SECRET?token=SECRET", srv.URL, "answered 500"},
		{"unreachable", "http://127.0.0.1:1/hooks/SECRET?token=SECRET", "http://127.0.0.1:1", "connection refused"},
		{"userinfo", "http://user:SECRET@127.0.0.1:1/hooks/SECRET", "http://127.0.0.1:1", "connection refused"},
		{"redirected to unreachable", srv.URL + "/redirect/SECRET", srv.URL, "connection refused"},
		{"unsupported scheme", "ftp://127.0.0.1:1/hooks/SECRET?token=SECRET", "ftp://127.0.0.1:1", "unsupported protocol scheme"},
		{"invalid URL", "http://127.0.0.1:1/hooks/SECRET%zz", "(invalid URL, not shown as it may hold a secret)", "invalid URL escape"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Webhook{URL: tt.url}.Notify(context.Background(), Alert{Kind: "x"})
			if err == nil {
				t.Fatal("Notify succeeded")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "webhook "+tt.where+": ") || !strings.Contains(msg, tt.want) {
				t.Errorf("error %q, want one naming %q and %q", msg, tt.where, tt.want)
			}
			if strings.Contains(msg, "SECRET") || strings.Contains(msg, "hooks") || strings.Contains(msg, "user") {
				t.Errorf("error %q reveals the URL's path, query or userinfo", msg)
			}
		})
	}
}

func TestMultiJoins(t *testing.T) {
	var calls int
	ok := notifierFunc(func(context.Context, Alert) error { calls++; return nil })
	bad := Webhook{URL: "http://127.0.0.1:1/"}
	err := Multi{ok, bad, ok}.Notify(context.Background(), Alert{})
	if calls != 2 || err == nil {
		t.Errorf("calls=%d err=%v; want every notifier called and the failure returned", calls, err)
	}
}

type notifierFunc func(context.Context, Alert) error

func (f notifierFunc) Notify(ctx context.Context, a Alert) error { return f(ctx, a) }

func TestFold(t *testing.T) {
	got := make(chan Alert, 10)
	f := &Fold{Window: 300 * time.Millisecond, Next: Func(func(_ context.Context, a Alert) error { got <- a; return nil })}
	ctx := context.Background()
	renewal := Alert{Kind: "cert.renewal-failed", Subject: "a.example.com", Message: "refused"}
	for i := 0; i < 5; i++ {
		f.Notify(ctx, renewal)
	}
	f.Notify(ctx, Alert{Kind: "cert.renewal-failed", Subject: "b.example.com", Message: "other domain"})
	first := []Alert{<-got, <-got}
	if first[0].Subject != "a.example.com" || first[1].Subject != "b.example.com" {
		t.Fatalf("first alerts: %+v", first)
	}
	select {
	case a := <-got:
		t.Fatalf("a repeat went out at once: %+v", a)
	case <-time.After(150 * time.Millisecond):
	}
	// The window ends: the four repeats of a come as one; b had none.
	select {
	case a := <-got:
		if a.Subject != "a.example.com" || !strings.Contains(a.Message, "4 more times") {
			t.Fatalf("folded alert: %+v", a)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the repeats were never sent")
	}
	select {
	case a := <-got:
		t.Fatalf("more alerts than the incident's two: %+v", a)
	case <-time.After(500 * time.Millisecond):
	}
	// Quiet for a whole window: the next one is a new incident.
	f.Notify(ctx, renewal)
	if a := <-got; a.Message != "refused" {
		t.Fatalf("new incident: %+v", a)
	}
}
