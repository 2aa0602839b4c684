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
		http.Error(w, "nope", http.StatusInternalServerError)
	}))
	defer srv.Close()
	tests := []struct{ name, url, want string }{
		{"non-2xx", srv.URL, "500"},
		{"unreachable", "http://127.0.0.1:1/hook", "connect"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Webhook{URL: tt.url}.Notify(context.Background(), Alert{Kind: "x"})
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.url) {
				t.Errorf("error %v, want one naming %q and the URL", err, tt.want)
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
